//! `expgraph study summary`: part purity of graph nodes against raw filters, per layer, from the
//! ratings of a human study (`expgraph serve --study FILE`).

use std::path::PathBuf;

use anyhow::Result;

use crate::summary::Summary;

/// `expgraph study …`.
#[derive(clap::Subcommand, Debug)]
pub enum StudyCommand {
    /// Part purity (share of "one part" answers) of graph nodes and raw filters per layer, with
    /// counts and inter-rater agreement (Fleiss' κ), as Markdown or `--json`.
    Summary {
        /// The study file (`expgraph serve --study FILE`).
        file: PathBuf,
    },
}

/// Run `expgraph study …`.
pub fn run(command: StudyCommand) -> Result<Summary> {
    match command {
        StudyCommand::Summary { file } => {
            let summary = expgraph_explore::study::summary(&file)?;
            Ok(Summary::new(summary.markdown(), serde_json::to_value(&summary)?))
        }
    }
}
