//! Criterion benchmarks live in `benches/benches/*.rs`; shared fixtures live here.

/// The synthetic conv4/conv5-sized layers of the E-step benchmarks.
pub mod estep_fixture {
    use expgraph_disentangle::{
        accumulate, candidate_offsets, evidence, half_range, EStepConfig, EStepScratch, NodeImageStats, NodeSetup,
        SmoothingKernel,
    };
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// One synthetic layer and its E-step inputs.
    pub struct Layer {
        /// E-step settings.
        pub cfg: EStepConfig,
        /// Node templates.
        pub nodes: Vec<NodeSetup>,
        /// Per-node mean shifts.
        pub shifts: Vec<[f64; 2]>,
        /// Per-node λ.
        pub lambdas: Vec<f64>,
        /// `[C, H, W]` maps of one image.
        pub maps: Vec<f32>,
    }

    /// `channels` filters of `size`² maps with `k` nodes each; sparse maps with a few blobs; node
    /// σ spread over the learned range (so windows vary from 1 to the cap). `reference`: evaluate
    /// in the reference code's arithmetic (per-cell templates, 2-D nearest-candidate sibling scan,
    /// spec §6 cost estimate) instead of ours.
    pub fn layer(channels: usize, size: usize, k: usize, density: f64, reference: bool) -> Layer {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let sigma_max = 1.0 / density.sqrt();
        let nodes: Vec<NodeSetup> = (0..channels * k)
            .map(|_| {
                let sigma = rng.random_range(sigma_max / 10.0..sigma_max * 0.6);
                let h = half_range(sigma, size, 0.3, 3.0);
                let mu = [rng.random_range(1.0..size as f64), rng.random_range(1.0..size as f64)];
                NodeSetup::new(mu, candidate_offsets(h), h, rng.random_range(0.3..1.5))
            })
            .collect();
        let shifts = (0..nodes.len()).map(|_| [rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)]).collect();
        let lambdas = (0..nodes.len()).map(|_| rng.random_range(0.1..2.0)).collect();
        let maps = (0..channels * size * size).map(|_| (rng.random_range(-2.0f32..1.0)).max(0.0)).collect();
        let cfg = EStepConfig {
            height: size,
            width: size,
            nodes_per_filter: k,
            kernel: SmoothingKernel::new(0.025 * size as f64),
            valid_tau: 0.1,
            rounded_window_centre: reference,
            nearest_sibling: reference,
            reference_arithmetic: reference,
        };
        Layer { cfg, nodes, shifts, lambdas, maps }
    }

    /// One image's E-step (evidence + mixture normalization); returns a checksum.
    pub fn one_image(l: &Layer, prior: &mut [f64], stats: &mut [NodeImageStats], scratch: &mut EStepScratch) -> f64 {
        evidence(&l.cfg, &l.nodes, &l.maps, &l.shifts, prior, scratch);
        accumulate(&l.cfg, &l.nodes, &l.shifts, &l.lambdas, prior, true, stats, scratch);
        stats.iter().map(|s| s.mass).sum()
    }
}
