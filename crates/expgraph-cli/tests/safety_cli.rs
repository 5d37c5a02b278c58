//! Data safety of the commands: failing before the expensive work, refusing files of other runs.

use std::path::Path;
use std::process::Output;

mod common;
use common::{conv5_3_cache, expgraph, stderr};

/// A small conv5_3 cache (8 images with a blob each) from weights `weights`.
fn cache(dir: &Path, weights: &str) {
    conv5_3_cache(dir, weights, 4, (8, 4), |_, img, c| {
        vec![((3 + (img + c) % 8) * 14 + 4 + (img * 3 + c) % 7, 2.0 + c as f32)]
    });
}

fn learn(cache: &Path, out: &Path) -> Output {
    expgraph()
        .args(["learn", "--cache"])
        .arg(cache)
        .args(["--layers", "conv5_3", "--iterations", "2", "-o"])
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn learn_checks_its_output_before_learning() {
    let dir = tempfile::tempdir().unwrap();
    cache(&dir.path().join("cache"), "w");
    // A file where the output folder's parent should be: no folder can be made there.
    std::fs::write(dir.path().join("blocker"), "x").unwrap();
    let out = learn(&dir.path().join("cache"), &dir.path().join("blocker/graph"));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("--out") && err.contains("blocker"), "{err}");
    assert!(!err.contains("learning"), "failed only after learning started: {err}");
}

#[test]
fn extract_rejects_zero_counts_naming_the_flag() {
    for flag in ["--batch", "--shard-size"] {
        let out = expgraph()
            .args(["extract", "--images", "i", "--weights", "w", "--negatives", "n", "-o", "c", flag, "0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag}");
        assert!(stderr(&out).contains(flag), "{}", stderr(&out));
    }
}

#[test]
fn batch_and_precision_flags_reject_bad_values_with_the_choices() {
    let base = ["--weights", "w", "--images", "i", "--negatives", "n", "-o", "c"];
    for (cmd, flag, value, says) in [
        ("extract", "--batch", "0", "at least 1 (or `auto`)"),
        ("extract", "--batch", "many", "expected `auto` or a count"),
        ("extract", "--precision", "f64", "[possible values: f32, f16, bf16]"),
        ("run", "--batch", "0", "at least 1 (or `auto`)"),
        ("run", "--precision", "f64", "[possible values: f32, f16, bf16]"),
        ("features", "--precision", "half", "[possible values: f32, f16, bf16]"),
    ] {
        let mut c = expgraph();
        c.arg(cmd);
        if cmd == "features" {
            c.args(["dump", "--weights", "w", "-o", "d.safetensors", "i.png"]);
        } else if cmd == "extract" {
            c.args(base);
        }
        let out = c.args([flag, value]).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd} {flag} {value}: {err}");
        assert!(err.contains(flag) && err.contains(value) && err.contains(says), "{cmd} {flag} {value}: {err}");
    }
    // `auto` and counts parse: the run then fails on the missing inputs instead (exit 1).
    for batch in ["auto", "3"] {
        let out =
            expgraph().arg("extract").args(base).args(["--batch", batch, "--precision", "bf16"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "--batch {batch}: {}", stderr(&out));
    }
}

#[test]
fn cuda_on_a_cpu_only_build_is_an_error_naming_the_feature() {
    if cfg!(feature = "cuda") {
        eprintln!("skipping: this build has CUDA (the gpu tests cover it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (images, negatives) = (dir.path().join("images"), dir.path().join("negatives"));
    for folder in [&images, &negatives] {
        std::fs::create_dir_all(folder).unwrap();
        for i in 0..2u8 {
            image::RgbImage::from_fn(40, 32, |x, y| image::Rgb([x as u8 * 6, y as u8 * 7, i * 90]))
                .save(folder.join(format!("{i}.png")))
                .unwrap();
        }
    }
    for device in ["cuda:0", "cuda"] {
        let out = expgraph()
            .args(["extract", "--weights", "w.safetensors", "--device", device, "--images"])
            .arg(&images)
            .arg("--negatives")
            .arg(&negatives)
            .arg("-o")
            .arg(dir.path().join("cache"))
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{device}: {err}");
        assert!(err.contains("--features cuda") && err.contains(device), "{device}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn infer_refuses_a_cache_of_other_weights_and_report_activations_of_another_graph() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cache(&d.join("cache"), "weights-1");
    cache(&d.join("other"), "weights-2");
    let out = learn(&d.join("cache"), &d.join("graph"));
    assert!(out.status.success(), "{}", stderr(&out));
    // a second graph that differs: learned with another seed
    let out = expgraph()
        .args(["learn", "--cache"])
        .arg(d.join("cache"))
        .args(["--layers", "conv5_3", "--iterations", "2", "--seed", "7", "-o"])
        .arg(d.join("graph2"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let infer = |graph: &str, cache: &str, out: &str| {
        expgraph()
            .args(["infer", "--graph"])
            .arg(d.join(graph))
            .arg("--cache")
            .arg(d.join(cache))
            .arg("-o")
            .arg(d.join(out))
            .output()
            .unwrap()
    };
    let bad = infer("graph", "other", "acts-bad");
    assert_eq!(bad.status.code(), Some(1));
    let err = stderr(&bad);
    assert!(err.contains("graph") && err.contains("other") && err.contains("weights"), "{err}");
    assert!(!d.join("acts-bad/activations.json").exists());

    let good = infer("graph", "cache", "acts");
    assert!(good.status.success(), "{}", stderr(&good));
    // Predictions record where they come from.
    let ann = serde_json::json!({ "parts": { "head": [
        { "image_id": "img0", "point": { "h": 60.0, "w": 70.0 } },
        { "image_id": "img1", "point": { "h": 80.0, "w": 90.0 } } ] } });
    std::fs::write(d.join("ann.json"), ann.to_string()).unwrap();
    let out = expgraph()
        .args(["localize", "--graph"])
        .arg(d.join("graph"))
        .arg("--activations")
        .arg(d.join("acts"))
        .arg("--annotations")
        .arg(d.join("ann.json"))
        .args(["--top-fraction", "1", "--out"])
        .arg(d.join("pred.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let pred: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("pred.json")).unwrap()).unwrap();
    let digest = expgraph_graph::graph_digest(&d.join("graph")).unwrap();
    assert_eq!(pred["provenance"]["graph_digest"], serde_json::json!(digest));
    // `export` (and `report`, `localize`) with activations of another graph
    let out = expgraph()
        .args(["export", "--graph"])
        .arg(d.join("graph2"))
        .arg("--activations")
        .arg(d.join("acts"))
        .arg("--dot")
        .arg(d.join("g.dot"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("another graph") && err.contains("acts") && err.contains("graph2"), "{err}");
    let out = expgraph()
        .args(["report", "--graph"])
        .arg(d.join("graph2"))
        .arg("--activations")
        .arg(d.join("acts"))
        .arg("--cache")
        .arg(d.join("cache"))
        .arg("-o")
        .arg(d.join("report"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("another graph"), "{}", stderr(&out));
}

#[test]
fn an_error_chain_says_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = expgraph()
        .args(["export", "--graph"])
        .arg(dir.path().join("nope"))
        .arg("--dot")
        .arg(dir.path().join("x.dot"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    assert!(err.contains("loading graph") && err.contains("graph.json"), "{err}");
}
