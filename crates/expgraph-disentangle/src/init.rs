//! Random initialization of node means (spec §2.1, §7 #9).

use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Nodes per filter `K = ceil(H · W · density)` (spec §1.2).
pub fn nodes_per_filter(height: usize, width: usize, density: f64) -> usize {
    ((height * width) as f64 * density).ceil() as usize
}

/// For every filter, `k` distinct random cells of the `H × W` map (seeded ChaCha8), as 1-based
/// `(h, w)` centres; cell `t` (0-based, column-major like MATLAB) is `(t mod H + 1, t div H + 1)`.
/// Returns `channels · k` positions, a filter's nodes contiguous. `k` must be ≤ `H · W`.
pub fn random_means(channels: usize, height: usize, width: usize, k: usize, seed: u64) -> Vec<[f64; 2]> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(channels * k);
    for _ in 0..channels {
        for t in sample(&mut rng, height * width, k.min(height * width)).into_iter() {
            out.push([(t % height + 1) as f64, (t / height + 1) as f64]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_per_filter_matches_the_spec_table() {
        assert_eq!(nodes_per_filter(28, 28, 0.05), 40);
        assert_eq!(nodes_per_filter(14, 14, 0.1), 20);
    }

    #[test]
    fn distinct_cells_and_seeded() {
        let a = random_means(3, 14, 14, 20, 7);
        assert_eq!(a.len(), 60);
        for f in a.chunks(20) {
            let mut cells: Vec<_> = f.iter().map(|p| (p[0] as usize, p[1] as usize)).collect();
            assert!(cells.iter().all(|&(h, w)| (1..=14).contains(&h) && (1..=14).contains(&w)));
            cells.sort_unstable();
            cells.dedup();
            assert_eq!(cells.len(), 20);
        }
        assert_eq!(a, random_means(3, 14, 14, 20, 7));
        assert_ne!(a, random_means(3, 14, 14, 20, 8));
    }
}
