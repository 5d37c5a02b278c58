//! The activation-smoothing kernel of the local evidence (spec §1.6 step 3, "prior").

use crate::settings::SQRT_2PI;

/// `K(d) = exp(-d² / 2σ²) / (√(2π) σ)` for `d < 3σ`, and the constant floor
/// `exp(-4.5) / (√(2π) σ)` beyond (not zero), with `σ = σ_map = map_delta · H`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmoothingKernel {
    /// σ_map in map cells.
    pub sigma: f64,
    /// `√(2π) σ`.
    norm: f64,
    /// Kernel value beyond the cut-off.
    pub floor: f64,
    /// Squared cut-off distance `(3σ)²`.
    pub cutoff_sq: f64,
}

impl SmoothingKernel {
    /// The kernel with `σ_map = sigma` (> 0).
    pub fn new(sigma: f64) -> Self {
        let norm = SQRT_2PI * sigma;
        Self { sigma, norm, floor: (-4.5f64).exp() / norm, cutoff_sq: 9.0 * sigma * sigma }
    }

    /// The kernel at squared distance `d_sq`.
    pub fn at_sq(&self, d_sq: f64) -> f64 {
        if d_sq < self.cutoff_sq {
            (-d_sq / (2.0 * self.sigma * self.sigma)).exp() / self.norm
        } else {
            self.floor
        }
    }

    /// The 1-D factor `exp(-d² / 2σ²)`; `at_sq(dh² + dw²) = factor(dh)·factor(dw)/norm` inside
    /// the cut-off.
    pub fn factor(&self, d: f64) -> f64 {
        (-d * d / (2.0 * self.sigma * self.sigma)).exp()
    }

    /// `1 / (√(2π) σ)`.
    pub fn peak(&self) -> f64 {
        1.0 / self.norm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_with_floor_by_hand() {
        // conv4: σ_map = 0.025 · 28 = 0.7.
        let k = SmoothingKernel::new(0.7);
        let norm = (2.0 * std::f64::consts::PI).sqrt() * 0.7;
        assert!((k.at_sq(0.0) - 1.0 / norm).abs() < 1e-15);
        assert!((k.at_sq(1.0) - (-1.0f64 / 0.98).exp() / norm).abs() < 1e-15);
        // 3σ = 2.1: at d = 2.0 still Gaussian, at d = 2.2 the floor exp(-4.5)/norm ≈ 0.0063313.
        assert!(k.at_sq(4.0) > k.floor);
        assert!((k.at_sq(2.2 * 2.2) - 0.006_331_3).abs() < 1e-6);
        assert_eq!(k.at_sq(100.0), k.floor);
        // The Gaussian meets the floor at the cut-off (so K = floor + max(G − floor, 0)).
        assert!(((-4.5f64).exp() / norm - k.floor).abs() < 1e-18);
    }
}
