//! ResNet-18/34/50/101/152 (He et al.; torchvision "v1.5" layout: in the first bottleneck of a
//! stage the stride sits on the 3×3 convolution) in eval mode, with every BatchNorm (running
//! statistics, eps 1e-5) folded into the convolution before it when the weights are loaded.
//!
//! Taps: `layerN` (N = 1…4, the stage output after the last block's final ReLU),
//! `layerN.pre_relu` (that block's residual sum before the ReLU) and `layerN.B` (the output of
//! block B of stage N after its final ReLU; B is torchvision's 0-based block index, so the last
//! block's tap is the same tensor as `layerN`, e.g. `layer3.5` = `layer3` in ResNet-50). A forward
//! pass stops after the block of the deepest requested tap.
//!
//! **Tap order** ([`Backbone::taps`], shallow to deep): per stage, the block taps `layerN.0` …
//! `layerN.{B−1}`, then `layerN.pre_relu`, then `layerN`; e.g. for ResNet-18 `layer1.0, layer1.1,
//! layer1.pre_relu, layer1, layer2.0, …, layer4`. The list is ordered by the block that computes a
//! tap (never decreasing); the three taps of a stage's last block (`layerN.{B−1}`,
//! `layerN.pre_relu`, `layerN`) share that block, with the stage names last; dropping the
//! `layerN.B` names leaves the stage taps `layer1.pre_relu, layer1, …, layer4` in their old order.
//!
//! **Geometry of residual blocks.** A block has two paths: the main path (1×1 → 3×3 → 1×1 or
//! 3×3 → 3×3) and the shortcut (identity, or a 1×1 stride-s "downsample" conv). Both paths have the
//! same stride and the same first centre (a 1×1 conv with padding 0 and a 3×3 conv with padding 1
//! are both centred on their input cell), and the shortcut's field is contained in the main path's,
//! so the receptive field of the sum is the maximum over the paths, i.e. the main path's. The
//! recursion of [`crate::geometry::tap_geometry`] therefore runs over the stem (7×7/2 conv, 3×3/2
//! max-pool) and the main-path convolutions of every block; map sizes agree on both paths too
//! (`⌊(n − 1)/s⌋ + 1` for both the 3×3 pad-1 and the 1×1 pad-0 conv).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::backbone::{check_image_batch, check_reaches};
use crate::geometry::{map_size, tap_geometry, LayerShape};
use crate::nhwc::GemmKernel;
use crate::vgg::{check_conv_impl, effective_conv_impl};
use crate::weights::WeightFile;
use crate::winograd::{Schedule, Winograd3x3};
use crate::{
    nhwc, precision, resolve_weights, Backbone, BackboneError, BackboneMeta, ConvImpl, Precision, TapInfo, WeightSource,
};

/// BatchNorm epsilon of torchvision's ResNets.
pub const BATCH_NORM_EPS: f64 = 1e-5;

/// The five standard depths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResNetDepth {
    /// Basic blocks `[2, 2, 2, 2]`.
    R18,
    /// Basic blocks `[3, 4, 6, 3]`.
    R34,
    /// Bottleneck blocks `[3, 4, 6, 3]`.
    R50,
    /// Bottleneck blocks `[3, 4, 23, 3]`.
    R101,
    /// Bottleneck blocks `[3, 8, 36, 3]`.
    R152,
}

impl ResNetDepth {
    /// All depths, shallow to deep.
    pub const ALL: [ResNetDepth; 5] =
        [ResNetDepth::R18, ResNetDepth::R34, ResNetDepth::R50, ResNetDepth::R101, ResNetDepth::R152];

    /// The depth called `n` (18, 34, 50, 101, 152).
    pub fn from_layers(n: usize) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.layers() == n)
    }

    /// The number in the name (18, 34, 50, 101, 152).
    pub fn layers(self) -> usize {
        match self {
            ResNetDepth::R18 => 18,
            ResNetDepth::R34 => 34,
            ResNetDepth::R50 => 50,
            ResNetDepth::R101 => 101,
            ResNetDepth::R152 => 152,
        }
    }

    /// Blocks per stage.
    pub fn blocks(self) -> [usize; 4] {
        match self {
            ResNetDepth::R18 => [2, 2, 2, 2],
            ResNetDepth::R34 | ResNetDepth::R50 => [3, 4, 6, 3],
            ResNetDepth::R101 => [3, 4, 23, 3],
            ResNetDepth::R152 => [3, 8, 36, 3],
        }
    }

    /// Bottleneck (1×1, 3×3, 1×1; expansion 4) rather than basic (3×3, 3×3) blocks.
    pub fn bottleneck(self) -> bool {
        matches!(self, ResNetDepth::R50 | ResNetDepth::R101 | ResNetDepth::R152)
    }

    /// Architecture name, e.g. `resnet50`.
    pub fn name(self) -> &'static str {
        match self {
            ResNetDepth::R18 => "resnet18",
            ResNetDepth::R34 => "resnet34",
            ResNetDepth::R50 => "resnet50",
            ResNetDepth::R101 => "resnet101",
            ResNetDepth::R152 => "resnet152",
        }
    }

    /// Output channels of stage `stage` (0-based) at full width.
    pub fn stage_channels(self, stage: usize) -> usize {
        (64 << stage) * if self.bottleneck() { 4 } else { 1 }
    }

    /// Spatial shapes of the main path from the input through block `block` of `stage` (both 0-based).
    fn main_path_through(self, stage: usize, block: usize) -> Vec<LayerShape> {
        let mut shapes =
            vec![LayerShape { kernel: 7, stride: 2, padding: 3 }, LayerShape { kernel: 3, stride: 2, padding: 1 }];
        let one = LayerShape { kernel: 1, stride: 1, padding: 0 };
        for (s, &blocks) in self.blocks().iter().enumerate().take(stage + 1) {
            let last = if s == stage { block + 1 } else { blocks };
            for b in 0..last.min(blocks) {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                let three = LayerShape { kernel: 3, stride, padding: 1 };
                if self.bottleneck() {
                    shapes.extend([one, three, one]);
                } else {
                    shapes.extend([three, LayerShape::CONV3_PAD1]);
                }
            }
        }
        shapes
    }
}

impl std::fmt::Display for ResNetDepth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A convolution with its BatchNorm folded in: `conv(x, W·γ/σ) + (β − μ·γ/σ)`, σ = √(var + eps).
struct FoldedConv {
    /// `[C_out, C_in, k, k]`.
    weight: Tensor,
    /// `[C_out]`.
    bias: Tensor,
    stride: usize,
    padding: usize,
    /// The NHWC matrix-product form, for [`ConvImpl::Im2colNhwc`].
    gemm: Option<nhwc::GemmConv>,
    /// The Winograd form of a 3×3, stride-1, pad-1 convolution, used instead of `gemm` by
    /// [`ConvImpl::Im2colNhwc`] when there is no residual to add.
    winograd: Option<Winograd3x3>,
    /// `weight` and `bias` cast to a half precision, while the model computes in it (the f32
    /// tensors are kept, so that going back to f32 is exact).
    half: Option<(Tensor, Tensor)>,
}

impl FoldedConv {
    fn new(weight: Tensor, bias: Tensor, stride: usize, padding: usize) -> Self {
        FoldedConv { weight, bias, stride, padding, gemm: None, winograd: None, half: None }
    }

    fn c_out(&self) -> usize {
        self.bias.dims()[0]
    }

    /// `half` for `precision`: weight and bias cast to it, or `None` for f32.
    fn cast(&self, precision: Precision) -> Result<Option<(Tensor, Tensor)>, BackboneError> {
        Ok(match precision {
            Precision::F32 => None,
            half => Some((self.weight.to_dtype(half.dtype())?, self.bias.to_dtype(half.dtype())?)),
        })
    }

    /// Prepares the weights of `conv_impl`: for [`ConvImpl::Im2colNhwc`] the matrix-product form
    /// for `kernel`, plus the Winograd form of a 3×3, stride-1, pad-1 convolution when `winograd`.
    fn prepare(&mut self, conv_impl: ConvImpl, winograd: bool, kernel: GemmKernel) -> Result<(), BackboneError> {
        if conv_impl != ConvImpl::Im2colNhwc {
            return Ok(());
        }
        if self.gemm.as_ref().is_none_or(|g| g.gemm_kernel() != kernel) {
            self.gemm = Some(nhwc::GemmConv::with_kernel(&self.weight, &self.bias, self.stride, self.padding, kernel)?);
        }
        let (_, _, kh, kw) = self.weight.dims4()?;
        let eligible = (kh, kw, self.stride, self.padding) == (3, 3, 1, 1);
        if !(winograd && eligible) {
            self.winograd = None;
        } else if self.winograd.as_ref().is_none_or(|w| w.gemm_kernel() != kernel) {
            self.winograd = Some(Winograd3x3::with_kernel(&self.weight, &self.bias, kernel)?);
        }
        Ok(())
    }

    /// NCHW in, NCHW out (no activation), in the precision of `x`: f32, or the half precision
    /// the weights were cast to.
    fn forward_nchw(&self, x: &Tensor) -> Result<Tensor, BackboneError> {
        let c_out = self.c_out();
        let (weight, bias) = match &self.half {
            Some((weight, bias)) => (weight, bias),
            None => (&self.weight, &self.bias),
        };
        let y = precision::conv2d(x, weight, self.padding, self.stride)?;
        Ok(y.broadcast_add(&bias.reshape((1, c_out, 1, 1))?)?)
    }

    /// NHWC in, NHWC out: `relu?(conv(x) + bias [+ residual])`, in one fused op. Runs inside
    /// a trace-level span `conv` whose fields name the layer's shape (for per-layer timing:
    /// `conv_speed -- N resnet-layers`; nothing is recorded unless a subscriber enables it).
    fn forward_nhwc(&self, x: &Tensor, residual: Option<&Tensor>, relu: bool) -> Result<Tensor, BackboneError> {
        let winograd = self.winograd.as_ref().filter(|_| residual.is_none());
        let _span = tracing::trace_span!(
            "conv",
            kernel = self.weight.dims().get(2).copied().unwrap_or(0),
            stride = self.stride,
            c_in = x.dims().get(3).copied().unwrap_or(0),
            c_out = self.c_out(),
            side = x.dims().get(1).copied().unwrap_or(0),
            residual = residual.is_some(),
            winograd = winograd.is_some(),
        )
        .entered();
        if let Some(winograd) = winograd {
            // With the `gemm` crate, image by image, so that an image's result does not depend
            // on the batch (the products' `gemm` calls span the tiles of several images
            // otherwise); the packed products give every value the same bits in any batch.
            let schedule = Schedule::for_shape(winograd.c_in(), winograd.c_out());
            let images = x.dim(0)?;
            if images <= 1 || winograd.gemm_kernel().is_packed() {
                return Ok(winograd.forward_with(x, false, relu, schedule)?);
            }
            let maps = (0..images)
                .map(|i| winograd.forward_with(&x.narrow(0, i, 1)?, false, relu, schedule))
                .collect::<candle_core::Result<Vec<_>>>()?;
            return Ok(Tensor::cat(&maps, 0)?);
        }
        let Some(gemm) = &self.gemm else {
            return Err(BackboneError::Input("im2col weights were not prepared".into()));
        };
        Ok(gemm.forward(x, residual, relu)?)
    }
}

/// Folds BatchNorm statistics into a bias-free convolution (computed in f64, stored in f32).
/// `gamma`, `beta`, `mean`, `var` have `C_out` entries; `weight` is OIHW, flattened.
fn fold_batch_norm(
    weight: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f64,
) -> (Vec<f32>, Vec<f32>) {
    let c_out = gamma.len();
    let per_out = weight.len() / c_out.max(1);
    let scale: Vec<f64> = gamma.iter().zip(var).map(|(&g, &v)| g as f64 / (v as f64 + eps).sqrt()).collect();
    let w = weight
        .chunks(per_out)
        .zip(&scale)
        .flat_map(|(row, &s)| row.iter().map(move |&x| (x as f64 * s) as f32))
        .collect();
    let b = beta.iter().zip(mean).zip(&scale).map(|((&b, &m), &s)| (b as f64 - m as f64 * s) as f32).collect();
    (w, b)
}

/// The random tensor `name` of `shape` for [`ResNet::random`]: conv weights uniform in
/// ±√(6 / fan-in), BatchNorm scales in [0.5, 1), variances in [0.5, 1.5), shifts and means in ±0.1.
fn random_tensor(rng: &mut rand_chacha::ChaCha8Rng, name: &str, shape: &[usize]) -> Result<Tensor, BackboneError> {
    let len: usize = shape.iter().product();
    let v: Vec<f32> = if shape.len() > 1 {
        let fan_in: usize = shape[1..].iter().product();
        let bound = (6.0 / fan_in as f32).sqrt();
        (0..len).map(|_| rng.random_range(-bound..bound)).collect()
    } else if name.ends_with(".weight") {
        (0..len).map(|_| rng.random_range(0.5..1.0)).collect()
    } else if name.ends_with(".running_var") {
        (0..len).map(|_| rng.random_range(0.5..1.5)).collect()
    } else {
        (0..len).map(|_| rng.random_range(-0.1..0.1)).collect()
    };
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// How the builder gets a tensor: name and expected shape → an f32 CPU tensor of that shape.
type Fetch<'a> = dyn FnMut(&str, &[usize]) -> Result<Tensor, BackboneError> + 'a;

/// Errors about the value range of a loaded tensor (negative variance).
type RangeError<'a> = dyn Fn(&str, &str) -> BackboneError + 'a;

fn values(t: &Tensor) -> Result<Vec<f32>, BackboneError> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// Loads `{conv}.weight` and the BatchNorm `{bn}.{weight,bias,running_mean,running_var}` and folds them.
#[allow(clippy::too_many_arguments)]
fn load_conv_bn(
    fetch: &mut Fetch<'_>,
    range_error: &RangeError<'_>,
    conv: &str,
    bn: &str,
    shape: [usize; 4],
    stride: usize,
    padding: usize,
    device: &Device,
) -> Result<FoldedConv, BackboneError> {
    let c_out = shape[0];
    let weight = values(&fetch(&format!("{conv}.weight"), &shape)?)?;
    let gamma = values(&fetch(&format!("{bn}.weight"), &[c_out])?)?;
    let beta = values(&fetch(&format!("{bn}.bias"), &[c_out])?)?;
    let mean = values(&fetch(&format!("{bn}.running_mean"), &[c_out])?)?;
    let var_name = format!("{bn}.running_var");
    let var = values(&fetch(&var_name, &[c_out])?)?;
    if var.iter().any(|&v| v < 0.0) {
        return Err(range_error(&var_name, "has negative values (a variance must be ≥ 0)"));
    }
    let (w, b) = fold_batch_norm(&weight, &gamma, &beta, &mean, &var, BATCH_NORM_EPS);
    // Folded on the CPU, stored on the model's device.
    Ok(FoldedConv::new(Tensor::from_vec(w, &shape, device)?, Tensor::from_vec(b, c_out, device)?, stride, padding))
}

/// One residual block: main-path convs (2 or 3) and the optional downsample shortcut.
struct Block {
    convs: Vec<FoldedConv>,
    downsample: Option<FoldedConv>,
}

impl Block {
    fn convs(&self) -> impl Iterator<Item = &FoldedConv> {
        self.convs.iter().chain(self.downsample.as_ref())
    }

    fn convs_mut(&mut self) -> impl Iterator<Item = &mut FoldedConv> {
        self.convs.iter_mut().chain(self.downsample.as_mut())
    }

    /// Returns the residual sum before the final ReLU. `x` is post-ReLU.
    fn forward_nchw(&self, x: &Tensor) -> Result<Tensor, BackboneError> {
        let mut y = x.clone();
        let last = self.convs.len() - 1;
        for (i, conv) in self.convs.iter().enumerate() {
            y = conv.forward_nchw(&y)?;
            if i < last {
                y = y.relu()?;
            }
        }
        let shortcut = match &self.downsample {
            Some(d) => d.forward_nchw(x)?,
            None => x.clone(),
        };
        Ok((y + shortcut)?)
    }

    /// NHWC: returns the residual sum before the final ReLU if `keep_sum`, and the block output
    /// after it. Bias, residual and ReLU are fused into the convolutions.
    fn forward_nhwc(&self, x: &Tensor, keep_sum: bool) -> Result<(Option<Tensor>, Tensor), BackboneError> {
        let mut y = x.clone();
        let last = self.convs.len() - 1;
        for conv in &self.convs[..last] {
            y = conv.forward_nhwc(&y, None, true)?;
        }
        let shortcut = match &self.downsample {
            Some(d) => d.forward_nhwc(x, None, false)?,
            None => x.clone(),
        };
        if keep_sum {
            let sum = self.convs[last].forward_nhwc(&y, Some(&shortcut), false)?;
            let out = sum.relu()?;
            Ok((Some(sum), out))
        } else {
            Ok((None, self.convs[last].forward_nhwc(&y, Some(&shortcut), true)?))
        }
    }
}

/// A torchvision ResNet (v1.5) with folded BatchNorm, returning stage outputs `layer1` … `layer4`,
/// their pre-ReLU residual sums `layerN.pre_relu` and the block outputs `layerN.B` (tap order: see
/// the module docs).
///
/// Computes in f32 by default; [`Backbone::set_precision`] switches to f16 or bf16 (meant for
/// GPUs; on the CPU half precision runs [`ConvImpl::Candle`], slower than the f32 fast path).
pub struct ResNet {
    depth: ResNetDepth,
    stem: FoldedConv,
    stages: Vec<Vec<Block>>,
    meta: BackboneMeta,
    /// Parallel to `meta.taps`.
    specs: Vec<TapSpec>,
    /// The implementation used in f32 (half precision always uses [`ConvImpl::Candle`]).
    conv_impl: ConvImpl,
    precision: Precision,
    /// Whether [`ConvImpl::Im2colNhwc`] uses Winograd where it can ([`ResNet::with_winograd`]).
    winograd: bool,
    /// The matrix product of [`ConvImpl::Im2colNhwc`]'s other convolutions
    /// ([`ResNet::with_gemm_kernel`]).
    gemm_kernel: GemmKernel,
}

/// What a tap holds: a block's output after its ReLU, or its residual sum before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TapKind {
    PostRelu,
    PreRelu,
}

/// Where a tap is computed: stage and block (0-based) and which tensor of that block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TapSpec {
    stage: usize,
    block: usize,
    kind: TapKind,
}

/// The taps of `depth`, in the order of the module docs: per stage `layerN.0` … `layerN.{B−1}`,
/// `layerN.pre_relu`, `layerN`.
fn tap_specs(depth: ResNetDepth) -> Vec<(String, TapSpec)> {
    let mut out = Vec::new();
    for (stage, &blocks) in depth.blocks().iter().enumerate() {
        let n = stage + 1;
        for block in 0..blocks {
            out.push((format!("layer{n}.{block}"), TapSpec { stage, block, kind: TapKind::PostRelu }));
        }
        let block = blocks - 1;
        out.push((format!("layer{n}.pre_relu"), TapSpec { stage, block, kind: TapKind::PreRelu }));
        out.push((format!("layer{n}"), TapSpec { stage, block, kind: TapKind::PostRelu }));
    }
    out
}

impl ResNet {
    /// Loads a ResNet of `depth` from `source` (see [`resolve_weights`]) onto `device`, using
    /// [`ConvImpl::default_for`] the device.
    pub fn load(depth: ResNetDepth, source: &WeightSource, device: &Device) -> Result<Self, BackboneError> {
        Self::load_file(depth, &resolve_weights(source)?, device)
    }

    /// Loads `source` after detecting its depth from the tensor names ([`ResNet::detect_depth`]).
    /// Reads the file twice (once for the names).
    pub fn load_auto(source: &WeightSource, device: &Device) -> Result<Self, BackboneError> {
        let path = resolve_weights(source)?;
        let depth = Self::detect_depth_file(&path)?;
        Self::load_file(depth, &path, device)
    }

    /// Loads a safetensors file with torchvision/timm names (`conv1.weight`, `bn1.*`,
    /// `layerS.B.convK.weight`, `layerS.B.bnK.{weight,bias,running_mean,running_var}`,
    /// `layerS.0.downsample.{0,1}.*`), all f32; `fc.*`, `num_batches_tracked` and any other
    /// tensors are ignored. BatchNorm is folded into the convolutions here.
    pub fn load_file(depth: ResNetDepth, path: &Path, device: &Device) -> Result<Self, BackboneError> {
        let file = WeightFile::read(path)?;
        let tensors = file.tensors()?;
        let mut fetch = |name: &str, shape: &[usize]| tensors.f32(name, shape, &Device::Cpu);
        let range_error = |tensor: &str, what: &str| BackboneError::InvalidWeightFile {
            path: path.to_path_buf(),
            message: format!("tensor `{tensor}` {what}"),
        };
        let conv_impl = ConvImpl::default_for(device);
        let model = Self::build(depth, 1, &mut fetch, &range_error, file.digest().to_string(), device, conv_impl)?;
        tracing::info!(path = %path.display(), depth = depth.name(), ?conv_impl, "loaded ResNet weights");
        Ok(model)
    }

    /// A ResNet of `depth` with random weights and BatchNorm statistics (seeded) and every width
    /// divided by `width_divisor` (at least 1 channel), for tests and benchmarks. Its digest names
    /// the depth, divisor and seed.
    pub fn random(depth: ResNetDepth, width_divisor: usize, seed: u64, device: &Device) -> Result<Self, BackboneError> {
        if width_divisor == 0 {
            return Err(BackboneError::Input("width divisor must be at least 1".into()));
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut fetch = |name: &str, shape: &[usize]| random_tensor(&mut rng, name, shape);
        let range_error = |tensor: &str, what: &str| BackboneError::Input(format!("tensor `{tensor}` {what}"));
        let digest = blake3::hash(format!("{depth}-random/divisor={width_divisor}/seed={seed}").as_bytes());
        let conv_impl = ConvImpl::default_for(device);
        Self::build(depth, width_divisor, &mut fetch, &range_error, digest.to_hex().to_string(), device, conv_impl)
    }

    /// The unfolded torchvision state dict (conv weights and BatchNorm statistics, f32 CPU
    /// tensors, in load order) behind [`ResNet::random`] with the same arguments. At full width
    /// (`width_divisor` 1) a file of these tensors loads with [`ResNet::load_file`] into the same
    /// network, e.g. to run the same weights in another engine.
    pub fn random_state_dict(
        depth: ResNetDepth,
        width_divisor: usize,
        seed: u64,
    ) -> Result<Vec<(String, Tensor)>, BackboneError> {
        if width_divisor == 0 {
            return Err(BackboneError::Input("width divisor must be at least 1".into()));
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut tensors = Vec::new();
        let mut fetch = |name: &str, shape: &[usize]| {
            let t = random_tensor(&mut rng, name, shape)?;
            tensors.push((name.to_string(), t.clone()));
            Ok(t)
        };
        let range_error = |tensor: &str, what: &str| BackboneError::Input(format!("tensor `{tensor}` {what}"));
        Self::build(depth, width_divisor, &mut fetch, &range_error, String::new(), &Device::Cpu, ConvImpl::Candle)?;
        Ok(tensors)
    }

    fn build(
        depth: ResNetDepth,
        width_divisor: usize,
        fetch: &mut Fetch<'_>,
        range_error: &RangeError<'_>,
        digest: String,
        device: &Device,
        conv_impl: ConvImpl,
    ) -> Result<Self, BackboneError> {
        let width = |c: usize| (c / width_divisor).max(1);
        let gemm_kernel = GemmKernel::best();
        let stem_c = width(64);
        let mut stem = load_conv_bn(fetch, range_error, "conv1", "bn1", [stem_c, 3, 7, 7], 2, 3, device)?;
        stem.prepare(conv_impl, true, gemm_kernel)?;
        let expansion = if depth.bottleneck() { 4 } else { 1 };
        let mut c_in = stem_c;
        let mut stages = Vec::with_capacity(4);
        for (s, &blocks) in depth.blocks().iter().enumerate() {
            let planes = width(64 << s);
            let c_out = planes * expansion;
            let mut stage = Vec::with_capacity(blocks);
            for b in 0..blocks {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                let p = format!("layer{}.{b}", s + 1);
                // (shape, stride, padding) of convN with bnN, N = 1, 2, (3); stride on the 3×3 (v1.5).
                let shapes: Vec<([usize; 4], usize, usize)> = if depth.bottleneck() {
                    vec![
                        ([planes, c_in, 1, 1], 1, 0),
                        ([planes, planes, 3, 3], stride, 1),
                        ([c_out, planes, 1, 1], 1, 0),
                    ]
                } else {
                    vec![([planes, c_in, 3, 3], stride, 1), ([c_out, planes, 3, 3], 1, 1)]
                };
                let convs = shapes
                    .into_iter()
                    .enumerate()
                    .map(|(i, (shape, stride, padding))| {
                        let n = i + 1;
                        let (conv, bn) = (format!("{p}.conv{n}"), format!("{p}.bn{n}"));
                        load_conv_bn(fetch, range_error, &conv, &bn, shape, stride, padding, device)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let downsample = if stride != 1 || c_in != c_out {
                    Some(load_conv_bn(
                        fetch,
                        range_error,
                        &format!("{p}.downsample.0"),
                        &format!("{p}.downsample.1"),
                        [c_out, c_in, 1, 1],
                        stride,
                        0,
                        device,
                    )?)
                } else {
                    None
                };
                let mut block = Block { convs, downsample };
                for conv in block.convs_mut() {
                    conv.prepare(conv_impl, true, gemm_kernel)?;
                }
                stage.push(block);
                c_in = c_out;
            }
            stages.push(stage);
        }
        let (names, specs): (Vec<String>, Vec<TapSpec>) = tap_specs(depth).into_iter().unzip();
        let taps = names
            .into_iter()
            .zip(&specs)
            .map(|(name, spec)| TapInfo {
                name,
                channels: width(64 << spec.stage) * expansion,
                geometry: tap_geometry(&depth.main_path_through(spec.stage, spec.block)),
            })
            .collect();
        Ok(ResNet {
            depth,
            stem,
            stages,
            meta: BackboneMeta { taps, device: device.clone(), digest },
            specs,
            conv_impl,
            precision: Precision::F32,
            winograd: true,
            gemm_kernel,
        })
    }

    /// Which standard ResNet a state dict describes, from its tensor names and shapes: blocks per
    /// stage (`layerS.B.*`), and basic vs bottleneck blocks (`layer1.0.conv3.weight` present).
    /// Other tensors (`fc.*`, …) are ignored. An error names what was found when it is no
    /// standard depth.
    pub fn detect_depth<'a, I>(tensors: I) -> Result<ResNetDepth, BackboneError>
    where
        I: IntoIterator<Item = (&'a str, &'a [usize])>,
    {
        let mut blocks = [0usize; 4];
        let mut has_conv3 = false;
        let mut has_conv1 = false;
        let mut conv1_shape = Vec::new();
        for (name, shape) in tensors {
            if name == "conv1.weight" {
                has_conv1 = true;
                conv1_shape = shape.to_vec();
            }
            if name == "layer1.0.conv3.weight" {
                has_conv3 = true;
            }
            let Some(rest) = name.strip_prefix("layer") else { continue };
            let mut parts = rest.split('.');
            let (Some(stage), Some(block)) = (parts.next(), parts.next()) else { continue };
            let (Ok(stage), Ok(block)) = (stage.parse::<usize>(), block.parse::<usize>()) else { continue };
            if (1..=4).contains(&stage) {
                blocks[stage - 1] = blocks[stage - 1].max(block + 1);
            }
        }
        let found = ResNetDepth::ALL.into_iter().find(|d| d.blocks() == blocks && d.bottleneck() == has_conv3);
        match found {
            Some(depth) if has_conv1 && conv1_shape.len() == 4 => Ok(depth),
            _ => Err(BackboneError::Input(format!(
                "not a torchvision ResNet state dict: conv1.weight {}, blocks per stage {blocks:?}, {} blocks \
                 (known: resnet18/34 basic [2,2,2,2]/[3,4,6,3]; resnet50/101/152 bottleneck [3,4,6,3]/[3,4,23,3]/[3,8,36,3])",
                if has_conv1 { format!("{conv1_shape:?}") } else { "missing".into() },
                if has_conv3 { "bottleneck" } else { "basic" }
            ))),
        }
    }

    /// [`ResNet::detect_depth`] on the tensors of a safetensors file.
    pub fn detect_depth_file(path: &Path) -> Result<ResNetDepth, BackboneError> {
        let bytes = std::fs::read(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => BackboneError::MissingFile { path: path.to_path_buf() },
            _ => BackboneError::Io { path: path.to_path_buf(), source },
        })?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| BackboneError::InvalidWeightFile { path: path.to_path_buf(), message: e.to_string() })?;
        let tensors = st.tensors();
        Self::detect_depth(tensors.iter().map(|(n, v)| (n.as_str(), v.shape()))).map_err(|e| match e {
            BackboneError::Input(message) => BackboneError::InvalidWeightFile { path: path.to_path_buf(), message },
            other => other,
        })
    }

    /// The depth of this network.
    pub fn depth(&self) -> ResNetDepth {
        self.depth
    }

    /// Chooses the convolution implementation; [`ConvImpl::Im2colNhwc`] needs a CPU device and
    /// [`Precision::F32`].
    pub fn with_conv_impl(mut self, conv_impl: ConvImpl) -> Result<Self, BackboneError> {
        check_conv_impl(conv_impl, &self.meta.device, self.precision)?;
        self.conv_impl = conv_impl;
        self.prepare_all()?;
        Ok(self)
    }

    /// Turns the Winograd kernel of [`ConvImpl::Im2colNhwc`] (3×3 stride-1 convolutions without
    /// a residual) off, so that every convolution runs the matrix-product form, or back on (the
    /// default). For benchmarks comparing the two.
    #[doc(hidden)]
    pub fn with_winograd(mut self, winograd: bool) -> Result<Self, BackboneError> {
        self.winograd = winograd;
        self.prepare_all()?;
        Ok(self)
    }

    /// Chooses the matrix product of [`ConvImpl::Im2colNhwc`]'s convolutions other than the
    /// Winograd ones: [`GemmKernel::Packed`] (the default on AVX-512 CPUs, an error elsewhere)
    /// or [`GemmKernel::Portable`]. For benchmarks comparing the two.
    #[doc(hidden)]
    pub fn with_gemm_kernel(mut self, kernel: GemmKernel) -> Result<Self, BackboneError> {
        self.gemm_kernel = kernel;
        self.prepare_all()?;
        Ok(self)
    }

    fn prepare_all(&mut self) -> Result<(), BackboneError> {
        let (conv_impl, winograd, kernel) = (self.conv_impl, self.winograd, self.gemm_kernel);
        self.stem.prepare(conv_impl, winograd, kernel)?;
        for block in self.stages.iter_mut().flatten() {
            for conv in block.convs_mut() {
                conv.prepare(conv_impl, winograd, kernel)?;
            }
        }
        Ok(())
    }

    /// The convolution implementation in use: the one chosen for f32 (by default
    /// [`ConvImpl::default_for`] the device; [`ResNet::with_conv_impl`]), or [`ConvImpl::Candle`]
    /// while the model computes in half precision.
    pub fn conv_impl(&self) -> ConvImpl {
        effective_conv_impl(self.conv_impl, self.precision)
    }

    /// Every convolution, stem first, in a fixed order.
    fn convs(&self) -> impl Iterator<Item = &FoldedConv> {
        std::iter::once(&self.stem).chain(self.stages.iter().flatten().flat_map(Block::convs))
    }

    /// [`ResNet::convs`], mutable, in the same order.
    fn convs_mut(&mut self) -> impl Iterator<Item = &mut FoldedConv> {
        std::iter::once(&mut self.stem).chain(self.stages.iter_mut().flatten().flat_map(Block::convs_mut))
    }

    fn tap_index(&self, name: &str) -> Result<usize, BackboneError> {
        self.meta.tap_index(name, self.depth.name())
    }

    /// 0-based index of block `block` of stage `stage` counted over the whole network.
    fn flat_block(&self, stage: usize, block: usize) -> usize {
        self.depth.blocks()[..stage].iter().sum::<usize>() + block
    }

    /// Checks an NCHW f32 input with 3 channels that is large enough to reach the tap `deepest`;
    /// returns it on this model's device, in its precision.
    fn checked_input(&self, input: &Tensor, deepest: usize) -> Result<Tensor, BackboneError> {
        let size = check_image_batch(input)?;
        let spec = self.specs[deepest];
        check_reaches(&self.depth.main_path_through(spec.stage, spec.block), size, &self.meta.taps[deepest].name)?;
        Ok(input.to_device(&self.meta.device)?.to_dtype(self.precision.dtype())?)
    }

    /// Runs the network through the block of the deepest wanted tap; returns, per tap index
    /// (`wanted` is parallel to the taps), the NCHW map if wanted.
    fn run(&self, input: &Tensor, wanted: &[bool]) -> Result<Vec<Option<Tensor>>, BackboneError> {
        match self.conv_impl() {
            ConvImpl::Candle => self.run_one(input.clone(), wanted, false),
            // The whole batch at once: the packed product (of the convolutions and of Winograd's
            // 16 products) gives every output pixel the same bits whatever the other rows of its
            // call, so each image's maps are bit for bit those it gets alone.
            ConvImpl::Im2colNhwc if self.gemm_kernel.is_packed() => {
                nhwc::on_pool(|| self.run_one(input.permute((0, 2, 3, 1))?.contiguous()?, wanted, true))
            }
            ConvImpl::Im2colNhwc => nhwc::on_pool(|| {
                let mut per_tap: Vec<Vec<Tensor>> = vec![Vec::new(); wanted.len()];
                // One image at a time: the `gemm` crate's blocking may depend on the row count,
                // which would couple the images' results to the batch composition.
                for i in 0..input.dim(0)? {
                    let x = input.narrow(0, i, 1)?.permute((0, 2, 3, 1))?.contiguous()?;
                    for (acc, out) in per_tap.iter_mut().zip(self.run_one(x, wanted, true)?) {
                        acc.extend(out);
                    }
                }
                per_tap
                    .into_iter()
                    .map(|maps| if maps.is_empty() { Ok(None) } else { Ok(Some(Tensor::cat(&maps, 0)?)) })
                    .collect()
            }),
        }
    }

    /// One pass, NCHW (`nhwc == false`) or NHWC; outputs are NCHW either way. `wanted` is
    /// parallel to the taps.
    fn run_one(&self, x: Tensor, wanted: &[bool], nhwc: bool) -> Result<Vec<Option<Tensor>>, BackboneError> {
        let mut outs = vec![None; wanted.len()];
        let wanted_specs: Vec<(usize, TapSpec)> =
            self.specs.iter().copied().enumerate().filter(|&(i, _)| wanted.get(i).copied().unwrap_or(false)).collect();
        let Some(last) = wanted_specs.iter().map(|(_, t)| self.flat_block(t.stage, t.block)).max() else {
            return Ok(outs);
        };
        let to_nchw = |t: &Tensor| -> Result<Tensor, BackboneError> {
            Ok(if nhwc { t.permute((0, 3, 1, 2))?.contiguous()? } else { t.clone() })
        };
        let mut x = if nhwc {
            self.stem.forward_nhwc(&x, None, true)?.apply_op1_no_bwd(&MaxPool3x3s2)?
        } else {
            // After the ReLU every value is ≥ 0, so zero padding equals PyTorch's −∞ padding.
            let y = self.stem.forward_nchw(&x)?.relu()?;
            y.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?.max_pool2d_with_stride(3, 2)?
        };
        let mut flat = 0;
        for (s, stage) in self.stages.iter().enumerate() {
            for (b, block) in stage.iter().enumerate() {
                if flat > last {
                    return Ok(outs);
                }
                let here = || wanted_specs.iter().filter(|(_, t)| t.stage == s && t.block == b);
                let sum = if nhwc {
                    let keep_sum = here().any(|(_, t)| t.kind == TapKind::PreRelu);
                    let (sum, out) = block.forward_nhwc(&x, keep_sum)?;
                    x = out;
                    sum
                } else {
                    let sum = block.forward_nchw(&x)?;
                    x = sum.relu()?;
                    Some(sum)
                };
                for &(i, spec) in here() {
                    let t = match (spec.kind, &sum) {
                        (TapKind::PreRelu, Some(sum)) => sum,
                        (TapKind::PreRelu, None) => {
                            return Err(BackboneError::Input(format!("tap {} was not kept", self.meta.taps[i].name)))
                        }
                        (TapKind::PostRelu, _) => &x,
                    };
                    outs[i] = Some(to_nchw(t)?);
                }
                flat += 1;
            }
        }
        Ok(outs)
    }
}

impl std::fmt::Debug for ResNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResNet")
            .field("depth", &self.depth)
            .field("device", &self.meta.device)
            .field("digest", &self.meta.digest)
            .field("conv_impl", &self.conv_impl())
            .field("precision", &self.precision)
            .finish_non_exhaustive()
    }
}

impl Backbone for ResNet {
    fn name(&self) -> &str {
        self.depth.name()
    }

    fn meta(&self) -> &BackboneMeta {
        &self.meta
    }

    fn tap_map_size(&self, tap: &str, input_size: usize) -> Result<usize, BackboneError> {
        let spec = self.specs[self.tap_index(tap)?];
        map_size(&self.depth.main_path_through(spec.stage, spec.block), input_size)
            .ok_or_else(|| BackboneError::Input(format!("input side {input_size} is too small to reach {tap}")))
    }

    fn forward_taps(&self, input: &Tensor, taps: &[&str]) -> Result<Vec<Tensor>, BackboneError> {
        let indices = taps.iter().map(|t| self.tap_index(t)).collect::<Result<Vec<_>, _>>()?;
        let Some(&deepest) = indices.iter().max_by_key(|&&i| {
            let spec = self.specs[i];
            self.flat_block(spec.stage, spec.block)
        }) else {
            return Ok(Vec::new());
        };
        let input = self.checked_input(input, deepest)?;
        let mut wanted = vec![false; self.meta.taps.len()];
        indices.iter().for_each(|&i| wanted[i] = true);
        let outs = self.run(&input, &wanted)?;
        indices
            .iter()
            .map(|&i| match &outs[i] {
                Some(t) => Ok(t.to_dtype(DType::F32)?),
                None => Err(BackboneError::Input(format!("tap {} was not computed", self.meta.taps[i].name))),
            })
            .collect()
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn set_precision(&mut self, precision: Precision) -> Result<(), BackboneError> {
        // Cast everything first, so that a failure (out of GPU memory) leaves the model as it was.
        let cast = self.convs().map(|conv| conv.cast(precision)).collect::<Result<Vec<_>, _>>()?;
        for (conv, half) in self.convs_mut().zip(cast) {
            conv.half = half;
        }
        self.precision = precision;
        Ok(())
    }
}

/// Borrow the contiguous `f32` data of a CPU storage.
fn contiguous_f32<'a>(op: &'static str, storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: only f32 tensors are supported, got {:?}", storage.dtype())
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: the input must be contiguous")
    };
    Ok(&data[start..end])
}

/// 3×3, stride-2, pad-1 max-pool of an NHWC tensor (padding ignored, as PyTorch's −∞ padding).
struct MaxPool3x3s2;

impl CustomOp1 for MaxPool3x3s2 {
    fn name(&self) -> &'static str {
        "maxpool3x3s2-nhwc"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(self.name(), storage, layout)?;
        let (n, h, w, c) = layout.shape().dims4()?;
        let (oh, ow) = ((h + 2 - 3) / 2 + 1, (w + 2 - 3) / 2 + 1);
        let mut out = vec![f32::NEG_INFINITY; n * oh * ow * c];
        if !out.is_empty() {
            out.par_chunks_mut(ow * c).enumerate().for_each(|(out_row, chunk)| {
                let (b, oy) = (out_row / oh, out_row % oh);
                for ox in 0..ow {
                    let d = &mut chunk[ox * c..(ox + 1) * c];
                    for sy in (2 * oy).saturating_sub(1)..(2 * oy + 2).min(h) {
                        for sx in (2 * ox).saturating_sub(1)..(2 * ox + 2).min(w) {
                            let s = &src[((b * h + sy) * w + sx) * c..][..c];
                            d.iter_mut().zip(s).for_each(|(d, &s)| *d = d.max(s));
                        }
                    }
                }
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((n, oh, ow, c))))
    }
}

impl ResNetDepth {
    /// Names and shapes of the f32 tensors the loader reads from a torchvision state dict of this
    /// depth (full width; `fc.*` and `num_batches_tracked` not included). Useful to build test files.
    pub fn state_dict_shapes(self) -> BTreeMap<String, Vec<usize>> {
        let depth = self;
        let mut out = BTreeMap::new();
        let mut conv_bn = |conv: String, bn: String, shape: Vec<usize>| {
            let c = shape[0];
            out.insert(format!("{conv}.weight"), shape);
            for field in ["weight", "bias", "running_mean", "running_var"] {
                out.insert(format!("{bn}.{field}"), vec![c]);
            }
        };
        conv_bn("conv1".into(), "bn1".into(), vec![64, 3, 7, 7]);
        let expansion = if depth.bottleneck() { 4 } else { 1 };
        let mut c_in = 64;
        for (s, &blocks) in depth.blocks().iter().enumerate() {
            let planes = 64 << s;
            let c_out = planes * expansion;
            for b in 0..blocks {
                let p = format!("layer{}.{b}", s + 1);
                let cb = |k: usize| (format!("{p}.conv{k}"), format!("{p}.bn{k}"));
                let shapes = if depth.bottleneck() {
                    vec![vec![planes, c_in, 1, 1], vec![planes, planes, 3, 3], vec![c_out, planes, 1, 1]]
                } else {
                    vec![vec![planes, c_in, 3, 3], vec![c_out, planes, 3, 3]]
                };
                for (k, shape) in shapes.into_iter().enumerate() {
                    let (conv, bn) = cb(k + 1);
                    conv_bn(conv, bn, shape);
                }
                if b == 0 && (s > 0 || c_in != c_out) {
                    conv_bn(format!("{p}.downsample.0"), format!("{p}.downsample.1"), vec![c_out, c_in, 1, 1]);
                }
                c_in = c_out;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(n: usize, side: usize) -> Tensor {
        Tensor::randn(0f32, 1.0, (n, 3, side, side), &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
    }

    fn max_abs(a: &Tensor) -> f32 {
        a.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
    }

    /// Writes `tensors` to a safetensors file in a fresh temp dir.
    fn write_file(tensors: &[(&str, Tensor)]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let map: std::collections::HashMap<String, Tensor> =
            tensors.iter().map(|(n, t)| (n.to_string(), t.clone())).collect();
        candle_core::safetensors::save(&map, &path).unwrap();
        (dir, path)
    }

    #[test]
    fn resnet50_geometry() {
        let model = ResNet::random(ResNetDepth::R50, 32, 1, &Device::Cpu).unwrap();
        assert_eq!(model.name(), "resnet50");
        let geo = |name: &str| {
            let g = model.tap(name).unwrap().geometry;
            (g.stride, g.first_centre, g.receptive_field)
        };
        assert_eq!(geo("layer1"), (4.0, 1.0, 35.0));
        assert_eq!(geo("layer2"), (8.0, 1.0, 91.0));
        assert_eq!(geo("layer3"), (16.0, 1.0, 267.0));
        assert_eq!(geo("layer4"), (32.0, 1.0, 427.0)); // the usual ResNet-50 figure
        assert_eq!(geo("layer3.pre_relu"), geo("layer3"));
        for (tap, side) in [("layer1", 56), ("layer2", 28), ("layer3", 14), ("layer4", 7)] {
            assert_eq!(model.tap_map_size(tap, 224).unwrap(), side, "{tap}");
        }
        // Odd sizes: floor((n − 1)/2) + 1 at every stride-2 layer.
        assert_eq!(model.tap_map_size("layer4", 225).unwrap(), 8);
        assert_eq!(model.tap_map_size("layer4", 1).unwrap(), 1);
        assert!(model.tap_map_size("layer5", 224).is_err());
        let stage_taps: Vec<_> =
            model.taps().iter().filter(|t| !t.name[6..].contains('.') || t.name.ends_with("pre_relu")).collect();
        let names: Vec<_> = stage_taps.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "layer1.pre_relu",
                "layer1",
                "layer2.pre_relu",
                "layer2",
                "layer3.pre_relu",
                "layer3",
                "layer4.pre_relu",
                "layer4"
            ]
        );
        let channels: Vec<_> = stage_taps.iter().map(|t| t.channels).collect();
        assert_eq!(channels, [8, 8, 16, 16, 32, 32, 64, 64]);
        assert_eq!(model.taps().len(), 3 + 4 + 6 + 3 + 8);
        let full = ResNetDepth::R50;
        assert_eq!((full.stage_channels(0), full.stage_channels(3)), (256, 2048));
        let r18 = ResNet::random(ResNetDepth::R18, 16, 1, &Device::Cpu).unwrap();
        let g = r18.tap("layer4").unwrap().geometry;
        assert_eq!((g.stride, g.receptive_field), (32.0, 435.0));
    }

    #[test]
    fn a_batch_gives_each_image_the_bits_it_gets_alone() {
        // Wide enough (width ÷ 4) for several register tiles and panels per layer.
        let x = input(3, 64);
        let taps = ["layer1", "layer2.pre_relu", "layer3.1", "layer4"];
        for kernel in GemmKernel::available() {
            let m = ResNet::random(ResNetDepth::R50, 4, 2, &Device::Cpu).unwrap().with_gemm_kernel(kernel).unwrap();
            let batch = m.forward_taps(&x, &taps).unwrap();
            for i in 0..3 {
                let alone = m.forward_taps(&x.narrow(0, i, 1).unwrap(), &taps).unwrap();
                for ((name, b), a) in taps.iter().zip(&batch).zip(&alone) {
                    let b = b.narrow(0, i, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    assert!(
                        a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{kernel:?} {name}, image {i}: not the bits of the image alone"
                    );
                }
            }
        }
    }

    #[test]
    fn block_taps_follow_torchvision_blocks() {
        let model = ResNet::random(ResNetDepth::R50, 16, 6, &Device::Cpu).unwrap();
        let names: Vec<_> = model.taps().iter().map(|t| t.name.as_str()).take(6).collect();
        assert_eq!(names, ["layer1.0", "layer1.1", "layer1.2", "layer1.pre_relu", "layer1", "layer2.0"]);
        // The last block of a stage is the stage output, bit for bit; batch order is kept.
        let x = input(2, 64);
        for imp in [ConvImpl::Im2colNhwc, ConvImpl::Candle] {
            let m = ResNet::random(ResNetDepth::R50, 16, 6, &Device::Cpu).unwrap().with_conv_impl(imp).unwrap();
            let outs = m.forward_taps(&x, &["layer3", "layer3.5", "layer3.2", "layer2.3", "layer2"]).unwrap();
            assert_eq!(max_diff(&outs[0], &outs[1]), 0.0, "{imp:?}");
            assert_eq!(max_diff(&outs[3], &outs[4]), 0.0, "{imp:?}");
            assert_eq!(outs[2].dims(), &[2, 64, 4, 4]);
            // Block outputs are post-ReLU.
            assert!(outs[2].min_all().unwrap().to_scalar::<f32>().unwrap() >= 0.0);
            // A block tap alone gives the same tensor as with deeper taps.
            let alone = m.forward_taps(&x, &["layer3.2"]).unwrap();
            assert_eq!(max_diff(&alone[0], &outs[2]), 0.0);
        }
        // Geometry: the first block of a stage carries the stride; each block grows the field.
        let geo = |name: &str| {
            let g = model.tap(name).unwrap().geometry;
            (g.stride, g.first_centre, g.receptive_field)
        };
        assert_eq!(geo("layer1.0"), (4.0, 1.0, 19.0)); // 7 + 2·2 (pool) + 2·4 (3×3 at stride 4)
        assert_eq!(geo("layer1.1"), (4.0, 1.0, 27.0));
        assert_eq!(geo("layer1.2"), geo("layer1"));
        assert_eq!(geo("layer3.0"), (16.0, 1.0, 107.0)); // layer2 91 + 2·8
        assert_eq!(geo("layer3.1"), (16.0, 1.0, 139.0));
        assert_eq!(geo("layer3.5"), geo("layer3"));
        assert_eq!(geo("layer4.2"), geo("layer4"));
        for (tap, side) in [("layer1.0", 56), ("layer2.0", 28), ("layer2.3", 28), ("layer3.0", 14), ("layer4.1", 7)] {
            assert_eq!(model.tap_map_size(tap, 224).unwrap(), side, "{tap}");
        }
        assert_eq!(model.tap_map_size("layer4.0", 225).unwrap(), 8);
        assert_eq!(model.tap("layer2.1").unwrap().channels, 512 / 16);
        // Fields never shrink along the tap list.
        let fields: Vec<f64> = model.taps().iter().map(|t| t.geometry.receptive_field).collect();
        assert!(fields.windows(2).all(|w| w[0] <= w[1]), "{fields:?}");
    }

    #[test]
    fn random_state_dict_loads_into_the_random_model() {
        let tensors = ResNet::random_state_dict(ResNetDepth::R18, 1, 7).unwrap();
        assert_eq!(tensors.len(), ResNetDepth::R18.state_dict_shapes().len());
        let refs: Vec<(&str, Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        let (_dir, path) = write_file(&refs);
        let loaded = ResNet::load_file(ResNetDepth::R18, &path, &Device::Cpu).unwrap();
        let random = ResNet::random(ResNetDepth::R18, 1, 7, &Device::Cpu).unwrap();
        let x = input(1, 40);
        let (a, b) = (loaded.forward_taps(&x, &["layer4"]).unwrap(), random.forward_taps(&x, &["layer4"]).unwrap());
        assert_eq!(max_diff(&a[0], &b[0]), 0.0);
        assert!(ResNet::random_state_dict(ResNetDepth::R18, 0, 0).is_err());
    }

    #[test]
    fn map_sizes_match_forward_outputs() {
        for depth in [ResNetDepth::R18, ResNetDepth::R50] {
            let model = ResNet::random(depth, 16, 2, &Device::Cpu).unwrap();
            for side in [1, 7, 33, 50] {
                let outs = model.forward_taps(&input(1, side), &["layer1", "layer2", "layer3", "layer4"]).unwrap();
                for (tap, out) in ["layer1", "layer2", "layer3", "layer4"].iter().zip(&outs) {
                    let s = model.tap_map_size(tap, side).unwrap();
                    assert_eq!(&out.dims()[2..], &[s, s], "{depth} {tap} at {side}");
                }
            }
        }
    }

    #[test]
    fn batch_norm_folding_equals_conv_then_batch_norm() {
        let dev = Device::Cpu;
        let (c_out, c_in) = (5, 3);
        let w = Tensor::randn(0f32, 1.0, (c_out, c_in, 3, 3), &dev).unwrap();
        let gamma = Tensor::rand(0.5f32, 1.5, c_out, &dev).unwrap();
        let beta = Tensor::randn(0f32, 0.3, c_out, &dev).unwrap();
        let mean = Tensor::randn(0f32, 0.3, c_out, &dev).unwrap();
        let var = Tensor::rand(0.01f32, 2.0, c_out, &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, c_in, 9, 7), &dev).unwrap();
        let col = |t: &Tensor| t.reshape((1, c_out, 1, 1)).unwrap();
        let reference = x
            .conv2d(&w, 1, 2, 1, 1)
            .unwrap()
            .broadcast_sub(&col(&mean))
            .unwrap()
            .broadcast_div(&col(&(var.clone() + BATCH_NORM_EPS).unwrap().sqrt().unwrap()))
            .unwrap()
            .broadcast_mul(&col(&gamma))
            .unwrap()
            .broadcast_add(&col(&beta))
            .unwrap();
        let names = ["c.weight", "b.weight", "b.bias", "b.running_mean", "b.running_var"];
        let tensors = [&w, &gamma, &beta, &mean, &var];
        let mut fetch = |name: &str, _: &[usize]| Ok(tensors[names.iter().position(|n| *n == name).unwrap()].clone());
        let range_error = |t: &str, what: &str| BackboneError::Input(format!("{t} {what}"));
        let mut conv = load_conv_bn(&mut fetch, &range_error, "c", "b", [c_out, c_in, 3, 3], 2, 1, &dev).unwrap();
        let folded = conv.forward_nchw(&x).unwrap();
        assert_eq!(folded.dims(), reference.dims());
        assert!(max_diff(&folded, &reference) <= 1e-5 * max_abs(&reference));
        // The NHWC path (general im2col, stride 2) gives the same, with every matrix-product
        // kernel this CPU has.
        let kernels = GemmKernel::available();
        for &kernel in &kernels {
            conv.prepare(ConvImpl::Im2colNhwc, false, kernel).unwrap();
            let x_nhwc = x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
            let fast = conv.forward_nhwc(&x_nhwc, None, false).unwrap().permute((0, 3, 1, 2)).unwrap();
            assert!(max_diff(&fast, &reference) <= 1e-5 * max_abs(&reference), "{kernel:?}");
            // Fused residual and ReLU.
            let residual = Tensor::randn(0f32, 1.0, fast.dims(), &dev).unwrap();
            let res_nhwc = residual.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
            let fused = conv.forward_nhwc(&x_nhwc, Some(&res_nhwc), true).unwrap().permute((0, 3, 1, 2)).unwrap();
            let want = (&reference + residual).unwrap().relu().unwrap();
            assert!(max_diff(&fused, &want) <= 1e-5 * max_abs(&want), "{kernel:?}");
            // 1×1 convolutions, stride 1 (no im2col) and stride 2 (subsampled).
            for stride in [1, 2] {
                let w1 = Tensor::randn(0f32, 1.0, (c_out, c_in, 1, 1), &dev).unwrap();
                let bias = Tensor::randn(0f32, 1.0, c_out, &dev).unwrap();
                let mut conv = FoldedConv::new(w1, bias, stride, 0);
                conv.prepare(ConvImpl::Im2colNhwc, true, kernel).unwrap();
                let want = conv.forward_nchw(&x).unwrap();
                let got = conv.forward_nhwc(&x_nhwc, None, false).unwrap().permute((0, 3, 1, 2)).unwrap();
                assert_eq!(got.dims(), want.dims());
                assert!(max_diff(&got, &want) <= 1e-5 * max_abs(&want), "{kernel:?}: 1×1 stride {stride}");
            }
        }
    }

    #[test]
    fn nhwc_max_pool_matches_padded_candle_pool() {
        let x = Tensor::randn(0f32, 1.0, (2, 3, 9, 8), &Device::Cpu).unwrap();
        let reference =
            x.pad_with_same(2, 1, 1).unwrap().pad_with_same(3, 1, 1).unwrap().max_pool2d_with_stride(3, 2).unwrap();
        let ours = x
            .permute((0, 2, 3, 1))
            .unwrap()
            .contiguous()
            .unwrap()
            .apply_op1_no_bwd(&MaxPool3x3s2)
            .unwrap()
            .permute((0, 3, 1, 2))
            .unwrap();
        assert_eq!(ours.dims(), &[2, 3, 5, 4]);
        assert_eq!(max_diff(&ours, &reference), 0.0);
    }

    #[test]
    fn both_conv_paths_agree_and_keep_request_order() {
        for depth in [ResNetDepth::R18, ResNetDepth::R50] {
            let x = input(2, 45);
            let taps = ["layer4", "layer1.pre_relu", "layer3", "layer2", "layer4.pre_relu"];
            let fast = ResNet::random(depth, 16, 3, &Device::Cpu).unwrap();
            assert_eq!(fast.conv_impl(), ConvImpl::Im2colNhwc);
            let stock = ResNet::random(depth, 16, 3, &Device::Cpu).unwrap().with_conv_impl(ConvImpl::Candle).unwrap();
            let (a, b) = (fast.forward_taps(&x, &taps).unwrap(), stock.forward_taps(&x, &taps).unwrap());
            for ((tap, a), b) in taps.iter().zip(&a).zip(&b) {
                assert_eq!(a.dims(), b.dims(), "{tap}");
                assert!(max_diff(a, b) <= 1e-5 * max_abs(b), "{depth} {tap}");
            }
            assert_eq!(a[0].dims()[..2], [2, fast.tap("layer4").unwrap().channels]);
            // Pre-ReLU maps have negative values; stage outputs are the ReLU of them.
            assert!(a[1].min_all().unwrap().to_scalar::<f32>().unwrap() < 0.0);
            assert_eq!(max_diff(&a[4].relu().unwrap(), &a[0]), 0.0);
            // Batch results equal single-image results.
            let single = fast.forward_taps(&x.narrow(0, 1, 1).unwrap(), &["layer3"]).unwrap();
            assert_eq!(max_diff(&single[0], &a[2].narrow(0, 1, 1).unwrap()), 0.0);
        }
    }

    /// The CPU path (Winograd for the 3×3 stride-1 convolutions, gemm for the rest) gives the
    /// same bits for every rayon pool size, and agrees with the all-gemm path.
    #[test]
    fn fast_path_is_bit_identical_across_thread_counts() {
        let model = ResNet::random(ResNetDepth::R50, 4, 8, &Device::Cpu).unwrap();
        let x = input(2, 61);
        let taps = ["layer1", "layer2.pre_relu", "layer3", "layer4"];
        let bits = |threads| crate::testing::tap_bits_with_threads(&model, &x, &taps, threads);
        let one = bits(1);
        assert_eq!(one, bits(2), "1 vs 2 threads");
        assert_eq!(one, bits(3), "1 vs 3 threads");
        let gemm = ResNet::random(ResNetDepth::R50, 4, 8, &Device::Cpu).unwrap().with_winograd(false).unwrap();
        let (a, b) = (model.forward_taps(&x, &taps).unwrap(), gemm.forward_taps(&x, &taps).unwrap());
        for ((tap, a), b) in taps.iter().zip(&a).zip(&b) {
            assert!(max_diff(a, b) <= 1e-5 * max_abs(b), "{tap}");
        }
    }

    #[test]
    fn runs_only_as_deep_as_needed() {
        let model = ResNet::random(ResNetDepth::R18, 16, 4, &Device::Cpu).unwrap();
        for imp in [ConvImpl::Im2colNhwc, ConvImpl::Candle] {
            let m = ResNet::random(ResNetDepth::R18, 16, 4, &Device::Cpu).unwrap().with_conv_impl(imp).unwrap();
            let mut x = input(1, 32);
            if imp == ConvImpl::Im2colNhwc {
                x = x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
            }
            // Only `layer1.1` (block 1 of stage 0) is computed.
            let mut wanted = vec![false; m.taps().len()];
            wanted[m.tap_index("layer1.1").unwrap()] = true;
            let outs = m.run_one(x, &wanted, imp == ConvImpl::Im2colNhwc).unwrap();
            assert_eq!(outs.len(), m.taps().len());
            assert_eq!(outs.iter().filter(|o| o.is_some()).count(), 1);
            assert!(outs[m.tap_index("layer1.1").unwrap()].is_some());
        }
        let tiny = model.forward_taps(&input(1, 4), &["layer1.0", "layer1"]).unwrap();
        assert_eq!(tiny[0].dims(), &[1, 4, 1, 1]);
        assert_eq!(model.forward_taps(&input(1, 4), &["layer3.0"]).unwrap()[0].dims(), &[1, 16, 1, 1]);
        assert!(model.forward_taps(&input(1, 8), &[]).unwrap().is_empty());
    }

    #[test]
    fn bad_inputs_and_taps_are_errors() {
        let model = ResNet::random(ResNetDepth::R18, 16, 5, &Device::Cpu).unwrap();
        let err = model.forward_taps(&input(1, 32), &["layer5"]).unwrap_err().to_string();
        assert!(err.contains("layer5") && err.contains("layer4.pre_relu") && err.contains("resnet18"), "{err}");
        assert!(err.contains("layer1.0…layer1.1, layer1.pre_relu, layer1, layer2.0…layer2.1"), "{err}");
        for bad in ["layer1.2", "layer3.x", "layer0.0", "layer4.pre"] {
            assert!(model.forward_taps(&input(1, 32), &[bad]).is_err(), "{bad}");
            assert!(model.tap_map_size(bad, 224).is_err(), "{bad}");
        }
        let r152 = crate::compact_tap_names(tap_specs(ResNetDepth::R152).iter().map(|(name, _)| name.as_str()));
        assert!(r152.contains("layer3.0…layer3.35, layer3.pre_relu, layer3, layer4.0…layer4.2"), "{r152}");
        let zeros = |shape: &[usize], dtype| Tensor::zeros(shape, dtype, &Device::Cpu).unwrap();
        assert!(model.forward_taps(&zeros(&[1, 4, 8, 8], DType::F32), &["layer1"]).is_err());
        assert!(model.forward_taps(&zeros(&[1, 3, 8, 8], DType::F64), &["layer1"]).is_err());
        assert!(model.forward_taps(&zeros(&[3, 8, 8], DType::F32), &["layer1"]).is_err());
        assert!(ResNet::random(ResNetDepth::R18, 0, 0, &Device::Cpu).is_err());
    }

    #[test]
    fn missing_and_malformed_tensors_name_file_and_tensor() {
        let dev = Device::Cpu;
        let conv1 = Tensor::zeros((64, 3, 7, 7), DType::F32, &dev).unwrap();
        // Missing: bn1.weight is read right after conv1.weight.
        let (_dir, path) = write_file(&[("conv1.weight", conv1.clone())]);
        let err = ResNet::load_file(ResNetDepth::R50, &path, &dev).unwrap_err();
        assert!(matches!(err, BackboneError::MissingTensor { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("`bn1.weight`") && msg.contains(&path.display().to_string()), "{msg}");
        // Wrong shape.
        let (_dir, path) = write_file(&[("conv1.weight", Tensor::zeros((64, 3, 3, 3), DType::F32, &dev).unwrap())]);
        let msg = ResNet::load_file(ResNetDepth::R50, &path, &dev).unwrap_err().to_string();
        assert!(
            msg.contains("`conv1.weight`") && msg.contains("[64, 3, 7, 7]") && msg.contains("[64, 3, 3, 3]"),
            "{msg}"
        );
        // Wrong dtype.
        let (_dir, path) = write_file(&[("conv1.weight", conv1.to_dtype(DType::F16).unwrap())]);
        let msg = ResNet::load_file(ResNetDepth::R50, &path, &dev).unwrap_err().to_string();
        assert!(msg.contains("`conv1.weight`") && msg.contains("F16"), "{msg}");
        // NaN.
        let nan = Tensor::full(f32::NAN, 64, &dev).unwrap();
        let (_dir, path) = write_file(&[("conv1.weight", conv1.clone()), ("bn1.weight", nan)]);
        let err = ResNet::load_file(ResNetDepth::R50, &path, &dev).unwrap_err();
        assert!(matches!(err, BackboneError::NonFiniteWeights { .. }) && err.to_string().contains("`bn1.weight`"));
        // Negative variance.
        let ones = Tensor::ones(64, DType::F32, &dev).unwrap();
        let (_dir, path) = write_file(&[
            ("conv1.weight", conv1),
            ("bn1.weight", ones.clone()),
            ("bn1.bias", ones.clone()),
            ("bn1.running_mean", ones.clone()),
            ("bn1.running_var", ones.neg().unwrap()),
        ]);
        let msg = ResNet::load_file(ResNetDepth::R50, &path, &dev).unwrap_err().to_string();
        assert!(msg.contains("`bn1.running_var`") && msg.contains("negative"), "{msg}");
        // Missing file.
        let err = ResNet::load_file(ResNetDepth::R50, Path::new("/nonexistent/r.safetensors"), &dev).unwrap_err();
        assert!(matches!(err, BackboneError::MissingFile { .. }));
    }

    #[test]
    fn detects_every_standard_depth() {
        for depth in ResNetDepth::ALL {
            let mut shapes = depth.state_dict_shapes();
            shapes.insert("fc.weight".into(), vec![1000, depth.stage_channels(3)]);
            shapes.insert("layer1.0.bn1.num_batches_tracked".into(), vec![]);
            let found = ResNet::detect_depth(shapes.iter().map(|(n, s)| (n.as_str(), s.as_slice()))).unwrap();
            assert_eq!(found, depth);
            assert_eq!(ResNetDepth::from_layers(depth.layers()), Some(depth));
        }
        // Not a ResNet: VGG names.
        let vgg = [("features.0.weight", &[64usize, 3, 3, 3][..])];
        let err = ResNet::detect_depth(vgg).unwrap_err().to_string();
        assert!(err.contains("conv1.weight missing"), "{err}");
        // A truncated ResNet-50 (layer3 with 5 blocks).
        let shapes = ResNetDepth::R50.state_dict_shapes();
        let cut = shapes.iter().filter(|(n, _)| !n.starts_with("layer3.5.")).map(|(n, s)| (n.as_str(), s.as_slice()));
        let err = ResNet::detect_depth(cut).unwrap_err().to_string();
        assert!(err.contains("[3, 4, 5, 3]") && err.contains("bottleneck"), "{err}");
    }

    #[test]
    fn random_models_load_through_a_file_by_name() {
        // A full-width ResNet-18 state dict of random values round-trips through the loader and
        // depth detection (checks the names the loader reads, incl. downsample, for basic blocks).
        let dev = Device::Cpu;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let tensors: Vec<(String, Tensor)> = ResNetDepth::R18
            .state_dict_shapes()
            .into_iter()
            .map(|(name, shape)| {
                let len: usize = shape.iter().product();
                let v: Vec<f32> = (0..len).map(|_| rng.random_range(0.5..1.0)).collect();
                (name, Tensor::from_vec(v, shape, &dev).unwrap())
            })
            .collect();
        let refs: Vec<(&str, Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        let (_dir, path) = write_file(&refs);
        assert_eq!(ResNet::detect_depth_file(&path).unwrap(), ResNetDepth::R18);
        let model = ResNet::load_auto(&WeightSource::File(path), &dev).unwrap();
        assert_eq!((model.name(), model.depth()), ("resnet18", ResNetDepth::R18));
        assert_eq!(model.weights_digest().len(), 64);
        let out = model.forward_taps(&input(1, 64), &["layer4"]).unwrap();
        assert_eq!(out[0].dims(), &[1, 512, 2, 2]);
    }
}
