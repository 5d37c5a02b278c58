//! `expgraph extract`: images + object boxes → a normalized feature cache (spec §3).

use std::path::PathBuf;

use anyhow::Context;

use crate::backbone_args::BackboneArgs;
use crate::summary::Summary;
use expgraph_cache::{CachePart, StorageDtype};
use expgraph_features::{
    check_image_files, expected_meta, list_images, load_or_compute_norm_stats, objects_from_dir, read_boxes, BatchSize,
    ExtractParams, ExtractReport, FlipMode, NormStats, NormStatsParams,
};

/// Arguments of `expgraph extract`.
///
/// Boxes file: JSON object `{"file.jpg": [x0, y0, x1, y1], ...}` in source pixels (0-based,
/// x1/y1 exclusive); only the images named there are extracted. Without it, every JPEG/PNG of
/// `--images` (sorted by name) is used with the whole image as the object box.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder of JPEG/PNG images.
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    #[command(flatten)]
    pub backbone: BackboneArgs,
    /// Folder of negative images for the per-unit std (spec §3); at least 2. Not needed when
    /// `--stats` names a statistics file (`expgraph stats` makes one).
    #[arg(long, value_name = "DIR", required_unless_present = "stats")]
    pub negatives: Option<PathBuf>,
    /// Output cache folder (created; an interrupted run resumes).
    #[arg(long, short, value_name = "CACHE")]
    pub out: PathBuf,
    /// Object boxes JSON (see above).
    #[arg(long, value_name = "FILE.json")]
    pub boxes: Option<PathBuf>,
    /// Use only the first N images.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Use only the first N negatives (sorted by name).
    #[arg(long, value_name = "N")]
    pub negatives_limit: Option<usize>,
    /// Objects per forward pass (each also runs its mirrored view): `auto` (CPU: a small fixed
    /// batch; GPU: as many as fit in about half the free device memory) or a count ≥ 1.
    #[arg(long, value_name = "auto|N", default_value = "auto")]
    pub batch: BatchSize,
    /// Storage of the maps: f16 (rel. error ≤ 4.9e-4) or u8 (per image-channel min/range).
    #[arg(long, default_value = "f16", value_parser = ["f16", "u8"])]
    pub storage: String,
    /// Images per shard file.
    #[arg(long, default_value_t = expgraph_cache::StorageInfo::DEFAULT_SHARD_SIZE, value_parser = at_least_one)]
    pub shard_size: usize,
    /// Second view: `real` mirror (default), `noop` (the reference code's bug: a copy), `none`.
    #[arg(long, default_value = "real", value_parser = ["real", "noop", "none"])]
    pub flip: String,
    /// Normalization statistics file (reused when it fits, else computed from `--negatives` and
    /// saved); default: OUT/norm-stats.safetensors.
    #[arg(long, value_name = "FILE")]
    pub stats: Option<PathBuf>,
    /// Extract only shard I of N (I = 0 … N−1) of the cache, for N jobs on N machines writing
    /// into one shared folder or N folders; `expgraph cache merge` then makes the cache a single
    /// run would have. Shard I holds the shard files ⌊I·F/N⌋ … ⌊(I+1)·F/N⌋−1 of the F files
    /// (`--shard-size` images each, in image order). Needs `--stats` from `expgraph stats`, so
    /// that every shard divides by the same statistics (docs/cluster.md).
    #[arg(long, value_name = "I/N", conflicts_with = "overwrite")]
    pub shard: Option<CachePart>,
    /// Replace a cache built from other inputs in `--out`.
    #[arg(long)]
    pub overwrite: bool,
}

/// A count of at least 1 (clap names the flag when it is not).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Run `expgraph extract`.
pub fn run(args: Args) -> anyhow::Result<Summary> {
    let storage = StorageDtype::from_name(&args.storage).context("--storage must be f16 or u8")?;
    let flip = FlipMode::from_name(&args.flip).context("--flip must be real, noop or none")?;

    let boxes = args.boxes.as_deref().map(read_boxes).transpose()?;
    let objects = objects_from_dir(&args.images, boxes.as_ref(), args.limit)?;
    let given_stats = args.stats.as_ref().filter(|p| p.is_file());
    if args.shard.is_some() && given_stats.is_none() {
        anyhow::bail!(
            "--shard needs --stats FILE, an existing statistics file made once by `expgraph stats` and shared by \
             every shard (so that all of them divide by the same statistics){}",
            args.stats.as_ref().map(|p| format!("; {} does not exist", p.display())).unwrap_or_default()
        );
    }
    let negatives = match &args.negatives {
        Some(dir) => negatives_list(dir, args.negatives_limit)?,
        None if given_stats.is_some() => Vec::new(),
        None => anyhow::bail!("--negatives is needed to compute the statistics: --stats names no existing file"),
    };
    // Fail before the expensive work: unreadable inputs, an output folder we cannot write.
    check_image_files(objects.iter().map(|o| o.path.as_path()), "image")?;
    check_image_files(negatives.iter().map(|p| p.as_path()), "negative")?;
    expgraph_io::check_writable(&args.out)
        .with_context(|| format!("--out {}: cannot write there", args.out.display()))?;
    if args.shard.is_none() {
        drop(expgraph_io::DirLock::acquire(&args.out).with_context(|| format!("--out {}", args.out.display()))?);
    }
    tracing::info!(images = objects.len(), negatives = negatives.len(), "inputs checked");
    let (loaded, layers) = args.backbone.load()?;
    let (backbone, preprocess) = (loaded.model, loaded.preprocess);

    let stats_path = args.stats.clone().unwrap_or_else(|| args.out.join("norm-stats.safetensors"));
    let stats_params = NormStatsParams {
        layers: layers.clone(),
        preprocess,
        input_size: expgraph_backbone::REFERENCE_INPUT_SIZE,
        batch: stats_batch(args.batch),
        progress: crate::progress::sink(),
    };
    let stats = if args.shard.is_some() || negatives.is_empty() {
        // Given statistics, used as they are (a shard never computes its own): `check` below
        // refuses them for other weights, preprocessing or layers, and negatives, if named,
        // must be the ones they were made from.
        let stats = NormStats::load(&stats_path)?;
        if !negatives.is_empty() && *stats.meta() != expected_meta(backbone.as_ref(), &stats_params, &negatives)? {
            anyhow::bail!(
                "--stats {}: made from other negatives, weights or layers than this run's; a shard uses the \
                 statistics every shard shares (drop --negatives, or remake them with `expgraph stats`)",
                stats_path.display()
            );
        }
        stats
    } else {
        load_or_compute_norm_stats(backbone.as_ref(), &stats_params, &negatives, &stats_path)?
    };

    let report = ExtractParams::new()
        .layers(layers)
        .preprocess(preprocess)
        .input_size(expgraph_backbone::REFERENCE_INPUT_SIZE)
        .batch_size(args.batch)
        .storage(storage)
        .shard_size(args.shard_size)
        .flip(flip)
        .overwrite(args.overwrite)
        .part(args.shard)
        .progress(crate::progress::sink())
        .check(backbone.as_ref(), &stats)?
        .run(&objects, &args.out)?;
    let mut human = format!("{}\n{}", cache_line(&report), timing_line(&report));
    if let Some(part) = args.shard {
        human.push_str(&format!(
            "\nshard {part} written ({}); when every shard is done: expgraph cache merge --out CACHE <the shards' folders>",
            part.record_path(&report.dir).display()
        ));
    }
    let json = serde_json::json!({
        "cache": report.dir, "key": report.key, "backbone": loaded.architecture.name(), "images": report.images,
        "computed": report.computed, "ms_per_image": report.ms_per_image,
        "device": args.backbone.device, "precision": args.backbone.precision,
        "batch": report.batch, "batch_requested": args.batch, "timing": report.timing,
        "norm_stats": stats_path, "norm_stats_digest": stats.digest(),
        "shard": args.shard.map(|p| serde_json::json!({"index": p.index, "count": p.count})),
    });
    Ok(Summary::new(human, json))
}

/// The negatives of `dir` (sorted by name), the first `limit` of them.
pub fn negatives_list(dir: &std::path::Path, limit: Option<usize>) -> anyhow::Result<Vec<PathBuf>> {
    let mut negatives = list_images(dir)?;
    if let Some(n) = limit {
        negatives.truncate(n);
    }
    Ok(negatives)
}

/// Negatives per forward pass of the normalization statistics: `--batch N` as given; with
/// `auto`, 4 (the statistics see a few dozen negatives, so the batch barely matters there).
pub fn stats_batch(batch: BatchSize) -> usize {
    match batch {
        BatchSize::Fixed(n) => n.max(1),
        BatchSize::Auto => 4,
    }
}

/// The summary's first line: where the cache is and what this run computed.
fn cache_line(report: &ExtractReport) -> String {
    format!(
        "feature cache {}: {} images ({} computed now, {:.0} ms/image, batch {})",
        report.dir.display(),
        report.images,
        report.computed,
        report.ms_per_image,
        report.batch
    )
}

/// The summary's second line: where the time went (stages overlap when pipelined, so they may
/// add up to more than the wall time) and the peak memory.
fn timing_line(report: &ExtractReport) -> String {
    let t = &report.timing;
    let mib = |b: Option<u64>| b.map_or_else(|| "n/a".to_string(), |b| format!("{} MiB", b >> 20));
    let stages: Vec<String> = t.stages().iter().map(|(name, s)| format!("{} {s:.2}", name.replace('_', " "))).collect();
    format!(
        "time {:.2} s: {}; peak RSS {}, peak device memory {}",
        t.wall_s,
        stages.join(", "),
        mib(t.peak_rss_bytes),
        mib(t.peak_device_bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use expgraph_features::ExtractTiming;

    #[test]
    fn stats_batch_follows_a_fixed_batch_and_defaults_to_4() {
        assert_eq!(stats_batch(BatchSize::Fixed(7)), 7);
        assert_eq!(stats_batch(BatchSize::Auto), 4);
    }

    #[test]
    fn the_summary_names_the_batch_and_the_time_split() {
        let report = ExtractReport {
            dir: "c".into(),
            key: "k".into(),
            images: 3,
            computed: 2,
            ms_per_image: 12.4,
            batch: 16,
            timing: ExtractTiming {
                wall_s: 1.5,
                decode_s: 0.25,
                forward_s: 1.0,
                peak_rss_bytes: Some(3 << 20),
                ..ExtractTiming::default()
            },
        };
        let first = cache_line(&report);
        assert!(first.starts_with("feature cache c: 3 images (2 computed now, 12 ms/image, batch 16)"), "{first}");
        let second = timing_line(&report);
        assert!(second.starts_with("time 1.50 s: decode 0.25, upload 0.00, forward 1.00"), "{second}");
        assert!(second.contains("peak RSS 3 MiB, peak device memory n/a"), "{second}");
    }
}
