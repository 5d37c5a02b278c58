//! The common in-memory model of a part-annotated data set.
//!
//! Coordinates are those of the annotation files, which follow MATLAB's 1-based pixel indices:
//! pixel `i` (1-based) spans `[i − 0.5, i + 0.5]`. An object box `[x0, y0, x1, y1]` is what the
//! reference readers build (CUB: `[x, y, x + w, y + h]`; Pascal-Part: `[Wmin, Hmin, Wmax, Hmax]`;
//! ILSVRC: `[xmin, ymin, xmax, ymax]`), and the object frame used by the metrics (spec §4.2) maps
//! `x0 → 0` and `x1 → 224`: `u = (x − x0) / (x1 − x0) · 224`.

use std::path::PathBuf;

use expgraph_geometry::{CropFrame, Point, TruthInstance};
use serde::{Deserialize, Serialize};

/// Train/test membership of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Training image (`train_test_split.txt` flag 1).
    Train,
    /// Test image (flag 0).
    Test,
}

/// One image file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Identifier from the annotations (CUB image id, VOC/ILSVRC file name).
    pub id: String,
    /// Path relative to [`Dataset::root`].
    pub path: PathBuf,
    /// `(width, height)` in pixels, when known.
    pub size: Option<(u32, u32)>,
    /// Class name, when the data set has classes.
    pub class: Option<String>,
    /// Split, when the data set has one.
    pub split: Option<Split>,
}

/// One ground-truth instance of a part: a point, or a box whose centre is the point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PartInstance {
    /// `(x, y)` in source-image coordinates.
    pub centre: [f64; 2],
    /// `[x0, y0, x1, y1]` when the part is annotated as a box.
    pub bbox: Option<[f64; 4]>,
}

impl PartInstance {
    /// A keypoint.
    pub const fn point(x: f64, y: f64) -> Self {
        Self { centre: [x, y], bbox: None }
    }

    /// A box; its centre is the box centre.
    pub fn boxed(bbox: [f64; 4]) -> Self {
        Self { centre: [(bbox[0] + bbox[2]) / 2.0, (bbox[1] + bbox[3]) / 2.0], bbox: Some(bbox) }
    }
}

/// Ground truth of one part in one object.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PartTruth {
    /// Whether the part is annotated as visible.
    pub visible: bool,
    /// Annotated instances (empty when not visible).
    pub instances: Vec<PartInstance>,
}

impl PartTruth {
    /// A part not visible in the object.
    pub const fn absent() -> Self {
        Self { visible: false, instances: Vec::new() }
    }

    /// A visible part with the given instances.
    pub fn present(instances: Vec<PartInstance>) -> Self {
        Self { visible: !instances.is_empty(), instances }
    }
}

/// One annotated object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectRecord {
    /// Identifier (unique in the data set).
    pub id: String,
    /// Index into [`Dataset::images`].
    pub image: usize,
    /// Object box `[x0, y0, x1, y1]` (see the module docs for the convention).
    pub bbox: [f64; 4],
    /// Ground truth per part, indexed like [`Dataset::part_names`].
    pub parts: Vec<PartTruth>,
}

impl ObjectRecord {
    /// Box width `x1 − x0`.
    pub fn width(&self) -> f64 {
        self.bbox[2] - self.bbox[0]
    }

    /// Box height `y1 − y0`.
    pub fn height(&self) -> f64 {
        self.bbox[3] - self.bbox[1]
    }

    /// Area as the reference's `IsAreaValid` counts it: `(x1 − x0 + 1)(y1 − y0 + 1)` pixels.
    pub fn pixel_area(&self) -> f64 {
        (self.width() + 1.0) * (self.height() + 1.0)
    }

    /// The map between the source image and the `frame × frame` object frame (spec §4.2).
    pub fn crop_frame(&self, frame: f64) -> CropFrame {
        CropFrame::new(self.bbox, frame)
    }

    /// A source point in the `frame × frame` object frame (spec §4.2).
    pub fn to_frame(&self, x: f64, y: f64, frame: f64) -> Point {
        self.crop_frame(frame).source_to_frame(x, y)
    }

    /// An object-frame point back in source coordinates (inverse of [`Self::to_frame`]).
    pub fn from_frame(&self, p: Point, frame: f64) -> [f64; 2] {
        self.crop_frame(frame).frame_to_source(p)
    }

    /// Ground-truth instances of `part` in the object frame, ready for
    /// the localization metrics; empty when the part is absent.
    pub fn truth_in_frame(&self, part: usize, frame: f64) -> Vec<TruthInstance> {
        let Some(truth) = self.parts.get(part) else { return Vec::new() };
        if !truth.visible {
            return Vec::new();
        }
        let crop = self.crop_frame(frame);
        truth
            .instances
            .iter()
            .map(|inst| {
                let centre = crop.source_to_frame(inst.centre[0], inst.centre[1]);
                match inst.bbox {
                    Some(b) => TruthInstance::boxed(centre, crop.extent_to_frame(b[2] - b[0], b[3] - b[1])),
                    None => TruthInstance::point(centre),
                }
            })
            .collect()
    }

    /// The landmark `part` in the object frame, for the stability metric: `None` when the part
    /// is absent or has several instances (the reference treats both as missing, spec §4.3).
    pub fn landmark_in_frame(&self, part: usize, frame: f64) -> Option<Point> {
        match self.truth_in_frame(part, frame).as_slice() {
            [one] => Some(one.centre),
            _ => None,
        }
    }

    /// The crop to feed the feature extractor, in the cache's convention (0-based pixel edges,
    /// `x1`/`y1` exclusive): the reference crops pixels `max(x0, 1) ..= min(x1, W)` (1-based,
    /// inclusive), i.e. `[max(x0, 1) − 1, min(x1, W))`. `image_size` is `(W, H)` when known.
    pub fn crop_box(&self, image_size: Option<(u32, u32)>) -> [f64; 4] {
        let (w, h) = image_size.map_or((f64::INFINITY, f64::INFINITY), |(w, h)| (f64::from(w), f64::from(h)));
        [self.bbox[0].max(1.0) - 1.0, self.bbox[1].max(1.0) - 1.0, self.bbox[2].min(w), self.bbox[3].min(h)]
    }
}

/// A part-annotated data set: images, objects and per-object part ground truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// Short name, e.g. `cub-200-2011`, `pascal-part/cow`.
    pub name: String,
    /// Folder the image paths are relative to.
    pub root: PathBuf,
    /// Part names; every object's `parts` has this length.
    pub part_names: Vec<String>,
    /// Images.
    pub images: Vec<ImageRecord>,
    /// Objects, in the reference's order.
    pub objects: Vec<ObjectRecord>,
}

impl Dataset {
    /// Index of the part called `name` (case-insensitive).
    pub fn part_index(&self, name: &str) -> Option<usize> {
        self.part_names.iter().position(|p| p.eq_ignore_ascii_case(name))
    }

    /// Full path of the image of `object`.
    pub fn image_path(&self, object: &ObjectRecord) -> PathBuf {
        self.root.join(&self.images[object.image].path)
    }

    /// Objects that have `part` (visible with at least one instance).
    pub fn objects_with_part(&self, part: usize) -> usize {
        self.objects.iter().filter(|o| o.parts.get(part).is_some_and(|p| p.visible)).count()
    }

    /// Ground truth of `part` for every object in the object frame (spec §4.2).
    pub fn truth_in_frame(&self, part: usize, frame: f64) -> Vec<Vec<TruthInstance>> {
        self.objects.iter().map(|o| o.truth_in_frame(part, frame)).collect()
    }

    /// Landmarks `parts` of every object in the object frame (`[part][object]`, `None` where
    /// missing), the input of the location-instability metric (spec §4.3).
    pub fn landmarks_in_frame(&self, parts: &[usize], frame: f64) -> Vec<Vec<Option<Point>>> {
        parts.iter().map(|&p| self.objects.iter().map(|o| o.landmark_in_frame(p, frame)).collect()).collect()
    }

    /// A data set holding only the objects at `indices` (in that order); images are kept.
    pub fn select_objects(&self, indices: &[usize]) -> Option<Dataset> {
        let objects = indices.iter().map(|&i| self.objects.get(i).cloned()).collect::<Option<Vec<_>>>()?;
        Some(Dataset { objects, ..self.clone() })
    }

    /// Check internal consistency (image indices, part counts, finite positive boxes).
    pub fn validate(&self) -> Result<(), String> {
        for o in &self.objects {
            if o.image >= self.images.len() {
                return Err(format!("object {} refers to image {} of {}", o.id, o.image, self.images.len()));
            }
            if o.parts.len() != self.part_names.len() {
                return Err(format!("object {} has {} parts, expected {}", o.id, o.parts.len(), self.part_names.len()));
            }
            if !o.bbox.iter().all(|v| v.is_finite()) || o.width() <= 0.0 || o.height() <= 0.0 {
                return Err(format!("object {} has an empty or non-finite box {:?}", o.id, o.bbox));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expgraph_geometry::Extent;

    fn object() -> ObjectRecord {
        ObjectRecord {
            id: "1".into(),
            image: 0,
            bbox: [10.0, 20.0, 110.0, 70.0],
            parts: vec![
                PartTruth::present(vec![PartInstance::point(60.0, 45.0)]),
                PartTruth::present(vec![PartInstance::boxed([10.0, 20.0, 60.0, 45.0])]),
                PartTruth::absent(),
                PartTruth::present(vec![PartInstance::point(1.0, 1.0), PartInstance::point(2.0, 2.0)]),
            ],
        }
    }

    #[test]
    fn frame_mapping_is_anisotropic() {
        let o = object();
        // centre of the box → (112, 112) in the 224 frame
        assert_eq!(o.to_frame(60.0, 45.0, 224.0), Point::new(112.0, 112.0));
        assert_eq!(o.to_frame(10.0, 70.0, 224.0), Point::new(0.0, 224.0));
        assert_eq!(o.from_frame(Point::new(112.0, 112.0), 224.0), [60.0, 45.0]);
        let t = o.truth_in_frame(1, 224.0);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].centre, Point::new(56.0, 56.0));
        assert_eq!(t[0].size, Some(Extent::new(112.0, 112.0)));
        assert!(o.truth_in_frame(2, 224.0).is_empty());
        assert!(o.landmark_in_frame(3, 224.0).is_none());
        assert_eq!(o.landmark_in_frame(0, 224.0), Some(Point::new(112.0, 112.0)));
        assert_eq!(o.pixel_area(), 101.0 * 51.0);
    }

    #[test]
    fn crop_box_follows_the_cache_convention() {
        let mut o = object();
        assert_eq!(o.crop_box(None), [9.0, 19.0, 110.0, 70.0]);
        o.bbox = [0.0, -3.0, 500.0, 70.0];
        assert_eq!(o.crop_box(Some((400, 300))), [0.0, 0.0, 400.0, 70.0]);
    }
}
