//! `expgraph`: learn an explanatory graph from a pretrained CNN and put it to work.
//!
//! Each subcommand lives in its own file under `src/cmd/`.

mod cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "expgraph", version, about = "Explanatory graphs of CNN features (Zhang et al., AAAI 2018)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Images + object boxes → normalized, cached feature maps.
    Extract(cmd::extract::Args),
    /// Debugging tools for raw backbone features.
    #[command(subcommand)]
    Features(cmd::features::FeaturesCommand),
    /// Learn an explanatory graph from a feature cache.
    Learn(cmd::learn::Args),
    /// Infer node positions and scores on the images of a feature cache.
    Infer(cmd::infer::Args),
}

fn main() -> anyhow::Result<()> {
    init_tracing();
    let cli = Cli::parse();
    match cli.command {
        Command::Extract(args) => cmd::extract::run(args),
        Command::Features(c) => cmd::features::run(c),
        Command::Learn(args) => cmd::learn::run(args),
        Command::Infer(args) => cmd::infer::run(args),
    }
}

/// Logs go to stderr through `tracing`; `RUST_LOG` filters them (default `info`).
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
