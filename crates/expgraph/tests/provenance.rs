//! The provenance chain refuses files of different runs: a graph on a cache of other weights,
//! activations of another graph or another cache (each passed silently before).

mod common;

use std::path::Path;

use expgraph::cache::{FeatureCache, LayerInfo, View};
use expgraph::geometry::TapGeometry;
use expgraph::graph::{
    graph_digest, save_activations, ExplanatoryGraph, ImageActivations, LayerActivations, Provenance,
};
use expgraph::provenance::{check_activations, check_graph_fits_cache};

fn info() -> LayerInfo {
    LayerInfo {
        name: "conv5_3".into(),
        channels: 2,
        height: 14,
        width: 14,
        geometry: TapGeometry { stride: 16.0, first_centre: 8.0, receptive_field: 196.0 },
    }
}

/// A one-layer cache of 2 images whose maps came from weights `weights`.
fn cache(dir: &Path, weights: &str) -> FeatureCache {
    common::cache(dir, &[info()], 2, &[View::Original], weights, |_, _, maps| maps.fill(0.5))
}

fn graph(mu: f64) -> ExplanatoryGraph {
    serde_json::from_value(serde_json::json!({
        "backbone": "vgg16",
        "input_size": 224,
        "layers": [{
            "info": { "name": "conv5_3", "channels": 2, "height": 14, "width": 14,
                      "geometry": { "stride": 16.0, "first_centre": 8.0, "receptive_field": 196.0 } },
            "nodes_per_filter": 1,
            "mu": [[mu, 5.0], [6.0, 6.0]],
            "sigma": [1.0, 1.0],
            "mean_position": [[5.0, 5.0], [6.0, 6.0]],
            "parents": [[], []]
        }]
    }))
    .unwrap()
}

fn acts() -> Vec<ImageActivations> {
    (0..2)
        .map(|i| ImageActivations {
            image_id: format!("img{i}"),
            flipped: false,
            layers: vec![LayerActivations {
                layer: "conv5_3".into(),
                positions: vec![[5.0, 5.0], [6.0, 6.0]],
                scores: vec![1.0, 0.5],
            }],
        })
        .collect()
}

#[test]
fn a_graph_is_refused_on_a_cache_of_other_weights() {
    let dir = tempfile::tempdir().unwrap();
    let train = cache(&dir.path().join("train"), "weights-1");
    let other = cache(&dir.path().join("other"), "weights-2");
    let same_weights = cache(&dir.path().join("new-images"), "weights-1");
    let g = dir.path().join("graph");
    graph(5.0).save(&g).unwrap();
    Provenance::of_cache(&train).save(&g).unwrap();
    check_graph_fits_cache(&g, &same_weights).unwrap();
    let err = check_graph_fits_cache(&g, &other).unwrap_err().to_string();
    assert!(err.contains("graph") && err.contains("other") && err.contains("weights"), "{err}");
}

#[test]
fn activations_of_another_graph_or_cache_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = cache(&dir.path().join("cache"), "w");
    let other_cache = cache(&dir.path().join("cache2"), "w2");
    let (g1, g2) = (dir.path().join("g1"), dir.path().join("g2"));
    graph(5.0).save(&g1).unwrap();
    graph(7.0).save(&g2).unwrap();
    assert_ne!(graph_digest(&g1).unwrap(), graph_digest(&g2).unwrap());
    let a = dir.path().join("acts");
    save_activations(&a, &graph(5.0), &acts()).unwrap();
    Provenance::of_cache(&c).with_graph(graph_digest(&g1).unwrap()).save(&a).unwrap();
    check_activations(&a, Some(&g1), Some(&c)).unwrap();
    let err = check_activations(&a, Some(&g2), Some(&c)).unwrap_err().to_string();
    assert!(err.contains("acts") && err.contains("g2") && err.contains("another graph"), "{err}");
    let err = check_activations(&a, Some(&g1), Some(&other_cache)).unwrap_err().to_string();
    assert!(err.contains("acts") && err.contains("cache2"), "{err}");
    // Outputs without provenance (older versions) pass, with a warning.
    std::fs::remove_file(a.join(expgraph::graph::PROVENANCE_JSON)).unwrap();
    check_activations(&a, Some(&g2), Some(&other_cache)).unwrap();
}
