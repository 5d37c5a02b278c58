//! Tidy checks (rust-analyzer style): the workspace's shape rules, enforced on every test run.
//!
//! * the dependency graph follows the one-way data flow images → features → graph →
//!   localization → evaluation → report;
//! * the graph crates never pull in candle or an image decoder;
//! * a default build links no system library (no `-sys` crate that needs an apt package);
//! * every `spec §N` cited in the code has its section in `docs/algorithm.md`;
//! * every crate has a README; one atomic writer and one mirror formula.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace root").to_path_buf()
}

/// `cargo metadata` of the workspace, resolved for this host with default features.
fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let host = String::from_utf8(Command::new("rustc").arg("-vV").output().expect("rustc -vV").stdout)
        .expect("utf-8")
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("host triple");
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--filter-platform", &host])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

struct Graph {
    /// package id → (name, links)
    packages: BTreeMap<String, (String, Option<String>)>,
    /// package id → its resolved features
    features: BTreeMap<String, Vec<String>>,
    /// package id → ids of its normal and build dependencies
    deps: BTreeMap<String, Vec<String>>,
    /// workspace member ids
    members: Vec<String>,
}

fn graph() -> Graph {
    let m = metadata();
    let packages = m["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            let id = p["id"].as_str().expect("id").to_string();
            (id, (p["name"].as_str().expect("name").to_string(), p["links"].as_str().map(str::to_string)))
        })
        .collect();
    let mut deps = BTreeMap::new();
    let mut features = BTreeMap::new();
    for node in m["resolve"]["nodes"].as_array().expect("resolve") {
        let on = node["features"].as_array().into_iter().flatten().filter_map(|f| f.as_str().map(str::to_string));
        features.insert(node["id"].as_str().expect("id").to_string(), on.collect());
        let runtime: Vec<String> = node["deps"]
            .as_array()
            .expect("deps")
            .iter()
            .filter(|d| d["dep_kinds"].as_array().expect("dep_kinds").iter().any(|k| k["kind"].as_str() != Some("dev")))
            .map(|d| d["pkg"].as_str().expect("pkg").to_string())
            .collect();
        deps.insert(node["id"].as_str().expect("id").to_string(), runtime);
    }
    let members =
        m["workspace_members"].as_array().expect("members").iter().map(|v| v.as_str().unwrap().to_string()).collect();
    Graph { packages, features, deps, members }
}

impl Graph {
    fn name(&self, id: &str) -> &str {
        &self.packages[id].0
    }

    fn id(&self, name: &str) -> &str {
        self.members.iter().find(|id| self.name(id) == name).unwrap_or_else(|| panic!("no workspace member {name}"))
    }

    /// Every package a build of `id` compiles (normal and build dependencies, transitively).
    fn closure(&self, id: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![id.to_string()];
        while let Some(p) = stack.pop() {
            if seen.insert(p.clone()) {
                stack.extend(self.deps.get(&p).into_iter().flatten().cloned());
            }
        }
        seen
    }
}

/// Rank of each workspace crate along the data flow; a crate may depend only on lower ranks.
const RANKS: &[(&str, u32)] = &[
    ("expgraph-geometry", 0),
    ("expgraph-io", 0),
    ("expgraph-alloc", 0),
    // images → features
    ("expgraph-cache", 1),
    ("expgraph-backbone", 1),
    ("expgraph-datasets", 1),
    ("expgraph-features", 2),
    // a backbone fine-tuned per category feeds extraction again (weights in, weights out)
    ("expgraph-finetune", 3),
    // → graph
    ("expgraph-disentangle", 3),
    ("expgraph-graph", 3),
    ("expgraph-cliques", 4),
    ("expgraph-learn", 5),
    // → localization → evaluation → report
    ("expgraph-localize", 6),
    ("expgraph-eval", 7),
    ("expgraph-report", 8),
    // facade and front ends
    ("expgraph", 9),
    // → seen, interactively
    ("expgraph-explore", 9),
    ("expgraph-cli", 10),
    ("xtask", 10),
    ("expgraph-benches", 10),
];

fn rank(name: &str) -> u32 {
    RANKS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("tidy: give the new crate {name} a rank in RANKS"))
        .1
}

#[test]
fn dependencies_follow_the_data_flow() {
    let g = graph();
    let mut bad = Vec::new();
    for member in &g.members {
        let from = g.name(member);
        for dep in &g.deps[member] {
            if g.members.contains(dep) && rank(g.name(dep)) >= rank(from) {
                bad.push(format!("{from} (rank {}) → {} (rank {})", rank(from), g.name(dep), rank(g.name(dep))));
            }
        }
    }
    assert!(bad.is_empty(), "dependency edges against the data flow:\n{}", bad.join("\n"));
}

#[test]
fn graph_crates_touch_no_device_and_no_image_decoder() {
    let g = graph();
    for name in [
        "expgraph-geometry",
        "expgraph-io",
        "expgraph-cache",
        "expgraph-graph",
        "expgraph-disentangle",
        "expgraph-cliques",
        "expgraph-learn",
        "expgraph-localize",
        "expgraph-eval",
    ] {
        let pulled: Vec<String> = g
            .closure(g.id(name))
            .iter()
            .map(|id| g.name(id).to_string())
            .filter(|n| n.starts_with("candle") || n == "image" || n == "cudarc")
            .collect();
        assert!(pulled.is_empty(), "{name} pulls in {pulled:?}");
    }
}

/// `-sys` crates that compile their own bundled C sources (a C compiler suffices, as for any
/// Rust build) or bind the OS itself. Any other `-sys` crate, or any crate that probes for a
/// system library (`pkg-config`, `vcpkg`, `system-deps`), needs a system package.
const BUNDLED_OR_OS: &[&str] = &["libmimalloc-sys", "linux-raw-sys", "windows-sys", "dirs-sys", "js-sys", "web-sys"];
/// `-sys` crates that compile their bundled C sources only with a feature, which must be on:
/// SQLite of the explorer's study (`rusqlite`'s `bundled`).
const BUNDLED_WITH: &[(&str, &str)] = &[("libsqlite3-sys", "bundled")];

#[test]
fn default_build_links_no_system_library() {
    let g = graph();
    let mut all = BTreeSet::new();
    for m in &g.members {
        all.extend(g.closure(m));
    }
    let offenders: Vec<String> = all
        .iter()
        .filter(|id| {
            let name = &g.packages[*id].0;
            let probes_system = g
                .deps
                .get(*id)
                .into_iter()
                .flatten()
                .any(|d| ["pkg-config", "vcpkg", "system-deps"].contains(&g.name(d)));
            let bundled = BUNDLED_WITH
                .iter()
                .any(|(n, f)| n == name && g.features.get(*id).is_some_and(|on| on.iter().any(|x| x == f)));
            !BUNDLED_OR_OS.contains(&name.as_str()) && !bundled && (name.ends_with("-sys") || probes_system)
        })
        .map(|id| format!("{} (links: {:?})", g.name(id), g.packages[id].1))
        .collect();
    assert!(
        offenders.is_empty(),
        "the default build would need a system library through {offenders:?}; put it behind an opt-in feature \
         or use a pure-Rust crate"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "benches"] {
        rust_files(&root().join(dir), &mut files);
    }
    files.into_iter().map(|p| (p.clone(), std::fs::read_to_string(&p).expect("utf-8 source"))).collect()
}

/// The part of a source file before its first `#[cfg(test)]` (tests may spell formulas out, so
/// test files and modules are not checked).
fn non_test(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

#[test]
fn every_cited_spec_section_resolves_in_the_repo() {
    let doc = std::fs::read_to_string(root().join("docs/algorithm.md")).expect("docs/algorithm.md");
    let headings: BTreeSet<String> = doc
        .lines()
        .filter(|l| l.starts_with('#'))
        .filter_map(|l| l.trim_start_matches('#').split_whitespace().next().map(str::to_string))
        .collect();
    let mut missing = BTreeSet::new();
    for (path, text) in sources() {
        for (i, _) in text.match_indices("spec §") {
            let rest = &text[i + "spec §".len()..];
            let num: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
            let num = num.trim_end_matches('.');
            if !num.is_empty() && !headings.contains(&format!("§{num}")) {
                missing.insert(format!("§{num} ({})", path.display()));
            }
        }
    }
    assert!(missing.is_empty(), "cited but not in docs/algorithm.md: {missing:?}");
}

#[test]
fn every_crate_has_a_readme() {
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root().join("crates")).expect("crates/") {
        let dir = entry.expect("entry").path();
        if dir.join("Cargo.toml").is_file() && !dir.join("README.md").is_file() {
            missing.push(dir.display().to_string());
        }
    }
    assert!(missing.is_empty(), "crates without a README: {missing:?}");
}

#[test]
fn one_atomic_writer_one_safetensors_encoder_and_one_mirror_formula() {
    // Files that may rename or persist: the writer itself, whole-folder swaps, downloads.
    let rename_ok = [
        "expgraph-io/src/lib.rs",
        "expgraph-report/src/write.rs",
        "expgraph-datasets/src/synth.rs",
        "xtask/src/fetch.rs",
        "xtask/src/chromium.rs",
    ];
    let mut bad = Vec::new();
    for (path, text) in sources() {
        let p = path.to_string_lossy().replace('\\', "/");
        if p.contains("/tests/") {
            continue;
        }
        let code = non_test(&text);
        if (code.contains("fs::rename(") || code.contains(".persist(")) && !rename_ok.iter().any(|ok| p.ends_with(ok)) {
            bad.push(format!("{p}: renames a file itself; use expgraph_io::write_atomic"));
        }
        if code.contains("safetensors::serialize(") && !p.ends_with("expgraph-cache/src/owned.rs") {
            bad.push(format!(
                "{p}: serializes safetensors itself; use expgraph_cache::serialize_safetensors (byte-deterministic)"
            ));
        }
        if !p.contains("expgraph-geometry/") && (code.contains("+ 1.0 - ") || code.contains("225.0 - ")) {
            bad.push(format!("{p}: writes the mirror formula; use expgraph_geometry::mirror"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
