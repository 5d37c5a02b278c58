//! `expgraph stats`: the per-unit normalization statistics over negative images (spec §3), made
//! once and shared by every shard of a sharded extraction (`expgraph extract --stats FILE
//! --shard I/N`).

use std::path::PathBuf;

use crate::backbone_args::BackboneArgs;
use crate::cmd::extract::{negatives_list, stats_batch};
use crate::summary::Summary;
use expgraph_features::{check_image_files, load_or_compute_norm_stats, BatchSize, NormStatsParams};

/// Arguments of `expgraph stats`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub backbone: BackboneArgs,
    /// Folder of negative images (at least 2).
    #[arg(long, value_name = "DIR")]
    pub negatives: PathBuf,
    /// Use only the first N negatives (sorted by name).
    #[arg(long, value_name = "N")]
    pub negatives_limit: Option<usize>,
    /// Negatives per forward pass.
    #[arg(long, value_name = "auto|N", default_value = "auto")]
    pub batch: BatchSize,
    /// Output statistics file (safetensors, with a JSON sidecar); kept when it already holds
    /// the statistics of these inputs.
    #[arg(long, short, value_name = "FILE")]
    pub out: PathBuf,
}

/// Run `expgraph stats`.
pub fn run(args: Args) -> anyhow::Result<Summary> {
    let negatives = negatives_list(&args.negatives, args.negatives_limit)?;
    check_image_files(negatives.iter().map(|p| p.as_path()), "negative")?;
    let (loaded, layers) = args.backbone.load()?;
    let params = NormStatsParams {
        layers: layers.clone(),
        preprocess: loaded.preprocess,
        input_size: expgraph_backbone::REFERENCE_INPUT_SIZE,
        batch: stats_batch(args.batch),
        progress: crate::progress::sink(),
    };
    let stats = load_or_compute_norm_stats(loaded.model.as_ref(), &params, &negatives, &args.out)?;
    let dead: usize = stats.layers().iter().map(|l| l.dead_units()).sum();
    let human = format!(
        "normalization statistics of {} layers over {} negatives: {} (digest {}, {dead} dead units)",
        layers.len(),
        negatives.len(),
        args.out.display(),
        &stats.digest()[..16.min(stats.digest().len())]
    );
    let json = serde_json::json!({
        "out": args.out, "digest": stats.digest(), "backbone": loaded.architecture.name(), "layers": layers,
        "negatives": negatives.len(), "dead_units": dead,
    });
    Ok(Summary::new(human, json))
}
