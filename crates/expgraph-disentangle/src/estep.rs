//! The E-step of one image (spec §1.6, §2.3): the node templates, mixture normalization over
//! each filter's nodes plus the background τ, and per-node statistics. The local evidence is in
//! `evidence.rs`.

use std::ops::Range;

use crate::evidence::{AxisCells, MapIndex};
use crate::fast_exp::fast_exp;
use crate::kernel::SmoothingKernel;
use crate::reference::{reference_z, Template};
use crate::settings::{normal_pdf, CANDIDATES, CANDIDATES_PER_AXIS, SQRT_2PI};

const NC: usize = CANDIDATES_PER_AXIS;

/// Everything about one node that is fixed during one iteration (one "template", built once
/// per node per iteration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeSetup {
    /// Prior mean μ, `(h, w)` in 1-based map coordinates.
    pub mu: [f64; 2],
    /// Candidate offsets (same on both axes), from the node's half-range.
    pub offsets: [f64; NC],
    /// Half-range of the evidence window, in cells.
    pub window: usize,
    /// The spatial-prior std `σ_V(I)` (image-independent within an iteration, spec §1.5).
    pub prior_sigma: f64,
    /// `g(offset_i; prior_sigma)`: the 1-D factors of the spatial prior `prob` (without λ).
    pub prob_factors: [f64; NC],
    /// `1 / 2σ²` and `1 / (√(2π) σ)` of the prior, for [`Self::prior_factor`].
    prior_inv: f64,
    prior_norm: f64,
}

impl NodeSetup {
    /// A node template; `prior_sigma` must be > 0.
    pub fn new(mu: [f64; 2], offsets: [f64; NC], window: usize, prior_sigma: f64) -> Self {
        let prob_factors = offsets.map(|o| normal_pdf(o, prior_sigma));
        let prior_inv = 1.0 / (2.0 * prior_sigma * prior_sigma);
        let prior_norm = 1.0 / (SQRT_2PI * prior_sigma);
        Self { mu, offsets, window, prior_sigma, prob_factors, prior_inv, prior_norm }
    }

    /// The 1-D prior factor `g(d; prior_sigma)` at offset `d` from the centre, with the
    /// vectorizable [`fast_exp`] (the sibling factors of the mixture normalization).
    #[inline(always)]
    fn prior_factor(&self, d: f64) -> f64 {
        self.prior_norm * fast_exp(-d * d * self.prior_inv)
    }

    /// `Σ_c prob_c / λ = (Σ_i g_i)²`.
    pub fn prob_mass(&self) -> f64 {
        let s: f64 = self.prob_factors.iter().sum();
        s * s
    }
}

/// Layer-wide settings of the E-step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EStepConfig {
    /// Map height.
    pub height: usize,
    /// Map width.
    pub width: usize,
    /// Nodes per filter `K` (a filter's nodes are contiguous, spec App. A).
    pub nodes_per_filter: usize,
    /// Activation-smoothing kernel (σ_map = map_delta · H).
    pub kernel: SmoothingKernel,
    /// Background weight (`validTau`, 0.1): τ = valid_tau · mean over nodes of Σ_c prob.
    pub valid_tau: f64,
    /// Reference quirk (spec §7 #7): kernel distances from the offsets to cells relative to the
    /// *rounded* centre. `false`: true sub-pixel distances (consistent centre).
    pub rounded_window_centre: bool,
    /// Reference quirk (spec §7 #15): a sibling's prior at a point is the value at its nearest
    /// candidate. `false`: its Gaussian evaluated exactly at the point.
    pub nearest_sibling: bool,
    /// Evaluate in the reference code's floating-point order (per-cell kernel templates, the
    /// 2-D nearest-candidate scan, its constants and summation order), so that near-ties break
    /// the same way. Slower; for reference-compat fidelity only.
    pub reference_arithmetic: bool,
}

/// Per-node, per-image result of the E-step (spec §2.3 accumulators).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeImageStats {
    /// `A_V = Σ_c r_c · prior_c` (responsibility-weighted evidence).
    pub mass: f64,
    /// `G_V = Σ_c r_c · prior_c · offset_c / σ²`.
    pub gradient: [f64; 2],
    /// `S_V = Σ_c prob_c · prior_c` (the node score, spec §1.7).
    pub score: f64,
    /// `Q_V = Σ_c prob_c · prior_c · ((i − 2.5)² + (j − 2.5)²)`, grid indices 0..6.
    pub spread: f64,
    /// Candidate position with the largest `prob · prior` (inferred position).
    pub best_position: [f64; 2],
    /// `prob · prior` at that candidate (`S*`).
    pub best_score: f64,
}

/// Reusable buffers of one worker.
#[derive(Debug, Default, Clone)]
pub struct EStepScratch {
    pub(crate) map_index: MapIndex,
    pub(crate) row_cells: Vec<AxisCells>,
    pub(crate) col_cells: Vec<AxisCells>,
    points: Vec<[[f64; NC]; 2]>,
    z: Vec<f64>,
    boxes: Vec<[f64; 4]>,
    overlap: Vec<(usize, u64)>,
    pub(crate) templates: Vec<Template>,
}

/// Candidate coordinates `(h, w)` of a node centred at `c`: `c + o`, or in reference arithmetic
/// `((c − 1) + 1) + o` as the MEX code computes them.
#[inline(always)]
fn candidate_points(cfg: &EStepConfig, node: &NodeSetup, c: [f64; 2]) -> [[f64; NC]; 2] {
    if cfg.reference_arithmetic {
        let base = [(c[0] - 1.0) + 1.0, (c[1] - 1.0) + 1.0];
        [arr(|i| base[0] + node.offsets[i]), arr(|i| base[1] + node.offsets[i])]
    } else {
        [arr(|i| c[0] + node.offsets[i]), arr(|i| c[1] + node.offsets[i])]
    }
}

/// `[f(0), …, f(5)]` by a plain loop: `<[T; N]>::map` is not always inlined, and its closures
/// (the E-step's [`fast_exp`] calls among them) then stay out-of-line calls in the hot loops.
#[inline(always)]
pub(crate) fn arr(mut f: impl FnMut(usize) -> f64) -> [f64; NC] {
    let mut out = [0.0; NC];
    for (i, o) in out.iter_mut().enumerate() {
        *o = f(i);
    }
    out
}

/// The background weight τ of one image (spec §2.3): `valid_tau · mean_V Σ_c prob_V(c)`.
#[inline(always)]
pub(crate) fn background_tau(cfg: &EStepConfig, nodes: &[NodeSetup], lambdas: &[f64]) -> f64 {
    if nodes.is_empty() {
        return 0.0;
    }
    if cfg.reference_arithmetic {
        let mut total = 0.0;
        for (n, l) in nodes.iter().zip(lambdas) {
            let mut s = 0.0;
            for iw in 0..NC {
                for ih in 0..NC {
                    s += (n.prob_factors[iw] * n.prob_factors[ih]) * l;
                }
            }
            total += s;
        }
        return cfg.valid_tau * (total / nodes.len() as f64);
    }
    let total: f64 = nodes.iter().zip(lambdas).map(|(n, l)| l * n.prob_mass()).sum();
    cfg.valid_tau * total / nodes.len() as f64
}

/// The flip criterion of one view (spec §1.7): `Σ_V Σ_c ln(prob_c) · prior_c`.
pub fn flip_criterion(nodes: &[NodeSetup], lambdas: &[f64], prior: &[f64]) -> f64 {
    let mut total = 0.0;
    for (v, node) in nodes.iter().enumerate() {
        let ll = lambdas[v].ln();
        let lg = node.prob_factors.map(f64::ln);
        let p = &prior[v * CANDIDATES..(v + 1) * CANDIDATES];
        for iw in 0..NC {
            for ih in 0..NC {
                total += (ll + lg[ih] + lg[iw]) * p[iw * NC + ih];
            }
        }
    }
    total
}

/// The summed node scores of one view: `Σ_V λ_V Σ_c prob_c · prior_c`, i.e. `Σ_V S_V(I)`
/// (spec §2.3). The view whose activations the nodes explain better scores higher; expgraph's
/// default view rule (the spec's [`flip_criterion`] mostly prefers the view with less evidence,
/// since every `ln prob_c` is negative).
pub fn view_score(nodes: &[NodeSetup], lambdas: &[f64], prior: &[f64]) -> f64 {
    let mut total = 0.0;
    for (v, node) in nodes.iter().enumerate() {
        let p = &prior[v * CANDIDATES..(v + 1) * CANDIDATES];
        let mut s = 0.0;
        for iw in 0..NC {
            for ih in 0..NC {
                s += node.prob_factors[ih] * node.prob_factors[iw] * p[iw * NC + ih];
            }
        }
        total += lambdas[v] * s;
    }
    total
}

/// Mixture normalization over each filter's nodes and the per-node statistics (spec §2.3).
///
/// With `normalize = false` only the score, spread and best candidate are computed (inference,
/// spec §1.7, needs no responsibilities); `mass` and `gradient` stay 0.
#[allow(clippy::too_many_arguments)]
pub fn accumulate(
    cfg: &EStepConfig,
    nodes: &[NodeSetup],
    shifts: &[[f64; 2]],
    lambdas: &[f64],
    prior: &[f64],
    normalize: bool,
    out: &mut [NodeImageStats],
    scratch: &mut EStepScratch,
) {
    let k = cfg.nodes_per_filter;
    let tau = if normalize { background_tau(cfg, nodes, lambdas) } else { 0.0 };
    for (f, stats) in out.chunks_exact_mut(k).enumerate() {
        let base = f * k;
        // Candidate positions (1-based) per node and axis.
        scratch.points.clear();
        for v in base..base + k {
            let n = &nodes[v];
            let c = [n.mu[0] + shifts[v][0], n.mu[1] + shifts[v][1]];
            scratch.points.push(candidate_points(cfg, n, c));
        }
        // Each node's candidate box `[h_lo, h_hi, w_lo, w_hi]`.
        scratch.boxes.clear();
        scratch.boxes.extend(scratch.points.iter().map(|p| [p[0][0], p[0][NC - 1], p[1][0], p[1][NC - 1]]));
        if normalize && cfg.reference_arithmetic {
            reference_z(nodes, base, k, lambdas, &scratch.points, tau, &mut scratch.z);
        } else if normalize {
            scratch.z.clear();
            scratch.z.resize(k * CANDIDATES, tau);
            for a in 0..k {
                // No positive unit in a's window: its evidence is 0 at every candidate, and so
                // is every mass r · prior; its Z is never used.
                if prior[(base + a) * CANDIDATES..(base + a + 1) * CANDIDATES].iter().all(|&p| p == 0.0) {
                    continue;
                }
                let pa = &scratch.points[a];
                // The siblings whose candidate box overlaps a's, as a bit set built without
                // branches (most pairs do not overlap), visited in increasing b as before.
                let bx = &scratch.boxes;
                scratch.overlap.clear();
                for (j, chunk) in bx.chunks(64).enumerate() {
                    let mut word = 0u64;
                    for (i, q) in chunk.iter().enumerate() {
                        let apart =
                            (pa[0][NC - 1] < q[0]) | (pa[0][0] > q[1]) | (pa[1][NC - 1] < q[2]) | (pa[1][0] > q[3]);
                        word |= u64::from(!apart) << i;
                    }
                    scratch.overlap.push((j, word));
                }
                for wi in 0..scratch.overlap.len() {
                    let (j, mut word) = scratch.overlap[wi];
                    while word != 0 {
                        let b = j * 64 + word.trailing_zeros() as usize;
                        word &= word - 1;
                        let pa = &scratch.points[a];
                        let pb = &scratch.points[b];
                        // Sibling b contributes only where a's candidates lie inside b's candidate
                        // box: a sub-rectangle of a's grid.
                        let (hs, ws) =
                            (inside(&pa[0], pb[0][0], pb[0][NC - 1]), inside(&pa[1], pb[1][0], pb[1][NC - 1]));
                        if hs.is_empty() || ws.is_empty() {
                            continue;
                        }
                        let sib = &nodes[base + b];
                        let [fh, fw] = if a == b {
                            // A node's own prior at its own candidates: its template's factors.
                            [sib.prob_factors; 2]
                        } else {
                            let centre = [sib.mu[0] + shifts[base + b][0], sib.mu[1] + shifts[base + b][1]];
                            [
                                sibling_factors(&pa[0], hs.clone(), &pb[0], sib, centre[0], cfg.nearest_sibling),
                                sibling_factors(&pa[1], ws.clone(), &pb[1], sib, centre[1], cfg.nearest_sibling),
                            ]
                        };
                        let lam = lambdas[base + b];
                        let z = &mut scratch.z[a * CANDIDATES..(a + 1) * CANDIDATES];
                        for iw in ws {
                            let fw = lam * fw[iw];
                            for ih in hs.clone() {
                                z[iw * NC + ih] += fw * fh[ih];
                            }
                        }
                    }
                }
            }
        }
        for (a, st) in stats.iter_mut().enumerate() {
            let v = base + a;
            let n = &nodes[v];
            let lam = lambdas[v];
            let p = &prior[v * CANDIDATES..(v + 1) * CANDIDATES];
            let var = n.prior_sigma * n.prior_sigma;
            let der = arr(|i| n.offsets[i] / var);
            let mut s = NodeImageStats { best_score: f64::NEG_INFINITY, ..Default::default() };
            let mut best = 0;
            for iw in 0..NC {
                for ih in 0..NC {
                    let c = iw * NC + ih;
                    let prob = (n.prob_factors[iw] * n.prob_factors[ih]) * lam;
                    let pp = prob * p[c];
                    if normalize {
                        let mass = prob / scratch.z[a * CANDIDATES + c].max(1e-7) * p[c];
                        s.mass += mass;
                        s.gradient[0] += mass * der[ih];
                        s.gradient[1] += mass * der[iw];
                    }
                    s.score += pp;
                    let (di, dj) = (ih as f64 - 2.5, iw as f64 - 2.5);
                    s.spread += pp * (di * di + dj * dj);
                    if pp > s.best_score {
                        s.best_score = pp;
                        best = c;
                    }
                }
            }
            if !s.best_score.is_finite() {
                s.best_score = 0.0;
            }
            let pts = &scratch.points[a];
            s.best_position = [pts[0][best % NC], pts[1][best / NC]];
            *st = s;
        }
    }
}

/// The grid indices of the (increasing) candidate coordinates `p` inside `[lo, hi]`.
#[inline(always)]
fn inside(p: &[f64; NC], lo: f64, hi: f64) -> Range<usize> {
    let start = p.iter().position(|&x| x >= lo).unwrap_or(NC);
    let end = p.iter().rposition(|&x| x <= hi).map_or(0, |i| i + 1);
    start..end.max(start)
}

/// For node a's candidate coordinates `pa[range]` on one axis (inside sibling b's candidate
/// extent `pb`), the 1-D factor of b's prior there: the nearest candidate's factor (reference)
/// or b's Gaussian at the exact point. Entries outside `range` are 0.
#[inline(always)]
fn sibling_factors(
    pa: &[f64; NC],
    range: Range<usize>,
    pb: &[f64; NC],
    sib: &NodeSetup,
    centre: f64,
    nearest: bool,
) -> [f64; NC] {
    let mut out = [0.0; NC];
    if nearest {
        for i in range {
            // Regular grid: the nearest candidate by scanning 6 values (first minimum wins, as
            // in the reference's strict `<` scan).
            let mut best = 0;
            let mut best_d = f64::INFINITY;
            for (j, q) in pb.iter().enumerate() {
                let d = (pa[i] - q) * (pa[i] - q);
                if d < best_d {
                    best_d = d;
                    best = j;
                }
            }
            out[i] = sib.prob_factors[best];
        }
    } else {
        for i in range {
            out[i] = sib.prior_factor(pa[i] - centre);
        }
    }
    out
}
