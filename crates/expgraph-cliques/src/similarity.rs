//! Co-movement similarity and parent selection (spec §2.2 step 2).

use expgraph_graph::{Parent, TapGeometry};
use rayon::prelude::*;

use crate::LayerRecords;
use expgraph_disentangle::fast_exp as exp;

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
    let (n, p) = (rec.num_images, rec.num_nodes);
    let mut out = vec![[0.0; 2]; n * p];
    for v in 0..p {
        let mut m = [0.0; 2];
        for i in 0..n {
            let q = rec.positions[i * p + v];
            m[0] += f64::from(q[0]);
            m[1] += f64::from(q[1]);
        }
        m = [m[0] / n as f64, m[1] / n as f64];
        for i in 0..n {
            let q = rec.positions[i * p + v];
            out[v * n + i] = [frame.map(g, f64::from(q[0]) - m[0]), frame.map(g, f64::from(q[1]) - m[1])];
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
    let n = num_images;
    let m = pool.len();
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
    let avx2 = has_avx2();
    let pool_h: Vec<f64> = pool_disp.iter().map(|d| d[0]).collect();
    let pool_w: Vec<f64> = pool_disp.iter().map(|d| d[1]).collect();
    (0..num_child)
        .into_par_iter()
        .map(|v| {
            let e = &child_disp[v * n..(v + 1) * n];
            let weight: Vec<f64> = (0..n).map(|i| f64::from(child_best[i * num_child + v])).collect();
            let (mut own, mut cross) = (0.0, 0.0);
            for i in 0..n {
                own += e[i][0] * e[i][0] + e[i][1] * e[i][1];
                cross += e[i][0] * pool_sum[i][0] + e[i][1] * pool_sum[i][1];
            }
            let total = m as f64 * own - 2.0 * cross + pool_sq;
            let bw = total / (m * n) as f64;
            let inv = if bw > 0.0 { -1.0 / (2.0 * bw) } else { 0.0 };
            let (eh, ew): (Vec<f64>, Vec<f64>) = e.iter().map(|p| (p[0], p[1])).unzip();
            // The terms are computed in a separate loop, then summed in a fixed order.
            let mut terms = vec![0.0; n];
            let mut sims: Vec<(f64, usize)> = (0..m)
                .map(|r| {
                    let pool_r = [&pool_h[r * n..(r + 1) * n], &pool_w[r * n..(r + 1) * n]];
                    similarity_terms(avx2, [&eh, &ew], pool_r, &weight, inv, &mut terms);
                    (fixed_order_sum(&terms), r)
                })
                .collect();
            sims.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            sims.truncate(top_n);
            sims.into_iter().map(|(s, r)| Parent { node: pool[r], similarity: s as f32 }).collect()
        })
        .collect()
}

/// Whether this CPU has AVX2 (checked once per parent selection).
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// `terms[i] = exp(‖e_i − d_i‖² · inv) · w_i` for every image `i` (`e`, `d` as `[h, w]` axes),
/// with 256-bit vectors when `avx2` (from [`has_avx2`]). No fused multiply-adds are involved, so
/// every lane does the same IEEE operations as the scalar code: the terms are bit-identical
/// either way.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn similarity_terms(avx2: bool, e: [&[f64]; 2], d: [&[f64]; 2], w: &[f64], inv: f64, terms: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` comes from `has_avx2`, so the CPU supports AVX2.
        unsafe { similarity_terms_avx2(e, d, w, inv, terms) };
        return;
    }
    similarity_terms_portable(e, d, w, inv, terms);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn similarity_terms_avx2(e: [&[f64]; 2], d: [&[f64]; 2], w: &[f64], inv: f64, terms: &mut [f64]) {
    similarity_terms_portable(e, d, w, inv, terms);
}

#[inline(always)]
fn similarity_terms_portable(e: [&[f64]; 2], d: [&[f64]; 2], w: &[f64], inv: f64, terms: &mut [f64]) {
    let n = terms.len();
    let (eh, ew, dh, dw, w) = (&e[0][..n], &e[1][..n], &d[0][..n], &d[1][..n], &w[..n]);
    for (i, t) in terms.iter_mut().enumerate() {
        let (a, b) = (eh[i] - dh[i], ew[i] - dw[i]);
        *t = exp((a * a + b * b) * inv) * w[i];
    }
}

/// `Σ x` in a fixed order: eight interleaved partial sums (images `i ≡ j mod 8`), combined
/// pairwise, then the remainder. Independent chains keep the (vector) adders busy.
fn fixed_order_sum(x: &[f64]) -> f64 {
    let mut s = [0.0; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..8 {
            s[j] += c[j];
        }
    }
    let total = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    rest.iter().fold(total, |a, b| a + b)
}
