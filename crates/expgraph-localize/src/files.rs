//! JSON file formats of `expgraph localize`: the few-shot annotations it reads and the
//! predictions it writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::units::Point;
use crate::{LocalizeError, Prediction, Result};

/// One annotated example: an image (by its feature-cache id) and its part point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnnotatedExample {
    /// Image identifier, as in the feature cache and the activations.
    pub image_id: String,
    /// Part centre, 1-based pixels of the 224 object frame, original orientation.
    pub point: Point,
}

/// `ANN.json`: part name → its annotated examples (3 in the paper's protocol, any number ≥ 1
/// accepted).
///
/// ```json
/// { "parts": { "head": [ { "image_id": "2008_000123_1", "point": { "h": 52.0, "w": 110.5 } },
///                        { "image_id": "2008_000456_2", "point": { "h": 40.0, "w": 98.0 } },
///                        { "image_id": "2009_001234_1", "point": { "h": 61.0, "w": 120.0 } } ] } }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FewShotAnnotations {
    /// Parts, by name (sorted, so outputs are in a stable order).
    pub parts: BTreeMap<String, Vec<AnnotatedExample>>,
}

impl FewShotAnnotations {
    /// Parse and validate: at least one part, each with at least one example, finite points,
    /// no image twice within a part.
    pub fn from_json(text: &str) -> Result<Self> {
        let ann: Self = serde_json::from_str(text)?;
        ann.validate()?;
        Ok(ann)
    }

    /// The checks of [`from_json`](Self::from_json).
    pub fn validate(&self) -> Result<()> {
        if self.parts.is_empty() {
            return Err(LocalizeError::Empty("the annotations name no part".into()));
        }
        for (part, examples) in &self.parts {
            if examples.is_empty() {
                return Err(LocalizeError::Empty(format!("part {part} has no annotated example")));
            }
            // a hash set, not a scan of the earlier examples: a file from elsewhere may hold
            // very many examples
            let mut seen = std::collections::HashSet::with_capacity(examples.len());
            for e in examples {
                crate::units::check_finite(&e.point, &e.image_id)?;
                if !seen.insert(e.image_id.as_str()) {
                    return Err(LocalizeError::Shape {
                        image: e.image_id.clone(),
                        what: format!("annotated twice for part {part}"),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Predictions of one part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartPredictions {
    /// The prior-mean baseline (mean annotated point).
    pub prior_mean: Point,
    /// One prediction per image; empty for the `prior` method (every image gets `prior_mean`).
    pub predictions: Vec<Prediction>,
}

/// `PRED.json`, written by `expgraph localize`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionFile {
    /// Version of this format.
    pub format_version: u32,
    /// `graph`, `raw` or `prior`.
    pub method: String,
    /// Side of the square frame the points live in (224).
    pub input_size: usize,
    /// Parts, by name.
    pub parts: BTreeMap<String, PartPredictions>,
    /// The inputs the predictions come from (feature cache, graph); absent in files of older
    /// versions and for the prior method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<expgraph_graph::Provenance>,
}

impl PredictionFile {
    /// Current format version.
    pub const FORMAT_VERSION: u32 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let text = r#"{ "parts": { "head": [
            { "image_id": "a", "point": { "h": 52.0, "w": 110.5 } },
            { "image_id": "b", "point": { "h": 40.0, "w": 98.0 } },
            { "image_id": "c", "point": { "h": 61.0, "w": 120.0 } } ] } }"#;
        let ann = FewShotAnnotations::from_json(text).unwrap();
        assert_eq!(ann.parts["head"].len(), 3);
        assert_eq!(ann.parts["head"][0].point, Point::new(52.0, 110.5));
    }

    #[test]
    fn rejects_empty_duplicate_and_malformed() {
        assert!(matches!(FewShotAnnotations::from_json(r#"{"parts":{}}"#), Err(LocalizeError::Empty(_))));
        assert!(matches!(FewShotAnnotations::from_json(r#"{"parts":{"head":[]}}"#), Err(LocalizeError::Empty(_))));
        let dup = r#"{"parts":{"head":[{"image_id":"a","point":{"h":1,"w":2}},
                                       {"image_id":"a","point":{"h":3,"w":4}}]}}"#;
        assert!(matches!(FewShotAnnotations::from_json(dup), Err(LocalizeError::Shape { .. })));
        assert!(matches!(
            FewShotAnnotations::from_json(r#"{"parts":{"head":[{"image_id":"a"}]}}"#),
            Err(LocalizeError::Json(_))
        ));
    }
}
