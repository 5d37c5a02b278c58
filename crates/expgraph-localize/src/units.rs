//! The one abstraction both voters share: *units* (graph nodes or raw filters) that have a
//! position and a score per image (spec §4.1). Inputs implement [`UnitActivations`] (map
//! coordinates of the chosen view); [`ImageUnits`] is the same in input pixels, original
//! orientation, which is all the voting code sees.

use expgraph_cache::{LayerInfo, TapGeometry};
use expgraph_graph::{ExplanatoryGraph, ImageActivations};
use serde::{Deserialize, Serialize};

use crate::{LocalizeError, Result};

/// A point in the square input frame (the 224×224 object crop): 1-based pixels, `(h, w)` =
/// (row, column), original (unmirrored) orientation.
pub use expgraph_geometry::PixelPoint as Point;

/// A part point must be finite.
pub(crate) fn check_finite(point: &Point, image: &str) -> Result<()> {
    if point.is_finite() {
        Ok(())
    } else {
        Err(LocalizeError::NonFinite { image: image.to_string(), what: "part point".into() })
    }
}

/// One layer of units: its name, its map geometry and how many units it has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitLayerLayout {
    /// Layer name (must equal the activations' layer name).
    pub name: String,
    /// Map → input-pixel mapping (spec §1.3).
    pub geometry: TapGeometry,
    /// Number of units (graph nodes, or filters for the raw baseline).
    pub num_units: usize,
}

/// The layers of units a part model is fitted on, and the input frame size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitLayout {
    /// Side of the square input frame (224).
    pub input_size: usize,
    /// Layers, in the order the activations list them.
    pub layers: Vec<UnitLayerLayout>,
}

impl UnitLayout {
    /// Graph nodes as units: one layer per graph layer, `num_units` = its node count.
    pub fn for_graph(graph: &ExplanatoryGraph) -> Self {
        Self {
            input_size: graph.input_size,
            layers: graph
                .layers
                .iter()
                .map(|l| UnitLayerLayout {
                    name: l.info.name.clone(),
                    geometry: l.info.geometry,
                    num_units: l.num_nodes(),
                })
                .collect(),
        }
    }

    /// Raw filters as units (the raw-filter baseline): one unit per channel.
    pub fn for_filters(input_size: usize, layers: &[LayerInfo]) -> Self {
        Self {
            input_size,
            layers: layers
                .iter()
                .map(|l| UnitLayerLayout { name: l.name.clone(), geometry: l.geometry, num_units: l.channels })
                .collect(),
        }
    }

    /// Fails on an empty layout, a zero frame, a bad geometry or duplicate names.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(LocalizeError::InvalidModel(what));
        if self.input_size == 0 {
            return bad("input size is 0".into());
        }
        if self.layers.is_empty() {
            return Err(LocalizeError::Empty("the unit layout has no layer".into()));
        }
        for (i, l) in self.layers.iter().enumerate() {
            let g = l.geometry;
            if !(g.stride.is_finite() && g.stride > 0.0 && g.first_centre.is_finite()) {
                return bad(format!("layer {}: bad geometry {g:?}", l.name));
            }
            if self.layers[..i].iter().any(|o| o.name == l.name) {
                return bad(format!("layer {} appears twice", l.name));
            }
        }
        Ok(())
    }

    /// Index of the layer called `name`.
    pub fn layer_index(&self, name: &str) -> Option<usize> {
        self.layers.iter().position(|l| l.name == name)
    }
}

/// Anything that gives, per image and layer, each unit's position (1-based map coordinates of
/// the chosen view) and score: graph-node activations or raw-filter argmaxes.
pub trait UnitActivations {
    /// Image identifier.
    fn image_id(&self) -> &str;
    /// Whether the positions are in the mirrored view.
    fn flipped(&self) -> bool;
    /// Number of layers.
    fn num_layers(&self) -> usize;
    /// `(layer name, positions (h, w), scores)` of layer `index < num_layers()`.
    fn layer(&self, index: usize) -> (&str, &[[f32; 2]], &[f32]);
}

impl<T: UnitActivations + ?Sized> UnitActivations for &T {
    fn image_id(&self) -> &str {
        (**self).image_id()
    }
    fn flipped(&self) -> bool {
        (**self).flipped()
    }
    fn num_layers(&self) -> usize {
        (**self).num_layers()
    }
    fn layer(&self, index: usize) -> (&str, &[[f32; 2]], &[f32]) {
        (**self).layer(index)
    }
}

impl UnitActivations for ImageActivations {
    fn image_id(&self) -> &str {
        &self.image_id
    }
    fn flipped(&self) -> bool {
        self.flipped
    }
    fn num_layers(&self) -> usize {
        self.layers.len()
    }
    fn layer(&self, index: usize) -> (&str, &[[f32; 2]], &[f32]) {
        let l = &self.layers[index];
        (&l.layer, &l.positions, &l.scores)
    }
}

/// Units of one layer in one image, in input pixels of the original orientation.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitLayer {
    /// `(h, w)` per unit, 1-based input pixels, unmirrored.
    pub positions: Vec<[f64; 2]>,
    /// Score per unit.
    pub scores: Vec<f64>,
}

/// Every unit of one image, in input pixels of the original orientation.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageUnits {
    /// Image identifier.
    pub image_id: String,
    /// Whether the source positions were in the mirrored view.
    pub flipped: bool,
    /// Layers in layout order.
    pub layers: Vec<UnitLayer>,
}

impl ImageUnits {
    /// Check `acts` against `layout` without converting it: as many layers, in the same order,
    /// each with its number of units, every position and score finite.
    pub fn check<U: UnitActivations + ?Sized>(layout: &UnitLayout, acts: &U) -> Result<()> {
        let image = acts.image_id();
        let shape = |what: String| LocalizeError::Shape { image: image.to_string(), what };
        if acts.num_layers() != layout.layers.len() {
            return Err(shape(format!(
                "{} layers of activations, the model has {}",
                acts.num_layers(),
                layout.layers.len()
            )));
        }
        for (index, spec) in layout.layers.iter().enumerate() {
            let (name, positions, scores) = acts.layer(index);
            if name != spec.name {
                return Err(shape(format!("layer {index} is {name}, the model expects {}", spec.name)));
            }
            if positions.len() != spec.num_units || scores.len() != spec.num_units {
                return Err(shape(format!(
                    "layer {name}: {} positions and {} scores, the model has {} units",
                    positions.len(),
                    scores.len(),
                    spec.num_units
                )));
            }
            let non_finite = |what: &str, unit: usize| LocalizeError::NonFinite {
                image: image.to_string(),
                what: format!("{what} of unit {unit} in layer {name}"),
            };
            if let Some(unit) = positions.iter().position(|p| !(p[0].is_finite() && p[1].is_finite())) {
                return Err(non_finite("position", unit));
            }
            if let Some(unit) = scores.iter().position(|s| !s.is_finite()) {
                return Err(non_finite("score", unit));
            }
        }
        Ok(())
    }

    /// [`ImageUnits::check`] `acts` against `layout` and map every position to input pixels,
    /// unmirroring flipped views with `w' = input_size + 1 − w` (spec §1.3).
    pub fn from_activations<U: UnitActivations + ?Sized>(layout: &UnitLayout, acts: &U) -> Result<Self> {
        Self::check(layout, acts)?;
        let mirror = layout.input_size as f64 + 1.0;
        let layers = layout
            .layers
            .iter()
            .enumerate()
            .map(|(index, spec)| {
                let (_, positions, scores) = acts.layer(index);
                let g = spec.geometry;
                let pixels = positions
                    .iter()
                    .map(|p| {
                        let h = g.map_to_pixel(f64::from(p[0]));
                        let w = g.map_to_pixel(f64::from(p[1]));
                        [h, if acts.flipped() { mirror - w } else { w }]
                    })
                    .collect();
                UnitLayer { positions: pixels, scores: scores.iter().map(|&s| f64::from(s)).collect() }
            })
            .collect();
        Ok(Self { image_id: acts.image_id().to_string(), flipped: acts.flipped(), layers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expgraph_graph::LayerActivations;

    fn layout() -> UnitLayout {
        UnitLayout {
            input_size: 224,
            layers: vec![UnitLayerLayout {
                name: "conv5_3".into(),
                geometry: TapGeometry { stride: 16.0, first_centre: 8.5, receptive_field: 196.0 },
                num_units: 2,
            }],
        }
    }

    fn acts(flipped: bool, positions: Vec<[f32; 2]>, scores: Vec<f32>) -> ImageActivations {
        ImageActivations {
            image_id: "img".into(),
            flipped,
            layers: vec![LayerActivations { layer: "conv5_3".into(), positions, scores }],
        }
    }

    #[test]
    fn maps_to_pixels_and_unmirrors() {
        let a = acts(false, vec![[1.0, 1.0], [3.5, 14.0]], vec![1.0, 2.0]);
        let u = ImageUnits::from_activations(&layout(), &a).unwrap();
        assert_eq!(u.layers[0].positions, vec![[8.5, 8.5], [48.5, 216.5]]);
        let f = acts(true, vec![[1.0, 1.0], [3.5, 14.0]], vec![1.0, 2.0]);
        let u = ImageUnits::from_activations(&layout(), &f).unwrap();
        // w' = 225 - w
        assert_eq!(u.layers[0].positions, vec![[8.5, 216.5], [48.5, 8.5]]);
        assert!(u.flipped);
    }

    #[test]
    fn rejects_mismatches_and_non_finite_values() {
        let l = layout();
        let short = acts(false, vec![[1.0, 1.0]], vec![1.0]);
        assert!(matches!(ImageUnits::from_activations(&l, &short), Err(LocalizeError::Shape { .. })));
        let mut renamed = acts(false, vec![[1.0, 1.0]; 2], vec![1.0; 2]);
        renamed.layers[0].layer = "conv4_3".into();
        assert!(matches!(ImageUnits::from_activations(&l, &renamed), Err(LocalizeError::Shape { .. })));
        let nan = acts(false, vec![[1.0, f32::NAN], [1.0, 1.0]], vec![1.0; 2]);
        assert!(matches!(ImageUnits::from_activations(&l, &nan), Err(LocalizeError::NonFinite { .. })));
        let inf = acts(false, vec![[1.0, 1.0]; 2], vec![1.0, f32::INFINITY]);
        assert!(matches!(ImageUnits::from_activations(&l, &inf), Err(LocalizeError::NonFinite { .. })));
        let mut extra = acts(false, vec![[1.0, 1.0]; 2], vec![1.0; 2]);
        extra.layers.push(extra.layers[0].clone());
        assert!(matches!(ImageUnits::from_activations(&l, &extra), Err(LocalizeError::Shape { .. })));
    }

    #[test]
    fn layout_validation() {
        assert!(layout().validate().is_ok());
        let mut dup = layout();
        dup.layers.push(dup.layers[0].clone());
        assert!(dup.validate().is_err());
        let empty = UnitLayout { input_size: 224, layers: vec![] };
        assert!(matches!(empty.validate(), Err(LocalizeError::Empty(_))));
        let mut zero_stride = layout();
        zero_stride.layers[0].geometry.stride = 0.0;
        assert!(zero_stride.validate().is_err());
    }
}
