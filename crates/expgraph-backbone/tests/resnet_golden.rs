//! Golden test of the ResNet architecture against torchvision (`shared/models/resnet-golden/`, see
//! its README): the weights are rebuilt here from the README's formula, checked against the
//! `weights.*` excerpts, written to a temporary safetensors file, loaded with [`ResNet::load_file`]
//! and run on the golden input. Skips (passes with a printed reason) when the files are absent.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use expgraph_backbone::{Backbone, ConvImpl, ResNet, ResNetDepth};
use expgraph_testkit::formula::formula_values;

mod common;
use common::shared_dir;

const TAPS: [&str; 6] = ["layer2", "layer3", "layer4", "layer2.pre_relu", "layer3.pre_relu", "layer4.pre_relu"];

/// The golden tensors of `resnetN`, or `None` after printing why the test is skipped.
fn golden(depth: ResNetDepth) -> Option<HashMap<String, Tensor>> {
    let path = shared_dir().join("models/resnet-golden").join(format!("{}-golden.safetensors", depth.name()));
    if !path.is_file() {
        eprintln!("SKIPPED: {} not found (set EXPGRAPH_SHARED to the shared folder)", path.display());
        return None;
    }
    Some(candle_core::safetensors::load(&path, &Device::Cpu).expect("golden file readable"))
}

/// The full torchvision state dict (with `fc.*` and `num_batches_tracked`, which the loader ignores).
fn formula_state_dict(depth: ResNetDepth) -> HashMap<String, Tensor> {
    let mut shapes = depth.state_dict_shapes();
    let c = depth.stage_channels(3);
    shapes.insert("fc.weight".into(), vec![1000, c]);
    shapes.insert("fc.bias".into(), vec![1000]);
    let mut out: HashMap<String, Tensor> = shapes
        .iter()
        .map(|(name, shape)| {
            (name.clone(), Tensor::from_vec(formula_values(name, shape), shape.as_slice(), &Device::Cpu).unwrap())
        })
        .collect();
    for name in shapes.keys().filter(|n| n.ends_with(".running_var")) {
        let tracked = name.replace(".running_var", ".num_batches_tracked");
        out.insert(tracked, Tensor::new(0i64, &Device::Cpu).unwrap());
    }
    out
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

fn l2(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap().sqrt()
}

/// The README's tolerance: max|Δ| ≤ 2e-5·max|golden| and relative L2 ≤ 1e-5.
fn assert_close(label: &str, ours: &Tensor, golden: &Tensor) {
    assert_eq!(ours.dims(), golden.dims(), "{label}: shape");
    let diff = (ours - golden).unwrap();
    let (max_diff, scale) = (max_abs(&diff), max_abs(golden));
    let rel_l2 = l2(&diff) / l2(golden);
    eprintln!(
        "{label}: max|Δ| = {max_diff:.3e} ({:.2e} of max|golden| = {scale:.1}), relative L2 = {rel_l2:.3e}",
        max_diff / scale
    );
    assert!(max_diff <= 2e-5 * scale, "{label}: max|Δ| {max_diff} > 2e-5 × {scale}");
    assert!(rel_l2 <= 1e-5, "{label}: relative L2 {rel_l2} > 1e-5");
}

fn check_depth(depth: ResNetDepth, conv_impls: &[ConvImpl]) {
    let Some(golden) = golden(depth) else {
        return;
    };
    let state = formula_state_dict(depth);
    // 1. The formula against the excerpts, exactly.
    let mut checked = 0;
    for (key, excerpt) in &golden {
        let Some(name) = key.strip_prefix("weights.") else { continue };
        let ours = state[name].flatten_all().unwrap();
        let n = excerpt.dims1().unwrap();
        let ours = ours.narrow(0, 0, n).unwrap().to_vec1::<f32>().unwrap();
        let theirs = excerpt.to_vec1::<f32>().unwrap();
        let mismatches = ours.iter().zip(&theirs).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(mismatches, 0, "formula tensor {name}: {mismatches} of {n} values differ");
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} weight excerpts found");
    // 2. Through a file and the loader.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{}.safetensors", depth.name()));
    candle_core::safetensors::save(&state, &path).unwrap();
    drop(state);
    assert_eq!(ResNet::detect_depth_file(&path).unwrap(), depth);
    for &conv_impl in conv_impls {
        let model = ResNet::load_file(depth, &path, &Device::Cpu).unwrap().with_conv_impl(conv_impl).unwrap();
        assert_eq!(model.name(), depth.name());
        let start = Instant::now();
        let outputs = model.forward_taps(&golden["input"], &TAPS).unwrap();
        eprintln!("{} {conv_impl:?}: forward of 1 image in {:.2} s", depth.name(), start.elapsed().as_secs_f64());
        for (tap, ours) in TAPS.iter().zip(&outputs) {
            assert_eq!(model.tap_map_size(tap, 224).unwrap(), golden[*tap].dims()[2], "{tap}");
            assert_close(&format!("{} {conv_impl:?} {tap}", depth.name()), ours, &golden[*tap]);
        }
    }
}

#[test]
fn resnet50_matches_torchvision_golden() {
    check_depth(ResNetDepth::R50, &[ConvImpl::Im2colNhwc, ConvImpl::Candle]);
}

#[test]
fn resnet152_matches_torchvision_golden() {
    check_depth(ResNetDepth::R152, &[ConvImpl::Im2colNhwc]);
}
