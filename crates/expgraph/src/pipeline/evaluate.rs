//! Stages 3–4: 3-shot part localization (graph nodes and both baselines, spec §4.1) and the
//! paper's metrics (normalized distance, spec §4.2; location instability, spec §4.3).

use std::collections::BTreeMap;

use expgraph_cache::{FeatureCache, LayerMaps, View};
use expgraph_datasets::{Dataset, CUB_PARTS, CUB_STABILITY_LANDMARKS};
use expgraph_eval::{
    evaluate_localization, location_instability, raw_filter_tracks, LayerTracks, LocalizationParams,
    ObjectResult, Point, StabilityProtocol,
};
use expgraph_graph::{ExplanatoryGraph, ImageActivations};
use expgraph_learn::{infer_views, ViewPolicy};
use expgraph_localize::{
    filter_argmaxes, ImageUnits, LocalizeError, LocalizeParams, Point as PartPoint, PriorMean, UnitLayout,
};
use rand::seq::SliceRandom;
use rayon::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{PipelineConfig, PipelineError};
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

/// Localization works in 1-based pixels (a pixel's centre is its index, spec §1.3); the
/// object frame of the metrics is continuous (`x0 → 0`, `x1 → 224`, spec §4.2): centres differ
/// by half a pixel.
fn to_frame(p: PartPoint) -> Point {
    Point::new(p.w - 0.5, p.h - 0.5)
}

fn from_frame(p: Point) -> PartPoint {
    PartPoint::new(p.y + 0.5, p.x + 0.5)
}

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
    let maps: Vec<_> = graph.layers.iter().map(|l| cache.layer(&l.info.name)).collect::<Result<_, _>>()?;
    let refs: Vec<&dyn LayerMaps> = maps.iter().map(|m| m as &dyn LayerMaps).collect();
    let ids: Vec<String> = activations.iter().map(|a| a.image_id.clone()).collect();
    let mirrored = maps.iter().all(|m| m.has_flipped());
    let infos: Vec<_> = graph.layers.iter().map(|l| l.info.clone()).collect();
    let raw_layout = UnitLayout::for_filters(graph.input_size, &infos);
    // Raw-filter templates use the original view.
    let raw = filter_argmaxes(&refs, &ids, View::Original)?;
    let raw_views = test_views(
        &raw_layout,
        &raw,
        mirrored.then(|| filter_argmaxes(&refs, &ids, View::Flipped)).transpose()?,
    )?;
    // Templates use the view inference chose for each annotated image; test images both views.
    let n = Some(activations.len());
    let graph_views = test_views(
        &UnitLayout::for_graph(graph),
        &infer_views(graph, cache, n, ViewPolicy::Original)?,
        mirrored.then(|| infer_views(graph, cache, n, ViewPolicy::Mirrored)).transpose()?,
    )?;
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
        let shots: Vec<usize> = pool[..config.shots].to_vec();
        let points: Vec<PartPoint> = shots
            .iter()
            .map(|&i| from_frame(truth[i][0].centre))
            .collect();
        let graph_model = params.fit(
            graph,
            &shots.iter().zip(&points).map(|(&i, p)| (activations[i].clone(), *p)).collect::<Vec<_>>(),
        )?;
        let raw_model =
            params.fit_units(&raw_layout, &shots.iter().zip(&points).map(|(&i, p)| (&raw[i], *p)).collect::<Vec<_>>())?;
        let prior = PriorMean::fit(&points)?.predict();
        let mut predictions: BTreeMap<&'static str, Vec<Point>> = BTreeMap::new();
        let mut vote_maps = Vec::new();
        // Objects in parallel, collected in order (deterministic for any thread count).
        let predicted = objects
            .par_iter()
            .enumerate()
            .map(|(k, &i)| {
                let g = graph_model.predict_unit_views(&graph_views[i], k < VOTE_MAPS)?;
                let r = raw_model.predict_unit_views(&raw_views[i], false)?;
                Ok((g, r.point))
            })
            .collect::<Result<Vec<_>, PipelineError>>()?;
        for (g, r) in predicted {
            vote_maps.extend(g.vote_map);
            let g = g.point;
            predictions.entry(METHODS[0]).or_default().push(to_frame(g));
            predictions.entry(METHODS[1]).or_default().push(to_frame(prior));
            predictions.entry(METHODS[2]).or_default().push(to_frame(r));
        }
        let truth = objects.iter().map(|&i| truth[i][0].centre).collect();
        out.push(PartResult { name: name.clone(), part, shots, objects, truth, predictions, vote_maps });
    }
    if out.is_empty() {
        return Err(PipelineError::Input("no part has enough annotated objects to localize".into()));
    }
    Ok(out)
}

/// Each image's views to try, in pixels (converted once for all parts): `[original]` or
/// `[original, mirrored]`.
fn test_views(
    layout: &UnitLayout,
    original: &[ImageActivations],
    mirrored: Option<Vec<ImageActivations>>,
) -> Result<Vec<Vec<ImageUnits>>, PipelineError> {
    let views = |i: usize| std::iter::once(&original[i]).chain(mirrored.as_ref().map(|m| &m[i]));
    Ok((0..original.len())
        .map(|i| views(i).map(|a| ImageUnits::from_activations(layout, a)).collect())
        .collect::<Result<_, LocalizeError>>()?)
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
    let landmarks = dataset.landmarks(&stability_landmarks(dataset), frame)?;
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
                let g = &layer.info.geometry;
                let mut p = Point::new(g.map_to_pixel(f64::from(w)), g.map_to_pixel(f64::from(h)));
                if a.flipped {
                    p = p.mirrored(frame);
                }
                positions[u * n + i] = p;
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
