//! The CPU convolution kernels of expgraph-backbone. First the 3×3/pad-1 ones on representative
//! VGG-16 layer shapes (NHWC, batch 1, f32, ReLU of the input fused as in the network): the
//! previous im2col + one matmul (`im2col_matmul`, `Vgg16::with_winograd(false)`) against Winograd F(2×2, 3×3)
//! (`winograd`, the default for every layer).
//!
//! Criterion runs the variants one after the other, so on a shared machine prefer the interleaved
//! ratios of `cargo run --release -p expgraph-backbone --example conv_speed`. Measured on the
//! 2-core machine (2 threads, 2026-11-30), old/new, interleaved medians (this bench, quiet spell):
//! conv1_2 3.7–4.5× (4.7×), conv2_2 2.5–2.9× (3.0×), conv3_2 2.0–2.1× (1.9×), conv4_2 2.0–2.2×
//! (2.2×), conv5_2 1.9–2.2× (2.1×). Winograd here: 7.0, 6.8, 7.8, 11.5, 3.5 ms.
//! Then ResNet-50's matrix-product convolutions (`gemm_conv_*`): the `gemm` crate against the
//! weights packed at load, in AVX2 and (where the CPU has them) AVX-512 registers (see
//! `gemm_conv_kernels`).

use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use expgraph_backbone::kernels::{im2col_conv3x3, im2col_weight, GemmConv, GemmKernel, Winograd3x3};

// As the `expgraph` binary: mimalloc, keeping freed memory (crates/expgraph-alloc).
#[global_allocator]
static GLOBAL: expgraph_alloc::MiMalloc = expgraph_alloc::MiMalloc;

/// (layer, C_in, C_out, side).
const SHAPES: [(&str, usize, usize, usize); 5] = [
    ("conv1_2", 64, 64, 224),
    ("conv2_2", 128, 128, 112),
    ("conv3_2", 256, 256, 56),
    ("conv4_2", 512, 512, 28),
    ("conv5_2", 512, 512, 14),
];

fn conv_kernels(c: &mut Criterion) {
    expgraph_alloc::keep_freed_memory();
    let dev = Device::Cpu;
    for (name, c_in, c_out, side) in SHAPES {
        let x = Tensor::randn(0f32, 1.0, (1, side, side, c_in), &dev).expect("input");
        let w = Tensor::randn(0f32, 0.05, (c_out, c_in, 3, 3), &dev).expect("weight");
        let b = Tensor::randn(0f32, 0.1, c_out, &dev).expect("bias");
        let gemm_weight = im2col_weight(&w).expect("im2col weight");
        let winograd = Winograd3x3::new(&w, &b).expect("winograd weight");
        let mut group = c.benchmark_group(format!("conv3x3_{name}_{c_in}x{c_out}_{side}"));
        group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
        // Throughput in multiply-adds of the direct convolution (the same for both kernels).
        group.throughput(Throughput::Elements((side * side * c_in * c_out * 9) as u64));
        group.bench_with_input(BenchmarkId::new("im2col_matmul", 1), &x, |bench, x| {
            bench.iter(|| im2col_conv3x3(x, &gemm_weight, &b, true).expect("im2col"))
        });
        group.bench_with_input(BenchmarkId::new("winograd", 1), &x, |bench, x| {
            bench.iter(|| winograd.forward(x, true).expect("winograd"))
        });
        group.finish();
    }
}

/// One of ResNet-50's matrix-product convolutions at batch 1 (NHWC).
struct GemmShape {
    name: &'static str,
    side: usize,
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    residual: bool,
}

const fn shape(
    name: &'static str,
    side: usize,
    (c_in, c_out): (usize, usize),
    (kernel, stride, padding): (usize, usize, usize),
    residual: bool,
) -> GemmShape {
    GemmShape { name, side, c_in, c_out, kernel, stride, padding, residual }
}

const GEMM_SHAPES: [GemmShape; 5] = [
    shape("stem_7x7s2", 224, (3, 64), (7, 2, 3), false),
    shape("layer1_1x1", 56, (256, 64), (1, 1, 0), false),
    shape("layer3_1x1", 14, (1024, 256), (1, 1, 0), false),
    shape("layer4_1x1_residual", 7, (512, 2048), (1, 1, 0), true),
    shape("layer4_3x3s2", 14, (512, 512), (3, 2, 1), false),
];

/// The `gemm` crate's product (`portable`) against weights packed at load (`packedavx2` on AVX2
/// and FMA CPUs, `packed` on AVX-512 ones; the same values), bias, residual and ReLU fused.
/// Criterion repeats one layer, so its weights stay in cache; inside the network they do not,
/// which favours `packed` more than these numbers show (`cargo run --release -p
/// expgraph-backbone --example conv_speed -- 10 resnet-packed`).
fn gemm_conv_kernels(c: &mut Criterion) {
    expgraph_alloc::keep_freed_memory();
    let dev = Device::Cpu;
    for GemmShape { name, side, c_in, c_out, kernel: k, stride, padding, residual } in GEMM_SHAPES {
        let x = Tensor::randn(0f32, 1.0, (1, side, side, c_in), &dev).expect("input");
        let w = Tensor::randn(0f32, 0.05, (c_out, c_in, k, k), &dev).expect("weight");
        let b = Tensor::randn(0f32, 0.1, c_out, &dev).expect("bias");
        let out_side = (side + 2 * padding - k) / stride + 1;
        let r = Tensor::randn(0f32, 1.0, (1, out_side, out_side, c_out), &dev).expect("residual");
        let residual = residual.then_some(&r);
        let mut group = c.benchmark_group(format!("gemm_conv_{name}_{c_in}x{c_out}_{side}"));
        group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
        group.throughput(Throughput::Elements((out_side * out_side * c_in * c_out * k * k) as u64));
        for kernel in GemmKernel::available() {
            let label = format!("{kernel:?}").to_lowercase();
            let conv = GemmConv::with_kernel(&w, &b, stride, padding, kernel).expect("weights");
            group.bench_with_input(BenchmarkId::new(label, 1), &x, |bench, x| {
                bench.iter(|| conv.forward(x, residual, true).expect("conv"))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, conv_kernels, gemm_conv_kernels);
criterion_main!(benches);
