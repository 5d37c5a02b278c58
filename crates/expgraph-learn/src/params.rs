//! Hyper-parameters of learning (spec §2.6), linfa-style: [`LearnParams`] builder →
//! [`LearnParams::check`] → [`CheckedLearnParams`].

use serde::{Deserialize, Serialize};

use crate::LearnError;

/// One graph layer to learn: the conv layer's name and its node density (spec §1.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerSpec {
    /// Tap name in the feature cache, e.g. `conv4_3`.
    pub name: String,
    /// Nodes per filter `K = ceil(H · W · density)`.
    pub density: f64,
}

/// Unchecked hyper-parameters. [`Default`] gives the paper's VGG-16 settings (spec §2.6) with
/// the spec §7 recommended behaviour; [`LearnParams::reference_compat`] switches to the
/// reference code's quirks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnParams {
    /// Graph layers, shallowest first (default conv4_2, conv4_3, conv5_2, conv5_3 with densities
    /// 0.05, 0.05, 0.1, 0.1).
    pub layers: Vec<LayerSpec>,
    /// EM iterations per layer (`iterNum = 20`).
    pub iterations: usize,
    /// Seed of the random initialization (ChaCha8).
    pub seed: u64,
    /// Use at most this many images (the first ones); `None` = all.
    pub max_images: Option<usize>,
    /// Search window cap as a fraction of H (`maxRange = 0.3`, window ≤ 0.3·H/2).
    pub max_range: f64,
    /// Search window in σ (`deform_ratio = 3`).
    pub deform_ratio: f64,
    /// Initial σ and the parentless prior σ as a fraction of H (`init_delta = 0.15`).
    pub init_delta: f64,
    /// Activation smoothing σ_map as a fraction of H (`map_delta = 0.025`).
    pub map_delta: f64,
    /// σ_min = `min_sigma_ratio` · σ_max (`min_delta = max_delta / 10`).
    pub min_sigma_ratio: f64,
    /// Parents per node (`topN = 15`).
    pub top_n: usize,
    /// Candidate parents kept after filtering (`topM = 600`, clamped to the pool).
    pub top_m: usize,
    /// Background weight (`validTau = 0.1`).
    pub valid_tau: f64,
    /// Step size of the μ update (`eta = 1`).
    pub eta: f64,
    /// Share of lowest-motion upper nodes dropped from the parent pool (`minVarRate = 0.5`).
    pub min_var_rate: f64,
    /// Border band dropped from the parent pool, fraction of H (`edgeCutRate = 0.1`).
    pub edge_cut_rate: f64,
    /// Choose the mirrored view per image when the features have one (spec §1.7, §7 #1).
    pub use_flips: bool,
    /// Reproduce the reference code's quirks (spec §7 and Addendum): channel-1 σ/window, stale
    /// grid spacing in the σ update, parent-unit mixing and the affine map of displacements,
    /// the child's H in the border rule, rounded window centre, nearest-candidate sibling
    /// lookup, and the flip no-op.
    pub reference_compat: bool,
    /// Images per work chunk. Chunks are fixed and reduced in order, so results do not depend
    /// on the thread count; the chunk size itself changes the float summation order.
    pub chunk_size: usize,
}

impl Default for LearnParams {
    fn default() -> Self {
        let l = |name: &str, density| LayerSpec { name: name.into(), density };
        Self {
            layers: vec![l("conv4_2", 0.05), l("conv4_3", 0.05), l("conv5_2", 0.1), l("conv5_3", 0.1)],
            iterations: 20,
            seed: 0,
            max_images: None,
            max_range: 0.3,
            deform_ratio: 3.0,
            init_delta: 0.15,
            map_delta: 0.025,
            min_sigma_ratio: 0.1,
            top_n: 15,
            top_m: 600,
            valid_tau: 0.1,
            eta: 1.0,
            min_var_rate: 0.5,
            edge_cut_rate: 0.1,
            use_flips: true,
            reference_compat: false,
            chunk_size: 4,
        }
    }
}

macro_rules! setter {
    ($(#[$m:meta])* $name:ident: $t:ty) => {
        $(#[$m])*
        pub fn $name(mut self, v: $t) -> Self {
            self.$name = v;
            self
        }
    };
}

impl LearnParams {
    /// Graph layers `(name, density)`, shallowest first.
    pub fn layers(mut self, layers: &[(&str, f64)]) -> Self {
        self.layers = layers.iter().map(|(n, d)| LayerSpec { name: (*n).into(), density: *d }).collect();
        self
    }
    /// Keep only the default layers named in `names` (their paper densities).
    pub fn select_layers(mut self, names: &[String]) -> Self {
        self.layers.retain(|l| names.contains(&l.name));
        self
    }
    setter!(/// EM iterations per layer.
        iterations: usize);
    setter!(/// Random seed.
        seed: u64);
    setter!(/// Use at most this many images.
        max_images: Option<usize>);
    setter!(/// Parents per node.
        top_n: usize);
    setter!(/// Candidate parents kept.
        top_m: usize);
    setter!(/// Background weight τ factor.
        valid_tau: f64);
    setter!(/// μ step size.
        eta: f64);
    setter!(/// Use real mirrored views when present.
        use_flips: bool);
    setter!(/// Reference-code compatibility (spec §7).
        reference_compat: bool);
    setter!(/// Images per work chunk.
        chunk_size: usize);
    setter!(/// Search window cap (fraction of H).
        max_range: f64);
    setter!(/// Search window in σ.
        deform_ratio: f64);
    setter!(/// Initial σ (fraction of H).
        init_delta: f64);
    setter!(/// Smoothing σ (fraction of H).
        map_delta: f64);

    /// Validate every value.
    pub fn check(self) -> Result<CheckedLearnParams, LearnError> {
        let bad = |name: &'static str, why: String| Err(LearnError::InvalidParam { name, why });
        if self.layers.is_empty() {
            return bad("layers", "at least one layer is needed".into());
        }
        for (i, l) in self.layers.iter().enumerate() {
            if !(l.density > 0.0 && l.density <= 1.0) {
                return bad("layers", format!("density of {} is {}, expected (0, 1]", l.name, l.density));
            }
            if self.layers[..i].iter().any(|o| o.name == l.name) {
                return bad("layers", format!("{} is listed twice", l.name));
            }
        }
        if self.iterations == 0 {
            return bad("iterations", "must be ≥ 1".into());
        }
        if self.max_images.is_some_and(|n| n < 2) {
            return bad("max_images", "must be ≥ 2".into());
        }
        let positive = [
            ("max_range", self.max_range),
            ("deform_ratio", self.deform_ratio),
            ("init_delta", self.init_delta),
            ("map_delta", self.map_delta),
            ("eta", self.eta),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return bad(name, format!("{v} must be finite and > 0"));
            }
        }
        if !(self.min_sigma_ratio > 0.0 && self.min_sigma_ratio <= 1.0) {
            return bad("min_sigma_ratio", format!("{} must be in (0, 1]", self.min_sigma_ratio));
        }
        if !(self.valid_tau.is_finite() && self.valid_tau >= 0.0) {
            return bad("valid_tau", format!("{} must be finite and ≥ 0", self.valid_tau));
        }
        if !(0.0..1.0).contains(&self.min_var_rate) {
            return bad("min_var_rate", format!("{} must be in [0, 1)", self.min_var_rate));
        }
        if !(0.0..0.5).contains(&self.edge_cut_rate) {
            return bad("edge_cut_rate", format!("{} must be in [0, 0.5)", self.edge_cut_rate));
        }
        if self.top_n == 0 || self.top_m == 0 {
            return bad("top_n", "top_n and top_m must be ≥ 1".into());
        }
        if self.chunk_size == 0 {
            return bad("chunk_size", "must be ≥ 1".into());
        }
        Ok(CheckedLearnParams(self))
    }
}

/// Validated hyper-parameters; [`CheckedLearnParams::fit`] learns a graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckedLearnParams(pub(crate) LearnParams);

impl CheckedLearnParams {
    /// The values.
    pub fn params(&self) -> &LearnParams {
        &self.0
    }

    /// Whether flips are really used (never in reference-compat mode: the reference's flip is a
    /// no-op, spec §7 #1).
    pub(crate) fn flips(&self) -> bool {
        self.0.use_flips && !self.0.reference_compat
    }
}

impl std::ops::Deref for CheckedLearnParams {
    type Target = LearnParams;
    fn deref(&self) -> &LearnParams {
        &self.0
    }
}
