//! # expgraph-graph
//!
//! The explanatory graph as data (paper-spec §1.1): one [`GraphLayer`] per tapped conv layer,
//! `K` nodes per filter, each node a 2-D isotropic Gaussian over the filter's map (μ, σ in map
//! units), and up to `M` parent edges into the next-deeper layer. Also the per-image inference
//! output, [`ImageActivations`].
//!
//! Architecture invariant: this crate holds no algorithm, touches no device and no image file.

mod model;

pub use expgraph_cache::{LayerInfo, TapGeometry};
pub use model::{ExplanatoryGraph, GraphLayer, ImageActivations, LayerActivations, NodeRef, Parent};
