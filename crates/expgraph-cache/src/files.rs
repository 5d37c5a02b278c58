//! Small file helpers: atomic writes and the on-disk `manifest.json` wrapper.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{CacheError, CacheManifest, StorageInfo};

/// Name of the manifest file in a cache folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// `manifest.json`: the [`CacheManifest`] fields plus `"storage"` and `"checksums"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ManifestFile {
    #[serde(flatten)]
    pub manifest: CacheManifest,
    pub storage: StorageInfo,
    /// blake3 of every shard file, by path relative to the cache folder (empty in caches
    /// written before checksums existed: then nothing is verified).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checksums: BTreeMap<String, String>,
}

/// The manifest's name for a shard file: its path relative to the cache folder, `/`-separated.
pub(crate) fn checksum_key(dir: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(dir).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// The content checksum of a shard file's bytes.
pub(crate) fn checksum(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Only the fields needed to recognize a cache (tolerates other format versions).
#[derive(Deserialize)]
pub(crate) struct ManifestProbe {
    pub format_version: u32,
    pub key: String,
}

/// The key of the finished cache in `dir`, from its `manifest.json` (`None` when there is none).
///
/// A manifest of another format version answers `<format version N>`, which matches no key.
pub(crate) fn manifest_key(dir: &Path) -> Result<Option<String>, CacheError> {
    let path = dir.join(MANIFEST_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = fs::read(&path).map_err(|e| io_err(&path, e))?;
    match serde_json::from_slice::<ManifestProbe>(&text) {
        Ok(p) if p.format_version == CacheManifest::FORMAT_VERSION => Ok(Some(p.key)),
        Ok(p) => Ok(Some(format!("<format version {}>", p.format_version))),
        Err(e) => Err(CacheError::Format { path, what: e.to_string() }),
    }
}

pub(crate) fn io_err(path: &Path, source: std::io::Error) -> CacheError {
    CacheError::Io { path: path.to_path_buf(), source }
}

/// Write `bytes` to `path` atomically ([`expgraph_io::write_bytes`]).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    expgraph_io::write_bytes(path, bytes).map_err(|e| io_err(path, e))
}

/// Write `manifest.json` of `dir` (atomically): the one encoding of a finished cache's manifest,
/// whether one writer or a merge of parts made it.
pub(crate) fn write_manifest(dir: &Path, file: &ManifestFile) -> Result<std::path::PathBuf, CacheError> {
    let path = dir.join(MANIFEST_FILE);
    let json =
        serde_json::to_vec_pretty(file).map_err(|e| CacheError::Format { path: path.clone(), what: e.to_string() })?;
    write_atomic(&path, &json)?;
    Ok(path)
}

/// Memory-map a file read-only.
///
/// Safety of the map: cache files are written once (temp + rename) and never modified in
/// place by this crate; a file replaced by rename keeps the old inode alive for the map.
pub(crate) fn map_file(path: &Path) -> Result<memmap2::Mmap, CacheError> {
    let file = fs::File::open(path).map_err(|e| io_err(path, e))?;
    // SAFETY: see above; the map is read-only and outlives no borrow of `file`.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_err(path, e))
}

/// Drop `map`'s pages from this process's page tables after a full read (the checksum): they
/// stay in the OS page cache, and the ones a reader needs fault back in when it touches them,
/// so resident memory holds what is read, not everything that was verified (e.g. the view a
/// pass does not use).
pub(crate) fn release_pages(map: &memmap2::Mmap) {
    #[cfg(unix)]
    // SAFETY: `map` is a read-only shared file mapping (`map_file`); MADV_DONTNEED on such a
    // mapping only unmaps pages, which later reads fault back in from the file, unchanged.
    let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
    #[cfg(not(unix))]
    let _ = map;
}
