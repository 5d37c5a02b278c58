//! E-step tests against direct (slow, by-the-definition) computations and hand values.

use super::*;
use crate::estep::background_tau;
use crate::settings::{normal_pdf, SQRT_2PI};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn cfg(hw: usize, k: usize, rounded: bool, nearest: bool) -> EStepConfig {
    EStepConfig {
        height: hw,
        width: hw,
        nodes_per_filter: k,
        kernel: SmoothingKernel::new(0.025 * hw as f64),
        valid_tau: 0.1,
        rounded_window_centre: rounded,
        nearest_sibling: nearest,
        reference_arithmetic: false,
    }
}

/// Evidence by the definition of spec §1.6 step 3: every window cell, kernel with floor.
fn naive_evidence(cfg: &EStepConfig, node: &NodeSetup, shift: [f64; 2], map: &[f32]) -> Vec<f64> {
    let c = [node.mu[0] + shift[0] - 1.0, node.mu[1] + shift[1] - 1.0];
    let rc = [c[0].round(), c[1].round()];
    let base = if cfg.rounded_window_centre { rc } else { c };
    let win = node.window as i64;
    let mut out = vec![0.0; CANDIDATES];
    for iw in 0..6 {
        for ih in 0..6 {
            let mut s = 0.0;
            for r in rc[0] as i64 - win..=rc[0] as i64 + win {
                for q in rc[1] as i64 - win..=rc[1] as i64 + win {
                    if r < 0 || q < 0 || r >= cfg.height as i64 || q >= cfg.width as i64 {
                        continue;
                    }
                    let dh = node.offsets[ih] - (r as f64 - base[0]);
                    let dw = node.offsets[iw] - (q as f64 - base[1]);
                    let x = f64::from(map[r as usize * cfg.width + q as usize].max(0.0));
                    s += cfg.kernel.at_sq(dh * dh + dw * dw) * x;
                }
            }
            out[iw * 6 + ih] = s;
        }
    }
    out
}

fn random_setup(
    rng: &mut ChaCha8Rng,
    hw: usize,
    k: usize,
    channels: usize,
) -> (Vec<NodeSetup>, Vec<[f64; 2]>, Vec<f64>, Vec<f32>) {
    let mut nodes = Vec::new();
    let mut shifts = Vec::new();
    let mut lambdas = Vec::new();
    for _ in 0..channels * k {
        let sigma = rng.random_range(0.3..0.15 * hw as f64 + 0.5);
        let h = half_range(sigma, hw, 0.3, 3.0).max(1);
        let mu = [rng.random_range(1.0..hw as f64), rng.random_range(1.0..hw as f64)];
        nodes.push(NodeSetup::new(mu, candidate_offsets(h), h, sigma));
        shifts.push([rng.random_range(-1.5..1.5), rng.random_range(-1.5..1.5)]);
        lambdas.push(rng.random_range(0.2..2.0));
    }
    let map = (0..channels * hw * hw).map(|_| rng.random_range(-1.0f32..3.0)).collect();
    (nodes, shifts, lambdas, map)
}

#[test]
fn evidence_equals_the_definition_in_both_centre_modes() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    // Dense maps, and sparse ones (most units ≤ 0, as after a ReLU) on wide maps whose rows
    // span more than one 64-bit word of the positive-unit index.
    for (hw, sparse) in [(14, false), (28, false), (28, true), (70, true)] {
        for (rounded, exact_order) in [(false, false), (true, false), (true, true)] {
            let mut c = cfg(hw, 5, rounded, false);
            c.reference_arithmetic = exact_order;
            let (nodes, shifts, _, mut map) = random_setup(&mut rng, hw, 5, 2);
            if sparse {
                map.iter_mut().for_each(|x| *x -= 2.5);
            }
            let mut out = vec![0.0; nodes.len() * CANDIDATES];
            evidence(&c, &nodes, &map, &shifts, &mut out, &mut EStepScratch::default());
            for (v, node) in nodes.iter().enumerate() {
                let ch = v / 5;
                let want = naive_evidence(&c, node, shifts[v], &map[ch * hw * hw..(ch + 1) * hw * hw]);
                for (a, b) in out[v * CANDIDATES..(v + 1) * CANDIDATES].iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= 1e-10 * b.abs().max(1.0),
                        "hw {hw} rounded {rounded} node {v}: {a} vs {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn evidence_equals_the_definition_for_narrow_and_wide_kernels() {
    // A narrow kernel takes the direct-exponential path of the kernel factors, a wide one the
    // recurrence over many cells.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for sigma in [0.05, 0.2, 2.5] {
        let mut c = cfg(28, 4, false, false);
        c.kernel = SmoothingKernel::new(sigma);
        let (nodes, shifts, _, map) = random_setup(&mut rng, 28, 4, 2);
        let mut out = vec![0.0; nodes.len() * CANDIDATES];
        evidence(&c, &nodes, &map, &shifts, &mut out, &mut EStepScratch::default());
        for (v, node) in nodes.iter().enumerate() {
            let want = naive_evidence(&c, node, shifts[v], &map[(v / 4) * 784..(v / 4 + 1) * 784]);
            for (a, b) in out[v * CANDIDATES..(v + 1) * CANDIDATES].iter().zip(&want) {
                assert!((a - b).abs() <= 1e-10 * b.abs().max(1.0), "σ_map {sigma} node {v}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn evidence_is_bit_identical_for_every_isa() {
    // The AVX-512 and AVX2 Gaussian parts keep all 36 sums in registers and mask whole columns; every
    // sum must still get the portable loop's bits. Dense and sparse maps, narrow kernels (some
    // columns outside the cut-off) and wide ones, both centre modes, windows at the border.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (hw, sparse, sigma) in [(14, false, 0.35), (28, true, 0.05), (28, false, 0.7), (70, true, 2.5)] {
        for rounded in [false, true] {
            let mut c = cfg(hw, 5, rounded, false);
            c.kernel = SmoothingKernel::new(sigma);
            let (nodes, shifts, _, mut map) = random_setup(&mut rng, hw, 5, 3);
            if sparse {
                map.iter_mut().for_each(|x| *x -= 2.0);
            }
            let run = |isa: Isa| {
                let mut out = vec![0.0; nodes.len() * CANDIDATES];
                crate::evidence::evidence_with(isa, &c, &nodes, &map, &shifts, &mut out, &mut EStepScratch::default());
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            let want = run(Isa::Baseline);
            assert!(want.iter().any(|&b| f64::from_bits(b) != 0.0), "hw {hw}: some evidence");
            for isa in Isa::available() {
                assert_eq!(
                    run(isa),
                    want,
                    "hw {hw} σ_map {sigma} rounded {rounded}: {isa:?} differs from the baseline"
                );
            }
        }
    }
}

#[test]
fn evidence_of_a_single_unit_by_hand() {
    // 14×14, node at (7,7) (0-based centre 6,6), h = 2, one unit x = 2 at 0-based (6, 7).
    let c = cfg(14, 1, false, false);
    let node = NodeSetup::new([7.0, 7.0], candidate_offsets(2), 2, 2.1);
    let mut map = vec![0.0f32; 196];
    map[6 * 14 + 7] = 2.0;
    map[0] = 9.0; // outside the window: ignored
    let mut out = vec![0.0; CANDIDATES];
    evidence(&c, &[node], &map, &[[0.0, 0.0]], &mut out, &mut EStepScratch::default());
    // Candidate (ih=2, iw=3): offset (-1/3, +1/3); distance to the unit (0, 1): sqrt(1/9 + 4/9).
    let s: f64 = 0.35;
    let d2: f64 = 1.0 / 9.0 + 4.0 / 9.0;
    let want = 2.0 * (-d2 / (2.0 * s * s)).exp() / ((2.0 * std::f64::consts::PI).sqrt() * s);
    assert!((out[3 * 6 + 2] - want).abs() < 1e-12, "{} vs {want}", out[3 * 6 + 2]);
    // Candidate (0, 0): offset (-5/3, -5/3), beyond 3σ_map = 1.05: the floor · x.
    assert!((out[0] - 2.0 * c.kernel.floor).abs() < 1e-15);
}

#[test]
fn tau_by_hand() {
    let c = cfg(14, 2, false, false);
    let nodes = [
        NodeSetup::new([5.0, 5.0], candidate_offsets(2), 2, 1.0),
        NodeSetup::new([9.0, 9.0], candidate_offsets(1), 1, 0.5),
    ];
    let mass = |o: [f64; 6], s: f64| {
        let g: f64 = o.iter().map(|x| (-x * x / (2.0 * s * s)).exp() / (SQRT_2PI * s)).sum();
        g * g
    };
    let want = 0.1 * (1.0 * mass(candidate_offsets(2), 1.0) + 0.5 * mass(candidate_offsets(1), 0.5)) / 2.0;
    assert!((background_tau(&c, &nodes, &[1.0, 0.5]) - want).abs() < 1e-15);
}

/// Z by the definition of spec §2.3: every sibling's prior at the candidate point.
fn naive_z(c: &EStepConfig, nodes: &[NodeSetup], shifts: &[[f64; 2]], lambdas: &[f64], a: usize, tau: f64) -> Vec<f64> {
    let f = a / c.nodes_per_filter;
    let pos = |v: usize, ih: usize, iw: usize| {
        [nodes[v].mu[0] + shifts[v][0] + nodes[v].offsets[ih], nodes[v].mu[1] + shifts[v][1] + nodes[v].offsets[iw]]
    };
    let mut z = vec![tau; CANDIDATES];
    for iw in 0..6 {
        for ih in 0..6 {
            let p = pos(a, ih, iw);
            for b in f * c.nodes_per_filter..(f + 1) * c.nodes_per_filter {
                let (lo, hi) = (pos(b, 0, 0), pos(b, 5, 5));
                if p[0] < lo[0] || p[1] < lo[1] || p[0] > hi[0] || p[1] > hi[1] {
                    continue;
                }
                let n = &nodes[b];
                let val = if c.nearest_sibling {
                    let mut best = (f64::INFINITY, 0.0);
                    for jw in 0..6 {
                        for jh in 0..6 {
                            let q = pos(b, jh, jw);
                            let d = (p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2);
                            if d < best.0 {
                                best = (d, n.prob_factors[jh] * n.prob_factors[jw]);
                            }
                        }
                    }
                    best.1
                } else {
                    let ctr = [n.mu[0] + shifts[b][0], n.mu[1] + shifts[b][1]];
                    normal_pdf(p[0] - ctr[0], n.prior_sigma) * normal_pdf(p[1] - ctr[1], n.prior_sigma)
                };
                z[iw * 6 + ih] += lambdas[b] * val;
            }
        }
    }
    z
}

#[test]
fn responsibilities_match_the_definition_for_both_sibling_modes() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // Sparse maps leave some windows without a positive unit (evidence 0 everywhere).
    let mut empty_windows = 0;
    for (nearest, exact_order, sparse) in
        [(false, false, false), (true, false, false), (true, true, false), (false, false, true)]
    {
        let k = 6;
        let mut c = cfg(14, k, exact_order, nearest);
        c.reference_arithmetic = exact_order;
        let (mut nodes, shifts, lambdas, mut map) = random_setup(&mut rng, 14, k, 2);
        if sparse {
            map.iter_mut().for_each(|x| *x -= 2.9);
        }
        // Crowd the nodes so that boxes overlap.
        for n in nodes.iter_mut() {
            n.mu = [7.0 + (n.mu[0] - 7.0) * 0.2, 7.0 + (n.mu[1] - 7.0) * 0.2];
        }
        let mut prior = vec![0.0; nodes.len() * CANDIDATES];
        let mut scratch = EStepScratch::default();
        evidence(&c, &nodes, &map, &shifts, &mut prior, &mut scratch);
        let mut stats = vec![NodeImageStats::default(); nodes.len()];
        accumulate(&c, &nodes, &shifts, &lambdas, &prior, true, &mut stats, &mut scratch);
        let tau = background_tau(&c, &nodes, &lambdas);
        empty_windows += prior.chunks(CANDIDATES).filter(|p| p.iter().all(|&x| x == 0.0)).count();
        for (a, st) in stats.iter().enumerate() {
            let z = naive_z(&c, &nodes, &shifts, &lambdas, a, tau);
            let n = &nodes[a];
            let (mut mass, mut g, mut score, mut spread, mut best) = (0.0, [0.0; 2], 0.0, 0.0, (f64::MIN, 0));
            for iw in 0..6 {
                for ih in 0..6 {
                    let cc = iw * 6 + ih;
                    let prob = (n.prob_factors[iw] * n.prob_factors[ih]) * lambdas[a];
                    let pr = prior[a * CANDIDATES + cc];
                    let m = prob / z[cc].max(1e-7) * pr;
                    mass += m;
                    g[0] += m * n.offsets[ih] / n.prior_sigma.powi(2);
                    g[1] += m * n.offsets[iw] / n.prior_sigma.powi(2);
                    score += prob * pr;
                    spread += prob * pr * ((ih as f64 - 2.5).powi(2) + (iw as f64 - 2.5).powi(2));
                    if prob * pr > best.0 {
                        best = (prob * pr, cc);
                    }
                }
            }
            let close = |x: f64, y: f64| (x - y).abs() <= 1e-10 * y.abs().max(1e-12);
            assert!(close(st.mass, mass), "nearest {nearest} node {a}: mass {} vs {mass}", st.mass);
            assert!(close(st.gradient[0], g[0]) && close(st.gradient[1], g[1]));
            assert!(close(st.score, score) && close(st.spread, spread));
            assert_eq!(st.best_score, best.0);
            let ctr = [n.mu[0] + shifts[a][0], n.mu[1] + shifts[a][1]];
            assert_eq!(st.best_position, [ctr[0] + n.offsets[best.1 % 6], ctr[1] + n.offsets[best.1 / 6]]);
        }
    }
    assert!(empty_windows > 0 && empty_windows < 12, "{empty_windows} empty windows");
}

#[test]
fn accumulate_is_bit_identical_for_every_isa() {
    // Crowded siblings (many overlapping boxes: the vectorized sibling factors), sparse maps
    // (empty windows: the shortcut), both sibling modes, with and without normalization.
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for (nearest, sparse) in [(false, false), (false, true), (true, false)] {
        let k = 8;
        let c = cfg(28, k, false, nearest);
        let (mut nodes, shifts, lambdas, mut map) = random_setup(&mut rng, 28, k, 3);
        if sparse {
            map.iter_mut().for_each(|x| *x -= 2.8);
        }
        for n in nodes.iter_mut() {
            n.mu = [14.0 + (n.mu[0] - 14.0) * 0.3, 14.0 + (n.mu[1] - 14.0) * 0.3];
        }
        let mut prior = vec![0.0; nodes.len() * CANDIDATES];
        evidence(&c, &nodes, &map, &shifts, &mut prior, &mut EStepScratch::default());
        for normalize in [true, false] {
            let run = |isa: Isa| {
                let mut stats = vec![NodeImageStats::default(); nodes.len()];
                let mut scratch = EStepScratch::default();
                let (cfg, nodes, shifts, lambdas, prior) = (&c, &nodes[..], &shifts[..], &lambdas[..], &prior[..]);
                let job = crate::estep::Accumulate { cfg, nodes, shifts, lambdas, prior, normalize };
                job.run_with(isa, &mut stats, &mut scratch);
                let bits = |s: &NodeImageStats| {
                    [
                        s.mass,
                        s.gradient[0],
                        s.gradient[1],
                        s.score,
                        s.spread,
                        s.best_position[0],
                        s.best_position[1],
                        s.best_score,
                    ]
                    .map(f64::to_bits)
                };
                stats.iter().map(bits).collect::<Vec<_>>()
            };
            let want = run(Isa::Baseline);
            assert!(want.iter().any(|b| f64::from_bits(b[0]) > 0.0) || !normalize, "some mass");
            for isa in Isa::available() {
                assert_eq!(run(isa), want, "nearest {nearest} sparse {sparse} normalize {normalize}: {isa:?} differs");
            }
        }
    }
}

#[test]
fn lone_node_responsibility_is_prob_over_prob_plus_tau() {
    let c = cfg(14, 1, false, false);
    let node = NodeSetup::new([7.0, 7.0], candidate_offsets(2), 2, 2.1);
    let map = vec![1.0f32; 196];
    let mut prior = vec![0.0; CANDIDATES];
    let mut sc = EStepScratch::default();
    evidence(&c, &[node], &map, &[[0.0; 2]], &mut prior, &mut sc);
    let mut st = [NodeImageStats::default()];
    accumulate(&c, &[node], &[[0.0; 2]], &[1.0], &prior, true, &mut st, &mut sc);
    let tau = 0.1 * node.prob_mass();
    let want: f64 = (0..36)
        .map(|cc| {
            let p = node.prob_factors[cc % 6] * node.prob_factors[cc / 6];
            p / (p + tau) * prior[cc]
        })
        .sum();
    assert!((st[0].mass - want).abs() < 1e-12);
    // A uniform map is symmetric: no pull.
    assert!(st[0].gradient[0].abs() < 1e-12 && st[0].gradient[1].abs() < 1e-12);
}
