//! Crash safety: `extract` and `learn` killed (SIGKILL) at several points and run again give
//! byte-identical outputs to an uninterrupted run, and leave no temp file behind.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

mod common;
use common::{conv5_3_cache, expgraph, shared, two_layer_cache};

/// Every file below `dir` (relative path → bytes), the lock file aside.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n != expgraph_io::LOCK_FILE) {
                out.insert(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn temp_files(dir: &Path) -> Vec<String> {
    files(dir).into_keys().filter(|k| k.ends_with(".tmp") || k.contains("/.") || k.starts_with('.')).collect()
}

/// Wait until `ready()` or the child ends (or 60 s), then SIGKILL it.
fn kill_when(mut child: Child, ready: impl Fn() -> bool) {
    let start = Instant::now();
    while !ready() && child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn count_shards(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("conv5_3"))
        .map_or(0, |d| d.filter_map(Result::ok).filter(|e| !e.file_name().to_string_lossy().starts_with('.')).count())
}

#[test]
fn extract_killed_and_rerun_is_byte_identical() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let extract = |out: &Path| {
        let mut c = expgraph();
        c.args(["extract", "--images"])
            .arg(shared.join("data/photos"))
            .arg("--weights")
            .arg(shared.join("models/vgg16-imagenet-conv.safetensors"))
            .arg("--negatives")
            .arg(shared.join("data/photos"))
            .args([
                "--negatives-limit",
                "2",
                "--limit",
                "4",
                "--layers",
                "conv5_3",
                "--batch",
                "1",
                "--shard-size",
                "1",
            ])
            .arg("-o")
            .arg(out);
        c
    };
    let reference = dir.path().join("ref");
    assert!(extract(&reference).status().unwrap().success());
    let want = files(&reference);
    // Killed: during the statistics, after the first shard, after the third.
    for (k, shards) in [0usize, 1, 3].into_iter().enumerate() {
        let out = dir.path().join(format!("run{k}"));
        let child =
            extract(&out).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
        if shards == 0 {
            kill_when(child, || true);
        } else {
            kill_when(child, || count_shards(&out) >= shards * 2);
        }
        assert!(extract(&out).status().unwrap().success(), "rerun after a kill at {shards} shards");
        let got = files(&out);
        assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "kill at {shards}");
        for (name, bytes) in &want {
            assert!(got[name] == *bytes, "{name} differs after a kill at {shards} shards");
        }
        assert!(temp_files(&out).is_empty(), "{:?}", temp_files(&out));
    }
}

/// A conv5_3 cache of 48 images × 32 filters with a blob per filter (enough for `learn` to take a
/// moment).
fn cache(dir: &Path) {
    conv5_3_cache(dir, "w", 32, (48, 16), |_, img, c| {
        let cell = (2 + (img + c) % 10) * 14 + 2 + (img * 3 + c) % 10;
        vec![(cell, 2.0 + (c % 5) as f32), (cell + 1, 1.0)]
    });
}

#[test]
fn learn_killed_and_rerun_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    cache(&dir.path().join("cache"));
    let learn = |out: &Path| {
        let mut c = expgraph();
        c.args(["learn", "--cache"])
            .arg(dir.path().join("cache"))
            .args(["--layers", "conv5_3", "--iterations", "6", "-o"])
            .arg(out);
        c
    };
    let reference = dir.path().join("ref");
    assert!(learn(&reference).status().unwrap().success());
    let want = files(&reference);
    assert!(want.contains_key("graph.json") && want.contains_key("provenance.json"));
    for (k, delay_ms) in [0u64, 20, 80].into_iter().enumerate() {
        let out = dir.path().join(format!("run{k}"));
        let child =
            learn(&out).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
        let start = Instant::now();
        kill_when(child, || start.elapsed() >= Duration::from_millis(delay_ms));
        assert!(learn(&out).status().unwrap().success());
        assert_eq!(files(&out), want, "kill after {delay_ms} ms");
        assert!(temp_files(&out).is_empty(), "{:?}", temp_files(&out));
    }
}

#[test]
fn learn_resumes_from_the_finished_layers_of_a_killed_run() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // 24 filters, 64 images: learning a layer takes long enough to stop a run between layers.
    two_layer_cache(&cache, 24, 64);
    let learn = |out: &Path, seed: &str| {
        let mut c = expgraph();
        c.args(["learn", "--layers", "conv5_2,conv5_3", "--iterations", "20", "--seed", seed, "--cache"])
            .arg(&cache)
            .arg("-o")
            .arg(out);
        c
    };
    let reference = dir.path().join("ref");
    assert!(learn(&reference, "0").status().unwrap().success());
    let want = files(&reference);
    assert!(!reference.join("checkpoints").exists(), "checkpoints are removed once the graph is saved");

    // Killed once the top layer's checkpoint is there: the rerun loads it and learns only conv5_2.
    let out = dir.path().join("run");
    let top = out.join("checkpoints/conv5_3.safetensors");
    let child =
        learn(&out, "0").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    kill_when(child, || top.is_file());
    assert!(top.is_file() && !out.join("graph.json").exists(), "killed between the layers");
    let rerun = learn(&out, "0").output().unwrap();
    assert!(rerun.status.success(), "{}", common::stderr(&rerun));
    assert!(common::stderr(&rerun).contains("layer loaded from its checkpoint"), "{}", common::stderr(&rerun));
    assert_eq!(files(&out), want, "a resumed run ends with the bytes of an uninterrupted one");

    // A checkpoint of another run (another seed) in the folder is not used.
    let other = dir.path().join("other");
    let child =
        learn(&other, "0").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    kill_when(child, || other.join("checkpoints/conv5_3.safetensors").is_file());
    let seeded = learn(&other, "1").output().unwrap();
    assert!(seeded.status.success(), "{}", common::stderr(&seeded));
    assert!(common::stderr(&seeded).contains("ignoring the checkpoint of another run"), "{}", common::stderr(&seeded));
    let fresh = dir.path().join("fresh");
    assert!(learn(&fresh, "1").status().unwrap().success());
    assert_eq!(files(&other), files(&fresh));
}
