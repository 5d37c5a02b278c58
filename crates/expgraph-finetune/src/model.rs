//! The VGG-16 conv stack split at the first trained layer: a frozen part run once per sample,
//! and a trainable part (candle [`Var`]s) with the classification head
//! `ReLU(conv5_3) → global average pool → linear(C → 1)`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use expgraph_backbone::{Backbone, Vgg16};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::{Dtype, SafeTensors};

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

/// The weights of one convolution, f32, OIHW.
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

/// The 13 convolutions of a VGG-16 safetensors file, any width (channels read from the file).
#[derive(Debug, Clone)]
pub struct BaseWeights {
    path: PathBuf,
    digest: String,
    layers: Vec<ConvWeights>,
}

impl BaseWeights {
    /// Reads `features.N.weight` `[C_out, C_in, 3, 3]` and `features.N.bias` `[C_out]` (f32,
    /// finite) for every convolution of [`VGG16_CONVS`]; other tensors are ignored. The first
    /// layer takes 3 channels and each layer the previous one's outputs.
    pub fn load(path: &Path) -> Result<Self> {
        let err = |what: String| FinetuneError::Weights { path: path.to_path_buf(), what };
        let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let digest = blake3::hash(&bytes).to_hex().to_string();
        let st = SafeTensors::deserialize(&bytes).map_err(|e| err(format!("not a safetensors file: {e}")))?;
        let mut layers = Vec::with_capacity(VGG16_CONVS.len());
        let mut c_in = 3;
        for spec in &VGG16_CONVS {
            let name = format!("features.{}.weight", spec.features_index);
            let (weight, shape) = read_f32(&st, &name).map_err(err)?;
            if shape.len() != 4 || shape[1] != c_in || shape[2] != 3 || shape[3] != 3 {
                return Err(err(format!("{name} ({}) has shape {shape:?}, expected [C_out, {c_in}, 3, 3]", spec.name)));
            }
            let c_out = shape[0];
            let bias_name = format!("features.{}.bias", spec.features_index);
            let (bias, bias_shape) = read_f32(&st, &bias_name).map_err(err)?;
            if bias_shape != [c_out] {
                return Err(err(format!("{bias_name} has shape {bias_shape:?}, expected [{c_out}]")));
            }
            layers.push(ConvWeights { weight, bias, c_out, c_in });
            c_in = c_out;
        }
        tracing::info!(path = %path.display(), channels = c_in, "read VGG-16 base weights");
        Ok(BaseWeights { path: path.to_path_buf(), digest, layers })
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// blake3 (hex) of the file's bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The 13 convolutions, input to output.
    pub fn layers(&self) -> &[ConvWeights] {
        &self.layers
    }
}

fn read_f32(st: &SafeTensors<'_>, name: &str) -> std::result::Result<(Vec<f32>, Vec<usize>), String> {
    let view = st.tensor(name).map_err(|_| format!("missing tensor {name} (not a torchvision-named VGG-16)"))?;
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

/// The frozen convolutions (`conv1_1` up to the one before the first trained layer), each with
/// its ReLU and pool.
///
/// On the CPU with full-width VGG-16 weights the frozen part runs through
/// [`expgraph_backbone::Vgg16`]'s fast kernels (Winograd, about 7× faster than candle's
/// `conv2d`) up to the last frozen tap, then ReLU and pool; otherwise with candle's ops.
pub struct FrozenStack {
    layers: Vec<(Tensor, Tensor, bool)>,
    /// The fast backbone and the last frozen layer's index, where it applies.
    fast: Option<(Vgg16, usize)>,
}

impl FrozenStack {
    /// The layers before `train_from` (an index into [`VGG16_CONVS`]) of `base`.
    pub fn new(base: &BaseWeights, train_from: usize, device: &Device) -> Result<Self> {
        let layers = base.layers[..train_from]
            .iter()
            .zip(&VGG16_CONVS)
            .map(|(l, spec)| {
                let (w, b) = conv_tensors(l, DType::F32, device)?;
                Ok((w, b, spec.pool_after))
            })
            .collect::<Result<_>>()?;
        let full_width = base.layers.iter().zip(&VGG16_CONVS).all(|(l, spec)| l.c_out == spec.channels);
        let fast = if train_from > 0 && full_width && device.is_cpu() {
            // Same file, same bytes: else (rewritten meanwhile) the candle path.
            match Vgg16::load_file(&base.path, device) {
                Ok(vgg) if vgg.weights_digest() == base.digest => Some((vgg, train_from - 1)),
                _ => None,
            }
        } else {
            None
        };
        Ok(FrozenStack { layers, fast })
    }

    /// Turns the fast CPU kernels off (`false`: candle's ops only, as on other devices and
    /// widths); `true` keeps them where they apply.
    pub fn with_fast_kernels(mut self, yes: bool) -> Self {
        if !yes {
            self.fast = None;
        }
        self
    }

    /// Whether the frozen part runs through the backbone crate's fast CPU kernels.
    pub fn is_fast(&self) -> bool {
        self.fast.is_some()
    }

    /// The frozen part's output `[N, C, H, W]` of preprocessed images `[N, 3, S, S]` (the input
    /// itself when nothing is frozen).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some((vgg, last)) = &self.fast {
            let spec = VGG16_CONVS[*last];
            let tap = vgg.forward_taps(x, &[spec.name])?.remove(0).relu()?;
            return Ok(if spec.pool_after { tap.max_pool2d(2)? } else { tap });
        }
        let mut x = x.clone();
        for (w, b, pool) in &self.layers {
            x = conv_block(&x, w, b, *pool)?;
        }
        Ok(x)
    }
}

/// The trained convolutions and the head, as candle variables.
pub struct TrainableNet {
    /// `(name, var)` in a fixed order: each trained conv's weight and bias, then the head.
    vars: Vec<(String, Var)>,
    pools: Vec<bool>,
}

impl TrainableNet {
    /// The layers from `train_from` on, initialized from `base`, with a head of weights drawn
    /// uniformly from ±1/√C (ChaCha8 from `seed`, stream `stream`) and bias 0, in `dtype`
    /// (f32 to train; f64 lets tests check gradients).
    pub fn new(
        base: &BaseWeights,
        train_from: usize,
        seed: u64,
        stream: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut vars = Vec::new();
        let mut pools = Vec::new();
        for (layer, spec) in base.layers.iter().zip(&VGG16_CONVS).skip(train_from) {
            let (w, b) = conv_tensors(layer, dtype, device)?;
            vars.push((format!("features.{}.weight", spec.features_index), Var::from_tensor(&w)?));
            vars.push((format!("features.{}.bias", spec.features_index), Var::from_tensor(&b)?));
            pools.push(spec.pool_after);
        }
        let channels = base.layers.last().map_or(0, |l| l.c_out);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        let bound = 1.0 / (channels.max(1) as f32).sqrt();
        let head: Vec<f32> = (0..channels).map(|_| rng.random_range(-bound..bound)).collect();
        let head_w = Tensor::from_vec(head, (1, channels), device)?.to_dtype(dtype)?;
        vars.push((HEAD_WEIGHT.into(), Var::from_tensor(&head_w)?));
        vars.push((HEAD_BIAS.into(), Var::zeros(1, dtype, device)?));
        Ok(TrainableNet { vars, pools })
    }

    /// `(name, var)` of every trained tensor: `features.N.weight`, `features.N.bias` of each
    /// trained conv, then [`HEAD_WEIGHT`] and [`HEAD_BIAS`].
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// The object logit `[N]` of frozen features `[N, C, H, W]`: the trained convolutions (ReLU,
    /// pools, except after the last), `ReLU(conv5_3)` averaged over the map, then the linear head.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let convs = self.pools.len();
        let mut x = x.clone();
        for (i, pool) in self.pools.iter().enumerate() {
            let w = self.vars[2 * i].1.as_tensor();
            let b = self.vars[2 * i + 1].1.as_tensor();
            x = conv_block(&x, w, b, *pool && i + 1 < convs)?;
        }
        self.head(&x)
    }

    /// The head on `ReLU`'d last-conv maps `[N, C, H, W]`: mean over the map, then linear.
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
