//! Property-test harness shared by every crate's `tests/fuzz_inputs.rs` (issue 11): bounded
//! runs (each read on its own thread under a time limit), an allocator that refuses any single
//! request above [`MAX_ALLOC`] (install it in the test binary with
//! `#[global_allocator] static ALLOC: CappedAlloc = CappedAlloc;`), byte mutations (truncation,
//! bit flips, overwrites, huge little-endian integers) and JSON edits (values of the wrong type,
//! huge numbers, removed entries). 64 cases unless `PROPTEST_CASES` is set; a fixed seed unless
//! `PROPTEST_RNG_SEED` is set; `FUZZ_VERBOSE=1` prints each input before it is read.
//!
//! [`formula`] rebuilds torchvision-named weights from the hash formula of
//! `shared/models/resnet-golden/` (so tests never download weights).
//!
//! A dev-dependency only; it is not part of any library's surface.

pub mod formula;

use std::alloc::{GlobalAlloc, Layout, System};

pub use proptest::prelude::*;
pub use proptest::sample::Index;
pub use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
pub use serde_json::Value;
pub use std::time::Duration;

/// The largest single allocation allowed in these tests. The inputs are at most a few MB, so a
/// larger request was sized by a number in the file: the allocator refuses it and the test
/// binary aborts with "memory allocation of N bytes failed" (`try_reserve` gets an error).
pub const MAX_ALLOC: usize = 256 << 20;

pub struct CappedAlloc;

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

/// Longest one read may take: a read of these files takes well under a second, but CI machines
/// are small and tests run in parallel.
pub const TIME_LIMIT: Duration = Duration::from_secs(30);

/// Run `f` on its own thread: its panic is raised again here, and no answer within
/// [`TIME_LIMIT`] fails as a hang. With `FUZZ_VERBOSE` set, `what` is printed first (an
/// allocation failure aborts the process before proptest can report the input).
pub fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
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
pub fn config(cases: u32) -> Config {
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
pub fn check<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let mut runner = TestRunner::new(config(cases));
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

/// A byte position: anywhere in the file, or within its first `head` bytes (headers).
#[derive(Debug, Clone)]
pub struct Spot {
    pub head: bool,
    pub at: Index,
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
pub enum Mutation {
    /// Keep only a prefix.
    Truncate(Index),
    /// Flip these bits (position, bit).
    Flip(Vec<(Spot, u8)>),
    /// Overwrite these bytes.
    Overwrite(Vec<(Spot, u8)>),
    /// Write a little-endian integer of 1, 2, 4 or 8 bytes: a huge count, length or offset.
    Int(Spot, u64, usize),
}

pub fn spot() -> impl Strategy<Value = Spot> {
    (any::<bool>(), any::<Index>()).prop_map(|(head, at)| Spot { head, at })
}

/// Integers that break length fields: all ones, powers of two near the type limits, 10^12.
pub fn huge() -> impl Strategy<Value = u64> {
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

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        prop::collection::vec((spot(), 0u8..8), 1..8).prop_map(Mutation::Flip),
        prop::collection::vec((spot(), any::<u8>()), 1..8).prop_map(Mutation::Overwrite),
        (spot(), huge(), prop::sample::select(vec![1usize, 2, 4, 8])).prop_map(|(s, v, w)| Mutation::Int(s, v, w)),
    ]
}

/// `bytes` with `m` applied; positions within the first `head` bytes for `Spot { head: true }`.
pub fn apply(bytes: &[u8], m: &Mutation, head: usize) -> Vec<u8> {
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

// ---- JSON edits ----

/// One change to a JSON document.
#[derive(Debug, Clone)]
pub enum JsonEdit {
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
pub fn odd_value() -> impl Strategy<Value = Value> {
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
pub fn odd_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![0i64, -1, 1, 2, 1_000_000_000_000, i64::MAX, i64::MIN]).prop_map(Value::from),
        prop::sample::select(vec![u64::MAX, 1 << 60, 1 << 40, 1 << 32, u64::from(u32::MAX)]).prop_map(Value::from),
        prop::sample::select(vec![0.5, -0.0, 1e300, -1e300, 1e-300, 2.5e15]).prop_map(Value::from),
    ]
}

pub fn json_edit() -> impl Strategy<Value = JsonEdit> {
    prop_oneof![
        3 => (any::<Index>(), odd_value()).prop_map(|(i, v)| JsonEdit::Replace(i, v)),
        3 => (any::<Index>(), odd_number()).prop_map(|(i, v)| JsonEdit::Number(i, v)),
        1 => any::<Index>().prop_map(JsonEdit::Remove),
        2 => mutation().prop_map(JsonEdit::Bytes),
    ]
}

/// JSON pointers of every node of `v`, in pre-order (the root is `""`).
pub fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
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
pub fn edit_json(bytes: &[u8], edit: &JsonEdit) -> Vec<u8> {
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
