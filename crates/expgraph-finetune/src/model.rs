//! The network being fine-tuned, split at its first trained layer: a frozen part run once per
//! sample, and a trainable part (candle [`Var`]s) with the classification head
//! `global average pool → linear(C → 1)` on the last layer: `ReLU(conv5_3)` of VGG-16,
//! `layer4` of a ResNet (see [`crate::resnet`]).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use expgraph_backbone::{Backbone, Vgg16};
use expgraph_features::{Architecture, FeaturesError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::{Dtype, SafeTensors};

use crate::resnet::{ResNetFrozen, ResNetTrained, ResNetWeights, RESNET_STAGES};
use crate::{FinetuneError, Result};

/// One convolution of VGG-16 (the backbone crate's table, [`VGG16_CONVS`]).
pub use expgraph_backbone::VggConv as ConvSpec;
pub use expgraph_backbone::VGG16_CONVS;

/// Names of the head's tensors in the output file: `[1, C]` and `[1]`.
pub const HEAD_WEIGHT: &str = "head.weight";
/// See [`HEAD_WEIGHT`].
pub const HEAD_BIAS: &str = "head.bias";

/// The index in [`VGG16_CONVS`] of the convolution called `name`.
pub fn conv_index(name: &str) -> Option<usize> {
    VGG16_CONVS.iter().position(|c| c.name == name)
}

/// Whether `name` is a layer some architecture can start training at: a VGG-16 convolution
/// (`conv1_1` … `conv5_3`) or a ResNet stage (`layer1` … `layer4`).
pub fn is_trainable_layer_name(name: &str) -> bool {
    conv_index(name).is_some() || RESNET_STAGES.contains(&name)
}

/// The weights of one VGG-16 convolution, f32, OIHW.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvWeights {
    /// `[C_out, C_in, 3, 3]` row-major.
    pub weight: Vec<f32>,
    /// `[C_out]`.
    pub bias: Vec<f32>,
    /// `C_out`.
    pub c_out: usize,
    /// `C_in`.
    pub c_in: usize,
}

/// What a base weight file holds.
#[derive(Debug, Clone)]
enum Arch {
    Vgg16(Vec<ConvWeights>),
    ResNet(ResNetWeights),
}

/// The network to fine-tune, read from a safetensors file with torchvision names: VGG-16 (the 13
/// convolutions) or a ResNet (18 … 152), any width (channels read from the file).
#[derive(Debug, Clone)]
pub struct BaseWeights {
    path: PathBuf,
    digest: String,
    arch: Arch,
}

impl BaseWeights {
    /// Reads a VGG-16 (`features.N.weight` `[C_out, C_in, 3, 3]`, `features.N.bias` `[C_out]`
    /// for every convolution of [`VGG16_CONVS`]) or a ResNet (`conv1.weight`, `bn1.*`,
    /// `layerS.B.convK.weight`, `layerS.B.bnK.*`, `layerS.B.downsample.{0,1}.*`), the
    /// architecture told by the tensor names ([`Architecture::detect_file`]). All f32 and
    /// finite; other tensors are ignored. Each layer takes the previous one's outputs.
    pub fn load(path: &Path) -> Result<Self> {
        let err = |what: String| FinetuneError::Weights { path: path.to_path_buf(), what };
        let architecture = Architecture::detect_file(path).map_err(|e| match e {
            FeaturesError::File { what, .. } => err(what),
            other => err(other.to_string()),
        })?;
        let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let digest = blake3::hash(&bytes).to_hex().to_string();
        let st = SafeTensors::deserialize(&bytes).map_err(|e| err(format!("not a safetensors file: {e}")))?;
        let arch = match architecture {
            Architecture::Vgg16 => Arch::Vgg16(read_vgg(&st).map_err(err)?),
            Architecture::ResNet(depth) => Arch::ResNet(ResNetWeights::read(&st, depth).map_err(err)?),
            Architecture::Onnx => {
                return Err(err("an ONNX model cannot be fine-tuned (VGG-16 or ResNet safetensors only)".into()))
            }
        };
        let base = BaseWeights { path: path.to_path_buf(), digest, arch };
        tracing::info!(
            path = %path.display(),
            architecture = base.architecture().name(),
            channels = base.channels(),
            "read base weights"
        );
        Ok(base)
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// blake3 (hex) of the file's bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// VGG-16 or the ResNet's depth.
    pub fn architecture(&self) -> Architecture {
        match &self.arch {
            Arch::Vgg16(_) => Architecture::Vgg16,
            Arch::ResNet(r) => Architecture::ResNet(r.depth()),
        }
    }

    /// The 13 convolutions of a VGG-16, input to output; `None` for a ResNet.
    pub fn vgg_layers(&self) -> Option<&[ConvWeights]> {
        match &self.arch {
            Arch::Vgg16(layers) => Some(layers),
            Arch::ResNet(_) => None,
        }
    }

    /// The layers a run can start training at, input to output: `conv1_1` … `conv5_3`, or
    /// `layer1` … `layer4`.
    pub fn trainable_layers(&self) -> Vec<&'static str> {
        match &self.arch {
            Arch::Vgg16(_) => VGG16_CONVS.iter().map(|c| c.name).collect(),
            Arch::ResNet(_) => RESNET_STAGES.to_vec(),
        }
    }

    /// Where training starts unless told: `conv4_1` (conv1–conv3 frozen) or `layer4`.
    pub fn default_train_from(&self) -> &'static str {
        match &self.arch {
            Arch::Vgg16(_) => "conv4_1",
            Arch::ResNet(_) => "layer4",
        }
    }

    /// What the head computes, e.g. `logit = head.weight · mean_hw(relu(conv5_3)) + head.bias`.
    pub fn head_formula(&self) -> String {
        let input = match &self.arch {
            Arch::Vgg16(_) => "relu(conv5_3)",
            Arch::ResNet(_) => "layer4",
        };
        format!("logit = {HEAD_WEIGHT} · mean_hw({input}) + {HEAD_BIAS}")
    }

    /// Channels of the layer the head pools (`conv5_3` or `layer4`).
    pub fn channels(&self) -> usize {
        match &self.arch {
            Arch::Vgg16(layers) => layers.last().map_or(0, |l| l.c_out),
            Arch::ResNet(r) => r.channels(),
        }
    }

    /// The smallest input side the network takes: 16 for VGG-16 (four 2×2 pools before
    /// conv5), 32 for a ResNet (stride 32 at `layer4`).
    pub fn min_input_size(&self) -> usize {
        match &self.arch {
            Arch::Vgg16(_) => 16,
            Arch::ResNet(_) => 32,
        }
    }

    /// The position of `name` in [`trainable_layers`](Self::trainable_layers); the error names
    /// the layers there are.
    pub fn train_from_index(&self, name: &str) -> Result<usize> {
        let layers = self.trainable_layers();
        layers.iter().position(|&l| l == name).ok_or_else(|| FinetuneError::InvalidParam {
            name: "train_from",
            value: name.to_string(),
            reason: format!(
                "{} has no such layer (training can start at {} … {})",
                self.architecture().name(),
                layers[0],
                layers[layers.len() - 1]
            ),
        })
    }

    /// The layers trained when training starts at index `train_from`.
    pub fn trained_layers(&self, train_from: usize) -> Vec<&'static str> {
        self.trainable_layers().split_off(train_from)
    }

    /// `(name, shape, values)` of every tensor the network uses, in the network's order (what
    /// the output copies, the trained ones replaced).
    pub(crate) fn tensors(&self) -> Vec<(String, Vec<usize>, &[f32])> {
        match &self.arch {
            Arch::Vgg16(layers) => layers
                .iter()
                .zip(&VGG16_CONVS)
                .flat_map(|(l, spec)| {
                    let prefix = format!("features.{}", spec.features_index);
                    [
                        (format!("{prefix}.weight"), vec![l.c_out, l.c_in, 3, 3], l.weight.as_slice()),
                        (format!("{prefix}.bias"), vec![l.c_out], l.bias.as_slice()),
                    ]
                })
                .collect(),
            Arch::ResNet(r) => r.tensors().iter().map(|(n, s, v)| (n.clone(), s.clone(), v.as_slice())).collect(),
        }
    }
}

/// The 13 convolutions of a VGG-16 state dict.
fn read_vgg(st: &SafeTensors<'_>) -> std::result::Result<Vec<ConvWeights>, String> {
    let mut layers = Vec::with_capacity(VGG16_CONVS.len());
    let mut c_in = 3;
    for spec in &VGG16_CONVS {
        let name = format!("features.{}.weight", spec.features_index);
        let (weight, shape) = read_f32(st, &name)?;
        if shape.len() != 4 || shape[1] != c_in || shape[2] != 3 || shape[3] != 3 {
            return Err(format!("{name} ({}) has shape {shape:?}, expected [C_out, {c_in}, 3, 3]", spec.name));
        }
        let c_out = shape[0];
        let bias_name = format!("features.{}.bias", spec.features_index);
        let (bias, bias_shape) = read_f32(st, &bias_name)?;
        if bias_shape != [c_out] {
            return Err(format!("{bias_name} has shape {bias_shape:?}, expected [{c_out}]"));
        }
        layers.push(ConvWeights { weight, bias, c_out, c_in });
        c_in = c_out;
    }
    Ok(layers)
}

/// The f32 values and shape of tensor `name`; the error names the tensor.
pub(crate) fn read_f32(st: &SafeTensors<'_>, name: &str) -> std::result::Result<(Vec<f32>, Vec<usize>), String> {
    let view = st.tensor(name).map_err(|_| format!("missing tensor {name}"))?;
    if view.dtype() != Dtype::F32 {
        return Err(format!("tensor {name} is {:?}, expected F32", view.dtype()));
    }
    let values: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    if values.iter().any(|v| !v.is_finite()) {
        return Err(format!("tensor {name} has non-finite values"));
    }
    Ok((values, view.shape().to_vec()))
}

fn conv_tensors(layer: &ConvWeights, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
    let w = Tensor::from_slice(&layer.weight, (layer.c_out, layer.c_in, 3, 3), device)?.to_dtype(dtype)?;
    let b = Tensor::from_slice(&layer.bias, layer.c_out, device)?.to_dtype(dtype)?;
    Ok((w, b))
}

/// `relu(conv3x3(x) + b)`, then a 2×2 max-pool when `pool`.
fn conv_block(x: &Tensor, w: &Tensor, b: &Tensor, pool: bool) -> Result<Tensor> {
    let c = b.dim(0)?;
    let y = x.conv2d(w, 1, 1, 1, 1)?.broadcast_add(&b.reshape((1, c, 1, 1))?)?.relu()?;
    Ok(if pool { y.max_pool2d(2)? } else { y })
}

/// The frozen part of a VGG-16.
struct VggFrozen {
    layers: Vec<(Tensor, Tensor, bool)>,
    /// The fast backbone and the last frozen layer's index, where it applies.
    fast: Option<(Vgg16, usize)>,
}

enum Frozen {
    Vgg(VggFrozen),
    ResNet(Box<ResNetFrozen>),
}

/// The frozen layers (VGG-16: `conv1_1` up to the one before the first trained layer, each with
/// its ReLU and pool; ResNet: the stem and the stages before the first trained one).
///
/// On the CPU with full-width weights the frozen part runs through the backbone crate's fast
/// kernels ([`expgraph_backbone::Vgg16`]: Winograd, about 7× faster than candle's `conv2d`;
/// [`expgraph_backbone::ResNet`]) up to the last frozen tap; otherwise with candle's ops.
pub struct FrozenStack(Frozen);

impl FrozenStack {
    /// The layers before `train_from` (a name of [`BaseWeights::trainable_layers`]) of `base`.
    pub fn new(base: &BaseWeights, train_from: &str, device: &Device) -> Result<Self> {
        let index = base.train_from_index(train_from)?;
        Ok(FrozenStack(match &base.arch {
            Arch::Vgg16(convs) => {
                let layers = convs[..index]
                    .iter()
                    .zip(&VGG16_CONVS)
                    .map(|(l, spec)| {
                        let (w, b) = conv_tensors(l, DType::F32, device)?;
                        Ok((w, b, spec.pool_after))
                    })
                    .collect::<Result<_>>()?;
                let full_width = convs.iter().zip(&VGG16_CONVS).all(|(l, spec)| l.c_out == spec.channels);
                let fast = if index > 0 && full_width && device.is_cpu() {
                    // Same file, same bytes: else (rewritten meanwhile) the candle path.
                    match Vgg16::load_file(&base.path, device) {
                        Ok(vgg) if vgg.weights_digest() == base.digest => Some((vgg, index - 1)),
                        _ => None,
                    }
                } else {
                    None
                };
                Frozen::Vgg(VggFrozen { layers, fast })
            }
            Arch::ResNet(weights) => {
                Frozen::ResNet(Box::new(ResNetFrozen::new(weights, &base.path, &base.digest, index, device)?))
            }
        }))
    }

    /// Turns the fast CPU kernels off (`false`: candle's ops only, as on other devices and
    /// widths); `true` keeps them where they apply.
    pub fn with_fast_kernels(mut self, yes: bool) -> Self {
        if !yes {
            match &mut self.0 {
                Frozen::Vgg(v) => v.fast = None,
                Frozen::ResNet(r) => r.without_fast(),
            }
        }
        self
    }

    /// Whether the frozen part runs through the backbone crate's fast CPU kernels.
    pub fn is_fast(&self) -> bool {
        match &self.0 {
            Frozen::Vgg(v) => v.fast.is_some(),
            Frozen::ResNet(r) => r.is_fast(),
        }
    }

    /// The frozen part's output `[N, C, H, W]` of preprocessed images `[N, 3, S, S]` (the input
    /// itself when nothing is frozen).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let vgg = match &self.0 {
            Frozen::ResNet(r) => return r.forward(x),
            Frozen::Vgg(v) => v,
        };
        if let Some((model, last)) = &vgg.fast {
            let spec = VGG16_CONVS[*last];
            let tap = model.forward_taps(x, &[spec.name])?.remove(0).relu()?;
            return Ok(if spec.pool_after { tap.max_pool2d(2)? } else { tap });
        }
        let mut x = x.clone();
        for (w, b, pool) in &vgg.layers {
            x = conv_block(&x, w, b, *pool)?;
        }
        Ok(x)
    }
}

/// The trained layers of either architecture, before the head.
enum Body {
    /// Whether a 2×2 pool follows each trained VGG-16 convolution (the last one's is skipped).
    Vgg(Vec<bool>),
    ResNet(Box<ResNetTrained>),
}

/// The trained layers and the head, as candle variables.
pub struct TrainableNet {
    /// `(name, var)` in a fixed order: the trained tensors in the network's order, then the head.
    vars: Vec<(String, Var)>,
    body: Body,
}

impl TrainableNet {
    /// The layers from `train_from` (a name of [`BaseWeights::trainable_layers`]) on,
    /// initialized from `base`, with a head of weights drawn uniformly from ±1/√C (ChaCha8
    /// from `seed`, stream `stream`) and bias 0, in `dtype` (f32 to train; f64 lets tests check
    /// gradients).
    pub fn new(
        base: &BaseWeights,
        train_from: &str,
        seed: u64,
        stream: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let index = base.train_from_index(train_from)?;
        let (mut vars, body) = match &base.arch {
            Arch::Vgg16(convs) => {
                let mut vars = Vec::new();
                let mut pools = Vec::new();
                for (layer, spec) in convs.iter().zip(&VGG16_CONVS).skip(index) {
                    let (w, b) = conv_tensors(layer, dtype, device)?;
                    vars.push((format!("features.{}.weight", spec.features_index), Var::from_tensor(&w)?));
                    vars.push((format!("features.{}.bias", spec.features_index), Var::from_tensor(&b)?));
                    pools.push(spec.pool_after);
                }
                (vars, Body::Vgg(pools))
            }
            Arch::ResNet(weights) => {
                let (trained, vars) = ResNetTrained::new(weights, index, dtype, device)?;
                (vars, Body::ResNet(Box::new(trained)))
            }
        };
        let channels = base.channels();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        let bound = 1.0 / (channels.max(1) as f32).sqrt();
        let head: Vec<f32> = (0..channels).map(|_| rng.random_range(-bound..bound)).collect();
        let head_w = Tensor::from_vec(head, (1, channels), device)?.to_dtype(dtype)?;
        vars.push((HEAD_WEIGHT.into(), Var::from_tensor(&head_w)?));
        vars.push((HEAD_BIAS.into(), Var::zeros(1, dtype, device)?));
        Ok(TrainableNet { vars, body })
    }

    /// `(name, var)` of every trained tensor, in the network's order (VGG-16: each trained
    /// conv's `features.N.weight`, `features.N.bias`; ResNet: each trained convolution's weight
    /// and its BatchNorm's `weight` and `bias`), then [`HEAD_WEIGHT`] and [`HEAD_BIAS`].
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// The object logit `[N]` of frozen features `[N, C, H, W]`: the trained layers (VGG-16:
    /// convolutions with ReLU and pools, except after the last; ResNet: the trained stages),
    /// averaged over the map, then the linear head.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let maps = match &self.body {
            Body::Vgg(pools) => {
                let convs = pools.len();
                let mut x = x.clone();
                for (i, pool) in pools.iter().enumerate() {
                    let w = self.vars[2 * i].1.as_tensor();
                    let b = self.vars[2 * i + 1].1.as_tensor();
                    x = conv_block(&x, w, b, *pool && i + 1 < convs)?;
                }
                x
            }
            Body::ResNet(trained) => trained.forward(x)?,
        };
        self.head(&maps)
    }

    /// The head on the last layer's maps `[N, C, H, W]` (after their ReLU): mean over the map,
    /// then linear.
    pub fn head(&self, maps: &Tensor) -> Result<Tensor> {
        let n = self.vars.len();
        let (w, b) = (self.vars[n - 2].1.as_tensor(), self.vars[n - 1].1.as_tensor());
        let pooled = maps.mean((2, 3))?; // [N, C]
        Ok(pooled.matmul(&w.t()?)?.broadcast_add(b)?.squeeze(1)?)
    }
}

/// Binary cross-entropy with logits, mean over the batch, in the stable form
/// `max(x, 0) − x·y + log(1 + exp(−|x|))`; `labels` are 0 or 1, same shape and dtype.
pub fn bce_with_logits(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let softplus = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    let per_sample = ((logits.relu()? - (logits * labels)?)? + softplus)?;
    Ok(per_sample.mean_all()?)
}

/// The same loss for one logit in f64 (for reporting held-out loss without the graph).
pub fn bce_value(logit: f64, label: bool) -> f64 {
    let y = if label { 1.0 } else { 0.0 };
    logit.max(0.0) - logit * y + (-logit.abs()).exp().ln_1p()
}
