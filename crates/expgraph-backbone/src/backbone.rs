//! The [`Backbone`] trait that callers code against, and tap metadata.

use candle_core::{Device, Tensor};

use crate::{BackboneError, TapGeometry};

/// One layer whose output can be requested ("tapped").
#[derive(Clone, Debug, PartialEq)]
pub struct TapInfo {
    /// Tap name, e.g. `conv4_3`.
    pub name: String,
    /// Number of output channels.
    pub channels: usize,
    /// Position of the map's cells in a 224×224 input (spec §1.3).
    pub geometry: TapGeometry,
}

/// A pretrained CNN that returns the feature maps of named layers ("taps").
///
/// Implementations: [`crate::Vgg16`] (taps `convX_Y`, pre-ReLU) and [`crate::ResNet`] (taps
/// `layerN`, a stage's output after its last ReLU, and `layerN.pre_relu`, the residual sum
/// before it). Callers hold a `Box<dyn Backbone>`, so a new architecture needs no change there.
pub trait Backbone: Send + Sync {
    /// Architecture name, e.g. `"vgg16"`.
    fn name(&self) -> &str;

    /// All taps, shallow to deep.
    fn taps(&self) -> &[TapInfo];

    /// Device the weights live on (inputs are moved there).
    fn device(&self) -> &Device;

    /// blake3 hex digest of the weight file (part of cache keys).
    fn weights_digest(&self) -> &str;

    /// Side of the (square) map of `tap` for a square input of side `input_size`; an error for an
    /// unknown tap or an input too small to reach it.
    fn tap_map_size(&self, tap: &str, input_size: usize) -> Result<usize, BackboneError>;

    /// Outputs (NCHW `f32`) of `taps`, in the order requested (before or after a ReLU as the
    /// architecture documents each tap), for an `[N, 3, H, W]` `f32` input that is already
    /// preprocessed. Only the layers up to the deepest requested tap run.
    fn forward_taps(&self, input: &Tensor, taps: &[&str]) -> Result<Vec<Tensor>, BackboneError>;

    /// The tap called `name`, if any.
    fn tap(&self, name: &str) -> Option<&TapInfo> {
        self.taps().iter().find(|t| t.name == name)
    }
}
