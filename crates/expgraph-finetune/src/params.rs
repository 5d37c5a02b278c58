//! Hyper-parameters, linfa style: [`FinetuneParams`] (builder) → [`FinetuneParams::check`] →
//! [`FinetuneValidParams`] → [`FinetuneValidParams::fit`](crate::FinetuneValidParams::fit).

use expgraph_io::ProgressSink;
use serde::{Deserialize, Serialize};

use crate::model::is_trainable_layer_name;
use crate::{FinetuneError, Result};

/// Unchecked fine-tuning parameters; build, then [`check`](Self::check).
///
/// ```
/// use expgraph_finetune::FinetuneParams;
/// let params = FinetuneParams::default().epochs(3).learning_rate(1e-3).train_from("conv5_1").check().unwrap();
/// assert_eq!(params.epochs(), 3);
/// assert!(FinetuneParams::default().train_from("conv9_9").check().is_err());
/// assert!(FinetuneParams::default().held_out(0.0).check().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneParams(FinetuneValidParams);

/// Checked parameters; see the builder methods of [`FinetuneParams`] for their meaning.
///
/// The serialized form (what the checkpoint and the output's metadata record, and what a resumed
/// run must match) holds the hyper-parameters only: not `resume`, the stop hook or the progress
/// sink, which do not change the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneValidParams {
    pub(crate) epochs: usize,
    pub(crate) learning_rate: f64,
    pub(crate) momentum: f64,
    pub(crate) weight_decay: f64,
    pub(crate) batch: usize,
    pub(crate) seed: u64,
    pub(crate) held_out: f64,
    pub(crate) train_from: Option<String>,
    pub(crate) input_size: usize,
    #[serde(skip)]
    pub(crate) resume: bool,
    #[serde(skip)]
    pub(crate) stop_after: Option<usize>,
    #[serde(skip)]
    pub(crate) progress: ProgressSink,
}

impl Default for FinetuneParams {
    /// 5 epochs, learning rate 1e-3, momentum 0.9, weight decay 5e-4, batch 8, seed 0, 20 % held
    /// out, the architecture's default trained layers (VGG-16: `conv4_1` … `conv5_3`; ResNet:
    /// `layer4`), 224×224 inputs, no resume.
    fn default() -> Self {
        Self(FinetuneValidParams {
            epochs: 5,
            learning_rate: 1e-3,
            momentum: 0.9,
            weight_decay: 5e-4,
            batch: 8,
            seed: 0,
            held_out: 0.2,
            train_from: None,
            input_size: 224,
            resume: false,
            stop_after: None,
            progress: ProgressSink::none(),
        })
    }
}

impl FinetuneParams {
    /// Passes over the training samples.
    pub fn epochs(mut self, n: usize) -> Self {
        self.0.epochs = n;
        self
    }

    /// SGD step size `lr` (`w ← w − lr·v`).
    pub fn learning_rate(mut self, lr: f64) -> Self {
        self.0.learning_rate = lr;
        self
    }

    /// SGD momentum μ ∈ [0, 1) (`v ← μ·v + g + wd·w`).
    pub fn momentum(mut self, mu: f64) -> Self {
        self.0.momentum = mu;
        self
    }

    /// L2 weight decay `wd` ≥ 0, applied to every trained tensor (convolutions and head).
    pub fn weight_decay(mut self, wd: f64) -> Self {
        self.0.weight_decay = wd;
        self
    }

    /// Samples per SGD step (the last batch of an epoch may be smaller).
    pub fn batch(mut self, n: usize) -> Self {
        self.0.batch = n;
        self
    }

    /// Seed of every random choice: the held-out split, the head's initial weights, each
    /// epoch's order.
    pub fn seed(mut self, seed: u64) -> Self {
        self.0.seed = seed;
        self
    }

    /// Fraction in (0, 1) of the objects and of the negatives held out to measure accuracy (at
    /// least one of each is held out, at least one of each is trained on).
    pub fn held_out(mut self, fraction: f64) -> Self {
        self.0.held_out = fraction;
        self
    }

    /// The first trained layer: a VGG-16 convolution (`conv1_1` … `conv5_3`; default `conv4_1`)
    /// or a ResNet stage (`layer1` … `layer4`; default `layer4`); the layers before it stay
    /// frozen. [`fit`](FinetuneValidParams::fit) checks that the base network has it.
    pub fn train_from(mut self, layer: impl Into<String>) -> Self {
        self.0.train_from = Some(layer.into());
        self
    }

    /// Side of the square network input (object crops and negatives are resized to it); ≥ 16.
    pub fn input_size(mut self, n: usize) -> Self {
        self.0.input_size = n;
        self
    }

    /// Continue from `<out>.checkpoint.safetensors` when it exists (it must come from the same
    /// parameters, data and base weights).
    pub fn resume(mut self, yes: bool) -> Self {
        self.0.resume = yes;
        self
    }

    /// Stop after this many epochs in all (the checkpoint is kept, no output is written): an
    /// interruption on purpose, e.g. to test resuming. `None` (default): run every epoch.
    pub fn stop_after(mut self, epochs: Option<usize>) -> Self {
        self.0.stop_after = epochs;
        self
    }

    /// Where progress goes: stage `frozen layers` (images), then one stage per epoch (batches)
    /// named with the previous epoch's loss and accuracy.
    pub fn progress(mut self, sink: ProgressSink) -> Self {
        self.0.progress = sink;
        self
    }

    /// Validate every value.
    pub fn check(self) -> Result<FinetuneValidParams> {
        self.0.validate()?;
        Ok(self.0)
    }
}

fn invalid(name: &'static str, value: impl ToString, reason: &str) -> FinetuneError {
    FinetuneError::InvalidParam { name, value: value.to_string(), reason: reason.to_string() }
}

impl FinetuneValidParams {
    /// The checks of [`FinetuneParams::check`].
    pub(crate) fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(invalid("epochs", self.epochs, "must be at least 1"));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(invalid("learning_rate", self.learning_rate, "must be finite and > 0"));
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return Err(invalid("momentum", self.momentum, "must be in [0, 1)"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(invalid("weight_decay", self.weight_decay, "must be finite and ≥ 0"));
        }
        if self.batch == 0 {
            return Err(invalid("batch", self.batch, "must be at least 1"));
        }
        if !(self.held_out.is_finite() && self.held_out > 0.0 && self.held_out < 1.0) {
            return Err(invalid("held_out", self.held_out, "must be in (0, 1)"));
        }
        if let Some(layer) = self.train_from.as_deref().filter(|l| !is_trainable_layer_name(l)) {
            return Err(invalid(
                "train_from",
                layer,
                "must be a VGG-16 convolution conv1_1 … conv5_3 or a ResNet stage layer1 … layer4",
            ));
        }
        if self.input_size < 16 {
            return Err(invalid("input_size", self.input_size, "must be at least 16 (four 2×2 pools before conv5)"));
        }
        if self.stop_after == Some(0) {
            return Err(invalid("stop_after", 0, "must be at least 1"));
        }
        Ok(())
    }

    /// Epochs in all.
    pub fn epochs(&self) -> usize {
        self.epochs
    }

    /// SGD step size.
    pub fn learning_rate(&self) -> f64 {
        self.learning_rate
    }

    /// SGD momentum.
    pub fn momentum(&self) -> f64 {
        self.momentum
    }

    /// L2 weight decay.
    pub fn weight_decay(&self) -> f64 {
        self.weight_decay
    }

    /// Samples per step.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The seed of every random choice.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Held-out fraction.
    pub fn held_out(&self) -> f64 {
        self.held_out
    }

    /// First trained layer, when set (else the architecture's default).
    pub fn train_from(&self) -> Option<&str> {
        self.train_from.as_deref()
    }

    /// Network input side.
    pub fn input_size(&self) -> usize {
        self.input_size
    }

    /// Whether a checkpoint is resumed.
    pub fn resumes(&self) -> bool {
        self.resume
    }

    /// The hyper-parameters as JSON (what checkpoints and outputs record).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}
