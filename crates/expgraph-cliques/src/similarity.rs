//! Co-movement similarity and parent selection (spec §2.2 step 2).

use expgraph_graph::{Parent, TapGeometry};
use rayon::prelude::*;

use expgraph_disentangle::fast_exp as exp;
use crate::LayerRecords;

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
            // The terms are computed in a separate loop, then summed in image order.
            let mut terms = vec![0.0; n];
            let mut sims: Vec<(f64, usize)> = (0..m)
                .map(|r| {
                    let (dh, dw) = (&pool_h[r * n..(r + 1) * n], &pool_w[r * n..(r + 1) * n]);
                    let (eh, ew, dh, dw, w) = (&eh[..n], &ew[..n], &dh[..n], &dw[..n], &weight[..n]);
                    for (i, t) in terms[..n].iter_mut().enumerate() {
                        let (a, b) = (eh[i] - dh[i], ew[i] - dw[i]);
                        *t = exp((a * a + b * b) * inv) * w[i];
                    }
                    (terms.iter().fold(0.0, |s, t| s + t), r)
                })
                .collect();
            sims.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            sims.truncate(top_n);
            sims.into_iter().map(|(s, r)| Parent { node: pool[r], similarity: s as f32 }).collect()
        })
        .collect()
}
