//! # expgraph-cliques
//!
//! Mining the edges between graph layers (paper-spec §2.2, §1.5): which upper-layer nodes are
//! a node's parents (they move together with it across images), and what those parents say
//! about where the node should be in a given image.
//!
//! ```
//! use expgraph_cliques::{
//!     candidate_pool, displacements, displacements_of, select_parents, DisplacementFrame, LayerRecords, ParentPrior,
//! };
//! use expgraph_graph::TapGeometry;
//! let g = TapGeometry { stride: 16.0, first_centre: 8.5, receptive_field: 196.0 };
//! // Upper layer: 4 nodes in 3 images; node 1 moves with the image shift (0, +1, -1), the
//! // others are static or at the border.
//! let shift = [0.0f32, 1.0, -1.0];
//! let positions: Vec<[f32; 2]> = shift
//!     .iter()
//!     .flat_map(|s| [[7.0, 7.0], [6.0 + s, 6.0], [1.0, 1.0], [8.0 - s, 8.0 + s]])
//!     .collect();
//! let scores = vec![1.0f32; 12];
//! let upper = LayerRecords { name: "conv5_3", num_images: 3, num_nodes: 4, positions: &positions, scores: &scores };
//! let pool = candidate_pool(&upper, 14.0, 0.5, 0.1, 600)?;
//! assert_eq!(pool, vec![1, 3]); // static node 0 and border node 2 are dropped
//! // One child that moves like node 1.
//! let child_pos: Vec<[f32; 2]> = shift.iter().map(|s| [10.0 + 2.0 * s, 4.0]).collect();
//! let child = LayerRecords { name: "c", num_images: 3, num_nodes: 1, positions: &child_pos, scores: &[1.0; 3] };
//! let gc = TapGeometry { stride: 8.0, first_centre: 4.5, receptive_field: 92.0 };
//! let cd = displacements(&child, &gc, DisplacementFrame::Pixels);
//! // Only the pool's displacements are needed: `[rank][image]`.
//! let pool_disp = displacements_of(&upper, &g, DisplacementFrame::Pixels, &pool);
//! let all = displacements(&upper, &g, DisplacementFrame::Pixels);
//! assert_eq!(pool_disp[..3], all[3..6]); // pool rank 0 is node 1
//! let parents = select_parents(&cd, &[1.0; 3], 1, 3, &pool, &pool_disp, 1);
//! assert_eq!(parents[0][0].node, 1);
//! // The prior from two parents with σ = 1 that both moved by (+2, 0): shift (2, 0), σ = 1.
//! let prior = ParentPrior::new(vec![1, 3], &[1.0, 1.0]);
//! let (shift, log_lambda) = prior.for_image(|_| [2.0, 0.0]);
//! assert_eq!(shift, [2.0, 0.0]);
//! assert!((prior.sigma() - 1.0).abs() < 1e-12 && log_lambda.abs() < 1e-12);
//! # Ok::<(), expgraph_cliques::CliqueError>(())
//! ```

mod pool;
mod prior;
mod similarity;

pub use pool::candidate_pool;
pub use prior::ParentPrior;
pub use similarity::{displacements, displacements_of, select_parents, select_parents_of, DisplacementFrame};

/// One layer's per-image inference records, image-major (`[image][node]`).
#[derive(Debug, Clone, Copy)]
pub struct LayerRecords<'a> {
    /// Layer name (for errors).
    pub name: &'a str,
    /// Number of images N.
    pub num_images: usize,
    /// Number of nodes.
    pub num_nodes: usize,
    /// Inferred positions, map coordinates.
    pub positions: &'a [[f32; 2]],
    /// Scores (any positive scaling).
    pub scores: &'a [f32],
}

/// Errors of clique mining.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CliqueError {
    /// Positional variance needs at least two images.
    #[error("parent selection needs at least 2 images, got {0}")]
    TooFewImages(usize),
    /// Every upper-layer node was filtered out.
    #[error("layer {layer}: no candidate parent survives the variance and border filters")]
    EmptyPool {
        /// Upper layer.
        layer: String,
    },
}

#[cfg(test)]
mod tests;
