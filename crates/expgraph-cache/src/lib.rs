//! # expgraph-cache
//!
//! The feature-map cache format that sits between feature extraction (which writes it) and the
//! graph learner (which reads it). This crate depends on neither candle nor image decoding, so
//! the learner can read features without pulling in the backbone.
//!
//! Conventions (see `ARCHITECTURE.md`):
//! * a layer's maps are stored per image as `[C, H, W]` (channel-major), row-major `h * W + w`;
//! * values are the **normalized, ReLU'd** responses of paper-spec §3 (`≤ 0` stored as 0);
//! * every image may have a second, *really* mirrored view ([`View::Flipped`], spec §7 #1).
//!
//! ## On disk
//! ```text
//! CACHE/manifest.json                          CacheManifest fields + "storage": StorageInfo
//! CACHE/<layer>/<view>-<shard:05>.safetensors  tensor `maps` [n, C, H, W] (f16, or u8 + `min`/`scale` [n, C])
//! ```
//! `view` is `original` or `flipped`; shard `k` holds images `k·S .. (k+1)·S` (S = shard size).
//! A sharded extraction (several machines, [`CachePart`]) writes `CACHE/parts/part-I-of-N.json`
//! per part instead of the manifest; [`merge_parts`] checks and joins them into the cache one
//! machine would have written.
//! Shards are written atomically (temp + rename) and carry the cache key in their header, so an
//! interrupted [`CacheWriter`] resumes; the manifest is written last, so a folder without
//! `manifest.json` is never mistaken for a finished cache.
//!
//! ## Reading
//! ```no_run
//! use expgraph_cache::{FeatureCache, LayerMaps, View};
//! let cache = FeatureCache::open("cache/")?;
//! let layer = cache.layer("conv5_3")?; // memory-mapped; one layer at a time
//! let mut map = vec![0.0f32; layer.info().map_len()];
//! layer.read_channel(0, View::Flipped, 17, &mut map);
//! # Ok::<(), expgraph_cache::CacheError>(())
//! ```

mod argmax;
mod files;
mod key;
mod layer;
mod manifest;
mod owned;
mod part;
mod reader;
mod shard;
mod storage;
mod writer;

use std::path::PathBuf;

pub use argmax::argmax_cell;
pub use files::MANIFEST_FILE;
pub use key::compute_cache_key;
pub use layer::{InMemoryLayer, LayerMaps};
pub use manifest::{CacheManifest, ImageEntry, LayerInfo, TapGeometry, View};
pub use owned::{serialize_safetensors, write_safetensors, EncodeError, FillBytes, OwnedTensor, StreamedTensor};
pub use part::{find_part_records, merge_parts, CachePart, MergeReport, PARTS_DIR};
pub use reader::{DiskLayer, FeatureCache};
pub use storage::{StorageDtype, StorageInfo};
pub use writer::CacheWriter;

/// Errors of the cache format.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A dimension or length that does not match what the layer declares.
    #[error("layer {layer}: {what}")]
    Shape { layer: String, what: String },
    /// A non-finite value in a feature map.
    #[error("layer {layer}: non-finite value in image {image}, channel {channel}")]
    NonFinite { layer: String, image: usize, channel: usize },
    /// A finite value too large for the storage dtype (f16 max is 65504).
    #[error("layer {layer}: value {value} in image {image}, channel {channel} does not fit in f16")]
    Overflow { layer: String, image: usize, channel: usize, value: f32 },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file that is there but malformed, inconsistent or of another version.
    #[error("{}: {what}", path.display())]
    Format { path: PathBuf, what: String },
    /// A file the cache needs is not there.
    #[error("{}: {what}", path.display())]
    Missing { path: PathBuf, what: &'static str },
    /// The folder holds a cache computed from other inputs.
    #[error(
        "{} already holds a feature cache with another key ({found}; this run: {expected}); \
         use another folder, or pass --overwrite to replace it",
        dir.display()
    )]
    KeyMismatch { dir: PathBuf, found: String, expected: String },
    /// `finish` called before every shard was written.
    #[error("{}: shard {shard} is not written yet", dir.display())]
    Incomplete { dir: PathBuf, shard: usize },
    /// A manifest given to the writer that cannot describe a cache.
    #[error("invalid cache manifest: {what}")]
    InvalidManifest { what: String },
    /// A layer name not in the cache.
    #[error("no layer {layer} in the cache (it has {available:?})")]
    NoSuchLayer { layer: String, available: Vec<String> },
    /// Serializing a shard failed.
    #[error("layer {layer}: cannot encode shard: {what}")]
    Encode { layer: String, what: String },
}
