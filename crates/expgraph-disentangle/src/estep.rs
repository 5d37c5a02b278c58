//! The E-step of one image (spec §1.6, §2.3): the node templates, mixture normalization over
//! each filter's nodes plus the background τ, and per-node statistics. The local evidence is in
//! `evidence.rs`.

use std::ops::Range;

use crate::evidence::{AxisCells, MapIndex};
use crate::fast_exp::fast_exp;
use crate::isa::Isa;
#[cfg(target_arch = "x86_64")]
use crate::isa::{store_candidates, Six, CANDIDATE_LANES};
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
    /// `offset_i / σ²`: the derivatives of the prior's log at the candidates, weighting the
    /// gradient in [`node_stats`] (image-independent, so computed once here).
    derivatives: [f64; NC],
}

impl NodeSetup {
    /// A node template; `prior_sigma` must be > 0.
    pub fn new(mu: [f64; 2], offsets: [f64; NC], window: usize, prior_sigma: f64) -> Self {
        let prob_factors = offsets.map(|o| normal_pdf(o, prior_sigma));
        let prior_inv = 1.0 / (2.0 * prior_sigma * prior_sigma);
        let prior_norm = 1.0 / (SQRT_2PI * prior_sigma);
        let var = prior_sigma * prior_sigma;
        let derivatives = offsets.map(|o| o / var);
        Self { mu, offsets, window, prior_sigma, prob_factors, prior_inv, prior_norm, derivatives }
    }

    /// The 1-D prior factor `g(d; prior_sigma)` at offset `d` from the centre, with the
    /// vectorizable [`fast_exp`] (the sibling factors of the mixture normalization).
    #[inline(always)]
    fn prior_factor(&self, d: f64) -> f64 {
        self.prior_norm * fast_exp(-d * d * self.prior_inv)
    }

    /// [`Self::prior_factor`] of `p − centre` in every lane: lane for lane the same operations,
    /// so the same bits.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and DQ.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512dq,avx512vl")]
    unsafe fn prior_factors_avx512(&self, p: std::arch::x86_64::__m512d, centre: f64) -> std::arch::x86_64::__m512d {
        use std::arch::x86_64::*;
        let d = _mm512_sub_pd(p, _mm512_set1_pd(centre));
        // `-d` flips the sign bit, as Rust's negation does.
        let x = _mm512_mul_pd(_mm512_mul_pd(_mm512_xor_pd(d, _mm512_set1_pd(-0.0)), d), _mm512_set1_pd(self.prior_inv));
        // SAFETY: AVX-512 F, as the caller guarantees.
        _mm512_mul_pd(_mm512_set1_pd(self.prior_norm), unsafe { crate::fast_exp_avx512(x) })
    }

    /// [`Self::prior_factors_avx512`] in AVX2 registers.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    fn prior_factors_avx2(&self, p: Six, centre: f64) -> Six {
        let d = p.sub(Six::splat(centre));
        Six::splat(self.prior_norm).mul(d.neg().mul(d).mul(Six::splat(self.prior_inv)).exp())
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
    let job = Accumulate { cfg, nodes, shifts, lambdas, prior, normalize };
    job.run_with(Isa::detect(), out, scratch)
}

/// The inputs of one [`accumulate`] call.
#[derive(Clone, Copy)]
pub(crate) struct Accumulate<'a> {
    pub(crate) cfg: &'a EStepConfig,
    pub(crate) nodes: &'a [NodeSetup],
    pub(crate) shifts: &'a [[f64; 2]],
    pub(crate) lambdas: &'a [f64],
    pub(crate) prior: &'a [f64],
    pub(crate) normalize: bool,
}

impl Accumulate<'_> {
    /// [`accumulate`] with the vector ISA given (the same bits for every ISA; tests compare
    /// them).
    pub(crate) fn run_with(&self, isa: Isa, out: &mut [NodeImageStats], scratch: &mut EStepScratch) {
        #[cfg(target_arch = "x86_64")]
        match isa {
            Isa::Avx512 => {
                /// [`Accumulate::run`] compiled for AVX-512.
                #[target_feature(enable = "avx2,avx512f,avx512dq,avx512vl")]
                fn avx512(job: &Accumulate, out: &mut [NodeImageStats], scratch: &mut EStepScratch) {
                    job.run::<{ Isa::Avx512 as u8 }>(out, scratch)
                }
                // SAFETY: `isa` comes from `Isa::detect`/`Isa::available`: the CPU has AVX-512
                // F/DQ/VL.
                return unsafe { avx512(self, out, scratch) };
            }
            Isa::Avx2 => {
                /// [`Accumulate::run`] compiled for AVX2.
                #[target_feature(enable = "avx2")]
                fn avx2(job: &Accumulate, out: &mut [NodeImageStats], scratch: &mut EStepScratch) {
                    job.run::<{ Isa::Avx2 as u8 }>(out, scratch)
                }
                // SAFETY: `isa` comes from `Isa::detect`/`Isa::available`: the CPU has AVX2.
                return unsafe { avx2(self, out, scratch) };
            }
            Isa::Baseline => {}
        }
        let _ = isa;
        self.run::<{ Isa::Baseline as u8 }>(out, scratch)
    }

    /// The body of [`accumulate`]; `ISA` (an [`Isa`] as `u8`): the caller is compiled for that
    /// instruction set, and the sibling factors, normalizers and statistics use its vectors.
    #[inline(always)]
    fn run<const ISA: u8>(&self, out: &mut [NodeImageStats], scratch: &mut EStepScratch) {
        const AVX512: u8 = Isa::Avx512 as u8;
        const AVX2: u8 = Isa::Avx2 as u8;
        let Accumulate { cfg, nodes, shifts, lambdas, prior, normalize } = *self;
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
                    let z: &mut [f64; CANDIDATES] =
                        (&mut scratch.z[a * CANDIDATES..(a + 1) * CANDIDATES]).try_into().expect("36 candidates");
                    let siblings = Siblings { cfg, nodes, shifts, lambdas, base, a, points: &scratch.points };
                    #[cfg(target_arch = "x86_64")]
                    match ISA {
                        // SAFETY: the caller runs on a CPU with AVX-512 F/DQ/VL.
                        AVX512 => unsafe { siblings.add_avx512(&scratch.overlap, z) },
                        // SAFETY: the caller runs on a CPU with AVX2.
                        AVX2 => unsafe { siblings.add_avx2(&scratch.overlap, z) },
                        _ => siblings.add(&scratch.overlap, z),
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    siblings.add(&scratch.overlap, z);
                }
            }
            for (a, st) in stats.iter_mut().enumerate() {
                let v = base + a;
                let p: &[f64; CANDIDATES] = prior[v * CANDIDATES..(v + 1) * CANDIDATES].try_into().expect("36");
                let z = normalize.then(|| {
                    let z: &[f64; CANDIDATES] = scratch.z[a * CANDIDATES..(a + 1) * CANDIDATES].try_into().expect("36");
                    z
                });
                let pts = &scratch.points[a];
                let empty = !cfg.reference_arithmetic && p.iter().all(|p| p.to_bits() == 0);
                *st = match empty.then(|| empty_node_stats(&nodes[v], lambdas[v], pts)).flatten() {
                    Some(s) => s,
                    // SAFETY: the caller runs on a CPU with AVX-512 F/DQ/VL.
                    #[cfg(target_arch = "x86_64")]
                    None if ISA == AVX512 => unsafe { node_stats_avx512(&nodes[v], lambdas[v], p, z, pts) },
                    // SAFETY: the caller runs on a CPU with AVX2.
                    #[cfg(target_arch = "x86_64")]
                    None if ISA == AVX2 => unsafe { node_stats_avx2(&nodes[v], lambdas[v], p, z, pts) },
                    None => node_stats(&nodes[v], lambdas[v], p, z, pts),
                };
            }
        }
    }
}

/// The siblings of node `a` of the filter starting at node `base`, whose priors add to `a`'s
/// mixture normalizers `Z` (spec §2.3).
struct Siblings<'a> {
    cfg: &'a EStepConfig,
    nodes: &'a [NodeSetup],
    shifts: &'a [[f64; 2]],
    lambdas: &'a [f64],
    base: usize,
    a: usize,
    /// Candidate coordinates of the filter's nodes.
    points: &'a [[[f64; NC]; 2]],
}

impl Siblings<'_> {
    /// The 1-D factors `[f_h, f_w]` of sibling `b`'s prior at `a`'s candidates (only the
    /// entries in `hs`, `ws` are used).
    #[inline(always)]
    fn factors(&self, b: usize, hs: Range<usize>, ws: Range<usize>) -> [[f64; NC]; 2] {
        let sib = &self.nodes[self.base + b];
        if self.a == b {
            // A node's own prior at its own candidates: its template's factors.
            return [sib.prob_factors; 2];
        }
        let (pa, pb) = (&self.points[self.a], &self.points[b]);
        let centre = self.centre(b);
        let nearest = self.cfg.nearest_sibling;
        [
            sibling_factors(&pa[0], hs, &pb[0], sib, centre[0], nearest),
            sibling_factors(&pa[1], ws, &pb[1], sib, centre[1], nearest),
        ]
    }

    /// Sibling `b`'s centre in this image.
    #[inline(always)]
    fn centre(&self, b: usize) -> [f64; 2] {
        let (sib, shift) = (&self.nodes[self.base + b], self.shifts[self.base + b]);
        [sib.mu[0] + shift[0], sib.mu[1] + shift[1]]
    }

    /// Adds `λ_b · f_w · f_h` of every sibling `b` in the bit set `overlap` (in increasing `b`)
    /// to `z`, candidate `iw · 6 + ih`, on the sub-rectangle `hs × ws` of `a`'s candidates inside
    /// `b`'s candidate box. (The loop is written out: through a closure it compiled to 8 % more
    /// instructions, `cargo xtask work-gate`.)
    #[inline(always)]
    fn add(&self, overlap: &[(usize, u64)], z: &mut [f64; CANDIDATES]) {
        let pa = &self.points[self.a];
        for &(j, mut word) in overlap {
            while word != 0 {
                let b = j * 64 + word.trailing_zeros() as usize;
                word &= word - 1;
                let pb = &self.points[b];
                let (hs, ws) = (inside(&pa[0], pb[0][0], pb[0][NC - 1]), inside(&pa[1], pb[1][0], pb[1][NC - 1]));
                if hs.is_empty() || ws.is_empty() {
                    continue;
                }
                let [fh, fw] = self.factors(b, hs.clone(), ws.clone());
                let lam = self.lambdas[self.base + b];
                for iw in ws {
                    let fw = lam * fw[iw];
                    for ih in hs.clone() {
                        z[iw * NC + ih] += fw * fh[ih];
                    }
                }
            }
        }
    }

    /// [`Self::add`] with `z` held in six 512-bit registers (one per candidate column `iw`,
    /// lanes `ih`) over all siblings, and each sibling's Gaussian factors as one
    /// [`fast_exp_avx512`](crate::fast_exp_avx512) per axis. Each lane performs the same
    /// operations in the same order (`λ · f_w`, times `f_h`, added in increasing `b`); lanes
    /// outside `hs × ws` are masked, so the bits are those of [`Self::add`]. The sub-rectangle's
    /// sides are lane masks: on a sorted axis, the candidates `≥` the box's low end and `≤` its
    /// high end are exactly [`inside`]'s range.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, DQ and VL.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512dq,avx512vl")]
    unsafe fn add_avx512(&self, overlap: &[(usize, u64)], z: &mut [f64; CANDIDATES]) {
        use std::arch::x86_64::*;
        let load = |f: &[f64; NC]| {
            // SAFETY: `f` holds NC = 6 values; the mask reads lanes 0..6 only.
            unsafe { _mm512_maskz_loadu_pd(CANDIDATE_LANES, f.as_ptr()) }
        };
        let mut acc: [__m512d; NC] = std::array::from_fn(|iw| load(z[iw * NC..(iw + 1) * NC].try_into().expect("6")));
        let pa = &self.points[self.a];
        let (pa_h, pa_w) = (load(&pa[0]), load(&pa[1]));
        let within = |p: __m512d, lo: f64, hi: f64| {
            _mm512_cmp_pd_mask::<_CMP_GE_OQ>(p, _mm512_set1_pd(lo))
                & _mm512_cmp_pd_mask::<_CMP_LE_OQ>(p, _mm512_set1_pd(hi))
                & CANDIDATE_LANES
        };
        for &(j, mut word) in overlap {
            while word != 0 {
                let b = j * 64 + word.trailing_zeros() as usize;
                word &= word - 1;
                let pb = &self.points[b];
                let (hm, wm) = (within(pa_h, pb[0][0], pb[0][NC - 1]), within(pa_w, pb[1][0], pb[1][NC - 1]));
                if hm == 0 || wm == 0 {
                    continue;
                }
                let sib = &self.nodes[self.base + b];
                let [fh, fw] = if self.a == b {
                    [load(&sib.prob_factors); 2]
                } else if self.cfg.nearest_sibling {
                    let (hs, ws) = (inside(&pa[0], pb[0][0], pb[0][NC - 1]), inside(&pa[1], pb[1][0], pb[1][NC - 1]));
                    self.factors(b, hs, ws).map(|f| load(&f))
                } else {
                    let centre = self.centre(b);
                    // SAFETY (both): AVX-512, as the caller guarantees.
                    unsafe { [sib.prior_factors_avx512(pa_h, centre[0]), sib.prior_factors_avx512(pa_w, centre[1])] }
                };
                let lam_fw = _mm512_mul_pd(_mm512_set1_pd(self.lambdas[self.base + b]), fw);
                for (iw, acc) in acc.iter_mut().enumerate() {
                    if wm & (1 << iw) != 0 {
                        let w = _mm512_permutexvar_pd(_mm512_set1_epi64(iw as i64), lam_fw);
                        *acc = _mm512_mask_add_pd(*acc, hm, *acc, _mm512_mul_pd(w, fh));
                    }
                }
            }
        }
        for (column, acc) in z.chunks_exact_mut(NC).zip(acc) {
            // SAFETY: AVX-512, as the caller guarantees.
            unsafe { store_candidates(column.try_into().expect("6 candidates per column"), CANDIDATE_LANES, acc) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Siblings<'_> {
    /// [`Self::add_avx512`] in AVX2 registers: `z` in six [`Six`] over all siblings, a blend
    /// standing for the masked add. Bit-identical to [`Self::add`].
    #[inline]
    #[target_feature(enable = "avx2")]
    fn add_avx2(&self, overlap: &[(usize, u64)], z: &mut [f64; CANDIDATES]) {
        let mut acc: [Six; NC] = std::array::from_fn(|iw| Six::load(&z[iw * NC..]));
        let pa = &self.points[self.a];
        let (pa_h, pa_w) = (Six::load(&pa[0]), Six::load(&pa[1]));
        for &(j, mut word) in overlap {
            while word != 0 {
                let b = j * 64 + word.trailing_zeros() as usize;
                word &= word - 1;
                let pb = &self.points[b];
                let hm = pa_h.within(pb[0][0], pb[0][NC - 1]);
                let wm = pa_w.within(pb[1][0], pb[1][NC - 1]).bits();
                if hm.bits() == 0 || wm == 0 {
                    continue;
                }
                let sib = &self.nodes[self.base + b];
                let [fh, fw] = if self.a == b {
                    [Six::load(&sib.prob_factors); 2]
                } else if self.cfg.nearest_sibling {
                    let (hs, ws) = (inside(&pa[0], pb[0][0], pb[0][NC - 1]), inside(&pa[1], pb[1][0], pb[1][NC - 1]));
                    self.factors(b, hs, ws).map(|f| Six::load(&f))
                } else {
                    let centre = self.centre(b);
                    [sib.prior_factors_avx2(pa_h, centre[0]), sib.prior_factors_avx2(pa_w, centre[1])]
                };
                let lam_fw = Six::splat(self.lambdas[self.base + b]).mul(fw).lanes();
                for (iw, acc) in acc.iter_mut().enumerate() {
                    if wm & (1 << iw) != 0 {
                        *acc = acc.add_where(hm, Six::splat(lam_fw[iw]).mul(fh));
                    }
                }
            }
        }
        for (column, acc) in z.chunks_exact_mut(NC).zip(acc) {
            acc.store(column);
        }
    }
}

/// The spread weight `(i_h − 2.5)² + (i_w − 2.5)²` of candidate `i_w · 6 + i_h` (grid indices
/// 0..6; every value exact), computed once for [`node_stats`] and its vector copies.
const SPREAD_WEIGHTS: [f64; CANDIDATES] = {
    let mut w = [0.0; CANDIDATES];
    let mut c = 0;
    while c < CANDIDATES {
        let (di, dj) = ((c % NC) as f64 - 2.5, (c / NC) as f64 - 2.5);
        w[c] = di * di + dj * dj;
        c += 1;
    }
    w
};

/// The statistics of one node from its evidence `p` at its candidates `pts` and, when
/// normalizing, the mixture normalizers `z` of its candidates.
#[inline(always)]
fn node_stats(
    n: &NodeSetup,
    lam: f64,
    p: &[f64; CANDIDATES],
    z: Option<&[f64; CANDIDATES]>,
    pts: &[[f64; NC]; 2],
) -> NodeImageStats {
    let der = &n.derivatives;
    let mut s = NodeImageStats { best_score: f64::NEG_INFINITY, ..Default::default() };
    let mut best = 0;
    for iw in 0..NC {
        for ih in 0..NC {
            let c = iw * NC + ih;
            let prob = (n.prob_factors[iw] * n.prob_factors[ih]) * lam;
            let pp = prob * p[c];
            if let Some(z) = z {
                let mass = prob / z[c].max(1e-7) * p[c];
                s.mass += mass;
                s.gradient[0] += mass * der[ih];
                s.gradient[1] += mass * der[iw];
            }
            s.score += pp;
            s.spread += pp * SPREAD_WEIGHTS[c];
            if pp > s.best_score {
                s.best_score = pp;
                best = c;
            }
        }
    }
    finish_stats(s, best, pts)
}

/// [`node_stats`] with the terms of the six candidates of a column `iw` computed in the lanes
/// of one register (the 36 divisions as six), then added in [`node_stats`]'s order: each lane
/// performs the same operations (`max` returns 1e-7 for a NaN `z`, as `f64::max` does), so the
/// bits are the same.
///
/// # Safety
/// The CPU must have AVX-512 F, DQ and VL.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512dq,avx512vl")]
unsafe fn node_stats_avx512(
    n: &NodeSetup,
    lam: f64,
    p: &[f64; CANDIDATES],
    z: Option<&[f64; CANDIDATES]>,
    pts: &[[f64; NC]; 2],
) -> NodeImageStats {
    use std::arch::x86_64::*;
    /// One register's lanes, stored whole (so that reading a lane back is forwarded).
    #[repr(align(64))]
    struct Lanes([f64; 8]);
    let store = |v: __m512d| {
        let mut l = Lanes([0.0; 8]);
        // SAFETY: `l` holds 8 values, 64-byte aligned.
        unsafe { _mm512_store_pd(l.0.as_mut_ptr(), v) };
        l
    };
    let load = |f: &[f64]| {
        // SAFETY: every caller passes 6 values; the mask reads lanes 0..6 only.
        unsafe { _mm512_maskz_loadu_pd(CANDIDATE_LANES, f[..NC].as_ptr()) }
    };
    let der = &n.derivatives;
    let (fh, der_h, lam_v) = (load(&n.prob_factors), load(der), _mm512_set1_pd(lam));
    let mut s = NodeImageStats { best_score: f64::NEG_INFINITY, ..Default::default() };
    let mut best = 0;
    for iw in 0..NC {
        let prob = _mm512_mul_pd(_mm512_mul_pd(_mm512_set1_pd(n.prob_factors[iw]), fh), lam_v);
        let pv = load(&p[iw * NC..]);
        let pp = _mm512_mul_pd(prob, pv);
        let spread = _mm512_mul_pd(pp, load(&SPREAD_WEIGHTS[iw * NC..]));
        let terms = z.map(|z| {
            let zv = _mm512_max_pd(load(&z[iw * NC..]), _mm512_set1_pd(1e-7));
            let mass = _mm512_mul_pd(_mm512_div_pd(prob, zv), pv);
            [store(mass).0, store(_mm512_mul_pd(mass, der_h)).0, store(_mm512_mul_pd(mass, _mm512_set1_pd(der[iw]))).0]
        });
        add_column(&mut s, &mut best, iw, &store(pp).0, &store(spread).0, terms.as_ref());
    }
    finish_stats(s, best, pts)
}

/// [`node_stats_avx512`] in AVX2 registers ([`Six`]): the same bits.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
fn node_stats_avx2(
    n: &NodeSetup,
    lam: f64,
    p: &[f64; CANDIDATES],
    z: Option<&[f64; CANDIDATES]>,
    pts: &[[f64; NC]; 2],
) -> NodeImageStats {
    let der = &n.derivatives;
    let (fh, der_h, lam_v) = (Six::load(&n.prob_factors), Six::load(der), Six::splat(lam));
    let mut s = NodeImageStats { best_score: f64::NEG_INFINITY, ..Default::default() };
    let mut best = 0;
    for iw in 0..NC {
        let prob = Six::splat(n.prob_factors[iw]).mul(fh).mul(lam_v);
        let pv = Six::load(&p[iw * NC..]);
        let pp = prob.mul(pv);
        let spread = pp.mul(Six::load(&SPREAD_WEIGHTS[iw * NC..]));
        let terms = z.map(|z| {
            let mass = prob.div(Six::load(&z[iw * NC..]).max(Six::splat(1e-7))).mul(pv);
            [mass.lanes(), mass.mul(der_h).lanes(), mass.mul(Six::splat(der[iw])).lanes()]
        });
        add_column(&mut s, &mut best, iw, &pp.lanes(), &spread.lanes(), terms.as_ref());
    }
    finish_stats(s, best, pts)
}

/// Adds candidate column `iw`'s terms to `s` in [`node_stats`]'s order, from the lanes of the
/// vector copies: `pp`, `spread` and, when normalizing, `[mass, mass · der_h, mass · der_w]`;
/// `best` follows the largest `pp`.
#[inline(always)]
fn add_column(
    s: &mut NodeImageStats,
    best: &mut usize,
    iw: usize,
    pp: &[f64; 8],
    spread: &[f64; 8],
    terms: Option<&[[f64; 8]; 3]>,
) {
    for ih in 0..NC {
        if let Some([mass, g0, g1]) = terms {
            s.mass += mass[ih];
            s.gradient[0] += g0[ih];
            s.gradient[1] += g1[ih];
        }
        let pp = pp[ih];
        s.score += pp;
        s.spread += spread[ih];
        if pp > s.best_score {
            s.best_score = pp;
            *best = iw * NC + ih;
        }
    }
}

/// The end of [`node_stats`] and its vector copies: a score of `−∞` (no candidate won) is 0, and
/// the best candidate's position.
#[inline(always)]
fn finish_stats(mut s: NodeImageStats, best: usize, pts: &[[f64; NC]; 2]) -> NodeImageStats {
    if !s.best_score.is_finite() {
        s.best_score = 0.0;
    }
    s.best_position = [pts[0][best % NC], pts[1][best / NC]];
    s
}

/// [`node_stats`] of a node whose evidence is `+0.0` at every candidate (no positive unit in its
/// window, the common case in sparse maps), without its 36 divisions, where that is provably the
/// same: every `prob ≥ +0.0`, `prob / max(z, 1e-7)` and derivative finite, so every product with
/// `p = +0.0` is `±0.0`, every sum stays `+0.0`, and the first candidate is the best (`+0.0 > −∞`,
/// no later `+0.0` is greater). `None` otherwise (negative, NaN or overflowing parameters).
#[inline(always)]
fn empty_node_stats(n: &NodeSetup, lam: f64, pts: &[[f64; NC]; 2]) -> Option<NodeImageStats> {
    // (Σ g)² ≥ g_i · g_j: a bound on every prob; z ≥ 1e-7 in the division. With λ and every
    // g of positive sign, every prob and product is +0.0 or positive (no −0.0 best score).
    let positive = lam.is_sign_positive() && n.prob_factors.iter().all(|g| g.is_sign_positive());
    let bounded = positive && n.prob_mass() * lam * 1e7 < 1e300;
    let der_finite = n.derivatives.iter().all(|d| d.is_finite());
    (bounded && der_finite).then(|| NodeImageStats { best_position: [pts[0][0], pts[1][0]], ..Default::default() })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{candidate_offsets, half_range};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn bits(s: &NodeImageStats) -> [u64; 8] {
        let f = [s.mass, s.gradient[0], s.gradient[1], s.score, s.spread, s.best_position[0], s.best_position[1]];
        let mut out = [0; 8];
        for (o, v) in out.iter_mut().zip(f.iter().chain([&s.best_score])) {
            *o = v.to_bits();
        }
        out
    }

    #[test]
    fn empty_node_shortcut_is_bit_identical_to_the_full_statistics() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let zero = [0.0; CANDIDATES];
        let mut shortcuts = 0;
        for case in 0..400 {
            let sigma = rng.random_range(0.05..6.0);
            let h = half_range(sigma, 28, 0.3, 3.0).max(1);
            let n = NodeSetup::new([rng.random_range(1.0..28.0), 14.0], candidate_offsets(h), h, sigma);
            // Ordinary λ, zero, a huge one and NaN (the last two must take the full path).
            let lam = match case % 8 {
                0 => 0.0,
                1 => 1e300,
                2 => f64::NAN,
                _ => rng.random_range(0.01..5.0),
            };
            let z: [f64; CANDIDATES] = std::array::from_fn(|_| rng.random_range(0.0..3.0));
            let c = [rng.random_range(1.0..28.0), rng.random_range(1.0..28.0)];
            let pts = [arr(|i| c[0] + n.offsets[i]), arr(|i| c[1] + n.offsets[i])];
            let Some(short) = empty_node_stats(&n, lam, &pts) else {
                assert!(lam.is_nan() || lam >= 1e200, "λ = {lam}: the shortcut was refused");
                continue;
            };
            shortcuts += 1;
            for z in [Some(&z), None] {
                assert_eq!(bits(&short), bits(&node_stats(&n, lam, &zero, z, &pts)), "σ {sigma} λ {lam}");
            }
        }
        assert_eq!(shortcuts, 300, "every ordinary λ takes the shortcut");
    }
}
