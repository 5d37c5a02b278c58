//! Object crops of a feature cache's images, for the report and the explorer (which never decode
//! images themselves).

use std::path::{Path, PathBuf};

use std::collections::HashMap;

use expgraph_cache::{FeatureCache, ImageEntry};
use expgraph_graph::ImageActivations;
use expgraph_report::{CropError, CropSource, RgbImage};

use crate::pipeline::PipelineError;

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

    /// The crops of `acts` (crop `i` is image `i` of `acts`), whose image ids must all be in the
    /// cache at `cache_dir`. Relative image paths are read under `images_root` when given, else
    /// under the current folder, then the cache's parent folder.
    pub fn of_activations(
        cache_dir: &Path,
        acts: &[ImageActivations],
        images_root: Option<&Path>,
    ) -> Result<Self, PipelineError> {
        let cache = FeatureCache::open(cache_dir)?;
        let by_id: HashMap<&str, &ImageEntry> = cache.images().iter().map(|e| (e.id.as_str(), e)).collect();
        let entries = acts
            .iter()
            .map(|a| {
                by_id.get(a.image_id.as_str()).map(|e| (*e).clone()).ok_or_else(|| {
                    PipelineError::Provenance(format!(
                        "image `{}` of the activations is not in cache {}",
                        a.image_id,
                        cache_dir.display()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let roots = match images_root {
            Some(root) => vec![root.to_path_buf()],
            None => std::iter::once(PathBuf::from(".")).chain(cache_dir.parent().map(Path::to_path_buf)).collect(),
        };
        Ok(CacheCrops::new(entries, cache.manifest().input_size).with_roots(roots))
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
