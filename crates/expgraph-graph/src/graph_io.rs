//! On-disk format of an [`ExplanatoryGraph`]: a folder with `graph.json` (metadata, version,
//! hyper-parameters, the BLAKE3 hash of the arrays) and `graph.safetensors` (the arrays,
//! readable with `safetensors.numpy.load_file`).
//!
//! Arrays per layer, prefixed by the layer name (`conv5_3.mu`, ...):
//! `mu` f64 `[nodes, 2]`, `sigma` f64 `[nodes]`, `mean_position` f64 `[nodes, 2]` (1-based map
//! coordinates `(h, w)`), and for layers with parents `parents` i32 `[nodes, M]` (node indices in
//! the next-deeper layer, `-1` = none) and `parent_similarity` f32 `[nodes, M]`.
//! Both files are written atomically (temp + rename), arrays first, so a reader never sees a
//! `graph.json` without its arrays; a mismatching hash is reported as a corrupt graph.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{format_err, io_err, GraphError};
use crate::tensors::{
    arrays_file, pairs, parents_from_padded, parents_to_padded, serialize, write_atomic, OwnedTensor, TensorReader,
};
use crate::{ExplanatoryGraph, GraphLayer, LayerInfo};

/// Metadata file inside a graph folder.
pub const GRAPH_JSON: &str = "graph.json";
/// Array file inside a graph folder.
pub const GRAPH_ARRAYS: &str = "graph.safetensors";

#[derive(Serialize, Deserialize)]
struct GraphFile {
    format: String,
    format_version: u32,
    backbone: String,
    input_size: usize,
    params: serde_json::Value,
    arrays: ArraysRef,
    layers: Vec<LayerMeta>,
}

#[derive(Serialize, Deserialize)]
struct ArraysRef {
    file: String,
    blake3: String,
}

#[derive(Serialize, Deserialize)]
struct LayerMeta {
    info: LayerInfo,
    nodes_per_filter: usize,
    num_nodes: usize,
    max_parents: usize,
    score_norm: f64,
}

#[derive(Deserialize)]
struct VersionProbe {
    format: Option<String>,
    format_version: u32,
}

const FORMAT_NAME: &str = "expgraph-graph";

impl ExplanatoryGraph {
    /// Version of the on-disk format written by [`ExplanatoryGraph::save`].
    pub const FORMAT_VERSION: u32 = 1;

    /// Largest network input side a graph may declare.
    pub const MAX_INPUT_SIZE: usize = 8192;

    /// Check internal consistency (lengths, finite values, parent indices in range).
    pub fn validate(&self) -> Result<(), GraphError> {
        let bad = |problem: String| GraphError::Invalid { what: "graph", problem };
        // Consumers size buffers by the input side (localization votes on input_size² cells).
        if !(1..=Self::MAX_INPUT_SIZE).contains(&self.input_size) {
            return Err(bad(format!("input size {} is not in 1..={}", self.input_size, Self::MAX_INPUT_SIZE)));
        }
        for (l, layer) in self.layers.iter().enumerate() {
            let n = layer.num_nodes();
            let name = &layer.info.name;
            if layer.nodes_per_filter == 0 || Some(n) != layer.info.channels.checked_mul(layer.nodes_per_filter) {
                return Err(bad(format!(
                    "layer {name}: {n} nodes is not {} channels x {} nodes per filter",
                    layer.info.channels, layer.nodes_per_filter
                )));
            }
            if layer.sigma.len() != n || layer.mean_position.len() != n || layer.parents.len() != n {
                return Err(bad(format!("layer {name}: sigma/mean_position/parents lengths differ from mu")));
            }
            let finite = layer.mu.iter().chain(&layer.mean_position).all(|p| p.iter().all(|v| v.is_finite()))
                && layer.sigma.iter().all(|s| s.is_finite() && *s > 0.0);
            if !finite || !layer.score_norm.is_finite() {
                return Err(bad(format!("layer {name}: non-finite or non-positive parameters")));
            }
            let upper = self.layers.get(l + 1).map_or(0, GraphLayer::num_nodes);
            if layer.parents.iter().flatten().any(|p| !p.similarity.is_finite()) {
                return Err(bad(format!("layer {name}: non-finite parent similarity")));
            }
            if layer.parents.iter().flatten().any(|p| p.node as usize >= upper) {
                return Err(bad(format!("layer {name}: parent index out of range of the next layer ({upper} nodes)")));
            }
        }
        Ok(())
    }

    /// Save into folder `dir` (created if needed); see the module docs for the layout.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), GraphError> {
        let dir = dir.as_ref();
        self.validate()?;
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let arrays_path = dir.join(GRAPH_ARRAYS);
        let mut tensors = Vec::new();
        for layer in &self.layers {
            let n = layer.num_nodes();
            let name = &layer.info.name;
            tensors.push((format!("{name}.mu"), OwnedTensor::f64(vec![n, 2], layer.mu.iter().flatten().copied())));
            tensors.push((format!("{name}.sigma"), OwnedTensor::f64(vec![n], layer.sigma.iter().copied())));
            tensors.push((
                format!("{name}.mean_position"),
                OwnedTensor::f64(vec![n, 2], layer.mean_position.iter().flatten().copied()),
            ));
            let m = layer.max_parents();
            if m > 0 {
                let (idx, sim) = parents_to_padded(&layer.parents, m);
                tensors.push((format!("{name}.parents"), OwnedTensor::i32(vec![n, m], idx)));
                tensors.push((format!("{name}.parent_similarity"), OwnedTensor::f32(vec![n, m], sim)));
            }
        }
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT_NAME.to_string());
        let bytes = serialize(&tensors, meta, &arrays_path)?;
        let file = GraphFile {
            format: FORMAT_NAME.into(),
            format_version: Self::FORMAT_VERSION,
            backbone: self.backbone.clone(),
            input_size: self.input_size,
            params: self.params.clone(),
            arrays: ArraysRef { file: GRAPH_ARRAYS.into(), blake3: blake3::hash(&bytes).to_hex().to_string() },
            layers: self
                .layers
                .iter()
                .map(|l| LayerMeta {
                    info: l.info.clone(),
                    nodes_per_filter: l.nodes_per_filter,
                    num_nodes: l.num_nodes(),
                    max_parents: l.max_parents(),
                    score_norm: l.score_norm,
                })
                .collect(),
        };
        let json_path = dir.join(GRAPH_JSON);
        let json = serde_json::to_vec_pretty(&file).map_err(|e| format_err(&json_path, e.to_string()))?;
        // Temp files of an earlier, killed save of this folder.
        for path in [&arrays_path, &json_path] {
            expgraph_io::remove_stale_temps(path).map_err(|e| io_err(path, e))?;
        }
        write_atomic(&arrays_path, &bytes)?;
        write_atomic(&json_path, &json)
    }

    /// Load a graph folder written by [`ExplanatoryGraph::save`].
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, GraphError> {
        let dir = dir.as_ref();
        let json_path = dir.join(GRAPH_JSON);
        let text = fs::read(&json_path).map_err(|e| io_err(&json_path, e))?;
        let probe: VersionProbe = serde_json::from_slice(&text)
            .map_err(|e| format_err(&json_path, format!("not a graph metadata file: {e}")))?;
        if probe.format.as_deref() != Some(FORMAT_NAME) {
            return Err(format_err(&json_path, format!("`format` is {:?}, expected {FORMAT_NAME:?}", probe.format)));
        }
        if probe.format_version != Self::FORMAT_VERSION {
            return Err(GraphError::Version {
                path: json_path,
                found: probe.format_version,
                supported: Self::FORMAT_VERSION,
            });
        }
        let file: GraphFile = serde_json::from_slice(&text).map_err(|e| format_err(&json_path, e.to_string()))?;
        let arrays_path = arrays_file(dir, &json_path, &file.arrays.file)?;
        let bytes = fs::read(&arrays_path).map_err(|e| io_err(&arrays_path, e))?;
        if blake3::hash(&bytes).to_hex().as_str() != file.arrays.blake3 {
            return Err(format_err(
                &arrays_path,
                "content hash differs from graph.json: the graph is corrupt or half-written",
            ));
        }
        let reader = TensorReader::parse(&bytes, &arrays_path)?;
        let mut layers = Vec::with_capacity(file.layers.len());
        for meta in file.layers {
            let (n, m, name) = (meta.num_nodes, meta.max_parents, meta.info.name.clone());
            // `mu` first: its shape check bounds `n` by the file before anything is sized by it.
            let mu = pairs(&reader.f64(&format!("{name}.mu"), &[n, 2])?);
            let parents = if m == 0 {
                vec![Vec::new(); n]
            } else {
                let idx = reader.i32(&format!("{name}.parents"), &[n, m])?;
                let sim = reader.f32(&format!("{name}.parent_similarity"), &[n, m])?;
                parents_from_padded(&idx, &sim, m, n)
            };
            layers.push(GraphLayer {
                mu,
                sigma: reader.f64(&format!("{name}.sigma"), &[n])?,
                mean_position: pairs(&reader.f64(&format!("{name}.mean_position"), &[n, 2])?),
                parents,
                info: meta.info,
                nodes_per_filter: meta.nodes_per_filter,
                score_norm: meta.score_norm,
            });
        }
        let graph = Self { backbone: file.backbone, input_size: file.input_size, layers, params: file.params };
        graph.validate().map_err(|e| format_err(dir, e.to_string()))?;
        Ok(graph)
    }
}
