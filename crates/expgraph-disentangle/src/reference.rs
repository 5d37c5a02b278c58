//! The reference code's own arithmetic (`getProb_local_mex.cpp`, `getOtherProb.cpp`), kept for
//! reference-compat fidelity runs only (spec §7, `reference_arithmetic`): per-cell kernel
//! templates and the 2-D nearest-candidate sibling scan, in the reference's floating-point order,
//! so that near-ties break the same way.

use crate::estep::{EStepConfig, NodeSetup};
use crate::settings::{CANDIDATES, CANDIDATES_PER_AXIS};

const NC: usize = CANDIDATES_PER_AXIS;

/// A reference-order kernel template: `36 × (2h+1)²` values for one (offsets, window, σ_map).
#[derive(Debug, Clone)]
pub(crate) struct Template {
    key: (u64, usize, u64),
    values: Vec<f64>,
}

/// The reference's `pi` macro (`getProb_local_mex.cpp`), deliberately truncated.
#[allow(clippy::approx_constant)]
const REFERENCE_PI: f64 = 3.141_592_653_6;

/// Evidence exactly as `getProb_local_mex.cpp` computes it: a per-cell template over the window
/// around the rounded centre (cells w-major, h-minor), dotted with the window's `max(x, 0)` in
/// that order.
pub(crate) fn reference_evidence(
    cfg: &EStepConfig,
    node: &NodeSetup,
    rc: i64,
    cc: i64,
    map: &[f32],
    prior: &mut [f64],
    cache: &mut Vec<Template>,
) {
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
            window.push(if i < 0 || i >= w || j < 0 || j >= h {
                0.0
            } else {
                f64::from(map[(j * w + i) as usize]).max(0.0)
            });
        }
    }
    let tv = &cache[t].values;
    for (c, out) in prior.iter_mut().enumerate() {
        let row = &tv[c * side * side..(c + 1) * side * side];
        *out = row.iter().zip(&window).fold(0.0, |acc, (k, x)| acc + k * x);
    }
}

/// `Z` of every candidate of a filter's nodes as `getOtherProb.cpp` + the MATLAB driver compute
/// it: for each sibling (in order) the prior at its nearest candidate by a full 2-D scan (strict
/// `<`, first minimum wins), 0 outside its candidate box; siblings summed first, then `+ τ`.
pub(crate) fn reference_z(
    nodes: &[NodeSetup],
    base: usize,
    k: usize,
    lambdas: &[f64],
    points: &[[[f64; NC]; 2]],
    tau: f64,
    z: &mut Vec<f64>,
) {
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
                    let d =
                        (ht - pb[0][cb % NC]) * (ht - pb[0][cb % NC]) + (wt - pb[1][cb / NC]) * (wt - pb[1][cb / NC]);
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
