//! # expgraph-backbone
//!
//! Pretrained CNN backbones on [candle](https://github.com/huggingface/candle) that return the
//! **pre-ReLU** feature maps of chosen layers ("taps"), as the explanatory graph needs them
//! (paper-spec §3), together with each tap's position in the input frame (spec §1.3).
//!
//! * [`Backbone`]: the trait callers use; [`Vgg16`] implements it (taps `conv1_1` … `conv5_3`,
//!   pre-ReLU), and so does [`ResNet`] (depths 18…152; taps `layer1` … `layer4` after the stage's
//!   last ReLU, `layerN.pre_relu` before it, and every block's output `layerN.B`; BatchNorm
//!   folded into the convolutions at load).
//!   A forward pass only runs as deep as the deepest requested tap.
//! * [`WeightSource`]: a local `.safetensors` file or a Hugging Face hub repository (through the
//!   standard hub cache, honouring `HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE`; see [`hub`]).
//! * [`Preprocess`]: pixel normalization presets. Rule: local files default to
//!   [`Preprocess::Caffe`] (the original VGG-16, RGB 0..255 minus the mean), hub weights to
//!   [`Preprocess::Torchvision`]; see [`WeightSource::default_preprocess`].
//! * [`geometry`]: the receptive-field recursion behind [`TapInfo::geometry`].
//! * `OnnxBackbone` (feature `onnx`, needs `protoc` at build time): any CNN exported to ONNX,
//!   taps at named node outputs, geometry from walking the graph's Conv/pool nodes (module `onnx`).
//! * [`parse_device`] (`cpu`, `cuda`, `gpu`, `cuda:N`; clear errors without the `cuda` feature or
//!   without a usable GPU), [`device_label`] and [`device_memory`] (free/total GPU memory).
//! * [`Precision`] (`f32`, `f16`, `bf16`): what [`Backbone::set_precision`] makes [`Vgg16`] and
//!   [`ResNet`] compute in; inputs and taps stay f32. Half precision is meant for GPUs.
//!
//! On the CPU, convolutions use NHWC custom kernels ([`ConvImpl::Im2colNhwc`], f32 only):
//! Winograd F(2×2, 3×3) for 3×3 stride-1 convolutions, im2col + matmul for the others, max-pool
//! fused with ReLU; VGG-16 runs about 7× faster than with candle's stock `conv2d`; other
//! devices and half precision use candle's own ops ([`ConvImpl::Candle`]). Build with the `cuda`
//! feature for CUDA devices.
//! Binaries may want mimalloc as global allocator, keeping freed memory (large temporaries; the
//! crate `expgraph-alloc`, which expgraph's binaries use); this library sets none.
//!
//! ```no_run
//! use expgraph_backbone::{Backbone, Vgg16, WeightSource};
//! use candle_core::Device;
//!
//! # fn main() -> Result<(), expgraph_backbone::BackboneError> {
//! let source = WeightSource::parse("vgg16-imagenet-conv.safetensors"); // or "timm/vgg16.tv_in1k"
//! let model = Vgg16::load(&source, &Device::Cpu)?;
//! let pixels = vec![128u8; 224 * 224 * 3]; // RGB, HWC
//! let input = source.default_preprocess().to_tensor(&[&pixels], 224, model.device())?;
//! let maps = model.forward_taps(&input, &["conv4_3", "conv5_3"])?; // [1,512,28,28], [1,512,14,14]
//! let geometry = model.tap("conv5_3").map(|t| t.geometry); // stride 16, first centre 8.5
//! # Ok(()) }
//! ```

mod backbone;
mod device;
mod error;
pub mod geometry;
pub mod hub;
mod nhwc;
#[cfg(feature = "onnx")]
pub mod onnx;
mod packed;
mod precision;
mod preprocess;
mod resnet;
mod source;
#[doc(hidden)]
pub mod testing;
mod vgg;
mod weights;
mod winograd;

pub use backbone::{compact_tap_names, Backbone, BackboneMeta, TapInfo};
pub use device::{device_label, device_memory, parse_device};
pub use error::BackboneError;
pub use expgraph_geometry::TapGeometry;
pub use hub::HubConfig;
#[cfg(feature = "onnx")]
pub use onnx::OnnxBackbone;
pub use precision::Precision;
pub use preprocess::{Preprocess, CAFFE_MEAN_RGB, TORCHVISION_MEAN_RGB, TORCHVISION_STD_RGB};
pub use resnet::{ResNet, ResNetDepth, BATCH_NORM_EPS};
pub use source::{resolve_weights, resolve_weights_with, WeightSource, DEFAULT_HUB_FILENAME};
pub use vgg::{ConvImpl, Vgg16, VggConv, REFERENCE_INPUT_SIZE, VGG16_CONVS};

/// The CPU convolution kernels behind [`ConvImpl::Im2colNhwc`], exposed for the `conv_kernels`
/// benchmark and tests; not a stable API. Activations are NHWC `[N, H, W, C]` f32 CPU tensors.
#[doc(hidden)]
pub mod kernels {
    use candle_core::{Result, Tensor};

    pub use crate::nhwc::{set_spinning, GemmConv, GemmKernel};
    pub use crate::winograd::{Schedule, Winograd3x3};

    /// The im2col weight matrix `[9·C_in, C_out]` ((kh, kw, cin) rows) of an OIHW 3×3 `weight`.
    pub fn im2col_weight(weight: &Tensor) -> Result<Tensor> {
        let (c_out, c_in, kh, kw) = weight.dims4()?;
        weight.permute((2, 3, 1, 0))?.reshape((kh * kw * c_in, c_out))?.contiguous()
    }

    /// The im2col + matmul 3×3/pad-1 convolution (before Winograd, still used for `conv1_1`):
    /// `conv(relu?(x)) + bias` with `gemm_weight` from [`im2col_weight`].
    pub fn im2col_conv3x3(x: &Tensor, gemm_weight: &Tensor, bias: &Tensor, relu_input: bool) -> Result<Tensor> {
        crate::nhwc::conv3x3(x, gemm_weight, bias, relu_input)
    }
}
