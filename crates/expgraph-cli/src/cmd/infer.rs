//! `expgraph infer` (being implemented).

/// Arguments of `expgraph infer`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Run `expgraph infer`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`expgraph infer` is not implemented yet")
}
