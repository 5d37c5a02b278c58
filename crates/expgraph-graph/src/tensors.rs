//! Small helpers around `safetensors`: owned tensors to write, typed reads with shape checks,
//! and atomic file writes (temp file in the same folder, then rename).

use std::path::{Component, Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::{format_err, io_err, GraphError};
use crate::Parent;

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

/// Typed reads out of a parsed safetensors file, checking dtype and shape (errors name the
/// file and the tensor): the one reader of the graph, activations and learning-checkpoint files.
pub struct TensorReader<'a> {
    pub(crate) st: SafeTensors<'a>,
    pub(crate) path: &'a Path,
    metadata: std::collections::HashMap<String, String>,
}

impl<'a> TensorReader<'a> {
    /// Parse `bytes`, the content of the file `path` (named in errors).
    pub fn parse(bytes: &'a [u8], path: &'a Path) -> Result<Self, GraphError> {
        let st =
            SafeTensors::deserialize(bytes).map_err(|e| format_err(path, format!("not a safetensors file: {e}")))?;
        let metadata =
            SafeTensors::read_metadata(bytes).ok().and_then(|(_, m)| m.metadata().clone()).unwrap_or_default();
        Ok(Self { st, path, metadata })
    }

    /// A string of the header's metadata.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// The shape of tensor `name`.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>, GraphError> {
        let t = self.st.tensor(name).map_err(|_| format_err(self.path, format!("tensor `{name}` is missing")))?;
        Ok(t.shape().to_vec())
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

    /// Tensor `name`, which must be f64 of `shape`.
    pub fn f64(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>, GraphError> {
        let d = self.raw(name, Dtype::F64, shape)?;
        Ok(d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect())
    }
    /// Tensor `name`, which must be f32 of `shape`.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, GraphError> {
        let d = self.raw(name, Dtype::F32, shape)?;
        Ok(d.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4]))).collect())
    }
    /// Tensor `name`, which must be i32 of `shape`.
    pub fn i32(&self, name: &str, shape: &[usize]) -> Result<Vec<i32>, GraphError> {
        let d = self.raw(name, Dtype::I32, shape)?;
        Ok(d.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap_or([0; 4]))).collect())
    }
    /// Tensor `name`, which must be u8 of `shape`.
    pub fn u8(&self, name: &str, shape: &[usize]) -> Result<Vec<u8>, GraphError> {
        Ok(self.raw(name, Dtype::U8, shape)?.to_vec())
    }
}

pub(crate) fn pairs<T: Copy>(flat: &[T]) -> Vec<[T; 2]> {
    flat.chunks_exact(2).map(|c| [c[0], c[1]]).collect()
}

/// Each node's parents as `m` columns (`m` ≥ every node's count): node indices, `-1` where a
/// node has fewer, and similarities, `0` there; `[nodes, m]` row-major.
pub fn parents_to_padded(parents: &[Vec<Parent>], m: usize) -> (Vec<i32>, Vec<f32>) {
    let padded: Vec<Option<Parent>> = parents.iter().flat_map(|ps| (0..m).map(move |i| ps.get(i).copied())).collect();
    let idx = padded.iter().map(|p| p.map_or(-1, |p| p.node as i32)).collect();
    let sim = padded.iter().map(|p| p.map_or(0.0, |p| p.similarity)).collect();
    (idx, sim)
}

/// The inverse of [`parents_to_padded`] for `nodes` nodes (`m = 0`: no parents).
pub fn parents_from_padded(idx: &[i32], sim: &[f32], m: usize, nodes: usize) -> Vec<Vec<Parent>> {
    if m == 0 {
        return vec![Vec::new(); nodes];
    }
    idx.chunks_exact(m)
        .zip(sim.chunks_exact(m))
        .map(|(i, s)| {
            i.iter().zip(s).filter(|(i, _)| **i >= 0).map(|(i, s)| Parent { node: *i as u32, similarity: *s }).collect()
        })
        .collect()
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
