//! Raw (pre-ReLU, unnormalized) maps of whole images, for debugging and golden tests.

use std::path::{Path, PathBuf};

use expgraph_backbone::{Backbone, Preprocess};
use expgraph_cache::{serialize_safetensors, OwnedTensor};

use crate::crop::{crop_resize, load_rgb};
use crate::forward::forward_crops;
use crate::stats::write_atomic;
use crate::FeaturesError;

/// Raw maps of one layer for all images, `[N, C, H, W]`.
#[derive(Debug, Clone)]
pub struct RawMaps {
    /// Layer name.
    pub layer: String,
    /// `[N, C, H, W]`.
    pub shape: [usize; 4],
    /// Row-major values.
    pub values: Vec<f32>,
}

/// Pre-ReLU maps of `layers` for `images`. With `no_crop` each image must already be
/// `input_size × input_size` and is used as is; otherwise the whole image is resized.
pub fn dump_raw_maps(
    backbone: &dyn Backbone,
    preprocess: Preprocess,
    layers: &[String],
    images: &[PathBuf],
    input_size: usize,
    no_crop: bool,
    batch: usize,
) -> Result<Vec<RawMaps>, FeaturesError> {
    if images.is_empty() || layers.is_empty() || batch == 0 {
        return Err(FeaturesError::Input("need at least one image, one layer and batch ≥ 1".into()));
    }
    let taps: Vec<&str> = layers.iter().map(String::as_str).collect();
    let mut out: Vec<RawMaps> = Vec::new();
    for chunk in images.chunks(batch) {
        let mut crops = Vec::new();
        for path in chunk {
            let img = load_rgb(path)?;
            if no_crop && (img.width as usize != input_size || img.height as usize != input_size) {
                return Err(FeaturesError::Image {
                    path: path.clone(),
                    what: format!("is {}x{}, but --no-crop needs {input_size}x{input_size}", img.width, img.height),
                });
            }
            crops.push(crop_resize(&img, [0.0, 0.0, f64::from(img.width), f64::from(img.height)], input_size)?);
        }
        let refs: Vec<&[u8]> = crops.iter().map(Vec::as_slice).collect();
        let outs = forward_crops(backbone, preprocess, &refs, input_size, &taps)?;
        if out.is_empty() {
            out = outs
                .iter()
                .zip(layers)
                .map(|(o, l)| RawMaps {
                    layer: l.clone(),
                    shape: [0, o.shape[1], o.shape[2], o.shape[3]],
                    values: Vec::new(),
                })
                .collect();
        }
        for (acc, o) in out.iter_mut().zip(outs) {
            acc.shape[0] += o.shape[0];
            acc.values.extend_from_slice(&o.values);
        }
    }
    Ok(out)
}

/// Write maps as f32 safetensors tensors named by layer (atomically).
pub fn write_raw_maps(path: &Path, maps: &[RawMaps]) -> Result<(), FeaturesError> {
    let tensors: Vec<(&str, OwnedTensor)> =
        maps.iter().map(|m| (m.layer.as_str(), OwnedTensor::f32(m.shape.to_vec(), m.values.iter().copied()))).collect();
    let header = [("content", "pre-ReLU unnormalized maps, NCHW f32")];
    let data =
        serialize_safetensors(tensors.iter().map(|(n, t)| (n, t)), header).map_err(|e| FeaturesError::file(path, e))?;
    write_atomic(path, &data)
}
