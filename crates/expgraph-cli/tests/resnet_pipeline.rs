//! A ResNet-50 end to end through the CLI on formula weights (`shared/models/resnet-golden/`'s
//! formula, so nothing is downloaded): `features dump` writes the stage maps the golden test
//! checks, and `expgraph run --backbone resnet50` goes extract → learn → infer → localize →
//! report on a few generated objects.

use expgraph_backbone::ResNetDepth;

mod common;
use common::{expgraph, safetensors_f32, safetensors_header as header, stderr, write_resnet_weights};

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn features_dump_writes_the_resnet50_stage_maps() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let weights = d.join("resnet50-formula.safetensors");
    write_resnet_weights(&weights, ResNetDepth::R50);
    let png = d.join("object.png");
    image::RgbImage::from_fn(224, 224, |x, y| image::Rgb([x as u8, (y * 3 / 2) as u8, ((x ^ y) * 2) as u8]))
        .save(&png)
        .unwrap();
    let out_file = d.join("out.safetensors");
    let out = expgraph()
        .args(["features", "dump", "--json", "--backbone", "resnet50", "--weights"])
        .arg(&weights)
        .args(["--preprocess", "torchvision", "--no-crop", "--layers", "layer2,layer3,layer4", "--out"])
        .arg(&out_file)
        .arg(&png)
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(v["backbone"], "resnet50");
    let h = header(&out_file);
    let mut names: Vec<&String> = h.keys().collect();
    names.sort();
    assert_eq!(names, ["layer2", "layer3", "layer4"]);
    for (name, shape) in [("layer2", [1, 512, 28, 28]), ("layer3", [1, 1024, 14, 14]), ("layer4", [1, 2048, 7, 7])] {
        assert_eq!(h[name]["dtype"], "F32", "{name}");
        assert_eq!(h[name]["shape"], serde_json::json!(shape), "{name}");
        // Post-ReLU stage outputs: finite, non-negative, and not all zero.
        let x = safetensors_f32(&out_file, name);
        assert_eq!(x.len(), shape.iter().product::<usize>());
        assert!(x.iter().all(|v| v.is_finite() && *v >= 0.0), "{name}: a negative or non-finite value");
        let positive = x.iter().filter(|v| **v > 0.0).count();
        assert!(positive > x.len() / 20, "{name}: only {positive} of {} values are positive", x.len());
    }
}

#[test]
fn run_learns_a_resnet50_graph_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let weights = d.join("resnet50-formula.safetensors");
    write_resnet_weights(&weights, ResNetDepth::R50);
    let work = d.join("run");
    let out = expgraph()
        .args(["run", "--json", "--backbone", "resnet50", "--weights"])
        .arg(&weights)
        .args(["--limit", "8", "--negatives-limit", "4", "--iterations", "2", "-o"])
        .arg(&work)
        .output()
        .unwrap();
    let v = json(&out);

    // The cache: the paper's three ResNet stages (pre-ReLU sums by default), true geometry.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.join("cache/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["backbone"], "resnet50");
    assert_eq!(manifest["preprocess"], "torchvision");

    // The graph: layer2/3/4 with K = 40, 20, 10 nodes per filter (densities 0.05/0.1/0.2 on maps
    // 28, 14, 7), every filter of the stage, strides 8/16/32 px.
    let g = expgraph_graph::ExplanatoryGraph::load(work.join("graph")).unwrap();
    assert_eq!(g.backbone, "resnet50");
    let layers: Vec<(&str, usize, usize, usize, f64)> = g
        .layers
        .iter()
        .map(|l| (l.info.name.as_str(), l.info.channels, l.info.height, l.nodes_per_filter, l.info.geometry.stride))
        .collect();
    assert_eq!(
        layers,
        [
            ("layer2.pre_relu", 512, 28, 40, 8.0),
            ("layer3.pre_relu", 1024, 14, 20, 16.0),
            ("layer4.pre_relu", 2048, 7, 10, 32.0)
        ]
    );
    for l in &g.layers {
        let nodes = l.info.channels * l.nodes_per_filter;
        assert_eq!((l.mu.len(), l.sigma.len(), l.parents.len()), (nodes, nodes, nodes), "{}", l.info.name);
        let size = l.info.height as f64;
        let (lo, hi) = l.mu.iter().flatten().fold((f64::MAX, f64::MIN), |(a, b), m| (a.min(*m), b.max(*m)));
        // μ is not clamped (nor in the reference): mean shifts may step a little past the border.
        assert!(lo > -0.25 * size && hi < 1.25 * size + 1.0, "{}: μ in [{lo}, {hi}], far off the map", l.info.name);
        assert!(l.sigma.iter().all(|s| s.is_finite() && *s > 0.0), "{}", l.info.name);
    }
    // Parents come from the next layer up; the top layer has none.
    assert!(g.layers[0].parents.iter().all(|p| !p.is_empty()));
    assert!(g.layers[2].parents.iter().all(|p| p.is_empty()));

    // Files in their formats, the record with localization of all three methods.
    for f in ["graph/graph.json", "graph/graph.safetensors", "record.json", "report/index.html"] {
        assert!(work.join(f).is_file(), "{f} missing");
    }
    let record = &v["result"];
    assert_eq!(record["images_learn"], 8);
    for method in ["graph", "raw_filter", "prior_mean"] {
        let m = record["localization"]["methods"][method]["mean_normalized_distance"].as_f64();
        assert!(m.is_some_and(|m| m.is_finite() && m > 0.0), "{method}: {m:?}");
    }
    assert!(record["stability"]["graph_nodes"].as_f64().is_some_and(f64::is_finite));
}
