//! Prediction: every template votes for the part centre, the best template wins (spec §4.1).

use serde::{Deserialize, Serialize};

use crate::model::{view_sign, PartModel, PartTemplate};
use crate::units::{ImageUnits, Point, UnitActivations};
use crate::{LocalizeError, Result, TemplateScore};
use expgraph_cache::argmax_cell;

/// A `size × size` vote map, row-major: pixel `(h, w)` (1-based) is `values[(h−1)·size + (w−1)]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoteMap {
    /// Side of the frame.
    pub size: usize,
    /// Vote mass per pixel.
    pub values: Vec<f32>,
}

/// The localization of a part in one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Image identifier.
    pub image_id: String,
    /// Predicted part centre, 1-based pixels of the input frame, original orientation.
    pub point: Point,
    /// Score of the winning template (see [`TemplateScore`]).
    pub score: f64,
    /// Index of the winning template.
    pub template: usize,
    /// Whether the winning view was the mirrored one.
    pub flipped: bool,
    /// Number of detected units that voted in the winning template.
    pub voters: usize,
    /// True when the winning template's vote map has no positive value (no detected unit, or
    /// every vote fell outside the frame); `point` is then the template's annotated point
    /// (mirrored when the template and this view face opposite ways).
    pub fallback: bool,
    /// Score of every template, in template order (for the winning view).
    pub template_scores: Vec<f64>,
    /// The winning template's vote map, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote_map: Option<VoteMap>,
}

/// One template's outcome on one image.
struct TemplateVote {
    point: Point,
    score: f64,
    voters: usize,
    fallback: bool,
}

impl PartModel {
    /// Localize the part in one image (the view chosen by inference).
    pub fn predict<U: UnitActivations + ?Sized>(&self, acts: &U) -> Result<Prediction> {
        self.predict_views(&[acts], false)
    }

    /// Like [`predict`](Self::predict), also returning the winning template's vote map.
    pub fn predict_with_vote_map<U: UnitActivations + ?Sized>(&self, acts: &U) -> Result<Prediction> {
        self.predict_views(&[acts], true)
    }

    /// Localize with several views of one image (e.g. original and mirrored activations): the
    /// view whose best template scores highest wins (ties: earlier view). Points are always in
    /// the original orientation.
    pub fn predict_views<U: UnitActivations + ?Sized>(&self, views: &[&U], keep_vote_map: bool) -> Result<Prediction> {
        let units = views.iter().map(|v| ImageUnits::from_activations(&self.layout, *v)).collect::<Result<Vec<_>>>()?;
        self.predict_unit_views(&units, keep_vote_map)
    }

    /// [`predict_views`](Self::predict_views) on views already in pixels (converted once with
    /// [`ImageUnits::from_activations`], e.g. to localize several parts in the same image).
    pub fn predict_unit_views(&self, views: &[ImageUnits], keep_vote_map: bool) -> Result<Prediction> {
        let Some(first) = views.first() else {
            return Err(LocalizeError::Empty("no view to predict from".into()));
        };
        let mut best: Option<Prediction> = None;
        for units in views {
            if units.image_id != first.image_id {
                return Err(LocalizeError::Shape {
                    image: first.image_id.clone(),
                    what: format!("views of different images ({})", units.image_id),
                });
            }
            let p = self.predict_units(units, keep_vote_map)?;
            if best.as_ref().is_none_or(|b| p.score > b.score) {
                best = Some(p);
            }
        }
        best.ok_or_else(|| LocalizeError::Empty("no view to predict from".into()))
    }

    /// Predict from units already in pixels (see [`ImageUnits::from_activations`]).
    pub fn predict_units(&self, units: &ImageUnits, keep_vote_map: bool) -> Result<Prediction> {
        self.validate_units(units)?;
        let size = self.layout.input_size;
        let mut map = vec![0.0f64; size * size];
        let mut best: Option<(usize, TemplateVote)> = None;
        let mut best_map = None;
        let mut template_scores = Vec::with_capacity(self.templates.len());
        for (index, template) in self.templates.iter().enumerate() {
            map.iter_mut().for_each(|v| *v = 0.0);
            let vote = self.vote(template, units, &mut map);
            template_scores.push(vote.score);
            if best.as_ref().is_none_or(|(_, b)| vote.score > b.score) {
                if keep_vote_map {
                    best_map = Some(map.iter().map(|&v| v as f32).collect());
                }
                best = Some((index, vote));
            }
        }
        let (template, vote) = best.ok_or_else(|| LocalizeError::InvalidModel("no template".into()))?;
        Ok(Prediction {
            image_id: units.image_id.clone(),
            point: vote.point,
            score: vote.score,
            template,
            flipped: units.flipped,
            voters: vote.voters,
            fallback: vote.fallback,
            template_scores,
            vote_map: best_map.map(|values| VoteMap { size, values }),
        })
    }

    fn validate_units(&self, units: &ImageUnits) -> Result<()> {
        let ok = units.layers.len() == self.layout.layers.len()
            && units
                .layers
                .iter()
                .zip(&self.layout.layers)
                .all(|(u, l)| u.positions.len() == l.num_units && u.scores.len() == l.num_units);
        if ok {
            Ok(())
        } else {
            Err(LocalizeError::Shape {
                image: units.image_id.clone(),
                what: "units do not match the model's layout".into(),
            })
        }
    }

    /// Σ_V w_V(I)·κ(p − x2p(p_V(I)) − δ_V) into `map`, then its argmax and the template score.
    fn vote(&self, template: &PartTemplate, units: &ImageUnits, map: &mut [f64]) -> TemplateVote {
        let params = &self.params;
        let size = self.layout.input_size;
        // δ is stored in the view frame; the units are in original orientation.
        let sign = view_sign(units.flipped);
        let centre = |u: &crate::SelectedUnit| {
            let p = units.layers[u.layer as usize].positions[u.unit as usize];
            [p[0] + u.delta[0], p[1] + sign * u.delta[1]]
        };
        let score_of = |u: &crate::SelectedUnit| units.layers[u.layer as usize].scores[u.unit as usize];
        let mut voters = 0;
        for u in &template.units {
            let s = score_of(u);
            if params.detected(s) {
                voters += 1;
                params.kernel.accumulate(map, size, centre(u), params.weight(s));
            }
        }
        let (h, w) = argmax_cell(map, size, size);
        let fallback = map[h * size + w] <= 0.0; // values are finite: scores and kernels are
        let point = if fallback && template.flipped != units.flipped {
            // the object faces the other way: its part is at the mirrored spot
            template.point.mirrored(size as f64)
        } else if fallback {
            template.point
        } else {
            Point::new((h + 1) as f64, (w + 1) as f64)
        };
        let n = template.units.len() as f64;
        let score = match params.template_score {
            TemplateScore::MeanScore => template.units.iter().map(score_of).sum::<f64>() / n,
            TemplateScore::Aog { spatial_weight, scale } => {
                let sum: f64 = template
                    .units
                    .iter()
                    .map(|u| {
                        let s = score_of(u);
                        if !params.detected(s) {
                            return s;
                        }
                        let c = centre(u);
                        let d2 = (point.h - c[0]).powi(2) + (point.w - c[1]).powi(2);
                        s - spatial_weight * d2 / (2.0 * scale * scale)
                    })
                    .sum();
                sum / n
            }
        };
        TemplateVote { point, score, voters, fallback }
    }
}
