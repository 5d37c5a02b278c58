//! VGG-16 forward pass to conv5_3 at 224×224 on the CPU (expgraph-backbone).
//!
//! Uses the real weights (`shared/models/vgg16-imagenet-conv.safetensors`, found through
//! `EXPGRAPH_SHARED` or `../shared`) when present, else random weights of the same shape (the speed
//! does not depend on the values). Compares, per image, the default CPU path (`winograd`:
//! Winograd F(2×2, 3×3) in every layer) at batch 1 and 8, the previous im2col + matmul path
//! (`im2col_nhwc`, `Vgg16::with_winograd(false)`) at batch 1 and 8, and candle's stock `conv2d`
//! at batch 1.
//! Reference (2 cores, shared machine, interleaved medians of
//! `cargo run --release -p expgraph-backbone --example conv_speed -- 24`, 2026-11-30): winograd
//! ≈ 120–135 ms/img, im2col ≈ 305–335 ms/img at that time (old/new 2.4–2.5× at batch 1,
//! 2.7–2.8× at batch 8), stock ≈ 850 ms/img (7×); docs/cpu-performance.md §3 had im2col at
//! 250–280 ms/img and stock at 650–800 ms/img on a quieter machine. ONNX Runtime 1.32:
//! ≈ 100–130 ms/img.

use std::path::PathBuf;
use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use expgraph_backbone::{Backbone, ConvImpl, Vgg16};

// As the `expgraph` binary: mimalloc, keeping freed memory (crates/expgraph-alloc).
#[global_allocator]
static GLOBAL: expgraph_alloc::MiMalloc = expgraph_alloc::MiMalloc;

fn model() -> Vgg16 {
    let shared = std::env::var_os("EXPGRAPH_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")));
    let weights = shared.join("models").join("vgg16-imagenet-conv.safetensors");
    if weights.is_file() {
        eprintln!("vgg16_forward: real weights {}", weights.display());
        Vgg16::load_file(&weights, &Device::Cpu).expect("weights load")
    } else {
        eprintln!("vgg16_forward: {} not found, using random weights", weights.display());
        Vgg16::random(1, 0, &Device::Cpu).expect("random model")
    }
}

fn vgg16_forward(c: &mut Criterion) {
    expgraph_alloc::keep_freed_memory();
    let fast = model();
    let old = model().with_winograd(false).expect("im2col path");
    let mut group = c.benchmark_group("vgg16_forward_conv5_3_224");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(5));
    for batch in [1usize, 8] {
        let x = Tensor::randn(0f32, 50.0, (batch, 3, 224, 224), &Device::Cpu).expect("input");
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("winograd", batch), &x, |b, x| {
            b.iter(|| fast.forward_taps(x, &["conv5_3"]).expect("forward"))
        });
        group.bench_with_input(BenchmarkId::new("im2col_nhwc", batch), &x, |b, x| {
            b.iter(|| old.forward_taps(x, &["conv5_3"]).expect("forward"))
        });
    }
    let stock = fast.with_conv_impl(ConvImpl::Candle).expect("stock path");
    let x = Tensor::randn(0f32, 50.0, (1, 3, 224, 224), &Device::Cpu).expect("input");
    group.throughput(Throughput::Elements(1));
    group.bench_with_input(BenchmarkId::new("candle_conv2d", 1), &x, |b, x| {
        b.iter(|| stock.forward_taps(x, &["conv5_3"]).expect("forward"))
    });
    group.finish();
}

criterion_group!(benches, vgg16_forward);
criterion_main!(benches);
