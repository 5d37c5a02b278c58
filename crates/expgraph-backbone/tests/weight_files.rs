//! Loading safetensors weight files: good files (extra tensors ignored) and bad ones (clear errors).

use std::collections::HashMap;
use std::path::Path;

mod common;

use candle_core::{DType, Device, Tensor};
use expgraph_backbone::{Backbone, BackboneError, Vgg16};

fn save(path: &Path, tensors: Vec<(String, Tensor)>) {
    let map: HashMap<String, Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

fn load_err(path: &Path) -> BackboneError {
    match Vgg16::load_file(path, &Device::Cpu) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(e) => e,
    }
}

fn zeros(shape: &[usize], dtype: DType) -> Tensor {
    Tensor::zeros(shape, dtype, &Device::Cpu).unwrap()
}

#[test]
fn full_random_file_with_extra_tensors_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vgg16.safetensors");
    let model = Vgg16::random(1, 11, &Device::Cpu).unwrap();
    let mut tensors = model.named_weights();
    tensors.push(("head.fc.weight".into(), zeros(&[10, 512], DType::F32)));
    tensors.push(("classifier.0.weight".into(), zeros(&[4, 4], DType::F64)));
    save(&path, tensors);

    let loaded = Vgg16::load_file(&path, &Device::Cpu).unwrap();
    let digest = blake3::hash(&std::fs::read(&path).unwrap()).to_hex().to_string();
    assert_eq!(loaded.weights_digest(), digest);
    assert_eq!(loaded.taps()[12].channels, 512);

    let x = Tensor::randn(0f32, 50.0, (1, 3, 32, 32), &Device::Cpu).unwrap();
    let a = model.forward_taps(&x, &["conv3_3"]).unwrap();
    let b = loaded.forward_taps(&x, &["conv3_3"]).unwrap();
    let d = common::max_abs_diff(&a[0], &b[0]);
    assert_eq!(d, 0.0);

    // A wrong tensor deep in the file is reported by name.
    let mut tensors = model.named_weights();
    let last = tensors.len() - 1;
    tensors[last].1 = zeros(&[511], DType::F32);
    save(&path, tensors);
    let err = load_err(&path).to_string();
    assert!(err.contains("features.28.bias") && err.contains("[511]") && err.contains("[512]"), "{err}");
}

#[test]
fn missing_file_names_the_path() {
    let path = Path::new("/nonexistent/dir/vgg16.safetensors");
    let err = load_err(path);
    assert!(matches!(err, BackboneError::MissingFile { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/dir/vgg16.safetensors"));
}

#[test]
fn garbage_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.safetensors");
    std::fs::write(&path, b"this is not a safetensors file").unwrap();
    let err = load_err(&path);
    assert!(matches!(err, BackboneError::InvalidWeightFile { .. }), "{err:?}");
    assert!(err.to_string().contains("garbage.safetensors"), "{err}");
}

#[test]
fn missing_tensor_is_named_with_expected_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("head-only.safetensors");
    save(&path, vec![("classifier.0.weight".into(), zeros(&[4, 4], DType::F32))]);
    let err = load_err(&path);
    assert!(matches!(err, BackboneError::MissingTensor { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("features.0.weight") && msg.contains("[64, 3, 3, 3]") && msg.contains("head-only"), "{msg}");
}

#[test]
fn wrong_shape_is_named_with_expected_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shape.safetensors");
    save(&path, vec![("features.0.weight".into(), zeros(&[64, 3, 5, 5], DType::F32))]);
    let err = load_err(&path);
    assert!(matches!(err, BackboneError::TensorShape { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("features.0.weight") && msg.contains("[64, 3, 5, 5]") && msg.contains("[64, 3, 3, 3]"),
        "{msg}"
    );
}

#[test]
fn wrong_dtype_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dtype.safetensors");
    save(&path, vec![("features.0.weight".into(), zeros(&[64, 3, 3, 3], DType::F16))]);
    let err = load_err(&path);
    assert!(matches!(err, BackboneError::TensorDtype { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("features.0.weight") && msg.contains("F16") && msg.contains("F32"), "{msg}");
}

#[test]
fn non_finite_weights_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.safetensors");
    let mut values = vec![0f32; 64 * 27];
    values[5] = f32::NAN;
    let w = Tensor::from_vec(values, (64, 3, 3, 3), &Device::Cpu).unwrap();
    save(&path, vec![("features.0.weight".into(), w)]);
    let err = load_err(&path);
    assert!(matches!(err, BackboneError::NonFiniteWeights { .. }), "{err:?}");
}
