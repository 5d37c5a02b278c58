//! One forward pass: RGB crops → pre-ReLU maps of the requested taps, as `f32` on the host.

use expgraph_backbone::{Backbone, Preprocess};

use crate::FeaturesError;

/// Shape and values of one tap's output for a batch.
#[derive(Debug, Clone)]
pub struct TapOutput {
    /// `[N, C, H, W]`.
    pub shape: [usize; 4],
    /// Row-major values.
    pub values: Vec<f32>,
}

impl TapOutput {
    /// Values of image `i` (`[C, H, W]`).
    pub fn image(&self, i: usize) -> &[f32] {
        let per = self.shape[1] * self.shape[2] * self.shape[3];
        &self.values[i * per..(i + 1) * per]
    }
}

/// Run `backbone` on `crops` (`size × size × 3` RGB each) and return the pre-ReLU maps of `taps`.
pub fn forward_crops(
    backbone: &dyn Backbone,
    preprocess: Preprocess,
    crops: &[&[u8]],
    size: usize,
    taps: &[&str],
) -> Result<Vec<TapOutput>, FeaturesError> {
    let input = preprocess.to_tensor(crops, size, backbone.device())?;
    let outputs = backbone.forward_taps(&input, taps)?;
    if outputs.len() != taps.len() {
        return Err(FeaturesError::Input(format!("backbone returned {} maps for {} taps", outputs.len(), taps.len())));
    }
    outputs
        .into_iter()
        .zip(taps)
        .map(|(t, name)| {
            let dims = t.dims().to_vec();
            let [n, c, h, w] = dims[..] else {
                return Err(FeaturesError::Input(format!("tap {name}: output shape {dims:?} is not NCHW")));
            };
            if n != crops.len() {
                return Err(FeaturesError::Input(format!("tap {name}: {n} maps for {} images", crops.len())));
            }
            let values = t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            Ok(TapOutput { shape: [n, c, h, w], values })
        })
        .collect()
}
