//! Top-down inference of every node's position and score on new images (spec §1.7, §7 #10).

use expgraph_graph::{ExplanatoryGraph, ImageActivations, LayerActivations};

use crate::layer_model::{estep_config, node_setups, parent_priors, unit_ratio};
use crate::learner::check_layer_shape;
use crate::pass::{run_pass, Priors, Views};
use crate::team::Tally;
use crate::{FeatureSource, LearnError, LearnParams, Solo, Team};

/// `[image][node]` positions and scores of one layer.
type LayerResult = (Vec<[f32; 2]>, Vec<f32>);

/// Which view of each image inference reads (spec §1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewPolicy {
    /// The top layer scores both views and keeps the better one per image (when mirrored
    /// features exist and the graph was learned with flips); lower layers reuse that choice.
    Choose,
    /// Every image as is.
    Original,
    /// Every image mirrored (needs mirrored features). Positions are in the mirrored view's map
    /// coordinates, as [`ImageActivations::flipped`] says.
    Mirrored,
}

/// Infer node positions and scores of `graph` on the images of `features` (at most
/// `max_images`): top layer first (choosing each image's view when mirrored features exist and
/// the graph was learned with flips), then each lower layer with its parents' inferred positions.
/// Scores are divided by the layer's training score mean ([`expgraph_graph::GraphLayer::score_norm`]).
pub fn infer(
    graph: &ExplanatoryGraph,
    features: &dyn FeatureSource,
    max_images: Option<usize>,
) -> Result<Vec<ImageActivations>, LearnError> {
    infer_views(graph, features, max_images, ViewPolicy::Choose)
}

/// [`infer`] with the view of every image set by `policy`; e.g. few-shot localization tries
/// both [`ViewPolicy::Original`] and [`ViewPolicy::Mirrored`] and keeps the better match.
pub fn infer_views(
    graph: &ExplanatoryGraph,
    features: &dyn FeatureSource,
    max_images: Option<usize>,
    policy: ViewPolicy,
) -> Result<Vec<ImageActivations>, LearnError> {
    infer_in_team(graph, features, max_images, policy, &Solo)
}

/// [`infer`] with image `i` read in the view `flips[i]` says (`true` = mirrored), one entry per
/// image of `features`. Inference in the view [`ViewPolicy::Choose`] chose gives exactly the
/// chosen activations, so e.g. the other view of every image is `infer_in_views` of the
/// negated choices.
pub fn infer_in_views(
    graph: &ExplanatoryGraph,
    features: &dyn FeatureSource,
    flips: &[bool],
) -> Result<Vec<ImageActivations>, LearnError> {
    let images = features.image_ids().len();
    if flips.len() != images {
        return Err(LearnError::Mismatch(format!("{} views given for {images} images", flips.len())));
    }
    infer_from(graph, features, None, Start::Given(flips), &Solo)
}

/// [`infer_views`] as one member of `team` ([`Team`]): each member infers its blocks of images
/// and every member returns all images' activations, bit for bit those of a single process.
pub fn infer_in_team(
    graph: &ExplanatoryGraph,
    features: &dyn FeatureSource,
    max_images: Option<usize>,
    policy: ViewPolicy,
    team: &dyn Team,
) -> Result<Vec<ImageActivations>, LearnError> {
    infer_from(graph, features, max_images, Start::Policy(policy), team)
}

/// How the views of the images are set.
enum Start<'a> {
    /// By a policy.
    Policy(ViewPolicy),
    /// One view per image (`true` = mirrored).
    Given(&'a [bool]),
}

fn infer_from(
    graph: &ExplanatoryGraph,
    features: &dyn FeatureSource,
    max_images: Option<usize>,
    start: Start<'_>,
    team: &dyn Team,
) -> Result<Vec<ImageActivations>, LearnError> {
    let team = Tally::new(team);
    let p: LearnParams = if graph.params.is_null() {
        LearnParams::default()
    } else {
        serde_json::from_value(graph.params.clone())
            .map_err(|e| LearnError::Mismatch(format!("the graph's stored parameters are unreadable: {e}")))?
    };
    check_compatible(graph, features)?;
    let ids = features.image_ids();
    let n = max_images.map_or(ids.len(), |m| m.min(ids.len()));
    if n == 0 {
        return Err(LearnError::NoImages);
    }
    let chunk = p.chunk_size.max(1);
    let mut per_layer: Vec<Option<LayerResult>> = vec![None; graph.layers.len()];
    let (policy, mut flips) = match start {
        Start::Policy(policy) => (Some(policy), vec![policy == ViewPolicy::Mirrored; n]),
        Start::Given(f) => (None, f[..n].to_vec()),
    };
    for l in (0..graph.layers.len()).rev() {
        let gl = &graph.layers[l];
        let maps = features.open_layer(&gl.info.name)?;
        let k = gl.nodes_per_filter;
        let size = gl.info.height;
        let cfg = estep_config(&p, &gl.info, k);
        let init_sigma = p.init_delta * size as f64;
        let is_top = l + 1 == graph.layers.len();
        let has_parents = gl.parents.iter().any(|ps| !ps.is_empty());
        let (prior_sigma, priors, upper) = match (has_parents, per_layer.get(l + 1).and_then(|x| x.as_ref())) {
            (true, Some((up_pos, _))) => {
                if gl.parents.iter().any(|ps| ps.is_empty()) {
                    return Err(LearnError::Mismatch(format!(
                        "layer {}: some nodes have parents, others none",
                        gl.info.name
                    )));
                }
                let up = &graph.layers[l + 1];
                let ratio = unit_ratio(&p, &gl.info, &up.info);
                let idx: Vec<Vec<u32>> = gl.parents.iter().map(|ps| ps.iter().map(|q| q.node).collect()).collect();
                let pr = parent_priors(&idx, &up.sigma, ratio);
                (pr.iter().map(|q| q.sigma()).collect::<Vec<_>>(), Some(pr), Some((up_pos, &up.mean_position, ratio)))
            }
            _ => (vec![init_sigma; gl.num_nodes()], None, None),
        };
        let setups = node_setups(&p, size, k, &gl.mu, &gl.sigma, &prior_sigma);
        let prior_src = match (&priors, upper) {
            (Some(pr), Some((positions, mean, ratio))) => Priors::Parents { priors: pr, positions, mean, ratio },
            _ => Priors::None,
        };
        let use_flips = p.use_flips && !p.reference_compat && maps.has_flipped();
        let choose = is_top && use_flips && policy == Some(ViewPolicy::Choose);
        if !choose && flips.iter().any(|f| *f) && !maps.has_flipped() {
            return Err(LearnError::Mismatch(if policy == Some(ViewPolicy::Choose) {
                format!("layer {} has no mirrored view but the top layer chose one", gl.info.name)
            } else {
                format!("layer {} has no mirrored view to infer in", gl.info.name)
            }));
        }
        let views = if choose { Views::Choose(p.view_rule) } else { Views::Fixed(&flips) };
        let out = run_pass(maps.as_ref(), n, &cfg, &setups, &prior_src, &views, false, chunk, &team)?;
        if choose {
            flips = out.flips.clone();
        }
        let inv = 1.0 / gl.score_norm;
        let scores = out.scores.iter().map(|s| (f64::from(*s) * inv) as f32).collect();
        per_layer[l] = Some((out.positions, scores));
    }
    // Split per image one layer at a time, freeing each layer's arrays as it goes (the whole
    // result is never held twice).
    let mut images: Vec<ImageActivations> = (0..n)
        .map(|i| ImageActivations {
            image_id: ids[i].clone(),
            flipped: flips[i],
            layers: Vec::with_capacity(graph.layers.len()),
        })
        .collect();
    for (gl, result) in graph.layers.iter().zip(per_layer) {
        let Some((pos, sc)) = result else { continue };
        let m = gl.num_nodes();
        for (img, (p, s)) in images.iter_mut().zip(pos.chunks_exact(m).zip(sc.chunks_exact(m))) {
            img.layers.push(LayerActivations {
                layer: gl.info.name.clone(),
                positions: p.to_vec(),
                scores: s.to_vec(),
            });
        }
    }
    Ok(images)
}

/// The features must come from the same backbone and have every graph layer with the same
/// shape and geometry.
pub fn check_compatible(graph: &ExplanatoryGraph, features: &dyn FeatureSource) -> Result<(), LearnError> {
    if graph.backbone != features.backbone() || graph.input_size != features.input_size() {
        return Err(LearnError::Mismatch(format!(
            "the graph was learned on {} features at {} px, these are {} at {} px",
            graph.backbone,
            graph.input_size,
            features.backbone(),
            features.input_size()
        )));
    }
    let available = features.layers();
    for gl in &graph.layers {
        let info = available.iter().find(|l| l.name == gl.info.name).ok_or_else(|| LearnError::MissingLayer {
            layer: gl.info.name.clone(),
            available: available.iter().map(|l| l.name.clone()).collect(),
        })?;
        if *info != gl.info {
            return Err(LearnError::Mismatch(format!(
                "layer {}: the graph expects {}×{}×{} maps (stride {}), the features have {}×{}×{} (stride {})",
                gl.info.name,
                gl.info.channels,
                gl.info.height,
                gl.info.width,
                gl.info.geometry.stride,
                info.channels,
                info.height,
                info.width,
                info.geometry.stride
            )));
        }
        check_layer_shape(info)?;
    }
    Ok(())
}
