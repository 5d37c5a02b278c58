//! `expgraph report`: draw the HTML report of a learned graph (galleries, heat maps, synthesis,
//! σ histograms) from the graph, its inference records and the feature caches' object crops.

use std::path::{Path, PathBuf};

use crate::graph_args::{cache_crops, GraphArgs, TrainedGraph};
use crate::summary::Summary;
use anyhow::{bail, Context, Result};
use expgraph_explore::{export_site, Explorer, Figure, StaticSite};
use expgraph_graph::{load_activations, ExplanatoryGraph};
use expgraph_report::{build_report, Attachment, ImageSet, Link, LinkList, Report, ReportInputs, ReportParams};

/// Arguments of `expgraph report`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub inputs: GraphArgs,
    /// Activations of test images for heat maps and synthesis (default: the training images).
    #[arg(long, requires = "test_cache")]
    pub test_activations: Option<PathBuf>,
    /// Feature cache of the test images.
    #[arg(long, requires = "test_activations")]
    pub test_cache: Option<PathBuf>,
    /// Output folder (index.html + PNGs + .expgraph-report.json, the list of files the report
    /// wrote). An existing folder is replaced only when it is exactly an earlier report (its
    /// manifest lists every entry, none changed); otherwise the command refuses and changes
    /// nothing.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Write into an output folder that holds more than an earlier report: the earlier report's
    /// files (listed in its manifest, even if changed; for a report without a manifest, its
    /// index.html and the figures it links) are replaced or removed, and every other file and
    /// folder is kept. A file that no report wrote is never replaced or deleted: if one is named
    /// like a report file (index.html, sNN-fNNN.png, .expgraph-report.json), the command refuses.
    #[arg(long)]
    pub overwrite: bool,
    /// Page title.
    #[arg(long, default_value = "Explanatory graph report")]
    pub title: String,
    /// Extra summary rows, `KEY=VALUE` (repeatable).
    #[arg(long = "summary", value_parser = parse_key_value)]
    pub summary: Vec<(String, String)>,
    /// Nodes per gallery (spec §4.4: 20).
    #[arg(long, default_value_t = 20)]
    pub gallery_nodes: usize,
    /// Gallery layers by name (repeatable; default: all graph layers).
    #[arg(long = "gallery-layer")]
    pub gallery_layers: Vec<String>,
    /// Images with heat maps.
    #[arg(long, default_value_t = 4)]
    pub heatmap_images: usize,
    /// Images synthesized from their activated patterns (0 = no synthesis section).
    #[arg(long, default_value_t = 4)]
    pub synthesis_images: usize,
    /// Also write the explorer's pages of the N best nodes of every layer (20 with the bare
    /// flag) into the report's `nodes/` folder, linked from the report: each node's patches,
    /// heat maps, parents with their learned displacements, and children, readable without a
    /// server (`expgraph serve` shows every node, layer tables and image pages).
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "20")]
    pub nodes: Option<usize>,
}

/// The folder of the node pages inside the report.
const NODES_DIR: &str = "nodes";

/// The node pages of `site` as report attachments under [`NODES_DIR`], and a list linking them
/// (a row per layer, thumbnails of each node's best patch).
fn node_pages(site: StaticSite) -> (Vec<Attachment>, LinkList) {
    let mut rows: Vec<(String, Vec<Link>)> = vec![];
    for n in &site.nodes {
        if rows.last().is_none_or(|(name, _)| *name != n.layer_name) {
            rows.push((n.layer_name.clone(), vec![]));
        }
        let thumbnail = format!("png/{}", Figure::Patches { layer: n.layer, node: n.node, count: 1 }.file_name());
        let thumbnail = site.files.iter().any(|f| f.path == thumbnail).then(|| format!("{NODES_DIR}/{thumbnail}"));
        if let Some((_, links)) = rows.last_mut() {
            links.push(Link {
                text: format!("{} node {} (rank {})", n.layer_name, n.node, n.rank + 1),
                href: format!("{NODES_DIR}/{}", n.path),
                thumbnail,
            });
        }
    }
    let list = LinkList {
        title: "Node pages".into(),
        text: Some(format!(
            "The best nodes of each layer by their top-k score; each page shows the node's patches, heat maps, \
             parents with their learned displacements, and children (all node pages: {NODES_DIR}/index.html)."
        )),
        rows,
    };
    let files = site
        .files
        .into_iter()
        .map(|f| Attachment { path: format!("{NODES_DIR}/{}", f.path), bytes: f.bytes })
        .collect();
    (files, list)
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("`{s}` is not KEY=VALUE"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

fn layer_indices(graph: &ExplanatoryGraph, names: &[String]) -> Result<Option<Vec<usize>>> {
    if names.is_empty() {
        return Ok(None);
    }
    names
        .iter()
        .map(|n| {
            graph.layer_by_name(n).map(|(i, _)| i).with_context(|| {
                let have: Vec<_> = graph.layers.iter().map(|l| l.info.name.as_str()).collect();
                format!("graph has no layer `{n}` (layers: {})", have.join(", "))
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// Refuses, before any work, an output folder that the report may not be written to, with a
/// hint whether `--overwrite` would help.
fn check_output(out: &Path, overwrite: bool) -> Result<()> {
    let Err(refused) = Report::check_output(out, overwrite) else { return Ok(()) };
    if overwrite {
        return Err(refused.into());
    }
    match Report::check_output(out, true) {
        Ok(()) => bail!(
            "{refused}; pass --overwrite to write the report into {} anyway: it replaces the earlier report's \
             files there and keeps every file and folder that no report wrote",
            out.display()
        ),
        Err(still) => {
            let why = match &still {
                expgraph_report::ReportError::Io { source, .. } => source.to_string(),
                other => other.to_string(),
            };
            bail!("{refused}; --overwrite would not help: {why}")
        }
    }
}

/// Run `expgraph report`.
pub fn run(args: Args) -> Result<Summary> {
    check_output(&args.out, args.overwrite)?;
    let TrainedGraph { graph, activations: train, crops: train_crops } = args.inputs.load()?;
    let test = match &args.test_activations {
        Some(dir) => Some(load_activations(dir).with_context(|| format!("loading activations {}", dir.display()))?),
        None => None,
    };
    let test_crops = match (&test, &args.test_cache) {
        (Some(acts), Some(dir)) => Some(cache_crops(dir, acts, args.inputs.images_root.as_deref())?),
        _ => None,
    };
    let mut summary = vec![
        ("graph".to_string(), args.inputs.graph.display().to_string()),
        ("training cache".to_string(), args.inputs.cache.display().to_string()),
    ];
    summary.extend(args.summary.iter().cloned());
    let inputs = ReportInputs {
        title: args.title.clone(),
        summary,
        tables: vec![],
        graph: &graph,
        train: Some(ImageSet { activations: &train, crops: &train_crops }),
        test: match (&test, &test_crops) {
            (Some(a), Some(c)) => Some(ImageSet { activations: a, crops: c }),
            _ => None,
        },
        part_distances: vec![],
        localization: vec![],
    };
    let mut params = ReportParams {
        heatmap_images: args.heatmap_images,
        synthesis_images: args.synthesis_images,
        gallery_layers: layer_indices(&graph, &args.gallery_layers)?,
        ..ReportParams::default()
    };
    params.gallery.nodes = args.gallery_nodes;
    let mut report = build_report(&inputs, &params).context("drawing the report")?;
    if let Some(per_layer) = args.nodes.filter(|&n| n > 0) {
        let explorer = Explorer::new(graph, train, Box::new(train_crops), args.inputs.origin())
            .context("opening the graph for its node pages")?;
        let (files, list) = node_pages(export_site(&explorer, per_layer).context("drawing the node pages")?);
        tracing::info!(files = files.len(), "node pages drawn");
        report.attachments.extend(files);
        report.links.push(list);
    }
    let written = report
        .write_with(&args.out, args.overwrite)
        .with_context(|| format!("writing the report to {}", args.out.display()))?;
    tracing::info!(images = written.images.len(), "report written to {}", written.index.display());
    Ok(Summary::new(
        written.index.display().to_string(),
        serde_json::json!({"index": written.index, "images": written.images.len()}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use expgraph_cache::{CacheManifest, CacheWriter, LayerInfo, StorageDtype, StorageInfo, TapGeometry, View};
    use expgraph_graph::ImageActivations;
    use expgraph_graph::{save_activations, LayerActivations};
    use expgraph_report::{
        CropSource, ExportLayer, ExportNode, GraphExport, RgbImage, GRAPH_EXPORT_SCHEMA, GRAPH_EXPORT_VERSION,
    };

    fn conv5_2() -> LayerInfo {
        LayerInfo {
            name: "conv5_2".into(),
            channels: 2,
            height: 14,
            width: 14,
            geometry: TapGeometry { stride: 16.0, first_centre: 8.5, receptive_field: 164.0 },
        }
    }

    fn tiny_graph() -> ExplanatoryGraph {
        let info = conv5_2();
        let nodes = (0..4)
            .map(|n| ExportNode {
                index: n,
                filter: n / 2,
                k: n % 2,
                mu: [3.0 + n as f64 * 2.0, 4.0 + n as f64],
                mu_pixel: [0.0, 0.0],
                sigma: 1.0 + n as f64 * 0.5,
                mean_position: [3.0 + n as f64 * 2.0, 4.0 + n as f64],
                parents: vec![],
            })
            .collect();
        let export = GraphExport {
            schema: GRAPH_EXPORT_SCHEMA.into(),
            schema_version: GRAPH_EXPORT_VERSION,
            backbone: "synthetic".into(),
            input_size: 224,
            params: serde_json::Value::Null,
            layers: vec![ExportLayer {
                index: 0,
                name: info.name.clone(),
                channels: info.channels,
                height: info.height,
                width: info.width,
                geometry: info.geometry,
                nodes_per_filter: 2,
                score_norm: 1.0,
                nodes,
            }],
        };
        export.to_graph().unwrap()
    }

    /// Source images on disk → a feature cache (zero maps) → graph + activations under `root`;
    /// returns the activations.
    fn fixture(root: &Path) -> Vec<ImageActivations> {
        std::fs::create_dir(root.join("images")).unwrap();
        let mut entries = vec![];
        for i in 0..3u8 {
            let img = RgbImage::from_fn(300, 200, |x, y| image_pixel(i, x, y));
            let path = root.join("images").join(format!("img{i}.png"));
            img.save(&path).unwrap();
            entries.push(expgraph_cache::ImageEntry {
                id: format!("img{i}"),
                path: format!("images/img{i}.png"),
                bbox: [20.0, 10.0, 280.0, 190.0],
            });
        }
        let manifest = CacheManifest {
            format_version: CacheManifest::FORMAT_VERSION,
            key: String::new(),
            backbone: "synthetic".into(),
            preprocess: "caffe".into(),
            input_size: 224,
            layers: vec![conv5_2()],
            images: entries,
            views: vec![View::Original],
        };
        let storage = StorageInfo {
            dtype: StorageDtype::F16,
            shard_size: 32,
            weights_digest: "w".into(),
            norm_stats_digest: "n".into(),
        };
        let mut writer = CacheWriter::create(root.join("cache"), manifest, storage, false).unwrap();
        for shard in writer.pending_shards() {
            let n = writer.shard_range(shard).len();
            for (layer, view) in writer.files_per_shard() {
                writer.write_shard(shard, &layer, view, &vec![0.0; n * 2 * 14 * 14]).unwrap();
            }
        }
        writer.finish().unwrap();

        let graph = tiny_graph();
        graph.save(root.join("graph")).unwrap();
        let acts: Vec<ImageActivations> = (0..3)
            .map(|i| ImageActivations {
                image_id: format!("img{}", 2 - i), // another order than the cache's
                flipped: i == 1,
                layers: vec![LayerActivations {
                    layer: "conv5_2".into(),
                    positions: graph.layers[0].mu.iter().map(|m| [m[0] as f32, m[1] as f32]).collect(),
                    scores: (0..4).map(|n| (n + i) as f32 * 0.5).collect(),
                }],
            })
            .collect();
        save_activations(root.join("acts"), &graph, &acts).unwrap();
        acts
    }

    /// `expgraph report` arguments for the [`fixture`] under `root`.
    fn args(root: &Path, out: &Path, overwrite: bool) -> Args {
        Args {
            inputs: GraphArgs {
                graph: root.join("graph"),
                activations: root.join("acts"),
                cache: root.join("cache"),
                images_root: Some(root.to_path_buf()),
            },
            test_activations: None,
            test_cache: None,
            out: out.to_path_buf(),
            title: "CLI test".into(),
            summary: vec![("learning time".into(), "1 s".into())],
            gallery_nodes: 3,
            gallery_layers: vec!["conv5_2".into()],
            heatmap_images: 2,
            synthesis_images: 1,
            nodes: None,
            overwrite,
        }
    }

    #[test]
    fn report_command_draws_crops_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let acts = fixture(root);
        let out = root.join("report");
        run(args(root, &out, false)).unwrap();
        let html = std::fs::read_to_string(out.join("index.html")).unwrap();
        assert!(html.contains("CLI test") && html.contains("learning time"));
        let gallery = image::open(out.join("s00-f000.png")).unwrap();
        assert!(gallery.width() > 300);

        // crops come from the right files: activation 0 is img2
        let crops = cache_crops(&root.join("cache"), &acts, Some(root)).unwrap();
        let crop = crops.crop(0).unwrap();
        assert_eq!(crop.dimensions(), (224, 224));
        // bilinear resampling may blend the gradient step next to the centre: allow ±2
        let (got, want) = (crop.get_pixel(112, 112).0, image_pixel(2, 150, 100).0);
        assert!(got.iter().zip(want).all(|(g, w)| g.abs_diff(w) <= 2), "{got:?} vs {want:?}");
        assert!(crops.crop(7).is_err());

        let bad = [ImageActivations { image_id: "nope".into(), flipped: false, layers: vec![] }];
        let err = cache_crops(&root.join("cache"), &bad, None).err().unwrap();
        assert!(format!("{err:#}").contains("nope"), "{err:#}");
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    /// Issue 11 item 1: `report -o d` over d/{index.html, notes.txt, sub/} deleted all of it.
    #[test]
    fn report_command_never_deletes_user_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fixture(root);
        let d = root.join("d");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("index.html"), "x").unwrap();
        std::fs::write(d.join("notes.txt"), "keep").unwrap();
        for overwrite in [false, true] {
            let err = format!("{:#}", run(args(root, &d, overwrite)).unwrap_err());
            assert!(err.contains(&d.display().to_string()) && err.contains("`index.html`"), "{err}");
            assert!(err.contains(if overwrite { "even in overwrite mode" } else { "--overwrite" }), "{err}");
            assert_eq!(entries(&d), ["index.html", "notes.txt", "sub"]);
            assert_eq!(std::fs::read_to_string(d.join("index.html")).unwrap(), "x");
        }
        // without the user's index.html, --overwrite writes the report beside the rest
        std::fs::remove_file(d.join("index.html")).unwrap();
        let err = format!("{:#}", run(args(root, &d, false)).unwrap_err());
        assert!(err.contains("`notes.txt`") && err.contains("pass --overwrite"), "{err}");
        run(args(root, &d, true)).unwrap();
        let have = entries(&d);
        assert!(["notes.txt", "sub", "index.html", ".expgraph-report.json"]
            .iter()
            .all(|n| have.contains(&n.to_string())));
        assert_eq!(std::fs::read_to_string(d.join("notes.txt")).unwrap(), "keep");
        assert!(entries(root).iter().all(|n| !n.starts_with(".expgraph-report-")), "{:?}", entries(root));
        // an earlier report alone is replaced without --overwrite
        let out = root.join("report");
        run(args(root, &out, false)).unwrap();
        run(args(root, &out, false)).unwrap();
    }

    #[test]
    fn report_command_exports_linked_node_pages() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fixture(root);
        let out = root.join("report");
        let mut a = args(root, &out, false);
        a.nodes = Some(2);
        run(a).unwrap();
        let html = std::fs::read_to_string(out.join("index.html")).unwrap().replace("&#x2f;", "/");
        assert!(html.contains("Node pages"), "{html}");
        let pages = entries(&out.join("nodes"));
        let nodes: Vec<&String> = pages.iter().filter(|p| p.starts_with("node-")).collect();
        assert_eq!(nodes.len(), 2, "{pages:?}");
        for page in nodes {
            assert!(html.contains(&format!("href=\"nodes/{page}\"")), "the report does not link {page}");
            let node = std::fs::read_to_string(out.join("nodes").join(page)).unwrap();
            assert!(node.contains("Top patches") && node.contains("conv5_2"), "{node}");
        }
        assert!(entries(&out.join("nodes/png")).len() >= 2);
        let manifest = std::fs::read_to_string(out.join(".expgraph-report.json")).unwrap();
        assert!(manifest.contains("nodes/index.html") && manifest.contains("nodes/png/"), "{manifest}");
        // the same report without --nodes replaces it, node pages and all
        run(args(root, &out, false)).unwrap();
        assert!(!out.join("nodes").exists());
    }

    fn image_pixel(i: u8, x: u32, y: u32) -> image::Rgb<u8> {
        // flat colour per image with a gentle gradient: resampling keeps the centre value
        image::Rgb([60 * i + 40, (x / 60) as u8 * 10 + 50, (y / 50) as u8 * 10 + 50])
    }

    #[test]
    fn summary_rows_parse() {
        assert_eq!(parse_key_value("a = b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_key_value("novalue").is_err());
    }
}
