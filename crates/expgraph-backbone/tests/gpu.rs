//! Device-generic tests: the golden checks of `golden.rs` and `resnet_golden.rs` with the model on
//! a GPU, and the error of half precision there. Every GPU test has `gpu` in its name; each runs
//! on `$EXPGRAPH_TEST_GPU` (default `cuda:0`) and skips with `SKIPPED (no GPU): …` when that device
//! cannot be opened, unless `EXPGRAPH_REQUIRE_GPU=1` (see `common/gpu.rs`). They also skip when
//! the shared reference files are absent. `EXPGRAPH_TEST_GPU=cpu` runs them on the CPU (with
//! candle's stock convolution where a GPU would use it), to check the tests themselves.
//!
//! ```sh
//! EXPGRAPH_REQUIRE_GPU=1 cargo test --release -p expgraph-backbone --features cuda --test gpu -- --nocapture gpu
//! ```
//!
//! Tolerances. f32 on the GPU keeps the CPU golden bounds (`common::VGG16_BOUNDS`,
//! `common::RESNET_BOUNDS`): the CPU paths measure 10–40× below them (VGG-16: max|Δ| ≈ 5e-7 of
//! max|golden|, relative L2 ≈ 3e-7; ResNet: ≈ 2e-6 and 1.5e-6), and an f32 GEMM that only sums in
//! another order (candle does not enable TF32 by default) stays within that order of magnitude;
//! TF32 (10-bit mantissa) would fail them, as it should. Half precision is measured against the
//! same f32 goldens with loose bounds: relative L2 ≤ 2e-2 in f16, ≤ 1e-1 in bf16.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{Device, Tensor};
use expgraph_backbone::{parse_device, Backbone, ConvImpl, Precision, ResNet, ResNetDepth, Vgg16};

mod common;
use common::{
    assert_close, gpu::gpu_device, resnet_formula_file, resnet_golden, vgg16_golden_files, Deviation, RESNET_BOUNDS,
    RESNET_GOLDEN_TAPS, VGG16_BOUNDS, VGG16_GOLDEN_TAPS,
};

/// Bounds on the relative L2 error of half precision against the f32 golden.
fn half_rel_l2_bound(precision: Precision) -> f64 {
    match precision {
        Precision::F32 => VGG16_BOUNDS.1,
        Precision::F16 => 2e-2,
        Precision::Bf16 => 1e-1,
    }
}

fn same_device(t: &Tensor, device: &Device) -> bool {
    t.device().location() == device.location()
}

/// The model's conv implementation on `device`: candle's own everywhere but on the CPU in f32.
fn expected_conv_impl(device: &Device, precision: Precision) -> ConvImpl {
    if device.is_cpu() && precision == Precision::F32 {
        ConvImpl::Im2colNhwc
    } else {
        ConvImpl::Candle
    }
}

/// Runs `model` on the golden input, timing it; the outputs are f32 on the model's device.
fn forward(model: &dyn Backbone, golden: &HashMap<String, Tensor>, taps: &[&str], label: &str) -> Vec<Tensor> {
    let input = golden["input"].to_device(model.device()).unwrap();
    // A first pass warms the device up (kernel loading); the second one is timed.
    model.forward_taps(&input, taps).unwrap();
    let start = Instant::now();
    let outputs = model.forward_taps(&input, taps).unwrap();
    let first = outputs[0].to_device(&Device::Cpu).unwrap(); // waits for the device
    let n = first.dim(0).unwrap();
    eprintln!("{label}: forward of {n} image(s) in {:.3} s", start.elapsed().as_secs_f64());
    for out in &outputs {
        assert_eq!(out.dtype(), candle_core::DType::F32, "{label}: taps are f32");
        assert!(same_device(out, model.device()), "{label}: taps on the model's device");
    }
    outputs
}

#[test]
fn vgg16_golden_on_gpu() {
    let Some(device) = gpu_device() else { return };
    let Some((weights, golden)) = vgg16_golden_files() else { return };
    let model = Vgg16::load_file(&weights, &device).unwrap();
    assert_eq!(model.conv_impl(), expected_conv_impl(&device, Precision::F32));
    assert!(model.named_weights().iter().all(|(_, w)| same_device(w, &device)), "weights on {device:?}");
    let outputs = forward(&model, &golden, &VGG16_GOLDEN_TAPS, "vgg16 f32");
    for (tap, ours) in VGG16_GOLDEN_TAPS.iter().zip(&outputs) {
        assert_close(&format!("vgg16 f32 {tap}"), ours, &golden[*tap], VGG16_BOUNDS.0, VGG16_BOUNDS.1);
    }
}

#[test]
fn vgg16_half_precision_error_on_gpu() {
    let Some(device) = gpu_device() else { return };
    let Some((weights, golden)) = vgg16_golden_files() else { return };
    let mut model = Vgg16::load_file(&weights, &device).unwrap();
    for precision in [Precision::F16, Precision::Bf16, Precision::F32] {
        model.set_precision(precision).unwrap();
        assert_eq!(model.precision(), precision);
        assert_eq!(model.conv_impl(), expected_conv_impl(&device, precision));
        let outputs = forward(&model, &golden, &VGG16_GOLDEN_TAPS, &format!("vgg16 {precision}"));
        for (tap, ours) in VGG16_GOLDEN_TAPS.iter().zip(&outputs) {
            let label = format!("vgg16 {precision} {tap}");
            let d = Deviation::measure(&label, ours, &golden[*tap]);
            eprintln!("{label}: max|Δ|/max|golden| = {:.3e}, relative L2 = {:.3e}", d.rel_max(), d.rel_l2);
            if precision == Precision::F32 {
                // Back in f32 after half precision: the golden bounds again.
                d.assert_within(&label, VGG16_BOUNDS.0, VGG16_BOUNDS.1);
            } else {
                assert!(d.rel_l2 <= half_rel_l2_bound(precision), "{label}: relative L2 {} too large", d.rel_l2);
                // Not all zeros or garbage: the error is a fraction of the signal.
                assert!(d.rel_max() < 0.5, "{label}: max|Δ|/max|golden| {}", d.rel_max());
            }
        }
    }
}

/// ResNet-`depth` with the formula weights on `device`, against torchvision's golden maps.
fn resnet_on(device: &Device, depth: ResNetDepth, precisions: &[Precision]) {
    let Some(golden) = resnet_golden(depth) else { return };
    let (_dir, path) = resnet_formula_file(depth, &golden);
    let mut model = ResNet::load_file(depth, &path, device).unwrap();
    assert_eq!(model.conv_impl(), expected_conv_impl(device, Precision::F32));
    assert!(model.device().same_device(device));
    for &precision in precisions {
        model.set_precision(precision).unwrap();
        assert_eq!(model.conv_impl(), expected_conv_impl(device, precision));
        let label = format!("{} {precision}", depth.name());
        let outputs = forward(&model, &golden, &RESNET_GOLDEN_TAPS, &label);
        for (tap, ours) in RESNET_GOLDEN_TAPS.iter().zip(&outputs) {
            let label = format!("{label} {tap}");
            if precision == Precision::F32 {
                assert_close(&label, ours, &golden[*tap], RESNET_BOUNDS.0, RESNET_BOUNDS.1);
            } else {
                let d = Deviation::measure(&label, ours, &golden[*tap]);
                eprintln!("{label}: max|Δ|/max|golden| = {:.3e}, relative L2 = {:.3e}", d.rel_max(), d.rel_l2);
                assert!(d.rel_l2 <= half_rel_l2_bound(precision), "{label}: relative L2 {} too large", d.rel_l2);
            }
        }
    }
}

#[test]
fn resnet_golden_on_gpu() {
    let Some(device) = gpu_device() else { return };
    resnet_on(&device, ResNetDepth::R50, &[Precision::F32]);
    resnet_on(&device, ResNetDepth::R152, &[Precision::F32]);
}

#[test]
fn resnet_half_precision_error_on_gpu() {
    let Some(device) = gpu_device() else { return };
    resnet_on(&device, ResNetDepth::R50, &[Precision::F16, Precision::Bf16, Precision::F32]);
}

/// A cuda build on a machine without a usable GPU (no driver, or the toolkit's stub `libcuda`
/// that answers `CUDA_ERROR_STUB_LIBRARY` to every call) gets an error naming the device, never a
/// panic or an abort.
#[cfg(feature = "cuda")]
#[test]
fn cuda_build_without_gpu_fails_cleanly() {
    match parse_device("cuda:0") {
        Ok(device) => {
            assert!(device.is_cuda());
            eprintln!(
                "a GPU is present ({}); the no-GPU path is checked on machines without one",
                expgraph_backbone::device_label(&device)
            );
        }
        Err(e) => {
            let msg = e.to_string();
            eprintln!("as expected without a GPU: {msg}");
            assert!(msg.contains("cuda:0") && msg.contains("no usable CUDA GPU"), "{msg}");
            assert!(msg.contains("--device cpu"), "{msg}");
        }
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_request_without_the_cuda_feature_names_it() {
    for name in ["cuda:0", "cuda", "GPU"] {
        let msg = parse_device(name).unwrap_err().to_string();
        assert!(msg.contains("cuda:0") && msg.contains("rebuild with `--features cuda`"), "{name}: {msg}");
    }
}
