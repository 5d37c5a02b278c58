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
    // Structure of arrays, so the per-image loop below vectorizes (with the inlined `exp`).
    let isa = Isa::detect();
    let pool_h: Vec<f64> = pool_disp.chunks_exact(n.max(1)).flat_map(|p| pad(p.iter().map(|d| d[0]))).collect();
    let pool_w: Vec<f64> = pool_disp.chunks_exact(n.max(1)).flat_map(|p| pad(p.iter().map(|d| d[1]))).collect();
    let blocks: Vec<Vec<Vec<Parent>>> = (0..children.len().div_ceil(CHILD_BLOCK))
        .into_par_iter()
        .map(|b| {
            let first = children.start + b * CHILD_BLOCK;
            let kids: Vec<Child> = (first..(first + CHILD_BLOCK).min(children.end))
                .map(|v| {
                    let local = v - children.start;
                    let e = &child_disp[local * n..(local + 1) * n];
                    let weight = pad((0..n).map(|i| f64::from(child_best[i * num_child + v])));
                    let (mut own, mut cross) = (0.0, 0.0);
                    for i in 0..n {
                        own += e[i][0] * e[i][0] + e[i][1] * e[i][1];
                        cross += e[i][0] * pool_sum[i][0] + e[i][1] * pool_sum[i][1];
                    }
                    let total = m as f64 * own - 2.0 * cross + pool_sq;
                    let bw = total / (m * n) as f64;
                    let inv = if bw > 0.0 { -1.0 / (2.0 * bw) } else { 0.0 };
                    let (eh, ew) = (pad(e.iter().map(|p| p[0])), pad(e.iter().map(|p| p[1])));
                    Child { eh, ew, weight, inv }
                })
                .collect();
            let mut sims = vec![0.0; kids.len() * m];
            block_similarities(isa, &kids, [&pool_h, &pool_w], n, &mut sims);
            sims.chunks_exact(m.max(1)).take(kids.len()).map(|s| top_parents(s, pool, top_n)).collect()
        })
        .collect();
    blocks.into_iter().flatten().collect()
}

/// Children whose similarities are computed together: each pool member's displacements are
/// read once per block (and stay in L1 while the block's children use them).
const CHILD_BLOCK: usize = 4;

/// One child node's inputs to the similarity, structure of arrays.
struct Child {
    eh: Vec<f64>,
    ew: Vec<f64>,
    weight: Vec<f64>,
    /// `−1 / (2 m_V)` (0 when the bandwidth is 0).
    inv: f64,
}

/// The `top_n` pool members of the largest similarity, descending, ties by pool rank: the first
/// `top_n` of a full sort by (similarity descending, rank), a total order, so selecting them
/// first and sorting only those gives the same list.
fn top_parents(sims: &[f64], pool: &[u32], top_n: usize) -> Vec<Parent> {
    let mut ranked: Vec<(f64, usize)> = sims.iter().copied().zip(0..).collect();
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

/// `sims[c · m + r]` = similarity of child `c` of `kids` to pool member `r` (`m` = pool size,
/// `pool` = the members' `[h, w]` displacements, `r · padded(n) + image`), with the widest code
/// `isa` allows; bit-identical for every ISA.
fn block_similarities(isa: Isa, kids: &[Child], pool: [&[f64]; 2], n: usize, sims: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: `isa` comes from `Isa::detect`: the CPU has AVX-512 F.
        unsafe { block_similarities_avx512(kids, pool, n, sims) };
        return;
    }
    block_similarities_auto(isa, kids, pool, n, sims);
}

expgraph_disentangle::isa_dispatch! {
    /// [`block_similarities`], auto-vectorized for `isa`.
    fn block_similarities_auto(kids: &[Child], pool: [&[f64]; 2], n: usize, sims: &mut [f64]) => block_similarities_portable
}

/// [`block_similarities`] with explicit 8-lane AVX-512 vectors: lane `j` of the running sum is
/// the partial sum of images `i ≡ j mod 8`, exactly [`fixed_order_sum`]'s, and every term is
/// computed by the same IEEE operations as [`similarity_terms`] (no fused multiply-adds).
///
/// # Safety
/// The CPU must support AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block_similarities_avx512(kids: &[Child], pool: [&[f64]; 2], n: usize, sims: &mut [f64]) {
    use std::arch::x86_64::*;
    if n == 0 || kids.is_empty() {
        sims.fill(0.0);
        return;
    }
    let np = padded(n);
    let m = pool[0].len() / np;
    let full = n - n % 8;
    for r in 0..m {
        let (dh, dw) = (&pool[0][r * np..r * np + n], &pool[1][r * np..r * np + n]);
        for (c, kid) in kids.iter().enumerate() {
            let (eh, ew, w) = (&kid.eh[..n], &kid.ew[..n], &kid.weight[..n]);
            let inv = _mm512_set1_pd(kid.inv);
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
            sims[c * m + r] = (full..n).fold(total, |acc, i| {
                let (a, b) = (eh[i] - dh[i], ew[i] - dw[i]);
                acc + exp((a * a + b * b) * kid.inv) * w[i]
            });
        }
    }
}

#[inline(always)]
fn block_similarities_portable(kids: &[Child], pool: [&[f64]; 2], n: usize, sims: &mut [f64]) {
    if n == 0 || kids.is_empty() {
        sims.fill(0.0);
        return;
    }
    let np = padded(n);
    let m = pool[0].len() / np;
    let mut terms = vec![0.0; np];
    for r in 0..m {
        let pool_r = [&pool[0][r * np..(r + 1) * np], &pool[1][r * np..(r + 1) * np]];
        for (c, kid) in kids.iter().enumerate() {
            similarity_terms([&kid.eh, &kid.ew], pool_r, &kid.weight, kid.inv, &mut terms);
            sims[c * m + r] = fixed_order_sum(&terms[..n]);
        }
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

    #[test]
    fn every_isa_gives_the_plain_sums_bit_for_bit() {
        let mut s = 3u64;
        for n in [0usize, 1, 5, 7, 8, 9, 15, 16, 17, 31, 40, 63, 80, 101] {
            let m = 7;
            let kids_disp: Vec<Vec<[f64; 2]>> = (0..5)
                .map(|_| (0..n).map(|_| [lcg(&mut s) * 40.0 - 20.0, lcg(&mut s) * 40.0 - 20.0]).collect())
                .collect();
            let weights: Vec<Vec<f64>> = (0..5)
                .map(|_| (0..n).map(|_| if lcg(&mut s) < 0.2 { 0.0 } else { lcg(&mut s) * 3.0 }).collect())
                .collect();
            let pool: Vec<[f64; 2]> =
                (0..m * n).map(|_| [lcg(&mut s) * 60.0 - 30.0, lcg(&mut s) * 60.0 - 30.0]).collect();
            let invs = [-0.003, -0.5, -40.0, 0.0, -1e-9];
            let kids: Vec<Child> = (0..5)
                .map(|c| Child {
                    eh: pad(kids_disp[c].iter().map(|p| p[0])),
                    ew: pad(kids_disp[c].iter().map(|p| p[1])),
                    weight: pad(weights[c].iter().copied()),
                    inv: invs[c],
                })
                .collect();
            let ph: Vec<f64> = pool.chunks_exact(n.max(1)).flat_map(|p| pad(p.iter().map(|d| d[0]))).collect();
            let pw: Vec<f64> = pool.chunks_exact(n.max(1)).flat_map(|p| pad(p.iter().map(|d| d[1]))).collect();
            let want: Vec<f64> = (0..5)
                .flat_map(|c| {
                    let (kd, w, pool) = (&kids_disp[c], &weights[c], &pool);
                    (0..m).map(move |r| plain(kd, &pool[r * n..(r + 1) * n], w, invs[c]))
                })
                .collect();
            for isa in Isa::available() {
                let mut got = vec![f64::NAN; 5 * m];
                if n == 0 {
                    // No images: the pool arrays are empty; every similarity is 0.
                    block_similarities(isa, &kids, [&ph, &pw], n, &mut got);
                    assert!(got.iter().all(|x| *x == 0.0));
                    continue;
                }
                block_similarities(isa, &kids, [&ph, &pw], n, &mut got);
                let (g, w): (Vec<u64>, Vec<u64>) =
                    got.iter().zip(&want).map(|(a, b)| (a.to_bits(), b.to_bits())).unzip();
                assert_eq!(g, w, "n = {n}, {isa:?}");
            }
        }
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
                let got: Vec<(u32, u32)> =
                    top_parents(&sims, &pool, top_n).iter().map(|p| (p.node, p.similarity.to_bits())).collect();
                assert_eq!(got, want, "top_n = {top_n}");
            }
        }
    }
}
