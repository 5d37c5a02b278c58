//! VGG-16 forward pass to conv5_3 at 224×224 on the CPU (expgraph-backbone).
//!
//! Uses the real weights (`shared/models/vgg16-imagenet-conv.safetensors`, found through
//! `EXPGRAPH_SHARED` or `../shared`) when present, else random weights of the same shape (the speed
//! does not depend on the values). Compares the im2col NHWC path at batch 1 and 8 with candle's
//! stock `conv2d` at batch 1. Throughput is reported per image.
//! Reference (docs/cpu-performance.md §3, 2 cores): stock ≈ 650–800 ms/img, im2col ≈ 250–280 ms/img.

use std::path::PathBuf;
use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use expgraph_backbone::{Backbone, ConvImpl, Vgg16};

// Large temporaries (im2col buffers) page-fault less with mimalloc (cpu-performance.md §4.4).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let fast = model();
    let mut group = c.benchmark_group("vgg16_forward_conv5_3_224");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(5));
    for batch in [1usize, 8] {
        let x = Tensor::randn(0f32, 50.0, (batch, 3, 224, 224), &Device::Cpu).expect("input");
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("im2col_nhwc", batch), &x, |b, x| {
            b.iter(|| fast.forward_taps(x, &["conv5_3"]).expect("forward"))
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
