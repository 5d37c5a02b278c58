//! `expgraph learn` (being implemented).

/// Arguments of `expgraph learn`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Run `expgraph learn`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`expgraph learn` is not implemented yet")
}
