//! E-step and parent-selection cost of the learner on synthetic conv4/conv5-sized layers
//! (paper-spec §6 cost estimate; the reference spends ~1.1 G ops per image and iteration on a
//! conv4 layer). One iteration of one image = `evidence` + `accumulate` (mixture normalization
//! and statistics) over every node; parent selection is measured per child node.
//!
//! Projection of a full CUB-scale learn (2000 images, 20 iterations, 4 layers, both views on
//! the top layer) from these numbers: see the learner's report / README.

use criterion::{criterion_group, criterion_main, Criterion};
use expgraph_benches::estep_fixture::{layer, one_image};
use expgraph_cliques::select_parents;
use expgraph_disentangle::{EStepScratch, NodeImageStats, CANDIDATES};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn bench_estep(c: &mut Criterion) {
    let mut g = c.benchmark_group("estep_per_image");
    g.sample_size(10);
    for (name, channels, size, k, density) in
        [("conv4_512x40_28x28", 512, 28, 40, 0.05), ("conv5_512x20_14x14", 512, 14, 20, 0.1)]
    {
        let l = layer(channels, size, k, density, false);
        let mut prior = vec![0.0; l.nodes.len() * CANDIDATES];
        let mut stats = vec![NodeImageStats::default(); l.nodes.len()];
        let mut scratch = EStepScratch::default();
        g.bench_function(name, |b| b.iter(|| one_image(&l, &mut prior, &mut stats, &mut scratch)));
    }
    g.finish();
}

/// Parent selection (spec §2.2) for 256 child nodes against a 600-node pool over 200 images;
/// the learner's cost per iteration scales with children × pool × images.
fn bench_parents(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (children, pool, n) = (256, 600, 200);
    let child: Vec<[f64; 2]> =
        (0..children * n).map(|_| [rng.random_range(-20.0..20.0), rng.random_range(-20.0..20.0)]).collect();
    let best: Vec<f32> = (0..children * n).map(|_| rng.random_range(0.0f32..1.0)).collect();
    let pool_disp: Vec<[f64; 2]> =
        (0..pool * n).map(|_| [rng.random_range(-30.0..30.0), rng.random_range(-30.0..30.0)]).collect();
    let pool_ids: Vec<u32> = (0..pool as u32).collect();
    let single = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a thread pool");
    let mut g = c.benchmark_group("parents");
    g.sample_size(10);
    g.bench_function("256_children_x_600_pool_x_200_images_1_thread", |b| {
        b.iter(|| single.install(|| select_parents(&child, &best, children, n, &pool_ids, &pool_disp, 15)).len())
    });
    g.finish();
}

criterion_group!(benches, bench_estep, bench_parents);
criterion_main!(benches);
