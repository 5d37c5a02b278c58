//! Image synthesis from activated patterns: rebuild an image from the mean patches of the nodes it
//! activates (a non-learned stand-in for the TPAMI decoder, spec §4.4).

use crate::crops::{load_crops, CropSource};
use crate::draw;
use crate::error::{ReportError, Result};
use crate::geometry::{default_patch_side, node_pixel};
use crate::ranking::{check_layer, rank_nodes, top_nodes, validate_activations};
use expgraph_graph::{ExplanatoryGraph, ImageActivations};
use image::{imageops, Rgb, RgbImage};
use std::collections::BTreeMap;

/// How mean patches are built and pasted.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthesisParams {
    /// Each node's mean patch averages its patches in this many best training images.
    pub mean_over: usize,
    /// Mean patches are kept for the best `max_nodes` nodes of the layer (ranked as in galleries
    /// by their top-`mean_over` sum), which bounds memory on 20k-node layers.
    pub max_nodes: usize,
    /// Mean patches are stored at this resolution (px per side).
    pub patch_px: u32,
    /// Patch side in input pixels; `None` = the layer default (as in galleries).
    pub patch_side: Option<u32>,
    /// Fraction of the image's nodes, best first, that are pasted.
    pub top_fraction: f64,
}

impl Default for SynthesisParams {
    fn default() -> Self {
        Self { mean_over: 5, max_nodes: 2000, patch_px: 32, patch_side: None, top_fraction: 0.5 }
    }
}

/// Mean appearance of nodes of one layer over their best training images.
#[derive(Debug, Clone)]
pub struct MeanPatches {
    layer: usize,
    side: u32,
    patch_px: u32,
    /// node → `patch_px²·3` mean RGB values, row-major.
    patches: BTreeMap<usize, Vec<f32>>,
}

impl MeanPatches {
    /// Builds mean patches for graph layer `layer` from training activations and crops. Every crop
    /// is loaded once.
    pub fn build(
        graph: &ExplanatoryGraph,
        train: &[ImageActivations],
        layer: usize,
        crops: &dyn CropSource,
        params: &SynthesisParams,
    ) -> Result<Self> {
        if params.patch_px == 0 || params.mean_over == 0 {
            return Err(ReportError::invalid("synthesis params", "patch_px and mean_over must be > 0"));
        }
        let ranked = rank_nodes(graph, train, layer, params.mean_over)?;
        let gl = &graph.layers[layer];
        let side = params.patch_side.unwrap_or_else(|| default_patch_side(&gl.info.geometry, graph.input_size));
        // image → nodes that want a patch from it
        let mut wanted: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for r in ranked.iter().take(params.max_nodes) {
            for &(image, _) in &r.top_images {
                wanted.entry(image).or_default().push(r.node);
            }
        }
        let n = params.patch_px as usize;
        let mut sums: BTreeMap<usize, (Vec<f32>, u32)> = BTreeMap::new();
        for (&image, nodes) in &wanted {
            let crop =
                load_crops(crops, [image])?.remove(&image).ok_or_else(|| ReportError::invalid("crops", "lost crop"))?;
            let act = &train[image];
            let scale = crop.width() as f64 / graph.input_size as f64;
            let side_px = ((side as f64) * scale).round().max(1.0) as u32;
            for &node in nodes {
                let p = act.layers[layer].positions[node];
                let c = node_pixel(
                    &gl.info.geometry,
                    [p[0] as f64, p[1] as f64],
                    act.flipped,
                    graph.input_size,
                    crop.width(),
                );
                let Some(patch) = unclipped_patch(&crop, c, side_px, params.patch_px) else { continue };
                let entry = sums.entry(node).or_insert_with(|| (vec![0.0; n * n * 3], 0));
                for (s, v) in entry.0.iter_mut().zip(patch.as_raw()) {
                    *s += *v as f32;
                }
                entry.1 += 1;
            }
        }
        let patches = sums
            .into_iter()
            .map(|(node, (sum, count))| (node, sum.into_iter().map(|v| v / count as f32).collect()))
            .collect();
        Ok(Self { layer, side, patch_px: params.patch_px, patches })
    }

    /// Graph layer of these patches.
    pub fn layer(&self) -> usize {
        self.layer
    }

    /// Number of nodes that have a mean patch.
    pub fn len(&self) -> usize {
        self.patches.len()
    }

    /// Whether no node has a mean patch.
    pub fn is_empty(&self) -> bool {
        self.patches.is_empty()
    }

    /// The mean patch of `node` as an image, if it has one.
    pub fn patch_image(&self, node: usize) -> Option<RgbImage> {
        let p = self.patches.get(&node)?;
        let raw = p.iter().map(|v| v.round().clamp(0.0, 255.0) as u8).collect();
        RgbImage::from_raw(self.patch_px, self.patch_px, raw)
    }

    /// Rebuilds the image of `act` (a `width`×`height` crop) from the mean patches of its top
    /// nodes, each pasted at its inferred position with a Gaussian feather (σ = side/4) and
    /// weighted by its score; pixels no patch reaches are mid-grey.
    pub fn synthesize(
        &self,
        graph: &ExplanatoryGraph,
        act: &ImageActivations,
        width: u32,
        height: u32,
        top_fraction: f64,
    ) -> Result<RgbImage> {
        check_layer(graph, self.layer)?;
        validate_activations(graph, std::slice::from_ref(act))?;
        let gl = &graph.layers[self.layer];
        let la = &act.layers[self.layer];
        let (w, h) = (width as usize, height as usize);
        let mut acc = vec![0f64; w * h * 3];
        let mut weight = vec![0f64; w * h];
        let scale = width as f64 / graph.input_size as f64;
        let side = self.side as f64 * scale;
        let feather = 1.0 / (2.0 * (side / 4.0).powi(2));
        let n = self.patch_px as usize;
        for node in top_nodes(&la.scores, top_fraction) {
            let (Some(patch), score) = (self.patches.get(&node), la.scores[node] as f64) else { continue };
            if score <= 0.0 {
                continue;
            }
            let p = la.positions[node];
            let c = node_pixel(&gl.info.geometry, [p[0] as f64, p[1] as f64], act.flipped, graph.input_size, width);
            let (x0, y0) = (c[0] - side / 2.0, c[1] - side / 2.0);
            let xs = (x0.floor().max(0.0) as usize)..((x0 + side).ceil().max(0.0) as usize).min(w);
            let ys = (y0.floor().max(0.0) as usize)..((y0 + side).ceil().max(0.0) as usize).min(h);
            for y in ys {
                let v = ((y as f64 - y0) / side * n as f64 - 0.5).clamp(0.0, (n - 1) as f64);
                for x in xs.clone() {
                    let u = ((x as f64 - x0) / side * n as f64 - 0.5).clamp(0.0, (n - 1) as f64);
                    let d2 = (x as f64 - c[0]).powi(2) + (y as f64 - c[1]).powi(2);
                    let wgt = score * (-d2 * feather).exp();
                    let (ui, vi) = (u.round() as usize, v.round() as usize);
                    let src = (vi * n + ui) * 3;
                    let dst = y * w + x;
                    for ch in 0..3 {
                        acc[dst * 3 + ch] += wgt * patch[src + ch] as f64;
                    }
                    weight[dst] += wgt;
                }
            }
        }
        let mut out = RgbImage::from_pixel(width, height, Rgb([128, 128, 128]));
        for (i, p) in out.pixels_mut().enumerate() {
            if weight[i] > 1e-12 {
                *p = Rgb([0, 1, 2].map(|ch| (acc[i * 3 + ch] / weight[i]).round().clamp(0.0, 255.0) as u8));
            }
        }
        Ok(out)
    }
}

/// The `side`-px patch centred at `centre`, edge pixels repeated where it leaves the crop,
/// resized to `out`×`out`.
fn unclipped_patch(crop: &RgbImage, centre: [f64; 2], side: u32, out: u32) -> Option<RgbImage> {
    if !(centre[0].is_finite() && centre[1].is_finite()) {
        return None;
    }
    let x0 = (centre[0] + 0.5 - side as f64 / 2.0).round() as i64;
    let y0 = (centre[1] + 0.5 - side as f64 / 2.0).round() as i64;
    let (w, h) = (crop.width() as i64, crop.height() as i64);
    if x0 + side as i64 <= 0 || y0 + side as i64 <= 0 || x0 >= w || y0 >= h {
        return None;
    }
    let patch = RgbImage::from_fn(side, side, |x, y| {
        *crop.get_pixel((x0 + x as i64).clamp(0, w - 1) as u32, (y0 + y as i64).clamp(0, h - 1) as u32)
    });
    Some(imageops::resize(&patch, out, out, imageops::FilterType::Triangle))
}

/// The original crop and its synthesis side by side.
pub fn synthesis_pair(original: &RgbImage, synthesized: &RgbImage) -> RgbImage {
    draw::hstack(&[original, synthesized], 6, [255, 255, 255])
}
