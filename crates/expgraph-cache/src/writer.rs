//! [`CacheWriter`]: writes shard files atomically, resumes after interruption, writes the
//! manifest last.

use std::collections::HashSet;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::files::{checksum, checksum_key, io_err, write_atomic, write_manifest, ManifestFile, MANIFEST_FILE};
use crate::part::{write_part_record, CachePart};
use crate::shard::{self, ShardMeta};
use crate::{compute_cache_key, CacheError, CacheManifest, LayerInfo, StorageInfo, View};

/// Writes a feature cache folder (see the crate docs for the layout).
///
/// ```no_run
/// # fn demo(manifest: expgraph_cache::CacheManifest, storage: expgraph_cache::StorageInfo,
/// #         maps_of: impl Fn(std::ops::Range<usize>, &str, expgraph_cache::View) -> Vec<f32>)
/// #         -> Result<(), expgraph_cache::CacheError> {
/// use expgraph_cache::CacheWriter;
/// let mut writer = CacheWriter::create("cache/", manifest, storage, false)?;
/// for shard in writer.pending_shards() {
///     let images = writer.shard_range(shard);
///     for (layer, view) in writer.files_per_shard() {
///         writer.write_shard(shard, &layer, view, &maps_of(images.clone(), &layer, view))?;
///     }
/// }
/// writer.finish()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct CacheWriter {
    dir: PathBuf,
    file: ManifestFile,
    /// `done[shard][file]`, file = layer index * views + view index.
    done: Vec<Vec<bool>>,
    /// The slice of the shard files this writer writes (a sharded extraction), or all of them.
    part: Option<CachePart>,
    /// Held while writing: a second writer of the folder fails at once.
    _lock: expgraph_io::DirLock,
}

impl CacheWriter {
    /// Start (or resume) writing a cache in `dir`.
    ///
    /// `manifest.key` is replaced by [`compute_cache_key`]. Shard files already in `dir` with
    /// the same key are kept and reported as done. A cache (manifest or shard files) with
    /// another key is an error ([`CacheError::KeyMismatch`]) unless `overwrite` is set, in
    /// which case its files are removed first.
    pub fn create(
        dir: impl AsRef<Path>,
        manifest: CacheManifest,
        storage: StorageInfo,
        overwrite: bool,
    ) -> Result<Self, CacheError> {
        Self::open(dir.as_ref(), manifest, storage, overwrite, None)
    }

    /// Start (or resume) writing part `part` of a sharded extraction of this cache into `dir`
    /// (see [`CachePart`]): only that part's shard files are pending, several parts may write
    /// into one folder at once (each holds its own lock), and [`finish`](Self::finish) writes
    /// the part's record `parts/part-IIII-of-NNNN.json` instead of `manifest.json`;
    /// [`merge_parts`](crate::merge_parts) makes the cache. Nothing is ever removed: files of
    /// another cache in `dir` are an error ([`CacheError::KeyMismatch`]).
    pub fn create_part(
        dir: impl AsRef<Path>,
        manifest: CacheManifest,
        storage: StorageInfo,
        part: CachePart,
    ) -> Result<Self, CacheError> {
        Self::open(dir.as_ref(), manifest, storage, false, Some(part))
    }

    fn open(
        dir: &Path,
        mut manifest: CacheManifest,
        storage: StorageInfo,
        overwrite: bool,
        part: Option<CachePart>,
    ) -> Result<Self, CacheError> {
        let dir = dir.to_path_buf();
        validate(&manifest, &storage)?;
        manifest.key = compute_cache_key(&manifest, &storage);
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let lock = match part {
            None => expgraph_io::DirLock::acquire(&dir),
            Some(p) => expgraph_io::DirLock::acquire_named(&dir, &p.lock_name()),
        }
        .map_err(|e| io_err(&dir, e))?;
        let found = existing_key(&dir)?;
        if let Some(found) = found.filter(|k| *k != manifest.key) {
            if !overwrite {
                return Err(CacheError::KeyMismatch { dir, found, expected: manifest.key });
            }
            tracing::warn!(dir = %dir.display(), "overwriting a feature cache with another key");
            remove_cache_files(&dir)?;
        }
        let num_shards = manifest.images.len().div_ceil(storage.shard_size);
        let files = manifest.layers.len() * manifest.views.len();
        let mut writer = Self {
            dir,
            file: ManifestFile { manifest, storage, checksums: Default::default() },
            done: vec![vec![false; files]; num_shards],
            part,
            _lock: lock,
        };
        writer.scan_existing(overwrite)?;
        Ok(writer)
    }

    /// The content key of this cache.
    pub fn key(&self) -> &str {
        &self.file.manifest.key
    }

    /// The manifest that [`finish`](Self::finish) will write.
    pub fn manifest(&self) -> &CacheManifest {
        &self.file.manifest
    }

    /// Storage settings.
    pub fn storage(&self) -> &StorageInfo {
        &self.file.storage
    }

    /// Number of shards.
    pub fn num_shards(&self) -> usize {
        self.done.len()
    }

    /// Images (indices into `manifest.images`) of shard `shard`.
    pub fn shard_range(&self, shard: usize) -> Range<usize> {
        let size = self.file.storage.shard_size;
        let n = self.file.manifest.images.len();
        (shard * size).min(n)..((shard + 1) * size).min(n)
    }

    /// The `(layer, view)` files each shard has, in writing order.
    pub fn files_per_shard(&self) -> Vec<(String, View)> {
        let m = &self.file.manifest;
        m.layers.iter().flat_map(|l| m.views.iter().map(move |v| (l.name.clone(), *v))).collect()
    }

    /// Whether every file of `shard` is written.
    pub fn is_complete(&self, shard: usize) -> bool {
        self.done.get(shard).is_some_and(|f| f.iter().all(|d| *d))
    }

    /// The shards this writer writes: all, or its part's.
    pub fn own_shards(&self) -> Range<usize> {
        match self.part {
            None => 0..self.num_shards(),
            Some(p) => p.shard_files(self.num_shards()),
        }
    }

    /// The part of a sharded extraction this writer writes, if it is one.
    pub fn part(&self) -> Option<CachePart> {
        self.part
    }

    /// Shards (of its own) with at least one file still to write, in order.
    pub fn pending_shards(&self) -> Vec<usize> {
        self.own_shards().filter(|s| !self.is_complete(*s)).collect()
    }

    /// Write the maps of `layer`/`view` for the images of `shard` (`[n, C, H, W]` f32).
    ///
    /// Fails on a wrong length, a non-finite value, or (f16) a value too large for f16.
    pub fn write_shard(&mut self, shard: usize, layer: &str, view: View, maps: &[f32]) -> Result<(), CacheError> {
        let written = self.write_file(shard, layer, view, maps)?;
        self.record(shard, written);
        Ok(())
    }

    /// Write several layer/view files of `shard` at once, each on its own thread (encoding,
    /// checksum and the atomic write are the slow part of extraction on a GPU). The files are
    /// the same as from [`CacheWriter::write_shard`] one by one; on an error, the files written
    /// before it stay done (a resumed run keeps them) and the first error is returned.
    pub fn write_shard_files(&mut self, shard: usize, files: &[(&str, View, &[f32])]) -> Result<(), CacheError> {
        let this = &*self;
        let results: Vec<Result<WrittenFile, CacheError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = files
                .iter()
                .map(|(layer, view, maps)| scope.spawn(move || this.write_file(shard, layer, *view, maps)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
        });
        let mut first_error = None;
        for result in results {
            match result {
                Ok(written) => self.record(shard, written),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Check, encode and atomically write one shard file; what [`CacheWriter::record`] notes.
    fn write_file(&self, shard: usize, layer: &str, view: View, maps: &[f32]) -> Result<WrittenFile, CacheError> {
        let slot = self.slot(shard, layer, view)?;
        let info = &self.file.manifest.layers[slot / self.file.manifest.views.len()];
        let n = self.shard_range(shard).len();
        if maps.len() != n * info.image_len() {
            return Err(CacheError::Shape {
                layer: layer.to_string(),
                what: format!(
                    "shard {shard}: {} values, expected {n} images x {}x{}x{}",
                    maps.len(),
                    info.channels,
                    info.height,
                    info.width
                ),
            });
        }
        check_finite(info, shard * self.file.storage.shard_size, maps)?;
        let meta = ShardMeta { key: &self.file.manifest.key, layer, view, index: shard };
        let bytes = shard::encode(&meta, info, self.file.storage.dtype, maps)?;
        let layer_dir = self.dir.join(layer);
        fs::create_dir_all(&layer_dir).map_err(|e| io_err(&layer_dir, e))?;
        let path = shard::shard_path(&self.dir, layer, view, shard);
        write_atomic(&path, &bytes)?;
        Ok(WrittenFile { slot, key: checksum_key(&self.dir, &path), checksum: checksum(&bytes) })
    }

    /// Note a written file's checksum and mark it done.
    fn record(&mut self, shard: usize, written: WrittenFile) {
        self.file.checksums.insert(written.key, written.checksum);
        self.done[shard][written.slot] = true;
    }

    /// Write `manifest.json` (atomically, last), or for a part its record. Fails if a shard
    /// file is missing.
    pub fn finish(self) -> Result<PathBuf, CacheError> {
        if let Some(shard) = self.pending_shards().first() {
            return Err(CacheError::Incomplete { dir: self.dir.clone(), shard: *shard });
        }
        match self.part {
            None => write_manifest(&self.dir, &self.file)?,
            Some(part) => write_part_record(&self.dir, part, &self.file)?,
        };
        Ok(self.dir)
    }

    fn slot(&self, shard: usize, layer: &str, view: View) -> Result<usize, CacheError> {
        let m = &self.file.manifest;
        let li = m.layers.iter().position(|l| l.name == layer);
        let vi = m.views.iter().position(|v| *v == view);
        match (li, vi) {
            (Some(li), Some(vi)) if shard < self.num_shards() => Ok(li * m.views.len() + vi),
            _ => Err(CacheError::Shape {
                layer: layer.to_string(),
                what: format!("no such shard/layer/view in this cache: shard {shard}, view {view:?}"),
            }),
        }
    }

    /// Mark shard files that are already there with this key as done; remove stale temp files.
    fn scan_existing(&mut self, overwrite: bool) -> Result<(), CacheError> {
        let views = self.file.manifest.views.clone();
        let layers = self.file.manifest.layers.clone();
        for (li, layer) in layers.iter().enumerate() {
            for (vi, view) in views.iter().enumerate() {
                for shard in self.own_shards() {
                    let path = shard::shard_path(&self.dir, &layer.name, *view, shard);
                    let _ = expgraph_io::remove_stale_temps(&path);
                    if !path.exists() {
                        continue;
                    }
                    let expected = self.shard_range(shard).len();
                    match existing_shard_ok(&path, &self.file, layer, expected) {
                        Ok(Some(sum)) => {
                            self.done[shard][li * views.len() + vi] = true;
                            self.file.checksums.insert(checksum_key(&self.dir, &path), sum);
                        }
                        Ok(None) if overwrite => {}
                        Ok(None) => {
                            return Err(CacheError::Format {
                                path,
                                what: "existing shard has the right key but the wrong shape; \
                                       delete it or pass overwrite"
                                    .into(),
                            })
                        }
                        Err(e) => {
                            tracing::warn!("rewriting unreadable shard: {e}");
                        }
                    }
                }
            }
        }
        let done = self.done.iter().flatten().filter(|d| **d).count();
        if done > 0 {
            tracing::info!(dir = %self.dir.display(), files = done, "resuming: keeping shard files already written");
        }
        Ok(())
    }
}

/// The checksum of an existing shard file that fits this cache, `None` when it does not.
fn existing_shard_ok(
    path: &Path,
    file: &ManifestFile,
    layer: &LayerInfo,
    n: usize,
) -> Result<Option<String>, CacheError> {
    let bytes = crate::files::map_file(path)?;
    let header = shard::read_header(path, &bytes)?;
    let fits = header.key == file.manifest.key
        && header.dtype == file.storage.dtype
        && header.shape == [n, layer.channels, layer.height, layer.width];
    Ok(fits.then(|| checksum(&bytes)))
}

/// The checks every manifest passes, written or read: non-empty, safe layer names (they are
/// folder names), shapes of at least 1 whose sizes fit.
pub(crate) fn validate(m: &CacheManifest, s: &StorageInfo) -> Result<(), CacheError> {
    let bad = |what: String| Err(CacheError::InvalidManifest { what });
    if s.shard_size == 0 {
        return bad("shard_size must be at least 1".into());
    }
    if m.images.is_empty() || m.layers.is_empty() || m.views.is_empty() {
        return bad("a cache needs at least one image, one layer and one view".into());
    }
    let mut names = HashSet::new();
    for l in &m.layers {
        let safe = !l.name.is_empty()
            && l.name != "."
            && l.name != ".."
            && l.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !safe {
            return bad(format!("layer name {:?} is not usable as a folder name", l.name));
        }
        if !names.insert(&l.name) {
            return bad(format!("layer {} listed twice", l.name));
        }
        let fits = l.channels.checked_mul(l.height).and_then(|v| v.checked_mul(l.width)).is_some_and(|v| v <= 1 << 32);
        if l.channels == 0 || l.height == 0 || l.width == 0 || !fits {
            return bad(format!(
                "layer {} has an empty or oversized shape ({}×{}×{})",
                l.name, l.channels, l.height, l.width
            ));
        }
    }
    if m.views.iter().collect::<HashSet<_>>().len() != m.views.len() {
        return bad("a view is listed twice".into());
    }
    Ok(())
}

fn check_finite(info: &LayerInfo, first_image: usize, maps: &[f32]) -> Result<(), CacheError> {
    match maps.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(CacheError::NonFinite {
            layer: info.name.clone(),
            image: first_image + i / info.image_len(),
            channel: (i % info.image_len()) / info.map_len(),
        }),
    }
}

/// The key of whatever cache is in `dir`: from `manifest.json`, else from any shard file.
fn existing_key(dir: &Path) -> Result<Option<String>, CacheError> {
    if let Some(key) = crate::files::manifest_key(dir)? {
        return Ok(Some(key));
    }
    for path in shard_files(dir)? {
        if path.extension().is_some_and(|e| e == "tmp") {
            continue;
        }
        let Ok(bytes) = crate::files::map_file(&path) else { continue };
        if let Ok(h) = shard::read_header(&path, &bytes) {
            return Ok(Some(h.key));
        }
    }
    Ok(None)
}

/// Every shard-like file (`<sub>/<view>-NNNNN.safetensors[.tmp]`) one level below `dir`.
fn shard_files(dir: &Path) -> Result<Vec<PathBuf>, CacheError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))?.flatten() {
        let sub = entry.path();
        if !sub.is_dir() {
            continue;
        }
        for f in fs::read_dir(&sub).map_err(|e| io_err(&sub, e))?.flatten() {
            if f.file_name().to_str().is_some_and(shard::is_shard_file_name) {
                out.push(f.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Remove `manifest.json` and every shard file of any cache in `dir` (and then-empty folders).
fn remove_cache_files(dir: &Path) -> Result<(), CacheError> {
    let manifest = dir.join(MANIFEST_FILE);
    if manifest.exists() {
        fs::remove_file(&manifest).map_err(|e| io_err(&manifest, e))?;
    }
    for path in shard_files(dir)? {
        fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
        if let Some(parent) = path.parent() {
            let _ = fs::remove_dir(parent); // only succeeds once empty
        }
    }
    Ok(())
}

/// A shard file on disk, not yet noted in the manifest.
struct WrittenFile {
    slot: usize,
    key: String,
    checksum: String,
}
