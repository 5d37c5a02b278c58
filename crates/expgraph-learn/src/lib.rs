//! # expgraph-learn
//!
//! Learns an explanatory graph from a pretrained CNN's feature maps (paper-spec §2): top-down,
//! layer by layer, `iterations` EM iterations per layer, each iteration = parent selection
//! (`expgraph-cliques`, from iteration 2 on, below the top layer) + an E-step over all images +
//! the M-step (`expgraph-disentangle`). Then [`infer`] finds every node's position and score on
//! new images (spec §1.7).
//!
//! linfa-style: [`LearnParams`] (defaults = the paper's VGG-16 settings and the spec §7
//! recommendations) → [`LearnParams::check`] → [`CheckedLearnParams::fit`] → graph.
//!
//! ```
//! use expgraph_learn::{infer, synthetic, LearnParams};
//! let data = synthetic::generate(&synthetic::SyntheticSpec { num_images: 8, channels: 2, ..Default::default() });
//! let learned = LearnParams::default()
//!     .layers(&[("low", 0.02), ("top", 0.05)])
//!     .iterations(3)
//!     .top_n(3)
//!     .check()?
//!     .fit(&data.features)?;
//! assert_eq!(learned.graph.layers[1].num_nodes(), 2 * 10); // ceil(14·14·0.05) = 10 per filter
//! let acts = infer(&learned.graph, &data.features, None)?;
//! assert_eq!(acts.len(), 8);
//! # Ok::<(), expgraph_learn::LearnError>(())
//! ```
//!
//! Determinism: work is split into fixed chunks of images and reduced in chunk order, so the
//! graph is bit-identical for any number of rayon threads; all randomness is seeded ChaCha8.

mod align;
mod checkpoint;
mod error;
mod infer;
mod layer_model;
mod learner;
mod params;
mod pass;
mod source;
pub mod synthetic;
mod team;

pub use checkpoint::{Checkpoints, DirCheckpoints, LayerCheckpoint};
pub use error::LearnError;
pub use infer::{check_compatible, infer, infer_in_team, infer_in_views, infer_views, ViewPolicy};
pub use layer_model::{reference_geometry, REFERENCE_RESNET_CENTRES};
pub use learner::{LayerRecord, LearnOutput, Progress};
pub use params::{CheckedLearnParams, LayerSpec, LearnParams, ViewRule, PAPER_RESNET_LAYERS, PAPER_VGG16_LAYERS};
pub use source::{FeatureSource, InMemoryFeatures};
pub use team::{member_range, Solo, Team, ThreadShared, ThreadTeam, Traffic, BLOCK_CHUNKS};
