//! Node patch galleries (spec §4.4): the top nodes of a layer, each with its best image patches.

use crate::crops::{load_crops, CropSource};
use crate::draw;
use crate::error::{ReportError, Result};
use crate::geometry::{default_patch_side, node_pixel, patch_box, PixelBox};
use crate::ranking::rank_nodes;
use expgraph_graph::{ExplanatoryGraph, ImageActivations};
use image::{imageops, Rgb, RgbImage};

/// How a gallery is drawn. Defaults follow spec §4.4 (top-50 ranking, 20 nodes × 5 patches), with
/// 96 px tiles instead of 150 to keep pages light.
#[derive(Debug, Clone, PartialEq)]
pub struct GalleryParams {
    /// Nodes shown (best first).
    pub nodes: usize,
    /// Patches per node.
    pub patches_per_node: usize,
    /// Nodes are ranked by the sum of their `rank_top_k` best scores.
    pub rank_top_k: usize,
    /// Patch side in input pixels; `None` = [`default_patch_side`] of the layer (60 px at conv4_3,
    /// 80 px at conv5_2).
    pub patch_side: Option<u32>,
    /// Side of each resized patch tile in the PNG.
    pub tile: u32,
}

impl Default for GalleryParams {
    fn default() -> Self {
        Self { nodes: 20, patches_per_node: 5, rank_top_k: 50, patch_side: None, tile: 96 }
    }
}

/// One patch of a gallery.
#[derive(Debug, Clone, PartialEq)]
pub struct GalleryPatch {
    /// Image index.
    pub image_index: usize,
    /// The node's score in that image.
    pub score: f32,
    /// Where the patch was cut, in crop pixels (`None` when the position fell outside the crop).
    pub bbox: Option<PixelBox>,
}

/// One row of a gallery.
#[derive(Debug, Clone, PartialEq)]
pub struct GalleryRow {
    /// Node index in the layer.
    pub node: usize,
    /// Filter (channel) of the node.
    pub filter: usize,
    /// Sum of the node's top-k scores.
    pub total: f64,
    /// Its patches, best first.
    pub patches: Vec<GalleryPatch>,
}

/// A rendered gallery.
#[derive(Debug, Clone)]
pub struct Gallery {
    /// Layer name.
    pub layer: String,
    /// Patch side used, in input pixels.
    pub patch_side: u32,
    /// Rows, best node first.
    pub rows: Vec<GalleryRow>,
    /// The grid PNG: one row per node (label, then the patches).
    pub image: RgbImage,
}

const LABEL_WIDTH: u32 = 120;
const GAP: u32 = 4;
const HEADER: u32 = 24;
const BACKGROUND: [u8; 3] = [245, 245, 245];

/// Cuts the `side`-px patch centred at `centre` (0-based crop pixels), clipped at the border, and
/// resizes it to `tile`×`tile` (spec §4.4). `None` when the centre lies off the crop.
pub fn cut_patch(crop: &RgbImage, centre: [f64; 2], side: u32, tile: u32) -> Option<(PixelBox, RgbImage)> {
    let b = patch_box(centre, side, crop.width(), crop.height())?;
    let view = imageops::crop_imm(crop, b.x0, b.y0, b.width(), b.height()).to_image();
    Some((b, draw::resize(&view, tile, tile)))
}

/// Draws the patch gallery of graph layer `layer` from the training activations and crops.
pub fn node_gallery(
    graph: &ExplanatoryGraph,
    acts: &[ImageActivations],
    layer: usize,
    crops: &dyn CropSource,
    params: &GalleryParams,
) -> Result<Gallery> {
    if params.tile == 0 || params.patches_per_node == 0 {
        return Err(ReportError::invalid("gallery params", "tile and patches_per_node must be > 0"));
    }
    let ranked = rank_nodes(graph, acts, layer, params.rank_top_k.max(params.patches_per_node))?;
    let gl = &graph.layers[layer];
    let side_input = params.patch_side.unwrap_or_else(|| default_patch_side(&gl.info.geometry, graph.input_size));
    let shown: Vec<_> = ranked.into_iter().take(params.nodes).collect();
    let needed = shown.iter().flat_map(|r| r.top_images.iter().take(params.patches_per_node).map(|&(i, _)| i));
    let crops = load_crops(crops, needed.collect::<Vec<_>>())?;

    let tile = params.tile;
    let width = LABEL_WIDTH + params.patches_per_node as u32 * (tile + GAP) + GAP;
    let height = HEADER + shown.len() as u32 * (tile + GAP) + GAP;
    let mut image = RgbImage::from_pixel(width, height, Rgb(BACKGROUND));
    draw::text(
        &mut image,
        GAP as i64,
        4,
        15.0,
        [20, 20, 20],
        &format!("{}: top {} nodes, patch {} px", gl.info.name, shown.len(), side_input),
    );
    let mut rows = Vec::with_capacity(shown.len());
    for (r, ranked) in shown.iter().enumerate() {
        let y = HEADER + r as u32 * (tile + GAP);
        let filter = gl.filter_of(ranked.node);
        let k = ranked.node % gl.nodes_per_filter.max(1);
        draw::text(&mut image, GAP as i64, y as i64 + 4, 13.0, [20, 20, 20], &format!("filter {filter}, k {k}"));
        draw::text(&mut image, GAP as i64, y as i64 + 22, 12.0, [70, 70, 70], &format!("node {}", ranked.node));
        draw::text(
            &mut image,
            GAP as i64,
            y as i64 + 40,
            12.0,
            [70, 70, 70],
            &format!("top-k sum {:.3}", ranked.total),
        );
        let mut patches = Vec::new();
        for (c, &(image_index, score)) in ranked.top_images.iter().take(params.patches_per_node).enumerate() {
            let x = LABEL_WIDTH + c as u32 * (tile + GAP);
            let bbox = crops.get(&image_index).and_then(|crop| {
                let act = &acts[image_index];
                let pos = act.layers[layer].positions[ranked.node];
                let scale = crop.width() as f64 / graph.input_size as f64;
                let centre = node_pixel(
                    &gl.info.geometry,
                    [pos[0] as f64, pos[1] as f64],
                    act.flipped,
                    graph.input_size,
                    crop.width(),
                );
                let side = ((side_input as f64) * scale).round().max(1.0) as u32;
                let (b, tile_img) = cut_patch(crop, centre, side, tile)?;
                imageops::replace(&mut image, &tile_img, x as i64, y as i64);
                Some(b)
            });
            if bbox.is_none() {
                draw::fill_rect(&mut image, x as i64, y as i64, tile, tile, [200, 200, 200]);
            }
            patches.push(GalleryPatch { image_index, score, bbox });
        }
        rows.push(GalleryRow { node: ranked.node, filter, total: ranked.total, patches });
    }
    Ok(Gallery { layer: gl.info.name.clone(), patch_side: side_input, rows, image })
}
