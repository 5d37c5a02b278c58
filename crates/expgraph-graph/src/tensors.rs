//! Small helpers around `safetensors`: owned tensors to write, typed reads with shape checks,
//! and atomic file writes (temp file in the same folder, then rename).

use std::path::{Component, Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::{format_err, io_err, GraphError};

pub(crate) use expgraph_cache::OwnedTensor;

/// Serialize named tensors with string metadata through [`expgraph_cache::serialize_safetensors`]:
/// tensors and metadata keys in a fixed order, so the same content always gives the same bytes
/// (whatever the iteration order of `metadata`, e.g. a `HashMap`).
pub(crate) fn serialize(
    tensors: &[(String, OwnedTensor)],
    metadata: impl IntoIterator<Item = (String, String)>,
    path: &Path,
) -> Result<Vec<u8>, GraphError> {
    expgraph_cache::serialize_safetensors(tensors.iter().map(|(k, t)| (k, t)), metadata)
        .map_err(|e| format_err(path, e.to_string()))
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

/// The arrays file that metadata file `json_path` names: a plain file name in the same folder
/// `dir`. A folder part, `..` or an absolute path is an error, so a metadata file cannot make a
/// reader open another file (outside the folder, or one that never ends, like `/dev/zero`).
pub(crate) fn arrays_file(dir: &Path, json_path: &Path, name: &str) -> Result<PathBuf, GraphError> {
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(file)), None) => Ok(dir.join(file)),
        _ => Err(format_err(json_path, format!("arrays file {name:?} is not a file name in this folder"))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn serialize_is_byte_deterministic_with_many_metadata_keys() {
        let path = Path::new("g.safetensors");
        let tensors = vec![
            ("b.mu".to_string(), OwnedTensor::f64(vec![2, 2], [1.0, 2.0, 3.0, 4.0])),
            ("a.parents".to_string(), OwnedTensor::i32(vec![1, 2], [3, -1])),
            ("flips".to_string(), OwnedTensor::u8(vec![2], [0, 1])),
        ];
        let meta = || (0..32).map(|i| (format!("k{i}"), format!("v{i}"))).collect::<HashMap<_, _>>();
        let first = serialize(&tensors, meta(), path).unwrap();
        for _ in 0..10 {
            assert_eq!(serialize(&tensors, meta(), path).unwrap(), first);
        }
        let reader = TensorReader::parse(&first, path).unwrap();
        assert_eq!(reader.f64("b.mu", &[2, 2]).unwrap(), [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(reader.i32("a.parents", &[1, 2]).unwrap(), [3, -1]);
        assert_eq!(reader.u8("flips", &[2]).unwrap(), [0, 1]);
        let (_, header) = SafeTensors::read_metadata(&first).unwrap();
        assert_eq!(header.metadata().as_ref().unwrap(), &meta());
    }
}
