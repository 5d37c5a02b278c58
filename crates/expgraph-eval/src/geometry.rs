//! Points and sizes in the 224×224 object frame.

pub use expgraph_geometry::{Extent, Point, FRAME_SIZE};

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
}
