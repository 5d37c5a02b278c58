//! The PNGs the pages show, drawn on demand and kept in a bounded in-memory cache: an image's
//! crop, a node's best patches, a node's heat map in one image.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

use expgraph_report::{cut_patch, default_patch_side, overlay_field, HeatmapParams, ReportError, RgbImage};
use image::{imageops, Rgb};

use crate::{ExploreError, Explorer, Result};

/// Side of a patch tile in a strip.
pub const TILE: u32 = 96;
/// Most patches in one strip.
pub const MAX_PATCHES: usize = 20;
const GAP: u32 = 4;

/// A PNG the explorer can draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Figure {
    /// The object crop of an image.
    Crop { image: usize },
    /// The `count` best patches of a node, best first, in one row.
    Patches { layer: usize, node: usize, count: usize },
    /// The `count` best patches of a raw filter (at its argmax in the original view).
    FilterPatches { layer: usize, filter: usize, count: usize },
    /// A node's Gaussian (its σ, at its inferred position) over one image's crop.
    Heat { layer: usize, node: usize, image: usize },
}

impl Figure {
    /// Its route on the server ([`crate::server`]).
    pub fn route(&self) -> String {
        match *self {
            Figure::Crop { image } => format!("/png/crop/{image}.png"),
            Figure::Patches { layer, node, count } => format!("/png/patches/{layer}/{node}.png?count={count}"),
            Figure::FilterPatches { layer, filter, count } => {
                format!("/png/filter/{layer}/{filter}.png?count={count}")
            }
            Figure::Heat { layer, node, image } => format!("/png/heat/{layer}/{node}/{image}.png"),
        }
    }

    /// Its file name in a static export ([`crate::export_site`]).
    pub fn file_name(&self) -> String {
        match *self {
            Figure::Crop { image } => format!("crop-{image}.png"),
            Figure::Patches { layer, node, count } => format!("patches-{layer}-{node}-{count}.png"),
            Figure::FilterPatches { layer, filter, count } => format!("filter-{layer}-{filter}-{count}.png"),
            Figure::Heat { layer, node, image } => format!("heat-{layer}-{node}-{image}.png"),
        }
    }
}

/// The cached PNGs with the time each was drawn, and the clock.
type Entries = (HashMap<Figure, (u64, Arc<Vec<u8>>)>, u64);

/// Encoded PNGs by figure, at most `capacity` of them (the oldest half is dropped when full).
pub struct PngCache {
    capacity: usize,
    inner: Mutex<Entries>,
}

impl PngCache {
    /// A cache of at most `capacity` PNGs.
    pub fn new(capacity: usize) -> Self {
        PngCache { capacity: capacity.max(1), inner: Mutex::new((HashMap::new(), 0)) }
    }

    /// The PNG of `figure`, drawn on the first request.
    pub fn get(&self, ex: &Explorer, figure: Figure) -> Result<Arc<Vec<u8>>> {
        if let Some((_, png)) = self.lock().0.get(&figure) {
            return Ok(png.clone());
        }
        let png = Arc::new(encode(&draw(ex, figure)?)?);
        let mut guard = self.lock();
        let (map, clock) = &mut *guard;
        *clock += 1;
        if map.len() >= self.capacity {
            let mut ages: Vec<u64> = map.values().map(|(t, _)| *t).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            map.retain(|_, (t, _)| *t > cut);
        }
        map.insert(figure, (*clock, png.clone()));
        Ok(png)
    }

    /// PNGs held.
    pub fn len(&self) -> usize {
        self.lock().0.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while drawing never happens under the lock; a poisoned map is still valid.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `img` as PNG bytes.
pub(crate) fn encode(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

fn crop(ex: &Explorer, image: usize) -> Result<RgbImage> {
    ex.check_image(image)?;
    ex.crops().crop(image).map_err(|source| ExploreError::Report(ReportError::Crop { index: image, source }))
}

/// Draws `figure`.
pub fn draw(ex: &Explorer, figure: Figure) -> Result<RgbImage> {
    match figure {
        Figure::Crop { image } => crop(ex, image),
        Figure::Patches { layer, node, count } => {
            ex.check_node(layer, node)?;
            let acts = ex.activations();
            let top = ex.rank(layer, node).map_or(&[][..], |r| r.top_images.as_slice());
            let places =
                top.iter().map(|&(image, _)| (image, acts[image].layers[layer].positions[node], acts[image].flipped));
            patch_strip(ex, layer, places.take(count).collect(), count)
        }
        Figure::FilterPatches { layer, filter, count } => {
            let top = ex.filter_top(layer, filter).ok_or_else(|| {
                ExploreError::NotFound(format!(
                    "raw filter {filter} of layer {layer} (no raw filters, or no such filter)"
                ))
            })?;
            patch_strip(
                ex,
                layer,
                top.iter().take(count).map(|&(image, cell, _)| (image, cell, false)).collect(),
                count,
            )
        }
        Figure::Heat { layer, node, image } => {
            ex.check_node(layer, node)?;
            let crop = crop(ex, image)?;
            let g = ex.graph();
            let gl = &g.layers[layer];
            let (w, h) = (crop.width(), crop.height());
            let c = ex.node_xy(layer, node, image, w);
            let sigma = (gl.sigma_pixels(node) * w as f64 / g.input_size as f64).max(1.0);
            let inv = 1.0 / (2.0 * sigma * sigma);
            let mut field = Vec::with_capacity(w as usize * h as usize);
            for y in 0..h {
                for x in 0..w {
                    let d2 = (x as f64 - c[0]).powi(2) + (y as f64 - c[1]).powi(2);
                    field.push((-d2 * inv).exp() as f32);
                }
            }
            let params = HeatmapParams::default();
            Ok(overlay_field(&crop, &field, params.colormap, params.max_alpha)?)
        }
    }
}

/// A row of `count` tiles: the patches of `layer`'s patch side centred at each `(image, map
/// cell, flipped view)` of `places`, best first; missing ones stay grey.
fn patch_strip(ex: &Explorer, layer: usize, places: Vec<(usize, [f32; 2], bool)>, count: usize) -> Result<RgbImage> {
    if count == 0 || count > MAX_PATCHES {
        return Err(ExploreError::BadRequest(format!("count={count}: expected 1 … {MAX_PATCHES}")));
    }
    let g = ex.graph();
    let side = default_patch_side(&g.layers[layer].info.geometry, g.input_size);
    let width = count as u32 * (TILE + GAP) - GAP;
    let mut strip = RgbImage::from_pixel(width, TILE, Rgb([230, 230, 230]));
    for (c, (image, cell, flipped)) in places.into_iter().enumerate() {
        let crop = crop(ex, image)?;
        let centre = ex.map_xy(layer, cell, flipped, crop.width());
        let scaled = ((side as f64) * crop.width() as f64 / g.input_size as f64).round().max(1.0) as u32;
        if let Some((_, tile)) = cut_patch(&crop, centre, scaled, TILE) {
            imageops::replace(&mut strip, &tile, (c as u32 * (TILE + GAP)) as i64, 0);
        }
    }
    Ok(strip)
}
