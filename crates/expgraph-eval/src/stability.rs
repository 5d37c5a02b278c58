//! Location (in)stability of nodes or filters (spec §4.3).
//!
//! Two protocols of the reference code are implemented:
//! * [`StabilityProtocol::ExplanatoryGraph`] (`explanatoryGraph/code/tool/main/computeStability.m`
//!   and `getDistSqrtVar.m`): per layer, the units with the highest mean of their top-k scores;
//!   per unit its top-k images, *then* images without the landmark are dropped;
//! * [`StabilityProtocol::Icnn`] (`interpretableCNN/code/tool/main/computeStability.m`): every unit;
//!   per unit and landmark the top-k images *among those showing the landmark*; a unit with fewer
//!   than two such images for some landmark is NaN and left out; the lowest `keep_ratio` of the
//!   remaining units are averaged.
//!
//! In both, the value of a unit is the mean over landmarks of the standard deviation (N − 1) of
//! the pixel distance between the unit's position and the landmark, and the result is divided
//! by the frame diagonal `frame_size · √2`. Lower is better.

use serde::{Deserialize, Serialize};

use crate::geometry::Point;
use crate::EvalError;

/// Position and score of every unit (graph node or raw filter) of one layer in every image.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerTracks {
    name: String,
    num_units: usize,
    num_images: usize,
    positions: Vec<Point>,
    scores: Vec<f64>,
}

impl LayerTracks {
    /// Wrap unit-major data: entry `unit * num_images + image` of `positions` (object-frame pixels
    /// of the original view) and `scores`. Fails on wrong lengths or non-finite values.
    pub fn new(
        name: impl Into<String>,
        num_units: usize,
        num_images: usize,
        positions: Vec<Point>,
        scores: Vec<f64>,
    ) -> Result<Self, EvalError> {
        let name = name.into();
        let len = num_units * num_images;
        if positions.len() != len || scores.len() != len {
            return Err(EvalError::Shape(format!(
                "layer {name}: {num_units} units x {num_images} images needs {len} positions and scores, got {} and {}",
                positions.len(),
                scores.len()
            )));
        }
        if let Some(i) = positions.iter().position(|p| !p.is_finite()) {
            return Err(EvalError::NonFinite(format!(
                "layer {name}: position of unit {} in image {}",
                i / num_images.max(1),
                i % num_images.max(1)
            )));
        }
        if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
            return Err(EvalError::NonFinite(format!(
                "layer {name}: score of unit {} in image {}",
                i / num_images.max(1),
                i % num_images.max(1)
            )));
        }
        Ok(Self { name, num_units, num_images, positions, scores })
    }

    /// Layer name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of units.
    pub fn num_units(&self) -> usize {
        self.num_units
    }

    /// Number of images.
    pub fn num_images(&self) -> usize {
        self.num_images
    }

    /// Position of `unit` in `image`.
    pub fn position(&self, unit: usize, image: usize) -> Point {
        self.positions[unit * self.num_images + image]
    }

    /// Score of `unit` in `image`.
    pub fn score(&self, unit: usize, image: usize) -> f64 {
        self.scores[unit * self.num_images + image]
    }

    fn unit_positions(&self, unit: usize) -> &[Point] {
        &self.positions[unit * self.num_images..(unit + 1) * self.num_images]
    }

    fn unit_scores(&self, unit: usize) -> &[f64] {
        &self.scores[unit * self.num_images..(unit + 1) * self.num_images]
    }
}

/// Landmark positions per image (object-frame pixels); `None` where the landmark is missing
/// (invisible, or annotated with several instances, which the reference treats as missing).
#[derive(Debug, Clone, PartialEq)]
pub struct Landmarks {
    num_images: usize,
    points: Vec<Vec<Option<Point>>>,
}

impl Landmarks {
    /// From `points[landmark][image]`. Every landmark must cover the same number of images.
    pub fn new(points: Vec<Vec<Option<Point>>>) -> Result<Self, EvalError> {
        let num_images = points.first().map(Vec::len).ok_or_else(|| EvalError::Empty("no landmarks".into()))?;
        for (k, p) in points.iter().enumerate() {
            if p.len() != num_images {
                return Err(EvalError::Shape(format!(
                    "landmark {k} covers {} images, landmark 0 covers {num_images}",
                    p.len()
                )));
            }
            if let Some(i) = p.iter().position(|q| q.is_some_and(|q| !q.is_finite())) {
                return Err(EvalError::NonFinite(format!("landmark {k} in image {i}")));
            }
        }
        Ok(Self { num_images, points })
    }

    /// Number of landmarks.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether there are no landmarks (never true for a constructed value).
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Number of images.
    pub fn num_images(&self) -> usize {
        self.num_images
    }
}

/// Which reference protocol to follow.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "protocol")]
pub enum StabilityProtocol {
    /// Explanatory-graph paper: `units_per_layer` (167) units by highest mean top-k score,
    /// top `top_images` (20) images, missing landmarks dropped after the top-k.
    ExplanatoryGraph {
        /// Units kept per layer.
        units_per_layer: usize,
        /// Images per unit.
        top_images: usize,
    },
    /// ICNN paper: all units, top `top_images` (100) images among those with the landmark,
    /// units with < 2 such images dropped (NaN), mean of the lowest `keep_ratio` (1.0 = all).
    Icnn {
        /// Images per unit and landmark.
        top_images: usize,
        /// Fraction of the units (of all units in the layer) whose lowest values are averaged.
        keep_ratio: f64,
    },
}

impl StabilityProtocol {
    /// The explanatory-graph setting: 167 units per layer, top-20 images.
    pub const EXPLANATORY_GRAPH: Self = Self::ExplanatoryGraph { units_per_layer: 167, top_images: 20 };
    /// The ICNN setting: all units, top-100 images.
    pub const ICNN: Self = Self::Icnn { top_images: 100, keep_ratio: 1.0 };

    fn validate(&self) -> Result<(), EvalError> {
        match *self {
            Self::ExplanatoryGraph { units_per_layer, top_images } => {
                if units_per_layer == 0 || top_images == 0 {
                    return Err(EvalError::Param("units_per_layer and top_images must be > 0".into()));
                }
            }
            Self::Icnn { top_images, keep_ratio } => {
                if top_images < 2 {
                    return Err(EvalError::Param("top_images must be ≥ 2".into()));
                }
                if !(keep_ratio > 0.0 && keep_ratio <= 1.0) {
                    return Err(EvalError::Param(format!("keep_ratio {keep_ratio} must be in (0, 1]")));
                }
            }
        }
        Ok(())
    }
}

/// Instability of one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerInstability {
    /// Layer name.
    pub layer: String,
    /// Units averaged.
    pub units: usize,
    /// Units left out because a landmark had too few images (NaN).
    pub units_undefined: usize,
    /// Mean standard deviation, pixels of the object frame.
    pub pixels: f64,
    /// `pixels / (frame_size · √2)`.
    pub instability: f64,
}

/// Result of [`location_instability`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StabilityReport {
    /// The protocol used.
    pub protocol: StabilityProtocol,
    /// Per layer.
    pub layers: Vec<LayerInstability>,
    /// Mean over layers, pixels.
    pub pixels: f64,
    /// Mean over layers, normalized by the frame diagonal (the paper's number).
    pub instability: f64,
}

/// Location instability of the units of `layers` against `landmarks` (spec §4.3).
///
/// `frame_size` is the side of the object frame the positions live in (224). Fails when the
/// inputs do not fit together or when no unit of some layer has a defined value.
pub fn location_instability(
    layers: &[LayerTracks],
    landmarks: &Landmarks,
    protocol: StabilityProtocol,
    frame_size: f64,
) -> Result<StabilityReport, EvalError> {
    let per_layer = layers
        .iter()
        .map(|layer| layer_instability(layer, landmarks, protocol, frame_size))
        .collect::<Result<Vec<_>, _>>()?;
    StabilityReport::from_layers(protocol, per_layer, frame_size)
}

/// [`location_instability`] of one layer, so that a caller can build, measure and drop one
/// layer's tracks at a time and combine the layers with [`StabilityReport::from_layers`].
pub fn layer_instability(
    layer: &LayerTracks,
    landmarks: &Landmarks,
    protocol: StabilityProtocol,
    frame_size: f64,
) -> Result<LayerInstability, EvalError> {
    protocol.validate()?;
    check_frame(frame_size)?;
    if layer.num_images != landmarks.num_images {
        return Err(EvalError::Shape(format!(
            "layer {} has {} images, the landmarks {}",
            layer.name, layer.num_images, landmarks.num_images
        )));
    }
    if layer.num_units == 0 || layer.num_images == 0 {
        return Err(EvalError::Empty(format!("layer {} has no units or no images", layer.name)));
    }
    let values = match protocol {
        StabilityProtocol::ExplanatoryGraph { units_per_layer, top_images } => {
            explanatory_graph_values(layer, landmarks, units_per_layer, top_images)
        }
        StabilityProtocol::Icnn { top_images, .. } => icnn_values(layer, landmarks, top_images),
    };
    let mut defined: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    let undefined = values.len() - defined.len();
    if let StabilityProtocol::Icnn { keep_ratio, .. } = protocol {
        defined.sort_by(f64::total_cmp);
        let keep = ((layer.num_units as f64) * keep_ratio).round() as usize;
        defined.truncate(keep.max(1));
    }
    if defined.is_empty() {
        return Err(EvalError::Empty(format!(
            "layer {}: no unit has enough images showing every landmark",
            layer.name
        )));
    }
    let pixels = defined.iter().sum::<f64>() / defined.len() as f64;
    Ok(LayerInstability {
        layer: layer.name.clone(),
        units: defined.len(),
        units_undefined: undefined,
        pixels,
        instability: pixels / (frame_size * std::f64::consts::SQRT_2),
    })
}

fn check_frame(frame_size: f64) -> Result<(), EvalError> {
    if frame_size > 0.0 && frame_size.is_finite() {
        Ok(())
    } else {
        Err(EvalError::Param(format!("frame_size {frame_size} must be > 0")))
    }
}

impl StabilityReport {
    /// The report of per-layer results ([`layer_instability`]): the mean over layers.
    pub fn from_layers(
        protocol: StabilityProtocol,
        layers: Vec<LayerInstability>,
        frame_size: f64,
    ) -> Result<Self, EvalError> {
        protocol.validate()?;
        check_frame(frame_size)?;
        if layers.is_empty() {
            return Err(EvalError::Empty("no layers".into()));
        }
        let pixels = layers.iter().map(|l| l.pixels).sum::<f64>() / layers.len() as f64;
        Ok(Self { protocol, layers, pixels, instability: pixels / (frame_size * std::f64::consts::SQRT_2) })
    }
}

/// Explanatory-graph protocol: values of the selected units (NaN where a landmark has no image).
fn explanatory_graph_values(
    layer: &LayerTracks,
    landmarks: &Landmarks,
    units_per_layer: usize,
    top_images: usize,
) -> Vec<f64> {
    let k = top_images.min(layer.num_images);
    let tops: Vec<Vec<usize>> = (0..layer.num_units).map(|u| top_k(layer.unit_scores(u), k, |_| true)).collect();
    let rank: Vec<f64> = tops
        .iter()
        .enumerate()
        .map(|(u, top)| top.iter().map(|&i| layer.unit_scores(u)[i]).sum::<f64>() / k as f64)
        .collect();
    let mut units: Vec<usize> = (0..layer.num_units).collect();
    units.sort_by(|&a, &b| rank[b].total_cmp(&rank[a])); // stable: ties keep the lower index first
    units.truncate(units_per_layer.min(layer.num_units));
    units
        .iter()
        .map(|&u| {
            let positions = layer.unit_positions(u);
            let per_landmark = landmarks.points.iter().map(|marks| {
                let d: Vec<f64> = tops[u].iter().filter_map(|&i| marks[i].map(|m| positions[i].distance(m))).collect();
                sample_std(&d)
            });
            per_landmark.sum::<f64>() / landmarks.len() as f64
        })
        .collect()
}

/// ICNN protocol: values of every unit (NaN where a landmark has fewer than 2 images).
fn icnn_values(layer: &LayerTracks, landmarks: &Landmarks, top_images: usize) -> Vec<f64> {
    (0..layer.num_units)
        .map(|u| {
            let scores = layer.unit_scores(u);
            let positions = layer.unit_positions(u);
            let mut total = 0.0;
            for marks in &landmarks.points {
                let top = top_k(scores, top_images, |i| marks[i].is_some());
                if top.len() < 2 {
                    return f64::NAN;
                }
                let d: Vec<f64> = top.iter().filter_map(|&i| marks[i].map(|m| positions[i].distance(m))).collect();
                total += sample_std(&d);
            }
            total / landmarks.len() as f64
        })
        .collect()
}

/// Indices of the `k` highest scores among images passing `keep`, highest first; ties keep the
/// lower index first (MATLAB's stable `sort(…, 'descend')`).
pub(crate) fn top_k(scores: &[f64], k: usize, keep: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut top: Vec<usize> = Vec::with_capacity(k + 1);
    if k == 0 {
        return top;
    }
    for (i, &s) in scores.iter().enumerate() {
        if !keep(i) {
            continue;
        }
        if top.len() == k && s <= scores[top[k - 1]] {
            continue;
        }
        let at = top.partition_point(|&j| scores[j] >= s);
        top.insert(at, i);
        top.truncate(k);
    }
    top
}

/// Standard deviation with the N − 1 normalization; 0 for one value, NaN for none (MATLAB `std`).
pub(crate) fn sample_std(values: &[f64]) -> f64 {
    match values.len() {
        0 => f64::NAN,
        1 => 0.0,
        n => {
            let mean = values.iter().sum::<f64>() / n as f64;
            let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
            (ss / (n - 1) as f64).sqrt()
        }
    }
}

impl Default for StabilityProtocol {
    fn default() -> Self {
        Self::EXPLANATORY_GRAPH
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_score_then_index() {
        let s = [1.0, 5.0, 3.0, 5.0, 0.5, 3.0];
        assert_eq!(top_k(&s, 3, |_| true), vec![1, 3, 2]);
        assert_eq!(top_k(&s, 10, |_| true), vec![1, 3, 2, 5, 0, 4]);
        assert_eq!(top_k(&s, 2, |i| i != 1), vec![3, 2]);
        assert!(top_k(&s, 0, |_| true).is_empty());
    }

    #[test]
    fn std_uses_n_minus_one() {
        // values 2, 4, 4, 4, 5, 5, 7, 9: mean 5, sum of squares 32 → var 32/7.
        let v = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert!((sample_std(&v) - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(sample_std(&[3.0]), 0.0);
        assert!(sample_std(&[]).is_nan());
    }

    /// One landmark at (100, 100) in every image; unit positions chosen so distances are known.
    fn simple_case() -> (LayerTracks, Landmarks) {
        let lm = Point::new(100.0, 100.0);
        // 2 units x 4 images. Unit 0 distances 10, 20, 30, 40 with scores 4, 3, 2, 1.
        // Unit 1 distances 0, 0, 0, 50 with scores 1, 1, 1, 9.
        let positions = vec![
            Point::new(110.0, 100.0),
            Point::new(120.0, 100.0),
            Point::new(130.0, 100.0),
            Point::new(100.0, 140.0),
            lm,
            lm,
            lm,
            Point::new(100.0, 50.0),
        ];
        let scores = vec![4.0, 3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 9.0];
        let tracks = LayerTracks::new("l", 2, 4, positions, scores).unwrap();
        (tracks, Landmarks::new(vec![vec![Some(lm); 4]]).unwrap())
    }

    #[test]
    fn explanatory_graph_protocol_by_hand() {
        let (tracks, marks) = simple_case();
        // top-2 images: unit 0 → images 0, 1 (distances 10, 20: std = 7.0711);
        // unit 1 → images 3, 0 (distances 50, 0: std = 35.355). Rank by mean top-2 score:
        // unit 1 (5.0) before unit 0 (3.5); with 1 unit per layer only unit 1 counts.
        let p = StabilityProtocol::ExplanatoryGraph { units_per_layer: 1, top_images: 2 };
        let r = location_instability(std::slice::from_ref(&tracks), &marks, p, 224.0).unwrap();
        let expect = 50.0 / 2f64.sqrt();
        assert!((r.pixels - expect).abs() < 1e-9, "{}", r.pixels);
        assert!((r.instability - expect / (224.0 * 2f64.sqrt())).abs() < 1e-12);
        let p = StabilityProtocol::ExplanatoryGraph { units_per_layer: 2, top_images: 2 };
        let r = location_instability(&[tracks], &marks, p, 224.0).unwrap();
        let expect = (50.0 / 2f64.sqrt() + 10.0 / 2f64.sqrt()) / 2.0;
        assert!((r.pixels - expect).abs() < 1e-9);
        assert_eq!(r.layers[0].units, 2);
    }

    #[test]
    fn invalid_images_are_dropped_after_top_k_in_eg_but_before_in_icnn() {
        let (tracks, _) = simple_case();
        let lm = Point::new(100.0, 100.0);
        // Landmark missing in image 1.
        let marks = Landmarks::new(vec![vec![Some(lm), None, Some(lm), Some(lm)]]).unwrap();
        // EG, top-2 of unit 0 = images 0, 1 → only image 0 is left → std 0.
        let p = StabilityProtocol::ExplanatoryGraph { units_per_layer: 2, top_images: 2 };
        let r = location_instability(std::slice::from_ref(&tracks), &marks, p, 224.0).unwrap();
        // unit 1: images 3, 0 → 50, 0 → 35.355; unit 0: 0.
        assert!((r.pixels - (50.0 / 2f64.sqrt()) / 2.0).abs() < 1e-9);
        // ICNN, top-2 among images with the landmark: unit 0 → images 0, 2 (10, 30 → std 14.142);
        // unit 1 → images 3, 0 (50, 0 → 35.355).
        let p = StabilityProtocol::Icnn { top_images: 2, keep_ratio: 1.0 };
        let r = location_instability(std::slice::from_ref(&tracks), &marks, p, 224.0).unwrap();
        assert!((r.pixels - (20.0 / 2f64.sqrt() + 50.0 / 2f64.sqrt()) / 2.0).abs() < 1e-9);
        // keep_ratio 0.5 → the lower of the two.
        let p = StabilityProtocol::Icnn { top_images: 2, keep_ratio: 0.5 };
        let r = location_instability(&[tracks], &marks, p, 224.0).unwrap();
        assert!((r.pixels - 20.0 / 2f64.sqrt()).abs() < 1e-9);
    }

    #[test]
    fn icnn_is_nan_with_fewer_than_two_images() {
        let (tracks, _) = simple_case();
        let lm = Point::new(100.0, 100.0);
        let one = Landmarks::new(vec![vec![None, None, Some(lm), None]]).unwrap();
        let r = location_instability(std::slice::from_ref(&tracks), &one, StabilityProtocol::ICNN, 224.0);
        assert!(matches!(r, Err(EvalError::Empty(_))));
        // A second layer/landmark where it is defined still works, and counts the undefined units.
        let two = Landmarks::new(vec![vec![Some(lm), None, Some(lm), None]]).unwrap();
        let r = location_instability(&[tracks], &two, StabilityProtocol::ICNN, 224.0).unwrap();
        assert_eq!(r.layers[0].units, 2);
        assert_eq!(r.layers[0].units_undefined, 0);
    }

    #[test]
    fn averages_over_layers_and_landmarks() {
        let (tracks, _) = simple_case();
        let lm = Point::new(100.0, 100.0);
        let far = Point::new(0.0, 100.0);
        // Two landmarks: the second is 100 px further for unit 0 images 0,1 → distances 110, 120.
        let marks = Landmarks::new(vec![vec![Some(lm); 4], vec![Some(far); 4]]).unwrap();
        let p = StabilityProtocol::ExplanatoryGraph { units_per_layer: 1, top_images: 2 };
        let mut other = tracks.clone();
        other.name = "m".into();
        let r = location_instability(&[tracks, other], &marks, p, 224.0).unwrap();
        // unit 1, images 3 and 0: landmark 0 → 50, 0; landmark 1 → |(100,50)-(0,100)| = 111.80, 100.
        let l1 = (111.803398874989 - 100.0) / 2f64.sqrt();
        let expect = (50.0 / 2f64.sqrt() + l1) / 2.0;
        assert!((r.pixels - expect).abs() < 1e-9);
        assert_eq!(r.layers.len(), 2);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let (tracks, _) = simple_case();
        let marks = Landmarks::new(vec![vec![None; 3]]).unwrap();
        assert!(matches!(
            location_instability(&[tracks], &marks, StabilityProtocol::ICNN, 224.0),
            Err(EvalError::Shape(_))
        ));
        assert!(LayerTracks::new("x", 2, 2, vec![Point::new(0.0, 0.0); 3], vec![0.0; 4]).is_err());
        assert!(matches!(
            LayerTracks::new("x", 1, 1, vec![Point::new(0.0, 0.0)], vec![f64::NAN]),
            Err(EvalError::NonFinite(_))
        ));
        assert!(Landmarks::new(vec![]).is_err());
        assert!(Landmarks::new(vec![vec![None; 2], vec![None; 3]]).is_err());
    }
}
