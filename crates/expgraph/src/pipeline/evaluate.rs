//! Stages 3–4: 3-shot part localization (graph nodes and both baselines, spec §4.1) and the
//! paper's metrics (normalized distance, spec §4.2; location instability, spec §4.3).

use std::collections::BTreeMap;

use expgraph_cache::{FeatureCache, LayerMaps, View};
use expgraph_datasets::{Dataset, CUB_PARTS, CUB_STABILITY_LANDMARKS};
use expgraph_eval::{
    evaluate_localization, location_instability, raw_filter_tracks, Landmarks, LayerTracks, LocalizationParams,
    ObjectResult, Point, StabilityProtocol,
};
use expgraph_geometry::PixelPoint;
use expgraph_graph::{ExplanatoryGraph, ImageActivations};
use expgraph_localize::{LocalizeParams, PriorMean};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{PipelineConfig, PipelineError};
use crate::localization::UnitSet;
use crate::record::{Localization, MethodResult, Stability};

/// The methods every table compares (spec §4.1).
pub(super) const METHODS: [&str; 3] = ["graph", "prior_mean", "raw_filter"];

/// Predictions of every method for one part.
pub(super) struct PartResult {
    /// Part name.
    pub name: String,
    /// Part index in the data set.
    pub part: usize,
    /// Indices (into the data set's objects) of the annotated examples.
    pub shots: Vec<usize>,
    /// Objects evaluated: every object having the part (the annotated ones included, as the
    /// reference does).
    pub objects: Vec<usize>,
    /// First ground-truth instance of each evaluated object (same order), object frame.
    pub truth: Vec<Point>,
    /// Predictions per method (same order as `objects`), object frame `(x, y)`.
    pub predictions: BTreeMap<&'static str, Vec<Point>>,
    /// The graph's vote maps of the first [`VOTE_MAPS`] objects (same order as `objects`).
    pub vote_maps: Vec<expgraph_localize::VoteMap>,
}

/// Objects per part whose graph vote map is kept for the report.
pub(super) const VOTE_MAPS: usize = 6;

/// Localize every requested part with 3 (config.shots) annotated examples chosen by seed among
/// the objects having the part.
pub(super) fn localize_parts(
    config: &PipelineConfig,
    dataset: &Dataset,
    graph: &ExplanatoryGraph,
    cache: &FeatureCache,
    activations: &[ImageActivations],
) -> Result<Vec<PartResult>, PipelineError> {
    let names: Vec<String> = config.parts.clone().unwrap_or_else(|| dataset.part_names.clone());
    // One rule for both voters (spec §4.1): the AOG's template score, and every test image tried
    // as is and mirrored, the better template score winning.
    let params = LocalizeParams::default().check()?;
    let layers: Vec<String> = graph.layers.iter().map(|l| l.info.name.clone()).collect();
    let mirrored =
        layers.iter().map(|l| cache.layer(l)).collect::<Result<Vec<_>, _>>()?.iter().all(|m| m.has_flipped());
    // Raw-filter templates use the original view, graph templates the view inference chose.
    let raw = UnitSet::raw(cache, &layers, mirrored)?;
    let nodes = UnitSet::graph(graph, activations.to_vec(), mirrored.then_some(cache))?;
    let frame = graph.input_size as f64;

    let mut out = Vec::new();
    for (pi, name) in names.iter().enumerate() {
        let part = dataset
            .part_index(name)
            .ok_or_else(|| PipelineError::Input(format!("data set {} has no part {name}", dataset.name)))?;
        let truth = dataset.truth_in_frame(part, frame);
        let objects: Vec<usize> = (0..truth.len()).filter(|&i| !truth[i].is_empty()).collect();
        if objects.len() <= config.shots {
            tracing::warn!(part = %name, objects = objects.len(), "too few objects with this part; skipped");
            continue;
        }
        let mut pool = objects.clone();
        pool.shuffle(&mut ChaCha8Rng::seed_from_u64(config.seed.wrapping_add(pi as u64)));
        let shots: Vec<(usize, PixelPoint)> =
            pool[..config.shots].iter().map(|&i| (i, truth[i][0].centre.to_pixel())).collect();
        let points: Vec<PixelPoint> = shots.iter().map(|s| s.1).collect();
        let graph_model = nodes.fit(&params, &shots)?;
        let raw_model = raw.fit(&params, &shots)?;
        let prior = PriorMean::fit(&points)?.predict();
        let g = nodes.predict(&graph_model, &objects, VOTE_MAPS, &|| {})?;
        let r = raw.predict(&raw_model, &objects, 0, &|| {})?;
        // Localization works in 1-based pixels, the metrics in the continuous frame (§4.2).
        let mut predictions: BTreeMap<&'static str, Vec<Point>> = BTreeMap::new();
        predictions.insert(METHODS[0], g.iter().map(|p| p.point.to_frame()).collect());
        predictions.insert(METHODS[1], vec![prior.to_frame(); objects.len()]);
        predictions.insert(METHODS[2], r.iter().map(|p| p.point.to_frame()).collect());
        let vote_maps = g.into_iter().filter_map(|p| p.vote_map).collect();
        let truth = objects.iter().map(|&i| truth[i][0].centre).collect();
        let shots = shots.into_iter().map(|s| s.0).collect();
        out.push(PartResult { name: name.clone(), part, shots, objects, truth, predictions, vote_maps });
    }
    if out.is_empty() {
        return Err(PipelineError::Input("no part has enough annotated objects to localize".into()));
    }
    Ok(out)
}

/// Mean normalized distance per method and part (spec §4.2).
pub(super) fn score_localization(dataset: &Dataset, parts: &[PartResult]) -> Result<Localization, PipelineError> {
    let mut result = Localization { parts: parts.iter().map(|p| p.name.clone()).collect(), ..Default::default() };
    let truths: Vec<_> = parts.iter().map(|p| dataset.truth_in_frame(p.part, 224.0)).collect();
    for method in METHODS {
        let mut m = MethodResult::default();
        for (p, truth) in parts.iter().zip(&truths) {
            let objects: Vec<ObjectResult> = p
                .objects
                .iter()
                .zip(&p.predictions[method])
                .map(|(&i, &pred)| ObjectResult { prediction: Some(pred), truth: truth[i].clone() })
                .collect();
            let report = evaluate_localization(&objects, &LocalizationParams::default())?;
            m.per_part.insert(p.name.clone(), report.normalized_distance);
        }
        m.mean_normalized_distance = m.per_part.values().sum::<f64>() / m.per_part.len().max(1) as f64;
        result.methods.insert(method.to_string(), m);
    }
    Ok(result)
}

/// Landmarks of the stability metric: CUB's back, forehead, tail (spec §4.3) when the data set
/// has CUB's parts, else its first three parts (Pascal-Part: head, neck, torso).
fn stability_landmarks(dataset: &Dataset) -> Vec<usize> {
    let is_cub = dataset.part_names.len() == CUB_PARTS.len()
        && dataset.part_names.iter().zip(CUB_PARTS.iter()).all(|(a, b)| a.eq_ignore_ascii_case(b));
    if is_cub {
        CUB_STABILITY_LANDMARKS.iter().map(|&id| id - 1).collect()
    } else {
        (0..dataset.part_names.len().min(3)).collect()
    }
}

/// Location instability of graph nodes and of raw filters, explanatory-graph protocol.
pub(super) fn stability(
    dataset: &Dataset,
    graph: &ExplanatoryGraph,
    cache: &FeatureCache,
    activations: &[ImageActivations],
) -> Result<Stability, PipelineError> {
    let frame = graph.input_size as f64;
    let landmarks = Landmarks::new(dataset.landmarks_in_frame(&stability_landmarks(dataset), frame))?;
    let n = activations.len();
    let mut node_tracks = Vec::new();
    let mut raw_tracks = Vec::new();
    for (l, layer) in graph.layers.iter().enumerate() {
        let units = layer.num_nodes();
        let mut positions = vec![Point::new(0.0, 0.0); units * n];
        let mut scores = vec![0.0; units * n];
        for (i, a) in activations.iter().enumerate() {
            let acts = &a.layers[l];
            for u in 0..units {
                let [h, w] = acts.positions[u];
                let view = View::from_flipped(a.flipped);
                // 1-based pixels of the original view, as the raw-filter tracks use.
                let p = layer.info.geometry.map_to_original_pixels([f64::from(h), f64::from(w)], view, frame);
                positions[u * n + i] = Point::new(p.w, p.h);
                scores[u * n + i] = f64::from(acts.scores[u]);
            }
        }
        node_tracks.push(LayerTracks::new(layer.info.name.clone(), units, n, positions, scores)?);
        raw_tracks.push(raw_filter_tracks(&cache.layer(&layer.info.name)?, View::Original, graph.input_size)?);
    }
    let protocol = StabilityProtocol::EXPLANATORY_GRAPH;
    let nodes = location_instability(&node_tracks, &landmarks, protocol, frame)?;
    let raw = location_instability(&raw_tracks, &landmarks, protocol, frame)?;
    Ok(Stability { graph_nodes: nodes.instability, raw_filters: raw.instability })
}
