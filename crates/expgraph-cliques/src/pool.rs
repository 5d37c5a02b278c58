//! The candidate parent pool (spec §2.2 step 1).

use crate::{CliqueError, LayerRecords};

/// Candidate parents from the upper layer, best first (by total score):
/// drop the `min_var_rate` share of nodes with the smallest positional variance across images,
/// drop nodes whose mean position lies within `edge_cut_rate · border_size` of the border, rank
/// the rest by `Σ_I S(I)` (descending, stable) and keep `top_m` (clamped to what is left).
///
/// `border_size` is the map size the border rule uses: the reference uses the *child* layer's H
/// on parent coordinates (spec §2.2, quirk); the default is the parent's own H.
pub fn candidate_pool(
    upper: &LayerRecords<'_>,
    border_size: f64,
    min_var_rate: f64,
    edge_cut_rate: f64,
    top_m: usize,
) -> Result<Vec<u32>, CliqueError> {
    let (n, p) = (upper.num_images, upper.num_nodes);
    if n < 2 {
        return Err(CliqueError::TooFewImages(n));
    }
    let mut var = Vec::with_capacity(p);
    let mut mean = Vec::with_capacity(p);
    let mut total = Vec::with_capacity(p);
    for v in 0..p {
        let (mut s, mut s2, mut sc) = ([0.0f64; 2], [0.0f64; 2], 0.0f64);
        for i in 0..n {
            let q = upper.positions[i * p + v];
            for a in 0..2 {
                s[a] += f64::from(q[a]);
            }
            sc += f64::from(upper.scores[i * p + v]);
        }
        let m = [s[0] / n as f64, s[1] / n as f64];
        for i in 0..n {
            let q = upper.positions[i * p + v];
            for a in 0..2 {
                let d = f64::from(q[a]) - m[a];
                s2[a] += d * d;
            }
        }
        var.push((s2[0] + s2[1]) / (n - 1) as f64);
        mean.push(m);
        total.push(sc);
    }
    let mut keep = vec![true; p];
    let mut by_var: Vec<usize> = (0..p).collect();
    by_var.sort_by(|&a, &b| var[a].total_cmp(&var[b]).then(a.cmp(&b)));
    let dropped = (p as f64 * min_var_rate).ceil() as usize;
    for &v in by_var.iter().take(dropped) {
        keep[v] = false;
    }
    let half = border_size / 2.0;
    for v in 0..p {
        let edge = mean[v].iter().map(|m| half - (half - m).abs()).fold(f64::INFINITY, f64::min);
        if edge < border_size * edge_cut_rate {
            keep[v] = false;
        }
    }
    let mut ranked: Vec<usize> = (0..p).filter(|&v| keep[v]).collect();
    ranked.sort_by(|&a, &b| total[b].total_cmp(&total[a]).then(a.cmp(&b)));
    ranked.truncate(top_m);
    if ranked.is_empty() {
        return Err(CliqueError::EmptyPool { layer: upper.name.to_string() });
    }
    Ok(ranked.into_iter().map(|v| v as u32).collect())
}
