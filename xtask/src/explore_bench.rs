//! `cargo xtask bench-explore`: the explorer's page latency under a load test. Opens a graph
//! (its activations and cache crops), starts the server on a free local port, and times a few
//! hundred requests per page kind over real sockets, one client and then several at once;
//! writes a JSON record with p50/p90/p99 per kind.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use expgraph::trained::TrainedGraph;
use expgraph_explore::{client, Explorer, ServeParams, Server};
use rand::{Rng, SeedableRng};

/// `bench-explore` arguments.
#[derive(clap::Args, Debug)]
pub struct ExploreBenchArgs {
    /// Graph folder (`expgraph learn --out`).
    #[arg(long)]
    pub graph: PathBuf,
    /// Activations of the training images (`expgraph infer --out`).
    #[arg(long)]
    pub activations: PathBuf,
    /// Feature cache of the training images (their crops).
    #[arg(long)]
    pub cache: PathBuf,
    /// Folder relative image paths of the cache are resolved against.
    #[arg(long)]
    pub images_root: Option<PathBuf>,
    /// Requests per page kind (each kind: index, layer table, node page, image page, patch PNG).
    #[arg(long, default_value_t = 300)]
    pub requests: usize,
    /// Simultaneous clients of the concurrent phase (node pages).
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Seed of the pages picked.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the JSON record.
    #[arg(long, default_value = "target/xtask/bench-explore.json")]
    pub out: PathBuf,
}

/// Latency percentiles of a kind of request, milliseconds.
#[derive(Debug, Clone, serde::Serialize)]
struct Latency {
    kind: String,
    requests: usize,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    mean_bytes: f64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// Times `paths` requested one after another (every reply must be 200).
fn time_requests(addr: SocketAddr, kind: &str, paths: &[String]) -> Result<(Latency, Vec<f64>)> {
    let mut times = Vec::with_capacity(paths.len());
    let mut bytes = 0usize;
    for path in paths {
        let start = Instant::now();
        let reply = client::get(addr, path).with_context(|| format!("GET {path}"))?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        if reply.status != 200 {
            bail!("GET {path}: status {}: {}", reply.status, reply.text());
        }
        bytes += reply.body.len();
    }
    Ok((summarize(kind, times.clone(), bytes), times))
}

fn summarize(kind: &str, mut times: Vec<f64>, bytes: usize) -> Latency {
    times.sort_by(f64::total_cmp);
    Latency {
        kind: kind.to_string(),
        requests: times.len(),
        p50_ms: percentile(&times, 0.5),
        p90_ms: percentile(&times, 0.9),
        p99_ms: percentile(&times, 0.99),
        max_ms: times.last().copied().unwrap_or(0.0),
        mean_bytes: bytes as f64 / times.len().max(1) as f64,
    }
}

pub fn run(a: ExploreBenchArgs) -> Result<()> {
    if a.requests == 0 || a.clients == 0 {
        bail!("--requests and --clients must be at least 1");
    }
    let started = Instant::now();
    let TrainedGraph { graph, activations: acts, crops } =
        TrainedGraph::load(&a.graph, &a.activations, &a.cache, a.images_root.as_deref())?;
    let loaded_s = started.elapsed().as_secs_f64();
    let (layers, images) = (graph.layers.len(), acts.len());
    let layer_nodes: Vec<usize> = graph.layers.iter().map(|l| l.num_nodes()).collect();
    let nodes: usize = layer_nodes.iter().sum();
    let opened = Instant::now();
    let explorer = Explorer::new(graph, acts, Box::new(crops), vec![])?;
    let open_s = opened.elapsed().as_secs_f64();
    let params = ServeParams { addr: SocketAddr::from(([127, 0, 0, 1], 0)), ..ServeParams::default() };
    let server = Server::start(explorer, &params)?;
    let addr = server.addr();

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed);
    let mut node = || {
        let l = rng.random_range(0..layers);
        (l, rng.random_range(0..layer_nodes[l]))
    };
    let n = a.requests;
    let node_paths: Vec<String> = (0..n).map(|_| node()).map(|(l, v)| format!("/node/{l}/{v}")).collect();
    let patch_paths: Vec<String> =
        (0..n).map(|_| node()).map(|(l, v)| format!("/png/patches/{l}/{v}.png?count=1")).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed ^ 1);
    let layer_paths: Vec<String> = (0..n)
        .map(|_| {
            let l = rng.random_range(0..layers);
            let pages = layer_nodes[l].div_ceil(expgraph_explore::ROWS_PER_PAGE);
            format!("/layer/{l}?sort=sigma&page={}", rng.random_range(1..=pages))
        })
        .collect();
    let image_paths: Vec<String> = (0..n).map(|_| format!("/image/{}", rng.random_range(0..images))).collect();
    let index_paths = vec!["/".to_string(); n];

    let mut results = Vec::new();
    for (kind, paths) in [
        ("index", &index_paths),
        ("layer table (100 rows, sorted by σ)", &layer_paths),
        ("node page", &node_paths),
        ("image page (10 nodes per layer)", &image_paths),
        ("patch PNG (drawn on first request)", &patch_paths),
    ] {
        results.push(time_requests(addr, kind, paths)?.0);
    }
    // Several clients at once on node pages.
    let chunks: Vec<Vec<String>> = node_paths.chunks(n.div_ceil(a.clients)).map(<[String]>::to_vec).collect();
    let concurrent = std::thread::scope(|s| {
        let handles: Vec<_> = chunks.iter().map(|c| s.spawn(move || time_requests(addr, "", c))).collect();
        let mut times = Vec::new();
        for h in handles {
            let (_, t) = h.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
            times.extend(t);
        }
        anyhow::Ok(times)
    })?;
    results.push(summarize(&format!("node page, {} clients at once", a.clients), concurrent, 0));
    server.stop()?;

    let record = serde_json::json!({
        "benchmark": "bench-explore",
        "git_rev": crate::bench::git_rev(),
        "host": expgraph::record::Host::detect(),
        "graph": a.graph, "layers": layers, "nodes": nodes, "images": images,
        "load_s": loaded_s, "open_s": open_s,
        "latency": results,
    });
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    expgraph::io::write_bytes(&a.out, &serde_json::to_vec_pretty(&record)?)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!("{nodes} nodes, {images} images: loaded in {loaded_s:.1} s, explorer opened in {open_s:.1} s\n");
    println!("| requests | n | p50 ms | p90 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|");
    for r in &results {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            r.kind, r.requests, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms
        );
    }
    println!("record: {}", a.out.display());
    Ok(())
}
