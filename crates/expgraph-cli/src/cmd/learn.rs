//! `expgraph learn`: learn an explanatory graph from a feature cache (spec §2).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;

use crate::summary::Summary;
use expgraph_cache::FeatureCache;
use expgraph_learn::{DirCheckpoints, LearnParams, Progress, Team, ViewRule};

/// Folder of the per-layer checkpoints inside the output folder (removed once the graph is saved).
const CHECKPOINTS_DIR: &str = "checkpoints";

/// Arguments of `expgraph learn`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Feature cache folder (written by `expgraph extract`).
    #[arg(long, value_name = "CACHE", alias = "features")]
    pub cache: PathBuf,
    /// Output graph folder (`graph.json` + `graph.safetensors`).
    #[arg(long, short, value_name = "GRAPH")]
    pub out: PathBuf,
    /// Graph layers, comma-separated, from the paper's layers of the cache's backbone (with their
    /// densities): vgg16 conv4_2, conv4_3, conv5_2, conv5_3 (0.05, 0.05, 0.1, 0.1); resnet*
    /// layer2, layer3, layer4, each also as `.pre_relu` (0.05, 0.1, 0.2). Default: all of them,
    /// as the cache names them.
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<String>>,
    /// EM iterations per layer.
    #[arg(long, default_value_t = 20)]
    pub iterations: usize,
    /// Seed of the random initialization.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use only the first N images.
    #[arg(long, value_name = "N", alias = "images")]
    pub limit: Option<usize>,
    /// Candidate parents kept per layer (`topM`, clamped to the pool).
    #[arg(long, default_value_t = 600)]
    pub top_m: usize,
    /// Reproduce the reference code's quirks (spec §7 and its addendum) instead of the fixes.
    #[arg(long)]
    pub reference_compat: bool,
    /// Ignore mirrored views even when the cache has them.
    #[arg(long)]
    pub no_flips: bool,
    /// How the view of each image is chosen: `node-score` (align the training views to one
    /// facing, then keep the better-explained view) or `log-prob` (the spec's Σ ln(prob)·prior).
    #[arg(long, default_value = "node-score", value_parser = ["node-score", "log-prob"])]
    pub view_rule: String,
}

/// Run `expgraph learn`: alone, or as one rank of an MPI job (`mpirun -n R expgraph learn …`,
/// feature `mpi`), where rank 0 writes the graph and a rank that fails stops the job.
pub fn run(args: Args) -> anyhow::Result<Summary> {
    crate::team::run_in_team("learn", |team| learn(args, team))
}

fn learn(args: Args, team: &dyn Team) -> anyhow::Result<Summary> {
    let writer = team.rank() == 0;
    // Fail before the expensive work: the output folder must be ours alone and writable.
    let _lock = crate::team::writer_lock(team, &args.out, "the graph")?;
    let cache =
        FeatureCache::open(&args.cache).with_context(|| format!("opening feature cache {}", args.cache.display()))?;
    let backbone = cache.manifest().backbone.clone();
    let mut params = LearnParams::paper_preset(cache.manifest())
        .iterations(args.iterations)
        .seed(args.seed)
        .max_images(args.limit)
        .top_m(args.top_m)
        .reference_compat(args.reference_compat)
        .use_flips(!args.no_flips)
        .view_rule(if args.view_rule == "log-prob" { ViewRule::LogProb } else { ViewRule::NodeScore });
    if let Some(names) = &args.layers {
        let unknown: Vec<&String> =
            names.iter().filter(|n| LearnParams::paper_density(&backbone, n).is_none()).collect();
        let known: Vec<&str> = params.layers.iter().map(|l| l.name.as_str()).collect();
        anyhow::ensure!(
            unknown.is_empty(),
            "unknown graph layers {unknown:?} for backbone {backbone}; known: {}",
            known.join(", ")
        );
        // Shallowest first, in the cache's (the backbone's) order.
        let depth = |name: &str| cache.layers().iter().position(|l| l.name == name).unwrap_or(usize::MAX);
        let mut layers: Vec<expgraph_learn::LayerSpec> = names
            .iter()
            .filter_map(|n| {
                LearnParams::paper_density(&backbone, n)
                    .map(|density| expgraph_learn::LayerSpec { name: n.clone(), density })
            })
            .collect();
        layers.sort_by_key(|l| depth(&l.name));
        layers.dedup_by(|a, b| a.name == b.name);
        params.layers = layers;
    }
    let params = params.check()?;
    let n = args.limit.map_or(cache.images().len(), |m| m.min(cache.images().len()));
    tracing::info!(images = n, layers = ?params.layers.iter().map(|l| &l.name).collect::<Vec<_>>(), iterations = params.iterations, reference_compat = params.reference_compat, "learning");
    // One progress bar, rank 0's.
    let bar = if writer {
        crate::progress::bar((params.layers.len() * params.iterations) as u64, "learn")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started = Instant::now();
    let last = Mutex::new(Instant::now());
    let on_progress = |p: &Progress| {
        bar.set_message(format!("{} iteration {}/{}", p.layer, p.iteration, p.iterations));
        bar.inc(1);
        if let Ok(mut t) = last.lock() {
            let dt = t.elapsed().as_secs_f64();
            *t = Instant::now();
            tracing::debug!(layer = %p.layer, iteration = p.iteration, seconds = dt, ms_per_image = dt * 1e3 / n.max(1) as f64, "iteration done");
        }
    };
    // Each finished layer is saved, so a killed run resumes at the next one with the same result.
    let checkpoints = DirCheckpoints::new(
        args.out.join(CHECKPOINTS_DIR),
        format!("cache {}; images {n}; params {}", cache.manifest().key, serde_json::to_string(&*params)?),
    );
    let out = params.fit_in_team(&cache, None, &on_progress, Some(&checkpoints), team)?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let traffic: Vec<serde_json::Value> = out
        .traffic
        .iter()
        .map(|(layer, t)| serde_json::json!({"layer": layer, "exchanges": t.exchanges, "received_bytes": t.bytes, "exchange_seconds": t.seconds}))
        .collect();
    if !writer {
        return Ok(Summary::new(
            format!("rank {} of {}: learned with rank 0, which wrote {}", team.rank(), team.size(), args.out.display()),
            serde_json::json!({"rank": team.rank(), "ranks": team.size(), "seconds": secs, "traffic": traffic}),
        ));
    }
    out.graph.save(&args.out).with_context(|| format!("saving graph to {}", args.out.display()))?;
    expgraph_graph::Provenance::of_cache(&cache)
        .save(&args.out)
        .with_context(|| format!("saving graph to {}", args.out.display()))?;
    checkpoints.remove()?;
    let steps = (params.layers.len() * params.iterations * n).max(1) as f64;
    tracing::info!(
        graph = %args.out.display(),
        nodes = out.graph.num_nodes(),
        seconds = format!("{secs:.1}"),
        ms_per_image_iteration_layer = format!("{:.2}", secs * 1e3 / steps),
        "graph written"
    );
    Ok(Summary::new(
        format!(
            "graph of {} nodes learned on {n} images in {secs:.1} s: {}",
            out.graph.num_nodes(),
            args.out.display()
        ),
        serde_json::json!({"out": args.out, "images": n, "nodes": out.graph.num_nodes(), "seconds": secs, "ranks": team.size(), "traffic": traffic}),
    ))
}
