//! Where the learner gets its features: one layer at a time through [`FeatureSource`].

use expgraph_cache::{FeatureCache, InMemoryLayer, LayerInfo, LayerMaps};

use crate::LearnError;

/// A set of images with feature maps for several layers, opened one layer at a time.
pub trait FeatureSource: Sync {
    /// Backbone name, e.g. `vgg16`.
    fn backbone(&self) -> &str;
    /// Side of the square network input (224).
    fn input_size(&self) -> usize;
    /// The layers available, shallow to deep.
    fn layers(&self) -> Vec<LayerInfo>;
    /// Image identifiers, in order.
    fn image_ids(&self) -> Vec<String>;
    /// Open one layer's maps.
    fn open_layer(&self, name: &str) -> Result<Box<dyn LayerMaps + '_>, LearnError>;
}

impl FeatureSource for FeatureCache {
    fn backbone(&self) -> &str {
        &self.manifest().backbone
    }
    fn input_size(&self) -> usize {
        self.manifest().input_size
    }
    fn layers(&self) -> Vec<LayerInfo> {
        FeatureCache::layers(self).to_vec()
    }
    fn image_ids(&self) -> Vec<String> {
        self.images().iter().map(|i| i.id.clone()).collect()
    }
    fn open_layer(&self, name: &str) -> Result<Box<dyn LayerMaps + '_>, LearnError> {
        Ok(Box::new(self.layer(name)?))
    }
}

/// Features held in memory (tests, synthetic data, small runs).
#[derive(Debug, Clone)]
pub struct InMemoryFeatures {
    /// Backbone name.
    pub backbone: String,
    /// Network input side.
    pub input_size: usize,
    /// Image identifiers.
    pub image_ids: Vec<String>,
    /// Layers, shallow to deep, all with `image_ids.len()` images.
    pub layers: Vec<InMemoryLayer>,
}

impl FeatureSource for InMemoryFeatures {
    fn backbone(&self) -> &str {
        &self.backbone
    }
    fn input_size(&self) -> usize {
        self.input_size
    }
    fn layers(&self) -> Vec<LayerInfo> {
        self.layers.iter().map(|l| l.info().clone()).collect()
    }
    fn image_ids(&self) -> Vec<String> {
        self.image_ids.clone()
    }
    fn open_layer(&self, name: &str) -> Result<Box<dyn LayerMaps + '_>, LearnError> {
        self.layers
            .iter()
            .find(|l| l.info().name == name)
            .map(|l| Box::new(Borrowed(l)) as Box<dyn LayerMaps + '_>)
            .ok_or_else(|| LearnError::MissingLayer {
                layer: name.into(),
                available: self.layers.iter().map(|l| l.info().name.clone()).collect(),
            })
    }
}

/// A borrowed in-memory layer.
struct Borrowed<'a>(&'a InMemoryLayer);

impl LayerMaps for Borrowed<'_> {
    fn info(&self) -> &LayerInfo {
        self.0.info()
    }
    fn num_images(&self) -> usize {
        self.0.num_images()
    }
    fn has_flipped(&self) -> bool {
        self.0.has_flipped()
    }
    fn read_channel(&self, image: usize, view: expgraph_cache::View, channel: usize, out: &mut [f32]) {
        self.0.read_channel(image, view, channel, out)
    }
    fn read_image(&self, image: usize, view: expgraph_cache::View, out: &mut [f32]) {
        self.0.read_image(image, view, out)
    }
}
