//! Property tests of the safetensors weight loader on mutated inputs (issue 11):
//! `Vgg16::load_file` on a small file (the first layer right, the second of a fake shape: an
//! error is the correct result) and on a full random VGG-16 file, cut short, with flipped bits,
//! overwritten bytes and huge integers in the header; and hand-written headers that claim a
//! 2^60-byte tensor, a 2^60-byte header or a shape whose size overflows.
//!
//! Every load must end in an error naming the file or in a model of the file's weights: never a
//! panic, never a hang (each load runs on its own thread under a time limit), never an
//! allocation sized by a number in the file (a global allocator refuses any single request
//! above [`MAX_ALLOC`]). 64 cases (8 for the 58 MB full file) unless `PROPTEST_CASES` is set;
//! fixed seed unless `PROPTEST_RNG_SEED` is set.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use expgraph_backbone::{Backbone, Vgg16};

// The harness (bounded runs, capped allocations, byte mutations, JSON edits): expgraph-testkit.
use expgraph_testkit::*;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

// ---- safetensors weight files ----

fn save(path: &Path, tensors: Vec<(String, Tensor)>) {
    let map: HashMap<String, Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

/// A small file: `features.0` of the right shapes, `features.2` of a fake one, a classifier
/// tensor of another dtype.
fn small_file(path: &Path) {
    let t = |shape: &[usize], dtype| Tensor::ones(shape, dtype, &Device::Cpu).unwrap();
    save(
        path,
        vec![
            ("features.0.weight".into(), t(&[64, 3, 3, 3], DType::F32)),
            ("features.0.bias".into(), t(&[64], DType::F32)),
            ("features.2.weight".into(), t(&[2, 2, 3, 3], DType::F32)),
            ("features.2.bias".into(), t(&[2], DType::F32)),
            ("classifier.0.weight".into(), t(&[4, 4], DType::F16)),
        ],
    );
}

/// Load `path`: a model must have the file's digest and VGG-16's 13 taps; an error must name
/// the file.
fn load(path: PathBuf, what: &str) -> Result<(), TestCaseError> {
    let p = path.clone();
    match bounded(what, move || Vgg16::load_file(&p, &Device::Cpu).map_err(|e| e.to_string())) {
        Ok(model) => {
            let digest = blake3::hash(&std::fs::read(&path).unwrap()).to_hex().to_string();
            prop_assert_eq!(model.weights_digest(), digest.as_str());
            prop_assert_eq!(model.taps().len(), 13);
        }
        Err(e) => {
            let msg = e;
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            prop_assert!(msg.contains(&name), "error does not name the file: {msg}");
        }
    }
    Ok(())
}

/// Size of a safetensors file's header (8-byte length + JSON).
fn header_len(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

#[test]
fn small_weight_file_survives_mutation() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("small.safetensors");
    small_file(&good);
    let original = std::fs::read(&good).unwrap();
    let head = header_len(&original);
    let path = tmp.path().join("mutated.safetensors");
    check(64, mutation(), |m| {
        std::fs::write(&path, apply(&original, &m, head)).unwrap();
        load(path.clone(), &format!("{m:?}"))
    });
}

/// The full VGG-16 (random weights, 58 MB): few cases, each writes and reads the whole file.
#[test]
fn full_weight_file_survives_mutation() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("vgg16.safetensors");
    save(&good, Vgg16::random(1, 11, &Device::Cpu).unwrap().named_weights());
    let original = std::fs::read(&good).unwrap();
    let head = header_len(&original);
    load(good, "the original").unwrap();
    let path = tmp.path().join("mutated.safetensors");
    check(8, mutation(), |m| {
        std::fs::write(&path, apply(&original, &m, head)).unwrap();
        load(path.clone(), &format!("{m:?}"))
    });
}

/// A file of one tensor described by `header` (JSON) followed by `data` bytes.
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// Headers that claim huge sizes: a quick error naming the file, no allocation of the claim.
#[test]
fn headers_claiming_huge_sizes_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let w = |shape: &str, end: u64| {
        format!(r#"{{"features.0.weight":{{"dtype":"F32","shape":{shape},"data_offsets":[0,{end}]}}}}"#)
    };
    let good = tmp.path().join("small.safetensors");
    small_file(&good);
    let mut header_2_60 = std::fs::read(&good).unwrap();
    header_2_60[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a 2^60-byte tensor", raw_file(&w("[268435456,1073741824,2,2]", 1 << 60), &[0; 64])),
        ("the right shape, 2^60 bytes", raw_file(&w("[64,3,3,3]", 1 << 60), &[0; 64])),
        ("shape size overflows", raw_file(&w("[4294967296,4294967296,16,1]", 64), &[0; 64])),
        ("offsets past the end", raw_file(&w("[64,3,3,3]", 6912), &[0; 64])),
        ("a 2^60-byte header", header_2_60),
        ("header length u64::MAX", u64::MAX.to_le_bytes().to_vec()),
        ("10^5 tensors", {
            let entries: Vec<String> =
                (0..100_000).map(|i| format!(r#""t{i}":{{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}"#)).collect();
            raw_file(&format!("{{{}}}", entries.join(",")), &[])
        }),
    ];
    for (what, bytes) in cases {
        let path = tmp.path().join("huge.safetensors");
        std::fs::write(&path, bytes).unwrap();
        let start = std::time::Instant::now();
        let p = path.clone();
        let Err(e) = bounded(what, move || Vgg16::load_file(&p, &Device::Cpu).map_err(|e| e.to_string())) else {
            panic!("{what}: loaded")
        };
        assert!(e.contains("huge.safetensors"), "{what}: {e}");
        assert!(start.elapsed().as_secs() < 5, "{what}: {:?}", start.elapsed());
    }
}
