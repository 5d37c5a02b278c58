//! Property tests of the graph and activations readers on mutated inputs (issue 11):
//! `ExplanatoryGraph::load` and `load_activations` on a small valid graph folder whose JSON gets
//! values of the wrong type, huge counts and removed entries, and whose safetensors file gets
//! flipped bits, overwritten bytes, huge integers in its header and cuts (with the content hash
//! in the JSON updated, so the damage reaches the parser, or left stale).
//!
//! Every load must end in an error naming a file or in a graph that passes its own checks and
//! saves and loads back the same: never a panic, never a hang (each load runs on its own thread
//! under a time limit), never an allocation sized by a number in a file (a global allocator
//! refuses any single request above [`MAX_ALLOC`]). 64 cases per property unless
//! `PROPTEST_CASES` is set; fixed seed unless `PROPTEST_RNG_SEED` is set.

use std::path::Path;

use expgraph_graph::{
    load_activations, save_activations, ExplanatoryGraph, GraphLayer, ImageActivations, LayerActivations, LayerInfo,
    Parent, TapGeometry, ACTIVATIONS_ARRAYS, ACTIVATIONS_JSON, GRAPH_ARRAYS, GRAPH_JSON,
};
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

// ---- graph and activations folders ----

fn info(name: &str, c: usize, hw: usize, stride: f64) -> LayerInfo {
    LayerInfo {
        name: name.into(),
        channels: c,
        height: hw,
        width: hw,
        geometry: TapGeometry { stride, first_centre: stride / 2.0 + 0.5, receptive_field: 100.0 },
    }
}

/// Two layers, parents in the lower one (as the crate's own round-trip tests).
fn sample_graph() -> ExplanatoryGraph {
    let top = GraphLayer {
        info: info("conv5_3", 2, 14, 16.0),
        nodes_per_filter: 2,
        mu: vec![[1.5, 2.0], [3.25, 4.0], [7.0, 7.0], [10.0, 1.0]],
        sigma: vec![2.1, 1.0, 0.5, 3.0],
        mean_position: vec![[1.0, 2.0], [3.0, 4.5], [7.5, 7.0], [9.0, 1.0]],
        parents: vec![Vec::new(); 4],
        score_norm: 0.25,
    };
    let low = GraphLayer {
        info: info("conv4_3", 1, 28, 8.0),
        nodes_per_filter: 3,
        mu: vec![[1.0, 1.0], [2.0, 2.0], [27.5, 3.0]],
        sigma: vec![0.5, 0.6, 0.7],
        mean_position: vec![[1.0, 1.0], [2.0, 2.0], [27.0, 3.0]],
        parents: vec![
            vec![Parent { node: 3, similarity: 2.5 }, Parent { node: 0, similarity: 1.0 }],
            vec![Parent { node: 1, similarity: 0.5 }],
            vec![],
        ],
        score_norm: 1.5,
    };
    ExplanatoryGraph {
        backbone: "vgg16".into(),
        input_size: 224,
        layers: vec![low, top],
        params: serde_json::json!({"iterations": 20}),
    }
}

fn sample_activations(g: &ExplanatoryGraph) -> Vec<ImageActivations> {
    let make = |id: &str, flipped: bool, s: f32| ImageActivations {
        image_id: id.into(),
        flipped,
        layers: g
            .layers
            .iter()
            .map(|l| LayerActivations {
                layer: l.info.name.clone(),
                positions: (0..l.num_nodes()).map(|v| [v as f32 + 1.0, 2.0]).collect(),
                scores: (0..l.num_nodes()).map(|v| v as f32 * s).collect(),
            })
            .collect(),
    };
    vec![make("a", false, 1.0), make("b", true, 2.0), make("c", false, 0.5)]
}

/// The saved folders: (graph, activations) bytes of (JSON, arrays).
struct Saved {
    graph: (Vec<u8>, Vec<u8>),
    acts: (Vec<u8>, Vec<u8>),
}

fn saved() -> Saved {
    let tmp = tempfile::tempdir().unwrap();
    let g = sample_graph();
    g.save(tmp.path().join("g")).unwrap();
    save_activations(tmp.path().join("a"), &g, &sample_activations(&g)).unwrap();
    let read = |d: &str, f: &str| std::fs::read(tmp.path().join(d).join(f)).unwrap();
    Saved {
        graph: (read("g", GRAPH_JSON), read("g", GRAPH_ARRAYS)),
        acts: (read("a", ACTIVATIONS_JSON), read("a", ACTIVATIONS_ARRAYS)),
    }
}

/// `json` with the BLAKE3 hash of `arrays` written where the format keeps it.
fn rehash(json: &[u8], arrays: &[u8]) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<Value>(json) else { return json.to_vec() };
    let hash = Value::from(blake3::hash(arrays).to_hex().to_string());
    if let Some(h) = v.pointer_mut("/arrays/blake3") {
        *h = hash; // graph.json
    } else if let Some(h) = v.pointer_mut("/blake3") {
        *h = hash; // activations.json
    }
    serde_json::to_vec_pretty(&v).unwrap()
}

/// What to damage: the JSON, or the arrays (with the hash in the JSON updated or not).
#[derive(Debug, Clone)]
enum Damage {
    Json(JsonEdit),
    Arrays(Mutation, bool),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        json_edit().prop_map(Damage::Json),
        (mutation(), prop::sample::select(vec![true, true, true, false])).prop_map(|(m, r)| Damage::Arrays(m, r)),
    ]
}

/// Write `(json, arrays)` damaged by `d` into `dir` under the two file names.
fn write_damaged(dir: &Path, names: (&str, &str), files: &(Vec<u8>, Vec<u8>), d: &Damage) {
    let (json, arrays) = match d {
        Damage::Json(e) => (edit_json(&files.0, e), files.1.clone()),
        Damage::Arrays(m, rehashed) => {
            // the safetensors header (8-byte length + JSON) is the first few hundred bytes
            let arrays = apply(&files.1, m, 512);
            let json = if *rehashed { rehash(&files.0, &arrays) } else { files.0.clone() };
            (json, arrays)
        }
    };
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(names.0), json).unwrap();
    std::fs::write(dir.join(names.1), arrays).unwrap();
}

/// Load the graph in `dir`; a loaded graph must validate and save + load back the same.
fn check_graph(dir: &Path, what: &str) -> Result<(), TestCaseError> {
    let d = dir.to_path_buf();
    match bounded(&format!("load {}: {what}", dir.display()), move || ExplanatoryGraph::load(&d)) {
        Ok(g) => {
            g.validate().map_err(|e| TestCaseError::fail(format!("loaded graph does not validate: {e}")))?;
            let again = tempfile::tempdir().unwrap();
            g.save(again.path()).map_err(|e| TestCaseError::fail(format!("loaded graph does not save: {e}")))?;
            let back = ExplanatoryGraph::load(again.path()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            // compared as text: a NaN parent similarity is kept (the format allows it) and NaN != NaN
            prop_assert_eq!(format!("{back:?}"), format!("{g:?}"));
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(msg.contains(&dir.display().to_string()), "error does not name the folder: {msg}");
        }
    }
    Ok(())
}

/// Load the activations in `dir`; loaded activations must be consistent across images.
fn check_activations(dir: &Path, what: &str) -> Result<(), TestCaseError> {
    let d = dir.to_path_buf();
    match bounded(&format!("load_activations {}: {what}", dir.display()), move || load_activations(&d)) {
        Ok(acts) => {
            if let Some(first) = acts.first() {
                for a in &acts {
                    prop_assert_eq!(a.layers.len(), first.layers.len());
                    for (l, f) in a.layers.iter().zip(&first.layers) {
                        prop_assert_eq!(&l.layer, &f.layer);
                        prop_assert_eq!(l.positions.len(), l.scores.len());
                        prop_assert_eq!(l.positions.len(), f.positions.len());
                    }
                }
            }
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(msg.contains(&dir.display().to_string()), "error does not name the folder: {msg}");
        }
    }
    Ok(())
}

#[test]
fn graph_folder_survives_mutation() {
    let s = saved();
    let tmp = tempfile::tempdir().unwrap();
    check(64, damage(), |d| {
        let dir = tmp.path().join("g");
        let _ = std::fs::remove_dir_all(&dir);
        write_damaged(&dir, (GRAPH_JSON, GRAPH_ARRAYS), &s.graph, &d);
        check_graph(&dir, &format!("{d:?}"))
    });
}

#[test]
fn activations_folder_survives_mutation() {
    let s = saved();
    let tmp = tempfile::tempdir().unwrap();
    check(64, damage(), |d| {
        let dir = tmp.path().join("a");
        let _ = std::fs::remove_dir_all(&dir);
        write_damaged(&dir, (ACTIVATIONS_JSON, ACTIVATIONS_ARRAYS), &s.acts, &d);
        check_activations(&dir, &format!("{d:?}"))
    });
}

/// `json` with the value at `pointer` replaced.
fn with(json: &[u8], pointer: &str, v: Value) -> Vec<u8> {
    let mut doc: Value = serde_json::from_slice(json).unwrap();
    *doc.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer}")) = v;
    serde_json::to_vec_pretty(&doc).unwrap()
}

/// Regressions, and the huge counts of the issue: each is a quick error naming the folder.
/// * `num_nodes` 10^12 on a layer without parents allocated 10^12 empty parent lists before
///   any check (found by `graph_folder_survives_mutation`);
/// * `channels × nodes_per_filter` wrapping around `usize` passed the node-count check;
/// * `arrays.file` = `/dev/zero` read without end (an absolute path or `..` also read files
///   outside the folder).
#[test]
fn huge_counts_and_foreign_array_files_are_errors() {
    let s = saved();
    let tmp = tempfile::tempdir().unwrap();
    let (json, arrays) = &s.graph;
    let huge = 1_000_000_000_000u64;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("top num_nodes 10^12", with(json, "/layers/1/num_nodes", huge.into())),
        ("low num_nodes 10^12", with(json, "/layers/0/num_nodes", huge.into())),
        ("max_parents 10^12", with(json, "/layers/0/max_parents", huge.into())),
        ("top max_parents 2^60", with(json, "/layers/1/max_parents", (1u64 << 60).into())),
        ("channels 2^62", with(json, "/layers/1/info/channels", (1u64 << 62).into())),
        (
            "channels × nodes_per_filter wraps to 4",
            with(
                &with(json, "/layers/1/info/channels", ((1u64 << 63) + 2).into()),
                "/layers/1/nodes_per_filter",
                2.into(),
            ),
        ),
        ("arrays.file /dev/zero", with(json, "/arrays/file", "/dev/zero".into())),
        ("arrays.file ..", with(json, "/arrays/file", "../g/graph.safetensors".into())),
    ];
    for (what, bad) in cases {
        let dir = tmp.path().join("g");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(GRAPH_JSON), &bad).unwrap();
        std::fs::write(dir.join(GRAPH_ARRAYS), arrays).unwrap();
        let d = dir.clone();
        let start = std::time::Instant::now();
        let e = bounded(what, move || ExplanatoryGraph::load(&d)).expect_err(what).to_string();
        assert!(e.contains(&dir.display().to_string()), "{what}: {e}");
        assert!(start.elapsed().as_secs() < 5, "{what}: {:?}", start.elapsed());
    }
    // Sizes the reader does not allocate by: loaded as they are (the graph holds no maps).
    for (what, bad) in [
        ("height 2^40", with(json, "/layers/1/info/height", (1u64 << 40).into())),
        ("input_size 2^63", with(json, "/input_size", (1u64 << 63).into())),
    ] {
        let dir = tmp.path().join("g");
        std::fs::write(dir.join(GRAPH_JSON), &bad).unwrap();
        let d = dir.clone();
        let g = bounded(what, move || ExplanatoryGraph::load(&d)).expect(what);
        assert!(g.input_size == 1 << 63 || g.layers[1].info.height == 1 << 40, "{what}");
    }
    let (json, arrays) = &s.acts;
    for (what, bad) in [
        ("arrays /dev/zero", with(json, "/arrays", "/dev/zero".into())),
        ("layer num_nodes 10^12", with(json, "/layers/0/num_nodes", huge.into())),
        ("image_ids emptied", with(json, "/image_ids", serde_json::json!([]))),
    ] {
        let dir = tmp.path().join("a");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(ACTIVATIONS_JSON), &bad).unwrap();
        std::fs::write(dir.join(ACTIVATIONS_ARRAYS), arrays).unwrap();
        let d = dir.clone();
        let e = bounded(what, move || load_activations(&d)).expect_err(what).to_string();
        assert!(e.contains(&dir.display().to_string()), "{what}: {e}");
    }
}

/// A safetensors header that claims a 2^60-byte tensor, or a header length of 2^60, with the
/// hash in graph.json matching: a quick error naming the arrays file.
#[test]
fn safetensors_claiming_huge_sizes_are_errors() {
    let s = saved();
    let tmp = tempfile::tempdir().unwrap();
    let header = |shape: &str, end: u64| {
        let h = format!(r#"{{"conv4_3.mu":{{"dtype":"F64","shape":{shape},"data_offsets":[0,{end}]}}}}"#);
        let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(h.as_bytes());
        bytes.extend_from_slice(&[0u8; 48]);
        bytes
    };
    let mut huge_len = s.graph.1.clone();
    huge_len[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    for (what, arrays) in [
        ("tensor of 2^60 bytes", header("[134217728,1073741824]", 1 << 60)),
        ("shape product overflows", header("[4294967296,4294967296,2]", 48)),
        ("header length 2^60", huge_len),
    ] {
        let dir = tmp.path().join("g");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(GRAPH_JSON), rehash(&s.graph.0, &arrays)).unwrap();
        std::fs::write(dir.join(GRAPH_ARRAYS), &arrays).unwrap();
        let d = dir.clone();
        let e = bounded(what, move || ExplanatoryGraph::load(&d)).expect_err(what).to_string();
        assert!(e.contains("graph.safetensors"), "{what}: {e}");
    }
}
