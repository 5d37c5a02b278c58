//! The few-shot part models of `expgraph localize --save-models`, seen from the graph: which
//! nodes vote for which part, in which template, with which displacement. The explorer links a
//! node to the parts it votes for, and a part's page draws each template's voting nodes on its
//! annotated image.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use expgraph_graph::ExplanatoryGraph;
use expgraph_localize::PartModel;

use crate::{ExploreError, Result};

/// One vote of a node: for part `part` (index in [`PartVotes::names`]) in template `template`,
/// with the displacement δ = part − node in the annotated image, pixels `(h, w)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vote {
    /// Part index.
    pub part: usize,
    /// Template index in the part's model.
    pub template: usize,
    /// δ (h, w), pixels of the input frame.
    pub delta: [f64; 2],
}

/// Part models fitted on a graph's nodes, indexed by node.
#[derive(Debug, Clone)]
pub struct PartVotes {
    names: Vec<String>,
    models: Vec<PartModel>,
    /// For each part, its model's unit layers as graph layer indices.
    layers: Vec<Vec<usize>>,
    by_node: HashMap<(usize, usize), Vec<Vote>>,
}

impl PartVotes {
    /// Checks that every model is valid and votes with `graph`'s nodes (its unit layers are graph
    /// layers of the same node counts: a model of raw filters or of another graph is refused),
    /// then indexes the votes by node.
    pub fn new(graph: &ExplanatoryGraph, models: BTreeMap<String, PartModel>) -> Result<Self> {
        let mut votes = PartVotes { names: vec![], models: vec![], layers: vec![], by_node: HashMap::new() };
        for (part, (name, model)) in models.into_iter().enumerate() {
            let bad = |what: String| ExploreError::Input(format!("part model {name:?}: {what}"));
            model.validate().map_err(|e| bad(e.to_string()))?;
            if model.layout.input_size != graph.input_size {
                return Err(bad(format!("input size {} (the graph's: {})", model.layout.input_size, graph.input_size)));
            }
            let layers = model
                .layout
                .layers
                .iter()
                .map(|l| match graph.layer_by_name(&l.name) {
                    Some((i, gl)) if gl.num_nodes() == l.num_units => Ok(i),
                    Some((_, gl)) => Err(bad(format!(
                        "layer {} has {} units, the graph's {} nodes (a model of raw filters, or of another graph)",
                        l.name,
                        l.num_units,
                        gl.num_nodes()
                    ))),
                    None => Err(bad(format!("layer {} is not in the graph", l.name))),
                })
                .collect::<Result<Vec<usize>>>()?;
            for (template, t) in model.templates.iter().enumerate() {
                for u in &t.units {
                    let node = (layers[u.layer as usize], u.unit as usize);
                    votes.by_node.entry(node).or_default().push(Vote { part, template, delta: u.delta });
                }
            }
            votes.names.push(name);
            votes.models.push(model);
            votes.layers.push(layers);
        }
        Ok(votes)
    }

    /// Reads `MODELS.json` (part → model, as `expgraph localize --save-models` writes it); an
    /// unreadable or malformed file is an error naming it.
    pub fn read(path: &Path, graph: &ExplanatoryGraph) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ExploreError::Input(format!("part models {}: {e}", path.display())))?;
        let models: BTreeMap<String, PartModel> = serde_json::from_str(&text)
            .map_err(|e| ExploreError::Input(format!("part models {}: {e}", path.display())))?;
        Self::new(graph, models).map_err(|e| match e {
            ExploreError::Input(what) => ExploreError::Input(format!("{}: {what}", path.display())),
            other => other,
        })
    }

    /// Part names, in index order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The model of part `part`.
    pub fn model(&self, part: usize) -> Option<&PartModel> {
        self.models.get(part)
    }

    /// The graph layer of unit layer `unit_layer` of part `part`'s model.
    pub fn graph_layer(&self, part: usize, unit_layer: u32) -> usize {
        self.layers[part][unit_layer as usize]
    }

    /// The votes of a node, by part and template.
    pub fn votes(&self, layer: usize, node: usize) -> &[Vote] {
        self.by_node.get(&(layer, node)).map_or(&[], Vec::as_slice)
    }
}
