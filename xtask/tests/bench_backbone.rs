//! `cargo xtask bench-backbone` end to end at a tiny input size (32×32, 1 round, 1 run): ours
//! only on both networks, the JSON record checked; and, when `EXPGRAPH_ORT_PYTHON` names a Python
//! with onnxruntime, onnx, numpy and safetensors, against ONNX Runtime on VGG-16 (skipped with a
//! printed reason otherwise). Run with `--release` (a few seconds).

use std::process::Command;

use serde_json::Value;

fn xtask() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.env("RUST_LOG", "warn").env("RAYON_NUM_THREADS", "2");
    cmd.args([
        "bench-backbone",
        "--input-size",
        "32",
        "--batch",
        "1,2",
        "--rounds",
        "1",
        "--runs",
        "1",
        "--warmup",
        "0",
    ]);
    cmd
}

fn run(cmd: &mut Command) -> (Value, String) {
    let output = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let out = stdout.lines().find_map(|l| l.strip_prefix("record: ")).expect("the record's path").to_string();
    (serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap(), stdout)
}

#[test]
fn bench_backbone_times_ours_alone() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("records/backbone.json");
    let (r, table) = run(xtask().arg("--out").arg(&out));
    assert_eq!(
        (r["bench"].as_str(), r["threads"].as_u64(), r["rounds"].as_u64()),
        (Some("backbone"), Some(2), Some(1))
    );
    assert_eq!((r["input_size"].as_u64(), r["runs"].as_u64()), (Some(32), Some(1)));
    assert!(r["onnxruntime"].is_null() && r["host"]["isa"]["avx2"].is_boolean(), "{r}");
    let models = r["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["model"].as_str().unwrap()).collect();
    assert_eq!(names, ["vgg16", "resnet50"]);
    assert_eq!((models[0]["output"].as_str(), models[1]["output"].as_str()), (Some("conv5_3"), Some("layer4")));
    assert_eq!(
        (models[1]["weights"]["kind"].as_str(), models[1]["weights"]["seed"].as_u64()),
        (Some("random"), Some(50))
    );
    for m in models {
        assert!(m["agreement"].is_null(), "{m}");
        let batches = m["batches"].as_array().unwrap();
        assert_eq!(batches.iter().map(|b| b["batch"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2]);
        for b in batches {
            let ours = &b["ours_ms_per_image"];
            assert!(ours["min"].as_f64().unwrap() > 0.0 && ours["median"].as_f64() >= ours["min"].as_f64(), "{b}");
            assert!(b["ort_ms_per_image"].is_null() && b["ratio_median"].is_null() && b["ratio_min"].is_null(), "{b}");
            assert_eq!(b["rounds"].as_array().unwrap().len(), 1);
            // A turn this short may see no clock tick (steal `null`), but the field is there.
            assert!(b["rounds"][0].get("ours_steal").is_some() && b["rounds"][0]["ort_steal"].is_null(), "{b}");
        }
    }
    // The record says how busy the host was: over at most the 4 turns (2 models × 2 batches).
    assert!(r["steal"].is_null() || r["steal"]["turns"].as_u64().is_some_and(|t| (1..=4).contains(&t)), "{r}");
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    assert!(r["host"]["family"].is_u64() && r["host"]["model"].is_u64(), "{r}");
    assert!(table.contains("| resnet50 | random | 2 | 1 |") && table.contains("ours only"), "{table}");
}

#[test]
fn bench_backbone_adds_rounds_for_quiet_ones() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--model", "vgg16", "--batch", "1", "--quiet-rounds", "2", "--out"];
    if !std::path::Path::new("/proc/stat").exists() {
        let output = xtask().args(args).arg(dir.path().join("backbone.json")).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains("--quiet-rounds needs"), "{stderr}");
        return;
    }
    let (r, table) = run(xtask().args(args).arg(dir.path().join("backbone.json")));
    assert_eq!((r["rounds"].as_u64(), r["quiet_rounds"].as_u64()), (Some(1), Some(2)));
    let b = &r["models"][0]["batches"][0];
    // After the 1 round asked for, on until 2 quiet rounds (a turn this short may see no clock
    // tick, and then is not known to be quiet), at most 3 × 2 rounds.
    let (rounds, quiet) = (b["rounds"].as_array().unwrap().len(), b["quiet"]["rounds"].as_u64().unwrap() as usize);
    assert!((2..=6).contains(&rounds) && quiet <= rounds && (quiet == 2 || rounds == 6), "{b}");
    assert!(b["quiet"]["ratio"].is_null() && b["ratio_rounds"].is_null(), "{b}");
    assert!(table.contains(&format!("| – | – ({quiet} of {rounds}) |")), "{table}");
}

#[test]
fn bench_backbone_against_onnxruntime_when_a_python_is_given() {
    let Some(python) = std::env::var_os("EXPGRAPH_ORT_PYTHON") else {
        eprintln!("skipped: set EXPGRAPH_ORT_PYTHON to a Python with onnxruntime, onnx, numpy and safetensors");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (r, table) = run(xtask()
        .args(["--model", "vgg16", "--compare-onnxruntime", "--python"])
        .arg(python)
        .arg("--out")
        .arg(dir.path().join("backbone.json")));
    assert!(r["onnxruntime"].as_str().is_some_and(|v| !v.is_empty()), "{r}");
    let m = &r["models"][0];
    let rel_l2 = m["agreement"]["rel_l2"].as_f64().unwrap();
    assert!(rel_l2 <= 1e-4 && m["agreement"]["max_abs_rel"].as_f64().unwrap() <= 1e-3, "{m}");
    for b in m["batches"].as_array().unwrap() {
        assert!(b["ort_ms_per_image"]["median"].as_f64().unwrap() > 0.0, "{b}");
        assert!(b["ratio_median"].as_f64().unwrap() > 0.0 && b["ratio_min"].as_f64().unwrap() > 0.0, "{b}");
        assert_eq!(b["rounds"][0]["ort_ms"].as_array().unwrap().len(), 1);
        assert!(b["ratio_rounds"].as_f64().unwrap() > 0.0, "{b}");
    }
    assert!(table.contains("ORT vs ours"), "{table}");
}
