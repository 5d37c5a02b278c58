//! `expgraph run`: the whole pipeline (extract → learn → localize → evaluate → report) on the
//! embedded default data set (generated synthetic birds in CUB format) or a CUB-format folder.

use std::path::PathBuf;

use anyhow::Context;
use expgraph::pipeline::{DataSource, PipelineConfig};

/// Arguments of `expgraph run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// VGG-16 weights: a local `.safetensors` file or a Hugging Face repo id (fetched into the
    /// standard hub cache; `HF_HUB_OFFLINE=1` uses the cache only).
    #[arg(long, default_value = "timm/vgg16.tv_in1k")]
    pub weights: String,
    /// Output folder (feature cache, graph, activations, record.json, report/).
    #[arg(long, default_value = "expgraph-run")]
    pub out: PathBuf,
    /// A CUB-format folder (holding `images.txt`) instead of the generated default data set.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Objects to use (generated ones for the default data set).
    #[arg(long, default_value_t = 80)]
    pub images: usize,
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
    /// `cpu` or `cuda:N` (needs the `cuda` build).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Run `expgraph run`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let (name, data) = match a.data {
        Some(dir) => ("cub-200-2011".to_string(), DataSource::Cub { dir }),
        None => ("synthetic-cub".to_string(), DataSource::Synthetic { images: a.images, seed: a.seed }),
    };
    let config = PipelineConfig {
        dataset_name: name,
        data,
        weights: a.weights,
        preprocess: a.preprocess,
        negatives: a.negatives,
        negatives_limit: a.negatives_limit,
        max_images: Some(a.images),
        iterations: a.iterations,
        seed: a.seed,
        work_dir: a.out.clone(),
        report: true,
        device: a.device,
        ..PipelineConfig::default()
    };
    let outcome = expgraph::pipeline::run(&config).context("expgraph run")?;
    let record_path = a.out.join("record.json");
    expgraph::record::write_json(&record_path, &outcome.record)?;
    println!("{}", outcome.record.markdown_table());
    println!("record: {}", record_path.display());
    if let Some(index) = outcome.report_index {
        println!("report: {}", index.display());
    }
    Ok(())
}
