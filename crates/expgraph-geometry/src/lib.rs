//! # expgraph-geometry
//!
//! The one home of every coordinate convention of expgraph (docs/algorithm.md §1.3, §4.2,
//! App. A). Every other crate converts through these functions, so a convention is written once.
//!
//! Three frames appear in the pipeline:
//!
//! * **map** — a tapped layer's feature map: 1-based, continuous `(h, w)` (App. A);
//! * **pixels** — the square network input (the 224×224 object crop): 1-based pixels, pixel `i`
//!   centred at `i` ([`PixelPoint`]); [`TapGeometry`] maps map ↔ pixels (§1.3);
//! * **object frame** — the same square, continuous, with the box edges at `0` and `size`
//!   ([`Point`], what the metrics use, §4.2): a pixel centre `i` is at `i − 0.5`.
//!
//! A *view* is the crop as it is or mirrored left–right ([`View`]). A coordinate in the mirrored
//! view maps back with [`mirror`]: `w' = size + 1 − w`, the reference code's formula (§1.3, §4.1).
//!
//! ```
//! use expgraph_geometry::{mirror, PixelPoint, TapGeometry};
//!
//! let conv4_3 = TapGeometry { stride: 8.0, first_centre: 4.5, receptive_field: 92.0 };
//! assert_eq!(conv4_3.map_to_pixel(1.0), 4.5);
//! assert_eq!(mirror(4.5, 224.0), 220.5);
//! let p = PixelPoint::new(10.0, 20.0); // (h, w), 1-based pixels
//! assert_eq!(p.to_frame().x, 19.5);
//! assert_eq!(p.to_frame().to_pixel(), p);
//! ```

use serde::{Deserialize, Serialize};

/// Side of the square object frame the paper evaluates in (§4.2).
pub const FRAME_SIZE: f64 = 224.0;

/// The mirror formula of the reference code (§1.3, §4.1): the coordinate `w` (1-based) of a
/// frame of side `size` seen in the left–right mirrored frame, `size + 1 − w`. Its own inverse.
pub fn mirror(w: f64, size: f64) -> f64 {
    size + 1.0 - w
}

/// Which view of an object crop a map or a position belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum View {
    /// The crop as it is.
    Original,
    /// The crop mirrored left–right before the forward pass (a real flip, §7 #1).
    Flipped,
}

impl View {
    /// The view of a `flipped` flag.
    pub fn from_flipped(flipped: bool) -> Self {
        if flipped {
            View::Flipped
        } else {
            View::Original
        }
    }

    /// Whether this is the mirrored view.
    pub fn is_flipped(self) -> bool {
        self == View::Flipped
    }
}

/// Geometry of one tapped layer in the input frame (§1.3): a map cell `x` (1-based) is centred at
/// `first_centre + (x − 1) · stride` input pixels (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TapGeometry {
    /// Distance between neighbouring map cells, in input pixels.
    pub stride: f64,
    /// Centre of the first map cell, in 1-based input pixels.
    pub first_centre: f64,
    /// Receptive-field size in input pixels (without padding effects).
    pub receptive_field: f64,
}

impl TapGeometry {
    /// Map coordinate (1-based, continuous) → input-pixel coordinate (1-based), §1.3 `x2p_`.
    pub fn map_to_pixel(&self, x: f64) -> f64 {
        self.first_centre + (x - 1.0) * self.stride
    }

    /// Input-pixel coordinate (1-based) → map coordinate (1-based, continuous).
    pub fn pixel_to_map(&self, p: f64) -> f64 {
        (p - self.first_centre) / self.stride + 1.0
    }

    /// A map position `(h, w)` of view `view` → the pixel point in the **original** view of an
    /// input of side `input_size` (maps through the layer, then undoes a mirror).
    pub fn map_to_original_pixels(&self, hw: [f64; 2], view: View, input_size: f64) -> PixelPoint {
        let (h, w) = (self.map_to_pixel(hw[0]), self.map_to_pixel(hw[1]));
        PixelPoint::new(h, if view.is_flipped() { mirror(w, input_size) } else { w })
    }
}

/// A point of the square input: 1-based pixels, `(h, w)` = (row, column); pixel `i` is centred
/// at `i`. Localization templates and predictions use it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PixelPoint {
    /// Row, 1-based pixels.
    pub h: f64,
    /// Column, 1-based pixels.
    pub w: f64,
}

impl PixelPoint {
    /// `(h, w)`.
    pub const fn new(h: f64, w: f64) -> Self {
        Self { h, w }
    }

    /// Euclidean distance in pixels.
    pub fn distance(&self, other: &PixelPoint) -> f64 {
        (self.h - other.h).hypot(self.w - other.w)
    }

    /// The same spot in the mirrored view of an input of side `size` ([`mirror`]).
    pub fn mirrored(self, size: f64) -> Self {
        Self { h: self.h, w: mirror(self.w, size) }
    }

    /// The continuous object-frame point of this pixel centre (`x = w − 0.5`, `y = h − 0.5`).
    pub fn to_frame(self) -> Point {
        Point::new(self.w - 0.5, self.h - 0.5)
    }

    /// Whether both coordinates are finite.
    pub fn is_finite(self) -> bool {
        self.h.is_finite() && self.w.is_finite()
    }
}

/// A point in the continuous object frame (§4.2): `x` = column (`w`), `y` = row (`h`), the box
/// edges at `0` and the frame side. The metrics and the data sets' ground truth use it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Column (the spec's `w`).
    pub x: f64,
    /// Row (the spec's `h`).
    pub y: f64,
}

impl Point {
    /// A point from column `x` and row `y`.
    pub const fn new(x: f64, y: f64) -> Self {
        Self { x, y }
    }

    /// A point from the spec's `(h, w)` order.
    pub const fn from_hw(h: f64, w: f64) -> Self {
        Self { x: w, y: h }
    }

    /// Euclidean distance to `other`.
    pub fn distance(self, other: Point) -> f64 {
        (self.x - other.x).hypot(self.y - other.y)
    }

    /// The same point in the mirrored frame of side `frame`: [`mirror`] of `x`, as the reference's
    /// `step_getResult.m` maps predictions made on the flipped view (§4.1).
    pub fn mirrored(self, frame: f64) -> Self {
        Self { x: mirror(self.x, frame), y: self.y }
    }

    /// The 1-based pixel point whose centre this is (inverse of [`PixelPoint::to_frame`]).
    pub fn to_pixel(self) -> PixelPoint {
        PixelPoint::new(self.y + 0.5, self.x + 0.5)
    }

    /// `[x, y]` in 0-based pixel-centre coordinates (pixel `i` centred at `i`) of an image of
    /// side `side` that shows the frame of side `frame` scaled (centres aligned): what drawing
    /// code needs.
    pub fn to_image_xy(self, frame: f64, side: f64) -> [f64; 2] {
        let scale = side / frame;
        [self.x * scale - 0.5, self.y * scale - 0.5]
    }

    /// Whether both coordinates are finite.
    pub fn is_finite(self) -> bool {
        self.x.is_finite() && self.y.is_finite()
    }
}

/// A box size in the object frame, pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Extent {
    /// Width (along `x`).
    pub width: f64,
    /// Height (along `y`).
    pub height: f64,
}

impl Extent {
    /// A size from width and height.
    pub const fn new(width: f64, height: f64) -> Self {
        Self { width, height }
    }

    /// The 1×1 box the reference code uses when no part sizes are annotated (CUB keypoints).
    pub const UNIT: Extent = Extent { width: 1.0, height: 1.0 };
}

/// One ground-truth instance of a part in the object frame: its centre and, when annotated as a
/// box (Pascal-Part, ILSVRC), its size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TruthInstance {
    /// Part centre (CUB: the keypoint; boxes: the box centre), object-frame pixels.
    pub centre: Point,
    /// Part box size, object-frame pixels; `None` for keypoints.
    pub size: Option<Extent>,
}

impl TruthInstance {
    /// A keypoint instance.
    pub const fn point(centre: Point) -> Self {
        Self { centre, size: None }
    }

    /// A box instance given by centre and size.
    pub const fn boxed(centre: Point, size: Extent) -> Self {
        Self { centre, size: Some(size) }
    }
}

/// An object's box in its source image, `[x0, y0, x1, y1]` in continuous source pixels
/// (0-based, end-exclusive), and the square frame of side `size` it is resized to (§1.1, §4.2):
/// the anisotropic map source ↔ object frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropFrame {
    /// The box in the source image.
    pub bbox: [f64; 4],
    /// Side of the square frame.
    pub size: f64,
}

impl CropFrame {
    /// The frame of `bbox` resized to `size`.
    pub const fn new(bbox: [f64; 4], size: f64) -> Self {
        Self { bbox, size }
    }

    fn width(&self) -> f64 {
        self.bbox[2] - self.bbox[0]
    }

    fn height(&self) -> f64 {
        self.bbox[3] - self.bbox[1]
    }

    /// A source-image point `(x, y)` (continuous pixels) → the object frame.
    pub fn source_to_frame(&self, x: f64, y: f64) -> Point {
        Point::new((x - self.bbox[0]) / self.width() * self.size, (y - self.bbox[1]) / self.height() * self.size)
    }

    /// An object-frame point → the source image, `[x, y]` (continuous pixels).
    pub fn frame_to_source(&self, p: Point) -> [f64; 2] {
        [self.bbox[0] + p.x / self.size * self.width(), self.bbox[1] + p.y / self.size * self.height()]
    }

    /// A size in source pixels → the object frame.
    pub fn extent_to_frame(&self, width: f64, height: f64) -> Extent {
        Extent::new(width / self.width() * self.size, height / self.height() * self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_is_the_reference_formula_and_its_own_inverse() {
        assert_eq!(mirror(1.0, 224.0), 224.0);
        assert_eq!(mirror(4.5, 224.0), 220.5);
        for w in [1.0, 7.25, 112.5, 224.0] {
            assert_eq!(mirror(mirror(w, 224.0), 224.0), w);
        }
        assert_eq!(Point::new(1.0, 5.0).mirrored(224.0), Point::new(224.0, 5.0));
        assert_eq!(PixelPoint::new(3.0, 4.0).mirrored(224.0), PixelPoint::new(3.0, 221.0));
    }

    #[test]
    fn map_pixel_and_frame_round_trip() {
        let g = TapGeometry { stride: 16.0, first_centre: 8.5, receptive_field: 164.0 };
        assert_eq!(g.map_to_pixel(14.0), 8.5 + 13.0 * 16.0);
        assert_eq!(g.pixel_to_map(g.map_to_pixel(3.25)), 3.25);
        let p = g.map_to_original_pixels([1.0, 1.0], View::Flipped, 224.0);
        assert_eq!(p, PixelPoint::new(8.5, 224.0 + 1.0 - 8.5));
        let q = PixelPoint::new(1.0, 224.0);
        assert_eq!(q.to_frame(), Point::new(223.5, 0.5));
        assert_eq!(q.to_frame().to_pixel(), q);
        assert_eq!(Point::from_hw(3.0, 4.0), Point::new(4.0, 3.0));
        assert_eq!(Point::new(0.0, 0.0).distance(Point::new(3.0, 4.0)), 5.0);
    }

    #[test]
    fn image_coordinates_align_pixel_centres() {
        // 1-based pixel (1, 1) → frame (0.5, 0.5) → 0-based centre (0, 0); a 448 image doubles.
        let p = PixelPoint::new(1.0, 1.0).to_frame();
        assert_eq!(p.to_image_xy(224.0, 224.0), [0.0, 0.0]);
        assert_eq!(PixelPoint::new(4.5, 4.5).to_frame().to_image_xy(224.0, 448.0), [7.5, 7.5]);
    }

    #[test]
    fn crop_frame_maps_both_ways() {
        let f = CropFrame::new([10.0, 20.0, 122.0, 76.0], 224.0);
        let p = f.source_to_frame(66.0, 48.0);
        assert_eq!(p, Point::new(112.0, 112.0));
        assert_eq!(f.frame_to_source(p), [66.0, 48.0]);
        assert_eq!(f.extent_to_frame(112.0, 56.0), Extent::new(224.0, 224.0));
    }

    #[test]
    fn views_serialize_as_the_cache_format_names() {
        assert_eq!(serde_json::to_string(&View::Flipped).unwrap(), "\"flipped\"");
        assert_eq!(View::from_flipped(false), View::Original);
    }
}
