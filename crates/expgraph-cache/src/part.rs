//! Sharded extraction: a cache written as N parts (on N machines, into one shared folder or N
//! folders) and merged into the cache one machine would have written.
//!
//! Part `I` of `N` (0-based `I`) holds the shard files `⌊I·F/N⌋ .. ⌊(I+1)·F/N⌋` of the cache's
//! `F` shard files: a fixed partition of the image list in cache order, so any machine can tell
//! which images are its own from `I`, `N`, the image list and the shard size alone. A finished
//! part writes `parts/part-IIII-of-NNNN.json` (the whole manifest, the storage settings and the
//! checksums of its own files) instead of `manifest.json`; [`merge_parts`] checks that the parts
//! belong to one cache (one key, hence the same weights, normalization statistics, images and
//! settings), that every part is there once, and that every file is intact, then copies the
//! files into one folder and writes `manifest.json` last. The shard files and the manifest are
//! byte-identical to those of a single-machine extraction.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::files::{checksum, io_err, manifest_key, write_atomic, write_manifest, ManifestFile, ManifestProbe};
use crate::shard;
use crate::CacheError;

/// Folder of the part records inside a cache folder.
pub const PARTS_DIR: &str = "parts";

/// One of `count` fixed slices of a cache's shard files (`--shard INDEX/COUNT`, `INDEX` 0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CachePart {
    /// Which slice, `0 .. count`.
    pub index: usize,
    /// Number of slices, at least 1.
    pub count: usize,
}

impl CachePart {
    /// Slice `index` of `count`; `index < count`.
    pub fn new(index: usize, count: usize) -> Result<Self, String> {
        if count == 0 {
            return Err("the number of shards must be at least 1".into());
        }
        if index >= count {
            return Err(format!("shard index {index} is not below the shard count {count} (indices start at 0)"));
        }
        Ok(Self { index, count })
    }

    /// The shard files (indices) of this part among `num_files`: `⌊I·F/N⌋ .. ⌊(I+1)·F/N⌋`. The
    /// parts are contiguous, disjoint and cover every file; a part may be empty when there are
    /// fewer files than parts.
    pub fn shard_files(self, num_files: usize) -> Range<usize> {
        self.slice(num_files)
    }

    /// This part's slice of `len` items: `⌊I·len/N⌋ .. ⌊(I+1)·len/N⌋` (the one partition formula,
    /// also used by learning teams to split image blocks among members).
    pub fn slice(self, len: usize) -> Range<usize> {
        let at = |i: usize| i * len / self.count;
        at(self.index)..at(self.index + 1)
    }

    /// File name of this part's record: `part-IIII-of-NNNN.json`.
    pub fn record_name(self) -> String {
        format!("part-{:04}-of-{:04}.json", self.index, self.count)
    }

    /// Path of this part's record in the cache folder `dir`.
    pub fn record_path(self, dir: &Path) -> PathBuf {
        dir.join(PARTS_DIR).join(self.record_name())
    }

    /// Name of the lock file a writer of this part holds in the cache folder.
    pub(crate) fn lock_name(self) -> String {
        format!(".expgraph-part-{:04}-of-{:04}.lock", self.index, self.count)
    }
}

impl fmt::Display for CachePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for CachePart {
    type Err = String;

    /// `I/N`, e.g. `0/4` … `3/4`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s.split_once('/').ok_or_else(|| format!("{s:?} is not INDEX/COUNT (e.g. 0/4)"))?;
        let parse = |v: &str, what: &str| {
            v.trim().parse::<usize>().map_err(|e| format!("{s:?}: the {what} {v:?} is not a count ({e})"))
        };
        Self::new(parse(i, "index")?, parse(n, "count")?)
    }
}

/// `parts/part-IIII-of-NNNN.json`: the part and what `manifest.json` holds, with the checksums of
/// this part's files only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PartFile {
    pub part: CachePart,
    #[serde(flatten)]
    pub file: ManifestFile,
}

/// Write a part's record (atomically).
pub(crate) fn write_part_record(dir: &Path, part: CachePart, file: &ManifestFile) -> Result<PathBuf, CacheError> {
    let path = part.record_path(dir);
    let record = PartFile { part, file: file.clone() };
    let json = serde_json::to_vec_pretty(&record)
        .map_err(|e| CacheError::Format { path: path.clone(), what: e.to_string() })?;
    write_atomic(&path, &json)?;
    Ok(path)
}

/// The part records in `dir/parts`, sorted by file name.
pub fn find_part_records(dir: &Path) -> Result<Vec<PathBuf>, CacheError> {
    let parts = dir.join(PARTS_DIR);
    if !parts.is_dir() {
        return Ok(Vec::new());
    }
    let mut out: Vec<PathBuf> = fs::read_dir(&parts)
        .map_err(|e| io_err(&parts, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("part-") && n.ends_with(".json"))
        })
        .collect();
    out.sort();
    Ok(out)
}

fn read_part(path: &Path) -> Result<PartFile, CacheError> {
    let text = fs::read(path).map_err(|e| io_err(path, e))?;
    let bad = |what: String| CacheError::Format { path: path.to_path_buf(), what };
    let probe: ManifestProbe = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    if probe.format_version != crate::CacheManifest::FORMAT_VERSION {
        return Err(bad(format!("part of a cache of format version {}", probe.format_version)));
    }
    let part: PartFile = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    CachePart::new(part.part.index, part.part.count).map_err(bad)?;
    Ok(part)
}

/// What [`merge_parts`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeReport {
    /// The merged cache folder.
    pub dir: PathBuf,
    /// Its cache key.
    pub key: String,
    /// Number of parts merged.
    pub parts: usize,
    /// Images in the cache.
    pub images: usize,
    /// Shard files copied into `dir` (the others were there already).
    pub copied: usize,
    /// Shard files in the cache.
    pub files: usize,
}

/// Merge the parts of a sharded extraction into the cache folder `out`.
///
/// The part records are looked for in `sources/parts/` (every source folder) and in
/// `out/parts/`: parts written into one shared folder merge in place (`sources` empty or
/// `[out]`). Every part `0 .. N` must be found exactly once, all with the same cache key, and
/// every shard file must match its recorded checksum (read in full). Files from other folders
/// are copied into `out` (atomically, one by one); nothing is deleted or moved. `manifest.json`
/// is written last, so an interrupted merge leaves no finished-looking cache and can be rerun.
pub fn merge_parts(out: &Path, sources: &[PathBuf]) -> Result<MergeReport, CacheError> {
    fs::create_dir_all(out).map_err(|e| io_err(out, e))?;
    let _lock = expgraph_io::DirLock::acquire(out).map_err(|e| io_err(out, e))?;
    let mut folders: Vec<PathBuf> = vec![out.to_path_buf()];
    for s in sources {
        if !s.is_dir() {
            return Err(CacheError::Missing { path: s.clone(), what: "no such folder (a part of a sharded cache)" });
        }
        if !folders.iter().any(|f| same_dir(f, s)) {
            folders.push(s.clone());
        }
    }
    // Every part record, with the folder whose shard files it describes.
    let mut found: BTreeMap<usize, (PathBuf, PathBuf, PartFile)> = BTreeMap::new();
    let mut count: Option<(usize, PathBuf)> = None;
    let mut first: Option<(PathBuf, ManifestFile)> = None;
    for folder in &folders {
        for path in find_part_records(folder)? {
            let part = read_part(&path)?;
            match &count {
                None => count = Some((part.part.count, path.clone())),
                Some((n, other)) if *n != part.part.count => {
                    return Err(CacheError::Format {
                        path,
                        what: format!("a part of {} shards, but {} is one of {n}", part.part.count, other.display()),
                    })
                }
                Some(_) => {}
            }
            match &first {
                None => first = Some((path.clone(), part.file.clone())),
                Some((other, f)) => check_same_cache(&path, &part.file, other, f)?,
            }
            if let Some((other, _, kept)) = found.get(&part.part.index) {
                // The same record copied into two folders is one part; two different ones are not.
                if kept.file.checksums != part.file.checksums {
                    return Err(CacheError::Format {
                        path,
                        what: format!("shard {} is recorded twice (also in {})", part.part, other.display()),
                    });
                }
                continue;
            }
            found.insert(part.part.index, (path, folder.clone(), part));
        }
    }
    let Some((first_path, template)) = first else {
        return Err(CacheError::Missing {
            path: out.join(PARTS_DIR),
            what: "no part records (parts/part-*.json) here or in the folders given: nothing to merge",
        });
    };
    let n = count.map_or(0, |(n, _)| n);
    let missing: Vec<String> = (0..n).filter(|i| !found.contains_key(i)).map(|i| format!("{i}/{n}")).collect();
    if !missing.is_empty() {
        return Err(CacheError::Format {
            path: first_path,
            what: format!("the cache has {n} shards but these were not found (not finished?): {}", missing.join(", ")),
        });
    }
    if let Some(existing) = manifest_key(out)? {
        if existing != template.manifest.key {
            return Err(CacheError::KeyMismatch {
                dir: out.to_path_buf(),
                found: existing,
                expected: template.manifest.key,
            });
        }
    }
    let num_files = template.manifest.images.len().div_ceil(template.storage.shard_size.max(1));
    let mut checksums = BTreeMap::new();
    let mut copied = 0;
    for (path, folder, part) in found.values() {
        let expected = expected_files(&template, part.part.shard_files(num_files));
        let recorded: Vec<&String> = part.file.checksums.keys().collect();
        if recorded != expected.iter().collect::<Vec<_>>() {
            return Err(CacheError::Format {
                path: path.clone(),
                what: format!(
                    "shard {} should list the files {:?}…, it lists {} files",
                    part.part,
                    expected.first(),
                    recorded.len()
                ),
            });
        }
        for (rel, sum) in &part.file.checksums {
            let src = folder.join(rel);
            let bytes = fs::read(&src).map_err(|e| io_err(&src, e))?;
            if checksum(&bytes) != *sum {
                return Err(CacheError::Format {
                    path: src,
                    what: format!("content does not match the checksum recorded in {}", path.display()),
                });
            }
            let dst = out.join(rel);
            if !same_dir(folder, out) {
                let present = dst.is_file() && fs::read(&dst).is_ok_and(|b| checksum(&b) == *sum);
                if !present {
                    write_atomic(&dst, &bytes)?;
                    copied += 1;
                }
            }
            checksums.insert(rel.clone(), sum.clone());
        }
    }
    let mut file = template;
    file.checksums = checksums;
    let files = file.checksums.len();
    let (key, images) = (file.manifest.key.clone(), file.manifest.images.len());
    write_manifest(out, &file)?;
    tracing::info!(dir = %out.display(), parts = n, copied, files, "sharded cache merged");
    Ok(MergeReport { dir: out.to_path_buf(), key, parts: n, images, copied, files })
}

/// The checksum keys of the shard files `shards` of the cache described by `file`, sorted as
/// the manifest's map sorts them.
fn expected_files(file: &ManifestFile, shards: Range<usize>) -> Vec<String> {
    let m = &file.manifest;
    let mut out = Vec::new();
    for l in &m.layers {
        for v in &m.views {
            out.extend(shards.clone().map(|s| format!("{}/{}", l.name, shard::shard_file_name(*v, s))));
        }
    }
    out.sort();
    out
}

/// Parts merge only when they describe one cache: the same key (so the same weights,
/// statistics, images and settings), manifest and storage.
fn check_same_cache(path: &Path, a: &ManifestFile, other: &Path, b: &ManifestFile) -> Result<(), CacheError> {
    if a.manifest.key != b.manifest.key || a.manifest != b.manifest || a.storage != b.storage {
        let what = if a.storage.weights_digest != b.storage.weights_digest {
            "other backbone weights"
        } else if a.storage.norm_stats_digest != b.storage.norm_stats_digest {
            "other normalization statistics (make them once with `expgraph stats` and pass --stats to every shard)"
        } else if a.manifest.images != b.manifest.images {
            "another image list"
        } else {
            "other settings"
        };
        return Err(CacheError::Format {
            path: path.to_path_buf(),
            what: format!(
                "this shard belongs to another cache than {} ({what}; key {} vs {})",
                other.display(),
                a.manifest.key,
                b.manifest.key
            ),
        });
    }
    Ok(())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// How far a sharded cache in `dir` (without `manifest.json`) has got: `(parts found, count)`.
pub(crate) fn parts_progress(dir: &Path) -> Option<(usize, usize)> {
    let records = find_part_records(dir).ok()?;
    let parts: Vec<PartFile> = records.iter().filter_map(|p| read_part(p).ok()).collect();
    let count = parts.first()?.part.count;
    Some((parts.len(), count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_contiguous_disjoint_and_cover_every_file() {
        for files in [0usize, 1, 2, 5, 7, 63, 64, 100] {
            for count in 1..=9 {
                let mut next = 0;
                for index in 0..count {
                    let r = CachePart::new(index, count).unwrap().shard_files(files);
                    assert_eq!(r.start, next, "{files} files, {index}/{count}");
                    assert!(r.len() <= files.div_ceil(count));
                    next = r.end;
                }
                assert_eq!(next, files);
            }
        }
        // The documented formula on one case: 10 files over 4 parts.
        let sizes: Vec<_> = (0..4).map(|i| CachePart::new(i, 4).unwrap().shard_files(10)).collect();
        assert_eq!(sizes, vec![0..2, 2..5, 5..7, 7..10]);
    }

    #[test]
    fn parsing_names_what_is_wrong() {
        assert_eq!("2/5".parse::<CachePart>().unwrap(), CachePart { index: 2, count: 5 });
        assert_eq!("0/1".parse::<CachePart>().unwrap().to_string(), "0/1");
        assert!("5/5".parse::<CachePart>().unwrap_err().contains("indices start at 0"));
        assert!("1/0".parse::<CachePart>().unwrap_err().contains("at least 1"));
        assert!("3".parse::<CachePart>().unwrap_err().contains("INDEX/COUNT"));
        assert!("a/4".parse::<CachePart>().unwrap_err().contains("index"));
        assert_eq!(CachePart::new(3, 12).unwrap().record_name(), "part-0003-of-0012.json");
    }
}
