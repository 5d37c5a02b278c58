//! `cargo xtask bench-*`: extract (cached) → learn → localize → evaluate on one data set, then
//! write a JSON record and print a Markdown table.

use anyhow::{Context, Result};
use expgraph::pipeline::{DataSource, PipelineConfig};
use std::path::PathBuf;

/// Settings shared by every benchmark.
#[derive(clap::Args, Debug)]
pub struct CommonArgs {
    /// Backbone weights: a local `.safetensors` file or a Hugging Face repo id.
    #[arg(long, env = "EXPGRAPH_WEIGHTS")]
    pub weights: String,
    /// Architecture: auto (detected from the weight file), vgg16, resnet18 … resnet152.
    #[arg(long, default_value = "auto")]
    pub backbone: String,
    /// Folder of negative images for the per-unit normalization (default: generated backgrounds).
    #[arg(long)]
    pub negatives: Option<PathBuf>,
    /// Use at most this many negatives.
    #[arg(long, default_value_t = 200)]
    pub negatives_limit: usize,
    /// Use at most this many objects (`--images N` is the old, hidden spelling).
    #[arg(long, value_name = "N", alias = "images")]
    pub limit: Option<usize>,
    /// Parts to localize (default: all of the data set's).
    #[arg(long, value_delimiter = ',')]
    pub parts: Option<Vec<String>>,
    /// Learning iterations per layer (paper: 20).
    #[arg(long, default_value_t = 20)]
    pub iterations: usize,
    /// Seed of every random choice (initialization, choice of the annotated examples).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Working folder (feature cache, graph, activations, report).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Where to write the JSON record.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write the HTML report into the working folder.
    #[arg(long)]
    pub report: bool,
}

/// `bench-synth` arguments.
#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Small and fast: 48 objects, 24 negatives, 6 iterations (what CI runs).
    #[arg(long)]
    pub quick: bool,
}

/// `bench-cub` arguments.
#[derive(clap::Args, Debug)]
pub struct CubArgs {
    /// The CUB-200-2011 folder that holds `images.txt`.
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `bench-pascal` arguments.
#[derive(clap::Args, Debug)]
pub struct PascalArgs {
    /// The Pascal-Part folder (VOC2010 `JPEGImages/` and the `truth_<cat>.mat` files).
    #[arg(long)]
    pub data: PathBuf,
    /// Category: bird, cat, cow, dog, horse or sheep.
    #[arg(long, default_value = "bird")]
    pub category: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `bench-ilsvrc` arguments.
#[derive(clap::Args, Debug)]
pub struct IlsvrcArgs {
    /// The ILSVRC 2013 DET Animal-Part folder (as laid out by the authors' `detanimalpart`).
    #[arg(long)]
    pub data: PathBuf,
    /// Synset, e.g. n01503061 (bird).
    #[arg(long, default_value = "n01503061")]
    pub synset: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn synth(mut a: SynthArgs) -> Result<()> {
    if a.quick {
        a.common.limit.get_or_insert(48);
        a.common.negatives_limit = a.common.negatives_limit.min(24);
        a.common.iterations = a.common.iterations.min(6);
    }
    let images = a.common.limit.unwrap_or(300);
    run("synthetic-cub", DataSource::Synthetic { images, seed: a.common.seed }, a.common)
}

pub fn cub(a: CubArgs) -> Result<()> {
    run("cub-200-2011", DataSource::Cub { dir: a.data }, a.common)
}

pub fn pascal(a: PascalArgs) -> Result<()> {
    let name = format!("pascal-part/{}", a.category);
    run(&name, DataSource::Pascal { dir: a.data, category: a.category }, a.common)
}

pub fn ilsvrc(a: IlsvrcArgs) -> Result<()> {
    let name = format!("ilsvrc-animal-part/{}", a.synset);
    run(&name, DataSource::Ilsvrc { dir: a.data, synset: a.synset }, a.common)
}

fn run(name: &str, data: DataSource, c: CommonArgs) -> Result<()> {
    let slug = name.replace('/', "-");
    let work = c.work.unwrap_or_else(|| PathBuf::from("target/xtask").join(&slug));
    let out = c.out.unwrap_or_else(|| work.join("record.json"));
    let config = PipelineConfig {
        dataset_name: name.to_string(),
        data,
        weights: c.weights,
        backbone: c.backbone,
        preprocess: None,
        negatives: c.negatives,
        negatives_limit: c.negatives_limit,
        max_images: c.limit,
        parts: c.parts,
        iterations: c.iterations,
        seed: c.seed,
        work_dir: work,
        report: c.report,
        ..PipelineConfig::default()
    };
    let outcome = expgraph::pipeline::run(&config).context("benchmark pipeline")?;
    let mut record = outcome.record;
    record.git_rev = git_rev();
    expgraph::record::write_json(&out, &record)?;
    println!("{}", record.markdown_table());
    println!("record: {}", out.display());
    if let Some(report) = outcome.report_index {
        println!("report: {}", report.display());
    }
    Ok(())
}

fn git_rev() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
