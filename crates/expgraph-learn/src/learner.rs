//! The learner (spec §2): top-down, layer by layer, `iterations` EM iterations per layer.

use expgraph_cache::{LayerInfo, LayerMaps, TapGeometry};
use expgraph_cliques::{candidate_pool, displacements, select_parents, DisplacementFrame, LayerRecords, ParentPrior};
use expgraph_disentangle::{
    grid_spacing, half_range, nodes_per_filter, random_means, sigma_max, step_sigma, update_mu, update_sigma,
};
use expgraph_graph::{ExplanatoryGraph, GraphLayer, Parent};

use crate::align::align_views;
use crate::checkpoint::{Checkpoints, LayerCheckpoint};
use crate::layer_model::{
    estep_config, half_ranges, mean_positions, node_setups, parent_displacements, parent_priors, pixel_geometry,
    unit_ratio,
};
use crate::pass::{run_pass, Priors, Views};
use crate::{CheckedLearnParams, FeatureSource, LearnError, ViewRule};

/// Progress of learning, reported after every iteration.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Layer being learned.
    pub layer: String,
    /// How many layers are done (0-based position of this layer in the top-down order).
    pub layers_done: usize,
    /// Number of layers.
    pub num_layers: usize,
    /// Iteration just finished (1-based).
    pub iteration: usize,
    /// Iterations per layer.
    pub iterations: usize,
}

/// Per-image records of a learned layer, from its last E-step (spec §2.4 "records").
#[derive(Debug, Clone, PartialEq)]
pub struct LayerRecord {
    /// Layer name.
    pub layer: String,
    /// `[image][node]` inferred positions (map coordinates of the chosen view).
    pub positions: Vec<[f32; 2]>,
    /// `[image][node]` scores divided by their global mean (`prob_record`).
    pub scores: Vec<f32>,
}

/// What [`CheckedLearnParams::fit`] returns.
#[derive(Debug, Clone)]
pub struct LearnOutput {
    /// The graph.
    pub graph: ExplanatoryGraph,
    /// Records of every layer, shallowest first.
    pub records: Vec<LayerRecord>,
    /// View chosen per image (top layer, last iteration).
    pub flips: Vec<bool>,
    /// Image identifiers used.
    pub image_ids: Vec<String>,
}

/// The upper layer's final state, used for the layer below.
struct Upper {
    info: LayerInfo,
    /// Pixel geometry of the layer for clique mining ([`pixel_geometry`]).
    geometry: TapGeometry,
    positions: Vec<[f32; 2]>,
    scores: Vec<f32>,
    sigma: Vec<f64>,
    mean: Vec<[f64; 2]>,
}

impl Upper {
    /// What the layer below needs of a finished layer.
    fn of(info: &LayerInfo, geometry: TapGeometry, layer: &GraphLayer, record: &LayerRecord) -> Self {
        Self {
            info: info.clone(),
            geometry,
            positions: record.positions.clone(),
            scores: record.scores.clone(),
            sigma: layer.sigma.clone(),
            mean: layer.mean_position.clone(),
        }
    }
}

impl CheckedLearnParams {
    /// Learn a graph from `features` with random initial means.
    pub fn fit(&self, features: &dyn FeatureSource) -> Result<LearnOutput, LearnError> {
        self.fit_with(features, None, &|_| {})
    }

    /// Learn a graph; `initial_mu` (per layer, shallowest first, `nodes` positions each) replaces
    /// the random initialization; `progress` is called after every iteration.
    pub fn fit_with(
        &self,
        features: &dyn FeatureSource,
        initial_mu: Option<&[Vec<[f64; 2]>]>,
        progress: &(dyn Fn(&Progress) + Sync),
    ) -> Result<LearnOutput, LearnError> {
        self.fit_resumable(features, initial_mu, progress, None)
    }

    /// [`fit_with`](Self::fit_with), saving each finished layer to `checkpoints` and starting
    /// from the layers already there: a killed run, rerun with the same checkpoints, resumes
    /// at the first unfinished layer and returns what an uninterrupted run returns, bit for bit.
    /// The checkpoints must belong to this run (same features, parameters and images;
    /// [`DirCheckpoints`](crate::DirCheckpoints) tells by a fingerprint).
    pub fn fit_resumable(
        &self,
        features: &dyn FeatureSource,
        initial_mu: Option<&[Vec<[f64; 2]>]>,
        progress: &(dyn Fn(&Progress) + Sync),
        checkpoints: Option<&dyn Checkpoints>,
    ) -> Result<LearnOutput, LearnError> {
        let p = &self.0;
        let available = features.layers();
        let mut infos = Vec::new();
        for spec in &p.layers {
            let info = available.iter().find(|l| l.name == spec.name).ok_or_else(|| LearnError::MissingLayer {
                layer: spec.name.clone(),
                available: available.iter().map(|l| l.name.clone()).collect(),
            })?;
            check_layer_shape(info)?;
            infos.push(info.clone());
        }
        let ids = features.image_ids();
        let n = p.max_images.map_or(ids.len(), |m| m.min(ids.len()));
        if n < 2 {
            return Err(LearnError::TooFewImages(n));
        }
        if let Some(init) = initial_mu {
            if init.len() != p.layers.len() {
                return Err(LearnError::Mismatch(format!(
                    "{} initial layers for {} graph layers",
                    init.len(),
                    p.layers.len()
                )));
            }
        }
        let num_layers = p.layers.len();
        let mut layers_out: Vec<Option<(GraphLayer, LayerRecord)>> = vec![None; num_layers];
        let mut upper: Option<Upper> = None;
        let mut flips = vec![false; n];
        // Checkpoints are used while they continue from the top layer down.
        let mut resuming = checkpoints.is_some();
        for (done, l) in (0..num_layers).rev().enumerate() {
            let info = &infos[l];
            let geometry = pixel_geometry(p, features.backbone(), info);
            let k = nodes_per_filter(info.height, info.width, p.layers[l].density);
            let tick = |it: usize| {
                progress(&Progress {
                    layer: info.name.clone(),
                    layers_done: done,
                    num_layers,
                    iteration: it,
                    iterations: p.iterations,
                })
            };
            let saved = match checkpoints {
                Some(c) if resuming => c.load(info)?,
                _ => None,
            };
            if let Some(cp) = saved {
                let nodes = cp.layer.num_nodes();
                if cp.layer.nodes_per_filter != k
                    || cp.flips.len() != n
                    || cp.record.positions.len() != n * nodes
                    || cp.record.scores.len() != n * nodes
                {
                    return Err(LearnError::Mismatch(format!(
                        "the checkpoint of layer {} holds {} images and {} nodes per filter, this run has {n} and {k}",
                        info.name,
                        cp.flips.len(),
                        cp.layer.nodes_per_filter
                    )));
                }
                (1..=p.iterations).for_each(tick);
                if upper.is_none() {
                    flips = cp.flips;
                }
                log_summary(&cp.layer);
                upper = Some(Upper::of(info, geometry, &cp.layer, &cp.record));
                layers_out[l] = Some((cp.layer, cp.record));
                continue;
            }
            resuming = false;
            let maps = features.open_layer(&info.name)?;
            if maps.num_images() < n || maps.info() != info {
                return Err(LearnError::Mismatch(format!(
                    "layer {} has {} images (need {n}) or a shape other than the manifest's",
                    info.name,
                    maps.num_images()
                )));
            }
            let init = initial_mu.map(|i| i[l].clone());
            let (layer, record, layer_flips) = self.learn_layer(
                maps.as_ref(),
                n,
                info,
                geometry,
                k,
                p.layers[l].density,
                init,
                upper.as_ref(),
                &flips,
                &tick,
                l as u64,
            )?;
            if upper.is_none() {
                flips = layer_flips;
            }
            if let Some(c) = checkpoints {
                c.save(&LayerCheckpoint { layer: layer.clone(), record: record.clone(), flips: flips.clone() })?;
            }
            log_summary(&layer);
            upper = Some(Upper::of(info, geometry, &layer, &record));
            layers_out[l] = Some((layer, record));
        }
        let (layers, records): (Vec<_>, Vec<_>) = layers_out.into_iter().flatten().unzip();
        let graph = ExplanatoryGraph {
            backbone: features.backbone().to_string(),
            input_size: features.input_size(),
            layers,
            params: serde_json::to_value(p).unwrap_or(serde_json::Value::Null),
        };
        Ok(LearnOutput { graph, records, flips, image_ids: ids[..n].to_vec() })
    }

    #[allow(clippy::too_many_arguments)]
    fn learn_layer(
        &self,
        maps: &dyn LayerMaps,
        n: usize,
        info: &LayerInfo,
        geometry: TapGeometry,
        k: usize,
        density: f64,
        init: Option<Vec<[f64; 2]>>,
        upper: Option<&Upper>,
        top_flips: &[bool],
        progress: &dyn Fn(usize),
        layer_index: u64,
    ) -> Result<(GraphLayer, LayerRecord, Vec<bool>), LearnError> {
        let p = &self.0;
        let size = info.height;
        let nodes = info.channels * k;
        let mut mu = match init {
            Some(m) if m.len() == nodes => m,
            Some(m) => {
                return Err(LearnError::Mismatch(format!(
                    "layer {}: {} initial means for {nodes} nodes",
                    info.name,
                    m.len()
                )))
            }
            None => random_means(
                info.channels,
                info.height,
                info.width,
                k,
                p.seed.wrapping_add(layer_index.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            ),
        };
        let init_sigma = p.init_delta * size as f64;
        let mut sigma = vec![init_sigma; nodes];
        let s_max = sigma_max(density, size);
        // min_delta = max_delta / 10, then × H, in the reference's order.
        let max_delta = 1.0 / (density * (size * size) as f64).sqrt();
        let s_min = max_delta / (1.0 / p.min_sigma_ratio) * size as f64;
        // The reference's σ update uses the grid spacing of the INITIAL σ (spec §7 #3).
        let stale_unit = grid_spacing(half_range(init_sigma, size, p.max_range, p.deform_ratio));
        let cfg = estep_config(p, info, k);
        let flips_available = maps.has_flipped() && self.flips();
        if upper.is_some() && top_flips.iter().any(|f| *f) && !maps.has_flipped() {
            return Err(LearnError::Mismatch(format!(
                "layer {} has no mirrored view but the top layer chose one",
                info.name
            )));
        }
        let ratio = upper.map_or(1.0, |u| unit_ratio(p, info, &u.info));
        let upper_disp = upper.map(|u| parent_displacements(&u.positions, &u.mean, n, ratio));
        let mut parents: Vec<Vec<Parent>> = vec![Vec::new(); nodes];
        let mut last = None;
        let mut priors: (Vec<f64>, Option<Vec<ParentPrior>>) = (vec![init_sigma; nodes], None);
        // The top layer's first iteration learns from views aligned to one facing (align.rs) under
        // the node-score rule; later iterations, and lower layers' views, follow the rule.
        let choose = upper.is_none() && flips_available;
        let aligned = if choose && p.view_rule == ViewRule::NodeScore { Some(align_views(maps, n)?) } else { None };
        let views = |it: usize| match (&aligned, choose) {
            (Some(a), _) if it == 1 => Views::Fixed(a),
            (_, true) => Views::Choose(p.view_rule),
            (_, false) => Views::Fixed(top_flips),
        };
        for it in 1..=p.iterations {
            if let (Some(u), Some(prev)) = (upper, &last) {
                parents = self.choose_parents(info, &geometry, u, prev, n, nodes)?;
                let idx: Vec<Vec<u32>> = parents.iter().map(|ps| ps.iter().map(|q| q.node).collect()).collect();
                let pr = parent_priors(&idx, &u.sigma, ratio);
                priors = (pr.iter().map(|q| q.sigma()).collect(), Some(pr));
            }
            let prior_sigma = &priors.0;
            let setups = node_setups(p, size, k, &mu, &sigma, prior_sigma);
            let own_h = half_ranges(p, size, &sigma);
            let prior_src = prior_source(priors.1.as_deref(), upper_disp.as_deref(), upper);
            let out = run_pass(maps, n, &cfg, &setups, &prior_src, &views(it), true, p.chunk_size)?;
            let min_prior = prior_sigma.iter().copied().fold(f64::INFINITY, f64::min);
            let step = step_sigma(min_prior, it);
            for v in 0..nodes {
                mu[v] = update_mu(mu[v], &out.totals[v], p.eta, step);
                let unit = if p.reference_compat { stale_unit } else { grid_spacing(own_h[v]) };
                sigma[v] = update_sigma(&out.totals[v], unit, s_min, s_max);
            }
            last = Some(out);
            progress(it);
        }
        let Some(mut out) = last else {
            return Err(LearnError::InvalidParam { name: "iterations", why: "must be ≥ 1".into() });
        };
        if !p.reference_compat {
            // The records (positions, scores, views, and the mean positions stored in the graph)
            // come from one more E-step with the final μ and σ, so they are what inference
            // computes on these images. The reference keeps those of the E-step before the last
            // M-step (docs/deviations.md).
            let setups = node_setups(p, size, k, &mu, &sigma, &priors.0);
            let prior_src = prior_source(priors.1.as_deref(), upper_disp.as_deref(), upper);
            out = run_pass(maps, n, &cfg, &setups, &prior_src, &views(usize::MAX), false, p.chunk_size)?;
        }
        let total: f64 = out.scores.iter().map(|s| f64::from(*s)).sum();
        let score_norm = total / out.scores.len().max(1) as f64;
        let inv = if score_norm > 0.0 { 1.0 / score_norm } else { 1.0 };
        let mean_position = mean_positions(&out.positions, n, nodes);
        let layer = GraphLayer {
            info: info.clone(),
            nodes_per_filter: k,
            mu,
            sigma,
            mean_position,
            parents,
            score_norm: if score_norm > 0.0 { score_norm } else { 1.0 },
        };
        let record = LayerRecord {
            layer: info.name.clone(),
            positions: out.positions,
            scores: out.scores.iter().map(|s| (f64::from(*s) * inv) as f32).collect(),
        };
        Ok((layer, record, out.flips))
    }

    /// Parent selection of one iteration (spec §2.2) from the child's previous-iteration records.
    fn choose_parents(
        &self,
        info: &LayerInfo,
        geometry: &TapGeometry,
        u: &Upper,
        prev: &crate::pass::PassOutput,
        n: usize,
        nodes: usize,
    ) -> Result<Vec<Vec<Parent>>, LearnError> {
        let p = &self.0;
        let upper_recs = LayerRecords {
            name: &u.info.name,
            num_images: n,
            num_nodes: u.sigma.len(),
            positions: &u.positions,
            scores: &u.scores,
        };
        let border = if p.reference_compat { info.height } else { u.info.height } as f64;
        let pool = candidate_pool(&upper_recs, border, p.min_var_rate, p.edge_cut_rate, p.top_m)?;
        let frame = if p.reference_compat { DisplacementFrame::ReferenceAffine } else { DisplacementFrame::Pixels };
        let child_recs = LayerRecords {
            name: &info.name,
            num_images: n,
            num_nodes: nodes,
            positions: &prev.positions,
            scores: &prev.best,
        };
        let child_disp = displacements(&child_recs, geometry, frame);
        let up_disp = displacements(&upper_recs, &u.geometry, frame);
        let pool_disp: Vec<[f64; 2]> =
            pool.iter().flat_map(|&q| up_disp[q as usize * n..(q as usize + 1) * n].iter().copied()).collect();
        Ok(select_parents(&child_disp, &prev.best, nodes, n, &pool, &pool_disp, p.top_n))
    }
}

/// Where each node's prior comes from: its parents when it has some, else none (spec §1.5).
fn prior_source<'a>(
    priors: Option<&'a [ParentPrior]>,
    displacement: Option<&'a [[f64; 2]]>,
    upper: Option<&Upper>,
) -> Priors<'a> {
    match (priors, displacement, upper) {
        (Some(priors), Some(displacement), Some(u)) => {
            Priors::Parents { priors, displacement, num_parents: u.sigma.len() }
        }
        _ => Priors::None,
    }
}

/// Maps must be square (the reference requires H = W) and at least 6 × 6 (the candidate grid).
pub(crate) fn check_layer_shape(info: &LayerInfo) -> Result<(), LearnError> {
    if info.height != info.width || info.height < 6 || info.channels == 0 {
        return Err(LearnError::Mismatch(format!(
            "layer {} has {}×{}×{} maps; the method needs square maps of at least 6×6 and ≥ 1 channel",
            info.name, info.channels, info.height, info.width
        )));
    }
    Ok(())
}

fn log_summary(layer: &GraphLayer) {
    let n = layer.num_nodes().max(1) as f64;
    let mean_sigma = layer.sigma.iter().sum::<f64>() / n;
    let sims: Vec<f64> = layer.parents.iter().flatten().map(|q| f64::from(q.similarity)).collect();
    let mean_sim = if sims.is_empty() { 0.0 } else { sims.iter().sum::<f64>() / sims.len() as f64 };
    tracing::info!(
        layer = %layer.info.name,
        nodes = layer.num_nodes(),
        mean_sigma_cells = format!("{mean_sigma:.3}"),
        mean_sigma_px = format!("{:.1}", mean_sigma * layer.info.geometry.stride),
        mean_parent_similarity = format!("{mean_sim:.3e}"),
        "layer learned"
    );
}
