//! The extraction driver: images + boxes → normalized, ReLU'd maps of both views → feature cache.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use expgraph_backbone::{Backbone, Precision, Preprocess};
use expgraph_cache::{CacheManifest, CachePart, CacheWriter, ImageEntry, LayerInfo, StorageDtype, StorageInfo, View};
use rayon::prelude::*;

use crate::crop::{clip_box, crop_resize, image_size, load_rgb, mirror};
use crate::forward::{forward_crops_normalized_f16, forward_crops_timed, ForwardTimes, TapOutput};
use crate::progress::Counter;
use crate::stats::{normalize_value, NormStats};
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
    batch: BatchSize,
    pipelined: bool,
    storage: StorageDtype,
    shard_size: usize,
    flip: FlipMode,
    overwrite: bool,
    part: Option<CachePart>,
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
            batch: BatchSize::Auto,
            pipelined: true,
            storage: StorageDtype::F16,
            shard_size: StorageInfo::DEFAULT_SHARD_SIZE,
            flip: FlipMode::Mirror,
            overwrite: false,
            part: None,
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
    /// Objects per forward pass (each also runs its flipped view): [`BatchSize::Fixed`]`(n)`.
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = BatchSize::Fixed(n);
        self
    }
    /// Objects per forward pass, fixed or [`BatchSize::Auto`] (the default).
    pub fn batch_size(mut self, b: BatchSize) -> Self {
        self.batch = b;
        self
    }
    /// Overlap decoding, the forward pass and shard writing on separate threads through bounded
    /// queues (default); `false` runs them one after the other, as extraction did before.
    /// The cache is the same either way.
    pub fn pipelined(mut self, yes: bool) -> Self {
        self.pipelined = yes;
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
    /// Extract only part `part` of the cache (one job of a sharded extraction, see
    /// [`CachePart`]): its shard files and its record `parts/part-I-of-N.json`, which
    /// [`expgraph_cache::merge_parts`] joins with the other parts' into the cache a single run
    /// would write. Not with [`overwrite`](Self::overwrite): a part never removes files.
    pub fn part(mut self, part: Option<CachePart>) -> Self {
        self.part = part;
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
        if self.batch == BatchSize::Fixed(0) || self.shard_size == 0 || self.input_size == 0 {
            return Err(FeaturesError::Input("batch, shard size and input size must be ≥ 1".into()));
        }
        if self.part.is_some() && self.overwrite {
            return Err(FeaturesError::Input(
                "a shard of a sharded extraction never removes files: overwrite is not allowed with a part".into(),
            ));
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
        // On a GPU, with f16 storage, the maps are normalized there and come back as f16.
        let device = backbone.device();
        let device_divisors = if !device.is_cpu() && self.storage == StorageDtype::F16 {
            let tensors = layers
                .iter()
                .zip(&divisors)
                .map(|(l, d)| Tensor::from_slice(d, (l.channels, l.height, l.width), device))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Some(tensors)
        } else {
            None
        };
        Ok(Extractor { params: self, backbone, stats, layers, divisors, device_divisors })
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
    /// `divisors` on the backbone's device, when the normalization runs there.
    device_divisors: Option<Vec<Tensor>>,
}

/// Objects per forward pass: a fixed number, or chosen from the device (see
/// [`BatchSize::resolve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchSize {
    /// CPU: [`BatchSize::CPU_DEFAULT`]; GPU: as many objects as fit in half of the free device
    /// memory (an estimate per crop), at most [`BatchSize::GPU_MAX`].
    #[default]
    Auto,
    /// Exactly this many objects (≥ 1).
    Fixed(usize),
}

impl BatchSize {
    /// [`BatchSize::Auto`] on a CPU: the CPU backbones run the images of a batch one at a time,
    /// so a small batch only bounds memory.
    pub const CPU_DEFAULT: usize = 4;
    /// The largest automatic batch on a GPU (objects).
    pub const GPU_MAX: usize = 128;
    /// Device memory one crop is assumed to need, per input pixel, at 4 bytes a value: the
    /// largest working set of the backbones' layers (VGG-16's conv1_2 im2col buffer, 9·64 values
    /// per pixel, with its input and output) rounded up generously.
    pub const DEVICE_BYTES_PER_PIXEL: u64 = 4 * 1200;

    /// Objects per forward pass on `device` for square inputs of side `input_size` and `views`
    /// crops per object: a fixed size as is; `Auto` is [`BatchSize::CPU_DEFAULT`] on a CPU and,
    /// on a GPU, as many objects as fit in half of the free memory at
    /// [`BatchSize::DEVICE_BYTES_PER_PIXEL`], between 1 and [`BatchSize::GPU_MAX`].
    pub fn resolve(self, device: &Device, input_size: usize, views: usize) -> usize {
        match self {
            BatchSize::Fixed(n) => n.max(1),
            BatchSize::Auto => match expgraph_backbone::device_memory(device) {
                None => Self::CPU_DEFAULT,
                Some((free, _)) => {
                    let per_object = Self::DEVICE_BYTES_PER_PIXEL * (input_size * input_size * views.max(1)) as u64;
                    usize::try_from(free / 2 / per_object.max(1)).unwrap_or(usize::MAX).clamp(1, Self::GPU_MAX)
                }
            },
        }
    }
}

impl std::fmt::Display for BatchSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchSize::Auto => f.write_str("auto"),
            BatchSize::Fixed(n) => write!(f, "{n}"),
        }
    }
}

impl serde::Serialize for BatchSize {
    /// As on the command line: `"auto"` or the count.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BatchSize::Auto => s.serialize_str("auto"),
            BatchSize::Fixed(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl std::str::FromStr for BatchSize {
    type Err = String;
    /// `auto` or a count ≥ 1.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" => Ok(BatchSize::Auto),
            n => match n.parse::<usize>() {
                Ok(0) => Err("batch size must be at least 1 (or `auto`)".into()),
                Ok(n) => Ok(BatchSize::Fixed(n)),
                Err(_) => Err(format!("expected `auto` or a count, got {s:?}")),
            },
        }
    }
}

/// Where the time of an extraction went, in seconds of wall time per stage (stages overlap in
/// the pipelined extractor, so they can add up to more than `wall_s`), and peak memory.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ExtractTiming {
    /// The whole run (cache creation to finish).
    pub wall_s: f64,
    /// Image decode, crop, resize and mirroring (CPU threads; summed per batch).
    pub decode_s: f64,
    /// Input normalization and host → device copy.
    pub upload_s: f64,
    /// Forward passes (the device synchronized at the end of each).
    pub forward_s: f64,
    /// Device → host copy of the tapped maps.
    pub download_s: f64,
    /// Per-unit normalization and ReLU on the host.
    pub normalize_s: f64,
    /// Shard encoding (f16/u8), checksums and file writes.
    pub write_s: f64,
    /// Time the forward stage waited for decoded batches (≈ 0 when decoding keeps up).
    pub wait_decode_s: f64,
    /// Peak resident memory of the process, bytes (Linux `VmHWM`), when known.
    pub peak_rss_bytes: Option<u64>,
    /// Peak device memory in use (total − free, sampled after each batch), bytes, on a GPU.
    pub peak_device_bytes: Option<u64>,
}

impl ExtractTiming {
    /// The stages' seconds by name, in pipeline order (`decode`, `upload`, `forward`,
    /// `download`, `normalize`, `write`, `wait_decode`), for reports.
    pub fn stages(&self) -> [(&'static str, f64); 7] {
        [
            ("decode", self.decode_s),
            ("upload", self.upload_s),
            ("forward", self.forward_s),
            ("download", self.download_s),
            ("normalize", self.normalize_s),
            ("write", self.write_s),
            ("wait_decode", self.wait_decode_s),
        ]
    }
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
    /// Objects per forward pass that were used (the resolved [`BatchSize`]).
    pub batch: usize,
    /// The time split and peak memory.
    pub timing: ExtractTiming,
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
        // The feature space: preprocessing, plus what else changes the maps (a different cache key).
        let mut preprocess = self.params.preprocess.name().to_string();
        if self.params.flip == FlipMode::ReferenceNoop {
            preprocess.push_str("+noop-flip");
        }
        if self.backbone.precision() != Precision::F32 {
            preprocess.push('+');
            preprocess.push_str(self.backbone.precision().name());
        }
        Ok(CacheManifest {
            format_version: CacheManifest::FORMAT_VERSION,
            key: String::new(),
            backbone: self.backbone.name().to_string(),
            preprocess,
            input_size: self.params.input_size,
            layers: self.layers.clone(),
            images,
            views,
        })
    }

    /// Objects per forward pass this extraction uses ([`BatchSize::resolve`] on the backbone's
    /// device).
    pub fn batch(&self) -> usize {
        let views = if self.params.flip == FlipMode::Mirror { 2 } else { 1 };
        self.params.batch.resolve(self.backbone.device(), self.params.input_size, views)
    }

    /// Extract every object into the cache at `out`, resuming an interrupted run.
    ///
    /// Pipelined (the default): a thread decodes, crops, resizes and mirrors the next batches on
    /// the rayon pool while this one runs the forward pass, and another encodes and writes
    /// finished shards; bounded queues ([`QUEUE_DEPTH`] batches, shards) keep memory flat. The
    /// cache does not depend on the batch size or on pipelining.
    pub fn run(&self, objects: &[ObjectImage], out: &Path) -> Result<ExtractReport, FeaturesError> {
        let manifest = self.manifest(objects)?;
        let storage = StorageInfo {
            dtype: self.params.storage,
            shard_size: self.params.shard_size,
            weights_digest: self.backbone.weights_digest().to_string(),
            norm_stats_digest: self.stats.digest().to_string(),
        };
        let start = Instant::now();
        let mut writer = match self.params.part {
            None => CacheWriter::create(out, manifest, storage, self.params.overwrite)?,
            Some(part) => CacheWriter::create_part(out, manifest, storage, part)?,
        };
        // Every object still to compute, in cache order, with its shard.
        let jobs: Vec<(usize, ImageEntry)> = writer
            .pending_shards()
            .into_iter()
            .flat_map(|shard| writer.shard_range(shard).map(move |i| (shard, i)))
            .map(|(shard, i)| (shard, writer.manifest().images[i].clone()))
            .collect();
        let todo = jobs.len();
        let batch = self.batch();
        tracing::info!(
            out = %out.display(), images = objects.len(), part = ?self.params.part, to_compute = todo, batch,
            pipelined = self.params.pipelined, device = ?self.backbone.device().location(),
            layers = ?self.params.layers, "extracting features"
        );
        let mut bar = Counter { sink: &self.params.progress, stage: "extract", done: 0, total: todo as u64 };
        bar.advance(0);
        let mut timing = ExtractTiming::default();
        let mut shards = ShardAssembler::new(&writer, &self.layers, self.views());
        let batches: Vec<&[(usize, ImageEntry)]> = jobs.chunks(batch).collect();
        if self.params.pipelined {
            self.run_pipelined(&batches, &mut shards, &mut writer, &mut bar, &mut timing)?;
        } else {
            for jobs in &batches {
                let decoded = self.decode(jobs)?;
                timing.decode_s += decoded.seconds;
                for done in self.forward(&decoded, jobs, &mut shards, &mut timing)? {
                    timing.write_s += write_shard(&mut writer, done)?;
                }
                bar.advance(jobs.len() as u64);
                self.sample_device_memory(&mut timing);
            }
        }
        shards.check_drained()?;
        let key = writer.key().to_string();
        let dir = writer.finish()?;
        timing.wall_s = start.elapsed().as_secs_f64();
        timing.peak_rss_bytes = expgraph_io::peak_rss_bytes();
        let ms = if todo > 0 { timing.wall_s * 1000.0 / todo as f64 } else { 0.0 };
        tracing::info!(computed = todo, ms_per_image = format!("{ms:.1}"), ?timing, "feature cache ready");
        Ok(ExtractReport { dir, key, images: objects.len(), computed: todo, ms_per_image: ms, batch, timing })
    }

    /// Decode on a producer thread and write on a writer thread while this thread runs the
    /// forward passes; the first error of any stage stops all three and is returned.
    fn run_pipelined(
        &self,
        batches: &[&[(usize, ImageEntry)]],
        shards: &mut ShardAssembler,
        writer: &mut CacheWriter,
        bar: &mut Counter<'_>,
        timing: &mut ExtractTiming,
    ) -> Result<(), FeaturesError> {
        std::thread::scope(|scope| {
            let (decoded_tx, decoded_rx) = mpsc::sync_channel::<Result<DecodedBatch, FeaturesError>>(QUEUE_DEPTH);
            let (shard_tx, shard_rx) = mpsc::sync_channel::<FinishedShard>(QUEUE_DEPTH);
            let producer = scope.spawn(move || {
                for jobs in batches {
                    let decoded = self.decode(jobs);
                    let failed = decoded.is_err();
                    // A closed queue means the forward stage stopped: stop too.
                    if decoded_tx.send(decoded).is_err() || failed {
                        break;
                    }
                }
            });
            let writing = scope.spawn(move || -> Result<f64, FeaturesError> {
                let mut seconds = 0.0;
                for shard in shard_rx {
                    seconds += write_shard(writer, shard)?;
                }
                Ok(seconds)
            });
            let forwarding = (|| -> Result<(), FeaturesError> {
                for jobs in batches {
                    let clock = Instant::now();
                    let Ok(decoded) = decoded_rx.recv() else {
                        return Err(FeaturesError::Input("the image decoding thread stopped early".into()));
                    };
                    timing.wait_decode_s += clock.elapsed().as_secs_f64();
                    let decoded = decoded?;
                    timing.decode_s += decoded.seconds;
                    for done in self.forward(&decoded, jobs, shards, timing)? {
                        if shard_tx.send(done).is_err() {
                            return Ok(()); // the writer failed: its error is reported below
                        }
                    }
                    bar.advance(jobs.len() as u64);
                    self.sample_device_memory(timing);
                }
                Ok(())
            })();
            drop(decoded_rx);
            drop(shard_tx);
            let written = writing.join().map_err(|_| FeaturesError::Input("the shard writer panicked".into()))?;
            producer.join().map_err(|_| FeaturesError::Input("the image decoder panicked".into()))?;
            forwarding?;
            timing.write_s += written?;
            Ok(())
        })
    }

    /// The views stored per object.
    fn views(&self) -> usize {
        if self.params.flip == FlipMode::None {
            1
        } else {
            2
        }
    }

    /// Decode, crop and resize a batch's objects on the rayon pool; mirrored copies follow the
    /// originals (with [`FlipMode::Mirror`]).
    fn decode(&self, jobs: &[(usize, ImageEntry)]) -> Result<DecodedBatch, FeaturesError> {
        let clock = Instant::now();
        let size = self.params.input_size;
        let mut crops: Vec<Vec<u8>> = jobs
            .par_iter()
            .map(|(_, e)| crop_resize(&load_rgb(Path::new(&e.path))?, e.bbox, size))
            .collect::<Result<_, FeaturesError>>()?;
        if self.params.flip == FlipMode::Mirror {
            let mirrored: Vec<Vec<u8>> = crops.par_iter().map(|c| mirror(c, size)).collect();
            crops.extend(mirrored);
        }
        Ok(DecodedBatch { crops, seconds: clock.elapsed().as_secs_f64() })
    }

    /// Forward pass of a decoded batch; its objects' normalized maps go into `shards`, which
    /// returns the shards this batch completed.
    fn forward(
        &self,
        batch: &DecodedBatch,
        jobs: &[(usize, ImageEntry)],
        shards: &mut ShardAssembler,
        timing: &mut ExtractTiming,
    ) -> Result<Vec<FinishedShard>, FeaturesError> {
        let taps: Vec<&str> = self.layers.iter().map(|l| l.name.as_str()).collect();
        let refs: Vec<&[u8]> = batch.crops.iter().map(Vec::as_slice).collect();
        let mut times = ForwardTimes::default();
        let (preprocess, size) = (self.params.preprocess, self.params.input_size);
        let outs = match &self.device_divisors {
            None => forward_crops_timed(self.backbone, preprocess, &refs, size, &taps, &mut times)?,
            Some(divisors) => {
                forward_crops_normalized_f16(self.backbone, preprocess, &refs, size, &taps, divisors, &mut times)?
            }
        };
        timing.upload_s += times.upload_s;
        timing.forward_s += times.forward_s;
        timing.download_s += times.download_s;
        let clock = Instant::now();
        // ReferenceNoop reuses the original forward pass for the "flipped" view.
        let mirrored = self.params.flip == FlipMode::Mirror;
        let shard_of: Vec<usize> = jobs.iter().map(|(shard, _)| *shard).collect();
        let divisors = if self.device_divisors.is_some() { None } else { Some(self.divisors.as_slice()) };
        let done = shards.push_batch(&shard_of, &outs, divisors, mirrored)?;
        timing.normalize_s += clock.elapsed().as_secs_f64();
        Ok(done)
    }

    /// Record the device memory in use (GPU only).
    fn sample_device_memory(&self, timing: &mut ExtractTiming) {
        if let Some((free, total)) = expgraph_backbone::device_memory(self.backbone.device()) {
            let used = total.saturating_sub(free);
            timing.peak_device_bytes = Some(timing.peak_device_bytes.unwrap_or(0).max(used));
        }
    }
}

/// Batches decoded ahead of the forward pass, and finished shards queued for the writer.
pub const QUEUE_DEPTH: usize = 2;

/// A batch's crops, ready for the forward pass.
struct DecodedBatch {
    /// The objects' crops, then (with real mirroring) their mirrored copies.
    crops: Vec<Vec<u8>>,
    /// Wall time of decoding this batch.
    seconds: f64,
}

/// One layer of a finished shard: its name and each view's `[n, C, H, W]` maps.
type ShardLayer = (String, Vec<(View, Vec<f32>)>);

/// A shard whose objects are all computed.
struct FinishedShard {
    shard: usize,
    maps: Vec<ShardLayer>,
}

/// Gathers objects, which arrive in cache order, into whole shards, normalizing their maps on
/// the way in.
struct ShardAssembler {
    layers: Vec<(String, usize)>,
    views: Vec<View>,
    /// Pending shards and their object counts, in order.
    expected: std::collections::VecDeque<(usize, usize)>,
    /// The open shard: its objects so far, `[layer][view]`.
    open: Vec<Vec<Vec<f32>>>,
    count: usize,
}

impl ShardAssembler {
    fn new(writer: &CacheWriter, layers: &[LayerInfo], views: usize) -> Self {
        let expected = writer.pending_shards().into_iter().map(|s| (s, writer.shard_range(s).len())).collect();
        let views = writer.manifest().views.iter().copied().take(views).collect();
        Self {
            layers: layers.iter().map(|l| (l.name.clone(), l.image_len())).collect(),
            views,
            expected,
            open: Vec::new(),
            count: 0,
        }
    }

    /// Add a batch's objects (object `i` belongs to shard `shard_of[i]`; `outs` are the batch's
    /// tap outputs, the mirrored crops after the originals when `mirrored`), normalized with
    /// each layer's `divisors` (`None`: already normalized on the device); the layer/view
    /// buffers fill in parallel. Returns the shards the
    /// batch completed.
    fn push_batch(
        &mut self,
        shard_of: &[usize],
        outs: &[TapOutput],
        divisors: Option<&[Vec<f32>]>,
        mirrored: bool,
    ) -> Result<Vec<FinishedShard>, FeaturesError> {
        let n = shard_of.len();
        let mut finished = Vec::new();
        let mut first = 0;
        while first < n {
            let Some(&(shard, size)) = self.expected.front() else {
                return Err(FeaturesError::Input(format!(
                    "object of shard {} arrived after the last shard",
                    shard_of[first]
                )));
            };
            let take = (size - self.count).min(n - first);
            if let Some(other) = shard_of[first..first + take].iter().find(|s| **s != shard) {
                return Err(FeaturesError::Input(format!(
                    "object of shard {other} arrived while shard {shard} is open"
                )));
            }
            if self.count == 0 {
                self.open = self
                    .layers
                    .iter()
                    .map(|(_, len)| self.views.iter().map(|_| Vec::with_capacity(size * len)).collect())
                    .collect();
            }
            let objects = first..first + take;
            let mut buffers: Vec<(usize, usize, &mut Vec<f32>)> = Vec::new();
            for (layer, views) in self.open.iter_mut().enumerate() {
                for (view, buffer) in views.iter_mut().enumerate() {
                    buffers.push((layer, view, buffer));
                }
            }
            buffers.into_par_iter().for_each(|(layer, view, buffer)| {
                for i in objects.clone() {
                    let src = if mirrored { view * n + i } else { i };
                    let maps = outs[layer].image(src);
                    match divisors {
                        Some(divisors) => {
                            buffer.extend(maps.iter().zip(&divisors[layer]).map(|(v, d)| normalize_value(*v, *d)))
                        }
                        None => buffer.extend_from_slice(maps),
                    }
                }
            });
            self.count += take;
            first += take;
            if self.count == size {
                self.expected.pop_front();
                self.count = 0;
                let open = std::mem::take(&mut self.open);
                let maps = self
                    .layers
                    .iter()
                    .zip(open)
                    .map(|((name, _), views)| (name.clone(), self.views.iter().copied().zip(views).collect()))
                    .collect();
                finished.push(FinishedShard { shard, maps });
            }
        }
        Ok(finished)
    }

    /// Every pending shard was completed.
    fn check_drained(&self) -> Result<(), FeaturesError> {
        match self.expected.front() {
            None => Ok(()),
            Some((shard, _)) => Err(FeaturesError::Input(format!("shard {shard} was not completed"))),
        }
    }
}

/// Encode and write a finished shard (its files in parallel); returns the seconds it took.
fn write_shard(writer: &mut CacheWriter, shard: FinishedShard) -> Result<f64, FeaturesError> {
    let clock = Instant::now();
    let files: Vec<(&str, View, &[f32])> = shard
        .maps
        .iter()
        .flat_map(|(layer, views)| views.iter().map(move |(view, values)| (layer.as_str(), *view, values.as_slice())))
        .collect();
    writer.write_shard_files(shard.shard, &files)?;
    tracing::debug!(shard = shard.shard, "shard written");
    Ok(clock.elapsed().as_secs_f64())
}
