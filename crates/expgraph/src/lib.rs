//! # expgraph
//!
//! Facade of the workspace: re-exports every stage crate under a short name and runs the whole
//! pipeline (extract → learn → localize → evaluate → report) for the CLI's `expgraph run` and the
//! `cargo xtask bench-*` benchmarks.

pub mod record;

pub use expgraph_backbone as backbone;
pub use expgraph_cache as cache;
pub use expgraph_cliques as cliques;
pub use expgraph_datasets as datasets;
pub use expgraph_disentangle as disentangle;
pub use expgraph_eval as eval;
pub use expgraph_features as features;
pub use expgraph_geometry as geometry;
pub use expgraph_graph as graph;
pub use expgraph_io as io;
pub use expgraph_learn as learn;
pub use expgraph_localize as localize;
pub use expgraph_report as report;

pub mod crops;
pub mod localization;
pub mod pipeline;
pub mod provenance;
pub mod trained;
