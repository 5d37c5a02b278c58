//! `expgraph run`: the whole pipeline (extract → learn → localize → evaluate → report) on the
//! embedded default data set (generated synthetic birds in CUB format) or a CUB-format folder.

use std::path::PathBuf;

use anyhow::Context;

use crate::summary::Summary;
use expgraph::pipeline::{DataSource, PipelineConfig};
use expgraph_features::BatchSize;

use crate::backbone_args::PRECISION_CHOICES;

/// Arguments of `expgraph run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Backbone weights (VGG-16 or a ResNet): a local `.safetensors` file or a Hugging Face repo id (fetched into the
    /// standard hub cache; `HF_HUB_OFFLINE=1` uses the cache only).
    #[arg(long, default_value = "timm/vgg16.tv_in1k")]
    pub weights: String,
    /// Architecture of the weights (`auto`: from the tensor names); it also picks the graph
    /// layers (`expgraph backbones` lists them).
    #[arg(long, default_value = "auto", value_parser = expgraph_features::BACKBONE_CHOICES)]
    pub backbone: String,
    /// Output folder (feature cache, graph, activations, record.json, report/).
    #[arg(long, short, default_value = "expgraph-run")]
    pub out: PathBuf,
    /// A CUB-format folder (holding `images.txt`) instead of the generated default data set.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Objects to use (generated ones for the default data set).
    #[arg(long, value_name = "N", default_value_t = 80, alias = "images")]
    pub limit: usize,
    /// Folder of negative images for the normalization (default: generated scenes).
    #[arg(long)]
    pub negatives: Option<PathBuf>,
    /// Negatives to use.
    #[arg(long, default_value_t = 60)]
    pub negatives_limit: usize,
    /// Learning iterations per layer (paper: 20; the demo default is shorter).
    #[arg(long, default_value_t = 8)]
    pub iterations: usize,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Preprocessing preset (`caffe` or `torchvision`; default: by weight source).
    #[arg(long)]
    pub preprocess: Option<String>,
    /// `cpu`, `cuda` or `cuda:N` (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Arithmetic of the backbone's forward pass: f32 (default), or f16 / bf16 (half precision,
    /// meant for GPUs).
    #[arg(long, default_value = "f32", value_parser = PRECISION_CHOICES)]
    pub precision: String,
    /// Objects per forward pass of the feature extraction: `auto` (from the device) or a count ≥ 1.
    #[arg(long, value_name = "auto|N", default_value = "auto")]
    pub batch: BatchSize,
}

/// Run `expgraph run`.
pub fn run(a: Args) -> anyhow::Result<Summary> {
    let (name, data) = match a.data {
        Some(dir) => ("cub-200-2011".to_string(), DataSource::Cub { dir, sampling: None }),
        None => ("synthetic-cub".to_string(), DataSource::Synthetic { images: a.limit, seed: a.seed }),
    };
    let config = PipelineConfig {
        dataset_name: name,
        data,
        weights: a.weights,
        backbone: a.backbone,
        preprocess: a.preprocess,
        negatives: a.negatives,
        negatives_limit: a.negatives_limit,
        max_images: Some(a.limit),
        iterations: a.iterations,
        seed: a.seed,
        work_dir: a.out.clone(),
        report: true,
        device: a.device,
        precision: a.precision,
        extract_batch: a.batch,
        progress: crate::progress::sink(),
        ..PipelineConfig::default()
    };
    let outcome = expgraph::pipeline::run(&config).context("expgraph run")?;
    let record_path = a.out.join("record.json");
    expgraph::record::write_json(&record_path, &outcome.record)?;
    let mut human = format!("{}\nrecord: {}", outcome.record.markdown_table(), record_path.display());
    if let Some(index) = &outcome.report_index {
        human.push_str(&format!("\nreport: {}", index.display()));
    }
    let json = serde_json::json!({"record": record_path, "report": outcome.report_index, "result": outcome.record});
    Ok(Summary::new(human, json))
}
