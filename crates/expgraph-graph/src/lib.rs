//! # expgraph-graph
//!
//! The explanatory graph as data (paper-spec §1.1): one [`GraphLayer`] per tapped conv layer,
//! `K` nodes per filter, each node a 2-D isotropic Gaussian over the filter's map (μ, σ in map
//! units), its mean inferred position over the training images, and up to `M` parent edges into
//! the next-deeper layer. Also the per-image inference output, [`ImageActivations`].
//!
//! Both have a versioned on-disk format (JSON metadata + safetensors arrays, written atomically):
//!
//! ```no_run
//! use expgraph_graph::{load_activations, ExplanatoryGraph};
//! let graph = ExplanatoryGraph::load("graph/")?;          // graph/graph.json + graph.safetensors
//! let top = graph.layers.last().expect("a layer");
//! println!("{}: {} nodes, node 0 at {:?} px", top.info.name, top.num_nodes(), top.mu_pixels(0));
//! let acts = load_activations("acts/")?;                  // acts/activations.{json,safetensors}
//! println!("{} images", acts.len());
//! graph.save("graph-copy/")?;
//! # Ok::<(), expgraph_graph::GraphError>(())
//! ```
//!
//! From Python: `safetensors.numpy.load_file("graph/graph.safetensors")["conv5_3.mu"]`.
//!
//! Architecture invariant: this crate holds no algorithm, touches no device and no image file.

mod activations_io;
mod error;
mod graph_io;
mod model;
mod provenance;
mod tensors;

pub use activations_io::{
    load_activations, save_activations, ACTIVATIONS_ARRAYS, ACTIVATIONS_FORMAT_VERSION, ACTIVATIONS_JSON,
};
pub use error::GraphError;
pub use expgraph_cache::LayerInfo;
pub use expgraph_geometry::TapGeometry;
pub use graph_io::{GRAPH_ARRAYS, GRAPH_JSON};
pub use model::{ExplanatoryGraph, GraphLayer, ImageActivations, LayerActivations, NodeRef, Parent};
pub use provenance::{graph_digest, FeatureOrigin, Provenance, PROVENANCE_JSON};
pub use tensors::{parents_from_padded, parents_to_padded, TensorReader};

#[cfg(test)]
mod tests;
