//! Sharded extraction end to end: `expgraph stats` once, `expgraph extract --shard I/N` as N
//! jobs (into one shared folder and into a folder of their own), `expgraph cache merge`, and a
//! cache byte-identical to a single run's.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use expgraph_backbone::ResNetDepth;

mod common;
use common::{expgraph, stderr, write_images, write_resnet_weights};

/// The cache's files (manifest and shard files; not the part records, locks or statistics),
/// path relative to `dir` → bytes.
fn cache_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if rel != "parts" {
                    stack.push(path);
                }
            } else if !rel.contains(".lock") && !rel.starts_with("norm-stats") {
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn shards_merged_equal_a_single_extraction_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let weights = d.join("resnet18-formula.safetensors");
    write_resnet_weights(&weights, ResNetDepth::R18);
    write_images(&d.join("images"), 7, 1);
    write_images(&d.join("negatives"), 3, 2);
    let stats = d.join("stats.safetensors");
    let made = json(
        &expgraph()
            .args(["stats", "--json", "--weights"])
            .arg(&weights)
            .arg("--negatives")
            .arg(d.join("negatives"))
            .arg("-o")
            .arg(&stats)
            .output()
            .unwrap(),
    );
    assert_eq!(made["negatives"], 3, "{made}");
    let extract = |out: &str, shard: Option<&str>, stats: &Path| {
        let mut cmd = expgraph();
        cmd.args(["extract", "--json", "--shard-size", "2", "--batch", "3", "--weights"])
            .arg(&weights)
            .arg("--images")
            .arg(d.join("images"))
            .arg("--stats")
            .arg(stats)
            .arg("-o")
            .arg(d.join(out));
        if let Some(s) = shard {
            cmd.args(["--shard", s]);
        }
        cmd.output().unwrap()
    };
    let single = json(&extract("single", None, &stats));
    assert_eq!(single["computed"], 7);

    // 7 images in shard files of 2: 4 files; 3 shards take files {0}, {1}, {2, 3}.
    let counts: Vec<u64> = [("shared", "2/3"), ("shared", "0/3"), ("other", "1/3")]
        .iter()
        .map(|(out, shard)| json(&extract(out, Some(shard), &stats))["computed"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, vec![3, 2, 2]);
    let early =
        expgraph().args(["learn", "--cache"]).arg(d.join("shared")).arg("-o").arg(d.join("g")).output().unwrap();
    assert!(!early.status.success());
    assert!(
        stderr(&early).contains("2 of the 3 shards") && stderr(&early).contains("cache merge"),
        "{}",
        stderr(&early)
    );

    let merged = json(
        &expgraph()
            .args(["cache", "merge", "--json", "--out"])
            .arg(d.join("shared"))
            .arg(d.join("other"))
            .output()
            .unwrap(),
    );
    assert_eq!((merged["shards"].as_u64(), merged["images"].as_u64()), (Some(3), Some(7)), "{merged}");
    assert_eq!(merged["key"], single["key"]);
    let (a, b) = (cache_files(&d.join("single")), cache_files(&d.join("shared")));
    assert!(a.contains_key("manifest.json") && a.len() == 1 + 4 * 3 * 2, "{:?}", a.keys().collect::<Vec<_>>());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, bytes) in &a {
        assert!(b[name] == *bytes, "{name} differs between the single run and the merged shards");
    }
}

#[test]
fn shards_refuse_bad_flags_and_other_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let weights = d.join("resnet18-formula.safetensors");
    write_resnet_weights(&weights, ResNetDepth::R18);
    write_images(&d.join("images"), 4, 1);
    write_images(&d.join("negatives"), 4, 2);
    let shard = |out: &str, spec: &str, stats: Option<&Path>| {
        let mut cmd = expgraph();
        cmd.args(["extract", "--shard-size", "2", "--weights"])
            .arg(&weights)
            .arg("--images")
            .arg(d.join("images"))
            .arg("-o")
            .arg(d.join(out))
            .args(["--shard", spec]);
        if let Some(s) = stats {
            cmd.arg("--stats").arg(s);
        } else {
            cmd.arg("--negatives").arg(d.join("negatives"));
        }
        cmd.output().unwrap()
    };
    let bad = shard("a", "2/2", None);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("indices start at 0"), "{}", stderr(&bad));
    let no_stats = shard("a", "0/2", None);
    assert_eq!(no_stats.status.code(), Some(1));
    assert!(stderr(&no_stats).contains("expgraph stats"), "{}", stderr(&no_stats));

    // Two statistics files: over all 4 negatives and over the first 2.
    let stats = |name: &str, limit: &str| {
        let path = d.join(name);
        let out = expgraph()
            .args(["stats", "--negatives-limit", limit, "--weights"])
            .arg(&weights)
            .arg("--negatives")
            .arg(d.join("negatives"))
            .arg("-o")
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        path
    };
    let (all, two) = (stats("all.safetensors", "4"), stats("two.safetensors", "2"));
    assert!(shard("a", "0/2", Some(&all)).status.success());
    assert!(shard("b", "1/2", Some(&two)).status.success());
    let merge = expgraph().args(["cache", "merge", "--out"]).arg(d.join("a")).arg(d.join("b")).output().unwrap();
    assert_eq!(merge.status.code(), Some(1));
    assert!(stderr(&merge).contains("normalization statistics"), "{}", stderr(&merge));
    assert!(!d.join("a/manifest.json").exists());
}
