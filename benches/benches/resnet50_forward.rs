//! ResNet-50 forward pass to `layer4` at 224×224 on the CPU (expgraph-backbone).
//!
//! A full-width ResNet-50 with deterministic random weights (`ResNet::random(R50, 1, SEED)`; the
//! speed does not depend on the values). Compares the CPU default path (`winograd`: NHWC gemm
//! convolutions, with Winograd F(2×2, 3×3) for the 3×3 stride-1 ones) and the previous all-gemm
//! path (`im2col_nhwc`, `ResNet::with_winograd(false)`) at batch 1 and 8 with candle's stock
//! `conv2d` at batch 1. Throughput is reported per image. Threads: the rayon pool,
//! `RAYON_NUM_THREADS` (default: one per core). Interleaved old/new ratios:
//! `cargo run --release -p expgraph-backbone --example conv_speed -- 10 resnet`.
//!
//! The same weights run in ONNX Runtime with `benches/onnxruntime/resnet50_ort.py` (write them
//! with `cargo run --release -p expgraph-benches --example resnet50_weights -- DIR`); see
//! benches/README.md for the side-by-side recipe and the last measured ratio.

use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use expgraph_backbone::{Backbone, ConvImpl, ResNet, ResNetDepth};

// As the `expgraph` binary: mimalloc, keeping freed memory (crates/expgraph-alloc).
#[global_allocator]
static GLOBAL: expgraph_alloc::MiMalloc = expgraph_alloc::MiMalloc;

/// Weight seed; `examples/resnet50_weights.rs` writes the weights of the same seed.
const SEED: u64 = 50;

fn resnet50_forward(c: &mut Criterion) {
    expgraph_alloc::keep_freed_memory();
    let fast = ResNet::random(ResNetDepth::R50, 1, SEED, &Device::Cpu).expect("random model");
    let old = ResNet::random(ResNetDepth::R50, 1, SEED, &Device::Cpu)
        .expect("random model")
        .with_winograd(false)
        .expect("all-gemm path");
    eprintln!("resnet50_forward: {} rayon threads", rayon::current_num_threads());
    let mut group = c.benchmark_group("resnet50_forward_layer4_224");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(5));
    for batch in [1usize, 8] {
        let x = Tensor::randn(0f32, 1.0, (batch, 3, 224, 224), &Device::Cpu).expect("input");
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("winograd", batch), &x, |b, x| {
            b.iter(|| fast.forward_taps(x, &["layer4"]).expect("forward"))
        });
        group.bench_with_input(BenchmarkId::new("im2col_nhwc", batch), &x, |b, x| {
            b.iter(|| old.forward_taps(x, &["layer4"]).expect("forward"))
        });
    }
    let stock = fast.with_conv_impl(ConvImpl::Candle).expect("stock path");
    let x = Tensor::randn(0f32, 1.0, (1, 3, 224, 224), &Device::Cpu).expect("input");
    group.throughput(Throughput::Elements(1));
    group.bench_with_input(BenchmarkId::new("candle_conv2d", 1), &x, |b, x| {
        b.iter(|| stock.forward_taps(x, &["layer4"]).expect("forward"))
    });
    group.finish();
}

criterion_group!(benches, resnet50_forward);
criterion_main!(benches);
