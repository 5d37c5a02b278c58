//! The error type of this crate.

use std::path::PathBuf;

use crate::Precision;

/// Everything that can go wrong while loading a backbone or running it.
#[derive(Debug, thiserror::Error)]
pub enum BackboneError {
    /// The weight file does not exist.
    #[error("weight file {path}: file not found")]
    MissingFile { path: PathBuf },
    /// The weight file exists but could not be read.
    #[error("weight file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a readable safetensors file.
    #[error("weight file {path}: not a valid safetensors file: {message}")]
    InvalidWeightFile { path: PathBuf, message: String },
    /// A tensor the network needs is absent from the weight file.
    #[error("weight file {path}: tensor `{tensor}` is missing (expected shape {expected:?}, dtype F32)")]
    MissingTensor { path: PathBuf, tensor: String, expected: Vec<usize> },
    /// A tensor has the wrong shape.
    #[error("weight file {path}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    TensorShape { path: PathBuf, tensor: String, expected: Vec<usize>, found: Vec<usize> },
    /// A tensor has the wrong element type.
    #[error("weight file {path}: tensor `{tensor}` has dtype {found}, expected F32")]
    TensorDtype { path: PathBuf, tensor: String, found: String },
    /// A tensor holds NaN or infinite values.
    #[error("weight file {path}: tensor `{tensor}` contains non-finite values")]
    NonFiniteWeights { path: PathBuf, tensor: String },
    /// A tap name the backbone does not have.
    #[error("unknown tap `{name}` for backbone {backbone}; available taps: {available}")]
    UnknownTap { name: String, backbone: String, available: String },
    /// A preprocessing preset name that does not exist.
    #[error("unknown preprocessing preset `{0}`; expected `caffe` or `torchvision`")]
    UnknownPreprocess(String),
    /// A malformed input (image buffer, tensor shape, option).
    #[error("invalid input: {0}")]
    Input(String),
    /// A hub file is not cached and downloads are forbidden by `HF_HUB_OFFLINE`.
    #[error(
        "Hugging Face hub: `{filename}` of `{repo}` (revision {revision}) is not in the local cache \
         and HF_HUB_OFFLINE is set; expected it at {expected} (download it on a connected machine \
         into this cache, or pass a local .safetensors path)"
    )]
    HubOffline { repo: String, revision: String, filename: String, expected: PathBuf },
    /// Downloading from the hub failed.
    #[error(
        "Hugging Face hub: cannot download `{filename}` of `{repo}` (revision {revision}) into \
         cache {cache}: {message} (set HF_HUB_OFFLINE=1 to use only the cache, or pass a local \
         .safetensors path)"
    )]
    HubDownload { repo: String, revision: String, filename: String, cache: PathBuf, message: String },
    /// The ONNX model file is malformed, or the graph cannot be evaluated (feature `onnx`).
    #[error("ONNX file {path}: {message}")]
    Onnx { path: PathBuf, message: String },
    /// The receptive-field geometry of an ONNX tap cannot be told from the graph (feature `onnx`).
    #[error(
        "ONNX file {path}: cannot tell the geometry of tap `{tap}` from the graph: {reason}; give it \
         explicitly (stride, first-unit centre and receptive field in input pixels; CLI: \
         `--tap-geometry {tap}=STRIDE,CENTRE,FIELD`)"
    )]
    OnnxGeometry { path: PathBuf, tap: String, reason: String },
    /// A device name that cannot be parsed, or a device that cannot be used
    /// ([`crate::parse_device`]).
    #[error("device {name}: {what}")]
    Device {
        /// The device as requested (`cuda:N` for a CUDA request).
        name: String,
        /// What is wrong, and what to do about it.
        what: String,
    },
    /// A precision name that does not exist ([`Precision::from_name`]).
    #[error("unknown precision `{0}`; expected one of f32, f16, bf16")]
    UnknownPrecision(String),
    /// A backbone that cannot compute in the requested precision
    /// ([`crate::Backbone::set_precision`]).
    #[error("backbone {backbone} computes in f32 only, not {precision}")]
    UnsupportedPrecision {
        /// The backbone's name.
        backbone: String,
        /// The precision asked for.
        precision: Precision,
    },
    /// An error inside candle.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}
