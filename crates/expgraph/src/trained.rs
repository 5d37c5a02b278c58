//! A learned graph opened with its training images: the graph, their activations (checked to
//! come from that graph and cache) and their object crops. What `report` and `serve` look at.

use std::path::Path;

use std::collections::HashMap;

use expgraph_cache::{FeatureCache, LayerMaps, View};
use expgraph_graph::{load_activations, ExplanatoryGraph, ImageActivations};

use crate::crops::CacheCrops;
use crate::pipeline::PipelineError;

/// A graph with its training images' activations and crops.
pub struct TrainedGraph {
    /// The graph.
    pub graph: ExplanatoryGraph,
    /// Its training images' activations (at least one image).
    pub activations: Vec<ImageActivations>,
    /// Their object crops, in the same order.
    pub crops: CacheCrops,
}

impl TrainedGraph {
    /// Loads the graph folder, the activations folder (refused when they come from another
    /// graph or cache, see [`crate::provenance`]) and the crops of their images from the cache
    /// (relative image paths under `images_root`, else the current folder, then the cache's
    /// parent folder).
    pub fn load(
        graph_dir: &Path,
        activations_dir: &Path,
        cache_dir: &Path,
        images_root: Option<&Path>,
    ) -> Result<Self, PipelineError> {
        let graph = ExplanatoryGraph::load(graph_dir)?;
        let cache = FeatureCache::open(cache_dir)?;
        crate::provenance::check_activations(activations_dir, Some(graph_dir), Some(&cache))?;
        let activations = load_activations(activations_dir)?;
        if activations.is_empty() {
            return Err(PipelineError::Input(format!("{} holds no images", activations_dir.display())));
        }
        let crops = CacheCrops::of_activations(cache_dir, &activations, images_root)?;
        Ok(TrainedGraph { graph, activations, crops })
    }
}

/// The raw filters of the graph's layers on the images of `activations` (in their order): each
/// filter's argmax cell in the original view and its value, read from the cache at `cache_dir`
/// one layer at a time (the raw-filter baseline of the human study).
pub fn raw_filters(
    graph: &ExplanatoryGraph,
    activations: &[ImageActivations],
    cache_dir: &Path,
) -> Result<Vec<ImageActivations>, PipelineError> {
    let cache = FeatureCache::open(cache_dir)?;
    let ids: Vec<String> = cache.images().iter().map(|i| i.id.clone()).collect();
    let mut per_image: Option<Vec<ImageActivations>> = None;
    for layer in &graph.layers {
        let maps = cache.layer(&layer.info.name)?;
        let refs: [&dyn LayerMaps; 1] = [&maps];
        let one = expgraph_localize::filter_argmaxes(&refs, &ids, View::Original)?;
        match &mut per_image {
            None => per_image = Some(one),
            Some(all) => {
                for (a, o) in all.iter_mut().zip(one) {
                    a.layers.extend(o.layers);
                }
            }
        }
    }
    let mut by_id: HashMap<String, ImageActivations> =
        per_image.unwrap_or_default().into_iter().map(|a| (a.image_id.clone(), a)).collect();
    activations
        .iter()
        .map(|a| {
            by_id.remove(&a.image_id).ok_or_else(|| {
                PipelineError::Provenance(format!(
                    "image `{}` of the activations is not in cache {}",
                    a.image_id,
                    cache_dir.display()
                ))
            })
        })
        .collect()
}
