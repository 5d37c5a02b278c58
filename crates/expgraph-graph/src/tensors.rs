//! Small helpers around `safetensors`: owned tensors to write, typed reads with shape checks,
//! and atomic file writes (temp file in the same folder, then rename).

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::error::{format_err, io_err, GraphError};

pub(crate) use expgraph_cache::OwnedTensor;

/// Serialize named tensors (sorted by name by safetensors itself) with string metadata.
/// Keep `metadata` to ONE key: a `HashMap` iterates in random order, so several keys would make
/// the bytes differ between runs.
pub(crate) fn serialize(
    tensors: &[(String, OwnedTensor)],
    metadata: HashMap<String, String>,
    path: &Path,
) -> Result<Vec<u8>, GraphError> {
    safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(metadata))
        .map_err(|e| format_err(path, format!("cannot encode safetensors: {e}")))
}

/// Write `bytes` to `path` atomically ([`expgraph_io::write_bytes`]).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), GraphError> {
    expgraph_io::write_bytes(path, bytes).map_err(|e| io_err(path, e))
}

/// Typed reads out of a parsed safetensors file, checking dtype and shape.
pub(crate) struct TensorReader<'a> {
    pub(crate) st: SafeTensors<'a>,
    pub(crate) path: &'a Path,
}

impl<'a> TensorReader<'a> {
    pub(crate) fn parse(bytes: &'a [u8], path: &'a Path) -> Result<Self, GraphError> {
        let st =
            SafeTensors::deserialize(bytes).map_err(|e| format_err(path, format!("not a safetensors file: {e}")))?;
        Ok(Self { st, path })
    }

    fn raw(&self, name: &str, dtype: Dtype, shape: &[usize]) -> Result<&'a [u8], GraphError> {
        let t = self.st.tensor(name).map_err(|_| format_err(self.path, format!("tensor `{name}` is missing")))?;
        if t.dtype() != dtype || t.shape() != shape {
            return Err(format_err(
                self.path,
                format!("tensor `{name}` is {:?} {:?}, expected {dtype:?} {shape:?}", t.dtype(), t.shape()),
            ));
        }
        Ok(t.data())
    }

    pub(crate) fn f64(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>, GraphError> {
        let d = self.raw(name, Dtype::F64, shape)?;
        Ok(d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect())
    }
    pub(crate) fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, GraphError> {
        let d = self.raw(name, Dtype::F32, shape)?;
        Ok(d.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4]))).collect())
    }
    pub(crate) fn i32(&self, name: &str, shape: &[usize]) -> Result<Vec<i32>, GraphError> {
        let d = self.raw(name, Dtype::I32, shape)?;
        Ok(d.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap_or([0; 4]))).collect())
    }
    pub(crate) fn u8(&self, name: &str, shape: &[usize]) -> Result<Vec<u8>, GraphError> {
        Ok(self.raw(name, Dtype::U8, shape)?.to_vec())
    }
}

pub(crate) fn pairs<T: Copy>(flat: &[T]) -> Vec<[T; 2]> {
    flat.chunks_exact(2).map(|c| [c[0], c[1]]).collect()
}
