//! Checking activations against a graph, and ranking nodes by their top-k scores (spec §1.7, §4.4).

use crate::error::{ReportError, Result};
use expgraph_graph::{ExplanatoryGraph, ImageActivations};

/// Checks that every image has one entry per graph layer, with one finite score and position per
/// node.
pub fn validate_activations(graph: &ExplanatoryGraph, acts: &[ImageActivations]) -> Result<()> {
    for (i, act) in acts.iter().enumerate() {
        if act.layers.len() != graph.layers.len() {
            return Err(ReportError::invalid(
                "activations",
                format!(
                    "image {i} (`{}`) has {} layers, the graph has {}",
                    act.image_id,
                    act.layers.len(),
                    graph.layers.len()
                ),
            ));
        }
        for (l, (la, gl)) in act.layers.iter().zip(&graph.layers).enumerate() {
            let n = gl.num_nodes();
            if la.scores.len() != n || la.positions.len() != n {
                return Err(ReportError::invalid(
                    "activations",
                    format!(
                        "image {i} (`{}`) layer {l} ({}): {} scores and {} positions for {n} nodes",
                        act.image_id,
                        gl.info.name,
                        la.scores.len(),
                        la.positions.len()
                    ),
                ));
            }
            if let Some(bad) = la.scores.iter().position(|s| !s.is_finite()) {
                return Err(ReportError::invalid(
                    "activations",
                    format!("image {i} (`{}`) layer {l}: score of node {bad} is not finite", act.image_id),
                ));
            }
        }
    }
    Ok(())
}

pub(crate) fn check_layer(graph: &ExplanatoryGraph, layer: usize) -> Result<()> {
    if layer >= graph.layers.len() {
        return Err(ReportError::invalid(
            "layer",
            format!("layer {layer} does not exist (the graph has {})", graph.layers.len()),
        ));
    }
    Ok(())
}

/// One node with its best images.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedNode {
    /// Node index in its layer.
    pub node: usize,
    /// Sum of its `top_k` best scores.
    pub total: f64,
    /// Its best images as `(image index, score)`, best first (ties: lower index first).
    pub top_images: Vec<(usize, f32)>,
}

/// Ranks the nodes of `layer` by the sum of their `top_k` best scores over `acts` (spec §4.4:
/// top-50), best first; ties go to the lower node index. Deterministic.
pub fn rank_nodes(
    graph: &ExplanatoryGraph,
    acts: &[ImageActivations],
    layer: usize,
    top_k: usize,
) -> Result<Vec<RankedNode>> {
    check_layer(graph, layer)?;
    validate_activations(graph, acts)?;
    let n = graph.layers[layer].num_nodes();
    let mut ranked = Vec::with_capacity(n);
    let mut column: Vec<(usize, f32)> = Vec::with_capacity(acts.len());
    for node in 0..n {
        column.clear();
        column.extend(acts.iter().enumerate().map(|(i, a)| (i, a.layers[layer].scores[node])));
        let k = top_k.min(column.len());
        let by_score = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if k < column.len() && k > 0 {
            column.select_nth_unstable_by(k - 1, by_score);
        }
        column.truncate(k);
        column.sort_by(by_score);
        let total = column.iter().map(|&(_, s)| s as f64).sum();
        ranked.push(RankedNode { node, total, top_images: column.clone() });
    }
    ranked.sort_by(|a, b| b.total.total_cmp(&a.total).then(a.node.cmp(&b.node)));
    Ok(ranked)
}

/// Indices of the `fraction` best-scoring nodes of one image's layer, best first (ties: lower
/// index first). Spec §1.7 has no firing threshold; reports use the top 50%.
pub fn top_nodes(scores: &[f32], fraction: f64) -> Vec<usize> {
    let count = ((scores.len() as f64) * fraction.clamp(0.0, 1.0)).ceil() as usize;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order.truncate(count);
    order
}
