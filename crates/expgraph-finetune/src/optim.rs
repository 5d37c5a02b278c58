//! SGD with momentum and weight decay, written out so that its state can be checkpointed:
//! `v ← μ·v + g + wd·w`, `w ← w − lr·v` (Caffe's and PyTorch's form).

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::{FinetuneError, Result};

/// The optimizer and its momentum buffers, one per variable, in the variables' order.
pub struct Sgd {
    learning_rate: f64,
    momentum: f64,
    weight_decay: f64,
    buffers: Vec<Tensor>,
}

impl Sgd {
    /// An optimizer for `vars` with zero momentum buffers.
    pub fn new(vars: &[(String, Var)], learning_rate: f64, momentum: f64, weight_decay: f64) -> Result<Self> {
        let buffers = vars.iter().map(|(_, v)| v.as_tensor().zeros_like()).collect::<candle_core::Result<_>>()?;
        Ok(Sgd { learning_rate, momentum, weight_decay, buffers })
    }

    /// The momentum buffers, in the variables' order.
    pub fn buffers(&self) -> &[Tensor] {
        &self.buffers
    }

    /// Replaces the momentum buffers (from a checkpoint); shapes must match.
    pub fn set_buffers(&mut self, buffers: Vec<Tensor>) -> Result<()> {
        if buffers.len() != self.buffers.len() || buffers.iter().zip(&self.buffers).any(|(a, b)| a.shape() != b.shape())
        {
            return Err(FinetuneError::Data("momentum buffers do not match the trained tensors".into()));
        }
        self.buffers = buffers;
        Ok(())
    }

    /// One step on every variable from its gradient in `grads` (a variable without gradient is
    /// an error: every trained tensor reaches the loss).
    pub fn step(&mut self, vars: &[(String, Var)], grads: &GradStore) -> Result<()> {
        for ((name, var), buffer) in vars.iter().zip(self.buffers.iter_mut()) {
            let w = var.as_tensor();
            let g = grads.get(w).ok_or_else(|| FinetuneError::Data(format!("no gradient reached {name}")))?;
            let v = ((buffer.affine(self.momentum, 0.0)? + g)? + w.affine(self.weight_decay, 0.0)?)?;
            let updated = (w.detach() - v.affine(self.learning_rate, 0.0)?)?;
            var.set(&updated)?;
            *buffer = v.detach();
        }
        Ok(())
    }
}
