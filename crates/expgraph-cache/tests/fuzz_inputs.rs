//! Property tests of the feature-cache reader on mutated inputs (issue 11): `FeatureCache::open`,
//! then every layer opened and every map read, on a small valid cache (f16 and u8 shards) whose
//! `manifest.json` gets values of the wrong type, huge counts and removed entries, and whose
//! shard files get flipped bits, overwritten bytes, huge integers in their safetensors header
//! and cuts (with the shard's checksum in the manifest updated, so the damage reaches the
//! parser, or left stale).
//!
//! Every open and read must end in an error naming a file or in maps of the declared size: never
//! a panic, never a hang (each runs on its own thread under a time limit), never an allocation
//! sized by a number in a file (a global allocator refuses any single request above
//! [`MAX_ALLOC`]). 64 cases per property unless `PROPTEST_CASES` is set; fixed seed unless
//! `PROPTEST_RNG_SEED` is set.

use std::path::{Path, PathBuf};

use expgraph_cache::{
    CacheManifest, CacheWriter, FeatureCache, ImageEntry, LayerInfo, LayerMaps, StorageDtype, StorageInfo, TapGeometry,
    View,
};

// The harness (bounded runs, capped allocations, byte mutations, JSON edits): expgraph-testkit.
use expgraph_testkit::*;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

// ---- feature cache ----

fn layer(name: &str, c: usize, h: usize, w: usize) -> LayerInfo {
    LayerInfo {
        name: name.into(),
        channels: c,
        height: h,
        width: w,
        geometry: TapGeometry { stride: 8.0, first_centre: 4.5, receptive_field: 76.0 },
    }
}

/// Five images, two layers, both views, shards of two images (three per layer and view).
fn write_cache(dir: &Path, dtype: StorageDtype) {
    let m = CacheManifest {
        format_version: CacheManifest::FORMAT_VERSION,
        key: String::new(),
        backbone: "fake".into(),
        preprocess: "caffe".into(),
        input_size: 224,
        layers: vec![layer("a", 3, 4, 5), layer("b", 2, 2, 3)],
        images: (0..5)
            .map(|i| ImageEntry { id: format!("img{i}"), path: format!("img{i}.jpg"), bbox: [0.0, 0.0, 10.0, 10.0] })
            .collect(),
        views: vec![View::Original, View::Flipped],
    };
    let st = StorageInfo { dtype, shard_size: 2, weights_digest: "w".into(), norm_stats_digest: "s".into() };
    let mut w = CacheWriter::create(dir, m.clone(), st, false).unwrap();
    for shard in w.pending_shards() {
        let range = w.shard_range(shard);
        for (name, view) in w.files_per_shard() {
            let info = m.layer(&name).unwrap();
            let maps: Vec<f32> = range
                .clone()
                .flat_map(|i| (0..info.image_len()).map(move |k| ((i * 31 + k * 7) % 13) as f32))
                .collect();
            w.write_shard(shard, &name, view, &maps).unwrap();
        }
    }
    w.finish().unwrap();
}

/// Every file of a cache folder.
fn files(dir: &Path) -> Files {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(dir.join(&rel)).unwrap() {
            let name = rel.join(e.unwrap().file_name());
            if dir.join(&name).is_dir() {
                stack.push(name);
            } else {
                out.push((name.clone(), std::fs::read(dir.join(&name)).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The files of a cache folder: (path relative to it, bytes).
type Files = Vec<(PathBuf, Vec<u8>)>;

/// The pristine f16 and u8 caches, made once.
fn pristine() -> &'static [Files; 2] {
    static CACHES: std::sync::OnceLock<[Files; 2]> = std::sync::OnceLock::new();
    CACHES.get_or_init(|| {
        [StorageDtype::F16, StorageDtype::U8].map(|dtype| {
            let tmp = tempfile::tempdir().unwrap();
            write_cache(tmp.path(), dtype);
            files(tmp.path())
        })
    })
}

/// What to damage in a cache folder.
#[derive(Debug, Clone)]
enum Damage {
    Manifest(JsonEdit),
    /// A shard file (by index among the shards), its checksum in the manifest updated or not.
    Shard(Index, Mutation, bool),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        json_edit().prop_map(Damage::Manifest),
        (any::<Index>(), mutation(), prop::sample::select(vec![true, true, true, false]))
            .prop_map(|(i, m, r)| Damage::Shard(i, m, r)),
    ]
}

/// `manifest` with the checksum of shard `rel` (when the manifest lists checksums) set to that
/// of `bytes`.
fn rehash(manifest: &[u8], rel: &Path, bytes: &[u8]) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<Value>(manifest) else { return manifest.to_vec() };
    let key = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
    if let Some(sums) = v.get_mut("checksums").and_then(Value::as_object_mut) {
        if sums.contains_key(&key) {
            sums.insert(key, Value::from(blake3::hash(bytes).to_hex().to_string()));
        }
    }
    serde_json::to_vec_pretty(&v).unwrap()
}

/// Write the cache `files` into `dir` with `d` applied.
fn write_damaged(dir: &Path, files: &[(PathBuf, Vec<u8>)], d: &Damage) {
    let manifest = Path::new(expgraph_cache::MANIFEST_FILE);
    let shards: Vec<&PathBuf> = files.iter().map(|(p, _)| p).filter(|p| p.as_path() != manifest).collect();
    let mut out: Vec<(PathBuf, Vec<u8>)> = files.to_vec();
    match d {
        Damage::Manifest(e) => {
            for (p, b) in &mut out {
                if p.as_path() == manifest {
                    *b = edit_json(b, e);
                }
            }
        }
        Damage::Shard(i, m, rehashed) => {
            let target = shards[i.index(shards.len())].clone();
            // the safetensors header (8-byte length + JSON) is the first few hundred bytes
            let damaged = apply(&files.iter().find(|(p, _)| *p == target).unwrap().1, m, 512);
            for (p, b) in &mut out {
                if *p == target {
                    *b = damaged.clone();
                }
            }
            if *rehashed {
                for (p, b) in &mut out {
                    if p.as_path() == manifest {
                        *b = rehash(b, &target, &damaged);
                    }
                }
            }
        }
    }
    write_files(dir, &out);
}

fn write_files(dir: &Path, files: &[(PathBuf, Vec<u8>)]) {
    for (p, b) in files {
        std::fs::create_dir_all(dir.join(p).parent().unwrap()).unwrap();
        std::fs::write(dir.join(p), b).unwrap();
    }
}

/// Largest map this test reads: the caches here have maps of at most 20 values, so a bigger
/// one was declared by a manifest whose shards hold no data for it (e.g. zero channels).
const MAX_TEST_MAP: usize = 1 << 20;

/// Open the cache in `dir`, open every layer and read every map of every image and view.
/// `Ok(None)` when something was refused with an error naming a file of the cache; `Ok(Some(n))`
/// with the number of maps read.
fn read_everything(dir: PathBuf) -> Result<Option<usize>, String> {
    let named = |e: &dyn std::fmt::Display| {
        let msg = e.to_string();
        // A layer name is joined to the folder as it is, so `/dev/zero` gives shard paths outside
        // it ("/dev/zero/original-00000.safetensors: ... missing"): still an error naming a file.
        if msg.contains(&dir.display().to_string()) || msg.contains("layer") || msg.contains(".safetensors") {
            Ok(None)
        } else {
            Err(format!("error names no file of the cache: {msg}"))
        }
    };
    let cache = match FeatureCache::open(&dir) {
        Ok(c) => c,
        Err(e) => return named(&e),
    };
    let mut maps = 0;
    for info in cache.layers().to_vec() {
        let layer = match cache.layer(&info.name) {
            Ok(l) => l,
            Err(e) => return named(&e),
        };
        if layer.info() != &info || layer.num_images() != cache.images().len() {
            return Err(format!("layer {} does not match the manifest", info.name));
        }
        let len = info.height.checked_mul(info.width).filter(|&l| l <= MAX_TEST_MAP);
        let Some(len) = len else {
            if info.channels == 0 || cache.images().is_empty() {
                continue; // no map to read: nothing is allocated by the reader
            }
            return Err(format!("layer {} opened with maps of {}x{} values", info.name, info.height, info.width));
        };
        let mut out = vec![0f32; len];
        for image in 0..layer.num_images() {
            for view in [View::Original, View::Flipped] {
                for channel in 0..info.channels {
                    layer.read_channel(image, view, channel, &mut out);
                    maps += 1;
                }
            }
        }
    }
    Ok(Some(maps))
}

fn fuzz_cache(which: usize) {
    let files = &pristine()[which];
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    write_files(&clean, files);
    assert_eq!(read_everything(clean), Ok(Some(5 * 2 * (3 + 2))), "the pristine cache reads whole");
    check(64, damage(), |d| {
        let dir = tmp.path().join("c");
        let _ = std::fs::remove_dir_all(&dir);
        write_damaged(&dir, files, &d);
        let p = dir.clone();
        let verdict = bounded(&format!("{d:?}"), move || read_everything(p));
        verdict.map(|_| ()).map_err(TestCaseError::fail)
    });
}

#[test]
fn f16_cache_survives_mutation() {
    fuzz_cache(0);
}

#[test]
fn u8_cache_survives_mutation() {
    fuzz_cache(1);
}

/// `json` with the value at `pointer` replaced.
fn with(json: &[u8], pointer: &str, v: Value) -> Vec<u8> {
    let mut doc: Value = serde_json::from_slice(json).unwrap();
    *doc.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer}")) = v;
    serde_json::to_vec_pretty(&doc).unwrap()
}

/// Huge counts and sizes in the manifest, and shard headers that claim 2^60 bytes or a header
/// of 2^60 bytes (checksums updated): each a quick error.
#[test]
fn huge_counts_and_sizes_are_errors() {
    let files = &pristine()[0];
    let manifest = Path::new(expgraph_cache::MANIFEST_FILE);
    let json = &files.iter().find(|(p, _)| p == manifest).unwrap().1;
    let tmp = tempfile::tempdir().unwrap();
    let huge = 1_000_000_000_000u64;
    let edits: Vec<(&str, Vec<u8>)> = vec![
        ("shard_size 10^12", with(json, "/storage/shard_size", huge.into())),
        ("shard_size u64::MAX", with(json, "/storage/shard_size", u64::MAX.into())),
        ("shard_size 0", with(json, "/storage/shard_size", 0.into())),
        ("channels 10^12", with(json, "/layers/0/channels", huge.into())),
        ("height 2^40", with(json, "/layers/1/height", (1u64 << 40).into())),
        ("width 2^63", with(json, "/layers/1/width", (1u64 << 63).into())),
    ];
    for (what, m) in edits {
        let mut out = files.clone();
        out.iter_mut().filter(|(p, _)| p == manifest).for_each(|(_, b)| *b = m.clone());
        let dir = tmp.path().join(what.replace(' ', "_"));
        write_files(&dir, &out);
        let verdict = bounded(what, move || read_everything(dir));
        assert_eq!(verdict, Ok(None), "{what}: an error");
    }
    let shard = PathBuf::from("a").join("original-00000.safetensors");
    let bytes = &files.iter().find(|(p, _)| *p == shard).unwrap().1;
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    header["maps"]["shape"] = serde_json::json!([2, 3, 1u64 << 28, 1u64 << 29]);
    header["maps"]["data_offsets"] = serde_json::json!([0, 1u64 << 60]);
    let text = serde_json::to_vec(&header).unwrap();
    let mut claims_2_60 = (text.len() as u64).to_le_bytes().to_vec();
    claims_2_60.extend_from_slice(&text);
    claims_2_60.extend_from_slice(&bytes[8 + header_len..]);
    let mut header_2_60 = bytes.clone();
    header_2_60[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    for (what, damaged) in [("maps of 2^60 bytes", claims_2_60), ("header of 2^60 bytes", header_2_60)] {
        let mut out = files.clone();
        out.iter_mut().filter(|(p, _)| *p == shard).for_each(|(_, b)| *b = damaged.clone());
        out.iter_mut().filter(|(p, _)| p == manifest).for_each(|(_, b)| *b = rehash(b, &shard, &damaged));
        let dir = tmp.path().join(what.replace(' ', "_"));
        write_files(&dir, &out);
        let verdict = bounded(what, move || read_everything(dir));
        assert_eq!(verdict, Ok(None), "{what}: an error");
    }
}

/// A manifest layer with 0 channels and 2^40 × 2^40 maps, with shards of shape
/// `[n, 0, 2^40, 2^40]` (no data, checksums updated) is refused: before, the reader accepted it, so a consumer
/// that sizes a map buffer by `LayerInfo::map_len` (2^80, wrapping to 0 in release builds,
/// an overflow panic in debug builds) would get a size from the file. `FeatureCache::open`
/// requires channels, height and width ≥ 1 and `C·H·W` to fit.
#[test]
fn zero_channel_layers_with_huge_maps_are_refused() {
    let files = &pristine()[0];
    let manifest = Path::new(expgraph_cache::MANIFEST_FILE);
    let mut out = files.clone();
    let side = 1u64 << 40;
    for (p, b) in &mut out {
        if p.starts_with("b") {
            let header_len = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
            let mut header: Value = serde_json::from_slice(&b[8..8 + header_len]).unwrap();
            let n = header["maps"]["shape"][0].clone();
            header["maps"]["shape"] = serde_json::json!([n, 0, side, side]);
            header["maps"]["data_offsets"] = serde_json::json!([0, 0]);
            let text = serde_json::to_vec(&header).unwrap();
            let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(&text);
            *b = bytes;
        }
    }
    let shards: Vec<(PathBuf, Vec<u8>)> = out.iter().filter(|(p, _)| p.starts_with("b")).cloned().collect();
    for (p, b) in &mut out {
        if p == manifest {
            let mut m = with(b, "/layers/1/channels", 0.into());
            m = with(&m, "/layers/1/height", side.into());
            m = with(&m, "/layers/1/width", side.into());
            for (s, bytes) in &shards {
                m = rehash(&m, s, bytes);
            }
            *b = m;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    write_files(tmp.path(), &out);
    let dir = tmp.path().to_path_buf();
    let opened = bounded("zero channels", move || FeatureCache::open(&dir).and_then(|c| c.layer("b").map(|_| ())));
    assert!(opened.is_err(), "a layer of 0 channels and 2^40 x 2^40 maps was accepted");
}
