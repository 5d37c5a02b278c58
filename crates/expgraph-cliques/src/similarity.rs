//! Co-movement similarity and parent selection (spec §2.2 step 2).

use expgraph_graph::{Parent, TapGeometry};
use rayon::prelude::*;

use crate::LayerRecords;
use expgraph_disentangle::{fast_exp as exp, Isa};

/// How displacements are put into a common frame before they are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplacementFrame {
    /// Displacement × stride (image pixels, no offset), spec §7 #2 (b).
    Pixels,
    /// The reference's `x2p_` applied to a displacement: `c + (d − 1) · s` (adds a
    /// layer-dependent constant), spec §2.2 quirk.
    ReferenceAffine,
}

impl DisplacementFrame {
    fn map(self, g: &TapGeometry, d: f64) -> f64 {
        match self {
            Self::Pixels => d * g.stride,
            Self::ReferenceAffine => g.first_centre + (d - 1.0) * g.stride,
        }
    }
}

/// Per-node displacement from its mean position over images, in a frame: `[node][image][axis]`
/// flattened as `node * N + image`.
pub fn displacements(rec: &LayerRecords<'_>, g: &TapGeometry, frame: DisplacementFrame) -> Vec<[f64; 2]> {
    let all: Vec<u32> = (0..rec.num_nodes as u32).collect();
    displacements_of(rec, g, frame, &all)
}

/// [`displacements`] of the listed nodes only, `[rank][image]` flattened as `rank * N + image`
/// (e.g. the candidate pool's `pool_disp` for [`select_parents`], without the rest of the layer).
pub fn displacements_of(
    rec: &LayerRecords<'_>,
    g: &TapGeometry,
    frame: DisplacementFrame,
    nodes: &[u32],
) -> Vec<[f64; 2]> {
    let (n, p) = (rec.num_images, rec.num_nodes);
    let mut out = vec![[0.0; 2]; n * nodes.len()];
    for (r, &v) in nodes.iter().enumerate() {
        let v = v as usize;
        let mut m = [0.0; 2];
        for i in 0..n {
            let q = rec.positions[i * p + v];
            m[0] += f64::from(q[0]);
            m[1] += f64::from(q[1]);
        }
        m = [m[0] / n as f64, m[1] / n as f64];
        for i in 0..n {
            let q = rec.positions[i * p + v];
            out[r * n + i] = [frame.map(g, f64::from(q[0]) - m[0]), frame.map(g, f64::from(q[1]) - m[1])];
        }
    }
    out
}

/// For every child node, the `top_n` pool members with the largest co-movement similarity
/// `sim(V, V') = Σ_I exp(−‖e_V(I) − d_V'(I)‖² / (2 m_V)) · S*_V(I)`, `m_V` the mean squared
/// distance over the pool and images (adaptive bandwidth). Ties keep pool order (stable).
///
/// Every similarity is first screened in `f32`; only members whose screened value, widened by
/// its proven error bound, can reach the `top_n`-th largest are then computed exactly (15.1 to
/// 17.4 of the 600 on average, for `top_n` = 15, in a 300-image run), so the result is the
/// exhaustive computation's bit for bit.
///
/// `child_disp` / `pool_disp`: displacements from [`displacements`] (`pool_disp` indexed by pool
/// rank: `rank * N + image`); `child_best` is `S*` as `[image][node]`.
pub fn select_parents(
    child_disp: &[[f64; 2]],
    child_best: &[f32],
    num_child: usize,
    num_images: usize,
    pool: &[u32],
    pool_disp: &[[f64; 2]],
    top_n: usize,
) -> Vec<Vec<Parent>> {
    select_parents_of(child_disp, child_best, num_child, num_images, pool, pool_disp, top_n, 0..num_child)
}

/// [`select_parents`] for the child nodes `children` only (in that order): each child's parents
/// are computed exactly as [`select_parents`] computes them, so disjoint ranges (e.g. one per
/// member of a learning team) concatenate to its result bit for bit.
///
/// `child_disp` holds the displacements of those children only, `(v − children.start) · N +
/// image` (from [`displacements_of`] over the range), so a member never computes the rest;
/// `child_best` is the whole layer's `S*`, `[image][node]`.
#[allow(clippy::too_many_arguments)]
pub fn select_parents_of(
    child_disp: &[[f64; 2]],
    child_best: &[f32],
    num_child: usize,
    num_images: usize,
    pool: &[u32],
    pool_disp: &[[f64; 2]],
    top_n: usize,
    children: std::ops::Range<usize>,
) -> Vec<Vec<Parent>> {
    let n = num_images;
    let m = pool.len();
    let children = children.start.min(num_child)..children.end.min(num_child);
    if m == 0 {
        return vec![Vec::new(); children.len()];
    }
    // Bandwidth without storing the m × n squared distances (spec §2.2: mean over pool and
    // images): Σ_r Σ_i ‖e_i − d_ri‖² = m Σ_i ‖e_i‖² − 2 Σ_i e_i · (Σ_r d_ri) + Σ_r Σ_i ‖d_ri‖².
    let mut pool_sum = vec![[0.0f64; 2]; n];
    let mut pool_sq = 0.0;
    for r in 0..m {
        for (i, d) in pool_disp[r * n..(r + 1) * n].iter().enumerate() {
            pool_sum[i][0] += d[0];
            pool_sum[i][1] += d[1];
            pool_sq += d[0] * d[0] + d[1] * d[1];
        }
    }
    // Structure of arrays, so the per-image loops below vectorize (with the inlined `exp`).
    let isa = Isa::detect();
    let pool_h: Vec<f64> = pool_disp.chunks_exact(n.max(1)).flat_map(|p| pad(p.iter().map(|d| d[0]))).collect();
    let pool_w: Vec<f64> = pool_disp.chunks_exact(n.max(1)).flat_map(|p| pad(p.iter().map(|d| d[1]))).collect();
    let pool_hw = [pool_h.as_slice(), pool_w.as_slice()];
    let (pool_h32, pool_w32): (Vec<f32>, Vec<f32>) =
        pool_h.iter().zip(&pool_w).map(|(&h, &w)| (h as f32, w as f32)).unzip();
    let pool_max = pool_h.iter().chain(&pool_w).fold(0.0f64, |a, x| a.max(x.abs()));
    let blocks: Vec<Vec<Vec<Parent>>> = (0..children.len().div_ceil(CHILD_BLOCK))
        .into_par_iter()
        .map(|b| {
            let first = children.start + b * CHILD_BLOCK;
            let kids: Vec<Child> = (first..(first + CHILD_BLOCK).min(children.end))
                .map(|v| {
                    let local = v - children.start;
                    let e = &child_disp[local * n..(local + 1) * n];
                    let (mut own, mut cross) = (0.0, 0.0);
                    for i in 0..n {
                        own += e[i][0] * e[i][0] + e[i][1] * e[i][1];
                        cross += e[i][0] * pool_sum[i][0] + e[i][1] * pool_sum[i][1];
                    }
                    let total = m as f64 * own - 2.0 * cross + pool_sq;
                    let bw = total / (m * n) as f64;
                    let inv = if bw > 0.0 { -1.0 / (2.0 * bw) } else { 0.0 };
                    Child::new(e, (0..n).map(|i| f64::from(child_best[i * num_child + v])), inv)
                })
                .collect();
            // Screen every pool member cheaply, then compute exactly only those that may be
            // among the `top_n` (see `survivors`).
            let mut approx = vec![0.0f32; kids.len() * m];
            screen_similarities(isa, &kids, [&pool_h32, &pool_w32], n, &mut approx);
            kids.iter()
                .zip(approx.chunks_exact(m))
                .map(|(kid, approx)| {
                    let members = survivors(approx, ScreenError::of(kid, n, pool_max), top_n);
                    top_parents(exact_similarities(isa, kid, pool_hw, n, &members), pool, top_n)
                })
                .collect()
        })
        .collect();
    blocks.into_iter().flatten().collect()
}

/// Children screened together: each pool member's displacements are read once per block (and
/// stay in L1 while the block's children use them).
const CHILD_BLOCK: usize = 4;

/// One child node's inputs to the similarity, structure of arrays.
struct Child {
    eh: Vec<f64>,
    ew: Vec<f64>,
    weight: Vec<f64>,
    /// `−1 / (2 m_V)` (0 when the bandwidth is 0).
    inv: f64,
    /// For the screen: `eh`, `ew`, `weight` (exact: the weights are `f32` scores) and `inv` in
    /// `f32`, and the largest `|eh|`, `|ew|`.
    eh32: Vec<f32>,
    ew32: Vec<f32>,
    weight32: Vec<f32>,
    inv32: f32,
    max_abs: f64,
}

impl Child {
    /// A child of displacements `e` (`[image]`), weights `S*` (`[image]`) and `inv`.
    fn new(e: &[[f64; 2]], weight: impl ExactSizeIterator<Item = f64>, inv: f64) -> Self {
        let (eh, ew, weight) = (pad(e.iter().map(|p| p[0])), pad(e.iter().map(|p| p[1])), pad(weight));
        let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect();
        let max_abs = eh.iter().chain(&ew).fold(0.0f64, |a, x| a.max(x.abs()));
        Self {
            eh32: to32(&eh),
            ew32: to32(&ew),
            weight32: to32(&weight),
            inv32: inv as f32,
            max_abs,
            eh,
            ew,
            weight,
            inv,
        }
    }
}

/// How far a child's exact similarities can lie from its screened ones: for every pool member,
/// `exact ∈ [(approx − abs) / (1 + rel), (approx + abs) / (1 − rel)]`.
#[derive(Debug, Clone, Copy)]
struct ScreenError {
    rel: f64,
    abs: f64,
}

impl ScreenError {
    /// The bounds for `kid` over `n` images against a pool whose displacements are at most
    /// `pool_max` in magnitude, or `None` where they do not hold (a negative or non-finite
    /// weight, a positive bandwidth factor, displacements so large that the screen's `f32`
    /// exponent may err by more than 0.01, too many images for `f32` sums): then every member is
    /// computed exactly.
    ///
    /// With `u = 2^-24`, `M = max |e| + pool_max` (so `|e_i|`, `|d_i|`, `|e_i − d_i|` ≤ `M`): the
    /// screen's inputs are rounded to `f32` and its differences, squares, sum and product with
    /// `inv` are rounded at most once each (once or not at all with fused multiply-adds), so its exponent `X` differs from the true
    /// `x = ‖e_i − d_i‖² · inv` by at most `dx = 8.2·u·|inv|·M² + 4.01·u·|x|`, `|x| ≤ 88` where
    /// a term is not negligible. A screened term `fast_exp_f32(X) · w` is then within the
    /// exponential's bound, plus `1.01·dx`, plus `u` (the product) of the true `w · e^x`.
    /// Where `X < −87` it is 0 and the true term is at most `w · 2e-38`; an `f32` product that
    /// underflows errs by at most `2^-150`: together at most `abs`. Summing `k = padded(n)`
    /// non-negative `f32` terms adds at most `γ = k·u / (1 − k·u)` relative. The exact path's
    /// exponent is within 6 roundings of `|x| ≤ 708`, its exponential within 4 ulp and its sum
    /// within `k` ulp. `rel` is twice the sum of these first-order terms.
    fn of(kid: &Child, n: usize, pool_max: f64) -> Option<Self> {
        let total: f64 = kid.weight.iter().sum();
        let valid = kid.inv <= 0.0 && total.is_finite() && kid.weight.iter().all(|w| *w >= 0.0);
        let (k, u) = (padded(n) as f64, f64::from(f32::EPSILON) / 2.0);
        let big = kid.max_abs + pool_max;
        let dx = 8.2 * u * kid.inv.abs() * big * big + 4.01 * u * 88.0;
        if !valid || dx.is_nan() || dx > 0.01 || k * u > 0.01 {
            return None;
        }
        let term = expgraph_disentangle::FAST_EXP_F32_MAX_REL_ERROR + 1.01 * dx + u;
        let gamma = k * u / (1.0 - k * u);
        let exact = (k + 4.0 + 6.0 * 708.0) * f64::EPSILON;
        Some(Self { rel: 2.0 * (term + gamma + exact), abs: (total + k) * 1e-37 })
    }

    fn lower(self, approx: f32) -> f64 {
        (f64::from(approx) - self.abs) / (1.0 + self.rel)
    }

    fn upper(self, approx: f32) -> f64 {
        (f64::from(approx) + self.abs) / (1.0 - self.rel)
    }
}

/// The pool ranks that may be among a child's `top_n` similarities, ascending: all but those
/// whose similarity is certainly below `top_n` others', i.e. whose upper bound lies below the
/// `top_n`-th largest lower bound. A member left out ranks below at least `top_n` members, so
/// [`top_parents`] of the rest is [`top_parents`] of all. Without bounds (`err` is `None`, or
/// a screened value is not finite) every member is kept.
fn survivors(approx: &[f32], err: Option<ScreenError>, top_n: usize) -> Vec<usize> {
    let all = (0..approx.len()).collect();
    let Some(err) = err else { return all };
    if top_n == 0 || top_n >= approx.len() || !approx.iter().all(|a| a.is_finite()) {
        return all;
    }
    let mut lower: Vec<f64> = approx.iter().map(|&a| err.lower(a)).collect();
    let (_, &mut threshold, _) = lower.select_nth_unstable_by(top_n - 1, |a, b| b.total_cmp(a));
    (0..approx.len()).filter(|&r| err.upper(approx[r]) >= threshold).collect()
}

/// The `top_n` pool members of the largest similarity, descending, ties by pool rank, from
/// `(similarity, pool rank)` pairs: the first `top_n` of a full sort by (similarity descending,
/// rank), a total order, so selecting them first and sorting only those gives the same list.
fn top_parents(mut ranked: Vec<(f64, usize)>, pool: &[u32], top_n: usize) -> Vec<Parent> {
    let order = |a: &(f64, usize), b: &(f64, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if top_n < ranked.len() {
        if top_n > 0 {
            ranked.select_nth_unstable_by(top_n - 1, order);
        }
        ranked.truncate(top_n);
    }
    ranked.sort_unstable_by(order);
    ranked.into_iter().map(|(s, r)| Parent { node: pool[r], similarity: s as f32 }).collect()
}

/// `approx[c · m + r]`: the screened similarity of child `c` of `kids` to pool member `r`
/// (`m` = pool size, `pool` = the members' `[h, w]` displacements in `f32`,
/// `r · padded(n) + image`): in `f32` throughout, the exponential
/// [`fast_exp_f32`](expgraph_disentangle::fast_exp_f32) or its AVX2 copy; within
/// [`ScreenError`] of the exact value. Where the CPU has AVX2 (`isa` not `Baseline`) and FMA, 8
/// lanes per register with fused multiply-adds (which round less, so the bounds hold).
fn screen_similarities(isa: Isa, kids: &[Child], pool: [&[f32]; 2], n: usize, approx: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Baseline && std::is_x86_feature_detected!("fma") {
        // SAFETY: `isa` comes from `Isa::detect`/`Isa::available`, so the CPU has AVX2; FMA is
        // checked above.
        unsafe { screen_similarities_avx2(kids, pool, n, approx) };
        return;
    }
    let _ = isa;
    screen_similarities_portable(kids, pool, n, approx);
}

/// [`screen_similarities`] with AVX2 and FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn screen_similarities_avx2(kids: &[Child], pool: [&[f32]; 2], n: usize, approx: &mut [f32]) {
    use expgraph_disentangle::fast_exp_f32_avx2 as exp8;
    use std::arch::x86_64::*;
    if n == 0 || kids.is_empty() {
        approx.fill(0.0);
        return;
    }
    let np = padded(n);
    let m = pool[0].len() / np;
    for r in 0..m {
        let (dh, dw) = (&pool[0][r * np..(r + 1) * np], &pool[1][r * np..(r + 1) * np]);
        for (c, kid) in kids.iter().enumerate() {
            let (eh, ew, w) = (&kid.eh32[..np], &kid.ew32[..np], &kid.weight32[..np]);
            let inv = _mm256_set1_ps(kid.inv32);
            let mut sum = _mm256_setzero_ps();
            // 8 images at a time (np is a multiple of 8; one accumulator, so that the
            // exponential's constants stay in registers); the padding's terms are 0.
            for i in (0..np).step_by(8) {
                // SAFETY: i + 8 ≤ np, the length of every slice read.
                let (a, d, wi) = unsafe {
                    (
                        _mm256_sub_ps(_mm256_loadu_ps(eh.as_ptr().add(i)), _mm256_loadu_ps(dh.as_ptr().add(i))),
                        _mm256_sub_ps(_mm256_loadu_ps(ew.as_ptr().add(i)), _mm256_loadu_ps(dw.as_ptr().add(i))),
                        _mm256_loadu_ps(w.as_ptr().add(i)),
                    )
                };
                let x = _mm256_mul_ps(_mm256_fmadd_ps(a, a, _mm256_mul_ps(d, d)), inv);
                sum = _mm256_fmadd_ps(exp8(x), wi, sum);
            }
            let mut l = [0.0f32; 8];
            // SAFETY: `l` holds 8 values.
            unsafe { _mm256_storeu_ps(l.as_mut_ptr(), sum) };
            approx[c * m + r] = l.iter().sum();
        }
    }
}

#[inline(always)]
fn screen_similarities_portable(kids: &[Child], pool: [&[f32]; 2], n: usize, approx: &mut [f32]) {
    if n == 0 || kids.is_empty() {
        approx.fill(0.0);
        return;
    }
    let np = padded(n);
    let m = pool[0].len() / np;
    for r in 0..m {
        let (dh, dw) = (&pool[0][r * np..(r + 1) * np], &pool[1][r * np..(r + 1) * np]);
        for (c, kid) in kids.iter().enumerate() {
            let (eh, ew, w, inv) = (&kid.eh32[..np], &kid.ew32[..np], &kid.weight32[..np], kid.inv32);
            // Blocks of PAD images, so the vectorized loop has no remainder; the padding's terms
            // are 0 (weight 0, exponent 0).
            let mut lanes = [0.0f32; PAD];
            for b in (0..np).step_by(PAD) {
                let block = |x: &[f32]| -> [f32; PAD] { x[b..b + PAD].try_into().expect("PAD values") };
                let (eh, ew, dh, dw, w) = (block(eh), block(ew), block(dh), block(dw), block(w));
                for j in 0..PAD {
                    let (a, d) = (eh[j] - dh[j], ew[j] - dw[j]);
                    lanes[j] += expgraph_disentangle::fast_exp_f32((a * a + d * d) * inv) * w[j];
                }
            }
            approx[c * m + r] = lanes.iter().sum();
        }
    }
}

/// `(similarity, rank)` of `kid` to each pool member of rank in `members` (in that order), with
/// the widest code `isa` allows; bit-identical for every ISA.
fn exact_similarities(isa: Isa, kid: &Child, pool: [&[f64]; 2], n: usize, members: &[usize]) -> Vec<(f64, usize)> {
    let mut sims = vec![0.0; members.len()];
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: `isa` comes from `Isa::detect`: the CPU has AVX-512 F.
        unsafe { exact_similarities_avx512(kid, pool, n, members, &mut sims) };
        return sims.into_iter().zip(members.iter().copied()).collect();
    }
    exact_similarities_auto(isa, kid, pool, n, members, &mut sims);
    sims.into_iter().zip(members.iter().copied()).collect()
}

expgraph_disentangle::isa_dispatch! {
    /// [`exact_similarities`], auto-vectorized for `isa`.
    fn exact_similarities_auto(kid: &Child, pool: [&[f64]; 2], n: usize, members: &[usize], sims: &mut [f64]) => exact_similarities_portable
}

/// [`exact_similarities`] with explicit 8-lane AVX-512 vectors: lane `j` of the running sum is
/// the partial sum of images `i ≡ j mod 8`, exactly [`fixed_order_sum`]'s, and every term is
/// computed by the same IEEE operations as [`similarity_terms`] (no fused multiply-adds).
///
/// # Safety
/// The CPU must support AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exact_similarities_avx512(kid: &Child, pool: [&[f64]; 2], n: usize, members: &[usize], sims: &mut [f64]) {
    use std::arch::x86_64::*;
    if n == 0 {
        sims.fill(0.0);
        return;
    }
    let np = padded(n);
    let full = n - n % 8;
    let (eh, ew, w) = (&kid.eh[..n], &kid.ew[..n], &kid.weight[..n]);
    let inv = _mm512_set1_pd(kid.inv);
    for (sim, &r) in sims.iter_mut().zip(members) {
        let (dh, dw) = (&pool[0][r * np..r * np + n], &pool[1][r * np..r * np + n]);
        let mut s = _mm512_setzero_pd();
        for i in (0..full).step_by(8) {
            // SAFETY: i + 8 ≤ full ≤ n, the length of every slice read.
            let (a, b, wi) = unsafe {
                (
                    _mm512_sub_pd(_mm512_loadu_pd(eh.as_ptr().add(i)), _mm512_loadu_pd(dh.as_ptr().add(i))),
                    _mm512_sub_pd(_mm512_loadu_pd(ew.as_ptr().add(i)), _mm512_loadu_pd(dw.as_ptr().add(i))),
                    _mm512_loadu_pd(w.as_ptr().add(i)),
                )
            };
            let x = _mm512_mul_pd(_mm512_add_pd(_mm512_mul_pd(a, a), _mm512_mul_pd(b, b)), inv);
            // SAFETY: AVX-512 F is enabled in this function.
            let e = unsafe { expgraph_disentangle::fast_exp_avx512(x) };
            s = _mm512_add_pd(s, _mm512_mul_pd(e, wi));
        }
        let mut l = [0.0f64; 8];
        // SAFETY: `l` holds 8 values.
        unsafe { _mm512_storeu_pd(l.as_mut_ptr(), s) };
        let total = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
        *sim = (full..n).fold(total, |acc, i| {
            let (a, b) = (eh[i] - dh[i], ew[i] - dw[i]);
            acc + exp((a * a + b * b) * kid.inv) * w[i]
        });
    }
}

#[inline(always)]
fn exact_similarities_portable(kid: &Child, pool: [&[f64]; 2], n: usize, members: &[usize], sims: &mut [f64]) {
    if n == 0 {
        sims.fill(0.0);
        return;
    }
    let np = padded(n);
    let mut terms = vec![0.0; np];
    for (sim, &r) in sims.iter_mut().zip(members) {
        let pool_r = [&pool[0][r * np..(r + 1) * np], &pool[1][r * np..(r + 1) * np]];
        similarity_terms([&kid.eh, &kid.ew], pool_r, &kid.weight, kid.inv, &mut terms);
        *sim = fixed_order_sum(&terms[..n]);
    }
}

/// Per-image arrays are zero-padded to a multiple of this, so the vectorized term loop has no
/// scalar remainder.
const PAD: usize = 16;

/// `n` rounded up to a multiple of [`PAD`].
fn padded(n: usize) -> usize {
    n.next_multiple_of(PAD)
}

/// `x` followed by zeros up to [`padded`] length.
fn pad(x: impl ExactSizeIterator<Item = f64>) -> Vec<f64> {
    let n = x.len();
    let mut v: Vec<f64> = x.collect();
    v.resize(padded(n), 0.0);
    v
}

/// `terms[i] = exp(‖e_i − d_i‖² · inv) · w_i` for every image `i` (`e`, `d` as `[h, w]` axes;
/// all slices of one padded length, the padding's terms are of no meaning). No fused
/// multiply-adds are involved, so every vector lane does the same IEEE operations as scalar code:
/// the terms are bit-identical whatever the ISA it is compiled for.
#[inline(always)]
fn similarity_terms(e: [&[f64]; 2], d: [&[f64]; 2], w: &[f64], inv: f64, terms: &mut [f64]) {
    let n = terms.len() / PAD * PAD;
    let (eh, ew, dh, dw, w) = (&e[0][..n], &e[1][..n], &d[0][..n], &d[1][..n], &w[..n]);
    for (i, t) in terms[..n].iter_mut().enumerate() {
        let (a, b) = (eh[i] - dh[i], ew[i] - dw[i]);
        *t = exp((a * a + b * b) * inv) * w[i];
    }
}

#[inline(always)]
fn fixed_order_sum(x: &[f64]) -> f64 {
    let mut s = [0.0; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        let c: &[f64; 8] = c.try_into().expect("8 lanes");
        for j in 0..8 {
            s[j] += c[j];
        }
    }
    let total = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    rest.iter().fold(total, |a, b| a + b)
}

#[cfg(test)]
mod vector_tests {
    use super::*;

    /// A small deterministic generator (no `rand` dependency in this crate).
    fn lcg(state: &mut u64) -> f64 {
        *state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (*state >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The similarity as first written: all terms, then [`fixed_order_sum`].
    fn plain(e: &[[f64; 2]], d: &[[f64; 2]], w: &[f64], inv: f64) -> f64 {
        let terms: Vec<f64> = (0..w.len())
            .map(|i| {
                let (a, b) = (e[i][0] - d[i][0], e[i][1] - d[i][1]);
                exp((a * a + b * b) * inv) * w[i]
            })
            .collect();
        fixed_order_sum(&terms)
    }

    fn random_disp(s: &mut u64, len: usize, half: f64) -> Vec<[f64; 2]> {
        (0..len).map(|_| [lcg(s) * 2.0 * half - half, lcg(s) * 2.0 * half - half]).collect()
    }

    /// Pool displacements as [`select_parents_of`] lays them out: `[h, w]`, `r · padded(n) + i`.
    fn pool_arrays(pool: &[[f64; 2]], n: usize) -> [Vec<f64>; 2] {
        [0, 1].map(|a| pool.chunks_exact(n.max(1)).flat_map(|p| pad(p.iter().map(|d| d[a]))).collect())
    }

    /// [`screen_similarities`] and [`ScreenError::of`] given the pool as [`select_parents_of`]
    /// gives them.
    fn screen(isa: Isa, kids: &[Child], pool: &[[f64; 2]], m: usize, n: usize) -> (Vec<f32>, Vec<Option<ScreenError>>) {
        let pool32 = pool_arrays(pool, n).map(|a| a.iter().map(|&x| x as f32).collect::<Vec<f32>>());
        let mut approx = vec![f32::NAN; kids.len() * m];
        screen_similarities(isa, kids, [&pool32[0], &pool32[1]], n, &mut approx);
        let pool_max = pool.iter().flatten().fold(0.0f64, |a, x| a.max(x.abs()));
        (approx, kids.iter().map(|k| ScreenError::of(k, n, pool_max)).collect())
    }

    #[test]
    fn every_isa_gives_the_plain_sums_bit_for_bit_and_screens_within_the_bounds() {
        let mut s = 3u64;
        for n in [0usize, 1, 5, 7, 8, 9, 15, 16, 17, 31, 40, 63, 80, 101] {
            let m = 7;
            let kids_disp: Vec<Vec<[f64; 2]>> = (0..5).map(|_| random_disp(&mut s, n, 20.0)).collect();
            let weights: Vec<Vec<f64>> = (0..5)
                .map(|_| {
                    (0..n)
                        .map(|_| if lcg(&mut s) < 0.2 { 0.0 } else { f64::from((lcg(&mut s) * 3.0) as f32) })
                        .collect()
                })
                .collect();
            let pool = random_disp(&mut s, m * n, 30.0);
            let invs = [-0.003, -0.5, -40.0, 0.0, -1e-9];
            let kids: Vec<Child> =
                (0..5).map(|c| Child::new(&kids_disp[c], weights[c].iter().copied(), invs[c])).collect();
            let [ph, pw] = pool_arrays(&pool, n);
            let want: Vec<Vec<f64>> = (0..5)
                .map(|c| {
                    (0..m).map(|r| plain(&kids_disp[c], &pool[r * n..(r + 1) * n], &weights[c], invs[c])).collect()
                })
                .collect();
            // Every member, and a few out of order.
            let some = [4usize, 0, 6, 2];
            for isa in Isa::available() {
                let (approx, errs) = screen(isa, &kids, &pool, m, n);
                for (c, kid) in kids.iter().enumerate() {
                    let all: Vec<usize> = (0..m).collect();
                    let got = exact_similarities(isa, kid, [&ph, &pw], n, &all);
                    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    let got_sims: Vec<f64> = got.iter().map(|g| g.0).collect();
                    assert_eq!(bits(&got_sims), bits(&want[c]), "n = {n}, child {c}, {isa:?}");
                    assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), all);
                    let got = exact_similarities(isa, kid, [&ph, &pw], n, &some);
                    for (g, &r) in got.iter().zip(&some) {
                        assert_eq!((g.0.to_bits(), g.1), (want[c][r].to_bits(), r));
                    }
                    // Child 2 (inv = −40) is too steep for the screen's f32 exponent.
                    let Some(err) = errs[c] else {
                        assert!(c == 2 && n > 0, "n = {n}, child {c}: no bounds");
                        continue;
                    };
                    // Gentle children (|inv| · M² ≤ 7) are screened to 1e-4; steeper ones looser.
                    assert!(err.rel < if c == 1 { 0.03 } else { 1e-4 }, "child {c}: {err:?}");
                    for r in 0..m {
                        let (a, x) = (approx[c * m + r], want[c][r]);
                        assert!(err.lower(a) <= x && x <= err.upper(a), "n = {n}, child {c}, member {r}: {a} vs {x}");
                    }
                }
            }
        }
    }

    /// The top `top_n` of all members' plain similarities, by a full stable sort.
    fn brute_force(e: &[[f64; 2]], w: &[f64], inv: f64, pool: &[[f64; 2]], top_n: usize) -> Vec<(u32, u32)> {
        let n = w.len();
        let mut all: Vec<(f64, usize)> =
            (0..pool.len() / n).map(|r| (plain(e, &pool[r * n..(r + 1) * n], w, inv), r)).collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        all.into_iter().take(top_n).map(|(x, r)| (r as u32, (x as f32).to_bits())).collect()
    }

    #[test]
    fn screening_keeps_the_exact_top_n_even_among_near_ties_and_prunes_the_rest() {
        let mut s = 5u64;
        let (n, top_n) = (53, 15);
        let (mut kept, mut total) = (0, 0);
        for round in 0..40 {
            let e = random_disp(&mut s, n, 10.0);
            let w: Vec<f64> =
                (0..n).map(|_| if lcg(&mut s) < 0.3 { 0.0 } else { f64::from(lcg(&mut s) as f32) }).collect();
            // 60 members near the child (co-moving), 60 far, and near-copies of the near ones:
            // exact copies (ties) and copies moved by up to 5e-6 px (similarities within ~1e-7, the
            // screen's resolution).
            let mut pool = Vec::new();
            for r in 0..120 {
                let spread = if r < 60 { 2.0 } else { 25.0 };
                pool.extend(
                    e.iter().map(|p| [p[0] + (lcg(&mut s) - 0.5) * spread, p[1] + (lcg(&mut s) - 0.5) * spread]),
                );
            }
            for r in 0..40 {
                let shift = if r % 2 == 0 { 0.0 } else { 1e-5 * (lcg(&mut s) - 0.5) };
                let src: Vec<[f64; 2]> = pool[(r % 20) * n..(r % 20 + 1) * n].to_vec();
                pool.extend(src.iter().map(|p| [p[0] + shift, p[1] - shift]));
            }
            let m = pool.len() / n;
            let ids: Vec<u32> = (0..m as u32).collect();
            let inv = [-0.02, -0.1, -1.0, 0.0][round % 4];
            let kid = Child::new(&e, w.iter().copied(), inv);
            let [ph, pw] = pool_arrays(&pool, n);
            let want = brute_force(&e, &w, inv, &pool, top_n);
            for isa in Isa::available() {
                let (approx, errs) = screen(isa, std::slice::from_ref(&kid), &pool, m, n);
                let members = survivors(&approx, errs[0], top_n);
                let got: Vec<(u32, u32)> =
                    top_parents(exact_similarities(isa, &kid, [&ph, &pw], n, &members), &ids, top_n)
                        .iter()
                        .map(|p| (p.node, p.similarity.to_bits()))
                        .collect();
                assert_eq!(got, want, "round {round}, {isa:?}");
                kept += members.len();
                total += m;
            }
        }
        // The screen is worth its cost: most members are never computed exactly.
        assert!(kept * 3 < total, "{kept} of {total} members computed exactly");
    }

    #[test]
    fn without_bounds_every_member_survives() {
        let approx = [1.0f32, 5.0, 3.0, 2.0];
        assert_eq!(survivors(&approx, None, 1), vec![0, 1, 2, 3]);
        let err = ScreenError { rel: 1e-6, abs: 0.0 };
        assert_eq!(survivors(&approx, Some(err), 1), vec![1]);
        assert_eq!(survivors(&approx, Some(err), 2), vec![1, 2]);
        assert_eq!(survivors(&approx, Some(err), 4), vec![0, 1, 2, 3]);
        assert_eq!(survivors(&[1.0, f32::NAN, 3.0], Some(err), 1), vec![0, 1, 2]);
        let e = [[0.0; 2]; 3];
        assert!(ScreenError::of(&Child::new(&e, [1.0, -1.0, 0.0].into_iter(), -1.0), 3, 1.0).is_none());
        assert!(ScreenError::of(&Child::new(&e, [1.0, f64::INFINITY, 0.0].into_iter(), -1.0), 3, 1.0).is_none());
        assert!(ScreenError::of(&Child::new(&e, [1.0, 1.0, 0.0].into_iter(), 1.0), 3, 1.0).is_none());
        assert!(ScreenError::of(&Child::new(&e, [1.0, 1.0, 0.0].into_iter(), -1.0), 3, 1.0).is_some());
        // Too steep for the f32 exponent: |inv| · M² = 1e6.
        assert!(ScreenError::of(&Child::new(&e, [1.0, 1.0, 0.0].into_iter(), -1.0), 3, 1e3).is_none());
    }

    #[test]
    fn top_parents_is_the_head_of_the_full_stable_sort() {
        let mut s = 11u64;
        let pool: Vec<u32> = (0..50).map(|i| 1000 + i).collect();
        for round in 0..200 {
            // Many ties (values from a small set), sometimes NaN.
            let sims: Vec<f64> = (0..50)
                .map(|_| {
                    let x = (lcg(&mut s) * 6.0).floor() / 4.0;
                    if round % 7 == 0 && lcg(&mut s) < 0.05 {
                        f64::NAN
                    } else {
                        x
                    }
                })
                .collect();
            for top_n in [0, 1, 3, 15, 49, 50, 60] {
                let mut full: Vec<(f64, usize)> = sims.iter().copied().zip(0..).collect();
                full.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                full.truncate(top_n);
                let want: Vec<(u32, u32)> = full.iter().map(|&(x, r)| (pool[r], (x as f32).to_bits())).collect();
                let ranked = sims.iter().copied().zip(0..).collect();
                let got: Vec<(u32, u32)> =
                    top_parents(ranked, &pool, top_n).iter().map(|p| (p.node, p.similarity.to_bits())).collect();
                assert_eq!(got, want, "top_n = {top_n}");
            }
        }
    }
}
