//! The M-step of one node (spec §2.4, `updateModel`).

/// Sums over images of a node's E-step statistics (spec §2.3 accumulators).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeTotals {
    /// `Σ_I A_V(I)`.
    pub mass: f64,
    /// `Σ_I G_V(I)`.
    pub gradient: [f64; 2],
    /// `Σ_I S_V(I)`.
    pub score: f64,
    /// `Σ_I Q_V(I)`.
    pub spread: f64,
}

impl NodeTotals {
    /// Add one image's statistics.
    pub fn add(&mut self, s: &crate::NodeImageStats) {
        self.mass += s.mass;
        self.gradient[0] += s.gradient[0];
        self.gradient[1] += s.gradient[1];
        self.score += s.score;
        self.spread += s.spread;
    }

    /// Add another partial sum.
    pub fn merge(&mut self, o: &NodeTotals) {
        self.mass += o.mass;
        self.gradient[0] += o.gradient[0];
        self.gradient[1] += o.gradient[1];
        self.score += o.score;
        self.spread += o.spread;
    }
}

/// Step-size factor `σ_min(it) = min_{V,I} σ_V(I) / it^0.25` (`it` is 1-based).
pub fn step_sigma(min_prior_sigma: f64, iteration: usize) -> f64 {
    min_prior_sigma / (iteration as f64).powf(0.25)
}

/// Damped mean update `μ ← μ + η · σ_min(it)² · ΣG / max(ΣA, 1e−8)`.
pub fn update_mu(mu: [f64; 2], totals: &NodeTotals, eta: f64, step_sigma: f64) -> [f64; 2] {
    // The reference's order: (ΣG / ΣA) · (η · σ_min²).
    let a = totals.mass.max(1e-8);
    let f = eta * (step_sigma * step_sigma);
    [mu[0] + totals.gradient[0] / a * f, mu[1] + totals.gradient[1] / a * f]
}

/// Spread update `σ ← sqrt(ΣQ / ΣS) · unit`, clipped to `[sigma_min, sigma_max]`.
///
/// When `ΣS = 0` the ratio is undefined: the result is `sigma_min`, as in the reference (MATLAB's
/// `max` ignores NaN).
pub fn update_sigma(totals: &NodeTotals, unit: f64, sigma_min: f64, sigma_max: f64) -> f64 {
    let s = (totals.spread / totals.score).sqrt() * unit;
    if s.is_nan() {
        return sigma_min;
    }
    s.clamp(sigma_min, sigma_max)
}

/// `σ_max = max_delta · H = 1 / sqrt(density)` in map units, spec §2.4 / §2.6
/// (`max_delta = 1/sqrt(density · H²)`).
pub fn sigma_max(density: f64, map_size: usize) -> f64 {
    1.0 / (density * (map_size * map_size) as f64).sqrt() * map_size as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_step_by_hand() {
        let t = NodeTotals { mass: 2.0, gradient: [1.0, -4.0], score: 1.0, spread: 1.0 };
        // σ_min(it=16) = 2 / 2 = 1; step = ΣG / ΣA = (0.5, -2).
        let s = step_sigma(2.0, 16);
        assert!((s - 1.0).abs() < 1e-15);
        assert_eq!(update_mu([3.0, 3.0], &t, 1.0, s), [3.5, 1.0]);
        // Empty node: the 1e-8 guard keeps μ finite.
        let z = NodeTotals::default();
        assert_eq!(update_mu([3.0, 3.0], &z, 1.0, s), [3.0, 3.0]);
    }

    #[test]
    fn sigma_update_and_clipping_by_hand() {
        // conv5: density 0.1 → σ_max = 1/sqrt(0.1) = 3.1623, σ_min = 0.31623.
        let smax = sigma_max(0.1, 14);
        assert!((smax - 3.162_277_660_168_379).abs() < 1e-12);
        let smin = smax / 10.0;
        let t = NodeTotals { mass: 0.0, gradient: [0.0; 2], score: 2.0, spread: 8.0 };
        // sqrt(8/2) · 2/3 = 1.3333
        assert!((update_sigma(&t, 2.0 / 3.0, smin, smax) - 4.0 / 3.0).abs() < 1e-12);
        assert_eq!(update_sigma(&t, 10.0, smin, smax), smax);
        assert_eq!(update_sigma(&t, 0.01, smin, smax), smin);
        assert_eq!(update_sigma(&NodeTotals::default(), 1.0, smin, smax), smin);
        assert!((sigma_max(0.05, 28) - 4.472_135_954_999_579).abs() < 1e-12);
    }
}
