//! Metadata types of a feature cache.

use serde::{Deserialize, Serialize};

pub use expgraph_geometry::{TapGeometry, View};

/// One tapped layer of the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Tap name, e.g. `conv4_3`.
    pub name: String,
    /// Number of channels (filters).
    pub channels: usize,
    /// Map height.
    pub height: usize,
    /// Map width.
    pub width: usize,
    /// Position of the map in the input frame.
    pub geometry: TapGeometry,
}

impl LayerInfo {
    /// Number of values of one channel map (`H * W`).
    pub fn map_len(&self) -> usize {
        self.height * self.width
    }

    /// Number of values of one image (`C * H * W`).
    pub fn image_len(&self) -> usize {
        self.channels * self.map_len()
    }
}

/// One object crop of the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageEntry {
    /// Stable identifier (data set id or file name).
    pub id: String,
    /// Path of the source image as given to the extractor.
    pub path: String,
    /// Object box `[x0, y0, x1, y1]` in source pixels (0-based, x1/y1 exclusive), after clipping.
    pub bbox: [f64; 4],
}

/// The `manifest.json` of a cache folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheManifest {
    /// Version of this format.
    pub format_version: u32,
    /// Content hash of (weights, preprocessing, image list, boxes, layers, normalization).
    pub key: String,
    /// Backbone name, e.g. `vgg16`.
    pub backbone: String,
    /// Preprocessing preset name, e.g. `caffe`.
    pub preprocess: String,
    /// Side of the square network input (224).
    pub input_size: usize,
    /// Tapped layers, in the backbone's order (shallow to deep).
    pub layers: Vec<LayerInfo>,
    /// Object crops, in cache order.
    pub images: Vec<ImageEntry>,
    /// Views stored for every image.
    pub views: Vec<View>,
}

impl CacheManifest {
    /// Current format version.
    pub const FORMAT_VERSION: u32 = 1;

    /// The layer called `name`, if present.
    pub fn layer(&self, name: &str) -> Option<&LayerInfo> {
        self.layers.iter().find(|l| l.name == name)
    }
}
