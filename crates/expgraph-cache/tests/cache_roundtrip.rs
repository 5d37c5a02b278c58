//! Round trip, resumption and error handling of the on-disk cache.

use std::fs;
use std::path::{Path, PathBuf};

use expgraph_cache::{
    merge_parts, CacheError, CacheManifest, CachePart, CacheWriter, FeatureCache, ImageEntry, LayerInfo, LayerMaps,
    StorageDtype, StorageInfo, TapGeometry, View, MANIFEST_FILE, PARTS_DIR,
};

fn layer(name: &str, c: usize, h: usize, w: usize) -> LayerInfo {
    LayerInfo {
        name: name.into(),
        channels: c,
        height: h,
        width: w,
        geometry: TapGeometry { stride: 8.0, first_centre: 4.5, receptive_field: 76.0 },
    }
}

fn manifest(n: usize) -> CacheManifest {
    CacheManifest {
        format_version: CacheManifest::FORMAT_VERSION,
        key: String::new(),
        backbone: "fake".into(),
        preprocess: "caffe".into(),
        input_size: 224,
        layers: vec![layer("a", 3, 4, 5), layer("b", 2, 2, 3)],
        images: (0..n)
            .map(|i| ImageEntry { id: format!("img{i}"), path: format!("img{i}.jpg"), bbox: [0.0, 0.0, 10.0, 10.0] })
            .collect(),
        views: vec![View::Original, View::Flipped],
    }
}

fn storage(dtype: StorageDtype, shard_size: usize) -> StorageInfo {
    StorageInfo { dtype, shard_size, weights_digest: "w".into(), norm_stats_digest: "s".into() }
}

/// Deterministic, non-trivial values (some zeros, like ReLU'd maps).
fn value(layer: &str, view: View, image: usize, i: usize) -> f32 {
    let seed = (layer.len() * 7 + image * 131 + i * 17 + if view == View::Flipped { 5 } else { 0 }) % 97;
    if seed.is_multiple_of(5) {
        0.0
    } else {
        seed as f32 * 0.37 + image as f32
    }
}

fn maps_for(m: &CacheManifest, range: std::ops::Range<usize>, name: &str, view: View) -> Vec<f32> {
    let info = m.layer(name).unwrap();
    range.flat_map(|img| (0..info.image_len()).map(move |i| value(name, view, img, i))).collect()
}

fn write_all(dir: &Path, n: usize, st: StorageInfo, stop_after: Option<usize>) -> Result<(), CacheError> {
    let m = manifest(n);
    let mut w = CacheWriter::create(dir, m.clone(), st, false)?;
    for (k, shard) in w.pending_shards().into_iter().enumerate() {
        if Some(k) == stop_after {
            return Ok(()); // simulated crash: no manifest
        }
        let range = w.shard_range(shard);
        for (name, view) in w.files_per_shard() {
            w.write_shard(shard, &name, view, &maps_for(&m, range.clone(), &name, view))?;
        }
    }
    w.finish()?;
    Ok(())
}

fn max_error(dir: &Path, n: usize) -> (f32, f32) {
    let cache = FeatureCache::open(dir).unwrap();
    let m = manifest(n);
    assert_eq!(cache.images().len(), n);
    let (mut abs, mut rel) = (0.0f32, 0.0f32);
    for info in &m.layers {
        let l = cache.layer(&info.name).unwrap();
        assert_eq!(l.num_images(), n);
        assert!(l.has_flipped());
        let mut out = vec![0.0; info.image_len()];
        for view in [View::Original, View::Flipped] {
            for img in 0..n {
                l.read_image(img, view, &mut out);
                for (i, &got) in out.iter().enumerate() {
                    let want = value(&info.name, view, img, i);
                    abs = abs.max((got - want).abs());
                    if want == 0.0 {
                        assert_eq!(got, 0.0, "zeros stay exact");
                    } else {
                        rel = rel.max((got - want).abs() / want);
                    }
                }
            }
        }
    }
    (abs, rel)
}

#[test]
fn f16_round_trip_error_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path(), 7, storage(StorageDtype::F16, 3), None).unwrap();
    let (_, rel) = max_error(dir.path(), 7);
    assert!(rel <= 2f32.powi(-11), "f16 relative error {rel}");
    // three shards (3 + 3 + 1 images) per layer and view
    assert!(dir.path().join("a/flipped-00002.safetensors").exists());
    assert!(!dir.path().join("a/flipped-00003.safetensors").exists());
}

#[test]
fn u8_round_trip_error_is_bounded_by_half_a_step() {
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path(), 4, storage(StorageDtype::U8, 2), None).unwrap();
    let (abs, _) = max_error(dir.path(), 4);
    // range of each map ≤ 96·0.37 + 3 ⇒ step/2 ≤ 0.08
    let max_range = 96.0 * 0.37 + 3.0;
    assert!(abs <= max_range / 510.0 + 1e-4, "u8 abs error {abs}");
    assert!(abs > 0.0, "quantization should be lossy on these values");
}

#[test]
fn resumes_after_a_crash_and_keeps_finished_shards() {
    let dir = tempfile::tempdir().unwrap();
    let st = storage(StorageDtype::F16, 2);
    write_all(dir.path(), 7, st.clone(), Some(2)).unwrap();
    assert!(FeatureCache::open(dir.path()).is_err(), "no manifest yet");
    // a half-written temp file from the crash
    fs::write(dir.path().join("a/.original-00002.safetensors.k3Xf9q.tmp"), b"junk").unwrap();
    let kept = dir.path().join("b/flipped-00001.safetensors");
    let before = fs::metadata(&kept).unwrap().modified().unwrap();

    let w = CacheWriter::create(dir.path(), manifest(7), st.clone(), false).unwrap();
    assert_eq!(w.pending_shards(), vec![2, 3]);
    assert!(!dir.path().join("a/.original-00002.safetensors.k3Xf9q.tmp").exists(), "stale temp removed");
    drop(w);
    write_all(dir.path(), 7, st, None).unwrap();
    assert_eq!(fs::metadata(&kept).unwrap().modified().unwrap(), before, "finished shard not rewritten");
    let (_, rel) = max_error(dir.path(), 7);
    assert!(rel <= 2f32.powi(-11));
}

#[test]
fn another_key_in_the_folder_is_refused_unless_overwriting() {
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path(), 3, storage(StorageDtype::F16, 2), None).unwrap();
    let other = storage(StorageDtype::U8, 2);
    match CacheWriter::create(dir.path(), manifest(3), other.clone(), false) {
        Err(CacheError::KeyMismatch { .. }) => {}
        r => panic!("expected KeyMismatch, got {r:?}"),
    }
    // also without a manifest (interrupted run of another configuration)
    fs::remove_file(dir.path().join("manifest.json")).unwrap();
    assert!(matches!(
        CacheWriter::create(dir.path(), manifest(3), other.clone(), false),
        Err(CacheError::KeyMismatch { .. })
    ));
    let w = CacheWriter::create(dir.path(), manifest(3), other, true).unwrap();
    assert_eq!(w.pending_shards(), vec![0, 1], "overwrite starts from scratch");
}

#[test]
fn missing_truncated_and_foreign_shards_are_named_on_open() {
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path(), 3, storage(StorageDtype::F16, 2), None).unwrap();
    let shard = dir.path().join("b/original-00001.safetensors");
    let bytes = fs::read(&shard).unwrap();

    fs::write(&shard, &bytes[..bytes.len() - 3]).unwrap();
    let err = FeatureCache::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("original-00001.safetensors") && err.contains("safetensors"), "{err}");

    fs::remove_file(&shard).unwrap();
    let err = FeatureCache::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("original-00001.safetensors") && err.contains("missing"), "{err}");

    let m = dir.path().join("manifest.json");
    let text = fs::read_to_string(&m).unwrap().replace("\"format_version\": 1", "\"format_version\": 99");
    fs::write(&m, text).unwrap();
    let err = FeatureCache::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("format version 99"), "{err}");

    let err = FeatureCache::open(dir.path().join("nowhere")).unwrap_err().to_string();
    assert!(err.contains("manifest.json"), "{err}");
}

#[test]
fn nan_and_f16_overflow_are_rejected_at_write_and_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(2);
    let mut w = CacheWriter::create(dir.path(), m.clone(), storage(StorageDtype::F16, 2), false).unwrap();
    let mut maps = maps_for(&m, 0..2, "a", View::Original);
    maps[3 * 20 + 4] = f32::NAN; // image 1, channel 0
    match w.write_shard(0, "a", View::Original, &maps) {
        Err(CacheError::NonFinite { image: 1, channel: 0, .. }) => {}
        r => panic!("expected NonFinite, got {r:?}"),
    }
    maps[3 * 20 + 4] = 1e6;
    assert!(matches!(w.write_shard(0, "a", View::Original, &maps), Err(CacheError::Overflow { .. })));
    assert!(matches!(w.write_shard(0, "a", View::Original, &maps[1..]), Err(CacheError::Shape { .. })));
    assert!(matches!(w.write_shard(0, "zz", View::Original, &maps), Err(CacheError::Shape { .. })));
    assert!(fs::read_dir(dir.path()).unwrap().all(|e| e.unwrap().file_name() != "manifest.json"));
    assert!(!dir.path().join("a/original-00000.safetensors").exists());
    assert!(matches!(w.finish(), Err(CacheError::Incomplete { shard: 0, .. })));
    assert!(!dir.path().join("manifest.json").exists());
}

#[test]
fn key_depends_on_inputs() {
    let m = manifest(2);
    let a = expgraph_cache::compute_cache_key(&m, &storage(StorageDtype::F16, 2));
    let mut m2 = m.clone();
    m2.images[1].bbox[2] = 9.0;
    assert_ne!(a, expgraph_cache::compute_cache_key(&m2, &storage(StorageDtype::F16, 2)));
    let mut st = storage(StorageDtype::F16, 2);
    st.norm_stats_digest = "other".into();
    assert_ne!(a, expgraph_cache::compute_cache_key(&m, &st));
    assert_eq!(a, expgraph_cache::compute_cache_key(&m, &storage(StorageDtype::F16, 2)));
}

#[test]
fn a_changed_shard_fails_its_checksum_when_read() {
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path(), 5, storage(StorageDtype::F16, 2), None).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["checksums"].as_object().unwrap().len(), 2 * 2 * 3, "layers x views x shards");
    FeatureCache::open(dir.path()).unwrap().layer("b").unwrap();
    // Overwrite the last value of a shard with another finite f16 (1.0): shape, header and
    // dtype stay valid, only the content changed.
    let shard = dir.path().join("b/original-00001.safetensors");
    let mut bytes = fs::read(&shard).unwrap();
    let n = bytes.len();
    bytes[n - 2..].copy_from_slice(&half_one());
    fs::write(&shard, &bytes).unwrap();
    let cache = FeatureCache::open(dir.path()).unwrap();
    let err = cache.layer("b").unwrap_err().to_string();
    assert!(err.contains("checksum") && err.contains("original-00001"), "{err}");
    // Other layers are unaffected.
    cache.layer("a").unwrap();
}

/// 1.0 as little-endian f16.
fn half_one() -> [u8; 2] {
    0x3C00u16.to_le_bytes()
}

#[test]
fn resumed_shards_keep_their_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let st = storage(StorageDtype::F16, 2);
    write_all(dir.path(), 5, st.clone(), Some(1)).unwrap();
    write_all(dir.path(), 5, st, None).unwrap();
    let cache = FeatureCache::open(dir.path()).unwrap();
    for layer in ["a", "b"] {
        cache.layer(layer).unwrap();
    }
}

#[test]
fn a_second_writer_of_the_folder_fails_at_once_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let st = storage(StorageDtype::F16, 2);
    let first = CacheWriter::create(dir.path(), manifest(3), st.clone(), false).unwrap();
    let err = CacheWriter::create(dir.path(), manifest(3), st.clone(), false).unwrap_err().to_string();
    assert!(err.contains("in use by pid"), "{err}");
    drop(first);
    write_all(dir.path(), 3, st, None).unwrap();
    FeatureCache::open(dir.path()).unwrap();
}

/// Every file of a folder tree (path relative to it → bytes), sorted.
fn tree(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != expgraph_io::LOCK_FILE) {
                out.push((path.strip_prefix(root).unwrap().to_path_buf(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn files_written_together_equal_files_written_one_by_one() {
    let (one, together) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_all(one.path(), 5, storage(StorageDtype::F16, 2), None).unwrap();
    let m = manifest(5);
    let mut w = CacheWriter::create(together.path(), m.clone(), storage(StorageDtype::F16, 2), false).unwrap();
    for shard in w.pending_shards() {
        let range = w.shard_range(shard);
        let maps: Vec<(String, View, Vec<f32>)> = w
            .files_per_shard()
            .into_iter()
            .map(|(name, view)| {
                let values = maps_for(&m, range.clone(), &name, view);
                (name, view, values)
            })
            .collect();
        let files: Vec<(&str, View, &[f32])> = maps.iter().map(|(n, v, m)| (n.as_str(), *v, m.as_slice())).collect();
        w.write_shard_files(shard, &files).unwrap();
    }
    w.finish().unwrap();
    let (a, b) = (tree(one.path()), tree(together.path()));
    assert!(a.len() > 3);
    assert_eq!(a, b);

    // A bad file among good ones: the error comes back, the good files are done.
    let bad = tempfile::tempdir().unwrap();
    let mut w = CacheWriter::create(bad.path(), m.clone(), storage(StorageDtype::F16, 2), false).unwrap();
    let range = w.shard_range(0);
    let names = w.files_per_shard();
    let good = maps_for(&m, range.clone(), &names[0].0, names[0].1);
    let mut nan = maps_for(&m, range, &names[1].0, names[1].1);
    nan[3] = f32::NAN;
    let files = [(names[0].0.as_str(), names[0].1, good.as_slice()), (names[1].0.as_str(), names[1].1, nan.as_slice())];
    assert!(w.write_shard_files(0, &files).is_err());
    assert!(w.pending_shards().contains(&0));
}

/// Write part `part` of the cache of `n` images into `dir` (a sharded extraction's job).
fn write_part(dir: &Path, n: usize, st: StorageInfo, part: CachePart) -> Result<PathBuf, CacheError> {
    let m = manifest(n);
    let mut w = CacheWriter::create_part(dir, m.clone(), st, part)?;
    for shard in w.pending_shards() {
        let range = w.shard_range(shard);
        for (name, view) in w.files_per_shard() {
            w.write_shard(shard, &name, view, &maps_for(&m, range.clone(), &name, view))?;
        }
    }
    w.finish()
}

/// The files of a cache folder without the part records and lock files.
fn cache_files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    tree(root)
        .into_iter()
        .filter(|(p, _)| !p.starts_with(PARTS_DIR) && !p.to_string_lossy().ends_with(".lock"))
        .collect()
}

#[test]
fn parts_merged_in_one_folder_or_from_many_equal_a_single_writer() {
    let st = || storage(StorageDtype::F16, 2);
    let single = tempfile::tempdir().unwrap();
    write_all(single.path(), 9, st(), None).unwrap(); // 5 shard files
    let expected = cache_files(single.path());

    // Three jobs into one shared folder, then merged in place.
    let shared = tempfile::tempdir().unwrap();
    for i in [2, 0, 1] {
        write_part(shared.path(), 9, st(), CachePart::new(i, 3).unwrap()).unwrap();
        if i != 1 {
            let err = FeatureCache::open(shared.path()).unwrap_err().to_string();
            assert!(err.contains("of the 3 shards") && err.contains("expgraph cache merge"), "{err}");
        }
    }
    let report = merge_parts(shared.path(), &[]).unwrap();
    assert_eq!((report.parts, report.images, report.copied, report.files), (3, 9, 0, 20));
    assert_eq!(cache_files(shared.path()), expected);

    // Seven jobs into their own folders (5 files over 7 parts: 0, 1, 1, 0, 1, 1, 1 files; the
    // empty parts finish at once), merged into a new folder.
    let root = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..7).map(|i| root.path().join(format!("part{i}"))).collect();
    for (i, d) in dirs.iter().enumerate() {
        write_part(d, 9, st(), CachePart::new(i, 7).unwrap()).unwrap();
        assert!(CachePart::new(i, 7).unwrap().record_path(d).is_file());
    }
    let out = root.path().join("merged");
    let report = merge_parts(&out, &dirs).unwrap();
    assert_eq!((report.parts, report.copied), (7, 20));
    assert_eq!(cache_files(&out), expected);
    FeatureCache::open(&out).unwrap();
    let (_, rel) = max_error(&out, 9);
    assert!(rel <= 2f32.powi(-11));
    // Merging again copies nothing and changes nothing; the sources are untouched.
    assert_eq!(merge_parts(&out, &dirs).unwrap().copied, 0);
    assert_eq!(cache_files(&out), expected);
    assert!(dirs.iter().all(|d| d.join("parts").is_dir() && !d.join(MANIFEST_FILE).exists()));
}

#[test]
fn a_merge_refuses_missing_foreign_and_damaged_parts() {
    let root = tempfile::tempdir().unwrap();
    let part = |i| CachePart::new(i, 3).unwrap();
    let dirs: Vec<PathBuf> = (0..3).map(|i| root.path().join(format!("p{i}"))).collect();
    write_part(&dirs[0], 6, storage(StorageDtype::F16, 2), part(0)).unwrap();
    write_part(&dirs[1], 6, storage(StorageDtype::F16, 2), part(1)).unwrap();
    let out = root.path().join("out");

    let err = merge_parts(&out, &dirs[..2]).unwrap_err().to_string();
    assert!(err.contains("were not found") && err.contains("2/3"), "{err}");
    assert!(!out.join(MANIFEST_FILE).exists());

    // The third part made with other normalization statistics.
    let mut other = storage(StorageDtype::F16, 2);
    other.norm_stats_digest = "other".into();
    write_part(&dirs[2], 6, other, part(2)).unwrap();
    let err = merge_parts(&out, &dirs).unwrap_err().to_string();
    assert!(err.contains("another cache") && err.contains("normalization statistics"), "{err}");
    // … and into a folder that holds another part of this cache: refused before writing.
    let err = write_part(&dirs[1], 6, other_storage(), part(2)).unwrap_err();
    assert!(matches!(err, CacheError::KeyMismatch { .. }), "{err}");

    // Redone right, but a shard file damaged after its part finished.
    std::fs::remove_dir_all(&dirs[2]).unwrap();
    write_part(&dirs[2], 6, storage(StorageDtype::F16, 2), part(2)).unwrap();
    let victim = dirs[1].join("b/flipped-00001.safetensors");
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&victim, bytes).unwrap();
    let err = merge_parts(&out, &dirs).unwrap_err().to_string();
    assert!(err.contains("flipped-00001") && err.contains("checksum"), "{err}");
    assert!(!out.join(MANIFEST_FILE).exists());

    // Nothing to merge at all.
    let empty = root.path().join("empty");
    let err = merge_parts(&empty, &[]).unwrap_err().to_string();
    assert!(err.contains("nothing to merge"), "{err}");
}

fn other_storage() -> StorageInfo {
    StorageInfo { weights_digest: "other weights".into(), ..storage(StorageDtype::F16, 2) }
}
