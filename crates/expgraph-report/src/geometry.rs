//! Node positions in the object crop (spec §1.3) and patch boxes (spec §4.4).

use expgraph_graph::TapGeometry;

/// Position of a node in the *unflipped* crop, as `[x, y]` in 0-based continuous pixels of a crop
/// of side `crop_side` (pixel `i` covers `[i - 0.5, i + 0.5]`).
///
/// `pos` is the inferred `(h, w)` in 1-based map coordinates of the chosen view; it maps to 1-based
/// input pixels with `p = c + (x − 1)·s`, and a flipped view maps back with `w' = input + 1 − w`
/// (spec §1.3). Crops of another side than `input_size` are scaled.
pub fn node_pixel(geometry: &TapGeometry, pos: [f64; 2], flipped: bool, input_size: usize, crop_side: u32) -> [f64; 2] {
    let view = expgraph_geometry::View::from_flipped(flipped);
    let input = input_size as f64;
    // 1-based input pixel → continuous frame → crop pixel (centres aligned).
    geometry.map_to_original_pixels(pos, view, input).to_frame().to_image_xy(input, f64::from(crop_side))
}

/// Default patch side in input pixels for a layer: `round(6.25·√RF)`, which gives the spec's
/// 60 px at conv4_3 (RF 92) and 80 px at conv5_2 (RF 164) (spec §4.4), clamped to `[8, input]`.
pub fn default_patch_side(geometry: &TapGeometry, input_size: usize) -> u32 {
    let side = (6.25 * geometry.receptive_field.max(0.0).sqrt()).round();
    (side as u32).clamp(8, input_size.max(8) as u32)
}

/// A pixel rectangle `[x0, x1) × [y0, y1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelBox {
    /// First column.
    pub x0: u32,
    /// First row.
    pub y0: u32,
    /// One past the last column.
    pub x1: u32,
    /// One past the last row.
    pub y1: u32,
}

impl PixelBox {
    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.x1 - self.x0
    }
    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.y1 - self.y0
    }
}

/// The `side`×`side` box centred at `centre` (`[x, y]`, 0-based), clipped at the image border
/// (spec §4.4); `None` when nothing of it lies inside the image.
pub fn patch_box(centre: [f64; 2], side: u32, width: u32, height: u32) -> Option<PixelBox> {
    if !(centre[0].is_finite() && centre[1].is_finite()) || side == 0 {
        return None;
    }
    let half = side as f64 / 2.0;
    let clip = |c: f64, len: u32| -> Option<(u32, u32)> {
        let start = (c + 0.5 - half).round();
        let end = start + side as f64;
        let start = start.max(0.0);
        let end = end.min(len as f64);
        (end > start).then_some((start as u32, end as u32))
    };
    let (x0, x1) = clip(centre[0], width)?;
    let (y0, y1) = clip(centre[1], height)?;
    Some(PixelBox { x0, y0, x1, y1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv4_3() -> TapGeometry {
        TapGeometry { stride: 8.0, first_centre: 4.5, receptive_field: 92.0 }
    }

    #[test]
    fn default_sides_match_spec() {
        assert_eq!(default_patch_side(&conv4_3(), 224), 60);
        let conv5_2 = TapGeometry { stride: 16.0, first_centre: 8.5, receptive_field: 164.0 };
        assert_eq!(default_patch_side(&conv5_2, 224), 80);
    }

    #[test]
    fn map_to_pixel_and_mirror() {
        let g = conv4_3();
        // cell (1, 1) → 1-based pixel 4.5 → 0-based 3.5
        assert_eq!(node_pixel(&g, [1.0, 1.0], false, 224, 224), [3.5, 3.5]);
        // mirrored: w' = 225 − 4.5 = 220.5 → 0-based 219.5
        assert_eq!(node_pixel(&g, [1.0, 1.0], true, 224, 224), [219.5, 3.5]);
        // a 448 crop doubles the coordinates (pixel centres aligned)
        assert_eq!(node_pixel(&g, [1.0, 1.0], false, 224, 448), [7.5, 7.5]);
    }

    #[test]
    fn boxes_are_centred_and_clipped() {
        // centre between pixels 100 and 101 → 30 pixels each side
        let b = patch_box([100.5, 50.5], 60, 224, 224).unwrap();
        assert_eq!((b.x0, b.x1, b.y0, b.y1), (71, 131, 21, 81));
        let b = patch_box([3.5, 220.0], 60, 224, 224).unwrap();
        assert_eq!((b.x0, b.y1), (0, 224));
        assert!(b.width() < 60 && b.height() < 60);
        assert!(patch_box([-100.0, 10.0], 60, 224, 224).is_none());
        assert!(patch_box([f64::NAN, 10.0], 60, 224, 224).is_none());
    }
}
