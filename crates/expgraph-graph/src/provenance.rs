//! Where an output came from: `provenance.json` beside a graph's or activations' files records the
//! content hashes of its inputs, so a command can refuse files of different runs.
//!
//! The chain: a feature cache has a content key (weights + images + preprocessing + storage); a
//! graph records the key and the feature space (backbone, weights, preprocessing, normalization)
//! of the cache it was learned on; activations record the graph's digest and the cache they were
//! inferred on. A graph's digest is the BLAKE3 hash of its `graph.json`, which itself holds the
//! hash of its arrays.

use std::path::{Path, PathBuf};

use expgraph_cache::FeatureCache;
use serde::{Deserialize, Serialize};

use crate::error::{format_err, io_err, GraphError};
use crate::graph_io::GRAPH_JSON;

/// The provenance file inside a graph or activations folder.
pub const PROVENANCE_JSON: &str = "provenance.json";

/// The feature space a cache's maps live in: two caches with equal origins can be compared
/// (a graph learned on one can be run on the other).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureOrigin {
    /// Backbone name, e.g. `vgg16`.
    pub backbone: String,
    /// Digest of the backbone weights.
    pub weights_digest: String,
    /// Preprocessing preset.
    pub preprocess: String,
    /// Digest of the normalization statistics (spec §3).
    pub norm_stats_digest: String,
}

impl FeatureOrigin {
    /// The origin of `cache`'s maps.
    pub fn of(cache: &FeatureCache) -> Self {
        Self {
            backbone: cache.manifest().backbone.clone(),
            weights_digest: cache.storage().weights_digest.clone(),
            preprocess: cache.manifest().preprocess.clone(),
            norm_stats_digest: cache.storage().norm_stats_digest.clone(),
        }
    }
}

/// The inputs an output was computed from (`None` = not applicable).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Provenance {
    /// Key of the feature cache it was computed from.
    #[serde(default)]
    pub cache_key: Option<String>,
    /// The feature space of that cache.
    #[serde(default)]
    pub features: Option<FeatureOrigin>,
    /// Digest of the graph it was computed with ([`graph_digest`]).
    #[serde(default)]
    pub graph_digest: Option<String>,
}

impl Provenance {
    /// Computed from `cache` (its key and feature origin).
    pub fn of_cache(cache: &FeatureCache) -> Self {
        Self {
            cache_key: Some(cache.manifest().key.clone()),
            features: Some(FeatureOrigin::of(cache)),
            graph_digest: None,
        }
    }

    /// The same, also computed with the graph of digest `digest`.
    pub fn with_graph(mut self, digest: String) -> Self {
        self.graph_digest = Some(digest);
        self
    }

    /// Write `dir/provenance.json` atomically (removing the temp files of an earlier, killed
    /// save: the caller writes `dir` alone, as for [`crate::ExplanatoryGraph::save`]).
    pub fn save(&self, dir: &Path) -> Result<(), GraphError> {
        let path = dir.join(PROVENANCE_JSON);
        expgraph_io::remove_stale_temps(&path).map_err(|e| io_err(&path, e))?;
        expgraph_io::write_json(&path, self).map_err(|e| io_err(&path, e))
    }

    /// Read `dir/provenance.json`; `None` when the folder has none (written before provenance
    /// was recorded, or by another tool).
    pub fn load(dir: &Path) -> Result<Option<Self>, GraphError> {
        let path = dir.join(PROVENANCE_JSON);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format_err(&path, format!("not a provenance record: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        }
    }
}

/// The digest of the graph in folder `dir`: BLAKE3 of its `graph.json` (which holds the hash of
/// its arrays), so any change of the graph changes it.
pub fn graph_digest(dir: &Path) -> Result<String, GraphError> {
    let path: PathBuf = dir.join(GRAPH_JSON);
    let bytes = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
    Ok(blake3::hash(&bytes).to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_absent_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Provenance::load(dir.path()).unwrap(), None);
        let p = Provenance {
            cache_key: Some("k".into()),
            features: Some(FeatureOrigin {
                backbone: "vgg16".into(),
                weights_digest: "w".into(),
                preprocess: "caffe".into(),
                norm_stats_digest: "s".into(),
            }),
            graph_digest: None,
        }
        .with_graph("g".into());
        // The temp file of a save that was killed is removed by the next save.
        std::fs::write(dir.path().join(".provenance.json.x1Y2z3.tmp"), "{").unwrap();
        p.save(dir.path()).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [PROVENANCE_JSON]);
        assert_eq!(Provenance::load(dir.path()).unwrap(), Some(p));
        std::fs::write(dir.path().join(PROVENANCE_JSON), "[1]").unwrap();
        let err = Provenance::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(PROVENANCE_JSON), "{err}");
    }
}
