//! Golden test of the ResNet architecture against torchvision (`shared/models/resnet-golden/`, see
//! its README): the weights are rebuilt here from the README's formula, checked against the
//! `weights.*` excerpts, written to a temporary safetensors file, loaded with [`ResNet::load_file`]
//! and run on the golden input. Skips (passes with a printed reason) when the files are absent.

use std::time::Instant;

use candle_core::Device;
use expgraph_backbone::{Backbone, ConvImpl, ResNet, ResNetDepth};

mod common;
use common::{assert_close, resnet_formula_file, resnet_golden, RESNET_BOUNDS, RESNET_GOLDEN_TAPS as TAPS};

/// Checks the README's tolerance ([`RESNET_BOUNDS`]) for each of `conv_impls`.
fn check_depth(depth: ResNetDepth, conv_impls: &[ConvImpl]) {
    let Some(golden) = resnet_golden(depth) else {
        return;
    };
    // The formula against the excerpts, exactly; then through a file and the loader.
    let (_dir, path) = resnet_formula_file(depth, &golden);
    assert_eq!(ResNet::detect_depth_file(&path).unwrap(), depth);
    for &conv_impl in conv_impls {
        let model = ResNet::load_file(depth, &path, &Device::Cpu).unwrap().with_conv_impl(conv_impl).unwrap();
        assert_eq!(model.name(), depth.name());
        let start = Instant::now();
        let outputs = model.forward_taps(&golden["input"], &TAPS).unwrap();
        eprintln!("{} {conv_impl:?}: forward of 1 image in {:.2} s", depth.name(), start.elapsed().as_secs_f64());
        for (tap, ours) in TAPS.iter().zip(&outputs) {
            assert_eq!(model.tap_map_size(tap, 224).unwrap(), golden[*tap].dims()[2], "{tap}");
            let label = format!("{} {conv_impl:?} {tap}", depth.name());
            assert_close(&label, ours, &golden[*tap], RESNET_BOUNDS.0, RESNET_BOUNDS.1);
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
