//! `expgraph features …` (being implemented).

/// Subcommands of `expgraph features`.
#[derive(clap::Subcommand, Debug)]
pub enum FeaturesCommand {}

/// Run `expgraph features …`.
pub fn run(c: FeaturesCommand) -> anyhow::Result<()> {
    match c {}
}
