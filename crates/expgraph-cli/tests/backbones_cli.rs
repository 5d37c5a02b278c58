//! ResNet backbones end to end through the CLI: `expgraph backbones`, `features dump --backbone`
//! on a written ResNet weight file, and `learn` on a ResNet cache without `--layers`.

use std::path::Path;
use std::process::Output;

use expgraph_backbone::ResNetDepth;
use expgraph_cache::{serialize_safetensors, LayerInfo, OwnedTensor, TapGeometry};

mod common;
use common::{expgraph, safetensors_header, stderr, write_cache, write_resnet_weights, CacheSpec};

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Names and shapes in a safetensors file's header.
fn header_shapes(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    safetensors_header(path).into_iter().map(|(k, v)| (k, v["shape"].clone())).collect()
}

#[test]
fn backbones_lists_every_architecture_with_its_geometry() {
    let v = json(&expgraph().args(["backbones", "--json"]).output().unwrap());
    let list = v["backbones"].as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["vgg16", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]);
    let r50 = list.iter().find(|b| b["name"] == "resnet50").unwrap();
    let layer4 = r50["taps"].as_array().unwrap().iter().find(|t| t["name"] == "layer4").unwrap();
    assert_eq!(layer4["stride"], 32.0);
    assert_eq!(layer4["channels"], 2048);
    assert_eq!(layer4["map_size"], 7);
    assert_eq!(layer4["receptive_field"], 427.0);
    // Per-block taps: every block of every stage, the last one being the stage output.
    let r50_taps = r50["taps"].as_array().unwrap();
    let block = |name: &str| r50_taps.iter().find(|t| t["name"] == name).unwrap_or_else(|| panic!("no tap {name}"));
    assert_eq!(
        block("layer3.5")["receptive_field"],
        r50_taps.iter().find(|t| t["name"] == "layer3").unwrap()["receptive_field"]
    );
    assert_eq!(
        (block("layer3.0")["map_size"].as_u64(), block("layer3.0")["receptive_field"].as_f64()),
        (Some(14), Some(107.0))
    );
    assert!(!r50_taps.iter().any(|t| t["name"] == "layer3.6"));
    assert_eq!(r50["default_layers"], serde_json::json!(["layer2.pre_relu", "layer3.pre_relu", "layer4.pre_relu"]));
    let vgg = list.iter().find(|b| b["name"] == "vgg16").unwrap();
    let conv5_3 = vgg["taps"].as_array().unwrap().iter().find(|t| t["name"] == "conv5_3").unwrap();
    assert_eq!((conv5_3["stride"].as_f64(), conv5_3["first_centre"].as_f64()), (Some(16.0), Some(8.5)));

    let one = expgraph().args(["backbones", "resnet18"]).output().unwrap();
    assert!(one.status.success(), "{}", stderr(&one));
    let human = String::from_utf8_lossy(&one.stdout);
    assert!(human.contains("resnet18") && human.contains("layer4") && !human.contains("resnet50"), "{human}");
    // The human listing puts a stage's block taps on one line.
    let r152 = expgraph().args(["backbones", "resnet152"]).output().unwrap();
    let human = String::from_utf8_lossy(&r152.stdout);
    assert!(human.contains("layer3.0 … layer3.35") && !human.contains("layer3.7 "), "{human}");
    assert!(human.lines().count() < 20, "{human}");
    assert_eq!(expgraph().args(["backbones", "resnet51"]).output().unwrap().status.code(), Some(2));
}

#[test]
fn features_dump_runs_a_resnet_weight_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let weights = d.join("resnet18.safetensors");
    write_resnet_weights(&weights, ResNetDepth::R18);
    let png = d.join("object.png");
    image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x + y) * 2) as u8]))
        .save(&png)
        .unwrap();

    let dump = |backbone: &str, layers: Option<&str>, out: &str| {
        let mut c = expgraph();
        c.args(["features", "dump", "--json", "--backbone", backbone, "--weights"]).arg(&weights);
        if let Some(l) = layers {
            c.args(["--layers", l]);
        }
        c.arg("-o").arg(d.join(out)).arg(&png).output().unwrap()
    };

    // Named architecture, default layers: the paper's three ResNet stages.
    let v = json(&dump("resnet18", None, "named.safetensors"));
    assert_eq!(v["backbone"], "resnet18");
    assert_eq!(v["preprocess"], "torchvision", "a ResNet file defaults to torchvision preprocessing");
    let shapes: Vec<(String, Vec<u64>)> = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let shape = t["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
            (t["layer"].as_str().unwrap().to_string(), shape)
        })
        .collect();
    let expected = [
        ("layer2.pre_relu", vec![1u64, 128, 28, 28]),
        ("layer3.pre_relu", vec![1, 256, 14, 14]),
        ("layer4.pre_relu", vec![1, 512, 7, 7]),
    ];
    assert_eq!(shapes, expected.iter().map(|(n, s)| (n.to_string(), s.clone())).collect::<Vec<_>>());
    let file = header_shapes(&d.join("named.safetensors"));
    for (name, shape) in &expected {
        assert_eq!(file[*name], serde_json::json!(shape), "{name}");
    }

    // `auto` tells the depth from the tensor names; post-ReLU taps on request.
    let v = json(&dump("auto", Some("layer1,layer4"), "auto.safetensors"));
    assert_eq!(v["backbone"], "resnet18");
    let file = header_shapes(&d.join("auto.safetensors"));
    assert_eq!(file["layer1"], serde_json::json!([1, 64, 56, 56]));
    assert_eq!(file["layer4"], serde_json::json!([1, 512, 7, 7]));

    // A named architecture that does not fit the file fails, naming what is missing.
    let out = dump("resnet50", None, "wrong.safetensors");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("layer1.0.conv") && err.contains("resnet18.safetensors"), "{err}");
    assert!(!d.join("wrong.safetensors").exists());
    // A file of neither architecture: `auto` says what it saw.
    let other = d.join("other.safetensors");
    let t = OwnedTensor::f32(vec![2, 2], [0.0; 4]);
    std::fs::write(
        &other,
        serialize_safetensors([("encoder.weight", &t)], std::iter::empty::<(String, String)>()).unwrap(),
    )
    .unwrap();
    let out = expgraph()
        .args(["features", "dump", "--weights"])
        .arg(&other)
        .arg("-o")
        .arg(d.join("x.safetensors"))
        .arg(&png)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("encoder.weight") && err.contains("--backbone"), "{err}");
}

/// A small ResNet-50-named cache: stages layer2/3/4 (maps 28, 14, 7; 2 channels) of 8 images,
/// each channel with one blob at the same relative place in every layer.
fn resnet_cache(dir: &Path, layer_names: [&str; 3]) {
    let layers: Vec<LayerInfo> = layer_names
        .iter()
        .zip([(28usize, 8.0), (14, 16.0), (7, 32.0)])
        .map(|(name, (side, stride))| LayerInfo {
            name: name.to_string(),
            channels: 2,
            height: side,
            width: side,
            geometry: TapGeometry { stride, first_centre: 1.0, receptive_field: 100.0 },
        })
        .collect();
    let spec = CacheSpec {
        backbone: "resnet50",
        preprocess: "torchvision",
        weights_digest: "w",
        layers,
        images: 8,
        shard_size: 4,
    };
    write_cache(dir, spec, |info, img, c| {
        // a blob in the relative position (0.3 + 0.05·((img + c) % 4), 0.4 + …) of the map
        let side = info.height;
        let h = ((0.3 + 0.05 * ((img + c) % 4) as f64) * side as f64) as usize;
        let wpos = ((0.4 + 0.05 * ((img * 3 + c) % 4) as f64) * side as f64) as usize;
        vec![(h * side + wpos, 2.0 + c as f32)]
    });
}

#[test]
fn learn_picks_the_resnet_layers_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let learn = |cache: &str, graph: &str, layers: Option<&str>| {
        let mut c = expgraph();
        c.args(["learn", "--json", "--iterations", "2", "--cache"]).arg(d.join(cache)).arg("-o").arg(d.join(graph));
        if let Some(l) = layers {
            c.args(["--layers", l]);
        }
        c.output().unwrap()
    };
    let layer_names = |graph: &str| -> Vec<(String, usize)> {
        let g = expgraph_graph::ExplanatoryGraph::load(d.join(graph)).unwrap();
        assert_eq!(g.backbone, "resnet50");
        g.layers.iter().map(|l| (l.info.name.clone(), l.nodes_per_filter)).collect()
    };

    // Post-ReLU stage outputs, no flags: the paper's ResNet layers with K = 40, 20, 10.
    resnet_cache(&d.join("post"), ["layer2", "layer3", "layer4"]);
    json(&learn("post", "g-post", None));
    assert_eq!(
        layer_names("g-post"),
        [("layer2".to_string(), 40), ("layer3".to_string(), 20), ("layer4".to_string(), 10)]
    );
    // The default extraction (pre-ReLU sums), no flags.
    resnet_cache(&d.join("pre"), ["layer2.pre_relu", "layer3.pre_relu", "layer4.pre_relu"]);
    json(&learn("pre", "g-pre", None));
    let names: Vec<String> = layer_names("g-pre").into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["layer2.pre_relu", "layer3.pre_relu", "layer4.pre_relu"]);

    // `--layers` still overrides (in cache order, whatever the order given), and knows the backbone.
    json(&learn("post", "g-two", Some("layer4,layer3")));
    assert_eq!(layer_names("g-two"), [("layer3".to_string(), 20), ("layer4".to_string(), 10)]);
    let out = learn("post", "g-bad", Some("conv5_3"));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("conv5_3") && err.contains("resnet50") && err.contains("layer2"), "{err}");
}
