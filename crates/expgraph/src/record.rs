//! The machine-readable record a benchmark run writes (`cargo xtask bench-*`, `expgraph run`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Host the run happened on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    /// CPU model name.
    pub cpu: String,
    /// The CPU's family and model numbers (`/proc/cpuinfo`), which tell apart generations that
    /// share a name: "AMD EPYC" is family 25 model 1 (Zen 3) or model 17 (Zen 4). `null` where
    /// unknown (and in records older than these fields).
    #[serde(default)]
    pub family: Option<u32>,
    #[serde(default)]
    pub model: Option<u32>,
    /// Logical cores available to the process.
    pub cores: usize,
    /// Total memory, MiB.
    pub mem: u64,
}

impl Host {
    /// Read the host description from `/proc` (falls back to "unknown" fields elsewhere).
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |key: &str| {
            cpuinfo.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == key).then(|| v.trim().to_string())
            })
        };
        let cpu = field("model name").unwrap_or_else(|| "unknown".into());
        let number = |key: &str| field(key).and_then(|v| v.parse().ok());
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let mem = expgraph_io::total_memory_bytes().map(|b| b >> 20).unwrap_or(0);
        Self { cpu, family: number("cpu family"), model: number("model"), cores, mem }
    }
}

/// Peak resident set size of this process so far, MiB (0 where `/proc` is absent).
pub fn peak_rss_mb() -> u64 {
    expgraph_io::peak_rss_bytes().map(|b| b >> 20).unwrap_or(0)
}

/// Wall-clock seconds of each stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Feature extraction (including normalization statistics).
    pub extract: f64,
    /// Graph learning.
    pub learn: f64,
    /// Inference and part localization.
    pub localize: f64,
    /// Metrics.
    pub eval: f64,
}

/// Localization results of one method.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MethodResult {
    /// Mean over parts of the mean normalized distance (spec §4.2), averaged over the draws of
    /// annotated examples.
    pub mean_normalized_distance: f64,
    /// Mean normalized distance per part (averaged over the draws).
    pub per_part: BTreeMap<String, f64>,
    /// Share (0–1) of objects whose predicted part box (the annotated examples' mean part size)
    /// has IoU ≥ 0.5 with the true part box, over parts and draws (spec §4.2).
    #[serde(default)]
    pub detection_accuracy: f64,
    /// Share (0–1) of objects whose predicted centre lies in the true part box (spec §4.2).
    #[serde(default)]
    pub loc_rate: f64,
    /// Mean normalized distance (over parts) of each draw of annotated examples.
    #[serde(default)]
    pub draws: Vec<f64>,
    /// Sample standard deviation of `draws`.
    #[serde(default)]
    pub std_over_draws: f64,
}

/// Localization results of all methods.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Localization {
    /// Part names evaluated.
    pub parts: Vec<String>,
    /// Objects evaluated per part (those having it).
    #[serde(default)]
    pub objects_per_part: BTreeMap<String, usize>,
    /// Draws of annotated examples per part (seeded; draw 0 is what the report shows).
    #[serde(default)]
    pub draws: usize,
    /// Draws replaced (all parts together) because their annotated examples selected no unit
    /// for graph nodes or raw filters.
    #[serde(default)]
    pub failed_draws: usize,
    /// `graph`, `prior_mean`, `raw_filter`.
    pub methods: BTreeMap<String, MethodResult>,
}

/// Location instability (spec §4.3), lower is better.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stability {
    /// Explanatory-graph protocol (top nodes per layer, top-20 images) for graph nodes, each in
    /// the view inference chose for the image.
    pub graph_nodes: f64,
    /// The same protocol for raw filters (argmax unit of the normalized map,
    /// `computeStability_raw.m`).
    pub raw_filters: f64,
    /// The explanatory-graph protocol as the reference computes it for nodes: per node and
    /// image, the better-scoring of the two orientations (`getAlterProbPos`). `None` without
    /// mirrored views.
    #[serde(default)]
    pub graph_nodes_per_node_view: Option<f64>,
    /// The ICNN protocol (all units, top-100 images among those with the landmark), raw filters
    /// on the unnormalized maps as the ICNN code does: comparable with its published 0.137
    /// (CUB), 0.139 (VOC), 0.144 (ILSVRC) for VGG-16 raw filters.
    #[serde(default)]
    pub icnn: Option<StabilityPair>,
}

/// Graph nodes and raw filters under one protocol.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StabilityPair {
    /// Graph nodes.
    pub graph_nodes: f64,
    /// Raw filters.
    pub raw_filters: f64,
}

/// How inference chose the objects' views (spec §1.7): the graph explains objects in one
/// facing, so a good view choice shows (almost) every object facing the same way.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ViewChoice {
    /// Images inference ran on.
    pub images: usize,
    /// Of them, those shown mirrored.
    pub mirrored: usize,
    /// Images whose facing the annotations tell (beak, else head, left or right of the tail).
    pub facing_known: usize,
    /// Share (0.5–1) of those shown to the graph facing the majority direction.
    pub facing_agreement: f64,
}

/// The JSON record of one benchmark run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRecord {
    /// Data set name (`synthetic-cub`, `cub-200-2011`, `pascal-part/<cat>`, `ilsvrc-animal-part/<synset>`).
    pub dataset: String,
    /// `git rev-parse HEAD` of the code that ran (or `unknown`).
    pub git_rev: String,
    /// The machine.
    pub host: Host,
    /// Every setting of the run.
    pub config: serde_json::Value,
    /// Images the graph was learned on.
    pub images_learn: usize,
    /// Images localization was evaluated on.
    pub images_eval: usize,
    /// Stage timings, seconds.
    pub timings_s: Timings,
    /// Peak resident memory, MiB.
    pub peak_rss_mb: u64,
    /// Part localization results.
    pub localization: Localization,
    /// Location instability.
    pub stability: Stability,
    /// The inputs the numbers come from: the feature cache's key and feature space, and the
    /// digest of the graph (see `expgraph_graph::Provenance`).
    #[serde(default)]
    pub provenance: expgraph_graph::Provenance,
    /// How inference chose the views (absent in records from before it was measured).
    #[serde(default)]
    pub views: Option<ViewChoice>,
}

impl BenchRecord {
    /// A Markdown table of the localization results (one row per method, one column per part).
    pub fn markdown_table(&self) -> String {
        let parts = &self.localization.parts;
        let mut s = String::from("| method | mean | ± std over draws | detection acc. | LOC rate |");
        for p in parts {
            s.push_str(&format!(" {p} |"));
        }
        s.push_str("\n|---|---|---|---|---|");
        for _ in parts {
            s.push_str("---|");
        }
        s.push('\n');
        for (name, m) in &self.localization.methods {
            s.push_str(&format!(
                "| {name} | {:.4} | {:.4} | {:.3} | {:.3} |",
                m.mean_normalized_distance, m.std_over_draws, m.detection_accuracy, m.loc_rate
            ));
            for p in parts {
                match m.per_part.get(p) {
                    Some(v) => s.push_str(&format!(" {v:.4} |")),
                    None => s.push_str(" – |"),
                }
            }
            s.push('\n');
        }
        s.push_str(&format!(
            "\n{} draw(s) of annotated examples per part ({} replaced: no unit selected); objects per part: {}\n",
            self.localization.draws,
            self.localization.failed_draws,
            parts
                .iter()
                .map(|p| format!("{p} {}", self.localization.objects_per_part.get(p).copied().unwrap_or(0)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let st = &self.stability;
        s.push_str(&format!(
            "\nLocation instability (lower is better), explanatory-graph protocol: graph nodes {:.4}{}, raw \
             filters {:.4}\n",
            st.graph_nodes,
            st.graph_nodes_per_node_view.map_or(String::new(), |v| format!(" ({v:.4} with each node's better view)")),
            st.raw_filters
        ));
        if let Some(icnn) = &st.icnn {
            s.push_str(&format!(
                "ICNN protocol: graph nodes {:.4}, raw filters (unnormalized maps) {:.4}\n",
                icnn.graph_nodes, icnn.raw_filters
            ));
        }
        if let Some(v) = &self.views {
            s.push_str(&format!(
                "Views: {} of {} images mirrored; facing agreement {:.3} over {} with a known facing\n",
                v.mirrored, v.images, v.facing_agreement, v.facing_known
            ));
        }
        s
    }
}

/// Errors writing a record.
#[derive(Debug, thiserror::Error)]
#[error("writing {path}: {source}")]
pub struct WriteError {
    path: std::path::PathBuf,
    source: std::io::Error,
}

/// Write `value` as pretty JSON to `path` atomically (temp file in the same folder, then rename).
pub fn write_json<T: Serialize>(path: &std::path::Path, value: &T) -> Result<(), WriteError> {
    expgraph_io::write_json(path, value).map_err(|source| WriteError { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::Host;

    #[test]
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    fn the_host_names_its_cpu_family_and_model() {
        let host = Host::detect();
        assert!(host.family.is_some() && host.model.is_some() && host.cpu != "unknown", "{host:?}");
    }

    #[test]
    fn records_older_than_family_and_model_still_read() {
        let host: Host = serde_json::from_str(r#"{"cpu": "AMD EPYC", "cores": 2, "mem": 24105}"#).unwrap();
        assert_eq!((host.family, host.model, host.cores), (None, None, 2));
    }
}
