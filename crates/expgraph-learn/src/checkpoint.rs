//! Checkpoints of a learning run: after each finished layer, what the layers below it need (the
//! layer, its per-image records and the views chosen), so that a killed run resumes at the next
//! layer and ends with the same bytes as a run that was never interrupted.
//!
//! [`DirCheckpoints`] keeps them as `DIR/<layer>.safetensors`: every number in binary (f64 and
//! f32 as stored in memory, so a resumed run continues from exactly the same state), and in the
//! header the run's *fingerprint*, a text the caller builds from everything the result depends on
//! (the feature cache's key, the parameters, the number of images). A checkpoint with another
//! fingerprint belongs to another run: it is ignored, and replaced when this run finishes the
//! layer.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use expgraph_cache::{serialize_safetensors, LayerInfo, OwnedTensor};
use expgraph_graph::{parents_from_padded, parents_to_padded, GraphError, GraphLayer, TensorReader};

use crate::{LayerRecord, LearnError};

/// A finished layer of a run and what the layers below it need.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerCheckpoint {
    /// The learned layer.
    pub layer: GraphLayer,
    /// Its per-image records (positions and normalized scores).
    pub record: LayerRecord,
    /// The view chosen per image (after the top layer; the layers below keep them).
    pub flips: Vec<bool>,
}

/// Where a run keeps its finished layers ([`crate::CheckedLearnParams::fit_resumable`]).
pub trait Checkpoints: Sync {
    /// The checkpoint of layer `info` of this run, if one was saved (`None` for none, or one of
    /// another run).
    fn load(&self, info: &LayerInfo) -> Result<Option<LayerCheckpoint>, LearnError>;
    /// Save a finished layer.
    fn save(&self, done: &LayerCheckpoint) -> Result<(), LearnError>;
}

/// Checkpoints as files in a folder (see the module docs).
#[derive(Debug)]
pub struct DirCheckpoints {
    dir: PathBuf,
    fingerprint: String,
    /// The files this run loaded or saved (what [`DirCheckpoints::remove`] removes).
    used: Mutex<Vec<PathBuf>>,
}

const FINGERPRINT: &str = "expgraph.learn-checkpoint";

impl DirCheckpoints {
    /// Checkpoints in `dir` (created when the first is saved) for the run `fingerprint`.
    pub fn new(dir: impl Into<PathBuf>, fingerprint: impl Into<String>) -> Self {
        Self { dir: dir.into(), fingerprint: fingerprint.into(), used: Mutex::new(Vec::new()) }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, layer: &str) -> PathBuf {
        self.dir.join(format!("{layer}.safetensors"))
    }

    /// Remove the checkpoint files this run loaded or saved (once its result is saved), and the
    /// folder when it is then empty. Anything else in the folder is left alone.
    pub fn remove(&self) -> Result<(), LearnError> {
        let used = std::mem::take(&mut *self.used.lock().unwrap_or_else(|e| e.into_inner()));
        for path in used {
            if path.is_file() {
                std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
            }
        }
        let _ = std::fs::remove_dir(&self.dir); // only when empty
        Ok(())
    }

    fn note(&self, path: &Path) {
        self.used.lock().unwrap_or_else(|e| e.into_inner()).push(path.to_path_buf());
    }
}

fn io_err(path: &Path, source: std::io::Error) -> LearnError {
    LearnError::Graph(GraphError::Io { path: path.to_path_buf(), source })
}

fn bad(path: &Path, what: impl Into<String>) -> LearnError {
    LearnError::Graph(GraphError::Format { path: path.to_path_buf(), what: what.into() })
}

impl Checkpoints for DirCheckpoints {
    fn load(&self, info: &LayerInfo) -> Result<Option<LayerCheckpoint>, LearnError> {
        let path = self.path(&info.name);
        if !path.is_file() {
            return Ok(None);
        }
        let bytes = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
        let r = TensorReader::parse(&bytes, &path)?;
        if r.metadata(FINGERPRINT) != Some(self.fingerprint.as_str()) {
            tracing::info!(path = %path.display(), "ignoring the checkpoint of another run");
            return Ok(None);
        }
        let k: usize = r
            .metadata("nodes_per_filter")
            .and_then(|v| v.parse().ok())
            .filter(|k| *k > 0)
            .ok_or_else(|| bad(&path, "no nodes_per_filter in the header"))?;
        let nodes = info.channels * k;
        // `mu` first: its shape check bounds `nodes` by the file before anything is sized by it.
        let mu = pairs(r.f64("mu", &[nodes, 2])?);
        let n = r.shape("flips")?.first().copied().unwrap_or(0);
        let m = r.shape("parents")?.get(1).copied().unwrap_or(0);
        let (idx, sim) = (r.i32("parents", &[nodes, m])?, r.f32("parent_similarity", &[nodes, m])?);
        let layer = GraphLayer {
            info: info.clone(),
            nodes_per_filter: k,
            mu,
            sigma: r.f64("sigma", &[nodes])?,
            mean_position: pairs(r.f64("mean_position", &[nodes, 2])?),
            parents: parents_from_padded(&idx, &sim, m, nodes),
            score_norm: r.f64("score_norm", &[1])?[0],
        };
        let record = LayerRecord {
            layer: info.name.clone(),
            positions: pairs(r.f32("positions", &[n, nodes, 2])?),
            scores: r.f32("scores", &[n, nodes])?,
        };
        let flips = r.u8("flips", &[n])?.iter().map(|f| *f != 0).collect();
        tracing::info!(layer = %info.name, path = %path.display(), "resuming: layer loaded from its checkpoint");
        self.note(&path);
        Ok(Some(LayerCheckpoint { layer, record, flips }))
    }

    fn save(&self, done: &LayerCheckpoint) -> Result<(), LearnError> {
        let l = &done.layer;
        let (nodes, n, m) = (l.num_nodes(), done.flips.len(), l.max_parents());
        let (idx, sim) = parents_to_padded(&l.parents, m);
        let tensors = [
            ("mu", OwnedTensor::f64(vec![nodes, 2], l.mu.iter().flatten().copied())),
            ("sigma", OwnedTensor::f64(vec![nodes], l.sigma.iter().copied())),
            ("mean_position", OwnedTensor::f64(vec![nodes, 2], l.mean_position.iter().flatten().copied())),
            ("parents", OwnedTensor::i32(vec![nodes, m], idx)),
            ("parent_similarity", OwnedTensor::f32(vec![nodes, m], sim)),
            ("score_norm", OwnedTensor::f64(vec![1], [l.score_norm])),
            ("positions", OwnedTensor::f32(vec![n, nodes, 2], done.record.positions.iter().flatten().copied())),
            ("scores", OwnedTensor::f32(vec![n, nodes], done.record.scores.iter().copied())),
            ("flips", OwnedTensor::u8(vec![n], done.flips.iter().map(|f| u8::from(*f)))),
        ];
        let meta = [
            (FINGERPRINT.to_string(), self.fingerprint.clone()),
            ("layer".to_string(), l.info.name.clone()),
            ("nodes_per_filter".to_string(), l.nodes_per_filter.to_string()),
        ];
        let path = self.path(&l.info.name);
        let bytes =
            serialize_safetensors(tensors.iter().map(|(k, t)| (*k, t)), meta).map_err(|e| bad(&path, e.to_string()))?;
        // A run killed while saving this layer left its temp file: this run holds the output's
        // lock, so nothing else writes it now.
        expgraph_io::remove_stale_temps(&path).map_err(|e| io_err(&path, e))?;
        expgraph_io::write_bytes(&path, &bytes).map_err(|e| io_err(&path, e))?;
        self.note(&path);
        Ok(())
    }
}

fn pairs<T: Copy>(flat: Vec<T>) -> Vec<[T; 2]> {
    flat.chunks_exact(2).map(|c| [c[0], c[1]]).collect()
}
