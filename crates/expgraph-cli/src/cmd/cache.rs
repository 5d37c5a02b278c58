//! `expgraph cache …`: operations on feature caches.

use std::path::PathBuf;

use anyhow::Context;

use crate::summary::Summary;
use expgraph_cache::merge_parts;

/// Subcommands of `expgraph cache`.
#[derive(clap::Subcommand, Debug)]
pub enum CacheCommand {
    /// Join the shards of a sharded extraction (`expgraph extract --shard I/N`) into one cache,
    /// byte-identical to a single run's: every shard must be there, made with the same weights,
    /// statistics, images and settings, and every file must match its checksum. Files of other
    /// folders are copied into `--out`; nothing is moved or deleted.
    Merge(MergeArgs),
}

/// Arguments of `expgraph cache merge`.
#[derive(clap::Args, Debug)]
pub struct MergeArgs {
    /// The cache folder to make (shards written into it are merged in place).
    #[arg(long, short, value_name = "CACHE")]
    pub out: PathBuf,
    /// Folders the other shards were written into (none when they all share `--out`).
    #[arg(value_name = "SHARD_DIR")]
    pub shards: Vec<PathBuf>,
}

/// Run `expgraph cache …`.
pub fn run(c: CacheCommand) -> anyhow::Result<Summary> {
    match c {
        CacheCommand::Merge(args) => merge(args),
    }
}

fn merge(args: MergeArgs) -> anyhow::Result<Summary> {
    let r = merge_parts(&args.out, &args.shards).with_context(|| format!("merging into {}", args.out.display()))?;
    let human = format!(
        "feature cache {}: {} images from {} shards ({} of {} files copied)",
        r.dir.display(),
        r.images,
        r.parts,
        r.copied,
        r.files
    );
    let json = serde_json::json!({
        "cache": r.dir, "key": r.key, "shards": r.parts, "images": r.images, "files": r.files, "copied": r.copied,
    });
    Ok(Summary::new(human, json))
}
