//! Helpers shared by the integration tests: the shared reference files, the ResNet formula
//! weights, error measures against golden tensors, and the GPU of GPU tests ([`gpu`]).
#![allow(dead_code)] // each test binary uses a part

pub mod gpu;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use expgraph_backbone::ResNetDepth;
use expgraph_testkit::formula::formula_values;

/// The taps of the VGG-16 golden file.
pub const VGG16_GOLDEN_TAPS: [&str; 4] = ["conv4_2", "conv4_3", "conv5_2", "conv5_3"];

/// The taps of the ResNet golden files.
pub const RESNET_GOLDEN_TAPS: [&str; 6] =
    ["layer2", "layer3", "layer4", "layer2.pre_relu", "layer3.pre_relu", "layer4.pre_relu"];

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

/// The golden tensors of `resnetN` (`shared/models/resnet-golden/`), or `None` after printing why
/// the test is skipped.
pub fn resnet_golden(depth: ResNetDepth) -> Option<HashMap<String, Tensor>> {
    let path = shared_dir().join("models/resnet-golden").join(format!("{}-golden.safetensors", depth.name()));
    if !path.is_file() {
        eprintln!("SKIPPED: {} not found (set EXPGRAPH_SHARED to the shared folder)", path.display());
        return None;
    }
    Some(candle_core::safetensors::load(&path, &Device::Cpu).expect("golden file readable"))
}

/// The full torchvision state dict of the README's formula weights (with `fc.*` and
/// `num_batches_tracked`, which the loader ignores).
pub fn resnet_formula_state_dict(depth: ResNetDepth) -> HashMap<String, Tensor> {
    let mut shapes = depth.state_dict_shapes();
    let c = depth.stage_channels(3);
    shapes.insert("fc.weight".into(), vec![1000, c]);
    shapes.insert("fc.bias".into(), vec![1000]);
    let mut out: HashMap<String, Tensor> = shapes
        .iter()
        .map(|(name, shape)| {
            (name.clone(), Tensor::from_vec(formula_values(name, shape), shape.as_slice(), &Device::Cpu).unwrap())
        })
        .collect();
    for name in shapes.keys().filter(|n| n.ends_with(".running_var")) {
        let tracked = name.replace(".running_var", ".num_batches_tracked");
        out.insert(tracked, Tensor::new(0i64, &Device::Cpu).unwrap());
    }
    out
}

/// Checks the formula weights of `depth` bit for bit against the `weights.*` excerpts of its
/// golden file, and writes them to a safetensors file in a fresh temporary folder (returned with
/// the file's path; the folder is deleted when dropped).
pub fn resnet_formula_file(depth: ResNetDepth, golden: &HashMap<String, Tensor>) -> (tempfile::TempDir, PathBuf) {
    let state = resnet_formula_state_dict(depth);
    let mut checked = 0;
    for (key, excerpt) in golden {
        let Some(name) = key.strip_prefix("weights.") else { continue };
        let ours = state[name].flatten_all().unwrap();
        let n = excerpt.dims1().unwrap();
        let ours = ours.narrow(0, 0, n).unwrap().to_vec1::<f32>().unwrap();
        let theirs = excerpt.to_vec1::<f32>().unwrap();
        let mismatches = ours.iter().zip(&theirs).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(mismatches, 0, "formula tensor {name}: {mismatches} of {n} values differ");
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} weight excerpts found");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{}.safetensors", depth.name()));
    candle_core::safetensors::save(&state, &path).unwrap();
    (dir, path)
}

/// `max |a − b|` over all elements.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("tensors of the same shape and dtype f32")
}

/// How far a tensor is from its golden counterpart.
#[derive(Clone, Copy, Debug)]
pub struct Deviation {
    /// `max |ours − golden|`.
    pub max_diff: f32,
    /// `max |golden|`.
    pub scale: f32,
    /// `‖ours − golden‖₂ / ‖golden‖₂`, in f64.
    pub rel_l2: f64,
}

impl Deviation {
    /// Measures `ours` (any device, f32) against `golden` (f32); panics on a shape mismatch.
    pub fn measure(label: &str, ours: &Tensor, golden: &Tensor) -> Self {
        assert_eq!(ours.dims(), golden.dims(), "{label}: shape");
        assert_eq!(ours.dtype(), DType::F32, "{label}: dtype");
        let ours = ours.to_device(&Device::Cpu).unwrap();
        let diff = (ours - golden).unwrap();
        let max_abs = |t: &Tensor| t.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let l2 = |t: &Tensor| {
            t.to_dtype(DType::F64).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap().sqrt()
        };
        Deviation { max_diff: max_abs(&diff), scale: max_abs(golden), rel_l2: l2(&diff) / l2(golden) }
    }

    /// `max|Δ| / max|golden|`.
    pub fn rel_max(&self) -> f32 {
        self.max_diff / self.scale
    }

    /// Panics unless `max|Δ| ≤ rel_max · max|golden|` and the relative L2 error is ≤ `rel_l2`.
    pub fn assert_within(&self, label: &str, rel_max: f32, rel_l2: f64) {
        assert!(self.scale > 0.0, "{label}: the golden tensor is all zeros");
        assert!(
            self.max_diff <= rel_max * self.scale,
            "{label}: max|Δ| {} > {rel_max:e} × {}",
            self.max_diff,
            self.scale
        );
        assert!(self.rel_l2 <= rel_l2, "{label}: relative L2 {} > {rel_l2:e}", self.rel_l2);
    }
}

impl std::fmt::Display for Deviation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "max|Δ| = {:.3e} ({:.2e} of max|golden| = {:.1}), relative L2 = {:.3e}",
            self.max_diff,
            self.rel_max(),
            self.scale,
            self.rel_l2
        )
    }
}

/// Measures `ours` against `golden`, prints the result under `label`, and checks it against the
/// bounds of [`Deviation::assert_within`].
pub fn assert_close(label: &str, ours: &Tensor, golden: &Tensor, rel_max: f32, rel_l2: f64) -> Deviation {
    let deviation = Deviation::measure(label, ours, golden);
    eprintln!("{label}: {deviation}");
    deviation.assert_within(label, rel_max, rel_l2);
    deviation
}

/// The golden bounds of the VGG-16 README: max|Δ| ≤ 2e-5·max|golden|, relative L2 ≤ 5e-6.
pub const VGG16_BOUNDS: (f32, f64) = (2e-5, 5e-6);

/// The golden bounds of the ResNet README: max|Δ| ≤ 2e-5·max|golden|, relative L2 ≤ 1e-5.
pub const RESNET_BOUNDS: (f32, f64) = (2e-5, 1e-5);
