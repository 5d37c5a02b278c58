//! Reading and checking safetensors weight files.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use safetensors::{Dtype, SafeTensors};

use crate::BackboneError;

/// A weight file (safetensors, or an ONNX model) read into memory, with its blake3 digest.
pub(crate) struct WeightFile {
    path: PathBuf,
    bytes: Vec<u8>,
    digest: String,
}

impl WeightFile {
    /// Reads `path`; a missing file is [`BackboneError::MissingFile`].
    pub(crate) fn read(path: &Path) -> Result<Self, BackboneError> {
        let bytes = std::fs::read(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => BackboneError::MissingFile { path: path.to_path_buf() },
            _ => BackboneError::Io { path: path.to_path_buf(), source },
        })?;
        let digest = blake3::hash(&bytes).to_hex().to_string();
        Ok(WeightFile { path: path.to_path_buf(), bytes, digest })
    }

    /// blake3 hex digest of the file's bytes.
    pub(crate) fn digest(&self) -> &str {
        &self.digest
    }

    /// The file's bytes.
    #[cfg_attr(not(feature = "onnx"), allow(dead_code))]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The parsed safetensors header and views.
    pub(crate) fn tensors(&self) -> Result<CheckedTensors<'_>, BackboneError> {
        let st = SafeTensors::deserialize(&self.bytes)
            .map_err(|e| BackboneError::InvalidWeightFile { path: self.path.clone(), message: e.to_string() })?;
        Ok(CheckedTensors { path: &self.path, st })
    }
}

/// Safetensors views that are checked against expected names, shapes and dtypes on access.
pub(crate) struct CheckedTensors<'a> {
    path: &'a Path,
    st: SafeTensors<'a>,
}

impl CheckedTensors<'_> {
    /// The `f32` tensor `name`, which must have shape `expected` and finite values.
    pub(crate) fn f32(&self, name: &str, expected: &[usize], device: &Device) -> Result<Tensor, BackboneError> {
        let path = self.path.to_path_buf();
        let view = self.st.tensor(name).map_err(|_| BackboneError::MissingTensor {
            path: path.clone(),
            tensor: name.into(),
            expected: expected.to_vec(),
        })?;
        if view.dtype() != Dtype::F32 {
            return Err(BackboneError::TensorDtype { path, tensor: name.into(), found: format!("{:?}", view.dtype()) });
        }
        if view.shape() != expected {
            return Err(BackboneError::TensorShape {
                path,
                tensor: name.into(),
                expected: expected.to_vec(),
                found: view.shape().to_vec(),
            });
        }
        let values: Vec<f32> =
            view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if values.iter().any(|v| !v.is_finite()) {
            return Err(BackboneError::NonFiniteWeights { path, tensor: name.into() });
        }
        Ok(Tensor::from_vec(values, expected, device)?)
    }
}
