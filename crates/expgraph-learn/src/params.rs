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

/// How the top layer picks each image's view, as is or mirrored (spec §1.7, §7 #1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ViewRule {
    /// The view whose summed node scores `Σ_V S_V(I)` are larger: the view the nodes explain
    /// better (expgraph's default; `expgraph_disentangle::view_score`).
    #[default]
    NodeScore,
    /// The spec's rule, the larger `Σ_V Σ_c ln(prob_c) · prior_c`. Every `ln prob_c` is
    /// negative, so it mostly keeps the view with less evidence in the node windows (graphs
    /// learned before `view_rule` existed used it).
    LogProb,
}

impl ViewRule {
    /// The rule of a stored graph whose parameters predate `view_rule`.
    fn legacy() -> Self {
        ViewRule::LogProb
    }
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
    /// How the view is chosen when flips are used.
    #[serde(default = "ViewRule::legacy")]
    pub view_rule: ViewRule,
    /// Reproduce the reference code's quirks (spec §7 and Addendum): channel-1 σ/window, stale
    /// grid spacing in the σ update, parent-unit mixing and the affine map of displacements,
    /// the child's H in the border rule, rounded window centre, nearest-candidate sibling
    /// lookup, the flip no-op, and for a ResNet the reference's linear pixel map in clique
    /// mining ([`crate::reference_geometry`], spec §1.3).
    pub reference_compat: bool,
    /// Images per work chunk. Chunks are fixed and reduced in order, so results do not depend
    /// on the thread count; the chunk size itself changes the float summation order.
    pub chunk_size: usize,
}

/// The paper's VGG-16 graph layers and node densities (spec §1.2): maps 28, 28, 14, 14 at a 224
/// input, so K = 40, 40, 20, 20 nodes per filter.
pub const PAPER_VGG16_LAYERS: [(&str, f64); 4] =
    [("conv4_2", 0.05), ("conv4_3", 0.05), ("conv5_2", 0.1), ("conv5_3", 0.1)];

/// The paper's ResNet graph layers (paper-spec §1.2, `getConvNet_ResNet_VAEGAN(conf,[28,14,7],…)`):
/// the outputs of the conv3_x, conv4_x and conv5_x stages, torchvision's `layer2`, `layer3`,
/// `layer4` (maps 28, 14, 7), with densities 0.05, 0.1, 0.2, so K = 40, 20, 10 nodes per filter.
/// Every other hyper-parameter is the VGG-16 one (paper-spec §2.6); `topN = 15` and `topM = 600`
/// as for VGG-16 (the reference's `[15,15,0]`/`[600,600,0]`: the top layer has no parents).
/// A cache may hold a stage as `layerN.pre_relu` (what `expgraph extract` stores by default) or
/// as `layerN`; see [`LearnParams::paper_layers`].
pub const PAPER_RESNET_LAYERS: [(&str, f64); 3] = [("layer2", 0.05), ("layer3", 0.1), ("layer4", 0.2)];

/// A torchvision/timm ResNet name: `resnet` and a depth (`resnet18`, `resnet50`, …).
fn is_resnet(backbone: &str) -> bool {
    backbone.strip_prefix("resnet").is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
}

impl Default for LearnParams {
    fn default() -> Self {
        Self {
            layers: PAPER_VGG16_LAYERS
                .iter()
                .map(|&(name, density)| LayerSpec { name: name.into(), density })
                .collect(),
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
            view_rule: ViewRule::NodeScore,
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
    /// The paper's graph layers for features of `backbone` (a cache manifest's `backbone`):
    /// [`PAPER_VGG16_LAYERS`] for `vgg16`; [`PAPER_RESNET_LAYERS`] for `resnet18` … `resnet152`,
    /// each stage named as the cache has it (`available`: its layer names): `layerN.pre_relu`
    /// when present, else `layerN` when present, else `layerN.pre_relu`. `None` for another backbone.
    pub fn paper_layers(backbone: &str, available: &[&str]) -> Option<Vec<LayerSpec>> {
        if backbone == "vgg16" {
            return Some(
                PAPER_VGG16_LAYERS.iter().map(|&(n, density)| LayerSpec { name: n.into(), density }).collect(),
            );
        }
        if !is_resnet(backbone) {
            return None;
        }
        let layers = PAPER_RESNET_LAYERS
            .iter()
            .map(|&(stage, density)| {
                let pre = format!("{stage}.pre_relu");
                let name =
                    if !available.contains(&pre.as_str()) && available.contains(&stage) { stage.into() } else { pre };
                LayerSpec { name, density }
            })
            .collect();
        Some(layers)
    }

    /// The paper's node density of graph layer `name` for `backbone`: the VGG-16 layers for
    /// `vgg16` and for any backbone that is no ResNet; for a ResNet, `layerN` or `layerN.pre_relu`
    /// of stages 2–4. `None` for a layer the paper does not use.
    pub fn paper_density(backbone: &str, name: &str) -> Option<f64> {
        if is_resnet(backbone) {
            let stage = name.strip_suffix(".pre_relu").unwrap_or(name);
            PAPER_RESNET_LAYERS.iter().find(|(n, _)| *n == stage).map(|&(_, d)| d)
        } else {
            PAPER_VGG16_LAYERS.iter().find(|(n, _)| *n == name).map(|&(_, d)| d)
        }
    }

    /// [`LearnParams::default`] with the paper's graph layers for the cache described by
    /// `manifest` ([`LearnParams::paper_layers`] of its backbone and layers); a cache of another
    /// backbone keeps the VGG-16 layers.
    pub fn paper_preset(manifest: &expgraph_cache::CacheManifest) -> Self {
        let available: Vec<&str> = manifest.layers.iter().map(|l| l.name.as_str()).collect();
        let mut params = Self::default();
        if let Some(layers) = Self::paper_layers(&manifest.backbone, &available) {
            params.layers = layers;
        }
        params
    }

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
    setter!(/// How the view is chosen when flips are used.
        view_rule: ViewRule);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(layers: &[LayerSpec]) -> Vec<(&str, f64)> {
        layers.iter().map(|l| (l.name.as_str(), l.density)).collect()
    }

    #[test]
    fn preset_by_backbone_name() {
        let vgg = LearnParams::paper_layers("vgg16", &[]).unwrap();
        assert_eq!(names(&vgg), PAPER_VGG16_LAYERS);
        assert_eq!(vgg, LearnParams::default().layers);
        for depth in ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"] {
            let pre =
                LearnParams::paper_layers(depth, &["layer1", "layer2.pre_relu", "layer3.pre_relu", "layer4.pre_relu"]);
            assert_eq!(
                names(&pre.unwrap()),
                [("layer2.pre_relu", 0.05), ("layer3.pre_relu", 0.1), ("layer4.pre_relu", 0.2)],
                "{depth}"
            );
        }
        // Post-ReLU stage outputs when that is what the cache holds; pre-ReLU preferred when both are.
        let post = LearnParams::paper_layers("resnet50", &["layer2", "layer3", "layer4"]).unwrap();
        assert_eq!(names(&post), PAPER_RESNET_LAYERS);
        let both = LearnParams::paper_layers("resnet50", &["layer2", "layer2.pre_relu", "layer3", "layer4"]).unwrap();
        assert_eq!(names(&both), [("layer2.pre_relu", 0.05), ("layer3", 0.1), ("layer4", 0.2)]);
        for other in ["alexnet", "resnet", "resnetx", "vgg19", ""] {
            assert_eq!(LearnParams::paper_layers(other, &["layer2"]), None, "{other}");
        }
        // K = ceil(H·W·density): 40, 20, 10 nodes per filter on 28, 14, 7 maps (spec §1.2).
        let k: Vec<usize> = PAPER_RESNET_LAYERS
            .iter()
            .zip([28.0, 14.0, 7.0])
            .map(|(&(_, d), side): (&(&str, f64), f64)| (side * side * d).ceil() as usize)
            .collect();
        assert_eq!(k, [40, 20, 10]);
        assert_eq!(LearnParams::paper_density("resnet101", "layer4.pre_relu"), Some(0.2));
        assert_eq!(LearnParams::paper_density("resnet101", "layer3"), Some(0.1));
        assert_eq!(LearnParams::paper_density("resnet101", "layer1"), None);
        assert_eq!(LearnParams::paper_density("resnet101", "conv5_3"), None);
        assert_eq!(LearnParams::paper_density("vgg16", "conv5_3"), Some(0.1));
        assert_eq!(LearnParams::paper_density("synthetic", "conv4_2"), Some(0.05));
    }

    #[test]
    fn preset_from_a_cache_manifest() {
        use expgraph_cache::{CacheManifest, LayerInfo, TapGeometry};
        let layer = |name: &str, side: usize| LayerInfo {
            name: name.into(),
            channels: 2,
            height: side,
            width: side,
            geometry: TapGeometry { stride: 8.0, first_centre: 1.0, receptive_field: 91.0 },
        };
        let manifest = |backbone: &str, layers: Vec<LayerInfo>| CacheManifest {
            format_version: CacheManifest::FORMAT_VERSION,
            key: String::new(),
            backbone: backbone.into(),
            preprocess: "torchvision".into(),
            input_size: 224,
            layers,
            images: Vec::new(),
            views: Vec::new(),
        };
        let resnet = manifest("resnet50", vec![layer("layer2", 28), layer("layer3", 14), layer("layer4", 7)]);
        assert_eq!(names(&LearnParams::paper_preset(&resnet).layers), PAPER_RESNET_LAYERS);
        let vgg = manifest("vgg16", vec![layer("conv5_3", 14)]);
        assert_eq!(LearnParams::paper_preset(&vgg), LearnParams::default());
        let other = manifest("planted", vec![layer("conv5_3", 14)]);
        assert_eq!(LearnParams::paper_preset(&other), LearnParams::default());
    }

    #[test]
    fn view_rule_defaults_to_node_scores_and_old_graphs_keep_the_spec_rule() {
        assert_eq!(LearnParams::default().view_rule, ViewRule::NodeScore);
        let mut stored = serde_json::to_value(LearnParams::default()).unwrap();
        assert_eq!(stored["view_rule"], "node_score");
        // Parameters stored before `view_rule` existed: those graphs chose views by the spec's rule.
        stored.as_object_mut().unwrap().remove("view_rule");
        let old: LearnParams = serde_json::from_value(stored).unwrap();
        assert_eq!(old.view_rule, ViewRule::LogProb);
    }
}
