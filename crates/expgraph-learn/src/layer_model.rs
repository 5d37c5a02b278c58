//! Per-layer model state shared by learning and inference: node templates (spec §1.6) and the
//! parents' prior (spec §1.5, §7 #2).

use expgraph_cache::LayerInfo;
use expgraph_cliques::ParentPrior;
use expgraph_disentangle::{candidate_offsets, half_range, EStepConfig, NodeSetup, SmoothingKernel};

use crate::LearnParams;

/// E-step settings of a layer.
pub(crate) fn estep_config(p: &LearnParams, info: &LayerInfo, k: usize) -> EStepConfig {
    EStepConfig {
        height: info.height,
        width: info.width,
        nodes_per_filter: k,
        kernel: SmoothingKernel::new(p.map_delta * info.height as f64),
        valid_tau: p.valid_tau,
        rounded_window_centre: p.reference_compat,
        nearest_sibling: p.reference_compat,
        reference_arithmetic: p.reference_compat,
    }
}

/// Half-range of every node from its model σ.
pub(crate) fn half_ranges(p: &LearnParams, map_size: usize, sigma: &[f64]) -> Vec<usize> {
    sigma.iter().map(|s| half_range(*s, map_size, p.max_range, p.deform_ratio)).collect()
}

/// Node templates for one iteration. Candidate offsets come from each node's own σ; in
/// reference-compat mode the evidence window and the prior σ of node `(c, k)` come from node
/// `(0, k)` (Addendum: the channel-1 quirk of `getProb_local_mex.cpp`).
pub(crate) fn node_setups(
    p: &LearnParams,
    map_size: usize,
    k: usize,
    mu: &[[f64; 2]],
    sigma: &[f64],
    prior_sigma: &[f64],
) -> Vec<NodeSetup> {
    let h = half_ranges(p, map_size, sigma);
    (0..mu.len())
        .map(|v| {
            let g = if p.reference_compat { v % k } else { v };
            NodeSetup::new(mu[v], candidate_offsets(h[v]), h[g], prior_sigma[g])
        })
        .collect()
}

/// Scale from parent-layer map units to child-layer map units: the stride ratio (spec §7 #2 b),
/// or 1 in reference-compat mode (the reference adds parent units to child coordinates).
pub(crate) fn unit_ratio(p: &LearnParams, child: &LayerInfo, parent: &LayerInfo) -> f64 {
    if p.reference_compat {
        1.0
    } else {
        parent.geometry.stride / child.geometry.stride
    }
}

/// Parent displacements from their mean position, `[image][parent]`, scaled into child units.
pub(crate) fn parent_displacements(positions: &[[f32; 2]], mean: &[[f64; 2]], n: usize, ratio: f64) -> Vec<[f64; 2]> {
    let p = mean.len();
    (0..n * p)
        .map(|j| {
            let (q, m) = (positions[j], mean[j % p]);
            [(f64::from(q[0]) - m[0]) * ratio, (f64::from(q[1]) - m[1]) * ratio]
        })
        .collect()
}

/// Each node's prior from its parents; parent σ scaled into child units by `ratio`.
pub(crate) fn parent_priors(parents: &[Vec<u32>], parent_sigma: &[f64], ratio: f64) -> Vec<ParentPrior> {
    parents
        .iter()
        .map(|ps| {
            let s: Vec<f64> = ps.iter().map(|&q| parent_sigma[q as usize] * ratio).collect();
            ParentPrior::new(ps.clone(), &s)
        })
        .collect()
}

/// Mean over images of `[image][node]` positions.
pub(crate) fn mean_positions(positions: &[[f32; 2]], n: usize, nodes: usize) -> Vec<[f64; 2]> {
    let mut m = vec![[0.0f64; 2]; nodes];
    for (j, q) in positions.iter().enumerate() {
        m[j % nodes][0] += f64::from(q[0]);
        m[j % nodes][1] += f64::from(q[1]);
    }
    m.iter().map(|s| [s[0] / n as f64, s[1] / n as f64]).collect()
}
