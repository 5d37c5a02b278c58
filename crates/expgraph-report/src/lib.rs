//! # expgraph-report
//!
//! See the graph: node patch galleries (spec §4.4), heat maps of firing nodes (spec §1.7), image
//! synthesis from activated patterns, localization overlays (spec §4.1–4.2), graph export (versioned
//! JSON + Graphviz DOT of a filtered subgraph) and a self-contained HTML report folder.
//!
//! This crate draws; it never decodes source images nor touches a device. Object crops (the
//! 224×224 network input frame, spec §1.3) come in through [`CropSource`], which the CLI
//! implements. Text is drawn with an embedded DejaVu Sans, so no fontconfig or system font is
//! needed. Every file is written atomically (temp file or temp folder, then rename).
//!
//! ```
//! use expgraph_report::testing::{synthetic_activations, synthetic_crops, synthetic_graph};
//! use expgraph_report::{build_report, ImageSet, ReportInputs, ReportParams};
//! let graph = synthetic_graph(4, 3, 7)?;
//! let acts = synthetic_activations(&graph, 6, 8);
//! let crops = synthetic_crops(6, 224, 9);
//! let set = ImageSet { activations: &acts, crops: &crops };
//! let inputs = ReportInputs {
//!     title: "demo".into(),
//!     summary: vec![("learning time".into(), "1.2 s".into())],
//!     tables: vec![],
//!     graph: &graph,
//!     train: Some(set),
//!     test: None,
//!     part_distances: vec![("head".into(), 0.12)],
//!     localization: vec![],
//! };
//! let report = build_report(&inputs, &ReportParams::default())?;
//! let dir = tempfile::tempdir()?;
//! let written = report.write(&dir.path().join("report"))?;
//! assert!(written.index.is_file());
//! expgraph_report::write_graph_json(&graph, &dir.path().join("graph.json"))?;
//! let dot = expgraph_report::graph_dot(&graph, Some(&acts), &Default::default())?;
//! assert!(dot.starts_with("digraph"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The JSON export schema is documented in the crate README.

mod colormap;
mod crops;
mod draw;
mod error;
mod export;
mod gallery;
mod geometry;
mod heatmap;
mod html;
mod localization;
mod pipeline;
mod plots;
mod ranking;
mod synthesis;
mod write;

#[cfg(feature = "testing")]
pub mod testing;

pub use colormap::Colormap;
pub use crops::{CropFn, CropSource};
pub use error::{CropError, ReportError, Result};
pub use expgraph_graph::TapGeometry;
pub use export::{
    graph_dot, write_dot, write_graph_json, DotParams, ExportEdge, ExportLayer, ExportNode, GraphExport,
    GRAPH_EXPORT_SCHEMA, GRAPH_EXPORT_VERSION,
};
pub use gallery::{cut_patch, node_gallery, Gallery, GalleryParams, GalleryPatch, GalleryRow};
pub use geometry::{default_patch_side, node_pixel, patch_box, PixelBox};
pub use heatmap::{heat_field, heatmap_overlay, overlay_field, HeatmapParams};
pub use html::{Attachment, Figure, Link, LinkList, MetricTable, Report, Section, WrittenReport};
/// The image type every drawing function takes and returns (re-exported from `image`).
pub use image::RgbImage;
pub use localization::{localization_overlay, PartPoint, VoteMap, PREDICTION_COLOR, TRUTH_COLOR};
pub use pipeline::{build_report, graph_summary, ImageSet, LocalizationCase, ReportInputs, ReportParams};
pub use plots::{bar_chart, histogram, sigma_histograms};
pub use ranking::{rank_nodes, top_nodes, validate_activations, RankedNode};
pub use synthesis::{synthesis_pair, MeanPatches, SynthesisParams};
