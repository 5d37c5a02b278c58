//! The cache key: a content hash of everything that determines the stored maps.

use serde::Serialize;

use crate::{CacheManifest, ImageEntry, LayerInfo, StorageInfo, View};

#[derive(Serialize)]
struct KeyInput<'a> {
    format_version: u32,
    backbone: &'a str,
    preprocess: &'a str,
    input_size: usize,
    layers: &'a [LayerInfo],
    images: &'a [ImageEntry],
    views: &'a [View],
    storage: &'a StorageInfo,
}

/// Content hash (blake3, hex) of weights digest, preprocessing, image list, boxes, layers,
/// views, normalization-stats digest and storage settings. `manifest.key` itself is ignored.
pub fn compute_cache_key(manifest: &CacheManifest, storage: &StorageInfo) -> String {
    let input = KeyInput {
        format_version: manifest.format_version,
        backbone: &manifest.backbone,
        preprocess: &manifest.preprocess,
        input_size: manifest.input_size,
        layers: &manifest.layers,
        images: &manifest.images,
        views: &manifest.views,
        storage,
    };
    // Serializing plain structs/vecs of numbers and strings cannot fail.
    let json = serde_json::to_vec(&input).unwrap_or_default();
    blake3::hash(&json).to_hex().to_string()
}
