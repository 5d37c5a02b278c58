//! # expgraph-features
//!
//! Images + object boxes → the normalized, ReLU'd feature maps of paper-spec §3, written to an
//! [`expgraph_cache`] feature cache.
//!
//! Pipeline per object: decode (JPEG/PNG, turned upright by its EXIF orientation, gray → RGB; a
//! truncated file is an error) → crop the object box (clipped to the image) → anisotropic
//! bilinear+antialias resize to 224×224 → a second, really mirrored view
//! (spec §7 #1) → backbone forward (pre-ReLU taps) → divide by the per-unit std over negative
//! images ([`NormStats`], with the ε guard of spec §7 #16), values ≤ 0 → 0 → [`CacheWriter`]
//! shards (resumable).
//!
//! ```no_run
//! use expgraph_backbone::{Vgg16, WeightSource};
//! use expgraph_features::*;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = parse_device("cpu")?;
//! let vgg = Vgg16::load(&WeightSource::parse("vgg16-imagenet-conv.safetensors"), &device)?;
//! let params = ExtractParams::new(); // conv4_2, conv4_3, conv5_2, conv5_3; Caffe; f16
//! let negatives = list_images("negatives/".as_ref())?;
//! let stats_params = NormStatsParams {
//!     layers: ["conv4_2", "conv4_3", "conv5_2", "conv5_3"].map(String::from).to_vec(),
//!     preprocess: expgraph_backbone::Preprocess::Caffe, input_size: 224, batch: 4, progress: Default::default(),
//! };
//! let stats = load_or_compute_norm_stats(&vgg, &stats_params, &negatives, "stats.safetensors".as_ref())?;
//! let objects = objects_from_dir("images/".as_ref(), None, None)?;
//! let report = params.check(&vgg, &stats)?.run(&objects, "cache/".as_ref())?;
//! println!("{} images, {:.0} ms/image", report.images, report.ms_per_image);
//! # Ok(()) }
//! ```
//!
//! [`CacheWriter`]: expgraph_cache::CacheWriter

mod check;
mod crop;
mod device;
mod dump;
mod error;
mod extract;
mod forward;
mod inputs;
mod progress;
mod setup;
mod stats;

pub use check::check_image_files;
pub use crop::{clip_box, crop_resize, image_size, load_rgb, mirror, RgbImage};
pub use device::{device_label, device_memory, parse_device};
pub use dump::{dump_raw_maps, write_raw_maps, RawMaps};
pub use error::FeaturesError;
pub use extract::{BatchSize, ExtractParams, ExtractReport, ExtractTiming, Extractor, FlipMode, ObjectImage};
pub use forward::{forward_crops, forward_crops_normalized_f16, forward_crops_timed, ForwardTimes, TapOutput};
pub use inputs::{list_images, objects_from_dir, read_boxes};
pub use setup::{default_layers, load_backbone, Architecture, LoadedBackbone, TapDescription, BACKBONE_CHOICES};
pub use stats::{
    compute_norm_stats, expected_meta, files_digest, load_or_compute_norm_stats, normalize_in_place, normalize_value,
    LayerStd, NormStats, NormStatsMeta, NormStatsParams, StdAccumulator, NORMALIZED_EPS_FRACTION, NORMALIZED_MAX,
};
