//! A torchvision ResNet (v1.5: the stride on the 3×3 convolution of a bottleneck) for
//! fine-tuning, any depth the backbone crate knows and any width (channels read from the file),
//! in candle ops so that autograd reaches every trained tensor.
//!
//! BatchNorm runs in inference form, `γ·(x − μ)/√(σ² + ε) + β`, with the running statistics μ,
//! σ² kept as they are (a batch of a few samples would estimate them badly): a trained stage
//! trains its convolution weights and its BatchNorm scales γ and shifts β. The head sits on
//! `layer4`: `linear(C → 1)(global-average-pool(layer4))` (`layer4` is already after its ReLU).

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use expgraph_backbone::{Backbone, ResNet, ResNetDepth, BATCH_NORM_EPS};
use safetensors::SafeTensors;

use crate::model::read_f32;
use crate::{FinetuneError, Result};

/// The names of the stages a fine-tuning run can start training at: `layer1` … `layer4`.
pub const RESNET_STAGES: [&str; 4] = ["layer1", "layer2", "layer3", "layer4"];

/// The BatchNorm tensors of a convolution, in file order.
const BN_PARTS: [&str; 4] = ["weight", "bias", "running_mean", "running_var"];

/// One convolution and the BatchNorm after it, by tensor-name prefix.
#[derive(Debug, Clone)]
struct ConvBn {
    conv: String,
    bn: String,
    stride: usize,
    padding: usize,
    c_out: usize,
}

impl ConvBn {
    /// Every tensor it reads: the convolution's weight and the BatchNorm's four.
    fn tensor_names(&self) -> impl Iterator<Item = String> + '_ {
        std::iter::once(format!("{}.weight", self.conv)).chain(BN_PARTS.iter().map(|p| format!("{}.{p}", self.bn)))
    }

    /// The trained tensors: the convolution's weight, the BatchNorm's scale and shift.
    fn trained_names(&self) -> [String; 3] {
        [format!("{}.weight", self.conv), format!("{}.weight", self.bn), format!("{}.bias", self.bn)]
    }

    /// `BN(conv(x))`, then a ReLU when `relu`.
    fn forward(&self, x: &Tensor, t: &TensorMap, relu: bool) -> Result<Tensor> {
        let y = x.conv2d(t.get(&format!("{}.weight", self.conv))?, self.padding, self.stride, 1, 1)?;
        let bn = |part: &str| t.get(&format!("{}.{part}", self.bn));
        let scale = bn("weight")?.broadcast_div(&bn("running_var")?.affine(1.0, BATCH_NORM_EPS)?.sqrt()?)?;
        let shift = (bn("bias")? - bn("running_mean")?.mul(&scale)?)?;
        let shape = (1, self.c_out, 1, 1);
        let y = y.broadcast_mul(&scale.reshape(shape)?)?.broadcast_add(&shift.reshape(shape)?)?;
        Ok(if relu { y.relu()? } else { y })
    }
}

/// One residual block: its main-path convolutions and the optional downsample shortcut.
#[derive(Debug, Clone)]
struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    /// `relu(main(x) + shortcut(x))`.
    fn forward(&self, x: &Tensor, t: &TensorMap) -> Result<Tensor> {
        let last = self.convs.len() - 1;
        let mut y = x.clone();
        for (i, conv) in self.convs.iter().enumerate() {
            y = conv.forward(&y, t, i < last)?;
        }
        let shortcut = match &self.downsample {
            Some(d) => d.forward(x, t, false)?,
            None => x.clone(),
        };
        Ok((y + shortcut)?.relu()?)
    }

    fn conv_bns(&self) -> impl Iterator<Item = &ConvBn> {
        self.convs.iter().chain(&self.downsample)
    }
}

/// Tensors by name, on the model's device and in its dtype.
struct TensorMap(HashMap<String, Tensor>);

impl TensorMap {
    fn get(&self, name: &str) -> Result<&Tensor> {
        self.0.get(name).ok_or_else(|| FinetuneError::Data(format!("internal: no tensor {name}")))
    }
}

/// The network's structure: which tensors each convolution reads, strides, paddings.
#[derive(Debug)]
struct Layout {
    stem: ConvBn,
    stages: Vec<Vec<Block>>,
}

impl Layout {
    /// The stem: `maxpool3×3/2(relu(BN(conv7×7/2(x))))`, the pool padded by 1 (zeros, which
    /// equal −∞ after the ReLU).
    fn stem(&self, x: &Tensor, t: &TensorMap) -> Result<Tensor> {
        let y = self.stem.forward(x, t, true)?;
        Ok(y.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?.max_pool2d_with_stride(3, 2)?)
    }

    /// Stages `from..to` (0-based) of features `x`.
    fn stages(&self, x: &Tensor, from: usize, to: usize, t: &TensorMap) -> Result<Tensor> {
        let mut x = x.clone();
        for stage in &self.stages[from..to] {
            for block in stage {
                x = block.forward(&x, t)?;
            }
        }
        Ok(x)
    }
}

/// The tensors of a torchvision ResNet state dict that the network uses, checked against each
/// other (every convolution takes the previous one's channels; BatchNorms match; variances ≥ 0).
#[derive(Debug, Clone)]
pub struct ResNetWeights {
    depth: ResNetDepth,
    layout: Arc<Layout>,
    /// `(name, shape, values)` of every tensor used, in the network's order.
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl ResNetWeights {
    /// Reads `conv1.weight`, `bn1.*`, `layerS.B.convK.weight`, `layerS.B.bnK.*` and
    /// `layerS.B.downsample.{0,1}.*` (f32) of a ResNet of `depth`; other tensors (`fc.*`,
    /// `num_batches_tracked`) are ignored. The error says which tensor is wrong.
    pub(crate) fn read(st: &SafeTensors<'_>, depth: ResNetDepth) -> std::result::Result<Self, String> {
        let mut tensors = Vec::new();
        let mut conv_bn = |conv: String, bn: String, c_in: usize, kernel: usize, stride: usize| {
            let name = format!("{conv}.weight");
            let (weight, shape) = read_f32(st, &name)?;
            if shape.len() != 4 || shape[1] != c_in || shape[2] != kernel || shape[3] != kernel {
                return Err(format!("{name} has shape {shape:?}, expected [C_out, {c_in}, {kernel}, {kernel}]"));
            }
            let c_out = shape[0];
            tensors.push((name, shape, weight));
            for part in BN_PARTS {
                let name = format!("{bn}.{part}");
                let (values, shape) = read_f32(st, &name)?;
                if shape != [c_out] {
                    return Err(format!("{name} has shape {shape:?}, expected [{c_out}]"));
                }
                if part == "running_var" && values.iter().any(|&v| v < 0.0) {
                    return Err(format!("{name} has negative values (a variance must be ≥ 0)"));
                }
                tensors.push((name, shape, values));
            }
            Ok(ConvBn { conv, bn, stride, padding: kernel / 2, c_out })
        };
        let stem = conv_bn("conv1".into(), "bn1".into(), 3, 7, 2)?;
        let mut c_in = stem.c_out;
        let mut stages = Vec::new();
        for (s, &blocks) in depth.blocks().iter().enumerate() {
            let mut stage = Vec::new();
            for b in 0..blocks {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                let prefix = format!("layer{}.{b}", s + 1);
                // (kernel, stride) per main-path convolution.
                let layout: &[(usize, usize)] =
                    if depth.bottleneck() { &[(1, 1), (3, stride), (1, 1)] } else { &[(3, stride), (3, 1)] };
                let mut convs = Vec::new();
                let mut channels = c_in;
                for (k, &(kernel, conv_stride)) in layout.iter().enumerate() {
                    let conv = conv_bn(
                        format!("{prefix}.conv{}", k + 1),
                        format!("{prefix}.bn{}", k + 1),
                        channels,
                        kernel,
                        conv_stride,
                    )?;
                    channels = conv.c_out;
                    convs.push(conv);
                }
                let down_name = format!("{prefix}.downsample.0.weight");
                let downsample = if st.tensor(&down_name).is_ok() {
                    let d =
                        conv_bn(format!("{prefix}.downsample.0"), format!("{prefix}.downsample.1"), c_in, 1, stride)?;
                    if d.c_out != channels {
                        return Err(format!("{down_name} has {} outputs, the block {channels}", d.c_out));
                    }
                    Some(d)
                } else if channels != c_in || stride != 1 {
                    return Err(format!("missing tensor {down_name} (block {prefix} changes shape)"));
                } else {
                    None
                };
                stage.push(Block { convs, downsample });
                c_in = channels;
            }
            stages.push(stage);
        }
        Ok(ResNetWeights { depth, layout: Arc::new(Layout { stem, stages }), tensors })
    }

    /// The depth.
    pub fn depth(&self) -> ResNetDepth {
        self.depth
    }

    /// Output channels of `layer4` (the head's input).
    pub fn channels(&self) -> usize {
        self.layout.stages.last().and_then(|s| s.last()).and_then(|b| b.convs.last()).map_or(0, |c| c.c_out)
    }

    /// `(name, shape, values)` of every tensor the network uses, in the network's order.
    pub(crate) fn tensors(&self) -> &[(String, Vec<usize>, Vec<f32>)] {
        &self.tensors
    }

    /// Whether these are the full-width weights that [`ResNet::load_file`] takes.
    fn full_width(&self) -> bool {
        self.layout.stem.c_out == 64 && self.channels() == self.depth.stage_channels(3)
    }

    /// The tensors read by the stem (when `stem`) and by stages `stages`, on `device` in `dtype`.
    fn tensors_on(
        &self,
        stem: bool,
        stages: std::ops::Range<usize>,
        dtype: DType,
        device: &Device,
    ) -> Result<HashMap<String, Tensor>> {
        let layout = &self.layout;
        let stem = stem.then_some(&layout.stem).into_iter();
        let convs = layout.stages[stages].iter().flatten().flat_map(Block::conv_bns);
        let wanted: std::collections::HashSet<String> = stem.chain(convs).flat_map(ConvBn::tensor_names).collect();
        let mut map = HashMap::new();
        for (name, shape, values) in &self.tensors {
            if wanted.contains(name) {
                map.insert(name.clone(), Tensor::from_slice(values, shape.as_slice(), device)?.to_dtype(dtype)?);
            }
        }
        Ok(map)
    }

    /// Names of the tensors trained when training starts at stage `train_from` (0-based), in
    /// the network's order.
    fn trained_names(&self, train_from: usize) -> Vec<String> {
        self.layout.stages[train_from..]
            .iter()
            .flatten()
            .flat_map(Block::conv_bns)
            .flat_map(ConvBn::trained_names)
            .collect()
    }
}

/// The frozen part of a ResNet: the stem and the stages before the first trained one.
pub(crate) struct ResNetFrozen {
    layout: Arc<Layout>,
    tensors: TensorMap,
    train_from: usize,
    /// The backbone crate's fast CPU model, where it applies (full width, stem not trained).
    fast: Option<ResNet>,
}

impl ResNetFrozen {
    pub(crate) fn new(
        weights: &ResNetWeights,
        path: &std::path::Path,
        digest: &str,
        train_from: usize,
        device: &Device,
    ) -> Result<Self> {
        let fast = if train_from > 0 && weights.full_width() && device.is_cpu() {
            match ResNet::load_file(weights.depth, path, device) {
                // Same file, same bytes: else (rewritten meanwhile) the candle path.
                Ok(model) if model.weights_digest() == digest => Some(model),
                _ => None,
            }
        } else {
            None
        };
        Ok(ResNetFrozen {
            layout: weights.layout.clone(),
            tensors: TensorMap(weights.tensors_on(true, 0..train_from, DType::F32, device)?),
            train_from,
            fast,
        })
    }

    pub(crate) fn is_fast(&self) -> bool {
        self.fast.is_some()
    }

    pub(crate) fn without_fast(&mut self) {
        self.fast = None;
    }

    /// `[N, C, H, W]` features entering stage `train_from` of images `[N, 3, S, S]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(model) = &self.fast {
            let tap = RESNET_STAGES[self.train_from - 1];
            return Ok(model.forward_taps(x, &[tap])?.remove(0));
        }
        let y = self.layout.stem(x, &self.tensors)?;
        self.layout.stages(&y, 0, self.train_from, &self.tensors)
    }
}

/// The trained stages of a ResNet; the head is the caller's.
pub(crate) struct ResNetTrained {
    layout: Arc<Layout>,
    tensors: TensorMap,
    train_from: usize,
}

impl ResNetTrained {
    /// The stages from `train_from` on, their trained tensors as new [`Var`]s (returned, in the
    /// network's order) and the running statistics as constants.
    pub(crate) fn new(
        weights: &ResNetWeights,
        train_from: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, Vec<(String, Var)>)> {
        let trained = weights.trained_names(train_from);
        let mut map = weights.tensors_on(false, train_from..weights.layout.stages.len(), dtype, device)?;
        let mut vars = Vec::with_capacity(trained.len());
        for name in trained {
            let tensor = map.remove(&name).ok_or_else(|| FinetuneError::Data(format!("internal: no tensor {name}")))?;
            let var = Var::from_tensor(&tensor)?;
            map.insert(name.clone(), var.as_tensor().clone());
            vars.push((name, var));
        }
        Ok((ResNetTrained { layout: weights.layout.clone(), tensors: TensorMap(map), train_from }, vars))
    }

    /// `layer4` of the features entering stage `train_from`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.layout.stages(x, self.train_from, self.layout.stages.len(), &self.tensors)
    }
}
