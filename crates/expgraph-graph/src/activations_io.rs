//! On-disk format of per-image inference results ([`ImageActivations`]): a folder with
//! `activations.json` (version, image ids, layer names, input size) and
//! `activations.safetensors` holding, per layer `L`:
//! `L.positions` f32 `[N, nodes, 2]` (1-based map coordinates of the chosen view, spec §1.7),
//! `L.positions_px` f32 `[N, nodes, 2]` (1-based input pixels of the **original** crop, flip
//! undone, spec §1.3), `L.scores` f32 `[N, nodes]`; and `flips` u8 `[N]` (1 = mirrored view chosen).

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use expgraph_cache::{write_safetensors, FillBytes, StreamedTensor};
use safetensors::Dtype;

use serde::{Deserialize, Serialize};

use crate::error::{format_err, io_err, GraphError};
use crate::tensors::{arrays_file, pairs, write_atomic, TensorReader};
use crate::{ExplanatoryGraph, ImageActivations, LayerActivations};

/// Metadata file inside an activations folder.
pub const ACTIVATIONS_JSON: &str = "activations.json";
/// Array file inside an activations folder.
pub const ACTIVATIONS_ARRAYS: &str = "activations.safetensors";
const FORMAT_NAME: &str = "expgraph-activations";
/// Version of the activations format.
pub const ACTIVATIONS_FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct ActivationsFile {
    format: String,
    format_version: u32,
    input_size: usize,
    image_ids: Vec<String>,
    layers: Vec<ActLayerMeta>,
    arrays: String,
    blake3: String,
}

#[derive(Serialize, Deserialize)]
struct ActLayerMeta {
    name: String,
    num_nodes: usize,
}

/// Save activations of `graph`'s nodes on N images into folder `dir` (atomically per file).
///
/// Every image must have one entry per graph layer with one position and score per node.
pub fn save_activations(
    dir: impl AsRef<Path>,
    graph: &ExplanatoryGraph,
    acts: &[ImageActivations],
) -> Result<(), GraphError> {
    let dir = dir.as_ref();
    let bad = |problem: String| GraphError::Invalid { what: "activations", problem };
    for a in acts {
        if a.layers.len() != graph.layers.len() {
            return Err(bad(format!(
                "image {} has {} layers, the graph {}",
                a.image_id,
                a.layers.len(),
                graph.layers.len()
            )));
        }
        for (la, gl) in a.layers.iter().zip(&graph.layers) {
            if la.layer != gl.info.name || la.positions.len() != gl.num_nodes() || la.scores.len() != gl.num_nodes() {
                return Err(bad(format!(
                    "image {}: layer {} does not match graph layer {}",
                    a.image_id, la.layer, gl.info.name
                )));
            }
        }
    }
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let n = acts.len();
    // Streamed: each tensor's bytes are produced image by image as the file is written, so the
    // arrays (20 bytes per image and node, 2.5 GB at 2,000 images × 61,440 nodes) are never held
    // in memory, nor a second time as the file's bytes.
    let mut tensors = Vec::new();
    for (l, gl) in graph.layers.iter().enumerate() {
        let (name, nodes) = (&gl.info.name, gl.num_nodes());
        let positions = rows(acts, move |a, row| {
            row.extend(a.layers[l].positions.iter().flatten().flat_map(|x| x.to_le_bytes()));
        });
        tensors.push((
            format!("{name}.positions"),
            StreamedTensor { dtype: Dtype::F32, shape: vec![n, nodes, 2], fill: positions },
        ));
        let pixels = rows(acts, move |a, row| {
            for v in 0..nodes {
                row.extend(
                    a.position_pixels(gl, l, v, graph.input_size).iter().flat_map(|&x| (x as f32).to_le_bytes()),
                );
            }
        });
        tensors.push((
            format!("{name}.positions_px"),
            StreamedTensor { dtype: Dtype::F32, shape: vec![n, nodes, 2], fill: pixels },
        ));
        let scores = rows(acts, move |a, row| row.extend(a.layers[l].scores.iter().flat_map(|x| x.to_le_bytes())));
        tensors.push((
            format!("{name}.scores"),
            StreamedTensor { dtype: Dtype::F32, shape: vec![n, nodes], fill: scores },
        ));
    }
    let flips = rows(acts, |a, row| row.push(u8::from(a.flipped)));
    tensors.push(("flips".into(), StreamedTensor { dtype: Dtype::U8, shape: vec![n], fill: flips }));
    let arrays_path = dir.join(ACTIVATIONS_ARRAYS);
    let json_path = dir.join(ACTIVATIONS_JSON);
    for path in [&arrays_path, &json_path] {
        expgraph_io::remove_stale_temps(path).map_err(|e| io_err(path, e))?;
    }
    let mut hash = None;
    expgraph_io::write_atomic(&arrays_path, |w| {
        let mut hashed = Hashed { inner: w, hasher: blake3::Hasher::new() };
        write_safetensors(&mut hashed, tensors, [("format", FORMAT_NAME)])?;
        hash = Some(hashed.hasher.finalize());
        Ok(())
    })
    .map_err(|e| io_err(&arrays_path, e))?;
    let file = ActivationsFile {
        format: FORMAT_NAME.into(),
        format_version: ACTIVATIONS_FORMAT_VERSION,
        input_size: graph.input_size,
        image_ids: acts.iter().map(|a| a.image_id.clone()).collect(),
        layers: graph
            .layers
            .iter()
            .map(|l| ActLayerMeta { name: l.info.name.clone(), num_nodes: l.num_nodes() })
            .collect(),
        arrays: ACTIVATIONS_ARRAYS.into(),
        blake3: hash.map(|h| h.to_hex().to_string()).unwrap_or_default(),
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|e| format_err(&json_path, e.to_string()))?;
    write_atomic(&json_path, &json)
}

/// A tensor's bytes written image by image: `fill` appends one image's bytes to a row buffer.
fn rows<'a>(acts: &'a [ImageActivations], fill: impl Fn(&ImageActivations, &mut Vec<u8>) + 'a) -> FillBytes<'a> {
    let mut row = Vec::new();
    Box::new(move |w: &mut dyn Write| {
        for a in acts {
            row.clear();
            fill(a, &mut row);
            w.write_all(&row)?;
        }
        Ok(())
    })
}

/// A writer that hashes what passes through.
struct Hashed<'w> {
    inner: &'w mut dyn Write,
    hasher: blake3::Hasher,
}

impl Write for Hashed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Load activations written by [`save_activations`].
pub fn load_activations(dir: impl AsRef<Path>) -> Result<Vec<ImageActivations>, GraphError> {
    let dir = dir.as_ref();
    let json_path = dir.join(ACTIVATIONS_JSON);
    let text = fs::read(&json_path).map_err(|e| io_err(&json_path, e))?;
    let file: ActivationsFile =
        serde_json::from_slice(&text).map_err(|e| format_err(&json_path, format!("not an activations file: {e}")))?;
    if file.format != FORMAT_NAME {
        return Err(format_err(&json_path, format!("`format` is {:?}, expected {FORMAT_NAME:?}", file.format)));
    }
    if file.format_version != ACTIVATIONS_FORMAT_VERSION {
        return Err(GraphError::Version {
            path: json_path,
            found: file.format_version,
            supported: ACTIVATIONS_FORMAT_VERSION,
        });
    }
    let arrays_path = arrays_file(dir, &json_path, &file.arrays)?;
    let bytes = fs::read(&arrays_path).map_err(|e| io_err(&arrays_path, e))?;
    if blake3::hash(&bytes).to_hex().as_str() != file.blake3 {
        return Err(format_err(&arrays_path, "content hash differs from activations.json: corrupt or half-written"));
    }
    let reader = TensorReader::parse(&bytes, &arrays_path)?;
    let n = file.image_ids.len();
    let flips = reader.u8("flips", &[n])?;
    let mut per_layer = Vec::new();
    for l in &file.layers {
        let pos = reader.f32(&format!("{}.positions", l.name), &[n, l.num_nodes, 2])?;
        let sc = reader.f32(&format!("{}.scores", l.name), &[n, l.num_nodes])?;
        per_layer.push((pos, sc));
    }
    Ok(file
        .image_ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| ImageActivations {
            image_id: id,
            flipped: flips[i] != 0,
            layers: file
                .layers
                .iter()
                .zip(&per_layer)
                .map(|(l, (pos, sc))| {
                    let k = l.num_nodes;
                    LayerActivations {
                        layer: l.name.clone(),
                        positions: pairs(&pos[i * k * 2..(i + 1) * k * 2]),
                        scores: sc[i * k..(i + 1) * k].to_vec(),
                    }
                })
                .collect(),
        })
        .collect())
}
