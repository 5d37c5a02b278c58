//! Part-localization metrics (spec §4.2, `partGraphForCNN/.../step_getResult.m`).

use serde::{Deserialize, Serialize};

use crate::geometry::{Extent, PixelBox, Point, FRAME_SIZE};
use crate::EvalError;

pub use expgraph_geometry::TruthInstance;

/// The prediction and the ground truth of one part in one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectResult {
    /// Predicted part centre in the object frame of the *original* view (map a prediction made
    /// on the mirrored view back with [`Point::mirrored`]). `None` when nothing was predicted.
    pub prediction: Option<Point>,
    /// All ground-truth instances; empty when the object does not have the part (then the
    /// object is skipped, spec §4.2 "objects having the part").
    pub truth: Vec<TruthInstance>,
}

/// Parameters of [`evaluate_localization`]; `Default` is the paper's setting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LocalizationParams {
    /// Side of the object frame (224); the distance is divided by `frame_size · √2`.
    pub frame_size: f64,
    /// IoU a detection needs to count (0.5).
    pub min_iou: f64,
    /// Size of the predicted box: the mean size of the annotated (few-shot) part boxes.
    /// The default 1×1 is what the reference uses when parts are keypoints.
    pub predicted_size: Extent,
}

impl Default for LocalizationParams {
    fn default() -> Self {
        Self { frame_size: FRAME_SIZE, min_iou: 0.5, predicted_size: Extent::UNIT }
    }
}

/// Result of [`evaluate_localization`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalizationReport {
    /// Number of objects having the part (the denominator of every mean).
    pub objects: usize,
    /// Mean normalized distance to the nearest instance (lower is better).
    pub normalized_distance: f64,
    /// Fraction (0–1) of objects whose predicted box has IoU ≥ `min_iou` with some instance box.
    pub detection_accuracy: f64,
    /// Fraction (0–1) of objects whose predicted centre lies inside some instance box.
    pub loc_rate: f64,
    /// Input indices of the evaluated objects.
    pub evaluated: Vec<usize>,
    /// Normalized distance of each evaluated object (same order as `evaluated`).
    pub distances: Vec<f64>,
}

/// Normalized distance, detection accuracy and LOC rate of one part over objects (spec §4.2).
///
/// Follows the reference: boxes are integer pixel boxes `round(c ∓ s/2)`, inclusive; IoU, LOC and
/// distance are each taken at their best over the instances; when no instance in the whole input
/// has a size, every ground-truth box is 1×1 (as the reference does for keypoints).
pub fn evaluate_localization(
    objects: &[ObjectResult],
    params: &LocalizationParams,
) -> Result<LocalizationReport, EvalError> {
    if !(params.frame_size > 0.0 && params.frame_size.is_finite()) {
        return Err(EvalError::Param(format!("frame_size {} must be > 0", params.frame_size)));
    }
    if !(params.min_iou > 0.0 && params.min_iou <= 1.0) {
        return Err(EvalError::Param(format!("min_iou {} must be in (0, 1]", params.min_iou)));
    }
    let diagonal = params.frame_size * std::f64::consts::SQRT_2;
    let pred_size = params.predicted_size;
    let mut evaluated = Vec::new();
    let mut distances = Vec::new();
    let (mut detected, mut located) = (0usize, 0usize);
    for (index, object) in objects.iter().enumerate() {
        if object.truth.is_empty() {
            continue;
        }
        let pred = object.prediction.ok_or(EvalError::MissingPrediction { index })?;
        if !pred.is_finite() {
            return Err(EvalError::NonFinite(format!("prediction of object {index}")));
        }
        let pred_box = PixelBox::around(pred, pred_size);
        let (mut best_iou, mut inside, mut nearest) = (0.0f64, false, f64::INFINITY);
        for t in &object.truth {
            if !t.centre.is_finite() {
                return Err(EvalError::NonFinite(format!("ground truth of object {index}")));
            }
            let truth_box = PixelBox::around(t.centre, t.size.unwrap_or(Extent::UNIT));
            best_iou = best_iou.max(pred_box.iou(&truth_box));
            inside |= truth_box.contains(pred);
            nearest = nearest.min(pred.distance(t.centre));
        }
        detected += usize::from(best_iou >= params.min_iou);
        located += usize::from(inside);
        evaluated.push(index);
        distances.push(nearest / diagonal);
    }
    if evaluated.is_empty() {
        return Err(EvalError::Empty("no object has ground truth for the part".into()));
    }
    let n = evaluated.len() as f64;
    Ok(LocalizationReport {
        objects: evaluated.len(),
        normalized_distance: distances.iter().sum::<f64>() / n,
        detection_accuracy: detected as f64 / n,
        loc_rate: located as f64 / n,
        evaluated,
        distances,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag() -> f64 {
        224.0 * 2f64.sqrt()
    }

    #[test]
    fn distance_is_divided_by_the_frame_diagonal_and_uses_the_nearest_instance() {
        let objects = vec![
            ObjectResult {
                prediction: Some(Point::new(100.0, 100.0)),
                // nearest instance: 3-4-5 triangle → 5 px; the other is 100 px away.
                truth: vec![
                    TruthInstance::point(Point::new(200.0, 100.0)),
                    TruthInstance::point(Point::new(103.0, 104.0)),
                ],
            },
            ObjectResult { prediction: None, truth: vec![] }, // skipped: no part
            ObjectResult {
                prediction: Some(Point::new(10.0, 10.0)),
                truth: vec![TruthInstance::point(Point::new(10.0, 30.0))],
            },
        ];
        let r = evaluate_localization(&objects, &LocalizationParams::default()).unwrap();
        assert_eq!(r.objects, 2);
        assert_eq!(r.evaluated, vec![0, 2]);
        assert!((r.distances[0] - 5.0 / diag()).abs() < 1e-12);
        assert!((r.distances[1] - 20.0 / diag()).abs() < 1e-12);
        assert!((r.normalized_distance - 12.5 / diag()).abs() < 1e-12);
    }

    #[test]
    fn detection_and_loc_follow_the_rounded_inclusive_boxes() {
        // GT box centred at (50, 50), size 20x20 → [40, 60] on both axes (21x21 pixels).
        let gt = TruthInstance::boxed(Point::new(50.0, 50.0), Extent::new(20.0, 20.0));
        let params = LocalizationParams { predicted_size: Extent::new(20.0, 20.0), ..Default::default() };
        // Shifted by 5 px in x: boxes [45,65]x[40,60] and [40,60]^2 → inter 16*21 = 336,
        // union 441 + 441 − 336 = 546 → IoU 0.615 ≥ 0.5; centre (55, 50) inside.
        let near = ObjectResult { prediction: Some(Point::new(55.0, 50.0)), truth: vec![gt] };
        // Shifted by 12 px: inter 9*21 = 189, union 693 → IoU 0.27; centre (62, 50) outside.
        let far = ObjectResult { prediction: Some(Point::new(62.0, 50.0)), truth: vec![gt] };
        // Shifted by 10 px: inside (x = 60 is on the border), IoU 11*21/(882-231) = 0.355.
        let border = ObjectResult { prediction: Some(Point::new(60.0, 50.0)), truth: vec![gt] };
        let r = evaluate_localization(&[near, far, border], &params).unwrap();
        assert!((r.detection_accuracy - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.loc_rate - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn keypoints_use_unit_boxes() {
        let gt = TruthInstance::point(Point::new(50.0, 50.0));
        // GT box: round(49.5) = 50, round(50.5) = 51 → [50, 51]^2; the same for an exact hit.
        let exact = ObjectResult { prediction: Some(Point::new(50.0, 50.0)), truth: vec![gt] };
        let off = ObjectResult { prediction: Some(Point::new(52.0, 50.0)), truth: vec![gt] };
        let r = evaluate_localization(&[exact, off], &LocalizationParams::default()).unwrap();
        assert!((r.detection_accuracy - 0.5).abs() < 1e-12);
        assert!((r.loc_rate - 0.5).abs() < 1e-12);
    }

    #[test]
    fn errors_are_reported() {
        let gt = TruthInstance::point(Point::new(1.0, 1.0));
        let missing = ObjectResult { prediction: None, truth: vec![gt] };
        assert_eq!(
            evaluate_localization(&[missing], &LocalizationParams::default()),
            Err(EvalError::MissingPrediction { index: 0 })
        );
        assert!(matches!(evaluate_localization(&[], &LocalizationParams::default()), Err(EvalError::Empty(_))));
        let nan = ObjectResult { prediction: Some(Point::new(f64::NAN, 1.0)), truth: vec![gt] };
        assert!(matches!(evaluate_localization(&[nan], &LocalizationParams::default()), Err(EvalError::NonFinite(_))));
    }
}
