//! Where the object crops come from: the caller decodes images, this crate only draws.

use crate::error::{CropError, ReportError, Result};
use image::RgbImage;
use std::collections::BTreeMap;

/// Source of the 224×224 object crops (the network input frame, spec §1.3), by image index
/// (the position of the image in the activation list). The CLI implements it on top of the
/// feature crate's crop loader; tests use synthetic crops.
///
/// Crops of another square size are accepted: positions are scaled to the crop's width.
pub trait CropSource {
    /// The unflipped object crop of image `image_index`.
    fn crop(&self, image_index: usize) -> Result<RgbImage, CropError>;
}

impl CropSource for [RgbImage] {
    fn crop(&self, image_index: usize) -> Result<RgbImage, CropError> {
        self.get(image_index).cloned().ok_or_else(|| format!("no crop {image_index} (have {})", self.len()).into())
    }
}

impl CropSource for Vec<RgbImage> {
    fn crop(&self, image_index: usize) -> Result<RgbImage, CropError> {
        self.as_slice().crop(image_index)
    }
}

/// A closure as a [`CropSource`].
pub struct CropFn<F>(pub F);

impl<F: Fn(usize) -> Result<RgbImage, CropError>> CropSource for CropFn<F> {
    fn crop(&self, image_index: usize) -> Result<RgbImage, CropError> {
        (self.0)(image_index)
    }
}

/// Loads each needed crop once, in ascending index order (deterministic), and checks it.
pub(crate) fn load_crops(
    source: &dyn CropSource,
    indices: impl IntoIterator<Item = usize>,
) -> Result<BTreeMap<usize, RgbImage>> {
    let mut out = BTreeMap::new();
    for index in indices {
        if out.contains_key(&index) {
            continue;
        }
        let crop = source.crop(index).map_err(|source| ReportError::Crop { index, source })?;
        if crop.width() == 0 || crop.height() == 0 {
            return Err(ReportError::Crop { index, source: "empty crop".into() });
        }
        out.insert(index, crop);
    }
    Ok(out)
}
