//! `expgraph serve`: browse a learned graph in a web browser (a local server over the graph, the
//! activations of its training images and their crops from the feature cache).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, Result};
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
}

/// Run `expgraph serve` (returns when the server stops).
pub fn run(args: Args) -> Result<Summary> {
    let addr = SocketAddr::new(args.bind, args.port);
    expgraph_explore::check_address(&addr, args.allow_remote)?;
    let TrainedGraph { graph, activations, crops } = args.inputs.load()?;
    let origin = vec![
        ("graph".to_string(), args.inputs.graph.display().to_string()),
        ("activations".to_string(), args.inputs.activations.display().to_string()),
        ("cache".to_string(), args.inputs.cache.display().to_string()),
    ];
    let explorer = Explorer::new(graph, activations, Box::new(crops), origin).context("opening the graph")?;
    let params = ServeParams { addr, allow_remote: args.allow_remote, png_cache: args.png_cache, ..Default::default() };
    let server = Server::start(explorer, &params)?;
    let url = format!("http://{}/", server.addr());
    // The first line of stdout, at once: scripts and tests read the port from it.
    println!("expgraph explorer: {url}");
    std::io::stdout().flush().ok();
    server.wait()?;
    Ok(Summary::new(format!("explorer at {url} stopped"), serde_json::json!({"url": url, "stopped": true})))
}
