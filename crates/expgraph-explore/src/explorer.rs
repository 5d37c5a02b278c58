//! What the pages show, computed once when the explorer opens: the graph, the activations of
//! its training images, each node's best images and rank, and each node's children.

use expgraph_graph::{ExplanatoryGraph, ImageActivations};
use expgraph_report::{rank_nodes, validate_activations, CropSource};

use crate::parts::PartVotes;
use crate::study::Study;
use crate::{ExploreError, Result};

/// Best images kept per node (the spec's top-50 ranking).
pub const TOP_IMAGES: usize = 50;

/// Best images kept per raw filter (for its patches).
pub const FILTER_TOP_IMAGES: usize = 20;

/// Most rows of a record shown on the index.
pub const RECORD_ROWS: usize = 1000;

/// The scalars of `v` as `(path, value)` rows; an array of scalars is one row.
fn flatten(v: &serde_json::Value, path: String, out: &mut Vec<(String, String)>) {
    use serde_json::Value;
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(x) if !n.is_i64() && !n.is_u64() => format!("{x:.6}").trim_end_matches('0').to_string(),
            _ => n.to_string(),
        },
        other => other.to_string(),
    };
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                flatten(x, if path.is_empty() { k.clone() } else { format!("{path}.{k}") }, out);
            }
        }
        Value::Array(items) if items.iter().all(|x| !x.is_object() && !x.is_array()) => {
            out.push((path, format!("[{}]", items.iter().map(scalar).collect::<Vec<_>>().join(", "))));
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                flatten(x, format!("{path}[{i}]"), out);
            }
        }
        other => out.push((path, scalar(other))),
    }
}

/// A raw filter's best images, best first: `(image, argmax cell (h, w) in the original view's
/// map, 1-based, its value)`.
pub type FilterTop = Vec<(usize, [f32; 2], f32)>;

/// One node's ranking among its layer: the sum of its best scores, its rank (0 = best) and its
/// best images `(image index, score)`, best first.
#[derive(Debug, Clone)]
pub struct NodeRank {
    /// Sum of its [`TOP_IMAGES`] best scores.
    pub total: f64,
    /// Position in its layer, best first.
    pub rank: usize,
    /// Best images, best first.
    pub top_images: Vec<(usize, f32)>,
}

/// A child edge: the child node (in the next-shallower layer) and the edge's similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Child {
    /// Node index in layer `l − 1`.
    pub node: usize,
    /// Co-movement similarity of the edge.
    pub similarity: f32,
}

/// A learned graph opened for browsing: read-only, shared by every request.
pub struct Explorer {
    graph: ExplanatoryGraph,
    acts: Vec<ImageActivations>,
    crops: Box<dyn CropSource + Send + Sync>,
    /// Per layer, per node.
    ranks: Vec<Vec<NodeRank>>,
    /// Per layer, the nodes best first.
    order: Vec<Vec<usize>>,
    /// Per layer, per node: its children, highest similarity first.
    children: Vec<Vec<Vec<Child>>>,
    /// Where the graph came from (shown on the index).
    origin: Vec<(String, String)>,
    /// Per layer, per filter: the raw filter's best images, when given.
    raw: Option<Vec<Vec<FilterTop>>>,
    /// The human study, when one runs.
    study: Option<Study>,
    /// The part models whose votes the pages show, when given.
    parts: Option<PartVotes>,
    /// A run's record (metrics, configuration) as `(path, value)` rows, shown on the index.
    record: Vec<(String, String)>,
}

impl Explorer {
    /// Opens `graph` with the activations of its training images (`expgraph infer` on the
    /// training cache) and their object crops; `origin` rows (e.g. `("graph", path)`) are shown
    /// on the index. Ranks every node (about a second per 10,000 nodes × 300 images).
    pub fn new(
        graph: ExplanatoryGraph,
        acts: Vec<ImageActivations>,
        crops: Box<dyn CropSource + Send + Sync>,
        origin: Vec<(String, String)>,
    ) -> Result<Self> {
        if acts.is_empty() {
            return Err(ExploreError::Input("the activations hold no images".into()));
        }
        validate_activations(&graph, &acts)?;
        let mut ranks = Vec::with_capacity(graph.layers.len());
        let mut order = Vec::with_capacity(graph.layers.len());
        for layer in 0..graph.layers.len() {
            let ranked = rank_nodes(&graph, &acts, layer, TOP_IMAGES)?;
            let mut by_node = vec![None; ranked.len()];
            let mut best_first = Vec::with_capacity(ranked.len());
            for (rank, r) in ranked.into_iter().enumerate() {
                best_first.push(r.node);
                by_node[r.node] = Some(NodeRank { total: r.total, rank, top_images: r.top_images });
            }
            ranks.push(
                by_node
                    .into_iter()
                    .map(|r| r.unwrap_or(NodeRank { total: 0.0, rank: 0, top_images: vec![] }))
                    .collect(),
            );
            order.push(best_first);
        }
        let mut children: Vec<Vec<Vec<Child>>> = graph.layers.iter().map(|l| vec![Vec::new(); l.num_nodes()]).collect();
        for (l, layer) in graph.layers.iter().enumerate() {
            for (node, parents) in layer.parents.iter().enumerate() {
                for p in parents {
                    let slot = children.get_mut(l + 1).and_then(|c| c.get_mut(p.node as usize)).ok_or_else(|| {
                        ExploreError::Input(format!(
                            "layer {} node {node} has parent {} outside the layer above",
                            layer.info.name, p.node
                        ))
                    })?;
                    slot.push(Child { node, similarity: p.similarity });
                }
            }
        }
        for layer in &mut children {
            for list in layer {
                list.sort_by(|a, b| b.similarity.total_cmp(&a.similarity).then(a.node.cmp(&b.node)));
            }
        }
        tracing::info!(layers = graph.layers.len(), nodes = graph.num_nodes(), images = acts.len(), "explorer ready");
        Ok(Explorer {
            graph,
            acts,
            crops,
            ranks,
            order,
            children,
            origin,
            raw: None,
            study: None,
            parts: None,
            record: vec![],
        })
    }

    /// Adds the raw filters (the study's baseline): `raw` holds one entry per image, in the
    /// order of the activations, whose layers are the graph's and whose "nodes" are the layer's
    /// filters: each filter's argmax cell in the original view and its value (what
    /// `expgraph_localize::filter_argmaxes` computes). Keeps each filter's best images.
    pub fn with_raw_filters(mut self, raw: &[ImageActivations]) -> Result<Self> {
        let bad = |what: String| ExploreError::Input(format!("raw filters: {what}"));
        if raw.len() != self.acts.len() {
            return Err(bad(format!("{} images, the activations have {}", raw.len(), self.acts.len())));
        }
        for (r, a) in raw.iter().zip(&self.acts) {
            if r.image_id != a.image_id {
                return Err(bad(format!("image {} where the activations have {}", r.image_id, a.image_id)));
            }
            if r.layers.len() != self.graph.layers.len() {
                return Err(bad(format!(
                    "{} layers for image {}, the graph has {}",
                    r.layers.len(),
                    r.image_id,
                    self.graph.layers.len()
                )));
            }
            for (rl, gl) in r.layers.iter().zip(&self.graph.layers) {
                let c = gl.info.channels;
                if rl.layer != gl.info.name || rl.scores.len() != c || rl.positions.len() != c {
                    return Err(bad(format!(
                        "image {}: layer {} with {} filters where the graph has {} with {c}",
                        r.image_id,
                        rl.layer,
                        rl.scores.len(),
                        gl.info.name
                    )));
                }
            }
        }
        let tops = self
            .graph
            .layers
            .iter()
            .enumerate()
            .map(|(l, gl)| {
                (0..gl.info.channels)
                    .map(|f| {
                        let mut all: FilterTop = raw
                            .iter()
                            .enumerate()
                            .map(|(i, r)| (i, r.layers[l].positions[f], r.layers[l].scores[f]))
                            .collect();
                        all.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
                        all.truncate(FILTER_TOP_IMAGES);
                        all
                    })
                    .collect()
            })
            .collect();
        self.raw = Some(tops);
        Ok(self)
    }

    /// Runs the human study `study` (see [`crate::study`]); it needs the raw filters
    /// ([`with_raw_filters`](Self::with_raw_filters)) for its baseline items.
    pub fn with_study(mut self, study: Study) -> Result<Self> {
        if self.raw.is_none() {
            return Err(ExploreError::Input("a study needs the raw filters (with_raw_filters) first".into()));
        }
        self.study = Some(study);
        Ok(self)
    }

    /// Shows the part models' votes ([`PartVotes::new`] checks them against the graph): a node
    /// page lists the parts a node votes for, a part page draws each template's voting nodes.
    pub fn with_part_votes(mut self, parts: PartVotes) -> Self {
        self.parts = Some(parts);
        self
    }

    /// Shows a run's record on the index (e.g. `record.json` of `expgraph run` or a benchmark:
    /// its metrics and configuration), every scalar as a row `a.b[2].c = value`, at most
    /// [`RECORD_ROWS`] rows.
    pub fn with_record(mut self, record: &serde_json::Value) -> Self {
        self.record.clear();
        flatten(record, String::new(), &mut self.record);
        self.record.truncate(RECORD_ROWS);
        self
    }

    /// The record's rows.
    pub fn record(&self) -> &[(String, String)] {
        &self.record
    }

    /// The part models' votes, when given.
    pub fn parts(&self) -> Option<&PartVotes> {
        self.parts.as_ref()
    }

    /// The image of the activations with id `image_id` (the first, if listed twice).
    pub fn image_by_id(&self, image_id: &str) -> Option<usize> {
        self.acts.iter().position(|a| a.image_id == image_id)
    }

    /// The study, when one runs.
    pub fn study(&self) -> Option<&Study> {
        self.study.as_ref()
    }

    /// The best images of raw filter `filter` of `layer`, when the raw filters were given.
    pub fn filter_top(&self, layer: usize, filter: usize) -> Option<&FilterTop> {
        self.raw.as_ref()?.get(layer)?.get(filter)
    }

    /// The graph.
    pub fn graph(&self) -> &ExplanatoryGraph {
        &self.graph
    }

    /// The training images' activations.
    pub fn activations(&self) -> &[ImageActivations] {
        &self.acts
    }

    /// Where the crops come from.
    pub fn crops(&self) -> &(dyn CropSource + Send + Sync) {
        self.crops.as_ref()
    }

    /// Rank and best images of `node` of `layer`.
    pub fn rank(&self, layer: usize, node: usize) -> Option<&NodeRank> {
        self.ranks.get(layer)?.get(node)
    }

    /// The nodes of `layer`, best first.
    pub fn order(&self, layer: usize) -> &[usize] {
        self.order.get(layer).map_or(&[], Vec::as_slice)
    }

    /// The children of `node` of `layer` (nodes of `layer − 1`), highest similarity first.
    pub fn children(&self, layer: usize, node: usize) -> &[Child] {
        self.children.get(layer).and_then(|c| c.get(node)).map_or(&[], Vec::as_slice)
    }

    /// The origin rows given at opening.
    pub fn origin(&self) -> &[(String, String)] {
        &self.origin
    }

    /// Checks that `layer`/`node` exist; the error says what the graph has.
    pub fn check_node(&self, layer: usize, node: usize) -> Result<()> {
        let l = self.graph.layers.get(layer).ok_or_else(|| {
            ExploreError::NotFound(format!("layer {layer} (the graph has {})", self.graph.layers.len()))
        })?;
        if node >= l.num_nodes() {
            return Err(ExploreError::NotFound(format!(
                "node {node} of layer {} (it has {})",
                l.info.name,
                l.num_nodes()
            )));
        }
        Ok(())
    }

    /// Checks that image `image` exists.
    pub fn check_image(&self, image: usize) -> Result<()> {
        if image >= self.acts.len() {
            return Err(ExploreError::NotFound(format!("image {image} (there are {})", self.acts.len())));
        }
        Ok(())
    }

    /// `node`'s position in image `image` as `[x, y]` crop pixels of a crop of side `side`.
    pub fn node_xy(&self, layer: usize, node: usize, image: usize, side: u32) -> [f64; 2] {
        let act = &self.acts[image];
        self.map_xy(layer, act.layers[layer].positions[node], act.flipped, side)
    }

    /// A map cell `(h, w)` (1-based) of `layer` in the view `flipped` as `[x, y]` crop pixels of
    /// the unflipped crop of side `side`.
    pub fn map_xy(&self, layer: usize, cell: [f32; 2], flipped: bool, side: u32) -> [f64; 2] {
        expgraph_report::node_pixel(
            &self.graph.layers[layer].info.geometry,
            [f64::from(cell[0]), f64::from(cell[1])],
            flipped,
            self.graph.input_size,
            side,
        )
    }
}
