//! `expgraph extract` and `expgraph features dump` end to end (real weights from shared/;
//! skipped with a message when absent). Run with `--release`.

mod common;
use common::{expgraph, shared};

#[test]
fn extract_writes_a_readable_cache_and_resumes() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cache");
    let boxes = dir.path().join("boxes.json");
    std::fs::write(&boxes, r#"{"dog.jpg": [20, 30, 400, 500], "eagle.jpg": [-10, 0, 300, 9999]}"#).unwrap();
    let run = |json: bool| {
        expgraph()
            .args(["extract", "--images"])
            .arg(shared.join("data/photos"))
            .arg("--weights")
            .arg(shared.join("models/vgg16-imagenet-conv.safetensors"))
            .arg("--negatives")
            .arg(shared.join("data/negatives"))
            .args(["--negatives-limit", "2", "--layers", "conv5_2,conv5_3", "--batch", "2", "--storage", "u8"])
            .arg("--boxes")
            .arg(&boxes)
            .arg("--out")
            .arg(&out)
            .args(json.then_some("--json"))
            .output()
            .unwrap()
    };
    let first = run(true);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(report["images"], 2);
    assert_eq!(report["computed"], 2);
    let cache = expgraph_cache::FeatureCache::open(&out).unwrap();
    assert_eq!(cache.images()[0].id, "dog.jpg");
    assert_eq!(cache.images()[1].bbox[0], 0.0, "box clipped");
    assert_eq!(cache.layers().len(), 2);
    assert!(out.join("norm-stats.safetensors").is_file());
    let second = run(true);
    assert!(second.status.success());
    let report: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(report["computed"], 0, "resumed run recomputes nothing");
    // Without --json: one human line on stdout, no JSON.
    let third = run(false);
    assert!(third.status.success());
    let text = String::from_utf8_lossy(&third.stdout);
    assert!(text.starts_with("feature cache ") && text.contains("0 computed now"), "{text}");
    assert!(serde_json::from_slice::<serde_json::Value>(&third.stdout).is_err());
}

#[test]
fn extract_reports_a_missing_images_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = expgraph()
        .args(["extract", "--weights", "w.safetensors", "--images"])
        .arg(dir.path().join("nope"))
        .arg("--negatives")
        .arg(dir.path())
        .arg("--out")
        .arg(dir.path().join("cache"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a failure exits 1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nope"), "{stderr}");
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(error_lines.len(), 1, "one readable error chain, no Debug dump: {stderr}");
    assert!(!stderr.contains("Caused by") && !stderr.contains("Os {"), "{stderr}");
    assert!(!dir.path().join("cache/manifest.json").exists());
}

#[test]
fn usage_errors_exit_2_and_old_flag_spellings_still_parse() {
    let out = expgraph().args(["learn", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // `--features` (now `--cache`) and a count as `--images` (now `--limit`) are hidden aliases:
    // parsing succeeds and the run fails on the missing cache instead (exit 1).
    let dir = tempfile::tempdir().unwrap();
    let out = expgraph()
        .args(["learn", "--features"])
        .arg(dir.path().join("nope"))
        .args(["--images", "3", "-o"])
        .arg(dir.path().join("g"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let help = expgraph().args(["learn", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--cache") && help.contains("--limit") && !help.contains("--features"), "{help}");
}

#[test]
fn features_dump_matches_the_golden_tensors() {
    let Some(shared) = shared() else { return };
    let models = shared.join("models");
    let inputs = [models.join("golden-input-0-eagle.png"), models.join("golden-input-1-cat.png")];
    if !inputs.iter().all(|p| p.is_file()) {
        eprintln!("skipping: golden inputs absent");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("dump.safetensors");
    let out = expgraph()
        .args(["features", "dump", "--weights"])
        .arg(models.join("vgg16-imagenet-conv.safetensors"))
        .args(["--preprocess", "caffe", "--no-crop", "--layers", "conv4_2,conv4_3,conv5_2,conv5_3", "--out"])
        .arg(&out_file)
        .args(&inputs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ours = read_f32_tensors(&out_file);
    let golden = read_f32_tensors(&models.join("vgg16-golden.safetensors"));
    for layer in ["conv4_2", "conv4_3", "conv5_2", "conv5_3"] {
        let ((os, o), (gs, g)) = (&ours[layer], &golden[layer]);
        assert_eq!(os, gs);
        let max_g = g.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let max_abs = o.iter().zip(g.iter()).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(max_abs <= 2e-5 * max_g, "{layer}: max abs diff {max_abs} (max |golden| {max_g})");
    }
}

/// Minimal safetensors reader for F32 tensors: name → (shape, values).
fn read_f32_tensors(path: &std::path::Path) -> std::collections::HashMap<String, (Vec<u64>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    header
        .into_iter()
        .filter(|(_, v)| v["dtype"] == "F32")
        .map(|(k, v)| {
            let shape = v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
            let (a, b) =
                (v["data_offsets"][0].as_u64().unwrap() as usize, v["data_offsets"][1].as_u64().unwrap() as usize);
            let vals = data[a..b].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            (k, (shape, vals))
        })
        .collect()
}
