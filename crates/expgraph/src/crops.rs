//! Object crops of a feature cache's images, for the report (which never decodes images itself).

use expgraph_cache::ImageEntry;
use expgraph_report::{CropError, CropSource, RgbImage};

/// The 224×224 object crops of the cache's images (`ImageEntry::path` + `bbox`), decoded and
/// resized on demand exactly as the extractor did.
pub struct CacheCrops<'a> {
    images: &'a [ImageEntry],
    size: usize,
}

impl<'a> CacheCrops<'a> {
    /// Crops of `images` at `size × size` (the cache's input size).
    pub fn new(images: &'a [ImageEntry], size: usize) -> Self {
        Self { images, size }
    }
}

impl CropSource for CacheCrops<'_> {
    fn crop(&self, image_index: usize) -> Result<RgbImage, CropError> {
        let entry = self
            .images
            .get(image_index)
            .ok_or_else(|| format!("no image {image_index} in the cache ({} images)", self.images.len()))?;
        let source = expgraph_features::load_rgb(std::path::Path::new(&entry.path))?;
        let pixels = expgraph_features::crop_resize(&source, entry.bbox, self.size)?;
        let side = self.size as u32;
        RgbImage::from_raw(side, side, pixels).ok_or_else(|| format!("crop of {} has the wrong size", entry.path).into())
    }
}
