//! Hyper-parameters of the part model (spec §4.1, recommended design), linfa style:
//! [`LocalizeParams`] (builder) → [`LocalizeParams::check`] → [`LocalizeValidParams`].

use serde::{Deserialize, Serialize};

use crate::kernel::Kernel;
use crate::{LocalizeError, Result};

/// How much a detected unit's vote weighs (spec §4.1: `w_V(I)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteWeight {
    /// Every detected unit votes with weight 1 (AOG-faithful: the pattern score cancels out).
    Detected,
    /// A detected unit votes with its score `S_V(I)`.
    Score,
}

/// How a template is scored on a test image, to pick the best of the 3 templates (spec §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateScore {
    /// Mean score `S_V(I)` over the template's selected units (detected or not).
    MeanScore,
    /// AOG-like: mean over selected units of `S_V(I) − λ·‖p̂ − c_V‖² / (2·scale²)`, where `p̂` is the
    /// template's argmax and `c_V` the unit's vote centre; the spatial term only for detected units.
    Aog {
        /// λ (the AOG's `super_loc` = 5).
        spatial_weight: f64,
        /// scale in pixels (the AOG's ‖(35, 35)‖ ≈ 49.5).
        scale: f64,
    },
}

impl TemplateScore {
    /// The AOG code's rule: λ = `super_loc` = 5, scale ‖(35, 35)‖ (spec §4.1, step 2).
    pub const AOG: Self = Self::Aog { spatial_weight: 5.0, scale: 35.0 * std::f64::consts::SQRT_2 };
}

/// Unchecked parameters of [`PartModel`](crate::PartModel) fitting; build, then [`check`](Self::check).
///
/// ```
/// use expgraph_localize::{Kernel, LocalizeParams, VoteWeight};
/// let params = LocalizeParams::default()
///     .top_fraction(0.1)
///     .kernel(Kernel::gaussian())
///     .vote_weight(VoteWeight::Score)
///     .check()
///     .unwrap();
/// assert_eq!(params.top_fraction(), 0.1);
/// assert!(LocalizeParams::default().top_fraction(0.0).check().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalizeParams(LocalizeValidParams);

/// Checked parameters; see the builder methods of [`LocalizeParams`] for their meaning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalizeValidParams {
    pub(crate) top_fraction: f64,
    pub(crate) max_displacement: f64,
    pub(crate) detection_threshold: f64,
    pub(crate) kernel: Kernel,
    pub(crate) vote_weight: VoteWeight,
    pub(crate) template_score: TemplateScore,
    pub(crate) layers: Vec<String>,
}

impl Default for LocalizeParams {
    /// q = 5 % per layer, ‖δ‖ ≤ 0.3·224 px, detected = score > 0, AOG kernel, unit weights,
    /// the AOG's template score ([`TemplateScore::AOG`]), all layers.
    fn default() -> Self {
        Self(LocalizeValidParams {
            top_fraction: 0.05,
            max_displacement: 0.3 * 224.0,
            detection_threshold: 0.0,
            kernel: Kernel::aog(),
            vote_weight: VoteWeight::Detected,
            template_score: TemplateScore::AOG,
            layers: Vec::new(),
        })
    }
}

impl LocalizeParams {
    /// Fraction q ∈ (0, 1] of each layer's units, ranked by score in the annotated image, that a
    /// template keeps (`ceil(q · units)`, ties by unit index).
    pub fn top_fraction(mut self, q: f64) -> Self {
        self.0.top_fraction = q;
        self
    }

    /// Largest allowed ‖δ‖ (pixels of the input frame) between a kept unit and the part.
    pub fn max_displacement(mut self, pixels: f64) -> Self {
        self.0.max_displacement = pixels;
        self
    }

    /// A unit is *detected* (may be selected, may vote) when its score is strictly above this.
    pub fn detection_threshold(mut self, threshold: f64) -> Self {
        self.0.detection_threshold = threshold;
        self
    }

    /// The vote kernel κ.
    pub fn kernel(mut self, kernel: Kernel) -> Self {
        self.0.kernel = kernel;
        self
    }

    /// The vote weight `w_V(I)`.
    pub fn vote_weight(mut self, weight: VoteWeight) -> Self {
        self.0.vote_weight = weight;
        self
    }

    /// How templates are compared on a test image.
    pub fn template_score(mut self, rule: TemplateScore) -> Self {
        self.0.template_score = rule;
        self
    }

    /// Use only these layers (by name); empty = all layers.
    pub fn layers(mut self, names: Vec<String>) -> Self {
        self.0.layers = names;
        self
    }

    /// Validate every value.
    pub fn check(self) -> Result<LocalizeValidParams> {
        self.0.validate()?;
        Ok(self.0)
    }

    /// Validate without consuming.
    pub fn check_ref(&self) -> Result<&LocalizeValidParams> {
        self.0.validate()?;
        Ok(&self.0)
    }
}

fn invalid(name: &'static str, value: impl ToString, reason: &'static str) -> LocalizeError {
    LocalizeError::InvalidParam { name, value: value.to_string(), reason }
}

impl LocalizeValidParams {
    /// The checks of [`LocalizeParams::check`]; also run on a deserialized model.
    pub(crate) fn validate(&self) -> Result<()> {
        let q = self.top_fraction;
        if !(q.is_finite() && q > 0.0 && q <= 1.0) {
            return Err(invalid("top_fraction", q, "must be in (0, 1]"));
        }
        let d = self.max_displacement;
        if !(d.is_finite() && d > 0.0) {
            return Err(invalid("max_displacement", d, "must be a positive number of pixels"));
        }
        if !self.detection_threshold.is_finite() {
            return Err(invalid("detection_threshold", self.detection_threshold, "must be finite"));
        }
        self.kernel.validate()?;
        if let TemplateScore::Aog { spatial_weight, scale } = self.template_score {
            if !(spatial_weight.is_finite() && spatial_weight >= 0.0) {
                return Err(invalid("template_score.spatial_weight", spatial_weight, "must be ≥ 0"));
            }
            if !(scale.is_finite() && scale > 0.0) {
                return Err(invalid("template_score.scale", scale, "must be positive"));
            }
        }
        let mut names = self.layers.clone();
        names.sort();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(invalid("layers", self.layers.join(","), "names a layer twice"));
        }
        Ok(())
    }

    /// q, the kept fraction of units per layer.
    pub fn top_fraction(&self) -> f64 {
        self.top_fraction
    }
    /// The displacement bound in pixels.
    pub fn max_displacement(&self) -> f64 {
        self.max_displacement
    }
    /// The detection threshold on scores.
    pub fn detection_threshold(&self) -> f64 {
        self.detection_threshold
    }
    /// The vote kernel.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }
    /// The vote weight rule.
    pub fn vote_weight(&self) -> VoteWeight {
        self.vote_weight
    }
    /// The template-choice rule.
    pub fn template_score(&self) -> TemplateScore {
        self.template_score
    }
    /// The layer subset (empty = all).
    pub fn layers(&self) -> &[String] {
        &self.layers
    }

    /// Whether a score counts as a detection.
    pub(crate) fn detected(&self, score: f64) -> bool {
        score > self.detection_threshold
    }

    /// `w_V(I)` of a detected unit.
    pub(crate) fn weight(&self, score: f64) -> f64 {
        match self.vote_weight {
            VoteWeight::Detected => 1.0,
            VoteWeight::Score => score,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_spec() {
        let p = LocalizeParams::default().check().unwrap();
        assert_eq!(p.top_fraction(), 0.05);
        assert!((p.max_displacement() - 67.2).abs() < 1e-12);
        assert_eq!(p.kernel(), Kernel::aog());
        assert_eq!(p.vote_weight(), VoteWeight::Detected);
    }

    #[test]
    fn invalid_values_are_rejected_with_their_name() {
        let cases = [
            LocalizeParams::default().top_fraction(0.0),
            LocalizeParams::default().top_fraction(1.5),
            LocalizeParams::default().top_fraction(f64::NAN),
            LocalizeParams::default().max_displacement(-1.0),
            LocalizeParams::default().max_displacement(f64::INFINITY),
            LocalizeParams::default().detection_threshold(f64::NAN),
            LocalizeParams::default().kernel(Kernel::Gaussian { sigma: 0.0, truncate: 3.0 }),
            LocalizeParams::default().kernel(Kernel::Laplacian { scale: 49.5, half_width: -2.0 }),
            LocalizeParams::default().template_score(TemplateScore::Aog { spatial_weight: -1.0, scale: 49.5 }),
            LocalizeParams::default().layers(vec!["a".into(), "a".into()]),
        ];
        for case in cases {
            let err = case.clone().check().unwrap_err();
            assert!(matches!(err, LocalizeError::InvalidParam { .. }), "{case:?} gave {err}");
            assert!(case.check_ref().is_err());
        }
    }

    #[test]
    fn q_of_one_is_allowed() {
        assert!(LocalizeParams::default().top_fraction(1.0).check().is_ok());
    }
}
