//! Property tests of the boxes-file reader on mutated inputs (issue 11): `read_boxes` on a valid
//! boxes JSON with values of the wrong type, huge numbers, removed entries, flipped bits and cut
//! text, then `objects_from_dir` on what it returned.
//!
//! Every read must end in an error naming the file or in exactly the boxes the text holds: never
//! a panic, never a hang (each read runs on its own thread under a time limit), never an
//! allocation sized by a number in the file (a global allocator refuses any single request
//! above [`MAX_ALLOC`]). 64 cases unless `PROPTEST_CASES` is set; fixed seed unless
//! `PROPTEST_RNG_SEED` is set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use expgraph_features::{objects_from_dir, read_boxes};
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

// ---- JSON edits (the same in every crate's tests/fuzz_inputs.rs that reads JSON) ----

use serde_json::Value;

/// One change to a JSON document.
#[derive(Debug, Clone)]
enum JsonEdit {
    /// Replace the node at this pre-order position with a value, often of another type.
    Replace(Index, Value),
    /// Replace the number at this position among the numbers with a huge or odd number.
    Number(Index, Value),
    /// Remove the node at this pre-order position from its object or array.
    Remove(Index),
    /// Change the text itself.
    Bytes(Mutation),
}

/// Values of every JSON type, with counts and paths that break readers.
fn odd_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        odd_number(),
        prop::sample::select(vec![
            "",
            "x",
            "../../x",
            "/dev/zero",
            "/",
            ".",
            "graph.json",
            "manifest.json",
            "-1",
            "f16"
        ])
        .prop_map(Value::from),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!([1_000_000_000_000u64, 2])),
        Just(serde_json::json!({ "a": null })),
    ]
}

/// Numbers that break counts, sizes and indices.
fn odd_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![0i64, -1, 1, 2, 1_000_000_000_000, i64::MAX, i64::MIN]).prop_map(Value::from),
        prop::sample::select(vec![u64::MAX, 1 << 60, 1 << 40, 1 << 32, u64::from(u32::MAX)]).prop_map(Value::from),
        prop::sample::select(vec![0.5, -0.0, 1e300, -1e300, 1e-300, 2.5e15]).prop_map(Value::from),
    ]
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    prop_oneof![
        3 => (any::<Index>(), odd_value()).prop_map(|(i, v)| JsonEdit::Replace(i, v)),
        3 => (any::<Index>(), odd_number()).prop_map(|(i, v)| JsonEdit::Number(i, v)),
        1 => any::<Index>().prop_map(JsonEdit::Remove),
        2 => mutation().prop_map(JsonEdit::Bytes),
    ]
}

/// JSON pointers of every node of `v`, in pre-order (the root is `""`).
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Array(items) => items.iter().enumerate().for_each(|(i, x)| pointers(x, format!("{at}/{i}"), out)),
        Value::Object(map) => {
            for (k, x) in map {
                pointers(x, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        _ => {}
    }
}

/// `bytes` (a JSON document) with `edit` applied.
fn edit_json(bytes: &[u8], edit: &JsonEdit) -> Vec<u8> {
    if let JsonEdit::Bytes(m) = edit {
        return apply(bytes, m, 256);
    }
    let mut root: Value = serde_json::from_slice(bytes).expect("the original is JSON");
    let mut all = Vec::new();
    pointers(&root, String::new(), &mut all);
    match edit {
        JsonEdit::Replace(i, v) => *root.pointer_mut(&all[i.index(all.len())]).unwrap() = v.clone(),
        JsonEdit::Number(i, v) => {
            let numbers: Vec<&String> = all.iter().filter(|p| root.pointer(p).is_some_and(Value::is_number)).collect();
            if !numbers.is_empty() {
                let p = numbers[i.index(numbers.len())].clone();
                *root.pointer_mut(&p).unwrap() = v.clone();
            }
        }
        JsonEdit::Remove(i) => {
            let p = &all[i.index(all.len())];
            if let Some(cut) = p.rfind('/') {
                let key = p[cut + 1..].replace("~1", "/").replace("~0", "~");
                match root.pointer_mut(&p[..cut]).unwrap() {
                    Value::Object(map) => {
                        map.remove(&key);
                    }
                    Value::Array(items) => {
                        items.remove(key.parse::<usize>().unwrap());
                    }
                    _ => unreachable!(),
                }
            }
        }
        JsonEdit::Bytes(_) => unreachable!(),
    }
    serde_json::to_vec_pretty(&root).unwrap()
}

// ---- boxes JSON ----

const BOXES: &str =
    r#"{ "0001.jpg": [12, 30, 200, 180], "0002.png": [0, 0, 640, 480], "0003.jpeg": [1.5, 2.25, 3.5, 4] }"#;

/// A folder with three (fake) images and `boxes.json`.
fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["0001.jpg", "0002.png", "0003.jpeg"] {
        std::fs::write(dir.path().join(f), b"not decoded here").unwrap();
    }
    std::fs::write(dir.path().join("boxes.json"), BOXES).unwrap();
    dir
}

/// The boxes a JSON text holds, read without `read_boxes`: `None` when it is not an object of
/// `[x0, y0, x1, y1]` number arrays.
fn oracle(bytes: &[u8]) -> Option<BTreeMap<String, [f64; 4]>> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    v.as_object()?
        .iter()
        .map(|(k, b)| {
            let b = b.as_array().filter(|b| b.len() == 4)?;
            let n: Vec<f64> = b.iter().map(Value::as_f64).collect::<Option<_>>()?;
            Some((k.clone(), [n[0], n[1], n[2], n[3]]))
        })
        .collect()
}

/// Whether a boxes-file key names a file inside the images folder (no absolute path, no `..`).
fn inside(key: &str) -> bool {
    Path::new(key).components().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir))
}

/// Read `bytes` as the boxes file of `dir`; check the result against [`oracle`].
fn read_mutated(dir: &Path, bytes: &[u8]) -> Result<(), TestCaseError> {
    let path = dir.join("boxes.json");
    std::fs::write(&path, bytes).unwrap();
    let p = path.clone();
    match bounded("read_boxes", move || read_boxes(&p)) {
        Ok(boxes) => {
            let expected = oracle(bytes);
            prop_assert_eq!(Some(&boxes), expected.as_ref(), "read_boxes accepted a text the oracle reads otherwise");
            prop_assert!(boxes.keys().all(|k| inside(k)), "a key leaves the images folder: {:?}", boxes.keys());
            let (d, b) = (dir.to_path_buf(), boxes.clone());
            match bounded("objects_from_dir", move || objects_from_dir(&d, Some(&b), None)) {
                Ok(objects) => {
                    prop_assert_eq!(objects.len(), boxes.len());
                    for o in &objects {
                        prop_assert_eq!(Some(boxes[&o.id]), o.bbox);
                        prop_assert!(o.path.starts_with(dir), "{} is outside the folder", o.path.display());
                    }
                }
                Err(e) => prop_assert!(e.to_string().contains(&dir.display().to_string()), "{e}"),
            }
        }
        Err(e) => prop_assert!(e.to_string().contains("boxes.json"), "error does not name the file: {e}"),
    }
    Ok(())
}

#[test]
fn boxes_json_survives_mutation() {
    let dir = folder();
    check(64, json_edit(), |edit| read_mutated(dir.path(), &edit_json(BOXES.as_bytes(), &edit)));
}

/// Hand-written cases: huge and out-of-range numbers, deep nesting, wrong types, a huge key.
#[test]
fn odd_boxes_files() {
    let dir = folder();
    let deep = "[".repeat(1 << 20);
    let long_key = format!("{{\"{}\": [0, 0, 1, 1]}}", "a".repeat(1 << 20));
    for text in [
        r#"{"0001.jpg": [1e400, 0, 1, 1]}"#,
        r#"{"0001.jpg": [1e300, -1e300, 18446744073709551615, 1e-320]}"#,
        r#"{"0001.jpg": [0, 0, 1, 1, 1]}"#,
        r#"{"0001.jpg": {"x0": 0}}"#,
        r#"{"0001.jpg": null}"#,
        r#"[[0, 0, 1, 1]]"#,
        r#"{"0001.jpg": [0, 0, 1, 1], "0001.jpg": [2, 2, 3, 3]}"#,
        r#"{"0001.jpg": ["0", 0, 1, 1]}"#,
        "",
        "\u{feff}{}",
        &deep,
        &long_key,
    ] {
        read_mutated(dir.path(), text.as_bytes()).unwrap_or_else(|e| panic!("{:.80}: {e}", text));
    }
}

/// Regression: a key with an absolute path or `..` made `objects_from_dir` take a file from
/// outside the images folder (`dir.join("/etc/x.jpg")` is `/etc/x.jpg`); `read_boxes` now
/// refuses such keys, naming the file and the key.
#[test]
fn keys_leaving_the_images_folder_are_errors() {
    let dir = folder();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    std::fs::write(images.join("a.jpg"), b"x").unwrap();
    let outside: PathBuf = dir.path().join("0001.jpg");
    for key in ["../0001.jpg".to_string(), outside.display().to_string(), "sub/../../0001.jpg".to_string()] {
        let path = images.join("boxes.json");
        std::fs::write(&path, serde_json::json!({ key.clone(): [0, 0, 1, 1] }).to_string()).unwrap();
        let e = read_boxes(&path).expect_err(&key).to_string();
        assert!(e.contains("boxes.json") && e.contains(&key), "{key}: {e}");
    }
}
