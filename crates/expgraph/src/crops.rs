//! Object crops of a feature cache's images, for the report (which never decodes images itself).

use std::path::{Path, PathBuf};

use expgraph_cache::ImageEntry;
use expgraph_report::{CropError, CropSource, RgbImage};

/// The `size × size` object crops of cache images (`ImageEntry::path` + `bbox`), decoded and
/// resized on demand exactly as the extractor did. Crop `i` is that of `entries[i]`.
pub struct CacheCrops {
    entries: Vec<ImageEntry>,
    roots: Vec<PathBuf>,
    size: usize,
}

impl CacheCrops {
    /// Crops of `entries` at `size × size` (the cache's input size); relative paths are read
    /// from the current folder.
    pub fn new(entries: Vec<ImageEntry>, size: usize) -> Self {
        Self { entries, roots: Vec::new(), size }
    }

    /// Also look for relative image paths under these folders, in order.
    pub fn with_roots(mut self, roots: Vec<PathBuf>) -> Self {
        self.roots = roots;
        self
    }

    fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        self.roots.iter().map(|r| r.join(p)).find(|c| c.is_file()).unwrap_or_else(|| p.to_path_buf())
    }
}

impl CropSource for CacheCrops {
    fn crop(&self, image_index: usize) -> Result<RgbImage, CropError> {
        let entry = self
            .entries
            .get(image_index)
            .ok_or_else(|| format!("no image {image_index} ({} images)", self.entries.len()))?;
        let path = self.resolve(&entry.path);
        let image = expgraph_features::load_rgb(&path)?;
        let bbox = expgraph_features::clip_box(&entry.id, entry.bbox, image.width, image.height)?;
        let pixels = expgraph_features::crop_resize(&image, bbox, self.size)?;
        let side = self.size as u32;
        RgbImage::from_raw(side, side, pixels)
            .ok_or_else(|| format!("crop of {} has the wrong number of pixels", path.display()).into())
    }
}
