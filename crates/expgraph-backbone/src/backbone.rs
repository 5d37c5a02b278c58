//! The [`Backbone`] trait that callers code against, and tap metadata.

use candle_core::{DType, Device, Tensor};

use crate::geometry::{map_size, LayerShape};
use crate::{BackboneError, Precision, TapGeometry};

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

/// What every backbone reports about itself. Implementations hold one and return it from
/// [`Backbone::meta`], which gives [`Backbone::taps`], [`Backbone::device`] and
/// [`Backbone::weights_digest`] their bodies.
#[derive(Debug, Clone)]
pub struct BackboneMeta {
    /// All taps, shallow to deep.
    pub taps: Vec<TapInfo>,
    /// Device the weights live on.
    pub device: Device,
    /// blake3 hex digest of the weight file.
    pub digest: String,
}

impl BackboneMeta {
    /// Index of the tap called `name`; an unknown name is [`BackboneError::UnknownTap`] naming
    /// `backbone` and listing the taps ([`compact_tap_names`]).
    pub fn tap_index(&self, name: &str, backbone: &str) -> Result<usize, BackboneError> {
        self.taps.iter().position(|t| t.name == name).ok_or_else(|| BackboneError::UnknownTap {
            name: name.into(),
            backbone: backbone.into(),
            available: compact_tap_names(self.taps.iter().map(|t| t.name.as_str())),
        })
    }
}

/// A pretrained CNN that returns the feature maps of named layers ("taps").
///
/// Implementations: [`crate::Vgg16`] (taps `convX_Y`, pre-ReLU), [`crate::ResNet`] (taps
/// `layerN`, a stage's output after its last ReLU, `layerN.pre_relu`, the residual sum before
/// it, and `layerN.B`, block B's output) and, with the `onnx` feature, `OnnxBackbone` (named
/// node outputs). Callers hold a `Box<dyn Backbone>`, so a new architecture needs no change there.
pub trait Backbone: Send + Sync {
    /// Architecture name, e.g. `"vgg16"`.
    fn name(&self) -> &str;

    /// Taps, device and weights digest.
    fn meta(&self) -> &BackboneMeta;

    /// All taps, shallow to deep.
    fn taps(&self) -> &[TapInfo] {
        &self.meta().taps
    }

    /// Device the weights live on (inputs are moved there).
    fn device(&self) -> &Device {
        &self.meta().device
    }

    /// blake3 hex digest of the weight file (part of cache keys).
    fn weights_digest(&self) -> &str {
        &self.meta().digest
    }

    /// Side of the (square) map of `tap` for a square input of side `input_size`; an error for an
    /// unknown tap or an input too small to reach it.
    fn tap_map_size(&self, tap: &str, input_size: usize) -> Result<usize, BackboneError>;

    /// Outputs (NCHW `f32`) of `taps`, in the order requested (before or after a ReLU as the
    /// architecture documents each tap), for an `[N, 3, H, W]` `f32` input that is already
    /// preprocessed. Only the layers up to the deepest requested tap run. Inputs and outputs are
    /// `f32` whatever [`Backbone::precision`] the network computes in.
    fn forward_taps(&self, input: &Tensor, taps: &[&str]) -> Result<Vec<Tensor>, BackboneError>;

    /// The tap called `name`, if any.
    fn tap(&self, name: &str) -> Option<&TapInfo> {
        self.taps().iter().find(|t| t.name == name)
    }

    /// The precision the network computes in ([`Precision::F32`] unless changed with
    /// [`Backbone::set_precision`]).
    fn precision(&self) -> Precision {
        Precision::F32
    }

    /// Makes the network compute in `precision` from the next [`Backbone::forward_taps`] on; the
    /// input is cast to it after the f32 check and every tap is cast back to `f32`. Switching back
    /// to [`Precision::F32`] restores the f32 results bit for bit. The default implementation (a
    /// backbone that computes in f32 only) accepts `F32` and answers
    /// [`BackboneError::UnsupportedPrecision`] otherwise.
    fn set_precision(&mut self, precision: Precision) -> Result<(), BackboneError> {
        if precision == Precision::F32 {
            Ok(())
        } else {
            Err(BackboneError::UnsupportedPrecision { backbone: self.name().to_string(), precision })
        }
    }
}

/// Checks that `input` is an `[N, 3, H, W]` `f32` batch with N ≥ 1; returns `(H, W)`.
pub(crate) fn check_image_batch(input: &Tensor) -> Result<(usize, usize), BackboneError> {
    let Ok((n, c, h, w)) = input.dims4() else {
        return Err(BackboneError::Input(format!("expected an [N, 3, H, W] tensor, got shape {:?}", input.dims())));
    };
    if c != 3 || n == 0 {
        return Err(BackboneError::Input(format!(
            "expected an [N, 3, H, W] tensor with N ≥ 1, got {:?}",
            input.dims()
        )));
    }
    if input.dtype() != DType::F32 {
        return Err(BackboneError::Input(format!("expected an f32 input, got {:?}", input.dtype())));
    }
    Ok((h, w))
}

/// Checks that an `h × w` input is large enough for `layers`, the path to tap `tap`.
pub(crate) fn check_reaches(layers: &[LayerShape], (h, w): (usize, usize), tap: &str) -> Result<(), BackboneError> {
    if map_size(layers, h).is_none() || map_size(layers, w).is_none() {
        return Err(BackboneError::Input(format!("input {h}×{w} is too small to reach {tap}")));
    }
    Ok(())
}

/// Tap names in short form for messages: runs of numbered taps `prefix.0`, `prefix.1`, … (a
/// ResNet stage's block taps) as `prefix.0…prefix.B`, the rest as they are, comma-separated
/// (`layer1.0…layer1.2, layer1.pre_relu, layer1, …`).
pub fn compact_tap_names<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let numbered = |name: &'a str| -> Option<(&'a str, usize)> {
        let (prefix, index) = name.rsplit_once('.')?;
        Some((prefix, index.parse().ok()?))
    };
    let mut parts: Vec<String> = Vec::new();
    // The open run: prefix, first name, last name, last index.
    let mut run: Option<(&str, &str, &str, usize)> = None;
    let close = |run: Option<(&str, &str, &str, usize)>, parts: &mut Vec<String>| {
        if let Some((_, first, last, _)) = run {
            parts.push(if first == last { first.to_string() } else { format!("{first}…{last}") });
        }
    };
    for name in names {
        match (numbered(name), run) {
            (Some((prefix, i)), Some((p, first, _, j))) if prefix == p && i == j + 1 => {
                run = Some((p, first, name, i));
            }
            (Some((prefix, i)), _) => {
                close(run.take(), &mut parts);
                run = Some((prefix, name, name, i));
            }
            (None, _) => {
                close(run.take(), &mut parts);
                parts.push(name.to_string());
            }
        }
    }
    close(run, &mut parts);
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::compact_tap_names;

    #[test]
    fn numbered_runs_become_ranges() {
        let names = ["layer1.0", "layer1.1", "layer1.2", "layer1.pre_relu", "layer1", "layer2.0", "conv5_3"];
        assert_eq!(compact_tap_names(names), "layer1.0…layer1.2, layer1.pre_relu, layer1, layer2.0, conv5_3");
        // A gap starts a new run; other names pass through.
        assert_eq!(compact_tap_names(["a.0", "a.1", "a.3", "b"]), "a.0…a.1, a.3, b");
        assert_eq!(compact_tap_names(["conv4_2", "conv4_3"]), "conv4_2, conv4_3");
        assert_eq!(compact_tap_names([]), "");
    }
}
