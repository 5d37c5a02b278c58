//! Round-trip and error tests of the graph and activations formats.

use super::*;

fn info(name: &str, c: usize, hw: usize, stride: f64) -> LayerInfo {
    LayerInfo {
        name: name.into(),
        channels: c,
        height: hw,
        width: hw,
        geometry: TapGeometry { stride, first_centre: stride / 2.0 + 0.5, receptive_field: 100.0 },
    }
}

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

#[test]
fn graph_round_trips_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let g = sample_graph();
    g.save(dir.path()).unwrap();
    let back = ExplanatoryGraph::load(dir.path()).unwrap();
    assert_eq!(back, g);
    // Saving again overwrites atomically and gives identical bytes.
    let first = std::fs::read(dir.path().join(GRAPH_ARRAYS)).unwrap();
    back.save(dir.path()).unwrap();
    assert_eq!(std::fs::read(dir.path().join(GRAPH_ARRAYS)).unwrap(), first);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "no temp files left: {leftovers:?}");
}

#[test]
fn version_mismatch_and_corruption_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    sample_graph().save(dir.path()).unwrap();
    let json_path = dir.path().join(GRAPH_JSON);
    let text = std::fs::read_to_string(&json_path).unwrap();
    std::fs::write(&json_path, text.replace("\"format_version\": 1", "\"format_version\": 99")).unwrap();
    match ExplanatoryGraph::load(dir.path()) {
        Err(GraphError::Version { found: 99, supported: 1, .. }) => {}
        other => panic!("expected a version error, got {other:?}"),
    }
    std::fs::write(&json_path, text).unwrap();
    let arrays = dir.path().join(GRAPH_ARRAYS);
    let mut bytes = std::fs::read(&arrays).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&arrays, bytes).unwrap();
    let err = ExplanatoryGraph::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("graph.safetensors") && err.contains("hash"), "{err}");
    let missing = ExplanatoryGraph::load(dir.path().join("nope")).unwrap_err().to_string();
    assert!(missing.contains("graph.json"), "{missing}");
}

#[test]
fn invalid_graphs_are_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = sample_graph();
    g.layers[0].parents[0][0].node = 4;
    assert!(matches!(g.save(dir.path()), Err(GraphError::Invalid { .. })));
    let mut g = sample_graph();
    g.layers[1].sigma[0] = f64::NAN;
    assert!(matches!(g.save(dir.path()), Err(GraphError::Invalid { .. })));
    assert!(!dir.path().join(GRAPH_JSON).exists());
}

#[test]
fn activations_round_trip_with_pixel_positions() {
    let g = sample_graph();
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
    let acts = vec![make("a", false, 1.0), make("b", true, 2.0)];
    let dir = tempfile::tempdir().unwrap();
    save_activations(dir.path(), &g, &acts).unwrap();
    assert_eq!(load_activations(dir.path()).unwrap(), acts);
    // Pixel positions: conv4_3 (stride 8, first centre 4.5): w = 2 -> 12.5 px; flipped -> 225 - 12.5.
    let p = acts[1].position_pixels(&g.layers[0], 0, 0, 224);
    assert_eq!(p, [4.5, 212.5]);
    let mut wrong = acts.clone();
    wrong[0].layers[1].scores.pop();
    assert!(matches!(save_activations(dir.path(), &g, &wrong), Err(GraphError::Invalid { .. })));
}

#[test]
fn a_save_removes_the_temp_files_of_a_killed_save() {
    let dir = tempfile::tempdir().unwrap();
    let g = sample_graph();
    g.save(dir.path()).unwrap();
    // what a save killed between its two renames leaves: a temp file of each
    for name in [".graph.safetensors.Ab12Cd.tmp", ".graph.json.Xy98Zw.tmp"] {
        std::fs::write(dir.path().join(name), b"half").unwrap();
    }
    g.save(dir.path()).unwrap();
    let mut names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["graph.json", "graph.safetensors"]);
    assert_eq!(ExplanatoryGraph::load(dir.path()).unwrap(), g);
}
