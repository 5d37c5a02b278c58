//! Stages 3–4: 3-shot part localization (graph nodes and both baselines, spec §4.1) and the
//! paper's metrics (normalized distance, spec §4.2; location instability, spec §4.3).

use std::borrow::Cow;
use std::collections::BTreeMap;

use expgraph_cache::{FeatureCache, View};
use expgraph_datasets::{Dataset, CUB_PARTS, CUB_STABILITY_LANDMARKS};
use expgraph_eval::{
    evaluate_localization, layer_instability, raw_filter_tracks, raw_filter_tracks_scaled, Landmarks, LayerInstability,
    LayerTracks, LocalizationParams, ObjectResult, Point, StabilityProtocol, StabilityReport,
};
use expgraph_features::NormStats;
use expgraph_geometry::{Extent, PixelPoint};
use expgraph_graph::{ExplanatoryGraph, ImageActivations};
use expgraph_localize::{LocalizeError, LocalizeParams, PriorMean};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{LocalizeViews, PipelineConfig, PipelineError};
use crate::localization::{BothViews, UnitSet};
use crate::record::{Localization, MethodResult, Stability, StabilityPair, ViewChoice};

/// The methods every table compares (spec §4.1).
pub(super) const METHODS: [&str; 3] = ["graph", "prior_mean", "raw_filter"];

/// One draw of annotated examples for a part and what every method predicted from it.
pub(super) struct Draw {
    /// Indices (into the data set's objects) of the annotated examples.
    pub shots: Vec<usize>,
    /// Size of the predicted part boxes: the mean size of the annotated examples' part boxes
    /// (spec §4.2; 1×1 for keypoints, as the reference).
    pub predicted_size: Extent,
    /// Predictions per method (same order as the part's `objects`), object frame `(x, y)`.
    pub predictions: BTreeMap<&'static str, Vec<Point>>,
}

/// Predictions of every method for one part, over several draws of annotated examples.
pub(super) struct PartResult {
    /// Part name.
    pub name: String,
    /// Part index in the data set.
    pub part: usize,
    /// Objects evaluated: every object having the part (the annotated ones included, as the
    /// reference does).
    pub objects: Vec<usize>,
    /// First ground-truth instance of each evaluated object (same order), object frame.
    pub truth: Vec<Point>,
    /// The draws (up to `config.draws`, at least one); the report shows the first.
    pub draws: Vec<Draw>,
    /// Draws replaced because their annotated examples selected no unit.
    pub failed_draws: usize,
    /// The graph's vote maps of the first [`VOTE_MAPS`] objects of the first draw.
    pub vote_maps: Vec<expgraph_localize::VoteMap>,
}

/// Objects per part whose graph vote map is kept for the report.
pub(super) const VOTE_MAPS: usize = 6;

/// Localize every requested part with `config.shots` annotated examples chosen by seed among
/// the objects having the part, `config.draws` times (independent seeded draws).
pub(super) fn localize_parts(
    config: &PipelineConfig,
    dataset: &Dataset,
    graph: &ExplanatoryGraph,
    cache: &FeatureCache,
    activations: &[ImageActivations],
    both_views: Option<&BothViews>,
) -> Result<Vec<PartResult>, PipelineError> {
    let names: Vec<String> = config.parts.clone().unwrap_or_else(|| dataset.part_names.clone());
    // One rule for both voters (spec §4.1): the AOG's template score, and every test image tried
    // as is and mirrored (when the cache has mirrored views), the better template score winning.
    let params = LocalizeParams::default().check()?;
    let layers: Vec<String> = graph.layers.iter().map(|l| l.info.name.clone()).collect();
    // Raw-filter templates use the original view, graph templates the view inference chose.
    let raw = UnitSet::raw(cache, &layers, both_views.is_some())?;
    let graph_views = both_views.filter(|_| config.localize_views == LocalizeViews::Both);
    let nodes = UnitSet::graph_with_views(graph, Cow::Borrowed(activations), graph_views.map(Cow::Borrowed))?;
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
        // Draw d is the d-th shuffle of one seeded stream per part (draw 0 as before draws existed).
        // A draw whose annotated examples select no unit for graph nodes or raw filters gives
        // that method no model: it is dropped for every method (so all compare on the same
        // draws), counted, and replaced by the next shuffle, up to 3 × `draws` shuffles.
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed.wrapping_add(pi as u64));
        let wanted = config.draws.max(1);
        let mut draws = Vec::new();
        let mut vote_maps = Vec::new();
        let mut failed = 0;
        while draws.len() < wanted && draws.len() + failed < 3 * wanted {
            let mut pool = objects.clone();
            pool.shuffle(&mut rng);
            let shots: Vec<(usize, PixelPoint)> =
                pool[..config.shots].iter().map(|&i| (i, truth[i][0].centre.to_pixel())).collect();
            let points: Vec<PixelPoint> = shots.iter().map(|s| s.1).collect();
            // A part annotated outside the object's crop cannot be taught: replace the draw.
            let edge = frame + 0.5;
            if let Some(outside) = points.iter().find(|p| !(0.5..=edge).contains(&p.h) || !(0.5..=edge).contains(&p.w))
            {
                tracing::warn!(part = %name, h = outside.h, w = outside.w, "annotated example outside the crop; draw replaced");
                failed += 1;
                continue;
            }
            let (graph_model, raw_model) = match (nodes.fit(&params, &shots), raw.fit(&params, &shots)) {
                (Ok(g), Ok(r)) => (g, r),
                (Err(PipelineError::Localize(e @ LocalizeError::NoUnitSelected { .. })), _)
                | (_, Err(PipelineError::Localize(e @ LocalizeError::NoUnitSelected { .. }))) => {
                    tracing::warn!(part = %name, draw = draws.len() + failed, "{e}; draw replaced");
                    failed += 1;
                    continue;
                }
                (Err(e), _) | (_, Err(e)) => return Err(e),
            };
            let prior = PriorMean::fit(&points)?.predict();
            let keep_maps = if draws.is_empty() { VOTE_MAPS } else { 0 };
            let g = nodes.predict(&graph_model, &objects, keep_maps, &|| {})?;
            let r = raw.predict(&raw_model, &objects, 0, &|| {})?;
            // Localization works in 1-based pixels, the metrics in the continuous frame (§4.2).
            let mut predictions: BTreeMap<&'static str, Vec<Point>> = BTreeMap::new();
            predictions.insert(METHODS[0], g.iter().map(|p| p.point.to_frame()).collect());
            predictions.insert(METHODS[1], vec![prior.to_frame(); objects.len()]);
            predictions.insert(METHODS[2], r.iter().map(|p| p.point.to_frame()).collect());
            if draws.is_empty() {
                vote_maps = g.into_iter().filter_map(|p| p.vote_map).collect();
            }
            let predicted_size = mean_size(shots.iter().filter_map(|s| truth[s.0][0].size));
            draws.push(Draw { shots: shots.into_iter().map(|s| s.0).collect(), predicted_size, predictions });
        }
        if draws.is_empty() {
            tracing::warn!(part = %name, failed, "no draw of annotated examples selects units; part skipped");
            continue;
        }
        let truth = objects.iter().map(|&i| truth[i][0].centre).collect();
        out.push(PartResult { name: name.clone(), part, objects, truth, draws, failed_draws: failed, vote_maps });
    }
    if out.is_empty() {
        return Err(PipelineError::Input("no part has enough annotated objects to localize".into()));
    }
    Ok(out)
}

/// The mean of `sizes`, or the 1×1 box when there is none (keypoints, spec §4.2).
fn mean_size(sizes: impl Iterator<Item = Extent>) -> Extent {
    let (n, w, h) = sizes.fold((0usize, 0.0, 0.0), |(n, w, h), e| (n + 1, w + e.width, h + e.height));
    if n == 0 {
        Extent::UNIT
    } else {
        Extent::new(w / n as f64, h / n as f64)
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// Sample standard deviation (0 for fewer than two values).
fn sample_std(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let m = mean(values);
    (values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (values.len() - 1) as f64).sqrt()
}

/// Normalized distance, detection accuracy and LOC rate (spec §4.2) per method and part, each
/// the mean over the draws, with the spread of the per-draw means over parts.
pub(super) fn score_localization(dataset: &Dataset, parts: &[PartResult]) -> Result<Localization, PipelineError> {
    let mut result = Localization {
        parts: parts.iter().map(|p| p.name.clone()).collect(),
        objects_per_part: parts.iter().map(|p| (p.name.clone(), p.objects.len())).collect(),
        draws: parts.iter().map(|p| p.draws.len()).min().unwrap_or(0),
        failed_draws: parts.iter().map(|p| p.failed_draws).sum(),
        ..Default::default()
    };
    let truths: Vec<_> = parts.iter().map(|p| dataset.truth_in_frame(p.part, 224.0)).collect();
    for method in METHODS {
        let mut m = MethodResult::default();
        // [draw][part] normalized distance, detection accuracy, LOC rate.
        let mut per_draw = vec![Vec::new(); result.draws];
        let (mut detection, mut loc) = (Vec::new(), Vec::new());
        for (p, truth) in parts.iter().zip(&truths) {
            let mut distances = Vec::new();
            for (d, draw) in p.draws.iter().enumerate().take(result.draws) {
                let objects: Vec<ObjectResult> = p
                    .objects
                    .iter()
                    .zip(&draw.predictions[method])
                    .map(|(&i, &pred)| ObjectResult { prediction: Some(pred), truth: truth[i].clone() })
                    .collect();
                let params = LocalizationParams { predicted_size: draw.predicted_size, ..Default::default() };
                let report = evaluate_localization(&objects, &params)?;
                per_draw[d].push(report.normalized_distance);
                distances.push(report.normalized_distance);
                detection.push(report.detection_accuracy);
                loc.push(report.loc_rate);
            }
            m.per_part.insert(p.name.clone(), mean(&distances));
        }
        m.mean_normalized_distance = m.per_part.values().sum::<f64>() / m.per_part.len().max(1) as f64;
        m.draws = per_draw.iter().map(|d| mean(d)).collect();
        m.std_over_draws = sample_std(&m.draws);
        m.detection_accuracy = mean(&detection);
        m.loc_rate = mean(&loc);
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

/// Node tracks of one graph layer: positions (1-based pixels of the original view) and scores
/// per node and image; with `alternative`, per node and image the better-scoring of the two
/// inferences (the reference's opposite-view records, `getAlterProbPos`).
fn node_tracks(
    layer: &expgraph_graph::GraphLayer,
    l: usize,
    frame: f64,
    activations: &[ImageActivations],
    alternative: Option<&[&ImageActivations]>,
) -> Result<LayerTracks, PipelineError> {
    let units = layer.num_nodes();
    let n = activations.len();
    let mut positions = vec![Point::new(0.0, 0.0); units * n];
    let mut scores = vec![0.0; units * n];
    for (i, a) in activations.iter().enumerate() {
        for u in 0..units {
            let mut best = a;
            if let Some(alt) = alternative.map(|alt| alt[i]) {
                if alt.layers[l].scores[u] > a.layers[l].scores[u] {
                    best = alt;
                }
            }
            let [h, w] = best.layers[l].positions[u];
            let view = View::from_flipped(best.flipped);
            // 1-based pixels of the original view, as the raw-filter tracks use.
            let p = layer.info.geometry.map_to_original_pixels([f64::from(h), f64::from(w)], view, frame);
            positions[u * n + i] = Point::new(p.w, p.h);
            scores[u * n + i] = f64::from(best.layers[l].scores[u]);
        }
    }
    Ok(LayerTracks::new(layer.info.name.clone(), units, n, positions, scores)?)
}

/// Location instability (spec §4.3) of graph nodes and raw filters under both protocols:
/// the explanatory-graph one (nodes in the view inference chose, and the reference's per-node
/// better orientation when the cache has mirrored views; raw filters on the normalized maps, as
/// `computeStability_raw.m`) and the ICNN one (raw filters on the unnormalized maps, as the ICNN
/// code; `stats` gives the normalization divisors, without them that number is left out).
pub(super) fn stability(
    dataset: &Dataset,
    graph: &ExplanatoryGraph,
    cache: &FeatureCache,
    activations: &[ImageActivations],
    both_views: Option<&BothViews>,
    stats: Option<&NormStats>,
) -> Result<Stability, PipelineError> {
    let frame = graph.input_size as f64;
    let landmarks = Landmarks::new(dataset.landmarks_in_frame(&stability_landmarks(dataset), frame))?;
    // Each image's opposite view: the other one of its both-view inferences.
    let opposite: Vec<&ImageActivations> = match both_views {
        Some(v) => activations
            .iter()
            .take(v.chosen.len())
            .enumerate()
            .map(|(i, a)| if a.flipped { v.original(i) } else { v.mirrored(i) })
            .collect(),
        None => Vec::new(),
    };
    // One layer's tracks at a time: each is measured under both protocols and dropped (all
    // layers' node tracks at once took 3 GB per protocol variant on 2,000 images).
    let (eg, icnn) = (StabilityProtocol::EXPLANATORY_GRAPH, StabilityProtocol::ICNN);
    let layer_value = |tracks: &LayerTracks, protocol| layer_instability(tracks, &landmarks, protocol, frame);
    let (mut nodes, mut nodes_better, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    let (mut nodes_icnn, mut raw_unnormalized) = (Vec::new(), Vec::new());
    for (l, layer) in graph.layers.iter().enumerate() {
        // The ICNN protocol needs the normalization divisors (for the raw filters' side).
        let divisors = stats.and_then(|s| s.layer(&layer.info.name)).map(|std| std.divisors());
        let tracks = node_tracks(layer, l, frame, activations, None)?;
        nodes.push(layer_value(&tracks, eg)?);
        if divisors.is_some() {
            nodes_icnn.push(layer_value(&tracks, icnn)?);
        }
        drop(tracks);
        if opposite.len() == activations.len() {
            nodes_better.push(layer_value(&node_tracks(layer, l, frame, activations, Some(&opposite))?, eg)?);
        }
        let maps = cache.layer(&layer.info.name)?;
        raw.push(layer_value(&raw_filter_tracks(&maps, View::Original, graph.input_size)?, eg)?);
        if let Some(divisors) = &divisors {
            let tracks = raw_filter_tracks_scaled(&maps, View::Original, graph.input_size, divisors)?;
            raw_unnormalized.push(layer_value(&tracks, icnn)?);
        }
    }
    let value = |layers: Vec<LayerInstability>, protocol| -> Result<f64, PipelineError> {
        Ok(StabilityReport::from_layers(protocol, layers, frame)?.instability)
    };
    let per_node_view = if nodes_better.is_empty() { None } else { Some(value(nodes_better, eg)?) };
    let icnn_pair = if raw_unnormalized.len() == graph.layers.len() {
        Some(StabilityPair { graph_nodes: value(nodes_icnn, icnn)?, raw_filters: value(raw_unnormalized, icnn)? })
    } else {
        None
    };
    Ok(Stability {
        graph_nodes: value(nodes, eg)?,
        raw_filters: value(raw, eg)?,
        graph_nodes_per_node_view: per_node_view,
        icnn: icnn_pair,
    })
}

/// How consistently inference showed the objects facing one way (spec §1.7). An object's facing
/// is read off its annotations: the beak (else the head) right or left of the tail, in the
/// object frame; the mirrored view reverses it. Which facing the graph took as canonical is
/// arbitrary, so the agreement is the majority's share (0 when no facing is known).
pub(super) fn view_choice(dataset: &Dataset, activations: &[ImageActivations]) -> ViewChoice {
    let front = dataset.part_index("beak").or_else(|| dataset.part_index("head"));
    let back = dataset.part_index("tail");
    let mirrored = activations.iter().filter(|a| a.flipped).count();
    let mut facing = Vec::new();
    if let (Some(front), Some(back)) = (front, back) {
        let (fronts, backs) = (dataset.truth_in_frame(front, 224.0), dataset.truth_in_frame(back, 224.0));
        for (i, a) in activations.iter().enumerate() {
            let (Some(f), Some(b)) = (fronts.get(i).and_then(|t| t.first()), backs.get(i).and_then(|t| t.first()))
            else {
                continue;
            };
            if f.centre.x != b.centre.x {
                facing.push((f.centre.x > b.centre.x) != a.flipped);
            }
        }
    }
    let right = facing.iter().filter(|r| **r).count();
    let majority = right.max(facing.len() - right);
    ViewChoice {
        images: activations.len(),
        mirrored,
        facing_known: facing.len(),
        facing_agreement: if facing.is_empty() { 0.0 } else { majority as f64 / facing.len() as f64 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expgraph_datasets::{read_cub, CubOptions};

    #[test]
    fn facing_agreement_counts_the_majority_facing_of_the_shown_views() {
        // cub-tiny's two test objects both face right (beak 338 / 125 px right of the tail at
        // 137 / 28 px).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fixtures/cub-tiny");
        let dataset = read_cub(&dir, &CubOptions::paper()).unwrap();
        assert_eq!(dataset.objects.len(), 2);
        let shown = |flips: [bool; 2]| -> Vec<ImageActivations> {
            flips
                .iter()
                .enumerate()
                .map(|(i, &flipped)| ImageActivations { image_id: i.to_string(), flipped, layers: Vec::new() })
                .collect()
        };
        let v = view_choice(&dataset, &shown([false, false]));
        assert_eq!((v.images, v.mirrored, v.facing_known, v.facing_agreement), (2, 0, 2, 1.0));
        // One shown mirrored: the two face opposite ways.
        let v = view_choice(&dataset, &shown([true, false]));
        assert_eq!((v.mirrored, v.facing_agreement), (1, 0.5));
        // Both mirrored: both face left, which is as consistent.
        assert_eq!(view_choice(&dataset, &shown([true, true])).facing_agreement, 1.0);
    }

    #[test]
    fn predicted_box_size_and_spread_over_draws() {
        // Keypoints (no sizes): the reference's 1×1 box; boxes: their mean size.
        assert_eq!(mean_size(std::iter::empty()), Extent::UNIT);
        assert_eq!(mean_size([Extent::new(2.0, 4.0), Extent::new(4.0, 8.0)].into_iter()), Extent::new(3.0, 6.0));
        // Sample standard deviation (n − 1): draws 1 and 3 → √2.
        assert!((sample_std(&[1.0, 3.0]) - std::f64::consts::SQRT_2).abs() < 1e-15);
        assert_eq!(sample_std(&[0.5]), 0.0);
        assert_eq!(mean(&[1.0, 2.0, 6.0]), 3.0);
    }

    #[test]
    fn node_tracks_take_each_nodes_better_orientation() {
        use expgraph_cache::{LayerInfo, TapGeometry};
        use expgraph_graph::{GraphLayer, LayerActivations};
        let layer = GraphLayer {
            info: LayerInfo {
                name: "top".into(),
                channels: 1,
                height: 14,
                width: 14,
                geometry: TapGeometry { stride: 16.0, first_centre: 8.5, receptive_field: 196.0 },
            },
            nodes_per_filter: 2,
            mu: vec![[3.0, 3.0]; 2],
            sigma: vec![1.0; 2],
            mean_position: vec![[3.0, 3.0]; 2],
            parents: vec![Vec::new(); 2],
            score_norm: 1.0,
        };
        let acts = |flipped: bool, scores: [f32; 2]| ImageActivations {
            image_id: "0".into(),
            flipped,
            layers: vec![LayerActivations {
                layer: "top".into(),
                positions: vec![[2.0, 3.0]; 2],
                scores: scores.to_vec(),
            }],
        };
        // Chosen view: original; node 0 scores higher there, node 1 in the mirrored view.
        let chosen = [acts(false, [5.0, 1.0])];
        let opposite = acts(true, [4.0, 2.0]);
        let ours = node_tracks(&layer, 0, 224.0, &chosen, None).unwrap();
        let reference = node_tracks(&layer, 0, 224.0, &chosen, Some(&[&opposite])).unwrap();
        // Map cell (h 2, w 3) → pixels (24.5, 40.5); mirrored back, w → 225 − 40.5 = 184.5.
        assert_eq!((ours.position(1, 0), ours.score(1, 0)), (Point::new(40.5, 24.5), 1.0));
        assert_eq!((reference.position(0, 0), reference.score(0, 0)), (Point::new(40.5, 24.5), 5.0));
        assert_eq!((reference.position(1, 0), reference.score(1, 0)), (Point::new(184.5, 24.5), 2.0));
    }
}
