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
use proptest::prelude::*;

// ---- harness (the same in every crate's tests/fuzz_inputs.rs) ----

use std::alloc::{GlobalAlloc, Layout, System};
use std::time::Duration;

use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

/// The largest single allocation allowed in these tests. The inputs are at most a few MB, so a
/// larger request was sized by a number in the file: the allocator refuses it and the test
/// binary aborts with "memory allocation of N bytes failed" (`try_reserve` gets an error).
const MAX_ALLOC: usize = 256 << 20;

struct CappedAlloc;

// SAFETY: forwards to `System`; refusing a request (null) is allowed by `GlobalAlloc`.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOC {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller keeps `GlobalAlloc::alloc`'s contract, which is `System`'s.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOC {
            return std::ptr::null_mut();
        }
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOC {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

/// Longest one read may take: a read of these files takes well under a second, but CI machines
/// are small and tests run in parallel.
const TIME_LIMIT: Duration = Duration::from_secs(30);

/// Run `f` on its own thread: its panic is raised again here, and no answer within
/// [`TIME_LIMIT`] fails as a hang. With `FUZZ_VERBOSE` set, `what` is printed first (an
/// allocation failure aborts the process before proptest can report the input).
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    if std::env::var_os("FUZZ_VERBOSE").is_some() {
        eprintln!("fuzz: {what}");
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(TIME_LIMIT) {
        Ok(v) => {
            let _ = handle.join();
            v
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("{what}: no answer after {TIME_LIMIT:?} (a hang?)"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("{what}: the reader thread ended without an answer"),
        },
    }
}

/// `cases` cases unless `PROPTEST_CASES` is set; a fixed seed unless `PROPTEST_RNG_SEED` is set
/// (reproducible CI runs); no regression files written into the source tree.
fn config(cases: u32) -> Config {
    let mut c = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(0x11_f022);
    }
    c.failure_persistence = None;
    c
}

/// Run a property; a failure panics with proptest's report (the minimal failing input).
fn check<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let mut runner = TestRunner::new(config(cases));
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

/// A byte position: anywhere in the file, or within its first `head` bytes (headers).
#[derive(Debug, Clone)]
struct Spot {
    head: bool,
    at: Index,
}

impl Spot {
    fn pos(&self, len: usize, head: usize) -> usize {
        if self.head {
            self.at.index(len.min(head))
        } else {
            self.at.index(len)
        }
    }
}

/// One change to a file's bytes.
#[derive(Debug, Clone)]
enum Mutation {
    /// Keep only a prefix.
    Truncate(Index),
    /// Flip these bits (position, bit).
    Flip(Vec<(Spot, u8)>),
    /// Overwrite these bytes.
    Overwrite(Vec<(Spot, u8)>),
    /// Write a little-endian integer of 1, 2, 4 or 8 bytes: a huge count, length or offset.
    Int(Spot, u64, usize),
}

fn spot() -> impl Strategy<Value = Spot> {
    (any::<bool>(), any::<Index>()).prop_map(|(head, at)| Spot { head, at })
}

/// Integers that break length fields: all ones, powers of two near the type limits, 10^12.
fn huge() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => prop::sample::select(vec![
            u64::MAX,
            1 << 60,
            1 << 40,
            1 << 32,
            u64::from(u32::MAX),
            1 << 31,
            i64::MAX as u64,
            1_000_000_000_000,
            0,
            1,
        ]),
        1 => any::<u64>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        prop::collection::vec((spot(), 0u8..8), 1..8).prop_map(Mutation::Flip),
        prop::collection::vec((spot(), any::<u8>()), 1..8).prop_map(Mutation::Overwrite),
        (spot(), huge(), prop::sample::select(vec![1usize, 2, 4, 8])).prop_map(|(s, v, w)| Mutation::Int(s, v, w)),
    ]
}

/// `bytes` with `m` applied; positions within the first `head` bytes for `Spot { head: true }`.
fn apply(bytes: &[u8], m: &Mutation, head: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.is_empty() {
        return out;
    }
    let len = out.len();
    match m {
        Mutation::Truncate(i) => out.truncate(i.index(len)),
        Mutation::Flip(bits) => bits.iter().for_each(|(s, b)| out[s.pos(len, head)] ^= 1 << b),
        Mutation::Overwrite(bytes) => bytes.iter().for_each(|(s, b)| out[s.pos(len, head)] = *b),
        Mutation::Int(s, v, w) => {
            let p = s.pos(len, head);
            let n = (*w).min(len - p);
            out[p..p + n].copy_from_slice(&v.to_le_bytes()[..n]);
        }
    }
    out
}

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
