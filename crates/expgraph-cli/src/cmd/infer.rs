//! `expgraph infer`: node positions and scores on the images of a feature cache (spec §1.7).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use crate::summary::Summary;
use expgraph_cache::FeatureCache;
use expgraph_graph::{save_activations, ExplanatoryGraph};
use expgraph_learn::{Team, ViewPolicy};

/// Arguments of `expgraph infer`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Graph folder (written by `expgraph learn`).
    #[arg(long, value_name = "GRAPH")]
    pub graph: PathBuf,
    /// Feature cache folder of the images to run on (same backbone and layers as the graph).
    #[arg(long, value_name = "CACHE", alias = "features")]
    pub cache: PathBuf,
    /// Output folder: `activations.json` (ids, layers) + `activations.safetensors`
    /// (`<layer>.positions` map coords, `<layer>.positions_px` pixels of the 224 frame,
    /// `<layer>.scores`, `flips`).
    #[arg(long, short, value_name = "ACTIVATIONS")]
    pub out: PathBuf,
    /// Use only the first N images.
    #[arg(long, value_name = "N", alias = "images")]
    pub limit: Option<usize>,
    /// Which view of each image: `choose` (the top layer picks the better of the image and its
    /// mirror, spec §1.7), `original` or `mirrored`.
    #[arg(long, value_enum, default_value = "choose")]
    pub views: ViewsArg,
}

/// `--views` of `expgraph infer`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewsArg {
    /// The better of the image and its mirror, per image.
    Choose,
    /// Every image as is.
    Original,
    /// Every image mirrored.
    Mirrored,
}

/// Run `expgraph infer`: alone, or as one rank of an MPI job (`mpirun -n R expgraph infer …`,
/// feature `mpi`), where each rank infers its blocks of images and rank 0 writes them all.
pub fn run(args: Args) -> anyhow::Result<Summary> {
    crate::team::run_in_team("infer", |team| infer(args, team))
}

fn infer(args: Args, team: &dyn Team) -> anyhow::Result<Summary> {
    let graph =
        ExplanatoryGraph::load(&args.graph).with_context(|| format!("loading graph {}", args.graph.display()))?;
    let cache =
        FeatureCache::open(&args.cache).with_context(|| format!("opening feature cache {}", args.cache.display()))?;
    expgraph::provenance::check_graph_fits_cache(&args.graph, &cache)?;
    let writer = team.rank() == 0;
    let _lock = crate::team::writer_lock(team, &args.out, "activations")?;
    let started = Instant::now();
    let policy = match args.views {
        ViewsArg::Choose => ViewPolicy::Choose,
        ViewsArg::Original => ViewPolicy::Original,
        ViewsArg::Mirrored => ViewPolicy::Mirrored,
    };
    let acts = expgraph_learn::infer_in_team(&graph, &cache, args.limit, policy, team)?;
    if !writer {
        return Ok(Summary::new(
            format!(
                "rank {} of {}: inferred with rank 0, which wrote {}",
                team.rank(),
                team.size(),
                args.out.display()
            ),
            serde_json::json!({"rank": team.rank(), "ranks": team.size()}),
        ));
    }
    save_activations(&args.out, &graph, &acts).with_context(|| format!("writing {}", args.out.display()))?;
    expgraph_graph::Provenance::of_cache(&cache)
        .with_graph(expgraph_graph::graph_digest(&args.graph)?)
        .save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let flipped = acts.iter().filter(|a| a.flipped).count();
    tracing::info!(
        images = acts.len(),
        flipped,
        nodes = graph.num_nodes(),
        seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
        out = %args.out.display(),
        "activations written"
    );
    Ok(Summary::new(
        format!("activations of {} images ({flipped} mirrored): {}", acts.len(), args.out.display()),
        serde_json::json!({"out": args.out, "images": acts.len(), "flipped": flipped, "nodes": graph.num_nodes(), "ranks": team.size()}),
    ))
}
