//! Per-unit normalization statistics over negative images (spec §3, §7 #16).
//!
//! For each unit (channel × position) of each layer: the sample standard deviation of its
//! pre-ReLU response over a set of negative images, each resized whole to the input size. Maps
//! are divided by it, with `ε = 1e-6 · mean std` added and the result clamped to
//! [`NORMALIZED_MAX`]; values `≤ 0` become 0.

use std::path::{Path, PathBuf};

use expgraph_backbone::{Backbone, Preprocess};
use expgraph_cache::{serialize_safetensors, OwnedTensor};
use safetensors::tensor::Dtype;
use serde::{Deserialize, Serialize};

use crate::crop::{crop_resize, load_rgb};
use crate::forward::forward_crops;
use crate::progress::Counter;
use crate::FeaturesError;

/// Largest normalized value kept (also far below the f16 maximum 65504 of the cache).
pub const NORMALIZED_MAX: f32 = 1.0e4;
/// `ε = NORMALIZED_EPS_FRACTION · mean std` is added to every std (spec §7 #16).
pub const NORMALIZED_EPS_FRACTION: f64 = 1.0e-6;

/// Streaming mean/variance per unit in f64 (Welford); deterministic for a fixed image order.
#[derive(Debug, Clone)]
pub struct StdAccumulator {
    count: u64,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

impl StdAccumulator {
    /// An accumulator for `units` units.
    pub fn new(units: usize) -> Self {
        Self { count: 0, mean: vec![0.0; units], m2: vec![0.0; units] }
    }

    /// Add one image's responses (one value per unit).
    pub fn push(&mut self, values: &[f32]) -> Result<(), FeaturesError> {
        if values.len() != self.mean.len() {
            return Err(FeaturesError::Stats(format!("{} values for {} units", values.len(), self.mean.len())));
        }
        self.count += 1;
        let n = self.count as f64;
        for ((m, s), &v) in self.mean.iter_mut().zip(&mut self.m2).zip(values) {
            let v = f64::from(v);
            let d = v - *m;
            *m += d / n;
            *s += d * (v - *m);
        }
        Ok(())
    }

    /// Images added so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sample standard deviation (`N − 1`, like MATLAB's `std`) per unit; needs 2 images.
    pub fn std(&self) -> Result<Vec<f32>, FeaturesError> {
        if self.count < 2 {
            return Err(FeaturesError::Stats(format!(
                "a standard deviation needs at least 2 negative images, got {}",
                self.count
            )));
        }
        let d = (self.count - 1) as f64;
        Ok(self.m2.iter().map(|s| (s.max(0.0) / d).sqrt() as f32).collect())
    }
}

/// What the statistics were computed from; two stats files fit the same extraction iff equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NormStatsMeta {
    /// Backbone name.
    pub backbone: String,
    /// Digest of the backbone weights.
    pub weights_digest: String,
    /// Preprocessing preset name.
    pub preprocess: String,
    /// Side of the square network input.
    pub input_size: usize,
    /// Layers, in order.
    pub layers: Vec<String>,
    /// Number of negative images used.
    pub num_negatives: usize,
    /// blake3 of the negatives' file names and sizes.
    pub negatives_digest: String,
}

/// The per-unit std of one layer, `[C, H, W]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerStd {
    /// Layer name.
    pub name: String,
    /// `[C, H, W]`.
    pub shape: [usize; 3],
    /// Std per unit, row-major `[C, H, W]`.
    pub std: Vec<f32>,
}

impl LayerStd {
    /// Divisors `std + ε` with `ε = 1e-6 · mean std` (at least the smallest positive f32).
    pub fn divisors(&self) -> Vec<f32> {
        let mean = self.std.iter().map(|&s| f64::from(s)).sum::<f64>() / self.std.len().max(1) as f64;
        let eps = ((NORMALIZED_EPS_FRACTION * mean) as f32).max(f32::MIN_POSITIVE);
        self.std.iter().map(|&s| s + eps).collect()
    }

    /// Units whose std is below ε (dead on the negatives).
    pub fn dead_units(&self) -> usize {
        let mean = self.std.iter().map(|&s| f64::from(s)).sum::<f64>() / self.std.len().max(1) as f64;
        self.std.iter().filter(|&&s| f64::from(s) <= NORMALIZED_EPS_FRACTION * mean).count()
    }
}

/// Normalize one image's pre-ReLU maps in place: `clamp(max(x, 0) / divisor, 0, NORMALIZED_MAX)`.
pub fn normalize_in_place(values: &mut [f32], divisors: &[f32]) {
    for (v, d) in values.iter_mut().zip(divisors) {
        *v = normalize_value(*v, *d);
    }
}

/// One unit's normalized value: `v / d` capped at [`NORMALIZED_MAX`] where `v > 0`, else 0.
#[inline]
pub fn normalize_value(v: f32, d: f32) -> f32 {
    if v > 0.0 {
        (v / d).min(NORMALIZED_MAX)
    } else {
        0.0
    }
}

/// Per-unit normalization statistics of several layers.
#[derive(Debug, Clone, PartialEq)]
pub struct NormStats {
    meta: NormStatsMeta,
    layers: Vec<LayerStd>,
    digest: String,
}

impl NormStats {
    /// Assemble statistics (checks that `layers` match `meta.layers`).
    pub fn new(meta: NormStatsMeta, layers: Vec<LayerStd>) -> Result<Self, FeaturesError> {
        let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        if names != meta.layers.iter().map(String::as_str).collect::<Vec<_>>() {
            return Err(FeaturesError::Stats(format!("layers {names:?} differ from meta {:?}", meta.layers)));
        }
        for l in &layers {
            if l.std.len() != l.shape.iter().product::<usize>() || l.std.iter().any(|s| !s.is_finite() || *s < 0.0) {
                return Err(FeaturesError::Stats(format!("layer {}: bad std values or shape", l.name)));
            }
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update(&serde_json::to_vec(&meta).unwrap_or_default());
        for l in &layers {
            hasher.update(l.name.as_bytes());
            for s in &l.std {
                hasher.update(&s.to_le_bytes());
            }
        }
        let digest = hasher.finalize().to_hex().to_string();
        Ok(Self { meta, layers, digest })
    }

    /// What they were computed from.
    pub fn meta(&self) -> &NormStatsMeta {
        &self.meta
    }

    /// blake3 of meta and values (goes into the cache key).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The std of layer `name`.
    pub fn layer(&self, name: &str) -> Option<&LayerStd> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// All layers.
    pub fn layers(&self) -> &[LayerStd] {
        &self.layers
    }

    /// Save as safetensors (one `[C, H, W]` f32 tensor per layer, meta in the header) plus a
    /// small `<path>.json` sidecar with the meta and digest; both written atomically.
    pub fn save(&self, path: &Path) -> Result<(), FeaturesError> {
        let meta_json = serde_json::to_string(&self.meta).map_err(|e| FeaturesError::file(path, e))?;
        let tensors: Vec<(&str, OwnedTensor)> = self
            .layers
            .iter()
            .map(|l| (l.name.as_str(), OwnedTensor::f32(l.shape.to_vec(), l.std.iter().copied())))
            .collect();
        let header = [("expgraph_norm_stats", meta_json), ("digest", self.digest.clone())];
        let data = serialize_safetensors(tensors.iter().map(|(n, t)| (n, t)), header)
            .map_err(|e| FeaturesError::file(path, e))?;
        write_atomic(path, &data)?;
        let sidecar = sidecar_path(path);
        let side = serde_json::json!({ "meta": self.meta, "digest": self.digest, "stats_file": path.file_name().map(|n| n.to_string_lossy().to_string()) });
        let side = serde_json::to_vec_pretty(&side).map_err(|e| FeaturesError::file(&sidecar, e))?;
        write_atomic(&sidecar, &side)
    }

    /// Load statistics saved by [`save`](Self::save).
    pub fn load(path: &Path) -> Result<Self, FeaturesError> {
        let bytes = std::fs::read(path).map_err(|e| FeaturesError::file(path, e))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| FeaturesError::file(path, format!("not a valid safetensors file: {e}")))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| FeaturesError::file(path, e))?;
        let meta_json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("expgraph_norm_stats"))
            .ok_or_else(|| FeaturesError::file(path, "not an expgraph normalization-statistics file"))?;
        let meta: NormStatsMeta = serde_json::from_str(meta_json).map_err(|e| FeaturesError::file(path, e))?;
        let mut layers = Vec::new();
        for name in &meta.layers {
            let t = st.tensor(name).map_err(|e| FeaturesError::file(path, format!("layer {name}: {e}")))?;
            let [c, h, w] = t.shape()[..] else {
                return Err(FeaturesError::file(path, format!("layer {name}: shape {:?} is not [C, H, W]", t.shape())));
            };
            if t.dtype() != Dtype::F32 {
                return Err(FeaturesError::file(path, format!("layer {name}: dtype {:?}, expected F32", t.dtype())));
            }
            let std = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            layers.push(LayerStd { name: name.clone(), shape: [c, h, w], std });
        }
        Self::new(meta, layers).map_err(|e| FeaturesError::file(path, e))
    }
}

/// `<path>.json`.
pub(crate) fn sidecar_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".json");
    path.with_file_name(name)
}

/// Write `data` to `path` atomically ([`expgraph_io::write_bytes`]).
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), FeaturesError> {
    expgraph_io::write_bytes(path, data).map_err(|e| FeaturesError::file(path, e))
}

/// blake3 of the file names and sizes of `paths` (identifies a negative set cheaply).
pub fn files_digest(paths: &[PathBuf]) -> Result<String, FeaturesError> {
    let mut hasher = blake3::Hasher::new();
    for p in paths {
        let len =
            std::fs::metadata(p).map_err(|e| FeaturesError::Image { path: p.clone(), what: e.to_string() })?.len();
        let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        hasher.update(name.as_bytes());
        hasher.update(&[0]);
        hasher.update(&len.to_le_bytes());
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// Settings of [`compute_norm_stats`].
#[derive(Debug, Clone)]
pub struct NormStatsParams {
    /// Layers (taps) to compute.
    pub layers: Vec<String>,
    /// Preprocessing preset.
    pub preprocess: Preprocess,
    /// Side of the network input (224).
    pub input_size: usize,
    /// Images per forward pass.
    pub batch: usize,
    /// Where progress goes (stage `negatives`, one step per image).
    pub progress: expgraph_io::ProgressSink,
}

/// The meta that statistics computed with `params` on `negatives` would have.
pub fn expected_meta(
    backbone: &dyn Backbone,
    params: &NormStatsParams,
    negatives: &[PathBuf],
) -> Result<NormStatsMeta, FeaturesError> {
    Ok(NormStatsMeta {
        backbone: backbone.name().to_string(),
        weights_digest: backbone.weights_digest().to_string(),
        preprocess: params.preprocess.name().to_string(),
        input_size: params.input_size,
        layers: params.layers.clone(),
        num_negatives: negatives.len(),
        negatives_digest: files_digest(negatives)?,
    })
}

/// Compute per-unit stds over `negatives` (each resized whole, bilinear, to the input size).
pub fn compute_norm_stats(
    backbone: &dyn Backbone,
    params: &NormStatsParams,
    negatives: &[PathBuf],
) -> Result<NormStats, FeaturesError> {
    if negatives.len() < 2 {
        return Err(FeaturesError::Stats(format!(
            "need at least 2 negative images for a standard deviation, got {}",
            negatives.len()
        )));
    }
    if params.batch == 0 || params.layers.is_empty() {
        return Err(FeaturesError::Input("batch must be ≥ 1 and at least one layer given".into()));
    }
    let meta = expected_meta(backbone, params, negatives)?;
    let taps: Vec<&str> = params.layers.iter().map(String::as_str).collect();
    let size = params.input_size;
    let mut accs: Vec<Option<(StdAccumulator, [usize; 3])>> = vec![None; taps.len()];
    let mut bar = Counter { sink: &params.progress, stage: "negatives", done: 0, total: negatives.len() as u64 };
    tracing::info!(negatives = negatives.len(), layers = ?taps, "computing normalization statistics");
    for chunk in negatives.chunks(params.batch) {
        let crops = load_whole(chunk, size)?;
        let refs: Vec<&[u8]> = crops.iter().map(Vec::as_slice).collect();
        let outs = forward_crops(backbone, params.preprocess, &refs, size, &taps)?;
        for (acc, out) in accs.iter_mut().zip(&outs) {
            let [_, c, h, w] = out.shape;
            let (acc, _) = acc.get_or_insert_with(|| (StdAccumulator::new(c * h * w), [c, h, w]));
            for i in 0..chunk.len() {
                acc.push(out.image(i))?;
            }
        }
        bar.advance(chunk.len() as u64);
    }
    let mut layers = Vec::new();
    for (name, acc) in taps.iter().zip(accs) {
        let (acc, shape) = acc.ok_or_else(|| FeaturesError::Stats("no negatives processed".into()))?;
        let l = LayerStd { name: name.to_string(), shape, std: acc.std()? };
        let dead = l.dead_units();
        if dead > 0 {
            tracing::warn!(layer = name, dead, "units with (near-)zero std on the negatives; their values are clamped");
        }
        layers.push(l);
    }
    NormStats::new(meta, layers)
}

/// Load `paths` and resize each whole image to `size × size` (parallel, order kept).
pub(crate) fn load_whole(paths: &[PathBuf], size: usize) -> Result<Vec<Vec<u8>>, FeaturesError> {
    use rayon::prelude::*;
    paths
        .par_iter()
        .map(|p| {
            let img = load_rgb(p)?;
            let whole = [0.0, 0.0, f64::from(img.width), f64::from(img.height)];
            crop_resize(&img, whole, size)
        })
        .collect()
}

/// Reuse the statistics at `path` if they fit `params`/`negatives`, else compute and save them.
pub fn load_or_compute_norm_stats(
    backbone: &dyn Backbone,
    params: &NormStatsParams,
    negatives: &[PathBuf],
    path: &Path,
) -> Result<NormStats, FeaturesError> {
    if path.exists() {
        let want = expected_meta(backbone, params, negatives)?;
        match NormStats::load(path) {
            Ok(s) if *s.meta() == want => {
                tracing::info!(path = %path.display(), "reusing normalization statistics");
                return Ok(s);
            }
            Ok(_) => tracing::warn!(path = %path.display(), "statistics file is for other inputs; recomputing"),
            Err(e) => tracing::warn!("{e}; recomputing"),
        }
    }
    let stats = compute_norm_stats(backbone, params, negatives)?;
    stats.save(path)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welford_matches_the_two_pass_formula() {
        let data = [[1.0f32, 10.0, 0.0], [3.0, 10.0, 0.0], [8.0, 10.0, 0.0], [-2.0, 10.0, 0.0]];
        let mut acc = StdAccumulator::new(3);
        assert!(acc.std().is_err());
        for d in &data {
            acc.push(d).unwrap();
        }
        let std = acc.std().unwrap();
        let xs = [1.0f64, 3.0, 8.0, -2.0];
        let mean = xs.iter().sum::<f64>() / 4.0;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 3.0;
        assert!((f64::from(std[0]) - var.sqrt()).abs() < 1e-6);
        assert_eq!(std[1], 0.0);
        assert!(acc.push(&[1.0]).is_err());
    }

    #[test]
    fn welford_is_stable_with_a_large_offset() {
        let mut acc = StdAccumulator::new(1);
        for i in 0..1000 {
            acc.push(&[1.0e6 + (i % 2) as f32]).unwrap();
        }
        let s = f64::from(acc.std().unwrap()[0]);
        assert!((s - 0.50025).abs() < 1e-3, "{s}");
    }

    #[test]
    fn normalization_guards_dead_units_and_zeroes_negatives() {
        let l = LayerStd { name: "x".into(), shape: [1, 1, 4], std: vec![2.0, 0.0, 4.0, 2.0] };
        assert_eq!(l.dead_units(), 1);
        let d = l.divisors();
        let eps = 1e-6 * 2.0;
        assert!((d[0] - (2.0 + eps as f32)).abs() < 1e-9);
        let mut v = vec![4.0, 1.0, -3.0, 0.0];
        normalize_in_place(&mut v, &d);
        assert!((v[0] - 2.0).abs() < 1e-5);
        assert_eq!(v[1], NORMALIZED_MAX, "dead unit clamped, not infinite");
        assert_eq!(v[2], 0.0);
        assert_eq!(v[3], 0.0);
    }

    #[test]
    fn stats_save_load_round_trip_and_reject_junk() {
        let meta = NormStatsMeta {
            backbone: "b".into(),
            weights_digest: "w".into(),
            preprocess: "caffe".into(),
            input_size: 16,
            layers: vec!["a".into(), "b".into()],
            num_negatives: 3,
            negatives_digest: "n".into(),
        };
        let layers = vec![
            LayerStd { name: "a".into(), shape: [2, 1, 2], std: vec![1.0, 2.0, 3.0, 4.5] },
            LayerStd { name: "b".into(), shape: [1, 1, 1], std: vec![0.25] },
        ];
        let stats = NormStats::new(meta, layers).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.safetensors");
        stats.save(&path).unwrap();
        assert!(sidecar_path(&path).exists());
        let back = NormStats::load(&path).unwrap();
        assert_eq!(back, stats);
        std::fs::write(&path, b"junk").unwrap();
        let e = NormStats::load(&path).unwrap_err().to_string();
        assert!(e.contains("s.safetensors"), "{e}");
    }

    #[test]
    fn stats_and_raw_map_files_are_byte_identical_for_the_same_content() {
        let meta = NormStatsMeta {
            backbone: "b".into(),
            weights_digest: "w".into(),
            preprocess: "caffe".into(),
            input_size: 16,
            layers: vec!["z".into(), "a".into()],
            num_negatives: 3,
            negatives_digest: "n".into(),
        };
        let layers = vec![
            LayerStd { name: "z".into(), shape: [1, 1, 2], std: vec![1.0, 2.0] },
            LayerStd { name: "a".into(), shape: [1, 1, 1], std: vec![0.25] },
        ];
        let stats = NormStats::new(meta, layers).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("s0.safetensors");
        stats.save(&first).unwrap();
        let want = std::fs::read(&first).unwrap();
        for i in 1..12 {
            let p = dir.path().join(format!("s{i}.safetensors"));
            stats.save(&p).unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), want, "save #{i}");
        }
        let maps = vec![
            crate::RawMaps { layer: "conv5_3".into(), shape: [1, 2, 1, 1], values: vec![1.0, -2.0] },
            crate::RawMaps { layer: "conv4_3".into(), shape: [1, 1, 1, 2], values: vec![0.5, 3.0] },
        ];
        let (a, b) = (dir.path().join("r0.safetensors"), dir.path().join("r1.safetensors"));
        crate::write_raw_maps(&a, &maps).unwrap();
        crate::write_raw_maps(&b, &maps).unwrap();
        let bytes = std::fs::read(&a).unwrap();
        assert_eq!(bytes, std::fs::read(&b).unwrap());
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("conv4_3").unwrap().shape(), [1, 1, 1, 2]);
    }
}
