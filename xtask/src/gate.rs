//! `cargo xtask bench-gate` and `cargo xtask work-gate`: the benchmark checks CI runs, which fail
//! on a regression.
//!
//! - **Quality** (`bench-gate`): in a benchmark record, graph nodes beat both baselines on the
//!   mean normalized distance and are more stable than raw filters (every stability protocol the
//!   record has), and no metric is worse than the committed baseline record by more than its
//!   tolerance ([`METRICS`]). The record is deterministic for a given CPU kind, so tolerances are
//!   tight; they absorb the rounding differences of other CPUs (AVX2 or AVX-512 kernels).
//! - **Work** (`work-gate`): the instructions of one image's E-step on the fixture layer
//!   (`benches/examples/estep_ops.rs`, counted by callgrind: deterministic for a binary) may not
//!   grow by more than [`WORK_TOLERANCE`].
//!
//! A baseline moves only on purpose: rerun with `--update` and commit the new file together
//! with the change that moved it, saying why in the commit message.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Arguments of `bench-gate`.
#[derive(clap::Args, Debug)]
pub struct BenchGateArgs {
    /// The benchmark record to check (e.g. `target/bench-synth.json`).
    #[arg(long)]
    pub record: PathBuf,
    /// The committed baseline record.
    #[arg(long, default_value = "benches/baselines/bench-synth-quick.json")]
    pub baseline: PathBuf,
    /// Replace the baseline with the record (after the quality checks pass) instead of comparing.
    #[arg(long)]
    pub update: bool,
}

/// Arguments of `work-gate`.
#[derive(clap::Args, Debug)]
pub struct WorkGateArgs {
    /// The committed instruction count.
    #[arg(long, default_value = "benches/baselines/estep-instructions.json")]
    pub baseline: PathBuf,
    /// Fail (instead of skipping) when valgrind is not installed.
    #[arg(long)]
    pub require_valgrind: bool,
    /// Replace the baseline with this machine's count instead of comparing.
    #[arg(long)]
    pub update: bool,
}

/// Whether a smaller or a larger value is better.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Better {
    Lower,
    Higher,
}

/// The compared metrics: JSON pointer into the record, which way is better, absolute tolerance.
/// Distances and instabilities are fractions of the frame diagonal (graph ≈ 0.03 on
/// `bench-synth --quick`); rates and the facing agreement are shares (one object of 47 is
/// 0.021). Measured: the same run with gemm's AVX2 kernels instead of AVX-512 moved no metric
/// by more than 2e-9, so these only absorb what the hardware cannot explain.
const METRICS: [(&str, Better, f64); 13] = [
    ("/localization/methods/graph/mean_normalized_distance", Better::Lower, 0.0005),
    ("/localization/methods/raw_filter/mean_normalized_distance", Better::Lower, 0.0005),
    ("/localization/methods/prior_mean/mean_normalized_distance", Better::Lower, 0.0005),
    ("/localization/methods/graph/loc_rate", Better::Higher, 0.01),
    ("/localization/methods/graph/detection_accuracy", Better::Higher, 0.01),
    ("/localization/methods/raw_filter/loc_rate", Better::Higher, 0.01),
    ("/stability/graph_nodes", Better::Lower, 0.0005),
    ("/stability/raw_filters", Better::Lower, 0.0005),
    ("/stability/graph_nodes_per_node_view", Better::Lower, 0.0005),
    ("/stability/icnn/graph_nodes", Better::Lower, 0.0005),
    ("/stability/icnn/raw_filters", Better::Lower, 0.0005),
    ("/views/facing_agreement", Better::Higher, 0.025),
    ("/images_learn", Better::Higher, 0.0),
];

/// Relative growth of the E-step instruction count that fails the work gate.
pub const WORK_TOLERANCE: f64 = 0.01;

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))
}

fn number(v: &Value, pointer: &str) -> Option<f64> {
    v.pointer(pointer).and_then(Value::as_f64)
}

/// The quality checks that need no baseline; each failure as one line.
fn quality_failures(record: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let distance = |m: &str| number(record, &format!("/localization/methods/{m}/mean_normalized_distance"));
    match (distance("graph"), distance("raw_filter"), distance("prior_mean")) {
        (Some(g), Some(r), Some(p)) => {
            let beats = |baseline: f64| g.partial_cmp(&baseline) == Some(std::cmp::Ordering::Less);
            if !beats(r) || !beats(p) {
                out.push(format!(
                    "graph nodes do not beat both baselines: graph {g:.4}, raw filters {r:.4}, prior {p:.4}"
                ));
            }
        }
        _ => out.push("the record has no localization of graph, raw_filter and prior_mean".into()),
    }
    for (nodes, raw, what) in [
        ("/stability/graph_nodes", "/stability/raw_filters", "explanatory-graph protocol"),
        ("/stability/icnn/graph_nodes", "/stability/icnn/raw_filters", "ICNN protocol"),
    ] {
        if let (Some(n), Some(r)) = (number(record, nodes), number(record, raw)) {
            // NaN counts as a failure too.
            if n.partial_cmp(&r) != Some(std::cmp::Ordering::Less) {
                out.push(format!("nodes are not more stable than raw filters ({what}): {n:.4} vs {r:.4}"));
            }
        }
    }
    out
}

/// Baseline comparisons: `(failures, table of every metric)`.
fn regressions(record: &Value, baseline: &Value) -> (Vec<String>, String) {
    let mut failures = Vec::new();
    let mut table = String::from("| metric | baseline | now | change | tolerance |\n|---|---|---|---|---|\n");
    for (pointer, better, tolerance) in METRICS {
        let (Some(b), now) = (number(baseline, pointer), number(record, pointer)) else {
            continue; // not in the baseline (an older record): nothing to compare
        };
        let Some(n) = now else {
            failures.push(format!("{pointer}: in the baseline ({b:.4}) but missing from the record"));
            continue;
        };
        let worse = match better {
            Better::Lower => n - b,
            Better::Higher => b - n,
        };
        let flag = if worse > tolerance + 1e-12 { " **worse**" } else { "" };
        table.push_str(&format!("| {pointer} | {b:.4} | {n:.4} | {:+.4}{flag} | {tolerance} |\n", n - b));
        if !flag.is_empty() {
            failures.push(format!("{pointer}: {n:.4} is worse than the baseline {b:.4} by more than {tolerance}"));
        }
    }
    (failures, table)
}

/// Run `bench-gate`.
pub fn bench_gate(a: BenchGateArgs) -> Result<()> {
    let record = read_json(&a.record)?;
    let quality = quality_failures(&record);
    if a.update {
        if !quality.is_empty() {
            bail!("not updating {}: {}", a.baseline.display(), quality.join("; "));
        }
        expgraph::record::write_json(&a.baseline, &record)?;
        println!(
            "baseline {} replaced by {}; commit it with the change that moved it",
            a.baseline.display(),
            a.record.display()
        );
        return Ok(());
    }
    let baseline = read_json(&a.baseline)?;
    let (regress, table) = regressions(&record, &baseline);
    println!("{table}");
    let failures: Vec<String> = quality.into_iter().chain(regress).collect();
    if failures.is_empty() {
        println!("bench gate passed: {} against {}", a.record.display(), a.baseline.display());
        return Ok(());
    }
    for f in &failures {
        eprintln!("bench gate: {f}");
    }
    bail!(
        "{} benchmark check(s) failed (table above). If the change is intended, run `cargo xtask bench-gate \
         --record {} --update` and commit the baseline with the reason",
        failures.len(),
        a.record.display()
    )
}

/// Instructions of one image's E-step on the fixture layer: callgrind's totals of `N = 3` and
/// `N = 1` passes, differenced and halved (start-up and fixture building cancel out). The
/// portable code is counted (`EXPGRAPH_ISA=baseline`): its instructions follow the E-step's
/// operations one for one, and valgrind's CPU (AVX2 where the host has it, never AVX-512) does
/// not choose the path.
fn estep_instructions(example: &Path) -> Result<u64> {
    let mut totals = Vec::new();
    for passes in ["1", "3"] {
        let out_file = tempfile::NamedTempFile::new().context("temporary file for callgrind")?;
        let output = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out_file.path().display()))
            .arg(example)
            .args(["ours", passes])
            .env("EXPGRAPH_ISA", "baseline")
            .output()
            .context("running valgrind")?;
        if !output.status.success() {
            bail!("valgrind failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        let log = String::from_utf8_lossy(&output.stderr);
        let collected = log
            .lines()
            .find_map(|l| l.split("Collected :").nth(1))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .context("no `Collected :` line in callgrind's output")?;
        totals.push(collected);
    }
    Ok(totals[1].saturating_sub(totals[0]) / 2)
}

/// Run `work-gate`.
pub fn work_gate(a: WorkGateArgs) -> Result<()> {
    if Command::new("valgrind").arg("--version").output().is_err() {
        if a.require_valgrind {
            bail!("valgrind is not installed (apt-get install valgrind)");
        }
        println!("SKIPPED: work gate needs valgrind (apt-get install valgrind)");
        return Ok(());
    }
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        // `--workspace`: the workspace's feature set, so the build CI already did is reused.
        .args(["build", "--release", "--workspace", "--example", "estep_ops"])
        .status()
        .context("building the estep_ops example")?;
    if !status.success() {
        bail!("building the estep_ops example failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let example = target.join("release/examples/estep_ops");
    let now = estep_instructions(&example)?;
    if a.update {
        let value = serde_json::json!({
            "what": "instructions of one image's E-step on the conv4-sized fixture layer (callgrind, the portable code: `EXPGRAPH_ISA=baseline estep_ops ours 3` minus `ours 1`, halved)",
            "instructions_per_image": now,
        });
        expgraph::record::write_json(&a.baseline, &value)?;
        println!(
            "baseline {} set to {now} instructions; commit it with the change that moved it",
            a.baseline.display()
        );
        return Ok(());
    }
    let baseline = read_json(&a.baseline)?;
    let base = baseline
        .get("instructions_per_image")
        .and_then(Value::as_u64)
        .with_context(|| format!("{}: no instructions_per_image", a.baseline.display()))?;
    let change = now as f64 / base as f64 - 1.0;
    println!("E-step instructions per image: baseline {base}, now {now} ({:+.2} %)", 100.0 * change);
    if change > WORK_TOLERANCE {
        bail!(
            "the E-step grew by {:.2} % (> {:.0} %). If intended, run `cargo xtask work-gate --update` and commit \
             the baseline with the reason",
            100.0 * change,
            100.0 * WORK_TOLERANCE
        );
    }
    println!("work gate passed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(graph: f64, raw: f64, prior: f64, nodes: f64, raw_st: f64) -> Value {
        json!({
            "images_learn": 48,
            "localization": {"methods": {
                "graph": {"mean_normalized_distance": graph, "loc_rate": 0.1, "detection_accuracy": 0.1},
                "raw_filter": {"mean_normalized_distance": raw, "loc_rate": 0.08},
                "prior_mean": {"mean_normalized_distance": prior},
            }},
            "stability": {"graph_nodes": nodes, "raw_filters": raw_st},
        })
    }

    #[test]
    fn quality_needs_the_graph_to_beat_both_baselines_and_raw_stability() {
        assert!(quality_failures(&record(0.03, 0.06, 0.14, 0.03, 0.11)).is_empty());
        assert_eq!(quality_failures(&record(0.07, 0.06, 0.14, 0.03, 0.11)).len(), 1);
        assert_eq!(quality_failures(&record(0.03, 0.06, 0.14, 0.12, 0.11)).len(), 1);
        let mut icnn = record(0.03, 0.06, 0.14, 0.03, 0.11);
        icnn["stability"]["icnn"] = json!({"graph_nodes": 0.2, "raw_filters": 0.1});
        assert!(quality_failures(&icnn)[0].contains("ICNN"));
        assert_eq!(quality_failures(&json!({})).len(), 1);
    }

    #[test]
    fn regressions_respect_direction_and_tolerance() {
        let base = record(0.030, 0.06, 0.14, 0.030, 0.11);
        // Within tolerance, and better: pass.
        assert!(regressions(&record(0.0304, 0.06, 0.14, 0.025, 0.11), &base).0.is_empty());
        // Graph distance worse by 0.001 > 0.0005: one failure, named in the table.
        let (fails, table) = regressions(&record(0.031, 0.06, 0.14, 0.030, 0.11), &base);
        assert_eq!(fails.len(), 1, "{fails:?}");
        assert!(fails[0].contains("graph/mean_normalized_distance") && table.contains("**worse**"));
        // A higher-is-better metric that dropped.
        let mut lower_rate = base.clone();
        lower_rate["localization"]["methods"]["graph"]["loc_rate"] = json!(0.05);
        assert_eq!(regressions(&lower_rate, &base).0.len(), 1);
        // A metric the baseline has but the record lacks fails; one the baseline lacks is skipped.
        let mut missing = base.clone();
        missing["stability"].as_object_mut().unwrap().remove("graph_nodes");
        assert_eq!(regressions(&missing, &base).0.len(), 1);
        assert!(regressions(&base, &json!({})).0.is_empty());
    }
}
