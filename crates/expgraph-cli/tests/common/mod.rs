//! Helpers shared by the CLI's integration tests: the binary, and small synthetic feature caches.
#![allow(dead_code)] // each test binary uses a part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use expgraph_backbone::ResNetDepth;
use expgraph_cache::{
    serialize_safetensors, CacheManifest, CacheWriter, ImageEntry, LayerInfo, OwnedTensor, StorageDtype, StorageInfo,
    View,
};
use expgraph_testkit::formula::formula_values;

/// The `expgraph` binary under test.
pub fn expgraph() -> Command {
    Command::new(env!("CARGO_BIN_EXE_expgraph"))
}

/// `../shared` (or `$EXPGRAPH_SHARED`) when it holds the real weights, negatives and photos;
/// otherwise `None`, with the reason printed (tests that need it skip).
pub fn shared() -> Option<PathBuf> {
    let dir = std::env::var_os("EXPGRAPH_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    let ok = dir.join("models/vgg16-imagenet-conv.safetensors").is_file()
        && dir.join("data/negatives").is_dir()
        && dir.join("data/photos").is_dir();
    if !ok {
        eprintln!("skipping: shared/ not found at {} (set EXPGRAPH_SHARED)", dir.display());
    }
    ok.then_some(dir)
}

/// `n` small PNGs of different patterns in `dir`.
pub fn write_images(dir: &Path, n: u8, salt: u8) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let img = image::RgbImage::from_fn(97, 83, |x, y| {
            let v = (x * (u32::from(i) + 3) + y * (u32::from(salt) + 5)) % 256;
            image::Rgb([v as u8, (x * y % 251) as u8, (255 - v) as u8])
        });
        img.save(dir.join(format!("{salt}-{i}.png"))).unwrap();
    }
}

/// A command's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What a synthetic cache holds besides its maps.
pub struct CacheSpec<'a> {
    pub backbone: &'a str,
    pub preprocess: &'a str,
    pub weights_digest: &'a str,
    pub layers: Vec<LayerInfo>,
    pub images: usize,
    pub shard_size: usize,
}

/// Write a cache of both views (the same maps in each) whose channel `c` of image `img` in
/// layer `info` holds the `(cell, value)` pairs `blobs(info, img, c)` (cell = `h * W + w`,
/// 0-based) and zeros elsewhere.
pub fn write_cache(dir: &Path, spec: CacheSpec<'_>, blobs: impl Fn(&LayerInfo, usize, usize) -> Vec<(usize, f32)>) {
    let manifest = CacheManifest {
        format_version: CacheManifest::FORMAT_VERSION,
        key: String::new(),
        backbone: spec.backbone.into(),
        preprocess: spec.preprocess.into(),
        input_size: 224,
        layers: spec.layers.clone(),
        images: (0..spec.images)
            .map(|i| ImageEntry { id: format!("img{i}"), path: format!("img{i}.jpg"), bbox: [0.0, 0.0, 10.0, 10.0] })
            .collect(),
        views: vec![View::Original, View::Flipped],
    };
    let storage = StorageInfo {
        dtype: StorageDtype::F16,
        shard_size: spec.shard_size,
        weights_digest: spec.weights_digest.into(),
        norm_stats_digest: "s".into(),
    };
    let mut w = CacheWriter::create(dir, manifest, storage, false).unwrap();
    for shard in w.pending_shards() {
        let images = w.shard_range(shard);
        for (layer, view) in w.files_per_shard() {
            let info = spec.layers.iter().find(|l| l.name == layer).unwrap();
            let mut maps = vec![0.0f32; images.len() * info.image_len()];
            for (k, img) in images.clone().enumerate() {
                for c in 0..info.channels {
                    for (cell, value) in blobs(info, img, c) {
                        maps[k * info.image_len() + c * info.map_len() + cell] = value;
                    }
                }
            }
            w.write_shard(shard, &layer, view, &maps).unwrap();
        }
    }
    w.finish().unwrap();
}

/// A torchvision-named ResNet weight file of `depth` with the formula weights of
/// `shared/models/resnet-golden/` (the ones its goldens were computed on).
pub fn write_resnet_weights(path: &Path, depth: ResNetDepth) {
    let tensors: Vec<(String, OwnedTensor)> = depth
        .state_dict_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let values = formula_values(&name, &shape);
            (name, OwnedTensor::f32(shape, values))
        })
        .collect();
    let bytes =
        serialize_safetensors(tensors.iter().map(|(n, t)| (n.as_str(), t)), std::iter::empty::<(String, String)>())
            .unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// The header of a safetensors file: `name → {dtype, shape, data_offsets}` (without
/// `__metadata__`).
pub fn safetensors_header(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut h: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    h.remove("__metadata__");
    h
}

/// The values of the f32 tensor `name` of a safetensors file.
pub fn safetensors_f32(path: &Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let offsets = safetensors_header(path)[name]["data_offsets"].clone();
    let (a, b) = (offsets[0].as_u64().unwrap() as usize, offsets[1].as_u64().unwrap() as usize);
    bytes[8 + n + a..8 + n + b].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// A VGG-16 cache of one layer, `conv5_3` (14 × 14, `channels` filters), of `images` images
/// from weights `weights_digest`; `blobs` as in [`write_cache`].
pub fn conv5_3_cache(
    dir: &Path,
    weights_digest: &str,
    channels: usize,
    (images, shard_size): (usize, usize),
    blobs: impl Fn(&LayerInfo, usize, usize) -> Vec<(usize, f32)>,
) {
    let info = LayerInfo {
        name: "conv5_3".into(),
        channels,
        height: 14,
        width: 14,
        geometry: expgraph_cache::TapGeometry { stride: 16.0, first_centre: 8.5, receptive_field: 196.0 },
    };
    let spec =
        CacheSpec { backbone: "vgg16", preprocess: "caffe", weights_digest, layers: vec![info], images, shard_size };
    write_cache(dir, spec, blobs);
}

/// A VGG-16 cache of two layers, conv5_2 and conv5_3 (14 × 14, `channels` filters), both views,
/// `images` images in shard files of 16; filter `c` of image `img` peaks at a cell that moves
/// with the image, one cell apart in the two layers.
pub fn two_layer_cache(dir: &Path, channels: usize, images: usize) {
    let info = |name: &str| LayerInfo {
        name: name.into(),
        channels,
        height: 14,
        width: 14,
        geometry: expgraph_cache::TapGeometry { stride: 16.0, first_centre: 8.5, receptive_field: 196.0 },
    };
    let spec = CacheSpec {
        backbone: "vgg16",
        preprocess: "caffe",
        weights_digest: "w",
        layers: vec![info("conv5_2"), info("conv5_3")],
        images,
        shard_size: 16,
    };
    write_cache(dir, spec, |l, img, c| {
        let shift = usize::from(l.name == "conv5_2");
        let cell = (2 + (img + c + shift) % 10) * 14 + 2 + (img * 3 + c) % 10;
        vec![(cell, 2.0 + (c % 5) as f32), (cell + 1, 1.0 + (img % 3) as f32)]
    });
}
