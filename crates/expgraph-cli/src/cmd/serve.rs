//! `expgraph serve`: browse a learned graph in a web browser (a local server over the graph, the
//! activations of its training images and their crops from the feature cache).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, Result};
use expgraph_explore::parts::PartVotes;
use expgraph_explore::study::{Study, StudyLayer, StudyPlan};
use expgraph_explore::{Explorer, ServeParams, Server};

use crate::graph_args::{GraphArgs, TrainedGraph};
use crate::summary::Summary;

/// Arguments of `expgraph serve`.
///
/// Pages: an index of layers, each layer's nodes (sortable, by filter), a page per node (its
/// best patches, heat maps, parents with their learned displacements, children) and per image
/// (its best nodes per layer with the graph's edges between them). Runs until stopped (Ctrl-C).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub inputs: GraphArgs,
    /// Port (0: any free port; the URL is printed on the first line of stdout).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on; anything but a loopback address needs --allow-remote.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Listen on a non-local address (the explorer has no authentication: anyone who reaches
    /// it sees the images).
    #[arg(long)]
    pub allow_remote: bool,
    /// PNGs (crops, patches, heat maps) kept in memory once drawn.
    #[arg(long, default_value_t = 4096)]
    pub png_cache: usize,
    /// Run the human interpretability study (page `/study`), ratings stored in this SQLite
    /// file (created with its items on first use; `expgraph study summary FILE` reads it).
    #[arg(long, value_name = "STUDY.sqlite")]
    pub study: Option<PathBuf>,
    /// Graph nodes, and as many raw filters, per layer in a new study.
    #[arg(long, default_value_t = 20, requires = "study")]
    pub study_per_layer: usize,
    /// Seed of a new study's items and order.
    #[arg(long, default_value_t = 0, requires = "study")]
    pub study_seed: u64,
    /// Part models fitted on this graph (`expgraph localize --save-models MODELS.json`): node
    /// pages list the parts a node votes for, `/part/{p}` draws each template's voting nodes.
    #[arg(long, value_name = "MODELS.json")]
    pub part_models: Option<PathBuf>,
    /// A run's record shown on the index (e.g. `record.json` of `expgraph run` or of a
    /// benchmark: its metrics and configuration).
    #[arg(long, value_name = "RECORD.json")]
    pub record: Option<PathBuf>,
}

/// Run `expgraph serve` (returns when the server stops).
pub fn run(args: Args) -> Result<Summary> {
    let addr = SocketAddr::new(args.bind, args.port);
    expgraph_explore::check_address(&addr, args.allow_remote)?;
    let TrainedGraph { graph, activations, crops } = args.inputs.load()?;
    let mut explorer =
        Explorer::new(graph, activations, Box::new(crops), args.inputs.origin()).context("opening the graph")?;
    if let Some(file) = &args.study {
        let raw = expgraph::trained::raw_filters(explorer.graph(), explorer.activations(), &args.inputs.cache)
            .context("the raw filters of the study")?;
        let layers: Vec<StudyLayer> = explorer
            .graph()
            .layers
            .iter()
            .map(|l| StudyLayer { name: l.info.name.clone(), nodes: l.num_nodes(), filters: l.info.channels })
            .collect();
        let digest = expgraph_graph::graph_digest(&args.inputs.graph)?;
        let plan = StudyPlan { per_layer: args.study_per_layer, seed: args.study_seed };
        let study = Study::open(file, &digest, &layers, &plan)?;
        explorer = explorer.with_raw_filters(&raw)?.with_study(study)?;
    }
    if let Some(file) = &args.record {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading the record {}", file.display()))?;
        let record: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("the record {} is not JSON", file.display()))?;
        explorer = explorer.with_record(&record);
    }
    if let Some(file) = &args.part_models {
        let votes = PartVotes::read(file, explorer.graph())?;
        tracing::info!(parts = votes.names().len(), "part models from {}", file.display());
        explorer = explorer.with_part_votes(votes);
    }
    let params = ServeParams { addr, allow_remote: args.allow_remote, png_cache: args.png_cache, ..Default::default() };
    let server = Server::start(explorer, &params)?;
    let url = format!("http://{}/", server.addr());
    // The first line of stdout, at once: scripts and tests read the port from it.
    println!("expgraph explorer: {url}");
    std::io::stdout().flush().ok();
    server.wait()?;
    Ok(Summary::new(format!("explorer at {url} stopped"), serde_json::json!({"url": url, "stopped": true})))
}
