//! Fitting: one part template per annotated example (spec §4.1, recommended design).

use expgraph_graph::{ExplanatoryGraph, ImageActivations};
use serde::{Deserialize, Serialize};

use crate::units::{ImageUnits, Point, UnitActivations, UnitLayout};
use crate::{LocalizeError, LocalizeValidParams, PriorMean, Result};

/// One unit kept by a template, with its displacement to the part.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SelectedUnit {
    /// Layer index in the model's [`UnitLayout`].
    pub layer: u32,
    /// Unit index within the layer (node `channel·K + k`, or filter).
    pub unit: u32,
    /// δ = p_part − x2p(p_V) in the annotated image, pixels `(h, w)`, in the frame of the view
    /// the units were inferred in: `δ_w` is negated when that view was the mirrored one, so a
    /// unit's δ means the same for every template whatever its view (see [`PartTemplate::flipped`]).
    pub delta: [f64; 2],
}

/// A part template learned from one annotated example (the AOG's "pose" template).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartTemplate {
    /// The annotated image.
    pub image_id: String,
    /// Its annotated part point.
    pub point: Point,
    /// Whether its activations were in the mirrored view.
    pub flipped: bool,
    /// Mean score of the selected units in the annotated image.
    pub score: f64,
    /// Kept units, ordered by layer, then by descending annotated score (ties by unit index).
    pub units: Vec<SelectedUnit>,
}

/// A fitted few-shot part model: the parameters, the unit layout and one template per example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartModel {
    /// Parameters used to fit (and to predict).
    pub params: LocalizeValidParams,
    /// The units' layers and frame.
    pub layout: UnitLayout,
    /// One template per annotated example that selects at least one unit, in input order.
    pub templates: Vec<PartTemplate>,
}

impl LocalizeValidParams {
    /// Fit on graph-node activations: one template per `(activations, part point)` pair.
    pub fn fit(&self, graph: &ExplanatoryGraph, annotated: &[(ImageActivations, Point)]) -> Result<PartModel> {
        self.fit_units(&UnitLayout::for_graph(graph), annotated)
    }

    /// Fit on any units (graph nodes or raw filters, see [`crate::filter_argmax`]).
    pub fn fit_units<U: UnitActivations>(&self, layout: &UnitLayout, annotated: &[(U, Point)]) -> Result<PartModel> {
        self.validate()?;
        layout.validate()?;
        if annotated.is_empty() {
            return Err(LocalizeError::Empty("no annotated example to fit a part model".into()));
        }
        let included = self.included_layers(layout)?;
        let mut templates = Vec::with_capacity(annotated.len());
        let mut first_empty = None;
        for (acts, point) in annotated {
            crate::units::check_finite(point, acts.image_id())?;
            let edge = layout.input_size as f64 + 0.5;
            if !(0.5..=edge).contains(&point.h) || !(0.5..=edge).contains(&point.w) {
                return Err(LocalizeError::Shape {
                    image: acts.image_id().to_string(),
                    what: format!(
                        "annotated point (h {}, w {}) lies outside the {}×{} input frame (1-based pixels)",
                        point.h, point.w, layout.input_size, layout.input_size
                    ),
                });
            }
            let units = ImageUnits::from_activations(layout, acts)?;
            match self.fit_template(&units, *point, &included) {
                Ok(t) => templates.push(t),
                // An example that selects no unit gives no template; the others still vote.
                Err(e @ LocalizeError::NoUnitSelected { .. }) => {
                    tracing::warn!(image = acts.image_id(), "annotated example selects no unit; template skipped");
                    first_empty.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        if let (true, Some(e)) = (templates.is_empty(), first_empty) {
            return Err(e);
        }
        for t in &templates {
            tracing::debug!(image = %t.image_id, units = t.units.len(), "part template");
        }
        Ok(PartModel { params: self.clone(), layout: layout.clone(), templates })
    }

    /// Whether each layout layer takes part; fails on an unknown name in `layers`.
    fn included_layers(&self, layout: &UnitLayout) -> Result<Vec<bool>> {
        if self.layers.is_empty() {
            return Ok(vec![true; layout.layers.len()]);
        }
        let mut included = vec![false; layout.layers.len()];
        for name in &self.layers {
            let index = layout.layer_index(name).ok_or_else(|| LocalizeError::InvalidParam {
                name: "layers",
                value: name.clone(),
                reason: "is not a layer of the activations",
            })?;
            included[index] = true;
        }
        Ok(included)
    }

    /// Node selection of spec §4.1: top `q` by score per layer, detected, ‖δ‖ ≤ bound.
    fn fit_template(&self, units: &ImageUnits, point: Point, included: &[bool]) -> Result<PartTemplate> {
        let mut selected = Vec::new();
        let mut score_sum = 0.0;
        for (layer, data) in units.layers.iter().enumerate().filter(|(l, _)| included[*l]) {
            for unit in top_units(&data.scores, self.top_fraction) {
                let score = data.scores[unit];
                if !self.detected(score) {
                    continue;
                }
                let p = data.positions[unit];
                let delta = [point.h - p[0], view_sign(units.flipped) * (point.w - p[1])];
                if delta[0].hypot(delta[1]) > self.max_displacement {
                    continue;
                }
                score_sum += score;
                selected.push(SelectedUnit { layer: layer as u32, unit: unit as u32, delta });
            }
        }
        if selected.is_empty() {
            return Err(LocalizeError::NoUnitSelected { image: units.image_id.clone() });
        }
        Ok(PartTemplate {
            image_id: units.image_id.clone(),
            point,
            flipped: units.flipped,
            score: score_sum / selected.len() as f64,
            units: selected,
        })
    }
}

/// `−1` for a mirrored view, `1` otherwise: a horizontal displacement measured in original
/// orientation times this sign is the displacement in the view's own frame (and back).
pub(crate) fn view_sign(flipped: bool) -> f64 {
    if flipped {
        -1.0
    } else {
        1.0
    }
}

/// Indices of the `ceil(q · n)` highest scores, best first; ties by lower index.
fn top_units(scores: &[f64], q: f64) -> Vec<usize> {
    let n = scores.len();
    // The tiny slack keeps e.g. 0.05 · 20480 = 1024.000…01 from rounding up to 1025.
    let keep = ((q * n as f64 - 1e-9).ceil().max(0.0) as usize).min(n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order.truncate(keep);
    order
}

impl PartModel {
    /// Serialize to pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Parse and validate a model saved by [`to_json`](Self::to_json).
    pub fn from_json(text: &str) -> Result<Self> {
        let model: PartModel = serde_json::from_str(text)?;
        model.validate()?;
        Ok(model)
    }

    /// Check parameters, layout and every template's unit references.
    pub fn validate(&self) -> Result<()> {
        self.params.validate()?;
        self.layout.validate()?;
        if self.templates.is_empty() {
            return Err(LocalizeError::InvalidModel("no template".into()));
        }
        for t in &self.templates {
            let bad = |what: String| Err(LocalizeError::InvalidModel(format!("template of {}: {what}", t.image_id)));
            if t.units.is_empty() {
                return bad("no unit".into());
            }
            if !(t.point.h.is_finite() && t.point.w.is_finite() && t.score.is_finite()) {
                return bad("non-finite point or score".into());
            }
            for u in &t.units {
                let Some(layer) = self.layout.layers.get(u.layer as usize) else {
                    return bad(format!("layer {} out of range", u.layer));
                };
                if u.unit as usize >= layer.num_units {
                    return bad(format!("unit {} out of range in layer {}", u.unit, layer.name));
                }
                if !(u.delta[0].is_finite() && u.delta[1].is_finite()) {
                    return bad("non-finite displacement".into());
                }
            }
        }
        Ok(())
    }

    /// The prior-mean baseline of the same annotated examples.
    pub fn prior_mean(&self) -> Result<PriorMean> {
        PriorMean::fit(&self.templates.iter().map(|t| t.point).collect::<Vec<_>>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_units_breaks_ties_by_index_and_rounds_up() {
        let scores = [1.0, 3.0, 3.0, 0.5, 2.0];
        assert_eq!(top_units(&scores, 0.2), vec![1]);
        assert_eq!(top_units(&scores, 0.41), vec![1, 2, 4]);
        assert_eq!(top_units(&scores, 1.0), vec![1, 2, 4, 0, 3]);
        assert!(top_units(&[], 0.5).is_empty());
    }

    #[test]
    fn an_annotated_point_outside_the_frame_is_an_error_naming_the_image() {
        use expgraph_graph::{ImageActivations, LayerActivations};
        let info = expgraph_cache::LayerInfo {
            name: "conv5_3".into(),
            channels: 2,
            height: 14,
            width: 14,
            geometry: crate::TapGeometry { stride: 16.0, first_centre: 8.0, receptive_field: 196.0 },
        };
        let layout = UnitLayout::for_filters(224, &[info]);
        let acts = ImageActivations {
            image_id: "img7".into(),
            flipped: false,
            layers: vec![LayerActivations {
                layer: "conv5_3".into(),
                positions: vec![[5.0, 5.0], [6.0, 6.0]],
                scores: vec![1.0, 1.0],
            }],
        };
        let params = crate::LocalizeParams::default().top_fraction(1.0).check().unwrap();
        params.fit_units(&layout, &[(&acts, Point::new(80.0, 80.0))]).unwrap();
        for bad in [Point::new(80.0, 300.0), Point::new(-4.0, 80.0)] {
            let err = params.fit_units(&layout, &[(&acts, bad)]).unwrap_err().to_string();
            assert!(err.contains("img7") && err.contains("outside"), "{err}");
        }
    }
}
