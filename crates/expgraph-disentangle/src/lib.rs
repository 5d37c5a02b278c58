//! # expgraph-disentangle
//!
//! Gaussian part disentangling inside one filter's map (paper-spec §1.6, §2.3, §2.4): each node
//! is a 2-D isotropic Gaussian prior over where its part appears; in every image a node is
//! scored at 6 × 6 sub-pixel candidates around its expected position, the filter's nodes (plus a
//! background τ) compete for each candidate through mixture normalization, and the M-step moves
//! μ by a damped EM step and resets σ from the candidates' spread.
//!
//! The API is per image and per node; the learner (`expgraph-learn`) drives it over images and
//! layers:
//!
//! ```
//! use expgraph_disentangle::*;
//! // One 14×14 filter with one node at (7, 7) and a blob of activation at (8, 7).
//! let mut map = vec![0.0f32; 14 * 14];
//! map[7 * 14 + 6] = 5.0; // 0-based (7, 6) = 1-based (8, 7)
//! let h = half_range(2.1, 14, 0.3, 3.0);
//! let node = NodeSetup::new([7.0, 7.0], candidate_offsets(h), h, 2.1);
//! let cfg = EStepConfig {
//!     height: 14, width: 14, nodes_per_filter: 1, kernel: SmoothingKernel::new(0.35),
//!     valid_tau: 0.1, rounded_window_centre: false, nearest_sibling: false,
//!     reference_arithmetic: false,
//! };
//! let (shifts, lambdas) = ([[0.0, 0.0]], [1.0]);
//! let mut scratch = EStepScratch::default();
//! let mut prior = vec![0.0; CANDIDATES];
//! evidence(&cfg, &[node], &map, &shifts, &mut prior, &mut scratch);
//! let mut stats = [NodeImageStats::default()];
//! accumulate(&cfg, &[node], &shifts, &lambdas, &prior, true, &mut stats, &mut scratch);
//! let best = stats[0].best_position; // a candidate nearest the blob
//! assert!(best[0] == 8.0 && ((best[1] - 7.0).abs() - 1.0 / 3.0).abs() < 1e-12);
//! let mut totals = NodeTotals::default();
//! totals.add(&stats[0]);
//! let mu = update_mu(node.mu, &totals, 1.0, step_sigma(2.1, 1));
//! assert!(mu[0] > 7.0); // μ moves towards the blob
//! ```

mod estep;
mod evidence;
mod fast_exp;
mod init;
mod isa;
mod kernel;
mod mstep;
mod reference;
mod settings;

pub use estep::{accumulate, flip_criterion, view_score, EStepConfig, EStepScratch, NodeImageStats, NodeSetup};
pub use evidence::evidence;
pub use fast_exp::{fast_exp, fast_exp_f32, FAST_EXP_F32_MAX_REL_ERROR};
#[cfg(target_arch = "x86_64")]
pub use fast_exp::{fast_exp_avx2, fast_exp_avx512, fast_exp_f32_avx2};
pub use init::{nodes_per_filter, random_means};
pub use isa::Isa;
pub use kernel::SmoothingKernel;
pub use mstep::{sigma_max, step_sigma, update_mu, update_sigma, NodeTotals};
pub use settings::{candidate_offsets, grid_spacing, half_range, CANDIDATES};

#[cfg(test)]
mod tests;
