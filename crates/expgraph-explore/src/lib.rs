//! # expgraph-explore
//!
//! A local web explorer of a learned explanatory graph, in the way OpenAI Microscope and
//! NetDissect let researchers browse units, but for the *graph*: every node's best patches and
//! heat maps, its parents (with the learned displacements drawn on an image) and children, and
//! each image's firing nodes with the graph's edges between them (the paper's signature figure).
//!
//! * [`Explorer`]: the graph, the activations of its training images (`expgraph infer`) and
//!   their object crops (any [`CropSource`](expgraph_report::CropSource)); ranks every node once
//!   (the spec's top-50 score) and indexes children.
//! * [`Pages`]: the HTML pages, rendered server-side with minijinja (auto-escaped).
//! * [`PngCache`]: crops, patch strips and heat maps drawn on demand (with the report crate's
//!   drawing) and kept in a bounded cache.
//! * [`Server`]: axum over a multi-threaded tokio runtime; binds to 127.0.0.1 by default and
//!   refuses a non-local address unless told ([`check_address`]). Routes: see [`server`].
//! * [`export_site`]: the pages of the best nodes of every layer and their figures as files,
//!   for a static report (`expgraph report --nodes`).
//! * [`parts`]: the few-shot part models (`expgraph localize --save-models`) seen from the
//!   graph: node pages list the parts a node votes for; a part page draws each template's voters.
//! * [`client::get`]: a minimal blocking HTTP GET for tests and load tests.
//!
//! ```no_run
//! use expgraph_explore::{Explorer, Server, ServeParams};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let graph = expgraph_graph::ExplanatoryGraph::load("graph/")?;
//! let acts = expgraph_graph::load_activations("activations/")?;
//! let crops: Vec<expgraph_report::RgbImage> = vec![]; // the images' object crops, in order
//! let explorer = Explorer::new(graph, acts, Box::new(crops), vec![])?;
//! let server = Server::start(explorer, &ServeParams::default())?;
//! println!("http://{}/", server.addr());
//! server.wait()?;
//! # Ok(()) }
//! ```

pub mod client;
mod error;
mod explorer;
mod export;
mod images;
mod pages;
pub mod parts;
pub mod server;
pub mod study;

pub use error::{ExploreError, Result};
pub use explorer::{Child, Explorer, NodeRank, TOP_IMAGES};
pub use export::{export_site, ExportedNode, SiteFile, StaticSite};
pub use images::{draw, Figure, PngCache, MAX_PATCHES, TILE};
pub use pages::{LayerQuery, Pages, SortKey, ROWS_PER_PAGE};
pub use server::{check_address, router, ServeParams, Server};
