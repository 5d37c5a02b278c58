//! The training loop, its checkpoints and the output file.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use expgraph_cache::{serialize_safetensors, OwnedTensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::data::Split;
use crate::model::{bce_value, bce_with_logits, FrozenStack, TrainableNet, HEAD_BIAS, HEAD_WEIGHT};
use crate::optim::Sgd;
use crate::{BaseWeights, FinetuneError, FinetuneValidParams, Result, TrainingSet};

/// The safetensors `__metadata__` key of the output's description (JSON).
pub const METADATA_KEY: &str = "expgraph.finetune";
/// The safetensors `__metadata__` key of a checkpoint's description (JSON).
pub const CHECKPOINT_METADATA_KEY: &str = "expgraph.finetune.checkpoint";

/// ChaCha8 stream of the head's initial weights.
const HEAD_STREAM: u64 = 1;
/// ChaCha8 stream of epoch `e` (0-based) is `EPOCH_STREAM_BASE + e`.
const EPOCH_STREAM_BASE: u64 = 2;

/// What one epoch measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean loss of the epoch's training batches (weighted by batch size), while training.
    pub train_loss: f64,
    /// Mean loss on the held-out samples after the epoch.
    pub held_out_loss: f64,
    /// Fraction of held-out samples classified right after the epoch (logit > 0 ⇒ object).
    pub held_out_accuracy: f64,
}

/// The result of [`FinetuneValidParams::fit`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FinetuneReport {
    /// The output weight file (written only when `finished`).
    pub out: PathBuf,
    /// Whether every epoch ran and the output was written; `false` after a stop hook
    /// ([`FinetuneParams::stop_after`](crate::FinetuneParams::stop_after)), with the checkpoint kept.
    pub finished: bool,
    /// Epochs done in all (resumed ones included).
    pub epochs_done: usize,
    /// The epoch count of the checkpoint this run resumed from, if any.
    pub resumed_from: Option<usize>,
    /// One entry per epoch done, resumed ones included.
    pub history: Vec<EpochStats>,
    /// Held-out accuracy after the last epoch done.
    pub held_out_accuracy: f64,
    /// Objects.
    pub positives: usize,
    /// Negatives.
    pub negatives: usize,
    /// Training samples (object views and negatives).
    pub train_samples: usize,
    /// Held-out samples.
    pub held_out_samples: usize,
    /// The checkpoint file (removed once the output is written).
    pub checkpoint: PathBuf,
}

/// `<out>.checkpoint.safetensors`: where [`FinetuneValidParams::fit`] checkpoints.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".checkpoint.safetensors");
    PathBuf::from(s)
}

/// What a checkpoint records beside its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CheckpointMeta {
    epochs_done: usize,
    params: serde_json::Value,
    data_digest: String,
    base_digest: String,
    history: Vec<EpochStats>,
}

/// A tensor as an f32 [`OwnedTensor`].
fn owned(t: &Tensor) -> Result<OwnedTensor> {
    Ok(OwnedTensor::f32(t.dims().to_vec(), t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?))
}

/// A safetensors file of tensors with one metadata entry, through the workspace's one
/// byte-deterministic encoder.
fn serialize(tensors: &[(String, OwnedTensor)], key: &str, meta: String) -> Result<Vec<u8>> {
    serialize_safetensors(tensors.iter().map(|(n, t)| (n.as_str(), t)), [(key.to_string(), meta)])
        .map_err(|e| FinetuneError::Data(format!("cannot encode safetensors: {e}")))
}

/// The JSON text of the `__metadata__` entry `key` of the safetensors file `bytes`; the error
/// says what is wrong (`what` names the file kind expected).
fn metadata_entry(bytes: &[u8], key: &str, what: &str) -> std::result::Result<String, String> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    header.metadata().as_ref().and_then(|m| m.get(key)).cloned().ok_or_else(|| format!("no {key} metadata: {what}"))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    expgraph_io::write_bytes(path, bytes).map_err(|source| FinetuneError::Write { path: path.to_path_buf(), source })
}

/// The state a run trains: variables, optimizer, history.
struct State {
    net: TrainableNet,
    sgd: Sgd,
    history: Vec<EpochStats>,
}

impl FinetuneValidParams {
    /// Fine-tunes `base` on `data` (loaded at this input size) on `device`, checkpointing after
    /// every epoch to [`checkpoint_path`]`(out)` and writing `out` at the end (see the crate
    /// docs for its format); the checkpoint is then removed.
    pub fn fit(&self, base: &BaseWeights, data: &TrainingSet, out: &Path, device: &Device) -> Result<FinetuneReport> {
        self.validate()?;
        if data.input_size() != self.input_size {
            return Err(FinetuneError::Data(format!(
                "the images were loaded at {}×{0}, the parameters ask for input size {}",
                data.input_size(),
                self.input_size
            )));
        }
        if self.input_size < base.min_input_size() {
            return Err(FinetuneError::InvalidParam {
                name: "input_size",
                value: self.input_size.to_string(),
                reason: format!("{} needs at least {}", base.architecture().name(), base.min_input_size()),
            });
        }
        let train_from = self.train_from.as_deref().unwrap_or(base.default_train_from());
        base.train_from_index(train_from)?;
        let split = data.split(self.held_out, self.seed)?;
        let ckpt_path = checkpoint_path(out);
        let features = self.frozen_features(base, data, train_from, device)?;

        let net = TrainableNet::new(base, train_from, self.seed, HEAD_STREAM, DType::F32, device)?;
        let sgd = Sgd::new(net.vars(), self.learning_rate, self.momentum, self.weight_decay)?;
        let mut state = State { net, sgd, history: Vec::new() };
        let mut resumed_from = None;
        if ckpt_path.is_file() {
            if self.resume {
                let done = self.load_checkpoint(&ckpt_path, base, data, &mut state, device)?;
                tracing::info!(checkpoint = %ckpt_path.display(), epochs_done = done, "resuming");
                resumed_from = Some(done);
            } else {
                tracing::warn!(checkpoint = %ckpt_path.display(), "a checkpoint exists; starting over (resume to continue it)");
            }
        }
        let labels: Vec<f32> = data.samples().iter().map(|s| if s.label { 1.0 } else { 0.0 }).collect();
        let start = state.history.len();
        for epoch in start..self.epochs {
            let train_loss = self.train_epoch(epoch, &split, &features, &labels, &mut state, device)?;
            let (held_out_loss, held_out_accuracy) = self.evaluate(&split, &features, data, &state.net)?;
            let stats = EpochStats { epoch: epoch + 1, train_loss, held_out_loss, held_out_accuracy };
            tracing::info!(
                epoch = epoch + 1,
                epochs = self.epochs,
                train_loss = format!("{train_loss:.4}"),
                held_out_loss = format!("{held_out_loss:.4}"),
                held_out_accuracy = format!("{held_out_accuracy:.3}"),
                "epoch done"
            );
            state.history.push(stats);
            self.save_checkpoint(&ckpt_path, base, data, &state)?;
            if self.stop_after.is_some_and(|n| epoch + 1 >= n) && epoch + 1 < self.epochs {
                tracing::info!(epochs_done = epoch + 1, checkpoint = %ckpt_path.display(), "stopped as asked");
                return Ok(self.report(out, false, resumed_from, &state, data, &split, ckpt_path));
            }
        }
        self.write_output(out, base, data, &split, train_from, &state)?;
        if ckpt_path.is_file() {
            std::fs::remove_file(&ckpt_path)
                .map_err(|source| FinetuneError::Write { path: ckpt_path.clone(), source })?;
        }
        tracing::info!(out = %out.display(), "fine-tuned weights written");
        Ok(self.report(out, true, resumed_from, &state, data, &split, ckpt_path))
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        out: &Path,
        finished: bool,
        resumed_from: Option<usize>,
        state: &State,
        data: &TrainingSet,
        split: &Split,
        checkpoint: PathBuf,
    ) -> FinetuneReport {
        FinetuneReport {
            out: out.to_path_buf(),
            finished,
            epochs_done: state.history.len(),
            resumed_from,
            history: state.history.clone(),
            held_out_accuracy: state.history.last().map_or(0.0, |h| h.held_out_accuracy),
            positives: data.positives(),
            negatives: data.negatives(),
            train_samples: split.train.len(),
            held_out_samples: split.held_out.len(),
            checkpoint,
        }
    }

    /// The frozen part's output for every sample, `[C, H, W]` each, computed once.
    fn frozen_features(
        &self,
        base: &BaseWeights,
        data: &TrainingSet,
        train_from: &str,
        device: &Device,
    ) -> Result<Vec<Tensor>> {
        let frozen = FrozenStack::new(base, train_from, device)?;
        let samples = data.samples();
        let total = samples.len() as u64;
        let mut features = Vec::with_capacity(samples.len());
        self.progress.report("frozen layers", 0, total);
        for chunk in samples.chunks(self.batch.max(1)) {
            let pixels: Vec<&[u8]> = chunk.iter().map(|s| s.pixels.as_slice()).collect();
            let x = data.preprocess().to_tensor(&pixels, data.input_size(), device)?;
            let y = frozen.forward(&x)?;
            for i in 0..chunk.len() {
                features.push(y.get(i)?.contiguous()?);
            }
            self.progress.report("frozen layers", features.len() as u64, total);
        }
        if let Some(f) = features.first() {
            tracing::info!(
                fast_kernels = frozen.is_fast(),
                trained_from = train_from,
                shape = ?f.dims(),
                samples = features.len(),
                "frozen layers computed"
            );
        }
        Ok(features)
    }

    /// One epoch of SGD in a seeded order; returns the mean training loss.
    fn train_epoch(
        &self,
        epoch: usize,
        split: &Split,
        features: &[Tensor],
        labels: &[f32],
        state: &mut State,
        device: &Device,
    ) -> Result<f64> {
        let mut order = split.train.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(EPOCH_STREAM_BASE + epoch as u64);
        order.shuffle(&mut rng);
        let batches = order.len().div_ceil(self.batch) as u64;
        let stage = match state.history.last() {
            Some(h) => format!(
                "epoch {}/{} (loss {:.3}, acc {:.2})",
                epoch + 1,
                self.epochs,
                h.train_loss,
                h.held_out_accuracy
            ),
            None => format!("epoch {}/{}", epoch + 1, self.epochs),
        };
        self.progress.report(&stage, 0, batches);
        let mut loss_sum = 0.0;
        for (b, chunk) in order.chunks(self.batch).enumerate() {
            let x = Tensor::stack(&chunk.iter().map(|&i| &features[i]).collect::<Vec<_>>(), 0)?;
            let y = Tensor::from_vec(chunk.iter().map(|&i| labels[i]).collect::<Vec<f32>>(), chunk.len(), device)?;
            let loss = bce_with_logits(&state.net.forward(&x)?, &y)?;
            let value = f64::from(loss.to_scalar::<f32>()?);
            if !value.is_finite() {
                return Err(FinetuneError::Data(format!(
                    "the training loss became {value} in epoch {} (learning rate {} too high?)",
                    epoch + 1,
                    self.learning_rate
                )));
            }
            loss_sum += value * chunk.len() as f64;
            let grads = loss.backward()?;
            state.sgd.step(state.net.vars(), &grads)?;
            self.progress.report(&stage, b as u64 + 1, batches);
        }
        Ok(loss_sum / order.len().max(1) as f64)
    }

    /// Held-out loss and accuracy (logit > 0 ⇒ object).
    fn evaluate(
        &self,
        split: &Split,
        features: &[Tensor],
        data: &TrainingSet,
        net: &TrainableNet,
    ) -> Result<(f64, f64)> {
        let (mut loss, mut right) = (0.0, 0usize);
        for chunk in split.held_out.chunks(self.batch) {
            let x = Tensor::stack(&chunk.iter().map(|&i| &features[i]).collect::<Vec<_>>(), 0)?;
            let logits = net.forward(&x)?.detach().to_vec1::<f32>()?;
            for (&i, &logit) in chunk.iter().zip(&logits) {
                let label = data.samples()[i].label;
                loss += bce_value(f64::from(logit), label);
                right += usize::from((logit > 0.0) == label);
            }
        }
        let n = split.held_out.len().max(1) as f64;
        Ok((loss / n, right as f64 / n))
    }

    fn checkpoint_meta(&self, base: &BaseWeights, data: &TrainingSet, history: &[EpochStats]) -> CheckpointMeta {
        CheckpointMeta {
            epochs_done: history.len(),
            params: self.to_json(),
            data_digest: data.digest().to_string(),
            base_digest: base.digest().to_string(),
            history: history.to_vec(),
        }
    }

    fn save_checkpoint(&self, path: &Path, base: &BaseWeights, data: &TrainingSet, state: &State) -> Result<()> {
        let mut tensors = Vec::new();
        for ((name, var), buffer) in state.net.vars().iter().zip(state.sgd.buffers()) {
            tensors.push((format!("param/{name}"), owned(var.as_tensor())?));
            tensors.push((format!("momentum/{name}"), owned(buffer)?));
        }
        let meta = serde_json::to_string(&self.checkpoint_meta(base, data, &state.history))
            .map_err(|e| FinetuneError::Data(e.to_string()))?;
        write(path, &serialize(&tensors, CHECKPOINT_METADATA_KEY, meta)?)
    }

    /// Loads a checkpoint into `state` after checking it belongs to this run; returns its epochs.
    fn load_checkpoint(
        &self,
        path: &Path,
        base: &BaseWeights,
        data: &TrainingSet,
        state: &mut State,
        device: &Device,
    ) -> Result<usize> {
        let err = |what: String| FinetuneError::Checkpoint { path: path.to_path_buf(), what };
        let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let text = metadata_entry(&bytes, CHECKPOINT_METADATA_KEY, "not a fine-tuning checkpoint").map_err(err)?;
        let meta: CheckpointMeta =
            serde_json::from_str(&text).map_err(|e| err(format!("unreadable {CHECKPOINT_METADATA_KEY}: {e}")))?;
        let mismatch = |what: &str| {
            err(format!(
                "made with other {what} than this run; delete it to start over, or run with the {what} it was made with"
            ))
        };
        if meta.params != self.to_json() {
            return Err(err(format!(
                "made with other parameters ({}) than this run's ({}); delete it to start over",
                meta.params,
                self.to_json()
            )));
        }
        if meta.data_digest != data.digest() {
            return Err(mismatch("training data"));
        }
        if meta.base_digest != base.digest() {
            return Err(mismatch("base weights"));
        }
        if meta.epochs_done != meta.history.len() || meta.epochs_done > self.epochs {
            return Err(err(format!("inconsistent: {} epochs done of {}", meta.epochs_done, self.epochs)));
        }
        let st = SafeTensors::deserialize(&bytes).map_err(|e| err(format!("not a safetensors file: {e}")))?;
        let read = |name: &str, like: &Tensor| -> Result<Tensor> {
            let view = st.tensor(name).map_err(|_| err(format!("missing tensor {name}")))?;
            if view.dtype() != Dtype::F32 || view.shape() != like.dims() {
                return Err(err(format!(
                    "tensor {name} is {:?} {:?}, expected F32 {:?}",
                    view.dtype(),
                    view.shape(),
                    like.dims()
                )));
            }
            let values: Vec<f32> =
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            Ok(Tensor::from_vec(values, view.shape(), device)?.to_dtype(like.dtype())?)
        };
        let mut buffers = Vec::new();
        for (name, var) in state.net.vars() {
            var.set(&read(&format!("param/{name}"), var.as_tensor())?)?;
            buffers.push(read(&format!("momentum/{name}"), var.as_tensor())?);
        }
        state.sgd.set_buffers(buffers)?;
        state.history = meta.history;
        Ok(meta.epochs_done)
    }

    fn write_output(
        &self,
        out: &Path,
        base: &BaseWeights,
        data: &TrainingSet,
        split: &Split,
        train_from: &str,
        state: &State,
    ) -> Result<()> {
        let trained: std::collections::HashMap<&str, &Tensor> =
            state.net.vars().iter().map(|(name, var)| (name.as_str(), var.as_tensor())).collect();
        let mut tensors = Vec::new();
        for (name, shape, values) in base.tensors() {
            let tensor = match trained.get(name.as_str()) {
                Some(t) => owned(t)?,
                None => OwnedTensor::f32(shape, values.iter().copied()),
            };
            tensors.push((name, tensor));
        }
        for name in [HEAD_WEIGHT, HEAD_BIAS] {
            let head = trained.get(name).ok_or_else(|| FinetuneError::Data(format!("internal: no {name}")))?;
            tensors.push((name.to_string(), owned(head)?));
        }
        let meta = serde_json::json!({
            "crate_version": env!("CARGO_PKG_VERSION"),
            "base_weights": {"path": base.path(), "blake3": base.digest()},
            "data": {
                "digest": data.digest(),
                "positives": data.positives(),
                "negatives": data.negatives(),
                "train_samples": split.train.len(),
                "held_out_samples": split.held_out.len(),
                "input_size": data.input_size(),
                "preprocess": data.preprocess().name(),
            },
            "params": self.to_json(),
            "architecture": base.architecture().name(),
            "trained": base.trained_layers(base.train_from_index(train_from)?),
            "head": base.head_formula(),
            "history": state.history,
            "held_out_accuracy": state.history.last().map(|h| h.held_out_accuracy),
        });
        write(out, &serialize(&tensors, METADATA_KEY, meta.to_string())?)
    }
}

/// The `expgraph.finetune` metadata (JSON) of a fine-tuned weight file.
pub fn read_metadata(path: &Path) -> Result<serde_json::Value> {
    let err = |what: String| FinetuneError::Weights { path: path.to_path_buf(), what };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let text = metadata_entry(&bytes, METADATA_KEY, "not written by expgraph-finetune").map_err(err)?;
    serde_json::from_str(&text).map_err(|e| err(format!("unreadable {METADATA_KEY} metadata: {e}")))
}
