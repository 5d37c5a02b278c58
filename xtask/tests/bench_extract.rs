//! `cargo xtask bench-extract` end to end on the CPU: a random full-width ResNet-18 written to a
//! safetensors file, 4 generated objects, pipelined and serial runs, the JSON record checked.
//! Run with `--release` (a few seconds).

use std::path::Path;
use std::process::Command;

use expgraph::backbone::{ResNet, ResNetDepth};
use expgraph::cache::{serialize_safetensors, OwnedTensor};

/// A torchvision-named ResNet-18 file of random weights (seeded), loadable by `--backbone auto`.
fn write_resnet18(path: &Path) {
    let tensors: Vec<(String, OwnedTensor)> = ResNet::random_state_dict(ResNetDepth::R18, 1, 7)
        .unwrap()
        .into_iter()
        .map(|(name, t)| {
            let values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (name, OwnedTensor::f32(t.dims().to_vec(), values))
        })
        .collect();
    let bytes =
        serialize_safetensors(tensors.iter().map(|(n, t)| (n.as_str(), t)), Vec::<(String, String)>::new()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn xtask() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.env_remove("EXPGRAPH_WEIGHTS").env("RUST_LOG", "warn");
    cmd
}

#[test]
fn bench_extract_times_pipelined_and_serial_runs_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("resnet18-random.safetensors");
    write_resnet18(&weights);
    let (work, out) = (dir.path().join("work"), dir.path().join("records/extract.json"));
    let output = xtask()
        .args(["bench-extract", "--weights"])
        .arg(&weights)
        .args(["--objects", "4", "--negatives", "2", "--batch", "2", "--serial", "--work"])
        .arg(&work)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();

    assert_eq!(r["bench"], "extract");
    assert_eq!((r["backbone"].as_str(), r["precision"].as_str()), (Some("resnet18"), Some("f32")));
    assert!(r["device"].as_str().is_some_and(|d| d.starts_with("cpu")), "{}", r["device"]);
    assert_eq!(r["layers"], serde_json::json!(["layer2.pre_relu", "layer3.pre_relu", "layer4.pre_relu"]));
    assert_eq!(
        (r["views"].as_u64(), r["objects"].as_u64(), r["data"].as_str()),
        (Some(2), Some(4), Some("synthetic-cub"))
    );
    assert!(r["host"]["cores"].as_u64().is_some_and(|c| c >= 1), "{}", r["host"]);
    for (name, run) in [("pipelined", &r), ("serial", &r["serial"])] {
        assert_eq!(run["batch"].as_u64(), Some(2), "{name}: --batch 2 is used as given");
        let rate = run["objects_per_s"].as_f64().unwrap();
        let wall = run["timing"]["wall_s"].as_f64().unwrap();
        assert!(rate > 0.0 && wall > 0.0, "{name}: {run}");
        let ms = run["ms_per_object"].as_f64().unwrap();
        assert!((ms - wall * 1000.0 / 4.0).abs() < 1e-6 * ms, "{name}: {ms} ms/object, {wall} s for 4");
        for key in ["decode_s", "upload_s", "forward_s", "download_s", "normalize_s", "write_s", "wait_decode_s"] {
            assert!(run["timing"][key].as_f64().is_some_and(|v| v >= 0.0), "{name}.{key}: {run}");
        }
    }
    let speed = r["pipelined_over_serial_speed"].as_f64().unwrap();
    let expected = r["objects_per_s"].as_f64().unwrap() / r["serial"]["objects_per_s"].as_f64().unwrap();
    assert!((speed - expected).abs() < 1e-9 * expected, "{speed} vs {expected}");

    // Both runs wrote a complete cache of the same objects into their own folder.
    let caches: Vec<_> = ["pipelined", "serial"]
        .map(|run| expgraph::cache::FeatureCache::open(work.join("extract-bench").join(run)).unwrap())
        .into_iter()
        .collect();
    assert_eq!(caches[0].images().len(), 4);
    assert_eq!(caches[0].manifest().key, caches[1].manifest().key);

    // The table: a row per run and the ratio.
    assert!(stdout.contains("| pipelined | 2 |") && stdout.contains("| serial | 2 |"), "{stdout}");
    assert!(stdout.contains("pipelined ÷ serial speed"), "{stdout}");

    // A second run over the same --work replaces the caches (else they would resume, computing
    // nothing) and, without --serial, records null for the serial fields.
    let again = xtask()
        .args(["bench-extract", "--weights"])
        .arg(&weights)
        .args(["--objects", "4", "--negatives", "2", "--work"])
        .arg(&work)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert!(r["objects_per_s"].as_f64().unwrap() > 0.0 && r["batch"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["serial"].is_null() && r["pipelined_over_serial_speed"].is_null(), "{r}");
    assert_eq!(r["batch_requested"], "auto");
}

#[test]
fn bench_extract_rejects_bad_flags_naming_them() {
    for (flag, value, says) in [
        ("--batch", "0", "at least 1"),
        ("--objects", "0", "at least 1"),
        ("--negatives", "1", "at least 2"),
        ("--precision", "f64", "f16"),
    ] {
        let out = xtask().args(["bench-extract", "--weights", "w.safetensors", flag, value]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(flag) && err.contains(says), "{flag} {value}: {err}");
    }
    // Weights that do not exist: a clear error naming the file, no panic.
    let dir = tempfile::tempdir().unwrap();
    let out = xtask()
        .args(["bench-extract", "--objects", "2", "--negatives", "2", "--weights"])
        .arg(dir.path().join("missing.safetensors"))
        .arg("--work")
        .arg(dir.path().join("work"))
        .arg("--out")
        .arg(dir.path().join("r.json"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("missing.safetensors") && !err.contains("panicked"), "{err}");
    assert!(!dir.path().join("r.json").exists());
}

#[test]
fn test_gpu_dry_run_prints_the_cargo_command() {
    let out = xtask().args(["test-gpu", "--require-gpu", "--dry-run"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("EXPGRAPH_REQUIRE_GPU=1 cargo test --release -p expgraph-backbone")
            && stdout.contains("expgraph-cli/cuda -- gpu"),
        "{stdout}"
    );
}
