//! The one backbone setup: weights → preprocessing preset → device → model.

use expgraph_backbone::{Preprocess, Vgg16, WeightSource};

use crate::{parse_device, FeaturesError};

/// A backbone ready to extract, with the preprocessing its weights expect.
pub struct LoadedBackbone {
    /// The model on its device.
    pub model: Vgg16,
    /// The preprocessing preset: `preprocess` when given, else the weight source's default
    /// (`caffe` for a local file, `torchvision` for a hub repo).
    pub preprocess: Preprocess,
    /// Where the weights came from.
    pub source: WeightSource,
}

/// Load the backbone from `weights` (a `.safetensors` path or a Hugging Face repo id) onto
/// `device` (`cpu`, `cuda`, `cuda:N`), with preprocessing `preprocess` (`caffe`, `torchvision`;
/// `None` = the weight source's default).
pub fn load_backbone(weights: &str, preprocess: Option<&str>, device: &str) -> Result<LoadedBackbone, FeaturesError> {
    let device = parse_device(device)?;
    let source = WeightSource::parse(weights);
    let preprocess = match preprocess {
        Some(p) => Preprocess::from_name(p)?,
        None => source.default_preprocess(),
    };
    tracing::info!(weights = %source, preprocess = preprocess.name(), "loading backbone");
    let model = Vgg16::load(&source, &device)?;
    Ok(LoadedBackbone { model, preprocess, source })
}
