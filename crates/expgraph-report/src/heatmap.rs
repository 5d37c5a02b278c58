//! Heat maps: where the firing nodes of a layer sit in one image (spec §1.7).

use crate::colormap::Colormap;
use crate::draw;
use crate::error::{ReportError, Result};
use crate::geometry::node_pixel;
use crate::ranking::{check_layer, top_nodes, validate_activations};
use expgraph_graph::{ExplanatoryGraph, ImageActivations};
use image::{Rgb, RgbImage};

/// How a heat map is drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatmapParams {
    /// Fraction of the layer's nodes, best-scoring first, that contribute (0.5 = top 50%).
    pub top_fraction: f64,
    /// The field is accumulated on a grid of this many crop pixels per cell, then upsampled
    /// bilinearly (a 4-px grid keeps 10k Gaussians per image fast).
    pub cell_px: u32,
    /// Opacity of the colour at the field's maximum (scaled by the field value).
    pub max_alpha: f32,
    /// Colour map.
    pub colormap: Colormap,
}

impl Default for HeatmapParams {
    fn default() -> Self {
        Self { top_fraction: 0.5, cell_px: 4, max_alpha: 0.7, colormap: Colormap::Viridis }
    }
}

/// The heat field of graph layer `layer` in one image, over a `width`×`height` crop, row-major,
/// normalized to a maximum of 1 (all zeros when no node scores above 0): the sum over the top
/// `top_fraction` nodes of `score · exp(−d² / 2σ²)`, with each node at its inferred position
/// (mirrored back when the view was flipped) and σ its learned deviation in pixels
/// (`σ_map · stride`).
pub fn heat_field(
    graph: &ExplanatoryGraph,
    act: &ImageActivations,
    layer: usize,
    width: u32,
    height: u32,
    params: &HeatmapParams,
) -> Result<Vec<f32>> {
    check_layer(graph, layer)?;
    validate_activations(graph, std::slice::from_ref(act))?;
    if params.cell_px == 0 || width == 0 || height == 0 {
        return Err(ReportError::invalid("heat map", "cell_px, width and height must be > 0"));
    }
    let gl = &graph.layers[layer];
    let la = &act.layers[layer];
    let cell = params.cell_px as f64;
    let (gw, gh) = (width.div_ceil(params.cell_px) as usize, height.div_ceil(params.cell_px) as usize);
    let mut grid = vec![0f64; gw * gh];
    let scale = width as f64 / graph.input_size as f64;
    for node in top_nodes(&la.scores, params.top_fraction) {
        let score = la.scores[node] as f64;
        if score <= 0.0 {
            continue;
        }
        let pos = la.positions[node];
        let c = node_pixel(&gl.info.geometry, [pos[0] as f64, pos[1] as f64], act.flipped, graph.input_size, width);
        let sigma = gl.sigma.get(node).copied().unwrap_or(1.0);
        let sigma_px = (sigma * gl.info.geometry.stride * scale).max(cell * 0.5);
        if !(c[0].is_finite() && c[1].is_finite() && sigma_px.is_finite()) {
            continue;
        }
        // Grid cell (i, j) has its centre at crop pixel ((i + 0.5)·cell − 0.5, …).
        let (gx, gy) = ((c[0] + 0.5) / cell - 0.5, (c[1] + 0.5) / cell - 0.5);
        let reach = 3.0 * sigma_px / cell;
        let (i0, i1) = ((gx - reach).floor().max(0.0) as usize, ((gx + reach).ceil().max(0.0) as usize).min(gw - 1));
        let (j0, j1) = ((gy - reach).floor().max(0.0) as usize, ((gy + reach).ceil().max(0.0) as usize).min(gh - 1));
        let inv = 1.0 / (2.0 * (sigma_px / cell).powi(2));
        for j in j0..=j1 {
            let dy2 = (j as f64 - gy).powi(2);
            for i in i0..=i1 {
                let d2 = (i as f64 - gx).powi(2) + dy2;
                grid[j * gw + i] += score * (-d2 * inv).exp();
            }
        }
    }
    let max = grid.iter().copied().fold(0.0, f64::max);
    let grid: Vec<f32> = grid.iter().map(|&v| if max > 0.0 { (v / max) as f32 } else { 0.0 }).collect();
    let mut field = Vec::with_capacity(width as usize * height as usize);
    for y in 0..height {
        for x in 0..width {
            let (sx, sy) = ((x as f64 + 0.5) / cell - 0.5, (y as f64 + 0.5) / cell - 0.5);
            field.push(draw::sample_bilinear(&grid, gw, gh, sx, sy));
        }
    }
    Ok(field)
}

/// A colour-mapped field alpha-blended over `image` (opacity grows with the field value).
pub fn overlay_field(image: &RgbImage, field: &[f32], colormap: Colormap, max_alpha: f32) -> Result<RgbImage> {
    if field.len() != image.width() as usize * image.height() as usize {
        return Err(ReportError::invalid(
            "overlay",
            format!("field of {} values for a {}×{} image", field.len(), image.width(), image.height()),
        ));
    }
    let mut out = image.clone();
    for (p, &v) in out.pixels_mut().zip(field) {
        let color = colormap.rgb(v);
        let a = (max_alpha * v.clamp(0.0, 1.0)).clamp(0.0, 1.0);
        *p = Rgb([0, 1, 2].map(|c| (p.0[c] as f32 * (1.0 - a) + color[c] as f32 * a).round() as u8));
    }
    Ok(out)
}

/// The heat map of graph layer `layer` blended over the image's crop.
pub fn heatmap_overlay(
    graph: &ExplanatoryGraph,
    act: &ImageActivations,
    layer: usize,
    crop: &RgbImage,
    params: &HeatmapParams,
) -> Result<RgbImage> {
    let field = heat_field(graph, act, layer, crop.width(), crop.height(), params)?;
    overlay_field(crop, &field, params.colormap, params.max_alpha)
}
