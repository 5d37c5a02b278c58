//! 3-shot part localization at VGG-16 graph size (spec §1.2: 20 480 + 20 480 + 10 240 + 10 240
//! nodes; spec §4.1: q = 5 % per layer ⇒ ≈ 3 072 voting nodes per template, 3 templates).
//! Goal: predicting one image stays in the milliseconds, so a category (≈ 1 000 objects) takes
//! seconds.

use criterion::{criterion_group, criterion_main, Criterion};
use expgraph_cache::TapGeometry;
use expgraph_graph::{ImageActivations, LayerActivations};
use expgraph_localize::{Kernel, LocalizeParams, PartModel, Point, UnitLayerLayout, UnitLayout};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const LAYERS: [(&str, usize, f64, f64); 4] = [
    ("conv4_2", 20_480, 8.0, 4.5),
    ("conv4_3", 20_480, 8.0, 4.5),
    ("conv5_2", 10_240, 16.0, 8.5),
    ("conv5_3", 10_240, 16.0, 8.5),
];

fn layout() -> UnitLayout {
    UnitLayout {
        input_size: 224,
        layers: LAYERS
            .iter()
            .map(|&(name, n, stride, first_centre)| UnitLayerLayout {
                name: name.into(),
                geometry: TapGeometry { stride, first_centre, receptive_field: 100.0 },
                num_units: n,
            })
            .collect(),
    }
}

fn image(id: &str, seed: u64) -> ImageActivations {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let layers = LAYERS
        .iter()
        .map(|&(name, n, stride, _)| {
            let side = (224.0 / stride) as f32;
            LayerActivations {
                layer: name.into(),
                positions: (0..n).map(|_| [rng.random_range(1.0..side), rng.random_range(1.0..side)]).collect(),
                scores: (0..n).map(|_| rng.random_range(0.0f32..2.0)).collect(),
            }
        })
        .collect();
    ImageActivations { image_id: id.into(), flipped: false, layers }
}

fn model(kernel: Kernel) -> PartModel {
    let annotated: Vec<_> =
        (0..3).map(|k| (image(&format!("a{k}"), k), Point::new(80.0 + 10.0 * k as f64, 112.0))).collect();
    let params = match LocalizeParams::default().kernel(kernel).check() {
        Ok(p) => p,
        Err(e) => panic!("params: {e}"),
    };
    match params.fit_units(&layout(), &annotated) {
        Ok(m) => m,
        Err(e) => panic!("fit: {e}"),
    }
}

fn bench_localize(c: &mut Criterion) {
    let test = image("test", 99);
    let mut group = c.benchmark_group("localize");
    group.sample_size(10);
    for (name, kernel) in [("aog", Kernel::aog()), ("gaussian", Kernel::gaussian())] {
        let m = model(kernel);
        group.bench_function(format!("predict_61440_nodes_3_templates_{name}"), |b| b.iter(|| m.predict(&test)));
    }
    let annotated: Vec<_> = (0..3).map(|k| (image(&format!("a{k}"), k), Point::new(90.0, 112.0))).collect();
    let params = match LocalizeParams::default().check() {
        Ok(p) => p,
        Err(e) => panic!("params: {e}"),
    };
    let layout = layout();
    group.bench_function("fit_3_templates_61440_nodes", |b| b.iter(|| params.fit_units(&layout, &annotated)));
    group.finish();
}

criterion_group!(benches, bench_localize);
criterion_main!(benches);
