//! The standard report of a run: summary, galleries, heat maps, synthesis, σ histograms,
//! localization (what `expgraph run` / `expgraph report` write).

use crate::crops::{load_crops, CropSource};
use crate::draw;
use crate::error::Result;
use crate::gallery::{node_gallery, GalleryParams};
use crate::heatmap::{heatmap_overlay, HeatmapParams};
use crate::html::{Figure, MetricTable, Report, Section};
use crate::localization::{localization_overlay, PartPoint, VoteMap};
use crate::plots::{bar_chart, sigma_histograms};
use crate::ranking::validate_activations;
use crate::synthesis::{synthesis_pair, MeanPatches, SynthesisParams};
use expgraph_graph::{ExplanatoryGraph, ImageActivations};
use image::RgbImage;

/// Activations of a set of images and where their crops come from (same indexing).
#[derive(Clone, Copy)]
pub struct ImageSet<'a> {
    /// Per-image inference output.
    pub activations: &'a [ImageActivations],
    /// Crop of image `i` = crop of `activations[i]`.
    pub crops: &'a dyn CropSource,
}

/// One localization result to draw.
#[derive(Debug, Clone)]
pub struct LocalizationCase {
    /// Caption (e.g. the image id).
    pub caption: String,
    /// The image the points refer to (usually the object crop).
    pub image: RgbImage,
    /// Predicted part points.
    pub predicted: Vec<PartPoint>,
    /// Ground-truth part points.
    pub truth: Vec<PartPoint>,
    /// Optional vote map of one part.
    pub vote_map: Option<VoteMap>,
}

/// Everything a report can show; only `graph` is required.
pub struct ReportInputs<'a> {
    /// Page title.
    pub title: String,
    /// Extra summary rows (timings, data set, …), appended after the graph's own.
    pub summary: Vec<(String, String)>,
    /// Metric tables.
    pub tables: Vec<MetricTable>,
    /// The graph.
    pub graph: &'a ExplanatoryGraph,
    /// Training images: galleries and mean patches.
    pub train: Option<ImageSet<'a>>,
    /// Images for heat maps and synthesis (defaults to `train`).
    pub test: Option<ImageSet<'a>>,
    /// Per-part normalized distance (spec §4.2), drawn as a bar chart.
    pub part_distances: Vec<(String, f64)>,
    /// Localization overlays.
    pub localization: Vec<LocalizationCase>,
}

/// What the standard report draws.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportParams {
    /// Gallery settings.
    pub gallery: GalleryParams,
    /// Graph layers with a gallery (`None` = all).
    pub gallery_layers: Option<Vec<usize>>,
    /// Heat-map settings.
    pub heatmap: HeatmapParams,
    /// Number of images with heat maps (the first ones of the test set).
    pub heatmap_images: usize,
    /// Synthesis settings.
    pub synthesis: SynthesisParams,
    /// Graph layers synthesized (`None` = all).
    pub synthesis_layers: Option<Vec<usize>>,
    /// Number of images synthesized (the first ones of the test set).
    pub synthesis_images: usize,
}

impl Default for ReportParams {
    fn default() -> Self {
        Self {
            gallery: GalleryParams::default(),
            gallery_layers: None,
            heatmap: HeatmapParams::default(),
            heatmap_images: 4,
            synthesis: SynthesisParams::default(),
            synthesis_layers: None,
            synthesis_images: 4,
        }
    }
}

fn layers_or_all(graph: &ExplanatoryGraph, chosen: &Option<Vec<usize>>) -> Vec<usize> {
    chosen.clone().unwrap_or_else(|| (0..graph.layers.len()).collect())
}

/// The graph's own summary rows: backbone, input size, layers, nodes, edges.
pub fn graph_summary(graph: &ExplanatoryGraph) -> Vec<(String, String)> {
    let layers = graph
        .layers
        .iter()
        .map(|l| {
            format!(
                "{} ({}×{}×{}, K={})",
                l.info.name, l.info.channels, l.info.height, l.info.width, l.nodes_per_filter
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let nodes =
        graph.layers.iter().map(|l| format!("{}: {}", l.info.name, l.num_nodes())).collect::<Vec<_>>().join(", ");
    let edges: usize = graph.layers.iter().map(|l| l.parents.iter().map(Vec::len).sum::<usize>()).sum();
    vec![
        ("backbone".into(), graph.backbone.clone()),
        ("input size".into(), format!("{} px", graph.input_size)),
        ("graph layers".into(), layers),
        ("nodes".into(), format!("{} ({nodes})", graph.num_nodes())),
        ("edges".into(), edges.to_string()),
    ]
}

/// Draws the standard report. Sections appear only when their inputs are present.
pub fn build_report(inputs: &ReportInputs<'_>, params: &ReportParams) -> Result<Report> {
    let graph = inputs.graph;
    let mut report = Report::new(inputs.title.clone());
    report.summary = graph_summary(graph);
    report.summary.extend(inputs.summary.iter().cloned());
    report.tables = inputs.tables.clone();
    if let Some(train) = inputs.train {
        validate_activations(graph, train.activations)?;
        report.summary.push(("training images".into(), train.activations.len().to_string()));
    }
    let test = inputs.test.or(inputs.train);
    if let Some(test) = inputs.test {
        validate_activations(graph, test.activations)?;
        report.summary.push(("test images".into(), test.activations.len().to_string()));
    }

    if let Some(train) = inputs.train.filter(|t| !t.activations.is_empty()) {
        let mut section = Section {
            title: "Node patch galleries".into(),
            text: Some(format!(
                "Per layer, the {} nodes with the largest sum of their top-{} scores, each with the patches of its {} best \
                 training images, centred at the node's inferred position (spec §4.4).",
                params.gallery.nodes, params.gallery.rank_top_k, params.gallery.patches_per_node
            )),
            figures: vec![],
        };
        for l in layers_or_all(graph, &params.gallery_layers) {
            tracing::info!(layer = %graph.layers.get(l).map(|g| g.info.name.as_str()).unwrap_or("?"), "gallery");
            let g = node_gallery(graph, train.activations, l, train.crops, &params.gallery)?;
            section.figures.push(Figure {
                caption: format!("{}: top {} nodes, {} px patches", g.layer, g.rows.len(), g.patch_side),
                image: g.image,
            });
        }
        report.sections.push(section);
    }

    if let Some(test) = test.filter(|t| !t.activations.is_empty() && params.heatmap_images > 0) {
        let count = params.heatmap_images.min(test.activations.len());
        let crops = load_crops(test.crops, 0..count)?;
        let mut section = Section {
            title: "Heat maps".into(),
            text: Some(format!(
                "Spatial distribution of the top {:.0}% nodes of each layer by inference score: each node a Gaussian of its σ \
                 at its inferred position, weighted by its score. Left: the object crop.",
                params.heatmap.top_fraction * 100.0
            )),
            figures: vec![],
        };
        for (i, crop) in &crops {
            let act = &test.activations[*i];
            let mut panels = vec![crop.clone()];
            for l in 0..graph.layers.len() {
                panels.push(heatmap_overlay(graph, act, l, crop, &params.heatmap)?);
            }
            let refs: Vec<&RgbImage> = panels.iter().collect();
            let names: Vec<&str> = graph.layers.iter().map(|l| l.info.name.as_str()).collect();
            section.figures.push(Figure {
                caption: format!(
                    "{}{}: crop, {}",
                    act.image_id,
                    if act.flipped { " (mirrored view)" } else { "" },
                    names.join(", ")
                ),
                image: draw::hstack(&refs, 6, [255, 255, 255]),
            });
        }
        report.sections.push(section);
    }

    if let (Some(train), Some(test)) = (inputs.train, test) {
        if params.synthesis_images > 0 && !train.activations.is_empty() && !test.activations.is_empty() {
            let count = params.synthesis_images.min(test.activations.len());
            let crops = load_crops(test.crops, 0..count)?;
            let mut section = Section {
                title: "Image synthesis from activated patterns".into(),
                text: Some(
                    "Each image rebuilt from the mean patches (over their best training images) of the nodes it activates, \
                     pasted at the inferred positions and weighted by score. Left: the object crop; then one synthesis per layer."
                        .into(),
                ),
                figures: vec![],
            };
            let layers = layers_or_all(graph, &params.synthesis_layers);
            let mut means = Vec::with_capacity(layers.len());
            for &l in &layers {
                tracing::info!(layer = l, "mean patches");
                means.push(MeanPatches::build(graph, train.activations, l, train.crops, &params.synthesis)?);
            }
            for (i, crop) in &crops {
                let act = &test.activations[*i];
                let mut panels = vec![];
                for m in &means {
                    panels.push(m.synthesize(
                        graph,
                        act,
                        crop.width(),
                        crop.height(),
                        params.synthesis.top_fraction,
                    )?);
                }
                let refs: Vec<&RgbImage> = panels.iter().collect();
                let synth = draw::hstack(&refs, 6, [255, 255, 255]);
                let names: Vec<&str> =
                    layers.iter().filter_map(|&l| graph.layers.get(l).map(|g| g.info.name.as_str())).collect();
                section.figures.push(Figure {
                    caption: format!("{}: crop, then {}", act.image_id, names.join(", ")),
                    image: synthesis_pair(crop, &synth),
                });
            }
            report.sections.push(section);
        }
    }

    if !inputs.part_distances.is_empty() || !inputs.localization.is_empty() {
        let mut section = Section {
            title: "Part localization".into(),
            text: Some(
                "Normalized distance per part (spec §4.2, lower is better). Overlays: ground truth as green rings, predictions \
                 as red crosses, the vote map in jet colours."
                    .into(),
            ),
            figures: vec![],
        };
        if !inputs.part_distances.is_empty() {
            section.figures.push(Figure {
                caption: "Normalized distance per part".into(),
                image: bar_chart(
                    "Normalized distance per part",
                    "normalized distance",
                    &inputs.part_distances,
                    (640, 360),
                )?,
            });
        }
        for case in &inputs.localization {
            section.figures.push(Figure {
                caption: case.caption.clone(),
                image: localization_overlay(&case.image, &case.predicted, &case.truth, case.vote_map.as_ref())?,
            });
        }
        report.sections.push(section);
    }

    let hists = sigma_histograms(graph)?;
    if !hists.is_empty() {
        report.sections.push(Section {
            title: "Node σ per layer".into(),
            text: Some("Learned spatial deviation σ of the nodes, in feature-map units (spec §1.1).".into()),
            figures: hists
                .into_iter()
                .map(|(name, image)| Figure { caption: format!("{name}: histogram of σ"), image })
                .collect(),
        });
    }
    Ok(report)
}
