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

// The harness (bounded runs, capped allocations, byte mutations, JSON edits): expgraph-testkit.
use expgraph_testkit::*;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

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
    // A map height the reader does not allocate by loads as it is (the graph holds no maps); an
    // input side that consumers would allocate by (input_size² vote cells) is refused.
    let dir = tmp.path().join("g");
    std::fs::write(dir.join(GRAPH_JSON), with(json, "/layers/1/info/height", (1u64 << 40).into())).unwrap();
    let d = dir.clone();
    let g = bounded("height 2^40", move || ExplanatoryGraph::load(&d)).expect("height 2^40");
    assert_eq!(g.layers[1].info.height, 1 << 40);
    std::fs::write(dir.join(GRAPH_JSON), with(json, "/input_size", (1u64 << 63).into())).unwrap();
    let d = dir.clone();
    let e = bounded("input_size 2^63", move || ExplanatoryGraph::load(&d)).unwrap_err().to_string();
    assert!(e.contains("input size"), "{e}");
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
