//! Small raster helpers: blending, shapes, text (embedded DejaVu Sans, no system fonts), layout.

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use image::{imageops, Rgb, RgbImage};
use std::sync::OnceLock;

/// DejaVu Sans (Bitstream Vera licence, see `assets/DejaVuSans-LICENSE.txt`), embedded so that
/// text renders without fontconfig or system fonts.
pub(crate) static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn font() -> Option<&'static FontRef<'static>> {
    static FONT: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT.get_or_init(|| FontRef::try_from_slice(FONT_BYTES).ok()).as_ref()
}

/// Blends `color` over pixel `(x, y)` with opacity `alpha`; ignores pixels outside the image.
pub(crate) fn blend(img: &mut RgbImage, x: i64, y: i64, color: [u8; 3], alpha: f32) {
    if x < 0 || y < 0 || x >= img.width() as i64 || y >= img.height() as i64 {
        return;
    }
    let a = alpha.clamp(0.0, 1.0);
    let p = img.get_pixel_mut(x as u32, y as u32);
    for (channel, &target) in p.0.iter_mut().zip(&color) {
        *channel = (*channel as f32 * (1.0 - a) + target as f32 * a).round() as u8;
    }
}

/// Filled axis-aligned rectangle.
pub(crate) fn fill_rect(img: &mut RgbImage, x: i64, y: i64, w: u32, h: u32, color: [u8; 3]) {
    for yy in y..y + h as i64 {
        for xx in x..x + w as i64 {
            blend(img, xx, yy, color, 1.0);
        }
    }
}

/// Anti-aliased disc (`filled`) or ring of `width` px.
pub(crate) fn circle(img: &mut RgbImage, c: [f64; 2], r: f64, width: f64, filled: bool, color: [u8; 3]) {
    let reach = (r + width + 1.0).ceil() as i64;
    let (cx, cy) = (c[0].round() as i64, c[1].round() as i64);
    for y in cy - reach..=cy + reach {
        for x in cx - reach..=cx + reach {
            let d = ((x as f64 - c[0]).powi(2) + (y as f64 - c[1]).powi(2)).sqrt();
            let cover = if filled { r + 0.5 - d } else { width / 2.0 + 0.5 - (d - r).abs() };
            if cover > 0.0 {
                blend(img, x, y, color, cover.min(1.0) as f32);
            }
        }
    }
}

/// Line segment of `width` px (distance-based anti-aliasing).
pub(crate) fn line(img: &mut RgbImage, a: [f64; 2], b: [f64; 2], width: f64, color: [u8; 3]) {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let len2 = dx * dx + dy * dy;
    let pad = width + 1.0;
    let (x0, x1) = (a[0].min(b[0]) - pad, a[0].max(b[0]) + pad);
    let (y0, y1) = (a[1].min(b[1]) - pad, a[1].max(b[1]) + pad);
    for y in y0.floor() as i64..=y1.ceil() as i64 {
        for x in x0.floor() as i64..=x1.ceil() as i64 {
            let (px, py) = (x as f64 - a[0], y as f64 - a[1]);
            let t = if len2 > 0.0 { ((px * dx + py * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
            let d = ((px - t * dx).powi(2) + (py - t * dy).powi(2)).sqrt();
            let cover = width / 2.0 + 0.5 - d;
            if cover > 0.0 {
                blend(img, x, y, color, cover.min(1.0) as f32);
            }
        }
    }
}

/// Draws `text` with its top-left corner at `(x, y)`, `size` px high. Returns the advance width.
pub(crate) fn text(img: &mut RgbImage, x: i64, y: i64, size: f32, color: [u8; 3], text: &str) -> f32 {
    let Some(font) = font() else { return 0.0 };
    let scale = PxScale::from(size);
    let scaled = font.as_scaled(scale);
    let baseline = y as f32 + scaled.ascent();
    let mut caret = x as f32;
    let mut previous = None;
    for ch in text.chars() {
        let id = scaled.glyph_id(ch);
        if let Some(p) = previous {
            caret += scaled.kern(p, id);
        }
        previous = Some(id);
        let glyph = id.with_scale_and_position(scale, point(caret, baseline));
        caret += scaled.h_advance(id);
        if let Some(outline) = font.outline_glyph(glyph) {
            let bounds = outline.px_bounds();
            outline.draw(|gx, gy, cover| {
                blend(img, bounds.min.x as i64 + gx as i64, bounds.min.y as i64 + gy as i64, color, cover);
            });
        }
    }
    caret - x as f32
}

/// Images side by side on a background, top-aligned, `gap` px apart.
pub(crate) fn hstack(images: &[&RgbImage], gap: u32, background: [u8; 3]) -> RgbImage {
    let width = images.iter().map(|i| i.width()).sum::<u32>() + gap * images.len().saturating_sub(1) as u32;
    let height = images.iter().map(|i| i.height()).max().unwrap_or(1);
    let mut out = RgbImage::from_pixel(width.max(1), height, Rgb(background));
    let mut x = 0;
    for img in images {
        imageops::replace(&mut out, *img, x as i64, 0);
        x += img.width() + gap;
    }
    out
}

/// Resizes to exactly `w`×`h` (triangle filter).
pub(crate) fn resize(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    if img.width() == w && img.height() == h {
        return img.clone();
    }
    imageops::resize(img, w.max(1), h.max(1), imageops::FilterType::Triangle)
}

/// Bilinear sample of a row-major `w`×`h` scalar field at continuous `(x, y)` (pixel centres at
/// integers), clamped at the border.
pub(crate) fn sample_bilinear(field: &[f32], w: usize, h: usize, x: f64, y: f64) -> f32 {
    let x = x.clamp(0.0, (w - 1) as f64);
    let y = y.clamp(0.0, (h - 1) as f64);
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = ((x - x0 as f64) as f32, (y - y0 as f64) as f32);
    let top = field[y0 * w + x0] * (1.0 - fx) + field[y0 * w + x1] * fx;
    let bottom = field[y1 * w + x0] * (1.0 - fx) + field[y1 * w + x1] * fx;
    top * (1.0 - fy) + bottom * fy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_renders_without_system_fonts() {
        let mut img = RgbImage::from_pixel(80, 20, Rgb([255, 255, 255]));
        let advance = text(&mut img, 2, 2, 14.0, [0, 0, 0], "conv4_3");
        assert!(advance > 20.0);
        let dark = img.pixels().filter(|p| p.0[0] < 128).count();
        assert!(dark > 20, "only {dark} dark pixels");
    }

    #[test]
    fn shapes_stay_inside_and_hstack_sizes() {
        let mut img = RgbImage::new(10, 10);
        circle(&mut img, [5.0, 5.0], 3.0, 1.0, true, [255, 0, 0]);
        line(&mut img, [-5.0, -5.0], [20.0, 20.0], 2.0, [0, 255, 0]);
        assert_eq!(img.get_pixel(5, 5).0[1], 255);
        let s = hstack(&[&img, &RgbImage::new(4, 12)], 3, [1, 2, 3]);
        assert_eq!(s.dimensions(), (17, 12));
        assert_eq!(s.get_pixel(11, 0).0, [1, 2, 3]);
    }
}
