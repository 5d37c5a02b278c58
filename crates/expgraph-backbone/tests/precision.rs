//! Half precision on the CPU: small random VGG-16 and ResNet models in f16 and bf16 against their
//! own f32 outputs. The outputs stay f32 of the same shape and are close: relative L2 ≤ 1e-2 in
//! f16 and ≤ 5e-2 in bf16, 6× and 4× above the largest errors measured (1.6e-3 and 1.2e-2;
//! printed with `--nocapture`). Going back to f32 restores the fast path and its results bit for
//! bit.

use candle_core::{DType, Device, Tensor};
use expgraph_backbone::{Backbone, BackboneError, ConvImpl, Precision, ResNet, ResNetDepth, Vgg16};

mod common;
use common::{max_abs_diff, Deviation};

/// Bound on the relative L2 error against f32 (see the module docs).
fn bound(precision: Precision) -> f64 {
    match precision {
        Precision::F32 => 0.0,
        Precision::F16 => 1e-2,
        Precision::Bf16 => 5e-2,
    }
}

/// A fixed, image-like `[n, 3, side, side]` input of standard deviation about `scale`.
fn input(n: usize, side: usize, scale: f32) -> Tensor {
    let len = n * 3 * side * side;
    let v: Vec<f32> = (0..len).map(|i| scale * ((i as f32 * 0.37).sin() + 0.5 * (i as f32 * 0.011).cos())).collect();
    Tensor::from_vec(v, (n, 3, side, side), &Device::Cpu).unwrap()
}

/// Checks `model` in f16 and bf16 against its own f32 outputs on `x`, then back in f32.
/// `conv_impl` reads the model's convolution implementation.
fn check_half_precisions<M: Backbone>(model: &mut M, x: &Tensor, taps: &[&str], conv_impl: impl Fn(&M) -> ConvImpl) {
    let name = model.name().to_string();
    assert_eq!(model.precision(), Precision::F32);
    assert_eq!(conv_impl(model), ConvImpl::Im2colNhwc, "{name}: the CPU fast path in f32");
    let reference = model.forward_taps(x, taps).unwrap();
    for precision in [Precision::F16, Precision::Bf16] {
        model.set_precision(precision).unwrap();
        assert_eq!(model.precision(), precision);
        assert_eq!(conv_impl(model), ConvImpl::Candle, "{name} {precision}: candle's generic path");
        let outputs = model.forward_taps(x, taps).unwrap();
        assert_eq!(outputs.len(), taps.len());
        for ((tap, ours), want) in taps.iter().zip(&outputs).zip(&reference) {
            let label = format!("{name} {precision} {tap}");
            assert_eq!((ours.dtype(), ours.dims()), (DType::F32, want.dims()), "{label}");
            let d = Deviation::measure(&label, ours, want);
            eprintln!("{label}: {d}");
            // Exactly equal would mean the model did not compute in half precision at all.
            assert!(d.rel_l2 > 0.0, "{label}: identical to f32");
            assert!(d.rel_l2 <= bound(precision), "{label}: relative L2 {} > {}", d.rel_l2, bound(precision));
        }
    }
    model.set_precision(Precision::F32).unwrap();
    assert_eq!(conv_impl(model), ConvImpl::Im2colNhwc, "{name}: back on the fast path");
    let again = model.forward_taps(x, taps).unwrap();
    for ((tap, a), b) in taps.iter().zip(&again).zip(&reference) {
        assert_eq!(max_abs_diff(a, b), 0.0, "{name} {tap}: f32 again is bit-identical");
    }
}

#[test]
fn vgg16_half_precision_is_close_to_f32() {
    let mut model = Vgg16::random(16, 11, &Device::Cpu).unwrap();
    // Caffe-like input scale (pixels minus the mean).
    check_half_precisions(&mut model, &input(2, 48, 50.0), &["conv5_3", "conv1_2", "conv4_2"], Vgg16::conv_impl);
}

#[test]
fn resnet_half_precision_is_close_to_f32() {
    for depth in [ResNetDepth::R18, ResNetDepth::R50] {
        let mut model = ResNet::random(depth, 8, 5, &Device::Cpu).unwrap();
        let taps = ["layer4", "layer1.pre_relu", "layer3.1", "layer4.pre_relu"];
        check_half_precisions(&mut model, &input(2, 64, 1.0), &taps, ResNet::conv_impl);
    }
}

#[test]
fn fast_path_needs_f32() {
    let mut model = Vgg16::random(32, 1, &Device::Cpu).unwrap();
    model.set_precision(Precision::Bf16).unwrap();
    let msg = model.with_conv_impl(ConvImpl::Im2colNhwc).err().expect("im2col in bf16 is refused").to_string();
    assert!(msg.contains("f32 only") && msg.contains("bf16"), "{msg}");
    let mut resnet = ResNet::random(ResNetDepth::R18, 32, 1, &Device::Cpu).unwrap();
    resnet.set_precision(Precision::F16).unwrap();
    assert!(resnet.with_conv_impl(ConvImpl::Im2colNhwc).is_err());
    // Choosing candle's path explicitly survives a round trip through half precision.
    let mut stock = Vgg16::random(32, 1, &Device::Cpu).unwrap().with_conv_impl(ConvImpl::Candle).unwrap();
    stock.set_precision(Precision::F16).unwrap();
    stock.set_precision(Precision::F32).unwrap();
    assert_eq!(stock.conv_impl(), ConvImpl::Candle);
}

#[test]
fn precision_names_and_errors() {
    for p in Precision::ALL {
        assert_eq!(Precision::from_name(p.name()).unwrap(), p);
    }
    assert_eq!(Precision::from_name("F16").unwrap().dtype(), DType::F16);
    let err = Precision::from_name("float8").unwrap_err();
    assert!(matches!(err, BackboneError::UnknownPrecision(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("`float8`") && msg.contains("f32, f16, bf16"), "{msg}");
}

/// A backbone that keeps the trait's default precision methods.
struct F32Only(Vgg16);

impl Backbone for F32Only {
    fn name(&self) -> &str {
        "f32-only"
    }

    fn meta(&self) -> &expgraph_backbone::BackboneMeta {
        self.0.meta()
    }

    fn tap_map_size(&self, tap: &str, input_size: usize) -> Result<usize, BackboneError> {
        self.0.tap_map_size(tap, input_size)
    }

    fn forward_taps(&self, input: &Tensor, taps: &[&str]) -> Result<Vec<Tensor>, BackboneError> {
        self.0.forward_taps(input, taps)
    }
}

#[test]
fn default_precision_methods_accept_only_f32() {
    let mut model = F32Only(Vgg16::random(32, 1, &Device::Cpu).unwrap());
    assert_eq!(model.precision(), Precision::F32);
    model.set_precision(Precision::F32).unwrap();
    let err = model.set_precision(Precision::F16).unwrap_err();
    assert!(matches!(err, BackboneError::UnsupportedPrecision { precision: Precision::F16, .. }), "{err:?}");
    assert_eq!(err.to_string(), "backbone f32-only computes in f32 only, not f16");
    assert_eq!(model.precision(), Precision::F32);
}
