//! A learned graph opened with its training images: the graph, their activations (checked to
//! come from that graph and cache) and their object crops. What `report` and `serve` look at.

use std::path::Path;

use expgraph_cache::FeatureCache;
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
