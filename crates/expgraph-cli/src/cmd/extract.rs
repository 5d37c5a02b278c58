//! `expgraph extract` (being implemented).

/// Arguments of `expgraph extract`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Run `expgraph extract`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`expgraph extract` is not implemented yet")
}
