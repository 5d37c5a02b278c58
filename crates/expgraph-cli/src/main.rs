//! `expgraph`: learn an explanatory graph from a pretrained CNN and put it to work.
//!
//! Each subcommand lives in its own file under `src/cmd/`.

mod backbone_args;
mod cmd;
mod graph_args;
#[cfg(feature = "mpi")]
mod mpi_team;
mod progress;
mod summary;
mod team;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The backbone's activation maps and padded inputs are megabytes each, above glibc's mmap
// threshold: with the system allocator every forward pass maps fresh pages and faults on them
// (cpu-performance.md §4.4). With mimalloc, on a 2-core Zen 4, ResNet-50's forward at batch 8
// ran 6–15 % faster (`cargo xtask bench-backbone`, which uses it too; three runs of each, in
// turns), and `expgraph run --limit 40` made a tenth of the minor page faults (894k → 93k), with
// a lower peak RSS and byte-identical graphs. Keeping freed memory for 2 s (`main`) spares most
// of the faults that remained, about 10 % of a forward pass (crates/expgraph-alloc).
#[global_allocator]
static GLOBAL: expgraph_alloc::MiMalloc = expgraph_alloc::MiMalloc;

#[derive(Parser)]
#[command(name = "expgraph", version, about = "Explanatory graphs of CNN features (Zhang et al., AAAI 2018)")]
struct Cli {
    /// Print the result as one JSON object on stdout instead of a human summary.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole pipeline on the embedded default data set (or a CUB folder), ending in a report.
    Run(cmd::run::Args),
    /// Images + object boxes → normalized, cached feature maps.
    Extract(cmd::extract::Args),
    /// The per-unit normalization statistics over negatives, made once and shared by the
    /// shards of a sharded extraction.
    Stats(cmd::stats::Args),
    /// Feature-cache operations: `merge` the shards of a sharded extraction.
    #[command(subcommand)]
    Cache(cmd::cache::CacheCommand),
    /// Debugging tools for raw backbone features.
    #[command(subcommand)]
    Features(cmd::features::FeaturesCommand),
    /// Fine-tune VGG-16 or a ResNet on one category: object crops vs negatives (the paper's setting).
    Finetune(cmd::finetune::Args),
    /// Learn an explanatory graph from a feature cache.
    Learn(cmd::learn::Args),
    /// Infer node positions and scores on the images of a feature cache.
    Infer(cmd::infer::Args),
    /// Few-shot part localization with graph nodes, raw filters or the prior mean (spec §4.1).
    Localize(cmd::localize::Args),
    /// Draw the HTML report: patch galleries, heat maps, synthesis, σ histograms (spec §4.4).
    Report(cmd::report::Args),
    /// Export the graph as versioned JSON and/or a Graphviz DOT subgraph.
    Export(cmd::export::Args),
    /// Browse the graph in a web browser: layers, nodes, parents, children, images (local server).
    Serve(cmd::serve::Args),
    /// The human interpretability study: `summary` of the ratings of `serve --study`.
    #[command(subcommand)]
    Study(cmd::study::StudyCommand),
    /// List the backbone architectures (`--backbone`) with their taps, channels and geometry.
    Backbones(cmd::backbones::Args),
}

/// Usage errors exit 2 (clap), other failures 1 with the error chain on one line.
fn main() -> ExitCode {
    expgraph_alloc::keep_freed_memory();
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Run(args) => cmd::run::run(args),
        Command::Extract(args) => cmd::extract::run(args),
        Command::Stats(args) => cmd::stats::run(args),
        Command::Cache(c) => cmd::cache::run(c),
        Command::Features(c) => cmd::features::run(c),
        Command::Finetune(args) => cmd::finetune::run(args),
        Command::Learn(args) => cmd::learn::run(args),
        Command::Infer(args) => cmd::infer::run(args),
        Command::Localize(args) => cmd::localize::run(args),
        Command::Report(args) => cmd::report::run(args),
        Command::Export(args) => cmd::export::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Study(c) => cmd::study::run(c),
        Command::Backbones(args) => cmd::backbones::run(args),
    };
    match result {
        Ok(summary) => {
            summary.print(cli.json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, `: `-separated; a cause whose text the previous
/// message already ends with (an error that prints its source and also returns it) is said once.
fn error_chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Logs go to stderr through `tracing` (without breaking progress bars); `RUST_LOG` filters
/// them (default `info`).
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| progress::LogWriter).init();
}
