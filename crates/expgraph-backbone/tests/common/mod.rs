//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a part

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};

/// `../shared` next to the workspace, or `$EXPGRAPH_SHARED`.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("EXPGRAPH_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")))
}

/// The real VGG-16 weights and its golden tensors, or `None` after printing why the test is
/// skipped.
pub fn vgg16_golden_files() -> Option<(PathBuf, HashMap<String, Tensor>)> {
    let models = shared_dir().join("models");
    let weights = models.join("vgg16-imagenet-conv.safetensors");
    let golden = models.join("vgg16-golden.safetensors");
    for path in [&weights, &golden] {
        if !path.is_file() {
            eprintln!("SKIPPED: {} not found (set EXPGRAPH_SHARED to the shared folder)", path.display());
            return None;
        }
    }
    let tensors = candle_core::safetensors::load(&golden, &Device::Cpu).expect("golden file readable");
    Some((weights, tensors))
}

/// `max |a − b|` over all elements.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("tensors of the same shape and dtype f32")
}
