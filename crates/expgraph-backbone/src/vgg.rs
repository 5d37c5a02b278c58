//! VGG-16 convolutional stack (13 conv3×3 + ReLU, 5 max-pools) returning pre-ReLU taps (spec §3).
//!
//! On the CPU in f32 ([`ConvImpl::Im2colNhwc`]) the activations stay NHWC; every convolution runs
//! Winograd F(2×2, 3×3) ([`crate::winograd`]: weights transformed once at load, the ReLU of the
//! previous layer fused into the input transform, the bias into the output transform), and each
//! 2×2 max-pool is fused with its ReLU. Images of a batch run one at a time. The previous
//! im2col + matmul per layer remains behind `Vgg16::with_winograd(false)` (for benchmarks).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

use crate::backbone::{check_image_batch, check_reaches};
use crate::geometry::{map_size, tap_geometry, LayerShape};
use crate::weights::WeightFile;
use crate::winograd::Winograd3x3;
use crate::{
    nhwc, precision, resolve_weights, Backbone, BackboneError, BackboneMeta, Precision, TapInfo, WeightSource,
};

/// One conv layer of VGG-16: tap name, torchvision `features.N` index, output channels, and
/// whether a 2×2 max-pool follows its ReLU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VggConv {
    /// `conv1_1` … `conv5_3`.
    pub name: &'static str,
    /// N of the tensors `features.N.weight` / `features.N.bias`.
    pub features_index: usize,
    /// Output channels of the full-width network.
    pub channels: usize,
    /// Whether a 2×2 max-pool follows its ReLU.
    pub pool_after: bool,
}

const fn conv(name: &'static str, features_index: usize, channels: usize, pool_after: bool) -> VggConv {
    VggConv { name, features_index, channels, pool_after }
}

/// The VGG-16 "D" configuration with torchvision/timm tensor numbering, input to output: the one
/// table of its layers (the backbone and the fine-tuner read it).
pub const VGG16_CONVS: [VggConv; 13] = [
    conv("conv1_1", 0, 64, false),
    conv("conv1_2", 2, 64, true),
    conv("conv2_1", 5, 128, false),
    conv("conv2_2", 7, 128, true),
    conv("conv3_1", 10, 256, false),
    conv("conv3_2", 12, 256, false),
    conv("conv3_3", 14, 256, true),
    conv("conv4_1", 17, 512, false),
    conv("conv4_2", 19, 512, false),
    conv("conv4_3", 21, 512, true),
    conv("conv5_1", 24, 512, false),
    conv("conv5_2", 26, 512, false),
    conv("conv5_3", 28, 512, true),
];

/// Input side the tap geometries refer to.
pub const REFERENCE_INPUT_SIZE: usize = 224;

/// How convolutions are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvImpl {
    /// NHWC activations and custom CPU kernels (the name is historical): 3×3 stride-1
    /// convolutions by Winograd F(2×2, 3×3), other convolutions by im2col + one matmul, max-pool
    /// fused with ReLU (docs/cpu-performance.md §4.3). CPU and [`Precision::F32`] only; for
    /// VGG-16 about 2.4–2.7× faster than the previous all-im2col path and about 7× faster than
    /// [`ConvImpl::Candle`]; results are bit-identical for every rayon pool size.
    Im2colNhwc,
    /// candle's stock NCHW `conv2d` / `max_pool2d`; works on every device and in every
    /// [`Precision`].
    Candle,
}

impl ConvImpl {
    /// The fastest implementation available on `device`.
    pub fn default_for(device: &Device) -> Self {
        if device.is_cpu() {
            ConvImpl::Im2colNhwc
        } else {
            ConvImpl::Candle
        }
    }
}

struct ConvLayer {
    /// `[C_out, C_in, 3, 3]`.
    weight: Tensor,
    /// `[C_out]`.
    bias: Tensor,
    /// `[9·C_in, C_out]` in (kh, kw, cin) row order, for [`ConvImpl::Im2colNhwc`] with Winograd
    /// turned off ([`Vgg16::with_winograd`]).
    gemm_weight: Option<Tensor>,
    /// The Winograd form, for [`ConvImpl::Im2colNhwc`] (the default).
    winograd: Option<Winograd3x3>,
    /// `weight` and `bias` cast to a half precision, while the model computes in it (the f32
    /// tensors are kept, so that going back to f32 is exact).
    half: Option<(Tensor, Tensor)>,
}

impl ConvLayer {
    fn new(weight: Tensor, bias: Tensor, conv_impl: ConvImpl) -> Result<Self, BackboneError> {
        let mut layer = ConvLayer { weight, bias, gemm_weight: None, winograd: None, half: None };
        layer.prepare(conv_impl, true)?;
        Ok(layer)
    }

    /// `half` for `precision`: weight and bias cast to it, or `None` for f32.
    fn cast(&self, precision: Precision) -> Result<Option<(Tensor, Tensor)>, BackboneError> {
        Ok(match precision {
            Precision::F32 => None,
            half => Some((self.weight.to_dtype(half.dtype())?, self.bias.to_dtype(half.dtype())?)),
        })
    }

    /// Weight and bias in the precision the model computes in.
    fn params(&self) -> (&Tensor, &Tensor) {
        match &self.half {
            Some((weight, bias)) => (weight, bias),
            None => (&self.weight, &self.bias),
        }
    }

    /// Prepares the weights of `conv_impl`: for [`ConvImpl::Im2colNhwc`], the Winograd form when
    /// `winograd`, else the im2col matrix.
    fn prepare(&mut self, conv_impl: ConvImpl, winograd: bool) -> Result<(), BackboneError> {
        if conv_impl != ConvImpl::Im2colNhwc {
            return Ok(());
        }
        if winograd {
            if self.winograd.is_none() {
                self.winograd = Some(Winograd3x3::new(&self.weight, &self.bias)?);
            }
        } else {
            self.winograd = None;
            if self.gemm_weight.is_none() {
                let (c_out, c_in, kh, kw) = self.weight.dims4()?;
                let w = self.weight.permute((2, 3, 1, 0))?.reshape((kh * kw * c_in, c_out))?.contiguous()?;
                self.gemm_weight = Some(w);
            }
        }
        Ok(())
    }
}

/// VGG-16 conv stack (Simonyan & Zisserman; torchvision layout) returning pre-ReLU taps
/// `conv1_1` … `conv5_3`.
///
/// Computes in f32 by default; [`Backbone::set_precision`] switches to f16 or bf16 (meant for
/// GPUs; on the CPU half precision runs [`ConvImpl::Candle`], slower than the f32 fast path).
pub struct Vgg16 {
    layers: Vec<ConvLayer>,
    meta: BackboneMeta,
    /// The implementation used in f32 (half precision always uses [`ConvImpl::Candle`]).
    conv_impl: ConvImpl,
    precision: Precision,
    /// Whether [`ConvImpl::Im2colNhwc`] uses Winograd where it can (see [`Vgg16::with_winograd`]).
    winograd: bool,
}

impl Vgg16 {
    /// Loads weights from `source` (see [`resolve_weights`]) onto `device`, using
    /// [`ConvImpl::default_for`] the device.
    pub fn load(source: &WeightSource, device: &Device) -> Result<Self, BackboneError> {
        Self::load_file(&resolve_weights(source)?, device)
    }

    /// Loads a safetensors file with tensors `features.N.weight` `[C_out, C_in, 3, 3]` and
    /// `features.N.bias` `[C_out]` (f32, N = 0, 2, 5, …, 28); other tensors are ignored.
    pub fn load_file(path: &Path, device: &Device) -> Result<Self, BackboneError> {
        let file = WeightFile::read(path)?;
        let tensors = file.tensors()?;
        let conv_impl = ConvImpl::default_for(device);
        let mut layers = Vec::with_capacity(VGG16_CONVS.len());
        let mut c_in = 3;
        for spec in &VGG16_CONVS {
            let prefix = format!("features.{}", spec.features_index);
            let weight = tensors.f32(&format!("{prefix}.weight"), &[spec.channels, c_in, 3, 3], device)?;
            let bias = tensors.f32(&format!("{prefix}.bias"), &[spec.channels], device)?;
            layers.push(ConvLayer::new(weight, bias, conv_impl)?);
            c_in = spec.channels;
        }
        tracing::info!(path = %path.display(), ?conv_impl, "loaded VGG-16 weights");
        Ok(Self::assemble(layers, file.digest().to_string(), device, conv_impl))
    }

    /// A VGG-16 with random He-uniform weights (seeded) and every layer's width divided by
    /// `width_divisor` (at least 1 channel), for tests and benchmarks. Its digest names the seed.
    pub fn random(width_divisor: usize, seed: u64, device: &Device) -> Result<Self, BackboneError> {
        if width_divisor == 0 {
            return Err(BackboneError::Input("width divisor must be at least 1".into()));
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let conv_impl = ConvImpl::default_for(device);
        let mut layers = Vec::with_capacity(VGG16_CONVS.len());
        let mut c_in = 3;
        for spec in &VGG16_CONVS {
            let c_out = (spec.channels / width_divisor).max(1);
            let bound = (6.0 / (9 * c_in) as f32).sqrt();
            let w: Vec<f32> = (0..c_out * c_in * 9).map(|_| rng.random_range(-bound..bound)).collect();
            let b: Vec<f32> = (0..c_out).map(|_| rng.random_range(-0.1..0.1)).collect();
            let weight = Tensor::from_vec(w, (c_out, c_in, 3, 3), device)?;
            let bias = Tensor::from_vec(b, c_out, device)?;
            layers.push(ConvLayer::new(weight, bias, conv_impl)?);
            c_in = c_out;
        }
        let digest = blake3::hash(format!("vgg16-random/divisor={width_divisor}/seed={seed}").as_bytes());
        Ok(Self::assemble(layers, digest.to_hex().to_string(), device, conv_impl))
    }

    fn assemble(layers: Vec<ConvLayer>, digest: String, device: &Device, conv_impl: ConvImpl) -> Self {
        let taps = VGG16_CONVS
            .iter()
            .zip(&layers)
            .enumerate()
            .map(|(i, (spec, layer))| TapInfo {
                name: spec.name.to_string(),
                channels: layer.bias.dims()[0],
                geometry: tap_geometry(&layer_shapes_through(i)),
            })
            .collect();
        Vgg16 {
            layers,
            meta: BackboneMeta { taps, device: device.clone(), digest },
            conv_impl,
            precision: Precision::F32,
            winograd: true,
        }
    }

    /// Chooses the convolution implementation; [`ConvImpl::Im2colNhwc`] needs a CPU device and
    /// [`Precision::F32`].
    pub fn with_conv_impl(mut self, conv_impl: ConvImpl) -> Result<Self, BackboneError> {
        check_conv_impl(conv_impl, &self.meta.device, self.precision)?;
        for layer in &mut self.layers {
            layer.prepare(conv_impl, self.winograd)?;
        }
        self.conv_impl = conv_impl;
        Ok(self)
    }

    /// Turns the Winograd kernel of [`ConvImpl::Im2colNhwc`] off (every layer then runs the
    /// previous im2col + matmul) or back on (the default). For benchmarks comparing the two.
    #[doc(hidden)]
    pub fn with_winograd(mut self, winograd: bool) -> Result<Self, BackboneError> {
        self.winograd = winograd;
        for layer in &mut self.layers {
            layer.prepare(self.conv_impl, winograd)?;
        }
        Ok(self)
    }

    /// The convolution implementation in use: the one chosen for f32 (by default
    /// [`ConvImpl::default_for`] the device; [`Vgg16::with_conv_impl`]), or [`ConvImpl::Candle`]
    /// while the model computes in half precision.
    pub fn conv_impl(&self) -> ConvImpl {
        effective_conv_impl(self.conv_impl, self.precision)
    }

    /// The weights under their torchvision names (`features.N.weight` OIHW, `features.N.bias`),
    /// e.g. to save them with `candle_core::safetensors::save`.
    pub fn named_weights(&self) -> Vec<(String, Tensor)> {
        VGG16_CONVS
            .iter()
            .zip(&self.layers)
            .flat_map(|(spec, layer)| {
                let prefix = format!("features.{}", spec.features_index);
                [(format!("{prefix}.weight"), layer.weight.clone()), (format!("{prefix}.bias"), layer.bias.clone())]
            })
            .collect()
    }

    fn tap_index(&self, name: &str) -> Result<usize, BackboneError> {
        self.meta.tap_index(name, "vgg16")
    }

    /// Checks the input and returns it on this model's device, in its precision.
    fn checked_input(&self, input: &Tensor, deepest: usize) -> Result<Tensor, BackboneError> {
        let size = check_image_batch(input)?;
        check_reaches(&layer_shapes_through(deepest), size, VGG16_CONVS[deepest].name)?;
        Ok(input.to_device(&self.meta.device)?.to_dtype(self.precision.dtype())?)
    }

    /// Runs layers `0..=last` and returns the pre-ReLU NCHW output of each layer `i` with
    /// `wanted[i]`, plus the number of conv layers that ran.
    fn run_layers(
        &self,
        input: &Tensor,
        last: usize,
        wanted: &[bool],
    ) -> Result<(Vec<Option<Tensor>>, usize), BackboneError> {
        match self.conv_impl() {
            ConvImpl::Im2colNhwc => nhwc::on_pool(|| {
                // One image at a time: batching inflates the buffers and measured no faster, with Winograd too
                // (cpu-performance.md §4.5).
                let mut per_layer: Vec<Vec<Tensor>> = vec![Vec::new(); last + 1];
                let mut layers_run = 0;
                for i in 0..input.dim(0)? {
                    let x = input.narrow(0, i, 1)?.permute((0, 2, 3, 1))?.contiguous()?;
                    let (outs, run) = self.run_nhwc(x, last, wanted)?;
                    layers_run = run;
                    for (acc, out) in per_layer.iter_mut().zip(outs) {
                        acc.extend(out);
                    }
                }
                let outs = per_layer
                    .into_iter()
                    .map(|maps| if maps.is_empty() { Ok(None) } else { Tensor::cat(&maps, 0).map(Some) })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Ok((outs, layers_run))
            }),
            ConvImpl::Candle => self.run_nchw(input.clone(), last, wanted),
        }
    }

    fn run_nhwc(
        &self,
        mut x: Tensor,
        last: usize,
        wanted: &[bool],
    ) -> Result<(Vec<Option<Tensor>>, usize), BackboneError> {
        let mut outs = vec![None; last + 1];
        let mut relu_pending = false;
        for (i, (spec, layer)) in VGG16_CONVS.iter().zip(&self.layers).enumerate().take(last + 1) {
            let y = match (&layer.winograd, &layer.gemm_weight) {
                (Some(winograd), _) => winograd.forward(&x, relu_pending)?,
                (None, Some(gemm_weight)) => nhwc::conv3x3(&x, gemm_weight, &layer.bias, relu_pending)?,
                (None, None) => return Err(BackboneError::Input("im2col weights were not prepared".into())),
            };
            if wanted[i] {
                outs[i] = Some(y.permute((0, 3, 1, 2))?.contiguous()?);
            }
            if i == last {
                return Ok((outs, i + 1));
            }
            (x, relu_pending) = if spec.pool_after { (nhwc::max_pool2_relu(&y)?, false) } else { (y, true) };
        }
        Ok((outs, last + 1))
    }

    fn run_nchw(
        &self,
        mut x: Tensor,
        last: usize,
        wanted: &[bool],
    ) -> Result<(Vec<Option<Tensor>>, usize), BackboneError> {
        let mut outs = vec![None; last + 1];
        for (i, (spec, layer)) in VGG16_CONVS.iter().zip(&self.layers).enumerate().take(last + 1) {
            let (weight, bias) = layer.params();
            let c_out = bias.dims()[0];
            let y = precision::conv2d(&x, weight, 1, 1)?.broadcast_add(&bias.reshape((1, c_out, 1, 1))?)?;
            if wanted[i] {
                outs[i] = Some(y.clone());
            }
            if i == last {
                return Ok((outs, i + 1));
            }
            x = y.relu()?;
            if spec.pool_after {
                x = x.max_pool2d(2)?;
            }
        }
        Ok((outs, last + 1))
    }
}

/// Checks that `conv_impl` can run on `device` in `precision`.
pub(crate) fn check_conv_impl(conv_impl: ConvImpl, device: &Device, precision: Precision) -> Result<(), BackboneError> {
    if conv_impl == ConvImpl::Im2colNhwc {
        if !device.is_cpu() {
            return Err(BackboneError::Input("the im2col NHWC convolution runs on the CPU only".into()));
        }
        if precision != Precision::F32 {
            return Err(BackboneError::Input(format!(
                "the im2col NHWC convolution computes in f32 only, not {precision}; set the precision to f32 first"
            )));
        }
    }
    Ok(())
}

/// The implementation that runs: `chosen` in f32, [`ConvImpl::Candle`] in half precision.
pub(crate) fn effective_conv_impl(chosen: ConvImpl, precision: Precision) -> ConvImpl {
    if precision.is_half() {
        ConvImpl::Candle
    } else {
        chosen
    }
}

/// Spatial layer shapes from the input through conv layer `index` (pools before it included).
fn layer_shapes_through(index: usize) -> Vec<LayerShape> {
    let mut shapes = Vec::new();
    for (i, spec) in VGG16_CONVS.iter().enumerate().take(index + 1) {
        shapes.push(LayerShape::CONV3_PAD1);
        if spec.pool_after && i < index {
            shapes.push(LayerShape::POOL2);
        }
    }
    shapes
}

impl Backbone for Vgg16 {
    fn name(&self) -> &str {
        "vgg16"
    }

    fn meta(&self) -> &BackboneMeta {
        &self.meta
    }

    fn tap_map_size(&self, tap: &str, input_size: usize) -> Result<usize, BackboneError> {
        let index = self.tap_index(tap)?;
        map_size(&layer_shapes_through(index), input_size)
            .ok_or_else(|| BackboneError::Input(format!("input side {input_size} is too small to reach {tap}")))
    }

    fn forward_taps(&self, input: &Tensor, taps: &[&str]) -> Result<Vec<Tensor>, BackboneError> {
        let indices = taps.iter().map(|t| self.tap_index(t)).collect::<Result<Vec<_>, _>>()?;
        let Some(&last) = indices.iter().max() else {
            return Ok(Vec::new());
        };
        let input = self.checked_input(input, last)?;
        let mut wanted = vec![false; last + 1];
        indices.iter().for_each(|&i| wanted[i] = true);
        let (outs, _) = self.run_layers(&input, last, &wanted)?;
        indices
            .iter()
            .map(|&i| match &outs[i] {
                Some(t) => Ok(t.to_dtype(DType::F32)?),
                None => Err(BackboneError::Input(format!("tap {} was not computed", VGG16_CONVS[i].name))),
            })
            .collect()
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn set_precision(&mut self, precision: Precision) -> Result<(), BackboneError> {
        // Cast everything first, so that a failure (out of GPU memory) leaves the model as it was.
        let cast = self.layers.iter().map(|layer| layer.cast(precision)).collect::<Result<Vec<_>, _>>()?;
        for (layer, half) in self.layers.iter_mut().zip(cast) {
            layer.half = half;
        }
        self.precision = precision;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Vgg16 {
        Vgg16::random(32, 7, &Device::Cpu).unwrap()
    }

    fn input(n: usize, side: usize) -> Tensor {
        Tensor::randn(0f32, 50.0, (n, 3, side, side), &Device::Cpu).unwrap()
    }

    #[test]
    fn geometry_matches_spec_table() {
        let model = tiny();
        let geo = |name: &str| model.tap(name).unwrap().geometry;
        for (name, stride, centre, field) in [
            ("conv4_2", 8.0, 4.5, 76.0),
            ("conv4_3", 8.0, 4.5, 92.0),
            ("conv5_2", 16.0, 8.5, 164.0),
            ("conv5_3", 16.0, 8.5, 196.0),
            ("conv1_1", 1.0, 1.0, 3.0),
        ] {
            let g = geo(name);
            assert_eq!((g.stride, g.first_centre, g.receptive_field), (stride, centre, field), "{name}");
        }
        // The last cell of conv5_3 (14×14 at 224) is centred symmetrically to the first one.
        let g = geo("conv5_3");
        assert_eq!(model.tap_map_size("conv5_3", 224).unwrap(), 14);
        assert_eq!(g.map_to_pixel(14.0), 224.0 + 1.0 - g.first_centre);
        assert_eq!(model.tap_map_size("conv4_2", 224).unwrap(), 28);
    }

    #[test]
    fn taps_are_ordered_and_named() {
        let model = tiny();
        let names: Vec<_> = model.taps().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names.len(), 13);
        assert_eq!((names[0], names[12]), ("conv1_1", "conv5_3"));
        assert_eq!(model.taps()[12].channels, 16);
        assert_eq!(Vgg16::random(1, 0, &Device::Cpu).unwrap().taps()[12].channels, 512);
    }

    #[test]
    fn runs_only_as_deep_as_needed() {
        let model = tiny();
        let x = input(1, 32);
        for (last, expected) in [(0, 1), (3, 4), (12, 13)] {
            let mut wanted = vec![false; last + 1];
            wanted[last] = true;
            for imp in [ConvImpl::Im2colNhwc, ConvImpl::Candle] {
                let m = Vgg16::random(32, 7, &Device::Cpu).unwrap().with_conv_impl(imp).unwrap();
                let (outs, run) = m.run_layers(&x, last, &wanted).unwrap();
                assert_eq!(run, expected, "{imp:?}");
                assert_eq!(outs.len(), last + 1);
                assert!(outs[last].is_some() && outs.iter().filter(|o| o.is_some()).count() == 1);
            }
        }
        // A 4×4 input reaches conv2_2 (after one pool) but not conv5_3.
        let small = input(1, 4);
        assert_eq!(model.forward_taps(&small, &["conv2_2"]).unwrap()[0].dims(), &[1, 4, 2, 2]);
        assert!(model.forward_taps(&small, &["conv5_3"]).is_err());
    }

    #[test]
    fn both_conv_paths_agree_and_keep_request_order() {
        let x = input(2, 40);
        let taps = ["conv5_3", "conv1_2", "conv3_1", "conv5_3"];
        let fast = tiny().forward_taps(&x, &taps).unwrap();
        let stock = tiny().with_conv_impl(ConvImpl::Candle).unwrap().forward_taps(&x, &taps).unwrap();
        assert_eq!(fast[0].dims(), &[2, 16, 2, 2]);
        assert_eq!(fast[1].dims(), &[2, 2, 40, 40]);
        assert_eq!(fast[2].dims(), &[2, 8, 10, 10]);
        for (a, b) in fast.iter().zip(&stock) {
            assert_eq!(a.dims(), b.dims());
            let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(scale > 0.0 && diff <= 1e-5 * scale, "diff {diff} scale {scale}");
        }
        // Pre-ReLU: maps must contain negative values.
        let min = fast[0].min_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(min < 0.0, "min {min}");
        // Batch results equal single-image results.
        let single = tiny().forward_taps(&x.narrow(0, 1, 1).unwrap(), &["conv5_3"]).unwrap();
        let d = (&single[0] - fast[0].narrow(0, 1, 1).unwrap()).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
    }

    /// Half-width VGG (Winograd, both schedules): bit-identical taps for every
    /// rayon pool size, and close to the stock path and to the im2col path.
    #[test]
    fn fast_path_is_bit_identical_across_thread_counts() {
        let model = Vgg16::random(2, 11, &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 50.0, (2, 3, 34, 30), &Device::Cpu).unwrap();
        let taps = ["conv1_2", "conv2_2", "conv3_3", "conv4_2", "conv5_3"];
        let bits = |threads| crate::testing::tap_bits_with_threads(&model, &x, &taps, threads);
        let one = bits(1);
        assert_eq!(one, bits(2), "1 vs 2 threads");
        assert_eq!(one, bits(3), "1 vs 3 threads");
        let fast = model.forward_taps(&x, &taps).unwrap();
        let im2col = Vgg16::random(2, 11, &Device::Cpu).unwrap().with_winograd(false).unwrap();
        let stock = Vgg16::random(2, 11, &Device::Cpu).unwrap().with_conv_impl(ConvImpl::Candle).unwrap();
        for other in [im2col.forward_taps(&x, &taps).unwrap(), stock.forward_taps(&x, &taps).unwrap()] {
            for (a, b) in fast.iter().zip(&other) {
                let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(scale > 0.0 && diff <= 1e-5 * scale, "diff {diff} scale {scale}");
            }
        }
    }

    #[test]
    fn bad_inputs_and_taps_are_errors() {
        let model = tiny();
        let err = model.forward_taps(&input(1, 32), &["conv6_1"]).unwrap_err().to_string();
        assert!(err.contains("conv6_1") && err.contains("conv5_3"), "{err}");
        assert!(model
            .forward_taps(&Tensor::zeros((1, 4, 8, 8), DType::F32, &Device::Cpu).unwrap(), &["conv1_1"])
            .is_err());
        assert!(model
            .forward_taps(&Tensor::zeros((1, 3, 8, 8), DType::F64, &Device::Cpu).unwrap(), &["conv1_1"])
            .is_err());
        assert!(model
            .forward_taps(&Tensor::zeros((3, 8, 8), DType::F32, &Device::Cpu).unwrap(), &["conv1_1"])
            .is_err());
        assert!(model.forward_taps(&input(1, 8), &[]).unwrap().is_empty());
        assert!(Vgg16::random(0, 0, &Device::Cpu).is_err());
    }

    #[test]
    fn random_models_are_deterministic() {
        let a = Vgg16::random(16, 3, &Device::Cpu).unwrap();
        let b = Vgg16::random(16, 3, &Device::Cpu).unwrap();
        let c = Vgg16::random(16, 4, &Device::Cpu).unwrap();
        assert_eq!(a.weights_digest(), b.weights_digest());
        assert_ne!(a.weights_digest(), c.weights_digest());
        let (wa, wb) = (&a.named_weights()[0].1, &b.named_weights()[0].1);
        assert_eq!((wa - wb).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    }
}
