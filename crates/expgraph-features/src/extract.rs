//! The extraction driver: images + boxes → normalized, ReLU'd maps of both views → feature cache.

use std::path::{Path, PathBuf};
use std::time::Instant;

use expgraph_backbone::{Backbone, Preprocess};
use expgraph_cache::{CacheManifest, CacheWriter, ImageEntry, LayerInfo, StorageDtype, StorageInfo, View};
use rayon::prelude::*;

use crate::crop::{clip_box, crop_resize, image_size, load_rgb, mirror};
use crate::forward::forward_crops;
use crate::progress::Counter;
use crate::stats::{normalize_in_place, NormStats};
use crate::FeaturesError;
use expgraph_io::ProgressSink;

/// One object to extract: an image file and an optional object box.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectImage {
    /// Stable identifier (file name or data set id).
    pub id: String,
    /// The image file.
    pub path: PathBuf,
    /// `[x0, y0, x1, y1]` in source pixels (0-based, `x1`/`y1` exclusive); `None` = whole image.
    pub bbox: Option<[f64; 4]>,
}

/// What the second view is (spec §7 #1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlipMode {
    /// A really mirrored crop (the intended behaviour; default).
    #[default]
    Mirror,
    /// The reference code's bug: the "flipped" maps equal the original ones.
    ReferenceNoop,
    /// No second view.
    None,
}

impl FlipMode {
    /// Parse `real`/`mirror`, `noop` or `none`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "real" | "mirror" => Some(Self::Mirror),
            "noop" | "reference" => Some(Self::ReferenceNoop),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

/// Settings of an extraction (builder); [`ExtractParams::check`] validates them against a backbone.
#[derive(Debug, Clone)]
pub struct ExtractParams {
    layers: Vec<String>,
    preprocess: Preprocess,
    input_size: usize,
    batch: usize,
    storage: StorageDtype,
    shard_size: usize,
    flip: FlipMode,
    overwrite: bool,
    progress: ProgressSink,
}

impl ExtractParams {
    /// The VGG-16 layers of the paper (conv4_2, conv4_3, conv5_2, conv5_3), Caffe preprocessing,
    /// 224×224 input, batches of 4 crops, f16 storage, shards of 32, real flips.
    pub fn new() -> Self {
        Self {
            layers: ["conv4_2", "conv4_3", "conv5_2", "conv5_3"].map(String::from).to_vec(),
            preprocess: Preprocess::Caffe,
            input_size: 224,
            batch: 4,
            storage: StorageDtype::F16,
            shard_size: StorageInfo::DEFAULT_SHARD_SIZE,
            flip: FlipMode::Mirror,
            overwrite: false,
            progress: ProgressSink::none(),
        }
    }
    /// Layers (taps) to store, shallow to deep.
    pub fn layers(mut self, layers: Vec<String>) -> Self {
        self.layers = layers;
        self
    }
    /// Preprocessing preset (must match the weights).
    pub fn preprocess(mut self, p: Preprocess) -> Self {
        self.preprocess = p;
        self
    }
    /// Side of the square network input.
    pub fn input_size(mut self, n: usize) -> Self {
        self.input_size = n;
        self
    }
    /// Objects per forward pass (each also runs its flipped view).
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n;
        self
    }
    /// Storage dtype of the cache.
    pub fn storage(mut self, d: StorageDtype) -> Self {
        self.storage = d;
        self
    }
    /// Images per shard file.
    pub fn shard_size(mut self, n: usize) -> Self {
        self.shard_size = n;
        self
    }
    /// What the second view is.
    pub fn flip(mut self, f: FlipMode) -> Self {
        self.flip = f;
        self
    }
    /// Replace a cache with another key in the output folder.
    pub fn overwrite(mut self, yes: bool) -> Self {
        self.overwrite = yes;
        self
    }
    /// Where progress goes (stage `extract`, one step per image).
    pub fn progress(mut self, sink: ProgressSink) -> Self {
        self.progress = sink;
        self
    }

    /// Validate against `backbone` and `stats`: layers exist and are unique, sizes positive,
    /// statistics computed for the same weights, preprocessing, input size and layers.
    pub fn check<'a>(self, backbone: &'a dyn Backbone, stats: &'a NormStats) -> Result<Extractor<'a>, FeaturesError> {
        if self.batch == 0 || self.shard_size == 0 || self.input_size == 0 {
            return Err(FeaturesError::Input("batch, shard size and input size must be ≥ 1".into()));
        }
        if self.layers.is_empty() {
            return Err(FeaturesError::Input("no layers requested".into()));
        }
        let mut layers = Vec::new();
        for name in &self.layers {
            if layers.iter().any(|l: &LayerInfo| &l.name == name) {
                return Err(FeaturesError::Input(format!("layer {name} requested twice")));
            }
            let tap = backbone.tap(name).ok_or_else(|| {
                let known = expgraph_backbone::compact_tap_names(backbone.taps().iter().map(|t| t.name.as_str()));
                FeaturesError::Input(format!("backbone {} has no layer {name} (it has {known})", backbone.name()))
            })?;
            let side = backbone.tap_map_size(name, self.input_size)?;
            layers.push(LayerInfo {
                name: name.clone(),
                channels: tap.channels,
                height: side,
                width: side,
                geometry: tap.geometry,
            });
        }
        let m = stats.meta();
        if m.weights_digest != backbone.weights_digest()
            || m.preprocess != self.preprocess.name()
            || m.input_size != self.input_size
        {
            return Err(FeaturesError::Stats(
                "statistics were computed for other weights, preprocessing or input size".into(),
            ));
        }
        let mut divisors = Vec::new();
        for l in &layers {
            let s = stats
                .layer(&l.name)
                .ok_or_else(|| FeaturesError::Stats(format!("no statistics for layer {}", l.name)))?;
            if s.shape != [l.channels, l.height, l.width] {
                return Err(FeaturesError::Stats(format!(
                    "layer {}: statistics shape {:?}, maps are {}x{}x{}",
                    l.name, s.shape, l.channels, l.height, l.width
                )));
            }
            divisors.push(s.divisors());
        }
        Ok(Extractor { params: self, backbone, stats, layers, divisors })
    }
}

impl Default for ExtractParams {
    fn default() -> Self {
        Self::new()
    }
}

/// A checked extraction, ready to [`run`](Extractor::run).
pub struct Extractor<'a> {
    params: ExtractParams,
    backbone: &'a dyn Backbone,
    stats: &'a NormStats,
    layers: Vec<LayerInfo>,
    divisors: Vec<Vec<f32>>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtractReport {
    /// The cache folder.
    pub dir: PathBuf,
    /// Cache key.
    pub key: String,
    /// Objects in the cache.
    pub images: usize,
    /// Objects computed in this run (the others were already in complete shards).
    pub computed: usize,
    /// Wall time per computed object (both views), in milliseconds.
    pub ms_per_image: f64,
}

impl Extractor<'_> {
    /// The cache manifest these objects would produce (reads only image headers).
    pub fn manifest(&self, objects: &[ObjectImage]) -> Result<CacheManifest, FeaturesError> {
        if objects.is_empty() {
            return Err(FeaturesError::Input("no images to extract".into()));
        }
        let images = objects
            .iter()
            .map(|o| {
                let (w, h) = image_size(&o.path)?;
                let bbox = clip_box(&o.id, o.bbox.unwrap_or([0.0, 0.0, f64::from(w), f64::from(h)]), w, h)?;
                Ok(ImageEntry { id: o.id.clone(), path: o.path.to_string_lossy().to_string(), bbox })
            })
            .collect::<Result<Vec<_>, FeaturesError>>()?;
        let views = match self.params.flip {
            FlipMode::None => vec![View::Original],
            _ => vec![View::Original, View::Flipped],
        };
        Ok(CacheManifest {
            format_version: CacheManifest::FORMAT_VERSION,
            key: String::new(),
            backbone: self.backbone.name().to_string(),
            preprocess: self.params.preprocess.name().to_string(),
            input_size: self.params.input_size,
            layers: self.layers.clone(),
            images,
            views,
        })
    }

    /// Extract every object into the cache at `out`, resuming an interrupted run.
    pub fn run(&self, objects: &[ObjectImage], out: &Path) -> Result<ExtractReport, FeaturesError> {
        let mut manifest = self.manifest(objects)?;
        if self.params.flip == FlipMode::ReferenceNoop {
            manifest.preprocess.push_str("+noop-flip"); // a different cache key
        }
        let storage = StorageInfo {
            dtype: self.params.storage,
            shard_size: self.params.shard_size,
            weights_digest: self.backbone.weights_digest().to_string(),
            norm_stats_digest: self.stats.digest().to_string(),
        };
        let mut writer = CacheWriter::create(out, manifest, storage, self.params.overwrite)?;
        let pending = writer.pending_shards();
        let todo: usize = pending.iter().map(|s| writer.shard_range(*s).len()).sum();
        tracing::info!(
            out = %out.display(), images = objects.len(), to_compute = todo,
            layers = ?self.params.layers, "extracting features"
        );
        let mut bar = Counter { sink: &self.params.progress, stage: "extract", done: 0, total: todo as u64 };
        bar.advance(0);
        let start = Instant::now();
        for shard in pending {
            let range = writer.shard_range(shard);
            let entries = &writer.manifest().images[range.clone()];
            let maps = self.shard_maps(entries, &mut bar)?;
            for (li, layer) in self.layers.iter().enumerate() {
                for (vi, view) in writer.manifest().views.clone().into_iter().enumerate() {
                    writer.write_shard(shard, &layer.name, view, &maps[li][vi])?;
                }
            }
            tracing::debug!(shard, "shard written");
        }
        let elapsed = start.elapsed().as_secs_f64();
        let key = writer.key().to_string();
        let dir = writer.finish()?;
        let ms = if todo > 0 { elapsed * 1000.0 / todo as f64 } else { 0.0 };
        tracing::info!(computed = todo, ms_per_image = format!("{ms:.1}"), "feature cache ready");
        Ok(ExtractReport { dir, key, images: objects.len(), computed: todo, ms_per_image: ms })
    }

    /// Normalized maps of one shard: `[layer][view] → [n, C, H, W]`.
    fn shard_maps(&self, entries: &[ImageEntry], bar: &mut Counter<'_>) -> Result<Vec<Vec<Vec<f32>>>, FeaturesError> {
        let views = if self.params.flip == FlipMode::None { 1 } else { 2 };
        let mut maps: Vec<Vec<Vec<f32>>> =
            self.layers.iter().map(|l| vec![Vec::with_capacity(entries.len() * l.image_len()); views]).collect();
        let taps: Vec<&str> = self.layers.iter().map(|l| l.name.as_str()).collect();
        let size = self.params.input_size;
        for chunk in entries.chunks(self.params.batch) {
            let crops: Vec<Vec<u8>> = chunk
                .par_iter()
                .map(|e| {
                    let path = Path::new(&e.path);
                    crop_resize(&load_rgb(path)?, e.bbox, size)
                })
                .collect::<Result<_, FeaturesError>>()?;
            let mut inputs: Vec<Vec<u8>> = crops.clone();
            if self.params.flip == FlipMode::Mirror {
                inputs.extend(crops.iter().map(|c| mirror(c, size)));
            }
            let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
            let outs = forward_crops(self.backbone, self.params.preprocess, &refs, size, &taps)?;
            for (li, out) in outs.iter().enumerate() {
                for (vi, view_maps) in maps[li].iter_mut().enumerate() {
                    for i in 0..chunk.len() {
                        // ReferenceNoop reuses the original forward pass for the "flipped" view.
                        let src = if self.params.flip == FlipMode::Mirror { vi * chunk.len() + i } else { i };
                        let mut values = out.image(src).to_vec();
                        normalize_in_place(&mut values, &self.divisors[li]);
                        view_maps.extend_from_slice(&values);
                    }
                }
            }
            bar.advance(chunk.len() as u64);
        }
        Ok(maps)
    }
}
