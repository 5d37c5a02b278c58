//! `mpirun -n R expgraph learn` and `… infer` (feature `mpi`): R = 2 and 3 ranks write the bytes
//! of a single process, and a rank that fails stops the job with a message naming it, leaving no
//! graph.
//!
//! Needs `mpirun` (Debian: openmpi-bin); skips with a message without it. CI runs it with
//! `cargo test --release -p expgraph-cli --features mpi --test mpi_cli`.
#![cfg(feature = "mpi")]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::{expgraph, stderr, two_layer_cache};

/// The graph's files (relative path → bytes), lock file aside.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != expgraph_io::LOCK_FILE))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

fn mpirun() -> Option<Command> {
    let found = Command::new("mpirun").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIP: mpirun not found (Debian: apt-get install openmpi-bin libopenmpi-dev)");
        return None;
    }
    let mut c = Command::new("mpirun");
    // Root in CI containers; more ranks than cores on small machines.
    c.args(["--allow-run-as-root", "--oversubscribe"]).env("RAYON_NUM_THREADS", "1");
    Some(c)
}

const LEARN: [&str; 6] = ["learn", "--layers", "conv5_2,conv5_3", "--iterations", "4", "--json"];

fn run(c: &mut Command) -> Output {
    c.output().unwrap()
}

#[test]
fn ranks_learn_the_bytes_of_a_single_process_and_a_failing_rank_stops_the_job() {
    let Some(_) = mpirun() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 100 images: 25 chunks of 4 images, 4 blocks of 8 chunks, so 2 ranks take 2 + 2 blocks and
    // 3 ranks 1 + 1 + 2.
    two_layer_cache(&d.join("cache"), 16, 100);
    let alone = d.join("alone");
    let out = run(expgraph().args(LEARN).arg("--cache").arg(d.join("cache")).arg("-o").arg(&alone));
    assert!(out.status.success(), "{}", stderr(&out));
    let want = files(&alone);
    assert!(want.contains_key("graph.safetensors") && want.contains_key("graph.json"));

    let bin = env!("CARGO_BIN_EXE_expgraph");
    for ranks in [2, 3] {
        let g = d.join(format!("ranks{ranks}"));
        let mut c = mpirun().unwrap();
        c.args(["-n", &ranks.to_string(), bin]).args(LEARN).arg("--cache").arg(d.join("cache")).arg("-o").arg(&g);
        let out = run(&mut c);
        assert!(out.status.success(), "{ranks} ranks: {}", stderr(&out));
        assert!(files(&g) == want, "{ranks} ranks wrote other bytes than one process");
        // Rank 0 reports what it exchanged, per layer.
        let report: Vec<serde_json::Value> =
            String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let rank0 = report.iter().find(|r| r.get("out").is_some()).expect("rank 0's summary");
        assert_eq!(rank0["ranks"], ranks);
        let traffic = rank0["traffic"].as_array().unwrap();
        assert_eq!(traffic.len(), 2, "{rank0}");
        assert!(traffic.iter().all(|t| t["received_bytes"].as_u64().unwrap() > 0), "{rank0}");
    }

    // Inference too: 3 ranks write the activations of one process.
    let infer = |out: &Path| {
        let mut c = vec!["infer".to_string(), "--graph".into(), alone.display().to_string()];
        c.extend(["--cache".into(), d.join("cache").display().to_string(), "-o".into(), out.display().to_string()]);
        c
    };
    let acts = d.join("acts");
    let out = run(expgraph().args(infer(&acts)));
    assert!(out.status.success(), "{}", stderr(&out));
    let acts3 = d.join("acts3");
    let out = run(mpirun().unwrap().args(["-n", "3", bin]).args(infer(&acts3)));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!files(&acts).is_empty() && files(&acts3) == files(&acts), "3 ranks inferred other bytes");

    // Rank 1 is given a cache that does not exist (MPMD launch): it stops the whole job, says
    // which rank failed and why, and no graph is written.
    let g = d.join("failed");
    let mut c = mpirun().unwrap();
    c.args(["-n", "1", bin]).args(LEARN).arg("--cache").arg(d.join("cache")).arg("-o").arg(&g);
    c.args([":", "-n", "1", bin]).args(LEARN).arg("--cache").arg(d.join("missing")).arg("-o").arg(&g);
    let out = run(&mut c);
    assert!(!out.status.success(), "the job must fail");
    let err = stderr(&out);
    assert!(err.contains("rank 1 of 2 failed") && err.contains("missing"), "{err}");
    assert!(!g.join("graph.json").exists() && !g.join("graph.safetensors").exists(), "no graph after a failed job");
}
