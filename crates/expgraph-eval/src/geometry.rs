//! Points and sizes in the 224×224 object frame.

use serde::{Deserialize, Serialize};

/// Side of the square object frame the paper evaluates in (spec §4.2).
pub const FRAME_SIZE: f64 = 224.0;

/// A point in the object frame, pixels: `x` = column (`w`), `y` = row (`h`).
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

    /// The same point in the mirrored frame of side `frame`: `x' = frame + 1 − x` (spec §4.1,
    /// `step_getResult.m`), for predictions made on the flipped view.
    pub fn mirrored(self, frame: f64) -> Self {
        Self { x: frame + 1.0 - self.x, y: self.y }
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

/// An integer pixel box, inclusive on both ends, as `getBox` in `step_getResult.m` builds it:
/// each side is `round(centre ∓ size / 2)` (MATLAB rounds halves away from zero, as does `f64::round`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PixelBox {
    pub x0: f64,
    pub x1: f64,
    pub y0: f64,
    pub y1: f64,
}

impl PixelBox {
    pub fn around(centre: Point, size: Extent) -> Self {
        Self {
            x0: (centre.x - size.width / 2.0).round(),
            x1: (centre.x + size.width / 2.0).round(),
            y0: (centre.y - size.height / 2.0).round(),
            y1: (centre.y + size.height / 2.0).round(),
        }
    }

    /// Pixel count, `(x1 − x0 + 1)(y1 − y0 + 1)`.
    pub fn area(&self) -> f64 {
        (self.x1 - self.x0 + 1.0) * (self.y1 - self.y0 + 1.0)
    }

    /// Intersection over union with inclusive pixel counting.
    pub fn iou(&self, other: &PixelBox) -> f64 {
        let iw = self.x1.min(other.x1) - self.x0.max(other.x0) + 1.0;
        let ih = self.y1.min(other.y1) - self.y0.max(other.y0) + 1.0;
        let inter = if iw > 0.0 && ih > 0.0 { iw * ih } else { 0.0 };
        let union = self.area() + other.area() - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }

    /// Whether `p` lies inside, borders included.
    pub fn contains(&self, p: Point) -> bool {
        p.x >= self.x0 && p.x <= self.x1 && p.y >= self.y0 && p.y <= self.y1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_box_rounds_and_counts_inclusively() {
        let b = PixelBox::around(Point::new(10.0, 20.0), Extent::new(5.0, 3.0));
        // 10 ± 2.5 → round(7.5) = 8, round(12.5) = 13; 20 ± 1.5 → round(18.5) = 19, round(21.5) = 22.
        assert_eq!((b.x0, b.x1, b.y0, b.y1), (8.0, 13.0, 19.0, 22.0));
        assert_eq!(b.area(), 6.0 * 4.0);
        assert!((b.iou(&b) - 1.0).abs() < 1e-12);
        assert!(b.contains(Point::new(8.0, 22.0)));
        assert!(!b.contains(Point::new(7.99, 20.0)));
    }

    #[test]
    fn iou_of_half_overlapping_boxes() {
        // Boxes [0,9]x[0,9] and [5,14]x[0,9]: intersection 5*10 = 50, union 200 - 50 = 150.
        let a = PixelBox { x0: 0.0, x1: 9.0, y0: 0.0, y1: 9.0 };
        let b = PixelBox { x0: 5.0, x1: 14.0, y0: 0.0, y1: 9.0 };
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-12);
        let far = PixelBox { x0: 20.0, x1: 29.0, y0: 0.0, y1: 9.0 };
        assert_eq!(a.iou(&far), 0.0);
    }

    #[test]
    fn mirroring_matches_the_reference() {
        assert_eq!(Point::new(1.0, 5.0).mirrored(224.0), Point::new(224.0, 5.0));
        assert_eq!(Point::from_hw(3.0, 4.0), Point::new(4.0, 3.0));
        assert_eq!(Point::new(0.0, 0.0).distance(Point::new(3.0, 4.0)), 5.0);
    }
}
