//! `expgraph localize`: few-shot part localization (spec §4.1) with graph nodes, raw
//! filters or the prior mean; writes one prediction per image and part (`PRED.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::summary::Summary;
use expgraph::localization::{localize_annotated, prior_predictions, UnitSet};
use expgraph_cache::FeatureCache;
use expgraph_graph::{load_activations, ExplanatoryGraph};
use expgraph_localize::{FewShotAnnotations, Kernel, LocalizeParams, LocalizeValidParams, TemplateScore, VoteWeight};

/// Which units vote.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Explanatory-graph nodes (`--graph` + `--activations`).
    Graph,
    /// Raw filters' argmax cells (`--cache`).
    Raw,
    /// The mean annotated point for every image (`--activations` or `--cache` for the image list).
    Prior,
}

/// The vote kernel κ.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelArg {
    /// exp(−r/49.5) on ±11 px, minus its minimum (the AOG's).
    Aog,
    /// Gaussian with `--sigma`, truncated at 3σ.
    Gaussian,
}

/// The vote weight of a detected unit.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightArg {
    /// 1 per detected unit.
    Detected,
    /// The unit's score.
    Score,
}

/// How templates are compared.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateScoreArg {
    /// Mean score of the template's units.
    MeanScore,
    /// AOG-like: mean of score − 5·‖p̂ − vote‖²/(2·49.5²).
    Aog,
}

/// Arguments of `expgraph localize`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Few-shot annotations: `{"parts": {"head": [{"image_id": "...", "point": {"h": 52, "w": 110}}, ...]}}`
    /// (points: 1-based pixels of the 224 object frame, original orientation).
    #[arg(long)]
    annotations: PathBuf,
    /// Output predictions (JSON, written atomically).
    #[arg(long, short)]
    out: PathBuf,
    /// Which units vote.
    #[arg(long, value_enum, default_value = "graph")]
    method: Method,
    /// Graph folder (from `expgraph learn`), for `--method graph`.
    #[arg(long)]
    graph: Option<PathBuf>,
    /// Activations folder (from `expgraph infer`), for `--method graph`.
    #[arg(long)]
    activations: Option<PathBuf>,
    /// Feature-cache folder (from `expgraph extract`): for `--method raw`, and for
    /// `--method graph --both-views` (the graph is inferred in both views of each test image).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Fraction q of each layer's units a template keeps (top by score in the annotated image).
    #[arg(long, default_value_t = 0.05)]
    top_fraction: f64,
    /// Largest unit-to-part displacement a template keeps, pixels (0.3·224).
    #[arg(long, default_value_t = 67.2)]
    max_displacement: f64,
    /// Units with a score above this are detected (may be selected, may vote).
    #[arg(long, default_value_t = 0.0)]
    detection_threshold: f64,
    /// Vote kernel.
    #[arg(long, value_enum, default_value = "aog")]
    kernel: KernelArg,
    /// σ of the Gaussian kernel, pixels.
    #[arg(long, default_value_t = 35.0)]
    sigma: f64,
    /// Vote weight.
    #[arg(long, value_enum, default_value = "detected")]
    weight: WeightArg,
    /// Template choice rule.
    #[arg(long, value_enum, default_value = "aog")]
    template_score: TemplateScoreArg,
    /// Use only these layers (comma-separated; default: all). With `--method raw`, also the
    /// cache layers to read (default: every cache layer).
    #[arg(long, value_delimiter = ',')]
    layers: Vec<String>,
    /// Try each test image as is and mirrored and keep the better template score (the AOG's
    /// protocol, spec §4.1). `--method graph` then needs `--cache` to infer both views.
    #[arg(long)]
    both_views: bool,
    /// Also save the fitted part models (JSON: part → model).
    #[arg(long)]
    save_models: Option<PathBuf>,
}

/// Run `expgraph localize`.
pub fn run(args: Args) -> Result<Summary> {
    if args.method == Method::Prior && args.save_models.is_some() {
        bail!("--save-models: the prior method fits no part model");
    }
    let text = std::fs::read_to_string(&args.annotations)
        .with_context(|| format!("reading annotations {}", args.annotations.display()))?;
    let annotations =
        FewShotAnnotations::from_json(&text).with_context(|| format!("annotations {}", args.annotations.display()))?;
    let params = build_params(&args)?;
    let (file, models) = match args.method {
        Method::Graph | Method::Raw => {
            let units = if args.method == Method::Graph { graph_units(&args)? } else { raw_units(&args)? };
            let bar = crate::progress::bar((annotations.parts.len() * units.templates.len()) as u64, "localize");
            let outputs = localize_annotated(&units, &annotations, &params, &|_| bar.inc(1))?;
            bar.finish_and_clear();
            outputs
        }
        Method::Prior => {
            let input_size = match &args.cache {
                Some(dir) => open_cache(dir)?.manifest().input_size,
                None => 224,
            };
            (prior_predictions(&annotations, input_size)?, BTreeMap::new())
        }
    };
    expgraph_io::write_json(&args.out, &file).with_context(|| format!("writing {}", args.out.display()))?;
    tracing::info!(out = %args.out.display(), parts = file.parts.len(), "predictions written");
    if let Some(path) = &args.save_models {
        expgraph_io::write_json(path, &models).with_context(|| format!("writing {}", path.display()))?;
    }
    let images = file.parts.values().map(|p| p.predictions.len()).max().unwrap_or(0);
    Ok(Summary::new(
        format!("{} parts localized ({}) on {images} images: {}", file.parts.len(), file.method, args.out.display()),
        serde_json::json!({"out": args.out, "method": file.method, "parts": file.parts.keys().collect::<Vec<_>>(), "images": images}),
    ))
}

fn build_params(args: &Args) -> Result<LocalizeValidParams> {
    let kernel = match args.kernel {
        KernelArg::Aog => Kernel::aog(),
        KernelArg::Gaussian => Kernel::Gaussian { sigma: args.sigma, truncate: 3.0 },
    };
    let weight = match args.weight {
        WeightArg::Detected => VoteWeight::Detected,
        WeightArg::Score => VoteWeight::Score,
    };
    let rule = match args.template_score {
        TemplateScoreArg::MeanScore => TemplateScore::MeanScore,
        TemplateScoreArg::Aog => TemplateScore::AOG,
    };
    Ok(LocalizeParams::default()
        .top_fraction(args.top_fraction)
        .max_displacement(args.max_displacement)
        .detection_threshold(args.detection_threshold)
        .kernel(kernel)
        .vote_weight(weight)
        .template_score(rule)
        .layers(args.layers.clone())
        .check()?)
}

fn open_cache(dir: &Path) -> Result<FeatureCache> {
    FeatureCache::open(dir).with_context(|| format!("opening cache {}", dir.display()))
}

fn graph_units(args: &Args) -> Result<UnitSet<'static>> {
    let graph_dir = args.graph.as_ref().context("--method graph needs --graph")?;
    let acts_dir = args.activations.as_ref().context("--method graph needs --activations")?;
    let graph = ExplanatoryGraph::load(graph_dir).with_context(|| format!("loading graph {}", graph_dir.display()))?;
    let acts = load_activations(acts_dir).with_context(|| format!("loading activations {}", acts_dir.display()))?;
    let cache = if args.both_views {
        Some(open_cache(args.cache.as_ref().context("--method graph --both-views needs --cache")?)?)
    } else {
        None
    };
    expgraph::provenance::check_activations(acts_dir, Some(graph_dir), cache.as_ref())?;
    let provenance = expgraph_graph::Provenance::load(acts_dir)?;
    let mut units = UnitSet::graph(&graph, acts, cache.as_ref()).with_context(|| match &args.cache {
        Some(dir) => format!("graph nodes in both views from cache {}", dir.display()),
        None => "graph nodes".into(),
    })?;
    units.provenance = provenance;
    Ok(units)
}

fn raw_units(args: &Args) -> Result<UnitSet<'static>> {
    let dir = args.cache.as_ref().context("--method raw needs --cache")?;
    UnitSet::raw(&open_cache(dir)?, &args.layers, args.both_views)
        .with_context(|| format!("raw filters of cache {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use expgraph_cache::View;
    use expgraph_graph::ImageActivations;
    use expgraph_graph::{save_activations, LayerActivations};
    use expgraph_localize::{PartModel, Point, PredictionFile};

    /// A one-layer graph (conv5_3 geometry, 2 filters × 2 nodes), built through serde so that
    /// fields the graph crate adds with defaults do not break this test.
    fn graph() -> ExplanatoryGraph {
        serde_json::from_value(serde_json::json!({
            "backbone": "synthetic",
            "input_size": 224,
            "layers": [{
                "info": { "name": "conv5_3", "channels": 2, "height": 14, "width": 14,
                          "geometry": { "stride": 16.0, "first_centre": 8.0, "receptive_field": 196.0 } },
                "nodes_per_filter": 2,
                "mu": [[5.0, 5.0], [6.0, 6.0], [7.0, 7.0], [8.0, 8.0]],
                "sigma": [1.0, 1.0, 1.0, 1.0],
                "mean_position": [[5.0, 5.0], [6.0, 6.0], [7.0, 7.0], [8.0, 8.0]],
                "parents": [[], [], [], []]
            }]
        }))
        .expect("a valid synthetic graph")
    }

    /// Nodes sit at fixed pixel offsets from the part at `(h, w)` (multiples of 16 px away).
    fn image(id: &str, part: (f64, f64)) -> ImageActivations {
        let offsets = [(-16.0, 0.0), (16.0, 32.0), (0.0, -32.0), (32.0, 16.0)];
        let to_map = |p: f64| ((p - 8.0) / 16.0 + 1.0) as f32;
        ImageActivations {
            image_id: id.into(),
            flipped: false,
            layers: vec![LayerActivations {
                layer: "conv5_3".into(),
                positions: offsets.iter().map(|o| [to_map(part.0 + o.0), to_map(part.1 + o.1)]).collect(),
                scores: vec![2.0, 1.5, 1.0, 0.5],
            }],
        }
    }

    fn args(dir: &Path, method: Method) -> Args {
        Args {
            annotations: dir.join("ann.json"),
            out: dir.join("out/pred.json"),
            method,
            graph: Some(dir.join("graph")),
            activations: Some(dir.join("acts")),
            cache: None,
            top_fraction: 1.0,
            max_displacement: 67.2,
            detection_threshold: 0.0,
            kernel: KernelArg::Aog,
            sigma: 35.0,
            weight: WeightArg::Detected,
            template_score: TemplateScoreArg::MeanScore,
            layers: vec![],
            both_views: false,
            save_models: Some(dir.join("models.json")),
        }
    }

    #[test]
    fn graph_method_end_to_end() {
        let dir = tempfile::tempdir().unwrap();
        let g = graph();
        g.save(dir.path().join("graph")).unwrap();
        let parts = [(72.0, 88.0), (104.0, 120.0), (88.0, 104.0), (120.0, 56.0), (56.0, 136.0)];
        let acts: Vec<_> = parts.iter().enumerate().map(|(i, p)| image(&format!("img{i}"), *p)).collect();
        save_activations(dir.path().join("acts"), &g, &acts).unwrap();
        let ann = serde_json::json!({ "parts": { "head": [
            { "image_id": "img0", "point": { "h": 72.0, "w": 88.0 } },
            { "image_id": "img1", "point": { "h": 104.0, "w": 120.0 } },
            { "image_id": "img2", "point": { "h": 88.0, "w": 104.0 } } ] } });
        std::fs::write(dir.path().join("ann.json"), ann.to_string()).unwrap();

        run(args(dir.path(), Method::Graph)).unwrap();
        let out: PredictionFile =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/pred.json")).unwrap()).unwrap();
        assert_eq!(out.method, "graph");
        let head = &out.parts["head"];
        assert_eq!(head.predictions.len(), 5);
        for (p, part) in head.predictions.iter().zip(parts) {
            assert_eq!((p.point.h, p.point.w), part, "{}", p.image_id);
        }
        assert_eq!(head.prior_mean, Point::new(88.0, 104.0));
        let models: BTreeMap<String, PartModel> =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("models.json")).unwrap()).unwrap();
        assert_eq!(models["head"].templates.len(), 3);

        // The prior method: every image gets the mean.
        assert!(run(args(dir.path(), Method::Prior)).is_err(), "prior has no model to save");
        run(Args { save_models: None, ..args(dir.path(), Method::Prior) }).unwrap();
        let out: PredictionFile =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/pred.json")).unwrap()).unwrap();
        assert_eq!(out.parts["head"].prior_mean, Point::new(88.0, 104.0));
        assert!(out.parts["head"].predictions.is_empty());

        // An annotated image without activations is a clear error, and no output is replaced.
        let bad =
            serde_json::json!({ "parts": { "head": [ { "image_id": "nope", "point": { "h": 1.0, "w": 1.0 } } ] } });
        std::fs::write(dir.path().join("ann.json"), bad.to_string()).unwrap();
        let before = std::fs::read(dir.path().join("out/pred.json")).unwrap();
        let err = run(args(dir.path(), Method::Graph)).unwrap_err();
        assert!(format!("{err:#}").contains("nope"), "{err:#}");
        assert_eq!(std::fs::read(dir.path().join("out/pred.json")).unwrap(), before);

        // Invalid parameters are rejected before any work.
        let mut a = args(dir.path(), Method::Graph);
        a.top_fraction = 0.0;
        assert!(run(a).is_err());
        // Both views of a graph need the feature cache to infer them.
        let mut a = args(dir.path(), Method::Graph);
        a.both_views = true;
        let err = run(a).unwrap_err();
        assert!(format!("{err:#}").contains("needs --cache"), "{err:#}");
    }

    /// Raw filters from an on-disk cache (3 filters, one blob each at a fixed cell offset from
    /// the part), with the mirrored view stored as a real mirror.
    #[test]
    fn raw_method_reads_the_cache() {
        use expgraph_cache::{
            CacheManifest, CacheWriter, ImageEntry, LayerInfo, StorageDtype, StorageInfo, TapGeometry,
        };
        let dir = tempfile::tempdir().unwrap();
        let info = LayerInfo {
            name: "conv5_3".into(),
            channels: 3,
            height: 14,
            width: 14,
            geometry: TapGeometry { stride: 16.0, first_centre: 8.0, receptive_field: 196.0 },
        };
        let cells = [(5usize, 6usize), (8, 4), (6, 9), (7, 7)];
        let offsets = [(0i64, 0i64), (2, -1), (-1, 3)];
        let manifest = CacheManifest {
            format_version: CacheManifest::FORMAT_VERSION,
            key: String::new(),
            backbone: "synthetic".into(),
            preprocess: "none".into(),
            input_size: 224,
            layers: vec![info.clone()],
            images: (0..cells.len())
                .map(|i| ImageEntry {
                    id: format!("img{i}"),
                    path: format!("img{i}.jpg"),
                    bbox: [0.0, 0.0, 10.0, 10.0],
                })
                .collect(),
            views: vec![View::Original, View::Flipped],
        };
        let storage = StorageInfo {
            dtype: StorageDtype::F16,
            shard_size: 8,
            weights_digest: "w".into(),
            norm_stats_digest: "s".into(),
        };
        let maps = |view: View| {
            let mut data = vec![0.0f32; cells.len() * info.image_len()];
            for (img, &(r, c)) in cells.iter().enumerate() {
                for (f, &(dr, dc)) in offsets.iter().enumerate() {
                    let (h, w) = ((r as i64 + dr) as usize, (c as i64 + dc) as usize);
                    let w = if view == View::Flipped { 15 - w } else { w };
                    data[img * info.image_len() + f * info.map_len() + (h - 1) * 14 + (w - 1)] = 1.0 + f as f32;
                }
            }
            data
        };
        let cache = dir.path().join("cache");
        let mut writer = CacheWriter::create(&cache, manifest, storage, false).unwrap();
        for view in [View::Original, View::Flipped] {
            writer.write_shard(0, "conv5_3", view, &maps(view)).unwrap();
        }
        writer.finish().unwrap();
        let px = |(r, c): (usize, usize)| (8.0 + (r as f64 - 1.0) * 16.0, 8.0 + (c as f64 - 1.0) * 16.0);
        let ann: Vec<_> = (0..3)
            .map(|i| serde_json::json!({ "image_id": format!("img{i}"), "point": { "h": px(cells[i]).0, "w": px(cells[i]).1 } }))
            .collect();
        std::fs::write(dir.path().join("ann.json"), serde_json::json!({ "parts": { "beak": ann } }).to_string())
            .unwrap();
        for both_views in [false, true] {
            let a = Args { cache: Some(cache.clone()), both_views, ..args(dir.path(), Method::Raw) };
            run(a).unwrap();
            let out: PredictionFile =
                serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/pred.json")).unwrap()).unwrap();
            assert_eq!(out.method, "raw");
            let preds = &out.parts["beak"].predictions;
            assert_eq!(preds.len(), 4);
            for (p, cell) in preds.iter().zip(cells) {
                assert_eq!((p.point.h, p.point.w), px(cell), "{} (both views: {both_views})", p.image_id);
            }
        }
    }
}
