//! [`FeatureCache`] and [`DiskLayer`]: memory-mapped, lazily decoded reading of a cache folder.

use std::fs;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::files::{
    checksum, checksum_key, io_err, map_file, release_pages, ManifestFile, ManifestProbe, MANIFEST_FILE,
};
use crate::shard::{self, ShardHeader};
use crate::{CacheError, CacheManifest, ImageEntry, LayerInfo, LayerMaps, StorageInfo, View};

/// A feature cache folder opened for reading.
///
/// Opening validates the manifest (format version, layers, views) and the header of every
/// shard file (present, readable, key, dtype and shape); no map data is read. Maps are read
/// per layer through [`FeatureCache::layer`].
#[derive(Debug, Clone)]
pub struct FeatureCache {
    dir: PathBuf,
    file: ManifestFile,
}

impl FeatureCache {
    /// Open and validate the cache in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, CacheError> {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join(MANIFEST_FILE);
        if !path.exists() {
            if let Some((found, count)) = crate::part::parts_progress(&dir) {
                return Err(CacheError::Format {
                    path,
                    what: format!(
                        "missing: the folder holds {found} of the {count} shards of a sharded extraction; \
                         merge them with `expgraph cache merge --out {}` (naming the other shards' folders)",
                        dir.display()
                    ),
                });
            }
            return Err(CacheError::Missing { path, what: "no manifest.json: not a (finished) feature cache" });
        }
        let text = fs::read(&path).map_err(|e| io_err(&path, e))?;
        let probe: ManifestProbe = serde_json::from_slice(&text)
            .map_err(|e| CacheError::Format { path: path.clone(), what: e.to_string() })?;
        if probe.format_version != CacheManifest::FORMAT_VERSION {
            return Err(CacheError::Format {
                path,
                what: format!(
                    "format version {} is not supported (this build reads version {})",
                    probe.format_version,
                    CacheManifest::FORMAT_VERSION
                ),
            });
        }
        let file: ManifestFile = serde_json::from_slice(&text)
            .map_err(|e| CacheError::Format { path: path.clone(), what: e.to_string() })?;
        let cache = Self { dir, file };
        cache.validate()?;
        Ok(cache)
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest (layers, images, views, key, ...).
    pub fn manifest(&self) -> &CacheManifest {
        &self.file.manifest
    }

    /// Storage settings and provenance digests.
    pub fn storage(&self) -> &StorageInfo {
        &self.file.storage
    }

    /// The object crops, in cache order.
    pub fn images(&self) -> &[ImageEntry] {
        &self.file.manifest.images
    }

    /// The layers, shallow to deep.
    pub fn layers(&self) -> &[LayerInfo] {
        &self.file.manifest.layers
    }

    /// Open layer `name` for reading: memory-maps its shard files; values are decoded to f32
    /// on each read, so resident memory stays at what the OS pages in.
    pub fn layer(&self, name: &str) -> Result<DiskLayer, CacheError> {
        let info = self.file.manifest.layer(name).cloned().ok_or_else(|| CacheError::NoSuchLayer {
            layer: name.to_string(),
            available: self.layers().iter().map(|l| l.name.clone()).collect(),
        })?;
        let mut original = Vec::new();
        let mut flipped = None;
        for view in &self.file.manifest.views {
            let shards = (0..self.num_shards())
                .map(|s| self.open_shard(&info, *view, s, true))
                .collect::<Result<Vec<_>, _>>()?;
            match view {
                View::Original => original = shards,
                View::Flipped => flipped = Some(shards),
            }
        }
        if original.is_empty() {
            // Only a flipped view stored: serve it for both (mirrors InMemoryLayer's fallback).
            original = flipped.take().unwrap_or_default();
        }
        Ok(DiskLayer {
            info,
            num_images: self.file.manifest.images.len(),
            shard_size: self.file.storage.shard_size,
            original,
            flipped,
        })
    }

    fn num_shards(&self) -> usize {
        self.file.manifest.images.len().div_ceil(self.file.storage.shard_size.max(1))
    }

    /// Map a shard file and check its header; with `verify`, also its content checksum (a full
    /// read of the file, done when a layer is opened for reading).
    fn open_shard(&self, info: &LayerInfo, view: View, index: usize, verify: bool) -> Result<MappedShard, CacheError> {
        let path = shard::shard_path(&self.dir, &info.name, view, index);
        if !path.exists() {
            return Err(CacheError::Missing { path, what: "shard file listed by the manifest is missing" });
        }
        let map = map_file(&path)?;
        if verify && !self.file.checksums.is_empty() {
            let expected = self.file.checksums.get(&checksum_key(&self.dir, &path));
            let found = checksum(&map);
            release_pages(&map);
            if expected != Some(&found) {
                return Err(CacheError::Format {
                    path,
                    what: match expected {
                        Some(e) => format!(
                            "content checksum mismatch: the file was changed or corrupted after it was written \
                             (manifest blake3 {e}, file {found}); re-run `expgraph extract`"
                        ),
                        None => "the manifest lists no checksum for this shard".into(),
                    },
                });
            }
        }
        let header = shard::read_header(&path, &map)?;
        let n = self.shard_len(index);
        let want = [n, info.channels, info.height, info.width];
        if header.key != self.file.manifest.key {
            return Err(CacheError::Format { path, what: "shard belongs to another cache (key differs)".into() });
        }
        if header.dtype != self.file.storage.dtype || header.shape != want {
            return Err(CacheError::Format {
                path,
                what: format!(
                    "shard is {} {:?}, manifest expects {} {want:?}",
                    header.dtype, header.shape, self.file.storage.dtype
                ),
            });
        }
        Ok(MappedShard { map, header })
    }

    fn shard_len(&self, index: usize) -> usize {
        let size = self.file.storage.shard_size;
        let n = self.file.manifest.images.len();
        ((index + 1) * size).min(n) - (index * size).min(n)
    }

    fn validate(&self) -> Result<(), CacheError> {
        let m = &self.file.manifest;
        let path = self.dir.join(MANIFEST_FILE);
        let bad = |what: &str| Err(CacheError::Format { path: path.clone(), what: what.to_string() });
        if self.file.storage.shard_size == 0 {
            return bad("shard_size is 0");
        }
        if m.views.is_empty() || m.layers.is_empty() {
            return bad("no views or no layers");
        }
        if let Err(CacheError::InvalidManifest { what }) = crate::writer::validate(m, &self.file.storage) {
            return bad(&what);
        }
        for info in &m.layers {
            for view in &m.views {
                for s in 0..self.num_shards() {
                    self.open_shard(info, *view, s, false)?;
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct MappedShard {
    map: Mmap,
    header: ShardHeader,
}

/// One layer of an on-disk cache; implements [`LayerMaps`] by decoding f16/u8 → f32 on read.
#[derive(Debug)]
pub struct DiskLayer {
    info: LayerInfo,
    num_images: usize,
    shard_size: usize,
    original: Vec<MappedShard>,
    flipped: Option<Vec<MappedShard>>,
}

impl LayerMaps for DiskLayer {
    fn info(&self) -> &LayerInfo {
        &self.info
    }

    fn num_images(&self) -> usize {
        self.num_images
    }

    fn has_flipped(&self) -> bool {
        self.flipped.is_some()
    }

    /// Panics when `image`/`channel` are out of range or `out.len() != H * W` (caller bugs).
    fn read_channel(&self, image: usize, view: View, channel: usize, out: &mut [f32]) {
        assert!(image < self.num_images && channel < self.info.channels, "index out of range");
        assert_eq!(out.len(), self.info.map_len(), "output length must be H * W");
        let shards = match (view, &self.flipped) {
            (View::Flipped, Some(f)) => f,
            _ => &self.original,
        };
        let s = &shards[image / self.shard_size];
        let map_index = (image % self.shard_size) * self.info.channels + channel;
        shard::decode_map(&s.header, &s.map, map_index, out);
    }
}
