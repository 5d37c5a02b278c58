//! JSON export round trip and DOT validity (checked with Graphviz when installed).

use expgraph_report::testing::{synthetic_activations, synthetic_graph};
use expgraph_report::{graph_dot, write_dot, write_graph_json, DotParams, GraphExport, GRAPH_EXPORT_VERSION};
use std::process::Command;

#[test]
fn json_export_round_trips() {
    let graph = synthetic_graph(5, 3, 11).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("graph.json");
    write_graph_json(&graph, &path).unwrap();
    let export = GraphExport::read(&path).unwrap();
    assert_eq!(export.schema_version, GRAPH_EXPORT_VERSION);
    assert_eq!(export.layers[0].nodes.len(), 15);
    assert_eq!(export.layers[0].nodes[7].filter, 2);
    assert_eq!(export.layers[0].nodes[7].k, 1);
    let back = export.to_graph().unwrap();
    assert_eq!(back.layers.len(), graph.layers.len());
    for (a, b) in back.layers.iter().zip(&graph.layers) {
        assert_eq!(a.info, b.info);
        assert_eq!(a.parents.len(), b.parents.len());
        for (pa, pb) in a.parents.iter().flatten().zip(b.parents.iter().flatten()) {
            assert_eq!(pa.node, pb.node);
            assert!((pa.similarity - pb.similarity).abs() < 1e-6);
        }
        for (ma, mb) in a.mu.iter().zip(&b.mu) {
            assert!((ma[0] - mb[0]).abs() < 1e-12 && (ma[1] - mb[1]).abs() < 1e-12);
        }
        for (sa, sb) in a.sigma.iter().zip(&b.sigma) {
            assert!((sa - sb).abs() < 1e-12);
        }
    }
    // only the temp-file-free result is left in the folder
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn json_export_rejects_other_schemas_and_bad_graphs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.json");
    std::fs::write(&path, r#"{"schema":"other","schema_version":1,"backbone":"b","input_size":224,"layers":[]}"#)
        .unwrap();
    let err = GraphExport::read(&path).unwrap_err();
    assert!(err.to_string().contains("x.json"), "{err}");
    std::fs::write(&path, "{not json").unwrap();
    assert!(GraphExport::read(&path).is_err());
    let mut graph = synthetic_graph(2, 2, 3).unwrap();
    graph.layers[0].sigma[1] = f64::NAN;
    assert!(write_graph_json(&graph, &dir.path().join("bad.json")).is_err());
    assert!(!dir.path().join("bad.json").exists());
}

#[test]
fn dot_keeps_top_nodes_and_their_edges() {
    let graph = synthetic_graph(6, 4, 21).unwrap();
    let acts = synthetic_activations(&graph, 5, 22);
    let params = DotParams { nodes_per_layer: 5, ..Default::default() };
    for dot in [graph_dot(&graph, Some(&acts), &params).unwrap(), graph_dot(&graph, None, &params).unwrap()] {
        let nodes = dot.lines().filter(|l| l.contains("[label=") && !l.contains("->")).count();
        assert_eq!(nodes, 10);
        for edge in dot.lines().filter(|l| l.contains("->")) {
            let (from, to) = edge.trim().split_once(" -> ").unwrap();
            let to = to.split_whitespace().next().unwrap();
            assert!(dot.contains(&format!("    {from} [label=")), "edge source {from} is declared");
            assert!(dot.contains(&format!("    {to} [label=")), "edge target {to} is declared");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("graph.dot");
    write_dot(&graph, Some(&acts), &params, &path).unwrap();
    if Command::new("dot").arg("-V").output().is_err() {
        eprintln!("skipping the Graphviz check: `dot` is not installed (apt-get install graphviz)");
        return;
    }
    let out = Command::new("dot").arg("-Tsvg").arg(&path).output().unwrap();
    assert!(out.status.success(), "dot failed: {}", String::from_utf8_lossy(&out.stderr));
    let svg = String::from_utf8_lossy(&out.stdout);
    assert!(svg.contains("<svg") && svg.contains("conv5_2"));
}
