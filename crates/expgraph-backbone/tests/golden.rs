//! Golden test against activations computed with onnxruntime from the original VGG-16
//! (`shared/models/vgg16-golden.safetensors`, see `shared/models/README.md`).
//! Skips (passes with a printed reason) when the shared files are absent.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use expgraph_backbone::{Backbone, ConvImpl, Preprocess, Vgg16};

mod common;
use common::{assert_close, vgg16_golden_files, VGG16_BOUNDS, VGG16_GOLDEN_TAPS as TAPS};

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

/// Checks the README's tolerance ([`VGG16_BOUNDS`]).
fn check_model(model: &Vgg16, golden: &HashMap<String, Tensor>) {
    let outputs = model.forward_taps(&golden["input"], &TAPS).unwrap();
    for (name, ours) in TAPS.iter().zip(&outputs) {
        assert_close(name, ours, &golden[*name], VGG16_BOUNDS.0, VGG16_BOUNDS.1);
    }
}

#[test]
fn vgg16_matches_golden_activations() {
    let Some((weights, golden)) = vgg16_golden_files() else {
        return;
    };
    let model = Vgg16::load_file(&weights, &Device::Cpu).unwrap();
    assert_eq!(model.conv_impl(), ConvImpl::Im2colNhwc);
    assert_eq!(model.weights_digest().len(), 64);
    check_model(&model, &golden);
}

/// The stock candle path against the golden file (slower; run with `--ignored`).
#[test]
#[ignore = "slow: about 4 s in release; run with `cargo test --release -p expgraph-backbone -- --ignored`"]
fn vgg16_stock_conv_matches_golden_activations() {
    let Some((weights, golden)) = vgg16_golden_files() else {
        return;
    };
    let model = Vgg16::load_file(&weights, &Device::Cpu).unwrap().with_conv_impl(ConvImpl::Candle).unwrap();
    check_model(&model, &golden);
}

#[test]
fn caffe_preprocessing_reproduces_golden_input() {
    let Some((_, golden)) = vgg16_golden_files() else {
        return;
    };
    let rgb = &golden["input_rgb_u8"];
    let (n, size) = (rgb.dim(0).unwrap(), rgb.dim(1).unwrap());
    let bytes = rgb.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let images: Vec<&[u8]> = bytes.chunks_exact(size * size * 3).collect();
    assert_eq!(images.len(), n);
    let ours = Preprocess::Caffe.to_tensor(&images, size, &Device::Cpu).unwrap();
    let max_diff = max_abs(&(ours - &golden["input"]).unwrap());
    assert!(max_diff <= 1e-4, "max|Δ| = {max_diff}");
    // The torchvision preset is a different convention and must not match.
    let wrong = Preprocess::Torchvision.to_tensor(&images, size, &Device::Cpu).unwrap();
    assert!(max_abs(&(wrong - &golden["input"]).unwrap()) > 1.0);
}
