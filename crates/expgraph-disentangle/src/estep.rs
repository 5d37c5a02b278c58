//! The E-step of one image (spec §1.6, §2.3): local evidence of every candidate, mixture
//! normalization over each filter's nodes plus the background τ, and per-node statistics.

use crate::kernel::SmoothingKernel;
use crate::settings::{normal_pdf, CANDIDATES, CANDIDATES_PER_AXIS};

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
}

impl NodeSetup {
    /// A node template; `prior_sigma` must be > 0.
    pub fn new(mu: [f64; 2], offsets: [f64; NC], window: usize, prior_sigma: f64) -> Self {
        let prob_factors = offsets.map(|o| normal_pdf(o, prior_sigma));
        Self { mu, offsets, window, prior_sigma, prob_factors }
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
    sat: Vec<f64>,
    rows: Vec<(usize, f64, f64)>,
    row_start: [usize; NC + 1],
    cols: Vec<(usize, f64, f64)>,
    col_start: [usize; NC + 1],
    points: Vec<[[f64; NC]; 2]>,
    z: Vec<f64>,
    templates: Vec<Template>,
}

/// A reference-order kernel template: `36 × (2h+1)²` values for one (offsets, window, σ_map).
#[derive(Debug, Clone)]
struct Template {
    key: (u64, usize, u64),
    values: Vec<f64>,
}

/// The reference's `pi` macro (`getProb_local_mex.cpp`), deliberately truncated.
#[allow(clippy::approx_constant)]
const REFERENCE_PI: f64 = 3.141_592_653_6;

/// Evidence exactly as `getProb_local_mex.cpp` computes it: a per-cell template over the window
/// around the rounded centre (cells w-major, h-minor), dotted with the window's `max(x, 0)` in
/// that order.
fn reference_evidence(cfg: &EStepConfig, node: &NodeSetup, rc: i64, cc: i64, map: &[f32], prior: &mut [f64], cache: &mut Vec<Template>) {
    let hr = node.window as i64;
    let side = (2 * hr + 1) as usize;
    let sigma = cfg.kernel.sigma;
    let key = (node.offsets[0].to_bits(), node.window, sigma.to_bits());
    let t = match cache.iter().position(|t| t.key == key) {
        Some(i) => i,
        None => {
            let var1 = 2.0 * (sigma * sigma);
            let var2 = (2.0 * REFERENCE_PI).sqrt() * sigma;
            let too_far = (sigma * 3.0) * (sigma * 3.0);
            let too_small = (-(3.0f64 * 3.0) / 2.0).exp() / var2;
            let mut values = Vec::with_capacity(CANDIDATES * side * side);
            for iw in 0..NC {
                let pw = node.offsets[iw];
                for ih in 0..NC {
                    let ph = node.offsets[ih];
                    for jw in -hr..=hr {
                        let dw = (pw - jw as f64) * (pw - jw as f64);
                        for jh in -hr..=hr {
                            let d = dw + (ph - jh as f64) * (ph - jh as f64);
                            values.push(if d < too_far { (-d / var1).exp() / var2 } else { too_small });
                        }
                    }
                }
            }
            cache.push(Template { key, values });
            cache.len() - 1
        }
    };
    let (h, w) = (cfg.height as i64, cfg.width as i64);
    let mut window = Vec::with_capacity(side * side);
    for i in cc - hr..=cc + hr {
        for j in rc - hr..=rc + hr {
            window.push(if i < 0 || i >= w || j < 0 || j >= h { 0.0 } else { f64::from(map[(j * w + i) as usize]).max(0.0) });
        }
    }
    let tv = &cache[t].values;
    for (c, out) in prior.iter_mut().enumerate() {
        let row = &tv[c * side * side..(c + 1) * side * side];
        *out = row.iter().zip(&window).fold(0.0, |acc, (k, x)| acc + k * x);
    }
}

/// Candidate coordinates `(h, w)` of a node centred at `c`: `c + o`, or in reference arithmetic
/// `((c − 1) + 1) + o` as the MEX code computes them.
fn candidate_points(cfg: &EStepConfig, node: &NodeSetup, c: [f64; 2]) -> [[f64; NC]; 2] {
    if cfg.reference_arithmetic {
        let base = [(c[0] - 1.0) + 1.0, (c[1] - 1.0) + 1.0];
        [node.offsets.map(|o| base[0] + o), node.offsets.map(|o| base[1] + o)]
    } else {
        [node.offsets.map(|o| c[0] + o), node.offsets.map(|o| c[1] + o)]
    }
}

/// Summed-area table of `max(x, 0)` of one `H × W` map, `(H+1) × (W+1)`.
fn build_sat(map: &[f32], h: usize, w: usize, sat: &mut Vec<f64>) {
    sat.clear();
    sat.resize((h + 1) * (w + 1), 0.0);
    for r in 0..h {
        let mut row = 0.0;
        for c in 0..w {
            row += f64::from(map[r * w + c].max(0.0));
            sat[(r + 1) * (w + 1) + c + 1] = sat[r * (w + 1) + c + 1] + row;
        }
    }
}

fn sat_sum(sat: &[f64], w: usize, r0: usize, r1: usize, c0: usize, c1: usize) -> f64 {
    // inclusive cell ranges [r0, r1] × [c0, c1]
    let s = |r: usize, c: usize| sat[r * (w + 1) + c];
    s(r1 + 1, c1 + 1) - s(r0, c1 + 1) - s(r1 + 1, c0) + s(r0, c0)
}

/// Cells of one axis within the kernel cut-off of each candidate: (cell, d², exp(-d²/2σ²)).
fn axis_cells(
    kernel: &SmoothingKernel,
    base: f64,
    offsets: &[f64; NC],
    lo: i64,
    hi: i64,
    out: &mut Vec<(usize, f64, f64)>,
    start: &mut [usize; NC + 1],
) {
    out.clear();
    let reach = 3.0 * kernel.sigma;
    for (i, o) in offsets.iter().enumerate() {
        start[i] = out.len();
        let p = base + o;
        let a = ((p - reach).ceil() as i64).max(lo);
        let b = ((p + reach).floor() as i64).min(hi);
        for k in a..=b {
            // Distance as in the reference: offset minus the cell's offset from the base.
            let d = o - (k as f64 - base);
            if d * d < kernel.cutoff_sq {
                out.push((k as usize, d * d, kernel.factor(d)));
            }
        }
    }
    start[NC] = out.len();
}

/// Local evidence (`prior`, spec §1.6 step 3) of all nodes' 36 candidates in one image.
///
/// `maps` is `[C, H, W]`; `shifts[v]` is the image-specific mean shift `Δμ_V(I)`; `out` gets
/// `nodes × 36` values, candidate order `i_w · 6 + i_h`.
pub fn evidence(
    cfg: &EStepConfig,
    nodes: &[NodeSetup],
    maps: &[f32],
    shifts: &[[f64; 2]],
    out: &mut [f64],
    scratch: &mut EStepScratch,
) {
    let (h, w, k) = (cfg.height, cfg.width, cfg.nodes_per_filter);
    let kern = &cfg.kernel;
    let peak = kern.peak();
    for (f, map) in maps.chunks_exact(h * w).enumerate() {
        build_sat(map, h, w, &mut scratch.sat);
        for v in f * k..(f + 1) * k {
            let node = &nodes[v];
            let centre = [node.mu[0] + shifts[v][0] - 1.0, node.mu[1] + shifts[v][1] - 1.0];
            let (rc, cc) = (centre[0].round() as i64, centre[1].round() as i64);
            let win = node.window as i64;
            let (r_lo, r_hi) = ((rc - win).max(0), (rc + win).min(h as i64 - 1));
            let (c_lo, c_hi) = ((cc - win).max(0), (cc + win).min(w as i64 - 1));
            let prior = &mut out[v * CANDIDATES..(v + 1) * CANDIDATES];
            if cfg.reference_arithmetic {
                reference_evidence(cfg, node, rc, cc, map, prior, &mut scratch.templates);
                continue;
            }
            if r_lo > r_hi || c_lo > c_hi {
                prior.fill(0.0);
                continue;
            }
            let floor_part =
                kern.floor * sat_sum(&scratch.sat, w, r_lo as usize, r_hi as usize, c_lo as usize, c_hi as usize);
            let (bh, bw) = if cfg.rounded_window_centre { (rc as f64, cc as f64) } else { (centre[0], centre[1]) };
            axis_cells(kern, bh, &node.offsets, r_lo, r_hi, &mut scratch.rows, &mut scratch.row_start);
            axis_cells(kern, bw, &node.offsets, c_lo, c_hi, &mut scratch.cols, &mut scratch.col_start);
            for iw in 0..NC {
                let cols = &scratch.cols[scratch.col_start[iw]..scratch.col_start[iw + 1]];
                for ih in 0..NC {
                    let rows = &scratch.rows[scratch.row_start[ih]..scratch.row_start[ih + 1]];
                    let mut acc = 0.0;
                    for &(r, dr, er) in rows {
                        let line = &map[r * w..(r + 1) * w];
                        let er = er * peak;
                        for &(c, dc, ec) in cols {
                            if dr + dc < kern.cutoff_sq {
                                let x = f64::from(line[c].max(0.0));
                                acc += (er * ec - kern.floor) * x;
                            }
                        }
                    }
                    prior[iw * NC + ih] = floor_part + acc;
                }
            }
        }
    }
}

/// The background weight τ of one image (spec §2.3): `valid_tau · mean_V Σ_c prob_V(c)`.
pub fn background_tau(cfg: &EStepConfig, nodes: &[NodeSetup], lambdas: &[f64]) -> f64 {
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
        if normalize && cfg.reference_arithmetic {
            reference_z(nodes, base, k, lambdas, &scratch.points, tau, &mut scratch.z);
        } else if normalize {
            scratch.z.clear();
            scratch.z.resize(k * CANDIDATES, tau);
            for a in 0..k {
                let pa = scratch.points[a];
                for b in 0..k {
                    let pb = scratch.points[b];
                    let overlaps = (0..2).all(|ax| pa[ax][NC - 1] >= pb[ax][0] && pa[ax][0] <= pb[ax][NC - 1]);
                    if !overlaps {
                        continue;
                    }
                    let sib = &nodes[base + b];
                    let lam = lambdas[base + b];
                    let factors: [[f64; NC]; 2] = std::array::from_fn(|ax| {
                        let centre = sib.mu[ax] + shifts[base + b][ax];
                        sibling_factors(&pa[ax], &pb[ax], sib, centre, cfg.nearest_sibling)
                    });
                    let z = &mut scratch.z[a * CANDIDATES..(a + 1) * CANDIDATES];
                    for iw in 0..NC {
                        let fw = lam * factors[1][iw];
                        if fw == 0.0 {
                            continue;
                        }
                        for ih in 0..NC {
                            z[iw * NC + ih] += fw * factors[0][ih];
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
            let der = n.offsets.map(|o| o / var);
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

/// For each of node a's 6 candidate coordinates on one axis, the 1-D factor of sibling b's prior
/// at that coordinate: 0 outside b's candidate extent, else the nearest candidate's factor
/// (reference) or b's Gaussian at the exact point.
fn sibling_factors(pa: &[f64; NC], pb: &[f64; NC], sib: &NodeSetup, centre: f64, nearest: bool) -> [f64; NC] {
    pa.map(|p| {
        if p < pb[0] || p > pb[NC - 1] {
            return 0.0;
        }
        if nearest {
            // Regular grid: the nearest candidate by scanning 6 values (first minimum wins,
            // as in the reference's strict `<` scan).
            let mut best = 0;
            let mut best_d = f64::INFINITY;
            for (i, q) in pb.iter().enumerate() {
                let d = (p - q) * (p - q);
                if d < best_d {
                    best_d = d;
                    best = i;
                }
            }
            sib.prob_factors[best]
        } else {
            normal_pdf(p - centre, sib.prior_sigma)
        }
    })
}

/// `Z` of every candidate of a filter's nodes as `getOtherProb.cpp` + the MATLAB driver compute
/// it: for each sibling (in order) the prior at its nearest candidate by a full 2-D scan (strict
/// `<`, first minimum wins), 0 outside its candidate box; siblings summed first, then `+ τ`.
fn reference_z(nodes: &[NodeSetup], base: usize, k: usize, lambdas: &[f64], points: &[[[f64; NC]; 2]], tau: f64, z: &mut Vec<f64>) {
    z.clear();
    z.resize(k * CANDIDATES, 0.0);
    for a in 0..k {
        let pa = &points[a];
        for c in 0..CANDIDATES {
            let (ht, wt) = (pa[0][c % NC], pa[1][c / NC]);
            let mut sum = 0.0;
            for b in 0..k {
                let pb = &points[b];
                if ht < pb[0][0] || wt < pb[1][0] || ht > pb[0][NC - 1] || wt > pb[1][NC - 1] {
                    continue;
                }
                let (mut best, mut best_d) = (0, 100_000_000.0);
                for cb in 0..CANDIDATES {
                    let d = (ht - pb[0][cb % NC]) * (ht - pb[0][cb % NC]) + (wt - pb[1][cb / NC]) * (wt - pb[1][cb / NC]);
                    if d < best_d {
                        best_d = d;
                        best = cb;
                    }
                }
                let sib = &nodes[base + b];
                sum += (sib.prob_factors[best / NC] * sib.prob_factors[best % NC]) * lambdas[base + b];
            }
            z[a * CANDIDATES + c] = sum + tau;
        }
    }
}
