//! Encoding and decoding of one shard file: `<layer>/<view>-NNNNN.safetensors`.
//!
//! * `f16`: tensor `maps`, dtype F16, shape `[n, C, H, W]`;
//! * `u8`: tensor `maps`, dtype U8, shape `[n, C, H, W]`, plus `min` and `scale` (F32, `[n, C]`),
//!   value `= min + q · scale`.
//!
//! The safetensors header metadata holds `key`, `layer`, `view`, `shard`, `dtype`, so a shard
//! of another cache is recognized (resumption, spec of the cache key).

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use half::f16;
use half::slice::HalfFloatSliceExt;
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

use crate::{CacheError, LayerInfo, OwnedTensor, StorageDtype, View};

/// File name of shard `index` of `view` (inside the layer's folder).
pub(crate) fn shard_file_name(view: View, index: usize) -> String {
    format!("{}-{index:05}.safetensors", view_name(view))
}

/// Path of a shard file.
pub(crate) fn shard_path(dir: &Path, layer: &str, view: View, index: usize) -> PathBuf {
    dir.join(layer).join(shard_file_name(view, index))
}

/// `original` or `flipped`.
pub(crate) fn view_name(view: View) -> &'static str {
    match view {
        View::Original => "original",
        View::Flipped => "flipped",
    }
}

/// Whether `name` looks like a shard file (or its temp file) of this format.
pub(crate) fn is_shard_file_name(name: &str) -> bool {
    let stem = name.strip_suffix(".tmp").unwrap_or(name);
    let Some(stem) = stem.strip_suffix(".safetensors") else { return false };
    let digits = stem.strip_prefix("original-").or_else(|| stem.strip_prefix("flipped-"));
    digits.is_some_and(|d| d.len() == 5 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Header facts of a shard file.
#[derive(Debug, Clone)]
pub(crate) struct ShardHeader {
    pub key: String,
    pub dtype: StorageDtype,
    /// `[n, C, H, W]`.
    pub shape: [usize; 4],
    /// Byte range of `maps` in the file.
    pub maps: Range<usize>,
    /// Byte ranges of `min` and `scale` (u8 only).
    pub min_scale: Option<(Range<usize>, Range<usize>)>,
}

fn format_err(path: &Path, what: impl Into<String>) -> CacheError {
    CacheError::Format { path: path.to_path_buf(), what: what.into() }
}

/// Parse and check the header of a shard file held in `bytes` (usually a memory map).
pub(crate) fn read_header(path: &Path, bytes: &[u8]) -> Result<ShardHeader, CacheError> {
    let (n, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| format_err(path, format!("not a valid safetensors file ({e})")))?;
    let data_start = 8 + n;
    let info = meta.metadata().as_ref();
    let get = |k: &str| info.and_then(|m| m.get(k)).cloned();
    let key = get("key").ok_or_else(|| format_err(path, "header metadata has no cache key"))?;
    let dtype = get("dtype")
        .and_then(|d| StorageDtype::from_name(&d))
        .ok_or_else(|| format_err(path, "header metadata has no valid dtype"))?;
    let maps = meta.info("maps").ok_or_else(|| format_err(path, "no tensor `maps`"))?;
    let want = match dtype {
        StorageDtype::F16 => Dtype::F16,
        StorageDtype::U8 => Dtype::U8,
    };
    if maps.dtype != want || maps.shape.len() != 4 {
        return Err(format_err(
            path,
            format!("tensor `maps` is {:?} {:?}, expected {want:?} [n, C, H, W]", maps.dtype, maps.shape),
        ));
    }
    let shape = [maps.shape[0], maps.shape[1], maps.shape[2], maps.shape[3]];
    let range = |r: (usize, usize)| data_start + r.0..data_start + r.1;
    let min_scale = match dtype {
        StorageDtype::F16 => None,
        StorageDtype::U8 => {
            let mut out = Vec::with_capacity(2);
            for name in ["min", "scale"] {
                let t = meta.info(name).ok_or_else(|| format_err(path, format!("no tensor `{name}`")))?;
                if t.dtype != Dtype::F32 || t.shape != [shape[0], shape[1]] {
                    return Err(format_err(path, format!("tensor `{name}` is {:?} {:?}", t.dtype, t.shape)));
                }
                out.push(range(t.data_offsets));
            }
            let scale = out.pop();
            let min = out.pop();
            min.zip(scale)
        }
    };
    Ok(ShardHeader { key, dtype, shape, maps: range(maps.data_offsets), min_scale })
}

/// What goes into a shard's header metadata.
pub(crate) struct ShardMeta<'a> {
    pub key: &'a str,
    pub layer: &'a str,
    pub view: View,
    pub index: usize,
}

/// Encode `maps` (`[n, C, H, W]` f32, finite) into safetensors bytes.
pub(crate) fn encode(
    meta: &ShardMeta<'_>,
    info: &LayerInfo,
    dtype: StorageDtype,
    maps: &[f32],
) -> Result<Vec<u8>, CacheError> {
    let per = info.image_len();
    let n = maps.len() / per.max(1);
    let shape = vec![n, info.channels, info.height, info.width];
    let mut tensors = Vec::new();
    match dtype {
        StorageDtype::F16 => {
            let mut half = vec![f16::ZERO; maps.len()];
            half.convert_from_f32_slice(maps);
            if let Some(i) = half.iter().position(|v| !v.is_finite()) {
                return Err(CacheError::Overflow {
                    layer: info.name.clone(),
                    image: i / per,
                    channel: (i % per) / info.map_len(),
                    value: maps[i],
                });
            }
            let bytes = bytemuck::cast_slice::<f16, u8>(&half).to_vec();
            tensors.push(("maps", OwnedTensor { dtype: Dtype::F16, shape, bytes }));
        }
        StorageDtype::U8 => {
            let (q, min, scale) = quantize_u8(maps, info.map_len());
            tensors.push(("maps", OwnedTensor { dtype: Dtype::U8, shape, bytes: q }));
            let ms_shape = vec![n, info.channels];
            tensors
                .push(("min", OwnedTensor { dtype: Dtype::F32, shape: ms_shape.clone(), bytes: f32_le_bytes(&min) }));
            tensors.push(("scale", OwnedTensor { dtype: Dtype::F32, shape: ms_shape, bytes: f32_le_bytes(&scale) }));
        }
    }
    let header: HashMap<String, String> = [
        ("key", meta.key.to_string()),
        ("layer", meta.layer.to_string()),
        ("view", view_name(meta.view).to_string()),
        ("shard", meta.index.to_string()),
        ("dtype", dtype.name().to_string()),
        ("format", "expgraph-cache".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    crate::serialize_safetensors(tensors.iter().map(|(k, t)| (*k, t)), header)
        .map_err(|e| CacheError::Encode { layer: info.name.clone(), what: e.to_string() })
}

fn f32_le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Per map (image-channel) min/scale quantization to u8: `v ≈ min + q · scale`.
fn quantize_u8(maps: &[f32], map_len: usize) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
    let maps_n = maps.len() / map_len.max(1);
    let mut q = Vec::with_capacity(maps.len());
    let mut mins = Vec::with_capacity(maps_n);
    let mut scales = Vec::with_capacity(maps_n);
    for map in maps.chunks_exact(map_len) {
        let lo = map.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let scale = (hi - lo) / 255.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        q.extend(map.iter().map(|&v| ((v - lo) * inv).round().clamp(0.0, 255.0) as u8));
        mins.push(lo);
        scales.push(scale);
    }
    (q, mins, scales)
}

/// Decode map `map_index` (`image_in_shard * C + channel`) of `map_len` values into `out`.
pub(crate) fn decode_map(header: &ShardHeader, bytes: &[u8], map_index: usize, out: &mut [f32]) {
    let len = out.len();
    match (&header.dtype, &header.min_scale) {
        (StorageDtype::F16, _) => {
            let start = header.maps.start + map_index * len * 2;
            let raw = &bytes[start..start + len * 2];
            match bytemuck::try_cast_slice::<u8, f16>(raw) {
                Ok(h) => h.convert_to_f32_slice(out),
                Err(_) => {
                    for (o, c) in out.iter_mut().zip(raw.chunks_exact(2)) {
                        *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
                    }
                }
            }
        }
        (StorageDtype::U8, Some((min_r, scale_r))) => {
            let f32_at = |r: &Range<usize>| {
                let s = r.start + map_index * 4;
                f32::from_le_bytes([bytes[s], bytes[s + 1], bytes[s + 2], bytes[s + 3]])
            };
            let (min, scale) = (f32_at(min_r), f32_at(scale_r));
            let start = header.maps.start + map_index * len;
            for (o, &q) in out.iter_mut().zip(&bytes[start..start + len]) {
                *o = min + f32::from(q) * scale;
            }
        }
        (StorageDtype::U8, None) => out.fill(0.0),
    }
}
