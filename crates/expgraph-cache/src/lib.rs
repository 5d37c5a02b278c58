//! # expgraph-cache
//!
//! The feature-map cache format that sits between feature extraction (which writes it) and the
//! graph learner (which reads it). This crate depends on neither candle nor image decoding, so
//! the learner can read features without pulling in the backbone.
//!
//! Conventions (see `ARCHITECTURE.md`):
//! * a layer's maps are stored per image as `[C, H, W]` (channel-major), row-major `h * W + w`;
//! * values are the **normalized, ReLU'd** responses of paper-spec §3 (`≤ 0` stored as 0);
//! * every image may have a second, *really* mirrored view ([`View::Flipped`], spec §7 #1).

mod layer;
mod manifest;

pub use layer::{InMemoryLayer, LayerMaps};
pub use manifest::{CacheManifest, ImageEntry, LayerInfo, TapGeometry, View};

/// Errors of the cache format.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A dimension or length that does not match what the layer declares.
    #[error("layer {layer}: {what}")]
    Shape { layer: String, what: String },
    /// A non-finite value in a feature map.
    #[error("layer {layer}: non-finite value in image {image}, channel {channel}")]
    NonFinite { layer: String, image: usize, channel: usize },
}
