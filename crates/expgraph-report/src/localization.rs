//! Localization overlays: predicted vs ground-truth part points and the vote map (spec §4.1).

use crate::colormap::Colormap;
use crate::draw;
use crate::error::{ReportError, Result};
use crate::heatmap::overlay_field;
use image::RgbImage;

/// A named point, `[x, y]` in 0-based pixels of the image it is drawn on.
#[derive(Debug, Clone, PartialEq)]
pub struct PartPoint {
    /// Part name (predictions and truths are paired by name).
    pub name: String,
    /// `[x, y]`, 0-based pixels.
    pub xy: [f64; 2],
}

impl PartPoint {
    /// From a spec-style point: `(h, w)` in 1-based pixels (e.g. `expgraph localize` output in the
    /// 224 object frame), drawn on an image of that frame.
    pub fn from_hw(name: impl Into<String>, h: f64, w: f64) -> Self {
        let frame = expgraph_geometry::FRAME_SIZE;
        Self { name: name.into(), xy: expgraph_geometry::PixelPoint::new(h, w).to_frame().to_image_xy(frame, frame) }
    }
}

/// A row-major score map over the image (any resolution; it is stretched to the image).
#[derive(Debug, Clone, PartialEq)]
pub struct VoteMap {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `width · height` values (any range; normalized to its min..max for display).
    pub values: Vec<f32>,
}

/// Truth: green ring; prediction: red cross; a yellow line joins the two points of a part.
pub const TRUTH_COLOR: [u8; 3] = [40, 220, 60];
/// Colour of predicted points.
pub const PREDICTION_COLOR: [u8; 3] = [235, 40, 40];
const PAIR_COLOR: [u8; 3] = [250, 220, 40];

/// Draws the vote map (jet, blended), then truths, predictions and their pairing lines over
/// `image`. Images smaller than 224 px are upscaled first (points scaled with them).
pub fn localization_overlay(
    image: &RgbImage,
    predicted: &[PartPoint],
    truth: &[PartPoint],
    vote_map: Option<&VoteMap>,
) -> Result<RgbImage> {
    if image.width() == 0 || image.height() == 0 {
        return Err(ReportError::invalid("localization", "empty image"));
    }
    let scale = (224.0 / image.width().min(image.height()) as f64).max(1.0);
    let (w, h) = ((image.width() as f64 * scale).round() as u32, (image.height() as f64 * scale).round() as u32);
    let mut out = draw::resize(image, w, h);
    if let Some(vm) = vote_map {
        if vm.width == 0 || vm.height == 0 || vm.values.len() != vm.width * vm.height {
            return Err(ReportError::invalid(
                "vote map",
                format!("{} values for a {}×{} map", vm.values.len(), vm.width, vm.height),
            ));
        }
        if vm.values.iter().any(|v| !v.is_finite()) {
            return Err(ReportError::invalid("vote map", "non-finite value"));
        }
        let (lo, hi) = vm.values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let span = if hi > lo { hi - lo } else { 1.0 };
        let norm: Vec<f32> = vm.values.iter().map(|v| (v - lo) / span).collect();
        let mut field = Vec::with_capacity((w * h) as usize);
        for y in 0..h {
            for x in 0..w {
                let sx = (x as f64 + 0.5) * vm.width as f64 / w as f64 - 0.5;
                let sy = (y as f64 + 0.5) * vm.height as f64 / h as f64 - 0.5;
                field.push(draw::sample_bilinear(&norm, vm.width, vm.height, sx, sy));
            }
        }
        out = overlay_field(&out, &field, Colormap::Jet, 0.6)?;
    }
    let at = |p: &PartPoint| [(p.xy[0] + 0.5) * scale - 0.5, (p.xy[1] + 0.5) * scale - 0.5];
    for p in predicted {
        if let Some(t) = truth.iter().find(|t| t.name == p.name) {
            draw::line(&mut out, at(p), at(t), 1.5, PAIR_COLOR);
        }
    }
    for t in truth {
        draw::circle(&mut out, at(t), 6.0, 2.5, false, TRUTH_COLOR);
    }
    for p in predicted {
        let c = at(p);
        draw::line(&mut out, [c[0] - 6.0, c[1] - 6.0], [c[0] + 6.0, c[1] + 6.0], 2.5, PREDICTION_COLOR);
        draw::line(&mut out, [c[0] - 6.0, c[1] + 6.0], [c[0] + 6.0, c[1] - 6.0], 2.5, PREDICTION_COLOR);
    }
    Ok(out)
}
