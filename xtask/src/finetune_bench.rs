//! `cargo xtask bench-synth --finetune`: the benchmark with the given backbone weights and with
//! the same weights fine-tuned per category (object crops vs the negatives, `expgraph-finetune`)
//! on a separate generated training set (another seed: a training split, as the paper's CNNs
//! were presumably fine-tuned on CUB's), side by side in one JSON record and one table.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use expgraph::backbone::{resolve_weights, WeightSource};
use expgraph::pipeline::{extraction_objects, synthetic_dataset, DataSource};
use expgraph::record::BenchRecord;
use expgraph_finetune::{BaseWeights, FinetuneParams, FinetuneValidParams, TrainingSet};

use crate::bench::{pipeline_config, run_pipeline, CommonArgs};

/// Seed offset of the fine-tuning set ("finetune"), so that it shares no object with the
/// benchmark's set of the same `--seed`.
const TRAINING_SET_SEED: u64 = 0x6669_6e65_7475_6e65;

/// Side of the fine-tuning inputs (the paper's crops).
const INPUT_SIZE: usize = 224;

/// The `--finetune*` flags of `bench-synth`.
#[derive(clap::Args, Debug, Clone)]
pub struct FinetuneArgs {
    /// Also fine-tune the backbone (object crops of a separate generated training set vs the
    /// negatives) and run the benchmark with both weights, side by side.
    #[arg(long)]
    pub finetune: bool,
    /// Fine-tuning epochs.
    #[arg(long, default_value_t = 3, requires = "finetune")]
    pub finetune_epochs: usize,
    /// First trained layer (default: conv4_1 for VGG-16, layer4 for a ResNet).
    #[arg(long, value_name = "LAYER", requires = "finetune")]
    pub finetune_from: Option<String>,
    /// Objects of the fine-tuning set [default: as many as the benchmark's].
    #[arg(long, value_name = "N", requires = "finetune")]
    pub finetune_objects: Option<usize>,
}

impl FinetuneArgs {
    fn params(&self, seed: u64) -> Result<FinetuneValidParams> {
        let mut params = FinetuneParams::default().epochs(self.finetune_epochs).seed(seed).resume(true);
        if let Some(layer) = &self.finetune_from {
            params = params.train_from(layer.clone());
        }
        Ok(params.check()?)
    }
}

/// Whether `tuned` already holds the fine-tuning of `base` on `data` with `params` (its
/// metadata says so), so that a rerun skips the training.
fn up_to_date(tuned: &Path, base: &BaseWeights, data: &TrainingSet, params: &FinetuneValidParams) -> bool {
    let Ok(meta) = expgraph_finetune::read_metadata(tuned) else { return false };
    meta["base_weights"]["blake3"] == base.digest()
        && meta["data"]["digest"] == data.digest()
        && meta["params"] == params.to_json()
}

pub fn run(data: DataSource, c: CommonArgs, ft: &FinetuneArgs) -> Result<()> {
    let name = "synthetic-cub";
    let work = c.work.clone().unwrap_or_else(|| PathBuf::from("target/xtask/synthetic-cub-finetune"));
    let out = c.out.clone().unwrap_or_else(|| work.join("record.json"));
    let DataSource::Synthetic { images, .. } = data else {
        anyhow::bail!("--finetune runs on the generated data set only")
    };
    let base_config = pipeline_config(name, data.clone(), c.clone(), work.join("base"));

    // The fine-tuning: a disjoint generated set against the benchmark's negatives.
    let train_set = synthetic_dataset(&work, ft.finetune_objects.unwrap_or(images), c.seed ^ TRAINING_SET_SEED)?;
    let negatives = expgraph::pipeline::negatives(&base_config)?;
    let source = WeightSource::parse(&c.weights);
    let weights = resolve_weights(&source).with_context(|| format!("--weights {}", c.weights))?;
    let base = BaseWeights::load(&weights)?;
    let preprocess = base.architecture().default_preprocess(&source);
    let training = TrainingSet::load(&extraction_objects(&train_set), &negatives, INPUT_SIZE, preprocess)?;
    let params = ft.params(c.seed)?;
    let tuned = work.join("finetuned.safetensors");
    let started = Instant::now();
    let reused = up_to_date(&tuned, &base, &training, &params);
    if reused {
        tracing::info!(weights = %tuned.display(), "fine-tuned weights up to date; not training again");
    } else {
        let device = expgraph::backbone::parse_device(&c.device)?;
        params.fit(&base, &training, &tuned, &device)?;
    }
    let finetune_s = started.elapsed().as_secs_f64();
    let meta = expgraph_finetune::read_metadata(&tuned)?;

    // The benchmark, once per weight file.
    let given = run_pipeline(&base_config)?.record;
    let tuned_common = CommonArgs { weights: tuned.display().to_string(), ..c };
    let finetuned = run_pipeline(&pipeline_config(name, data, tuned_common, work.join("finetuned")))?.record;

    let record = serde_json::json!({
        "benchmark": "bench-synth --finetune",
        "git_rev": crate::bench::git_rev(),
        "finetune": {
            "weights": tuned,
            "seconds": finetune_s,
            "reused": reused,
            "training_objects": training.positives(),
            "negatives": training.negatives(),
            "metadata": meta,
        },
        "given_weights": given,
        "finetuned_weights": finetuned,
    });
    expgraph::io::write_bytes(&out, &serde_json::to_vec_pretty(&record)?)?;
    println!("{}", side_by_side(&given, &finetuned, &meta));
    println!("record: {}", out.display());
    Ok(())
}

/// The Markdown table of the two runs' headline numbers.
fn side_by_side(given: &BenchRecord, tuned: &BenchRecord, meta: &serde_json::Value) -> String {
    let mut s = String::from("| measure | given weights | fine-tuned |\n|---|---:|---:|\n");
    for (method, m) in &given.localization.methods {
        let other = tuned
            .localization
            .methods
            .get(method)
            .map_or("–".into(), |t| format!("{:.4}", t.mean_normalized_distance));
        s.push_str(&format!("| {method}: mean normalized distance | {:.4} | {other} |\n", m.mean_normalized_distance));
    }
    let (a, b) = (&given.stability, &tuned.stability);
    s.push_str(&format!("| location instability, graph nodes | {:.4} | {:.4} |\n", a.graph_nodes, b.graph_nodes));
    s.push_str(&format!("| location instability, raw filters | {:.4} | {:.4} |\n", a.raw_filters, b.raw_filters));
    let accuracy = meta["held_out_accuracy"].as_f64().map_or("–".into(), |v| format!("{v:.3}"));
    s.push_str(&format!("| fine-tuning held-out accuracy | – | {accuracy} |\n"));
    s
}
