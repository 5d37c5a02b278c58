//! Graph export: the whole graph as versioned JSON, a filtered subgraph as Graphviz DOT.
//! The JSON schema is documented in the crate README ("Graph export schema").

use crate::error::{ReportError, Result};
use crate::ranking::rank_nodes;
use crate::write::write_atomic;
use expgraph_graph::{ExplanatoryGraph, ImageActivations, LayerInfo, Parent, TapGeometry};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

/// Value of the `schema` field.
pub const GRAPH_EXPORT_SCHEMA: &str = "expgraph.graph-export";
/// Value of the `schema_version` field (bumped on any incompatible change).
pub const GRAPH_EXPORT_VERSION: u32 = 1;

/// The JSON export of a whole graph (schema `expgraph.graph-export`, version 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphExport {
    /// Always [`GRAPH_EXPORT_SCHEMA`].
    pub schema: String,
    /// Always [`GRAPH_EXPORT_VERSION`] when written by this version.
    pub schema_version: u32,
    /// Backbone name.
    pub backbone: String,
    /// Side of the square network input, pixels.
    pub input_size: usize,
    /// Learning hyper-parameters as recorded by the learner (`null` when unknown).
    #[serde(default)]
    pub params: serde_json::Value,
    /// Layers, shallowest first.
    pub layers: Vec<ExportLayer>,
}

fn one() -> f64 {
    1.0
}

/// One layer of a [`GraphExport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportLayer {
    /// Graph layer index (0 = shallowest).
    pub index: usize,
    /// Conv layer name.
    pub name: String,
    /// Filters.
    pub channels: usize,
    /// Map height.
    pub height: usize,
    /// Map width.
    pub width: usize,
    /// Map → input-pixel geometry (spec §1.3).
    pub geometry: TapGeometry,
    /// Nodes per filter K.
    pub nodes_per_filter: usize,
    /// Mean raw node score of the training set (scores are divided by it).
    #[serde(default = "one")]
    pub score_norm: f64,
    /// Nodes, by index `filter · K + k`.
    pub nodes: Vec<ExportNode>,
}

/// One node of an [`ExportLayer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportNode {
    /// Index in the layer.
    pub index: usize,
    /// Filter (channel).
    pub filter: usize,
    /// Component within the filter, `index − filter · K`.
    pub k: usize,
    /// Prior mean `(h, w)`, 1-based map coordinates.
    pub mu: [f64; 2],
    /// Prior mean `(h, w)` in 1-based input pixels (`c + (x − 1)·s`).
    pub mu_pixel: [f64; 2],
    /// σ, map units.
    pub sigma: f64,
    /// Mean inferred position over the training images `(h, w)`, map coordinates.
    pub mean_position: [f64; 2],
    /// Parent edges into layer `index + 1`.
    pub parents: Vec<ExportEdge>,
}

/// A parent edge.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ExportEdge {
    /// Parent node index in the next-deeper layer.
    pub node: u32,
    /// Edge weight: the co-movement similarity that selected the parent (spec §2.2).
    pub weight: f32,
}

impl GraphExport {
    /// The export of `graph`; fails when the graph does not pass `ExplanatoryGraph::validate`
    /// (lengths, finite values, parent indices; JSON has no NaN).
    pub fn from_graph(graph: &ExplanatoryGraph) -> Result<Self> {
        graph.validate().map_err(|e| ReportError::invalid("graph", e.to_string()))?;
        let layers = graph
            .layers
            .iter()
            .enumerate()
            .map(|(index, l)| ExportLayer {
                index,
                name: l.info.name.clone(),
                channels: l.info.channels,
                height: l.info.height,
                width: l.info.width,
                geometry: l.info.geometry,
                nodes_per_filter: l.nodes_per_filter,
                score_norm: l.score_norm,
                nodes: (0..l.num_nodes())
                    .map(|n| {
                        let g = &l.info.geometry;
                        let mu = l.mu[n];
                        let k = l.nodes_per_filter.max(1);
                        ExportNode {
                            index: n,
                            filter: n / k,
                            k: n % k,
                            mu,
                            mu_pixel: [g.map_to_pixel(mu[0]), g.map_to_pixel(mu[1])],
                            sigma: l.sigma[n],
                            mean_position: l.mean_position[n],
                            parents: l.parents[n]
                                .iter()
                                .map(|p| ExportEdge { node: p.node, weight: p.similarity })
                                .collect(),
                        }
                    })
                    .collect(),
            })
            .collect();
        Ok(Self {
            schema: GRAPH_EXPORT_SCHEMA.into(),
            schema_version: GRAPH_EXPORT_VERSION,
            backbone: graph.backbone.clone(),
            input_size: graph.input_size,
            params: graph.params.clone(),
            layers,
        })
    }

    /// Rebuilds the graph (the inverse of [`GraphExport::from_graph`]). Goes through the model's
    /// serde form, so fields the model gains later with a serde default still load.
    pub fn to_graph(&self) -> Result<ExplanatoryGraph> {
        let layers: Vec<serde_json::Value> = self
            .layers
            .iter()
            .map(|l| {
                let info = LayerInfo {
                    name: l.name.clone(),
                    channels: l.channels,
                    height: l.height,
                    width: l.width,
                    geometry: l.geometry,
                };
                let parents: Vec<Vec<Parent>> = l
                    .nodes
                    .iter()
                    .map(|n| n.parents.iter().map(|e| Parent { node: e.node, similarity: e.weight }).collect())
                    .collect();
                serde_json::json!({
                    "info": info,
                    "nodes_per_filter": l.nodes_per_filter,
                    "mu": l.nodes.iter().map(|n| n.mu).collect::<Vec<_>>(),
                    "sigma": l.nodes.iter().map(|n| n.sigma).collect::<Vec<_>>(),
                    "mean_position": l.nodes.iter().map(|n| n.mean_position).collect::<Vec<_>>(),
                    "parents": parents,
                    "score_norm": l.score_norm,
                })
            })
            .collect();
        let value = serde_json::json!({
            "backbone": self.backbone,
            "input_size": self.input_size,
            "layers": layers,
            "params": self.params,
        });
        serde_json::from_value(value).map_err(|source| ReportError::Json { path: "<graph export>".into(), source })
    }

    /// Reads and checks an export file (schema name and version).
    pub fn read(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| ReportError::io(path, e))?;
        let export: Self = serde_json::from_reader(std::io::BufReader::new(file))
            .map_err(|source| ReportError::Json { path: path.into(), source })?;
        if export.schema != GRAPH_EXPORT_SCHEMA || export.schema_version != GRAPH_EXPORT_VERSION {
            return Err(ReportError::Schema {
                path: path.into(),
                detail: format!(
                    "schema `{}` v{} is not `{GRAPH_EXPORT_SCHEMA}` v{GRAPH_EXPORT_VERSION}",
                    export.schema, export.schema_version
                ),
            });
        }
        Ok(export)
    }
}

/// Writes the JSON export of `graph` to `path` atomically (temp file, then rename).
pub fn write_graph_json(graph: &ExplanatoryGraph, path: &Path) -> Result<()> {
    let export = GraphExport::from_graph(graph)?;
    write_atomic(path, |w| {
        serde_json::to_writer(w, &export).map_err(|source| ReportError::Json { path: path.into(), source })
    })
}

/// Which part of the graph goes into the DOT file.
#[derive(Debug, Clone, PartialEq)]
pub struct DotParams {
    /// Nodes kept per layer, best first.
    pub nodes_per_layer: usize,
    /// With activations, nodes are ranked by the sum of their `rank_top_k` best scores (as in
    /// galleries); without, by the summed weight of their edges.
    pub rank_top_k: usize,
}

impl Default for DotParams {
    fn default() -> Self {
        Self { nodes_per_layer: 12, rank_top_k: 50 }
    }
}

/// Best-first node order of each layer.
fn layer_orders(graph: &ExplanatoryGraph, acts: Option<&[ImageActivations]>, top_k: usize) -> Result<Vec<Vec<usize>>> {
    if let Some(acts) = acts.filter(|a| !a.is_empty()) {
        return (0..graph.layers.len())
            .map(|l| Ok(rank_nodes(graph, acts, l, top_k)?.into_iter().map(|r| r.node).collect()))
            .collect();
    }
    let mut strength: Vec<Vec<f64>> = graph.layers.iter().map(|l| vec![0.0; l.num_nodes()]).collect();
    for (l, layer) in graph.layers.iter().enumerate() {
        for (n, ps) in layer.parents.iter().enumerate() {
            for p in ps {
                let w = p.similarity.max(0.0) as f64;
                strength[l][n] += w;
                if let Some(s) = strength.get_mut(l + 1).and_then(|s| s.get_mut(p.node as usize)) {
                    *s += w;
                }
            }
        }
    }
    Ok(strength
        .into_iter()
        .map(|s| {
            let mut order: Vec<usize> = (0..s.len()).collect();
            order.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
            order
        })
        .collect())
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Graphviz DOT of a subgraph: the best `nodes_per_layer` nodes of every layer and the parent
/// edges among them (the full graph, 61k nodes / 768k edges at VGG-16 size, will not draw).
/// Node ids are `L{layer}_{node}`; labels give layer, filter and node index; edge labels and pen
/// widths give the weights. Edges point from parent (deeper) to child.
pub fn graph_dot(graph: &ExplanatoryGraph, acts: Option<&[ImageActivations]>, params: &DotParams) -> Result<String> {
    let orders = layer_orders(graph, acts, params.rank_top_k)?;
    let kept: Vec<Vec<usize>> =
        orders.iter().map(|o| o.iter().copied().take(params.nodes_per_layer).collect()).collect();
    let mut out = String::new();
    let _ = writeln!(out, "digraph explanatory_graph {{");
    let _ = writeln!(
        out,
        "  rankdir=BT;\n  node [shape=box, style=\"rounded,filled\", fillcolor=\"#eef3fb\", fontsize=10];"
    );
    let _ = writeln!(
        out,
        "  label=\"{} explanatory graph (top {} nodes per layer)\";",
        dot_escape(&graph.backbone),
        params.nodes_per_layer
    );
    for (l, layer) in graph.layers.iter().enumerate() {
        let _ =
            writeln!(out, "  subgraph cluster_{l} {{\n    label=\"{}\";\n    rank=same;", dot_escape(&layer.info.name));
        for &n in &kept[l] {
            let _ = writeln!(
                out,
                "    L{l}_{n} [label=\"{}\\nfilter {} | node {n}\"];",
                dot_escape(&layer.info.name),
                layer.filter_of(n)
            );
        }
        let _ = writeln!(out, "  }}");
    }
    for (l, layer) in graph.layers.iter().enumerate() {
        let Some(upper) = kept.get(l + 1) else { continue };
        for &n in &kept[l] {
            for p in layer.parents.get(n).map(Vec::as_slice).unwrap_or(&[]) {
                if upper.contains(&(p.node as usize)) {
                    let w = p.similarity;
                    let pen = 0.5 + 2.5 * w.clamp(0.0, 1.0);
                    let _ = writeln!(out, "  L{}_{} -> L{l}_{n} [label=\"{w:.3}\", penwidth={pen:.2}];", l + 1, p.node);
                }
            }
        }
    }
    let _ = writeln!(out, "}}");
    Ok(out)
}

/// Writes [`graph_dot`] to `path` atomically.
pub fn write_dot(
    graph: &ExplanatoryGraph,
    acts: Option<&[ImageActivations]>,
    params: &DotParams,
    path: &Path,
) -> Result<()> {
    let dot = graph_dot(graph, acts, params)?;
    write_atomic(path, |w| w.write_all(dot.as_bytes()).map_err(|e| ReportError::io(path, e)))
}
