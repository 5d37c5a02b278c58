//! The flags of the commands that look at a learned graph on its training images (`report`,
//! `serve`), and loading what they name, checked against each other.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use expgraph::crops::CacheCrops;
pub use expgraph::trained::TrainedGraph;
use expgraph_graph::ImageActivations;

/// `--graph`, `--activations`, `--cache`, `--images-root`.
#[derive(clap::Args, Debug)]
pub struct GraphArgs {
    /// Graph folder (`expgraph learn --out`).
    #[arg(long)]
    pub graph: PathBuf,
    /// Activations of the training images (`expgraph infer --out` on the training cache).
    #[arg(long)]
    pub activations: PathBuf,
    /// Feature cache of the training images (for their object crops).
    #[arg(long)]
    pub cache: PathBuf,
    /// Folder that relative image paths of the caches are resolved against (default: the
    /// current folder, then the cache's parent folder).
    #[arg(long)]
    pub images_root: Option<PathBuf>,
}

impl GraphArgs {
    /// Loads the graph, the activations (refused when they come from another graph or cache)
    /// and the crops of their images.
    pub fn load(&self) -> Result<TrainedGraph> {
        TrainedGraph::load(&self.graph, &self.activations, &self.cache, self.images_root.as_deref()).with_context(
            || {
                format!(
                    "opening graph {} with activations {} and cache {}",
                    self.graph.display(),
                    self.activations.display(),
                    self.cache.display()
                )
            },
        )
    }
}

impl GraphArgs {
    /// Where the graph came from, for the explorer's index: the three paths.
    pub fn origin(&self) -> Vec<(String, String)> {
        vec![
            ("graph".to_string(), self.graph.display().to_string()),
            ("activations".to_string(), self.activations.display().to_string()),
            ("cache".to_string(), self.cache.display().to_string()),
        ]
    }
}

/// The crops of `acts` (whose image ids must all be in the cache at `cache_dir`).
pub fn cache_crops(cache_dir: &Path, acts: &[ImageActivations], images_root: Option<&Path>) -> Result<CacheCrops> {
    CacheCrops::of_activations(cache_dir, acts, images_root)
        .with_context(|| format!("the crops of feature cache {}", cache_dir.display()))
}
