//! Model types.

use expgraph_cache::LayerInfo;
use serde::{Deserialize, Serialize};

/// A node, by graph layer (0 = shallowest) and flattened index `channel * K + k` (spec App. A).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeRef {
    /// Graph layer index, 0 = shallowest (e.g. conv4_2).
    pub layer: usize,
    /// Node index within the layer, `channel * nodes_per_filter + k`.
    pub node: usize,
}

/// One parent edge of a node (spec §2.2): a node of the next-deeper layer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Parent {
    /// Node index in the parent layer.
    pub node: u32,
    /// Co-movement similarity that selected it (spec §2.2 step 2).
    pub similarity: f32,
}

/// One layer of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphLayer {
    /// The conv layer this graph layer explains.
    pub info: LayerInfo,
    /// Nodes per filter, `K = ceil(H · W · density)` (spec §1.2).
    pub nodes_per_filter: usize,
    /// Prior mean μ of each node, `(h, w)` in 1-based map coordinates.
    pub mu: Vec<[f64; 2]>,
    /// Spatial deviation σ of each node, map units.
    pub sigma: Vec<f64>,
    /// Mean inferred position of each node over the training images (needed to turn parent
    /// positions into displacements on new images, spec §7 #10), map coordinates.
    pub mean_position: Vec<[f64; 2]>,
    /// Parents of each node (empty in the top layer).
    pub parents: Vec<Vec<Parent>>,
    /// Mean of the raw node score `S_V(I)` over all nodes and training images (spec §2.4
    /// "records"): inference divides scores by it, so scores on new images are on the training
    /// scale (1.0 = an average node in an average training image).
    #[serde(default = "one")]
    pub score_norm: f64,
}

fn one() -> f64 {
    1.0
}

impl GraphLayer {
    /// Number of nodes (`channels * nodes_per_filter`).
    pub fn num_nodes(&self) -> usize {
        self.mu.len()
    }

    /// The filter (channel) a node belongs to.
    pub fn filter_of(&self, node: usize) -> usize {
        node / self.nodes_per_filter
    }

    /// Largest number of parents of any node (0 in the top layer).
    pub fn max_parents(&self) -> usize {
        self.parents.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// A node's prior mean μ in input pixels (1-based, 224 frame), spec §1.3.
    pub fn mu_pixels(&self, node: usize) -> [f64; 2] {
        let g = &self.info.geometry;
        [g.map_to_pixel(self.mu[node][0]), g.map_to_pixel(self.mu[node][1])]
    }

    /// A node's σ in input pixels.
    pub fn sigma_pixels(&self, node: usize) -> f64 {
        self.sigma[node] * self.info.geometry.stride
    }
}

/// A learned explanatory graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplanatoryGraph {
    /// Backbone the features came from, e.g. `vgg16`.
    pub backbone: String,
    /// Side of the square network input (224).
    pub input_size: usize,
    /// Layers, shallowest first; parents of layer `l` live in layer `l + 1`.
    pub layers: Vec<GraphLayer>,
    /// The hyper-parameters the graph was learned with (JSON object written by the learner;
    /// `null` when unknown).
    #[serde(default)]
    pub params: serde_json::Value,
}

impl ExplanatoryGraph {
    /// The layer explaining conv layer `name`, with its index.
    pub fn layer_by_name(&self, name: &str) -> Option<(usize, &GraphLayer)> {
        self.layers.iter().enumerate().find(|(_, l)| l.info.name == name)
    }

    /// Total number of nodes over all layers.
    pub fn num_nodes(&self) -> usize {
        self.layers.iter().map(GraphLayer::num_nodes).sum()
    }
}

/// Inferred state of one layer's nodes in one image (spec §1.7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerActivations {
    /// Layer name.
    pub layer: String,
    /// Inferred position `(h, w)` of each node, 1-based map coordinates of the *chosen* view.
    pub positions: Vec<[f32; 2]>,
    /// Score `S_V(I)` of each node.
    pub scores: Vec<f32>,
}

/// Inferred state of every node in one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageActivations {
    /// Image identifier (from the feature cache).
    pub image_id: String,
    /// Whether the mirrored view was chosen (positions are then in the mirrored frame; map back
    /// to the original with `w' = input_size + 1 - w` in pixels, spec §1.3).
    pub flipped: bool,
    /// One entry per graph layer, shallowest first.
    pub layers: Vec<LayerActivations>,
}

impl ImageActivations {
    /// Position of `node` of layer `layer` in input pixels (1-based) of the **original**
    /// (unmirrored) crop: maps through the layer geometry (spec §1.3), then undoes the flip with
    /// `w' = input_size + 1 - w`.
    pub fn position_pixels(&self, layer: &GraphLayer, layer_index: usize, node: usize, input_size: usize) -> [f64; 2] {
        let p = self.layers[layer_index].positions[node];
        let view = expgraph_geometry::View::from_flipped(self.flipped);
        let p = layer.info.geometry.map_to_original_pixels([f64::from(p[0]), f64::from(p[1])], view, input_size as f64);
        [p.h, p.w]
    }
}
