//! Report drawing at VGG-16 size (spec §1.2: 512 filters × 40 nodes on a 28×28 map): heat field of
//! one image, node ranking over 50 images, one gallery.

use criterion::{criterion_group, criterion_main, Criterion};
use expgraph_report::testing::{synthetic_activations, synthetic_crops, synthetic_graph};
use expgraph_report::{heat_field, node_gallery, rank_nodes, GalleryParams, HeatmapParams};

fn bench_report(c: &mut Criterion) {
    let graph = match synthetic_graph(512, 40, 1) {
        Ok(g) => g,
        Err(e) => panic!("synthetic graph: {e}"),
    };
    let acts = synthetic_activations(&graph, 50, 2);
    let crops = synthetic_crops(50, 224, 3);
    let mut group = c.benchmark_group("report");
    group.sample_size(10);
    group.bench_function("heat_field_20480_nodes", |b| {
        b.iter(|| heat_field(&graph, &acts[0], 0, 224, 224, &HeatmapParams::default()))
    });
    group.bench_function("rank_nodes_20480x50", |b| b.iter(|| rank_nodes(&graph, &acts, 0, 50)));
    group.bench_function("gallery_20x5", |b| {
        b.iter(|| node_gallery(&graph, &acts, 0, &crops, &GalleryParams::default()))
    });
    group.finish();
}

criterion_group!(benches, bench_report);
criterion_main!(benches);
