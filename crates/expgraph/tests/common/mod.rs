//! Test support shared by this crate's integration tests: a small feature cache written through
//! the real cache writer.

use std::path::Path;

use expgraph::cache::{
    CacheManifest, CacheWriter, FeatureCache, ImageEntry, LayerInfo, StorageDtype, StorageInfo, View,
};

/// A VGG-16 cache in `dir` of `images` images `img0…` (one shard), made by weights `weights`,
/// holding `views`; `fill(layer, view, maps)` writes every image's maps of one layer and view
/// (`[image][channel][h][w]`).
pub fn cache(
    dir: &Path,
    layers: &[LayerInfo],
    images: usize,
    views: &[View],
    weights: &str,
    fill: impl Fn(&LayerInfo, View, &mut [f32]),
) -> FeatureCache {
    let manifest = CacheManifest {
        format_version: CacheManifest::FORMAT_VERSION,
        key: String::new(),
        backbone: "vgg16".into(),
        preprocess: "caffe".into(),
        input_size: 224,
        layers: layers.to_vec(),
        images: (0..images)
            .map(|i| ImageEntry { id: format!("img{i}"), path: format!("img{i}.jpg"), bbox: [0.0, 0.0, 10.0, 10.0] })
            .collect(),
        views: views.to_vec(),
    };
    let storage = StorageInfo {
        dtype: StorageDtype::F16,
        shard_size: 8,
        weights_digest: weights.into(),
        norm_stats_digest: "s".into(),
    };
    let mut w = CacheWriter::create(dir, manifest, storage, false).unwrap();
    for l in layers {
        for &view in views {
            let mut maps = vec![0.0f32; images * l.image_len()];
            fill(l, view, &mut maps);
            w.write_shard(0, &l.name, view, &maps).unwrap();
        }
    }
    w.finish().unwrap();
    FeatureCache::open(dir).unwrap()
}
