//! The per-image prior a node gets from its parents (spec §1.5).

/// A node's parents with their σ in the child's map units, and the derived constants.
#[derive(Debug, Clone, PartialEq)]
pub struct ParentPrior {
    /// Parent node indices (upper layer).
    pub parents: Vec<u32>,
    /// Precision weights `w_i = (1/M) / σ_i²`.
    weights: Vec<f64>,
    /// `Σ_i w_i`.
    weight_sum: f64,
    /// `ln σ_V − Σ_i ln σ_i` (the λ factors independent of the image).
    log_norm: f64,
}

impl ParentPrior {
    /// Build from parent indices and their σ (child map units, > 0). `parents` must not be empty.
    pub fn new(parents: Vec<u32>, sigmas: &[f64]) -> Self {
        let m = parents.len() as f64;
        let weights: Vec<f64> = sigmas.iter().map(|s| 1.0 / (m * s * s)).collect();
        let weight_sum: f64 = weights.iter().sum();
        let sigma = (1.0 / weight_sum).sqrt();
        let log_norm = sigma.ln() - sigmas.iter().map(|s| s.ln()).sum::<f64>();
        Self { parents, weights, weight_sum, log_norm }
    }

    /// The image-independent spatial std `σ_V(I) = sqrt(1 / Σ_i w_i)`.
    pub fn sigma(&self) -> f64 {
        (1.0 / self.weight_sum).sqrt()
    }

    /// For one image, from the parents' displacements `d_i(I)` (child map units, in `parents`
    /// order): the mean shift `Δμ = Σ w_i d_i / Σ w_i` and the agreement
    /// `ln λ = ln σ_V + Σ_i [−‖Δμ − d_i‖² / (2 M σ_i²) − ln σ_i]`, computed in log space (f64).
    pub fn for_image(&self, displacement: impl Fn(usize) -> [f64; 2]) -> ([f64; 2], f64) {
        let mut shift = [0.0; 2];
        for (i, w) in self.weights.iter().enumerate() {
            let d = displacement(i);
            shift[0] += w * d[0];
            shift[1] += w * d[1];
        }
        shift = [shift[0] / self.weight_sum, shift[1] / self.weight_sum];
        let mut log_lambda = self.log_norm;
        for (i, w) in self.weights.iter().enumerate() {
            let d = displacement(i);
            let dist = (shift[0] - d[0]).powi(2) + (shift[1] - d[1]).powi(2);
            // 1 / (2 M σ_i²) = w_i / 2
            log_lambda -= 0.5 * dist * w;
        }
        (shift, log_lambda)
    }
}
