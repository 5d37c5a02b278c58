//! The learner (spec §2): top-down, layer by layer, `iterations` EM iterations per layer.

use expgraph_cache::{LayerInfo, LayerMaps, TapGeometry};
use expgraph_cliques::{
    candidate_pool, displacements_of, select_parents_of, DisplacementFrame, LayerRecords, ParentPrior,
};
use expgraph_disentangle::{
    grid_spacing, half_range, nodes_per_filter, random_means, sigma_max, step_sigma, update_mu, update_sigma,
};
use expgraph_graph::{ExplanatoryGraph, GraphLayer, Parent};

use crate::align::align_views;
use crate::checkpoint::{Checkpoints, LayerCheckpoint};
use crate::layer_model::{
    estep_config, half_ranges, mean_positions, node_setups, parent_priors, pixel_geometry, unit_ratio,
};
use crate::pass::{run_pass, Priors, Views};
use crate::team::{member_images, member_range, wire, Tally};
use crate::{CheckedLearnParams, FeatureSource, LearnError, Solo, Team, Traffic, ViewRule};

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
    /// In a team of more than one member: per learned layer (top first), what this member
    /// exchanged with the others (empty alone, and for layers loaded from checkpoints).
    pub traffic: Vec<(String, Traffic)>,
}

/// The upper layer's final state, used for the layer below: the finished layer and its records
/// (held here, not copied, until the next layer is done).
struct Upper {
    /// Index of the layer in the graph.
    index: usize,
    /// Pixel geometry of the layer for clique mining ([`pixel_geometry`]).
    geometry: TapGeometry,
    layer: GraphLayer,
    record: LayerRecord,
}

impl Upper {
    fn info(&self) -> &LayerInfo {
        &self.layer.info
    }
    fn sigma(&self) -> &[f64] {
        &self.layer.sigma
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
        self.fit_in_team(features, initial_mu, progress, checkpoints, &Solo)
    }

    /// [`fit_resumable`](Self::fit_resumable) as one member of `team` (data-parallel EM, see
    /// [`Team`]): every member runs this with the same arguments and returns the same output,
    /// bit for bit the output of a single process. Only member 0 saves checkpoints (every
    /// member loads them, so they must be on a folder all members see).
    pub fn fit_in_team(
        &self,
        features: &dyn FeatureSource,
        initial_mu: Option<&[Vec<[f64; 2]>]>,
        progress: &(dyn Fn(&Progress) + Sync),
        checkpoints: Option<&dyn Checkpoints>,
        team: &dyn Team,
    ) -> Result<LearnOutput, LearnError> {
        let p = &self.0;
        let team = Tally::new(team);
        let mut traffic = Vec::new();
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
                let above = upper.as_ref().map_or(0, |u| u.sigma().len());
                if let Some(q) = cp.layer.parents.iter().flatten().find(|q| q.node as usize >= above) {
                    return Err(LearnError::Mismatch(format!(
                        "the checkpoint of layer {} names parent node {}, the layer above has {above} nodes",
                        info.name, q.node
                    )));
                }
                (1..=p.iterations).for_each(tick);
                if upper.is_none() {
                    flips = cp.flips;
                }
                log_summary(&cp.layer);
                retire(&mut upper, &mut layers_out);
                upper = Some(Upper { index: l, geometry, layer: cp.layer, record: cp.record });
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
            let before = team.traffic();
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
                &team,
            )?;
            if !team.is_solo() {
                let t = team.traffic().since(before);
                tracing::info!(
                    layer = %info.name,
                    member = team.rank(),
                    members = team.size(),
                    exchanges = t.exchanges,
                    received_mb = format!("{:.1}", t.bytes as f64 / 1e6),
                    exchange_s = format!("{:.2}", t.seconds),
                    "layer traffic"
                );
                traffic.push((info.name.clone(), t));
            }
            if upper.is_none() {
                flips = layer_flips;
            }
            let (layer, record) = match checkpoints.filter(|_| team.rank() == 0) {
                Some(c) => {
                    let cp = LayerCheckpoint { layer, record, flips: flips.clone() };
                    c.save(&cp)?;
                    (cp.layer, cp.record)
                }
                None => (layer, record),
            };
            log_summary(&layer);
            drop(maps);
            retire(&mut upper, &mut layers_out);
            upper = Some(Upper { index: l, geometry, layer, record });
        }
        retire(&mut upper, &mut layers_out);
        let (layers, records): (Vec<_>, Vec<_>) = layers_out.into_iter().flatten().unzip();
        let graph = ExplanatoryGraph {
            backbone: features.backbone().to_string(),
            input_size: features.input_size(),
            layers,
            params: serde_json::to_value(p).unwrap_or(serde_json::Value::Null),
        };
        Ok(LearnOutput { graph, records, flips, image_ids: ids[..n].to_vec(), traffic })
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
        team: &Tally<'_>,
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
        let ratio = upper.map_or(1.0, |u| unit_ratio(p, info, u.info()));
        let mut parents: Vec<Vec<Parent>> = vec![Vec::new(); nodes];
        let mut last = None;
        let mut priors: (Vec<f64>, Option<Vec<ParentPrior>>) = (vec![init_sigma; nodes], None);
        // The top layer's first iteration learns from views aligned to one facing (align.rs) under
        // the node-score rule; later iterations, and lower layers' views, follow the rule.
        let choose = upper.is_none() && flips_available;
        let aligned = if choose && p.view_rule == ViewRule::NodeScore {
            Some(align_views(maps, n, member_images(team.rank(), team.size(), n, p.chunk_size), team)?)
        } else {
            None
        };
        let views = |it: usize| match (&aligned, choose) {
            (Some(a), _) if it == 1 => Views::Fixed(a),
            (_, true) => Views::Choose(p.view_rule),
            (_, false) => Views::Fixed(top_flips),
        };
        for it in 1..=p.iterations {
            // The previous pass is needed only to choose the parents: it is dropped before the
            // next pass allocates its own (peak memory).
            if let (Some(u), Some(prev)) = (upper, last.take()) {
                parents = self.choose_parents(info, &geometry, u, &prev, n, nodes, team)?;
                let idx: Vec<Vec<u32>> = parents.iter().map(|ps| ps.iter().map(|q| q.node).collect()).collect();
                let pr = parent_priors(&idx, u.sigma(), ratio);
                priors = (pr.iter().map(|q| q.sigma()).collect(), Some(pr));
            }
            let prior_sigma = &priors.0;
            let setups = node_setups(p, size, k, &mu, &sigma, prior_sigma);
            let own_h = half_ranges(p, size, &sigma);
            let prior_src = prior_source(priors.1.as_deref(), upper, ratio);
            let out = run_pass(maps, n, &cfg, &setups, &prior_src, &views(it), true, p.chunk_size, team)?;
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
            let prior_src = prior_source(priors.1.as_deref(), upper, ratio);
            out = run_pass(maps, n, &cfg, &setups, &prior_src, &views(usize::MAX), false, p.chunk_size, team)?;
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

    /// Parent selection of one iteration (spec §2.2) from the child's previous-iteration records;
    /// in a team, each member selects for its share of the child nodes.
    #[allow(clippy::too_many_arguments)]
    fn choose_parents(
        &self,
        info: &LayerInfo,
        geometry: &TapGeometry,
        u: &Upper,
        prev: &crate::pass::PassOutput,
        n: usize,
        nodes: usize,
        team: &Tally<'_>,
    ) -> Result<Vec<Vec<Parent>>, LearnError> {
        let p = &self.0;
        let upper_recs = LayerRecords {
            name: &u.info().name,
            num_images: n,
            num_nodes: u.sigma().len(),
            positions: &u.record.positions,
            scores: &u.record.scores,
        };
        let border = if p.reference_compat { info.height } else { u.info().height } as f64;
        let pool = candidate_pool(&upper_recs, border, p.min_var_rate, p.edge_cut_rate, p.top_m)?;
        let frame = if p.reference_compat { DisplacementFrame::ReferenceAffine } else { DisplacementFrame::Pixels };
        let child_recs = LayerRecords {
            name: &info.name,
            num_images: n,
            num_nodes: nodes,
            positions: &prev.positions,
            scores: &prev.best,
        };
        let pool_disp = displacements_of(&upper_recs, &u.geometry, frame, &pool);
        // Each member computes the displacements of its own children only.
        let children = member_range(team.rank(), team.size(), nodes);
        let kids: Vec<u32> = children.clone().map(|v| v as u32).collect();
        let child_disp = displacements_of(&child_recs, geometry, frame, &kids);
        let mine = select_parents_of(&child_disp, &prev.best, nodes, n, &pool, &pool_disp, p.top_n, children);
        if team.is_solo() {
            return Ok(mine);
        }
        gather_parents(&mine, nodes, team)
    }
}

/// Where each node's prior comes from: its parents when it has some, else none (spec §1.5).
fn prior_source<'a>(priors: Option<&'a [ParentPrior]>, upper: Option<&'a Upper>, ratio: f64) -> Priors<'a> {
    match (priors, upper) {
        (Some(priors), Some(u)) => {
            Priors::Parents { priors, positions: &u.record.positions, mean: &u.layer.mean_position, ratio }
        }
        _ => Priors::None,
    }
}

/// Everybody's parent lists (each member's children, in rank = node order).
fn gather_parents(mine: &[Vec<Parent>], nodes: usize, team: &Tally<'_>) -> Result<Vec<Vec<Parent>>, LearnError> {
    let mut w = wire::Writer::default();
    w.u64(mine.len() as u64);
    for ps in mine {
        w.u64(ps.len() as u64);
        for q in ps {
            w.u64(u64::from(q.node));
            w.f32s([q.similarity]);
        }
    }
    let mut all = Vec::with_capacity(nodes);
    for (rank, bytes) in team.all_gather(&w.0)?.iter().enumerate() {
        let mut r = wire::Reader::new(bytes, rank);
        for _ in 0..r.len()? {
            let count = r.len()?;
            let mut ps = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                let node = u32::try_from(r.u64()?)
                    .map_err(|_| LearnError::Team(format!("member {rank} sent a parent beyond u32")))?;
                ps.push(Parent { node, similarity: r.f32s(1)?[0] });
            }
            all.push(ps);
        }
        r.finish()?;
    }
    if all.len() != nodes {
        return Err(LearnError::Team(format!("parents of {} nodes gathered, the layer has {nodes}", all.len())));
    }
    Ok(all)
}

/// Move the finished upper layer (if any) to its place in the output.
fn retire(upper: &mut Option<Upper>, out: &mut [Option<(GraphLayer, LayerRecord)>]) {
    if let Some(u) = upper.take() {
        out[u.index] = Some((u.layer, u.record));
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
