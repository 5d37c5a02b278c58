//! An owned tensor to serialize with `safetensors` (used by this crate's shards and by the graph
//! files of `expgraph-graph`).

use std::borrow::Cow;

use safetensors::Dtype;

/// A tensor to serialize, owning its little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedTensor {
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Little-endian element bytes.
    pub bytes: Vec<u8>,
}

impl OwnedTensor {
    /// An f64 tensor.
    pub fn f64(shape: Vec<usize>, values: impl IntoIterator<Item = f64>) -> Self {
        Self { dtype: Dtype::F64, shape, bytes: values.into_iter().flat_map(f64::to_le_bytes).collect() }
    }
    /// An f32 tensor.
    pub fn f32(shape: Vec<usize>, values: impl IntoIterator<Item = f32>) -> Self {
        Self { dtype: Dtype::F32, shape, bytes: values.into_iter().flat_map(f32::to_le_bytes).collect() }
    }
    /// An i32 tensor.
    pub fn i32(shape: Vec<usize>, values: impl IntoIterator<Item = i32>) -> Self {
        Self { dtype: Dtype::I32, shape, bytes: values.into_iter().flat_map(i32::to_le_bytes).collect() }
    }
    /// A u8 tensor.
    pub fn u8(shape: Vec<usize>, values: impl IntoIterator<Item = u8>) -> Self {
        Self { dtype: Dtype::U8, shape, bytes: values.into_iter().collect() }
    }
}

impl safetensors::View for &OwnedTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}
