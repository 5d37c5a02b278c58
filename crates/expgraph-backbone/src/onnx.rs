//! Any CNN exported to ONNX, run by candle's own ONNX evaluator (`candle-onnx`), with taps at
//! named node outputs (feature `onnx`).
//!
//! **Taps.** Any node output of the graph can be a tap; [`OnnxBackbone::taps`] lists the
//! requested ones in graph (topological) order. A tap returns whatever the node computes: name
//! the output of a `Conv` node for a pre-ReLU tap, as the VGG-16 taps of this crate are.
//!
//! **Geometry.** Each tap's [`TapGeometry`] and map size come from walking the graph from the
//! input to the tap: `Conv`, `MaxPool`, `AveragePool` and `LpPool` nodes are layers of the
//! receptive-field recursion of [`crate::geometry`] (dilation as the effective kernel
//! `d·(k−1)+1`); element-wise and normalization ops (`Relu`, `BatchNormalization`, `Add`, `Mul`,
//! channel `Concat`, …) keep the geometry. Where several inputs of a node carry maps (a residual
//! `Add`, a channel `Concat`), their strides and first-unit centres must agree, and the branch
//! with the largest receptive field is followed. The walk gives up, with an error that asks for
//! the geometry explicitly, on anything else on the path: an unknown op (`Flatten`, `Gemm`,
//! `Resize`, …), non-square kernels, strides or pads, **asymmetric pads** (begin ≠ end: they
//! would shift the map by a fraction of a cell, so they are refused rather than rounded),
//! `auto_pad` other than `NOTSET`/`VALID`, and `ceil_mode = 1`. An explicit geometry
//! ([`OnnxBackbone::load_file`]'s `explicit_geometry`) overrides the walk; the map size of such
//! a tap, when the walk cannot give it, comes from a dry run on a zero image (cached per size).
//!
//! **Channels** come from the `Conv` weight initializer (`[C_out, C_in, kH, kW]`) of the node
//! that produces the tap, carried through shape-keeping ops and summed over channel `Concat`s;
//! otherwise from a dry run on a zero 224×224 image at load.
//!
//! **Input.** The graph's single input that is not an initializer: NCHW `f32` with 3 channels.
//! Its declared batch and spatial sizes are relaxed, so any batch and image size run (the map
//! sizes follow the geometry walk).
//!
//! **Evaluation.** [`Backbone::forward_taps`] prunes the graph to the nodes the requested taps
//! need, makes the taps the graph outputs and runs `candle_onnx::simple_eval` on the CPU (where
//! candle-onnx places the initializers; the backbone is CPU-only). Pruned graphs are cached per
//! tap set.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use candle_onnx::onnx::{self, ModelProto, NodeProto};
use prost::Message;

use crate::backbone::{check_image_batch, check_reaches};
use crate::geometry::{map_size, tap_geometry, LayerShape};
use crate::{Backbone, BackboneError, BackboneMeta, TapGeometry, TapInfo, REFERENCE_INPUT_SIZE};

/// Node outputs listed in an unknown-tap error, at most.
const LISTED_OUTPUTS: usize = 24;

/// A CNN from an ONNX file whose taps are named node outputs; see the [module docs](self).
pub struct OnnxBackbone {
    path: PathBuf,
    /// The graph pruned to what the taps need.
    model: ModelProto,
    /// Name of the image input.
    input_name: String,
    meta: BackboneMeta,
    /// Per tap (same order as `meta.taps`): the conv/pool layers from the input, when the walk
    /// could tell them.
    layers: Vec<Option<Vec<LayerShape>>>,
    /// Pruned graphs by (sorted, deduplicated) tap set.
    pruned: Mutex<HashMap<Vec<String>, Arc<ModelProto>>>,
    /// Map sides measured by dry runs, by (tap, input side).
    measured: Mutex<HashMap<(String, usize), usize>>,
}

impl std::fmt::Debug for OnnxBackbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxBackbone")
            .field("path", &self.path)
            .field("input", &self.input_name)
            .field("taps", &self.meta.taps)
            .field("digest", &self.meta.digest)
            .finish_non_exhaustive()
    }
}

impl OnnxBackbone {
    /// Loads the ONNX model at `path` with the node outputs `taps` as taps.
    ///
    /// `explicit_geometry` gives the geometry of taps by name (overriding the walk; needed where
    /// the walk cannot decide, see the [module docs](self)); every key must be one of `taps`.
    /// `device` must be the CPU (candle-onnx evaluates there). Errors name the file and the
    /// problem: unreadable or malformed file, no single image input, an unknown tap (listing
    /// node outputs), a tap whose geometry cannot be told.
    pub fn load_file(
        path: &Path,
        taps: &[String],
        explicit_geometry: &BTreeMap<String, TapGeometry>,
        device: &Device,
    ) -> Result<Self, BackboneError> {
        let file = crate::weights::WeightFile::read(path)?;
        let model = ModelProto::decode(file.bytes())
            .map_err(|e| onnx_error(path, format!("not a valid ONNX model (protobuf): {e}")))?;
        let digest = file.digest().to_string();
        drop(file);
        Self::from_model(path, model, digest, taps, explicit_geometry, device)
    }

    /// Like [`OnnxBackbone::load_file`] for a decoded `model`; `path` is only used in messages
    /// and `digest` is what [`Backbone::weights_digest`] reports.
    pub fn from_model(
        path: &Path,
        model: ModelProto,
        digest: String,
        taps: &[String],
        explicit_geometry: &BTreeMap<String, TapGeometry>,
        device: &Device,
    ) -> Result<Self, BackboneError> {
        if !device.is_cpu() {
            return Err(BackboneError::Input(
                "the ONNX backbone runs on the CPU only (candle-onnx evaluates there); use the cpu device".into(),
            ));
        }
        let graph = model.graph.as_ref().ok_or_else(|| onnx_error(path, "the model has no graph".into()))?;
        if let Some(t) =
            graph.initializer.iter().find(|t| t.data_location == onnx::tensor_proto::DataLocation::External as i32)
        {
            return Err(onnx_error(
                path,
                format!("initializer `{}` is stored in an external data file, which is not supported", t.name),
            ));
        }
        let input_name = image_input(path, graph)?;
        if taps.is_empty() {
            return Err(BackboneError::Input(format!("{}: no taps requested (name node outputs)", path.display())));
        }
        // Where each value comes from: node index and output index.
        let mut producer: HashMap<&str, (usize, usize)> = HashMap::new();
        for (i, node) in graph.node.iter().enumerate() {
            for (j, out) in node.output.iter().enumerate().filter(|(_, o)| !o.is_empty()) {
                producer.insert(out.as_str(), (i, j));
            }
        }
        let mut positions = Vec::with_capacity(taps.len());
        for (k, tap) in taps.iter().enumerate() {
            if taps[..k].contains(tap) {
                return Err(BackboneError::Input(format!("tap `{tap}` is named twice")));
            }
            let at = producer.get(tap.as_str()).copied().ok_or_else(|| unknown_tap(path, graph, tap))?;
            positions.push((at, tap.clone()));
        }
        if let Some(name) = explicit_geometry.keys().find(|k| !taps.contains(k)) {
            return Err(BackboneError::Input(format!(
                "explicit geometry for `{name}`, which is not a requested tap ({})",
                taps.join(", ")
            )));
        }
        positions.sort();
        let ordered: Vec<String> = positions.into_iter().map(|(_, t)| t).collect();

        let traces = walk(graph, &input_name);
        let mut infos = Vec::with_capacity(ordered.len());
        let mut layers = Vec::with_capacity(ordered.len());
        for tap in &ordered {
            let trace =
                traces.get(tap.as_str()).cloned().unwrap_or(Trace::Unknown(format!("`{tap}` was never reached")));
            let (chain, channels, geometry) = match (trace, explicit_geometry.get(tap)) {
                (Trace::Spatial { layers, channels }, explicit) => {
                    let walked = tap_geometry(&layers);
                    if let Some(g) = explicit {
                        if *g != walked {
                            tracing::info!(tap, explicit = ?g, walked = ?walked, "explicit tap geometry overrides the graph walk");
                        }
                    }
                    (Some(layers), channels, explicit.copied().unwrap_or(walked))
                }
                (_, Some(g)) => (None, None, *g),
                (Trace::Flat, None) => {
                    return Err(BackboneError::OnnxGeometry {
                        path: path.to_path_buf(),
                        tap: tap.clone(),
                        reason: "it does not depend on the image input as a spatial map".into(),
                    })
                }
                (Trace::Unknown(reason), None) => {
                    return Err(BackboneError::OnnxGeometry { path: path.to_path_buf(), tap: tap.clone(), reason })
                }
            };
            layers.push(chain);
            infos.push(TapInfo { name: tap.clone(), channels: channels.unwrap_or(0), geometry });
        }
        let model = prune(&model, &input_name, &ordered)?;
        let mut backbone = OnnxBackbone {
            path: path.to_path_buf(),
            model,
            input_name,
            meta: BackboneMeta { taps: infos, device: device.clone(), digest },
            layers,
            pruned: Mutex::new(HashMap::new()),
            measured: Mutex::new(HashMap::new()),
        };
        backbone.measure_missing()?;
        tracing::info!(path = %path.display(), taps = backbone.meta.taps.len(), "loaded ONNX backbone");
        Ok(backbone)
    }

    /// The file the model came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Name of the graph's image input.
    pub fn input_name(&self) -> &str {
        &self.input_name
    }

    /// Fills the channels (and 224 map sides) that the walk could not tell by one dry run.
    fn measure_missing(&mut self) -> Result<(), BackboneError> {
        let missing: Vec<String> = self
            .meta
            .taps
            .iter()
            .zip(&self.layers)
            .filter(|(t, l)| t.channels == 0 || l.is_none())
            .map(|(t, _)| t.name.clone())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        tracing::debug!(?missing, "dry run for channels and map sizes the graph walk could not tell");
        let names: Vec<&str> = missing.iter().map(String::as_str).collect();
        let outputs = self.dry_run(&names, REFERENCE_INPUT_SIZE)?;
        for (name, dims) in missing.iter().zip(outputs) {
            if let Some(t) = self.meta.taps.iter_mut().find(|t| &t.name == name) {
                t.channels = dims[1];
            }
        }
        Ok(())
    }

    /// Output dims of `taps` for a zero `[1, 3, side, side]` input; records the map sides.
    fn dry_run(&self, taps: &[&str], side: usize) -> Result<Vec<[usize; 4]>, BackboneError> {
        let input = Tensor::zeros((1, 3, side, side), DType::F32, &Device::Cpu)?;
        let outputs = self.evaluate(&input, taps)?;
        let mut measured = self.measured.lock().unwrap_or_else(|e| e.into_inner());
        let mut dims = Vec::with_capacity(taps.len());
        for (tap, out) in taps.iter().zip(outputs) {
            let d = out.dims4()?;
            if d.2 != d.3 {
                return Err(onnx_error(
                    &self.path,
                    format!("tap `{tap}` has a non-square {}×{} map for a square input", d.2, d.3),
                ));
            }
            measured.insert((tap.to_string(), side), d.2);
            dims.push([d.0, d.1, d.2, d.3]);
        }
        Ok(dims)
    }

    fn tap_index(&self, name: &str) -> Result<usize, BackboneError> {
        self.meta.tap_index(name, &format!("onnx ({})", self.path.display()))
    }

    /// The graph pruned to `taps` (cached).
    fn pruned(&self, taps: &[&str]) -> Result<Arc<ModelProto>, BackboneError> {
        let mut key: Vec<String> = taps.iter().map(|t| t.to_string()).collect();
        key.sort();
        key.dedup();
        let mut cache = self.pruned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = cache.get(&key) {
            return Ok(m.clone());
        }
        let model = Arc::new(prune(&self.model, &self.input_name, &key)?);
        cache.insert(key, model.clone());
        Ok(model)
    }

    /// Runs the graph on a checked CPU input and returns `taps` (known names) in order.
    fn evaluate(&self, input: &Tensor, taps: &[&str]) -> Result<Vec<Tensor>, BackboneError> {
        let model = self.pruned(taps)?;
        let inputs = HashMap::from([(self.input_name.clone(), input.clone())]);
        let outputs = candle_onnx::simple_eval(&model, inputs)
            .map_err(|e| onnx_error(&self.path, format!("evaluating the graph: {}", shorten(&e.to_string()))))?;
        taps.iter()
            .map(|tap| {
                let t = outputs
                    .get(*tap)
                    .ok_or_else(|| onnx_error(&self.path, format!("the evaluator returned no value for `{tap}`")))?;
                if t.rank() != 4 {
                    return Err(onnx_error(
                        &self.path,
                        format!("tap `{tap}` has shape {:?}; taps must be NCHW feature maps", t.dims()),
                    ));
                }
                Ok(if t.dtype() == DType::F32 { t.clone() } else { t.to_dtype(DType::F32)? })
            })
            .collect()
    }
}

impl Backbone for OnnxBackbone {
    fn name(&self) -> &str {
        "onnx"
    }

    fn meta(&self) -> &BackboneMeta {
        &self.meta
    }

    fn tap_map_size(&self, tap: &str, input_size: usize) -> Result<usize, BackboneError> {
        let index = self.tap_index(tap)?;
        let too_small = || BackboneError::Input(format!("input side {input_size} is too small to reach {tap}"));
        if let Some(layers) = &self.layers[index] {
            return map_size(layers, input_size).ok_or_else(too_small);
        }
        if let Some(&side) = self.measured.lock().unwrap_or_else(|e| e.into_inner()).get(&(tap.to_string(), input_size))
        {
            return Ok(side);
        }
        if input_size == 0 {
            return Err(too_small());
        }
        let dims = self.dry_run(&[tap], input_size)?;
        match dims[0][2] {
            0 => Err(too_small()),
            side => Ok(side),
        }
    }

    fn forward_taps(&self, input: &Tensor, taps: &[&str]) -> Result<Vec<Tensor>, BackboneError> {
        let indices = taps.iter().map(|t| self.tap_index(t)).collect::<Result<Vec<_>, _>>()?;
        if taps.is_empty() {
            return Ok(Vec::new());
        }
        let size = check_image_batch(input)?;
        for (&i, tap) in indices.iter().zip(taps) {
            if let Some(layers) = &self.layers[i] {
                check_reaches(layers, size, tap)?;
            }
        }
        let input = input.to_device(&Device::Cpu)?;
        self.evaluate(&input, taps)
    }
}

/// An error about the ONNX file at `path`.
fn onnx_error(path: &Path, message: String) -> BackboneError {
    BackboneError::Onnx { path: path.to_path_buf(), message }
}

/// At most 600 characters of `s` (candle-onnx quotes whole nodes in some errors).
fn shorten(s: &str) -> String {
    const MAX: usize = 600;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{} …", &s[..i]),
        None => s.to_string(),
    }
}

/// The error for a tap that is no node output, listing some that are.
fn unknown_tap(path: &Path, graph: &onnx::GraphProto, tap: &str) -> BackboneError {
    let outputs: Vec<String> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().filter(|o| !o.is_empty()).map(move |o| format!("{o} ({})", n.op_type)))
        .collect();
    let mut available: Vec<String> = if outputs.len() <= LISTED_OUTPUTS {
        outputs.clone()
    } else {
        let half = LISTED_OUTPUTS / 2;
        let mut v = outputs[..half].to_vec();
        v.push(format!("… {} more …", outputs.len() - 2 * half));
        v.extend_from_slice(&outputs[outputs.len() - half..]);
        v
    };
    if available.is_empty() {
        available.push("(the graph has no nodes)".into());
    }
    BackboneError::UnknownTap {
        name: tap.into(),
        backbone: format!("onnx ({})", path.display()),
        available: format!("node outputs {}", available.join(", ")),
    }
}

/// The name of the graph's one image input (inputs that are not initializers), checked to be a
/// 4-d float tensor with 3 channels where the file declares type and shape.
fn image_input(path: &Path, graph: &onnx::GraphProto) -> Result<String, BackboneError> {
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&onnx::ValueInfoProto> =
        graph.input.iter().filter(|i| !initializers.contains(i.name.as_str())).collect();
    let [input] = inputs.as_slice() else {
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        return Err(onnx_error(
            path,
            format!("expected exactly one image input (besides initializers), found {}: {names:?}", names.len()),
        ));
    };
    if let Some(tensor) = tensor_type(input) {
        if tensor.elem_type != onnx::tensor_proto::DataType::Float as i32 {
            return Err(onnx_error(path, format!("input `{}` is not a float tensor", input.name)));
        }
        if let Some(shape) = &tensor.shape {
            if shape.dim.len() != 4 {
                return Err(onnx_error(
                    path,
                    format!("input `{}` has rank {}; expected an NCHW image tensor", input.name, shape.dim.len()),
                ));
            }
            if let Some(onnx::tensor_shape_proto::dimension::Value::DimValue(c)) = &shape.dim[1].value {
                if *c != 3 {
                    return Err(onnx_error(
                        path,
                        format!("input `{}` has {c} channels; expected 3 (RGB, NCHW)", input.name),
                    ));
                }
            }
        }
    }
    Ok(input.name.clone())
}

fn tensor_type(value: &onnx::ValueInfoProto) -> Option<&onnx::type_proto::Tensor> {
    match value.r#type.as_ref()?.value.as_ref()? {
        onnx::type_proto::Value::TensorType(t) => Some(t),
        _ => None,
    }
}

/// `model` with only the nodes and initializers that `outputs` need, `outputs` as the graph
/// outputs and the image input's batch and spatial sizes relaxed.
fn prune(model: &ModelProto, input_name: &str, outputs: &[String]) -> Result<ModelProto, BackboneError> {
    let Some(graph) = model.graph.as_ref() else {
        return Err(BackboneError::Input("the ONNX model has no graph".into()));
    };
    let mut needed: HashSet<&str> = outputs.iter().map(String::as_str).collect();
    let mut keep = vec![false; graph.node.len()];
    for (i, node) in graph.node.iter().enumerate().rev() {
        if node.output.iter().any(|o| needed.contains(o.as_str())) {
            keep[i] = true;
            needed.extend(node.input.iter().filter(|s| !s.is_empty()).map(String::as_str));
            // Values that subgraphs (If, Loop) read from the enclosing scope.
            for attr in &node.attribute {
                if let Some(g) = &attr.g {
                    needed.extend(g.node.iter().flat_map(|n| n.input.iter()).map(String::as_str));
                }
            }
        }
    }
    let mut input = graph
        .input
        .iter()
        .find(|i| i.name == input_name)
        .cloned()
        .unwrap_or_else(|| onnx::ValueInfoProto { name: input_name.to_string(), ..Default::default() });
    if let Some(onnx::type_proto::Value::TensorType(t)) = input.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        if let Some(shape) = &mut t.shape {
            for (i, d) in shape.dim.iter_mut().enumerate().filter(|(i, _)| *i != 1) {
                d.value = Some(onnx::tensor_shape_proto::dimension::Value::DimParam(format!("d{i}")));
            }
        }
    }
    let pruned = onnx::GraphProto {
        node: graph.node.iter().zip(&keep).filter(|(_, k)| **k).map(|(n, _)| n.clone()).collect(),
        name: graph.name.clone(),
        initializer: graph.initializer.iter().filter(|t| needed.contains(t.name.as_str())).cloned().collect(),
        input: vec![input],
        output: outputs.iter().map(|o| onnx::ValueInfoProto { name: o.clone(), ..Default::default() }).collect(),
        ..Default::default()
    };
    Ok(ModelProto {
        ir_version: model.ir_version,
        opset_import: model.opset_import.clone(),
        graph: Some(pruned),
        ..Default::default()
    })
}

/// What the geometry walk knows about one value of the graph.
#[derive(Clone, Debug)]
enum Trace {
    /// No spatial extent tied to the input: initializers, constants, global pools. Ignored
    /// where it meets a map (it broadcasts).
    Flat,
    /// A map whose cells come from the input through `layers` (on the branch with the largest
    /// receptive field), with `channels` when known.
    Spatial { layers: Vec<LayerShape>, channels: Option<usize> },
    /// The walk cannot tell; why.
    Unknown(String),
}

/// Ops that keep the spatial layout of their map inputs (element-wise, per-channel).
const SHAPE_KEEPING: &[&str] = &[
    "Abs",
    "Add",
    "BatchNormalization",
    "Cast",
    "Celu",
    "Clip",
    "Div",
    "Dropout",
    "Elu",
    "Erf",
    "Exp",
    "Gelu",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "InstanceNormalization",
    "LRN",
    "LeakyRelu",
    "Log",
    "Max",
    "Mean",
    "Min",
    "Mish",
    "Mul",
    "Neg",
    "PRelu",
    "Pow",
    "Reciprocal",
    "Relu",
    "Selu",
    "Sigmoid",
    "Sign",
    "Softplus",
    "Softsign",
    "Sqrt",
    "Sub",
    "Sum",
    "Tanh",
    "ThresholdedRelu",
];

/// Ops whose output has no spatial extent left (broadcast back onto maps, e.g. squeeze-excite).
const GLOBAL_POOLS: &[&str] = &["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"];

/// The trace of every value, walking the nodes in their (topological) order from the input.
fn walk<'g>(graph: &'g onnx::GraphProto, input_name: &str) -> HashMap<&'g str, Trace> {
    let mut traces: HashMap<&str, Trace> = HashMap::new();
    let initializers: HashMap<&str, &onnx::TensorProto> =
        graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    for t in &graph.initializer {
        traces.insert(t.name.as_str(), Trace::Flat);
    }
    for i in &graph.input {
        if i.name == input_name {
            let channels = tensor_type(i)
                .and_then(|t| t.shape.as_ref())
                .and_then(|s| s.dim.get(1))
                .and_then(|d| match d.value {
                    Some(onnx::tensor_shape_proto::dimension::Value::DimValue(c)) => usize::try_from(c).ok(),
                    _ => None,
                })
                .or(Some(3));
            traces.insert(i.name.as_str(), Trace::Spatial { layers: Vec::new(), channels });
        }
    }
    for node in &graph.node {
        let trace = node_trace(node, &traces, &initializers);
        for out in node.output.iter().filter(|o| !o.is_empty()) {
            traces.insert(out.as_str(), trace.clone());
        }
    }
    traces
}

/// The trace of the outputs of `node`, given the traces of the values before it.
fn node_trace(
    node: &NodeProto,
    traces: &HashMap<&str, Trace>,
    initializers: &HashMap<&str, &onnx::TensorProto>,
) -> Trace {
    let what = || format!("node `{}` ({})", display_name(node), node.op_type);
    let op = node.op_type.as_str();
    let inputs: Vec<(&str, Trace)> =
        node.input
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| {
                let t = traces.get(s.as_str()).cloned().unwrap_or_else(|| {
                    Trace::Unknown(format!("{} reads `{s}`, which no earlier node produces", what()))
                });
                (s.as_str(), t)
            })
            .collect();
    if let Some((_, Trace::Unknown(reason))) = inputs.iter().find(|(_, t)| matches!(t, Trace::Unknown(_))) {
        return Trace::Unknown(reason.clone());
    }
    let spatial: Vec<(&str, &Vec<LayerShape>, Option<usize>)> = inputs
        .iter()
        .filter_map(|(name, t)| match t {
            Trace::Spatial { layers, channels } => Some((*name, layers, *channels)),
            _ => None,
        })
        .collect();
    if spatial.is_empty() {
        return Trace::Flat;
    }
    match op {
        "Conv" | "MaxPool" | "AveragePool" | "LpPool" => {
            let Some((first, Trace::Spatial { layers, channels })) = inputs.first() else {
                return Trace::Unknown(format!("{}: its data input is not a map of the image", what()));
            };
            if spatial.len() > 1 {
                return Trace::Unknown(format!(
                    "{}: its weights depend on the image ({})",
                    what(),
                    spatial.iter().map(|s| s.0).filter(|s| s != first).collect::<Vec<_>>().join(", ")
                ));
            }
            let weight = (op == "Conv").then(|| node.input.get(1).and_then(|w| initializers.get(w.as_str()))).flatten();
            match layer_shape(node, weight.copied()) {
                Ok(shape) => {
                    let mut layers = layers.clone();
                    layers.push(shape);
                    let channels = match op {
                        "Conv" => weight.and_then(|w| w.dims.first()).and_then(|&c| usize::try_from(c).ok()),
                        _ => *channels,
                    };
                    Trace::Spatial { layers, channels }
                }
                Err(problem) => Trace::Unknown(format!("{}: {problem}", what())),
            }
        }
        _ if GLOBAL_POOLS.contains(&op) => Trace::Flat,
        "Concat" => {
            let axis = attr_int(node, "axis").unwrap_or(1);
            if axis != 1 && axis != -3 {
                return Trace::Unknown(format!("{}: concatenates along axis {axis}, not channels", what()));
            }
            let merged = merge(&spatial, &what);
            match merged {
                Trace::Spatial { layers, .. } => {
                    let channels = spatial.iter().map(|s| s.2).sum::<Option<usize>>();
                    Trace::Spatial { layers, channels }
                }
                other => other,
            }
        }
        _ if SHAPE_KEEPING.contains(&op) => merge(&spatial, &what),
        _ => Trace::Unknown(format!(
            "{} on the path from the input is not an op the walk knows (it follows Conv, pooling and \
             shape-keeping element-wise ops)",
            what()
        )),
    }
}

/// The maps `spatial` meeting in one node: they must agree on stride and first centre; the one
/// with the largest receptive field is followed.
fn merge(spatial: &[(&str, &Vec<LayerShape>, Option<usize>)], what: &dyn Fn() -> String) -> Trace {
    let mut best: Option<(&str, &Vec<LayerShape>, TapGeometry)> = None;
    let channels = spatial.iter().find_map(|s| s.2);
    for &(name, layers, _) in spatial {
        let g = tap_geometry(layers);
        match best {
            None => best = Some((name, layers, g)),
            Some((other, other_layers, og)) => {
                if g.stride != og.stride || g.first_centre != og.first_centre {
                    return Trace::Unknown(format!(
                        "the inputs of {} disagree: `{other}` has stride {} and first centre {}, `{name}` has \
                         stride {} and first centre {}",
                        what(),
                        og.stride,
                        og.first_centre,
                        g.stride,
                        g.first_centre
                    ));
                }
                if g.receptive_field > og.receptive_field {
                    best = Some((name, layers, g));
                } else {
                    best = Some((other, other_layers, og));
                }
            }
        }
    }
    match best {
        Some((_, layers, _)) => Trace::Spatial { layers: layers.clone(), channels },
        None => Trace::Flat,
    }
}

/// The node's name, or its first output when it has none.
fn display_name(node: &NodeProto) -> &str {
    if node.name.is_empty() {
        node.output.first().map(String::as_str).unwrap_or("?")
    } else {
        &node.name
    }
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a onnx::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_int(node: &NodeProto, name: &str) -> Option<i64> {
    attr(node, name).map(|a| a.i)
}

fn attr_ints<'a>(node: &'a NodeProto, name: &str) -> Option<&'a [i64]> {
    attr(node, name).map(|a| a.ints.as_slice())
}

/// One value for both spatial axes from an attribute list of length 2 (or 1), or why not.
fn square(values: &[i64], what: &str) -> Result<usize, String> {
    let (a, b) = match values {
        [a] => (*a, *a),
        [a, b] => (*a, *b),
        _ => return Err(format!("{what} {values:?} is not 2-d")),
    };
    if a != b {
        return Err(format!("{what} {values:?} differ between height and width"));
    }
    usize::try_from(a).map_err(|_| format!("{what} {values:?} are negative"))
}

/// The square layer shape of a Conv or pooling node (`weight`: a Conv's weight initializer).
fn layer_shape(node: &NodeProto, weight: Option<&onnx::TensorProto>) -> Result<LayerShape, String> {
    match attr(node, "auto_pad").map(|a| String::from_utf8_lossy(&a.s).into_owned()) {
        None => {}
        Some(mode) if mode.is_empty() || mode == "NOTSET" || mode == "VALID" => {}
        Some(mode) => return Err(format!("auto_pad {mode} is not supported")),
    }
    if attr_int(node, "ceil_mode").unwrap_or(0) != 0 {
        return Err("ceil_mode = 1 rounds map sizes up".into());
    }
    let kernel = match (attr_ints(node, "kernel_shape"), weight) {
        (Some(k), _) => square(k, "kernel_shape")?,
        (None, Some(w)) if w.dims.len() == 4 => square(&w.dims[2..], "kernel")?,
        _ => return Err("no kernel_shape attribute and no weight initializer".into()),
    };
    let stride = attr_ints(node, "strides").map(|s| square(s, "strides")).transpose()?.unwrap_or(1);
    let dilation = attr_ints(node, "dilations").map(|s| square(s, "dilations")).transpose()?.unwrap_or(1);
    let padding = match attr_ints(node, "pads") {
        None => 0,
        Some(p @ [hb, wb, he, we]) => {
            if hb != he || wb != we {
                return Err(format!("asymmetric pads {p:?} (begin ≠ end)"));
            }
            square(&[*hb, *wb], "pads")?
        }
        Some(p) => return Err(format!("pads {p:?} are not 2-d")),
    };
    if kernel == 0 || stride == 0 || dilation == 0 {
        return Err("kernel, stride and dilation must be positive".into());
    }
    Ok(LayerShape { kernel: dilation * (kernel - 1) + 1, stride, padding })
}

#[cfg(test)]
mod tests {
    use super::*;
    use onnx::attribute_proto::AttributeType;
    use onnx::tensor_proto::DataType;

    fn ints(name: &str, v: &[i64]) -> onnx::AttributeProto {
        onnx::AttributeProto {
            name: name.into(),
            r#type: AttributeType::Ints as i32,
            ints: v.to_vec(),
            ..Default::default()
        }
    }

    fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<onnx::AttributeProto>) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            name: format!("{op}_{output}"),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute,
            ..Default::default()
        }
    }

    /// A small hand-built graph: image input `x` `[N, 3, H, W]`, with seeded initializers.
    struct Builder {
        nodes: Vec<NodeProto>,
        initializers: Vec<onnx::TensorProto>,
        seed: u32,
    }

    impl Builder {
        fn new() -> Self {
            Builder { nodes: Vec::new(), initializers: Vec::new(), seed: 1 }
        }

        fn tensor(&mut self, name: &str, dims: &[usize]) {
            let n: usize = dims.iter().product();
            let mut raw = Vec::with_capacity(4 * n);
            for _ in 0..n {
                // A small LCG: deterministic weights in [-0.5, 0.5).
                self.seed = self.seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                raw.extend_from_slice(&((self.seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5).to_le_bytes());
            }
            self.initializers.push(onnx::TensorProto {
                name: name.into(),
                dims: dims.iter().map(|&d| d as i64).collect(),
                data_type: DataType::Float as i32,
                raw_data: raw,
                ..Default::default()
            });
        }

        /// `out = Conv(input)` with a square kernel `k`, stride `s`, symmetric pad `p`.
        fn conv(
            &mut self,
            input: &str,
            out: &str,
            (c_in, c_out): (usize, usize),
            k: usize,
            s: i64,
            p: i64,
        ) -> &mut Self {
            self.tensor(&format!("{out}.w"), &[c_out, c_in, k, k]);
            self.tensor(&format!("{out}.b"), &[c_out]);
            let attrs = vec![ints("strides", &[s, s]), ints("pads", &[p, p, p, p])];
            self.nodes.push(node("Conv", &[input, &format!("{out}.w"), &format!("{out}.b")], out, attrs));
            self
        }

        fn op(&mut self, op: &str, inputs: &[&str], out: &str, attrs: Vec<onnx::AttributeProto>) -> &mut Self {
            self.nodes.push(node(op, inputs, out, attrs));
            self
        }

        fn model(&self) -> ModelProto {
            let dim = |v: onnx::tensor_shape_proto::dimension::Value| onnx::tensor_shape_proto::Dimension {
                value: Some(v),
                ..Default::default()
            };
            use onnx::tensor_shape_proto::dimension::Value::{DimParam, DimValue};
            let input = onnx::ValueInfoProto {
                name: "x".into(),
                r#type: Some(onnx::TypeProto {
                    value: Some(onnx::type_proto::Value::TensorType(onnx::type_proto::Tensor {
                        elem_type: DataType::Float as i32,
                        shape: Some(onnx::TensorShapeProto {
                            dim: vec![dim(DimValue(1)), dim(DimValue(3)), dim(DimParam("h".into())), dim(DimValue(32))],
                        }),
                    })),
                    ..Default::default()
                }),
                ..Default::default()
            };
            ModelProto {
                ir_version: 8,
                graph: Some(onnx::GraphProto {
                    node: self.nodes.clone(),
                    initializer: self.initializers.clone(),
                    input: vec![input],
                    output: Vec::new(),
                    ..Default::default()
                }),
                ..Default::default()
            }
        }

        fn load(&self, taps: &[&str], explicit: &BTreeMap<String, TapGeometry>) -> Result<OnnxBackbone, BackboneError> {
            let taps: Vec<String> = taps.iter().map(|s| s.to_string()).collect();
            OnnxBackbone::from_model(Path::new("test.onnx"), self.model(), "d".into(), &taps, explicit, &Device::Cpu)
        }
    }

    fn none() -> BTreeMap<String, TapGeometry> {
        BTreeMap::new()
    }

    fn geometry(stride: f64, first_centre: f64, receptive_field: f64) -> TapGeometry {
        TapGeometry { stride, first_centre, receptive_field }
    }

    /// conv3 p1 → relu → maxpool2 → conv3 p0 s2 → relu
    fn chain() -> Builder {
        let mut b = Builder::new();
        b.conv("x", "c1", (3, 4), 3, 1, 1)
            .op("Relu", &["c1"], "r1", vec![])
            .op("MaxPool", &["r1"], "p1", vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])])
            .conv("p1", "c2", (4, 6), 3, 2, 0)
            .op("Relu", &["c2"], "r2", vec![]);
        b
    }

    #[test]
    fn chain_geometry_channels_and_forward() {
        let model = chain().load(&["r2", "c1", "p1"], &none()).unwrap();
        // Taps in graph order, whatever the request order.
        let names: Vec<&str> = model.taps().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["c1", "p1", "r2"]);
        let expected =
            tap_geometry(&[LayerShape::CONV3_PAD1, LayerShape::POOL2, LayerShape { kernel: 3, stride: 2, padding: 0 }]);
        assert_eq!(model.tap("r2").unwrap().geometry, expected);
        assert_eq!(expected, geometry(4.0, 3.5, 8.0));
        assert_eq!(model.tap("c1").unwrap().geometry, geometry(1.0, 1.0, 3.0));
        assert_eq!(model.tap("p1").unwrap().geometry, geometry(2.0, 1.5, 4.0));
        assert_eq!([model.tap("c1").unwrap().channels, model.tap("p1").unwrap().channels], [4, 4]);
        assert_eq!(model.tap("r2").unwrap().channels, 6);
        // 32 → 32 → 16 → 7; 9 → 9 → 4 → 1; 4 → 4 → 2 → too small.
        assert_eq!(model.tap_map_size("r2", 32).unwrap(), 7);
        assert_eq!(model.tap_map_size("r2", 9).unwrap(), 1);
        assert!(model.tap_map_size("r2", 4).is_err());
        assert!(model.tap_map_size("nope", 32).is_err());

        // The batch and spatial sizes of the declared input are relaxed: batch 2, 32×20.
        let x = Tensor::ones((2, 3, 32, 20), DType::F32, &Device::Cpu).unwrap();
        let out = model.forward_taps(&x, &["r2", "c1"]).unwrap();
        assert_eq!(out[0].dims(), [2, 6, 7, 4]);
        assert_eq!(out[1].dims(), [2, 4, 32, 20]);
        // ReLU'd tap: nothing negative; pre-ReLU conv output: some negative values.
        assert!(out[0].min_all().unwrap().to_scalar::<f32>().unwrap() >= 0.0);
        assert!(out[1].min_all().unwrap().to_scalar::<f32>().unwrap() < 0.0);
        // The same tap alone gives the same values (pruned graph of another tap set).
        let alone = model.forward_taps(&x, &["r2"]).unwrap();
        let diff = (&alone[0] - &out[0]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0);
        assert!(model.forward_taps(&x.narrow(1, 0, 2).unwrap(), &["r2"]).is_err());
        let small = Tensor::ones((1, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(model.forward_taps(&small, &["r2"]).unwrap_err().to_string().contains("too small"));
    }

    /// Stem conv s2 → block: conv3 s1 p1 → relu → conv3 s1 p1, plus identity → Add → Relu;
    /// and a downsampling block whose shortcut is a 1×1 stride-2 conv.
    fn residual() -> Builder {
        let mut b = Builder::new();
        b.conv("x", "stem", (3, 4), 3, 2, 1)
            .conv("stem", "a1", (4, 4), 3, 1, 1)
            .op("Relu", &["a1"], "a1r", vec![])
            .conv("a1r", "a2", (4, 4), 3, 1, 1)
            .op("Add", &["a2", "stem"], "sum", vec![])
            .op("Relu", &["sum"], "block1", vec![])
            .conv("block1", "d1", (4, 8), 3, 2, 1)
            .conv("block1", "down", (4, 8), 1, 2, 0)
            .op("Add", &["d1", "down"], "sum2", vec![]);
        b
    }

    #[test]
    fn residual_branches_that_agree_follow_the_larger_field() {
        let model = residual().load(&["block1", "sum2"], &none()).unwrap();
        let main = [LayerShape { kernel: 3, stride: 2, padding: 1 }, LayerShape::CONV3_PAD1, LayerShape::CONV3_PAD1];
        assert_eq!(model.tap("block1").unwrap().geometry, tap_geometry(&main));
        assert_eq!(model.tap("block1").unwrap().channels, 4);
        let mut deeper = main.to_vec();
        deeper.push(LayerShape { kernel: 3, stride: 2, padding: 1 });
        assert_eq!(model.tap("sum2").unwrap().geometry, tap_geometry(&deeper));
        assert_eq!(model.tap("sum2").unwrap().channels, 8);
        assert_eq!(model.tap_map_size("sum2", 32).unwrap(), 8);
        let x = Tensor::ones((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(model.forward_taps(&x, &["sum2"]).unwrap()[0].dims(), [1, 8, 8, 8]);
    }

    #[test]
    fn disagreeing_branches_need_explicit_geometry() {
        let mut b = Builder::new();
        // Both halve the map, but a 1×1 stride-2 conv has its first centre at pixel 1 and a
        // 2×2 max-pool at 1.5.
        b.conv("x", "sub", (3, 3), 1, 2, 0)
            .op("MaxPool", &["x"], "pool", vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])])
            .op("Add", &["sub", "pool"], "sum", vec![])
            .op("Relu", &["sum"], "out", vec![]);
        let err = b.load(&["out"], &none()).unwrap_err();
        assert!(matches!(err, BackboneError::OnnxGeometry { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("test.onnx") && msg.contains("`out`") && msg.contains("disagree"), "{msg}");
        assert!(msg.contains("first centre 1.5") && msg.contains("explicitly"), "{msg}");
        // An explicit geometry resolves it; channels and map sizes then come from dry runs.
        let explicit = BTreeMap::from([("out".to_string(), geometry(2.0, 1.25, 2.0))]);
        let model = b.load(&["out"], &explicit).unwrap();
        assert_eq!(model.tap("out").unwrap().geometry, geometry(2.0, 1.25, 2.0));
        assert_eq!(model.tap("out").unwrap().channels, 3);
        assert_eq!(model.tap_map_size("out", 224).unwrap(), 112);
        assert_eq!(model.tap_map_size("out", 16).unwrap(), 8);
        // At an odd side the branches give 8×8 and 7×7 maps, which the evaluator cannot add.
        assert!(model.tap_map_size("out", 15).is_err());
        // Explicit geometry for a name that is not a tap is a mistake.
        let stray = BTreeMap::from([("c9".to_string(), geometry(1.0, 1.0, 1.0))]);
        assert!(b.load(&["sub"], &stray).unwrap_err().to_string().contains("c9"));
    }

    #[test]
    fn explicit_geometry_with_measured_map_size() {
        let mut b = Builder::new();
        // Asymmetric pads: refused by the walk, but the evaluator runs them.
        b.conv("x", "c1", (3, 2), 3, 1, 1);
        b.nodes[0].attribute[1] = ints("pads", &[0, 0, 2, 2]);
        b.op("Relu", &["c1"], "r1", vec![]);
        let msg = b.load(&["r1"], &none()).unwrap_err().to_string();
        assert!(msg.contains("asymmetric pads") && msg.contains("explicitly"), "{msg}");
        let explicit = BTreeMap::from([("r1".to_string(), geometry(1.0, 2.0, 3.0))]);
        let model = b.load(&["r1"], &explicit).unwrap();
        assert_eq!(model.tap("r1").unwrap().channels, 2);
        assert_eq!(model.tap_map_size("r1", 224).unwrap(), 224);
        assert_eq!(model.tap_map_size("r1", 10).unwrap(), 10);
    }

    #[test]
    fn unknown_ops_on_the_path_need_explicit_geometry() {
        let mut b = Builder::new();
        b.conv("x", "c1", (3, 4), 3, 1, 1).op("Flatten", &["c1"], "flat", vec![]).op(
            "Gemm",
            &["flat", "c1.w"],
            "fc",
            vec![],
        );
        for tap in ["flat", "fc"] {
            let err = b.load(&[tap], &none()).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, BackboneError::OnnxGeometry { .. }), "{msg}");
            assert!(msg.contains("Flatten") && msg.contains("explicitly"), "{msg}");
        }
        // Taps before the unknown op are fine.
        assert!(b.load(&["c1"], &none()).is_ok());
        // A global pool has no spatial map to tap.
        b.op("GlobalAveragePool", &["c1"], "gap", vec![]);
        assert!(b.load(&["gap"], &none()).unwrap_err().to_string().contains("spatial"));
        // A non-square kernel is refused as well.
        let mut b = Builder::new();
        b.tensor("w", &[2, 3, 3, 1]);
        b.op("Conv", &["x", "w"], "c", vec![]);
        let msg = b.load(&["c"], &none()).unwrap_err().to_string();
        assert!(msg.contains("differ between height and width"), "{msg}");
    }

    #[test]
    fn unknown_taps_list_node_outputs() {
        let err = chain().load(&["conv9"], &none()).unwrap_err();
        assert!(matches!(err, BackboneError::UnknownTap { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("`conv9`") && msg.contains("c1 (Conv)") && msg.contains("r2 (Relu)"), "{msg}");
        // Long lists are cut in the middle.
        let mut b = Builder::new();
        b.conv("x", "c0", (3, 2), 1, 1, 0);
        for i in 1..40 {
            b.op("Relu", &[&format!("c{}", i - 1)], &format!("c{i}"), vec![]);
        }
        let msg = b.load(&["nope"], &none()).unwrap_err().to_string();
        assert!(msg.contains("c0 (Conv)") && msg.contains("c39 (Relu)") && msg.contains("16 more"), "{msg}");
        assert!(!msg.contains("c20 "), "{msg}");
        // Named twice, or none at all.
        assert!(chain().load(&["c1", "c1"], &none()).unwrap_err().to_string().contains("twice"));
        assert!(chain().load(&[], &none()).is_err());
    }

    #[test]
    fn bad_files_and_inputs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.onnx");
        let err = OnnxBackbone::load_file(&missing, &["c1".into()], &none(), &Device::Cpu).unwrap_err();
        assert!(matches!(err, BackboneError::MissingFile { .. }), "{err:?}");
        let junk = dir.path().join("junk.onnx");
        std::fs::write(&junk, b"\xff\xff\xff\xff not protobuf").unwrap();
        let msg = OnnxBackbone::load_file(&junk, &["c1".into()], &none(), &Device::Cpu).unwrap_err().to_string();
        assert!(msg.contains("junk.onnx") && msg.contains("not a valid ONNX"), "{msg}");
        // A file written by prost round-trips, with the file's digest.
        let good = dir.path().join("good.onnx");
        std::fs::write(&good, chain().model().encode_to_vec()).unwrap();
        let model = OnnxBackbone::load_file(&good, &["c2".into()], &none(), &Device::Cpu).unwrap();
        assert_eq!(model.weights_digest(), blake3::hash(&std::fs::read(&good).unwrap()).to_hex().as_str());
        assert_eq!(model.name(), "onnx");
        // Two image inputs.
        let mut two = chain().model();
        if let Some(g) = two.graph.as_mut() {
            let extra = onnx::ValueInfoProto { name: "y".into(), ..g.input[0].clone() };
            g.input.push(extra);
        }
        let err =
            OnnxBackbone::from_model(Path::new("two.onnx"), two, "d".into(), &["c1".into()], &none(), &Device::Cpu)
                .unwrap_err()
                .to_string();
        assert!(err.contains("exactly one image input") && err.contains("\"y\""), "{err}");
    }
}
