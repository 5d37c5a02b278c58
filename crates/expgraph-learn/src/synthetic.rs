//! Synthetic feature maps with planted part structure, for tests and benchmarks (spec §7
//! "Suggested tests", Addendum last bullet).
//!
//! An "object" has `parts` landmarks. In every image the whole object is translated by a random
//! global shift, and each part additionally moves by its own random shift, so only blobs of the
//! same part move together. Every filter of every layer has 2–3 Gaussian blobs, each attached to
//! a different part (at a small fixed offset from it), with a per-image random strength: which
//! blob is a filter's strongest changes from image to image, so the raw filter argmax jumps
//! between parts while a node that locks onto one blob stays with its part. Noise blobs at random
//! places and sparse, weak background noise are added (dense background would make empty nodes
//! jump around, so the parent pool's low-motion filter would drop the real parts, spec §2.2). Blobs of different layers attached to the same
//! part co-move (the planted parent–child cliques). Optionally a share of the images shows the
//! object mirrored; their mirrored view (a real column flip) shows it upright again.
//!
//! ```
//! use expgraph_learn::synthetic::{SyntheticSpec, generate};
//! let data = generate(&SyntheticSpec { num_images: 4, channels: 3, ..SyntheticSpec::default() });
//! assert_eq!(data.features.layers.len(), 2);
//! assert_eq!(data.landmarks_px.len(), 4);
//! ```

use expgraph_cache::{InMemoryLayer, LayerInfo, TapGeometry};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::InMemoryFeatures;

/// One layer of synthetic maps.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticLayer {
    /// Layer name.
    pub name: String,
    /// Square map side.
    pub size: usize,
    /// Stride in input pixels.
    pub stride: f64,
}

impl SyntheticLayer {
    /// A layer whose geometry tiles a 224 input (`first_centre = stride/2 + 0.5`).
    pub fn new(name: &str, size: usize, stride: f64) -> Self {
        Self { name: name.into(), size, stride }
    }

    fn info(&self, channels: usize) -> LayerInfo {
        LayerInfo {
            name: self.name.clone(),
            channels,
            height: self.size,
            width: self.size,
            geometry: TapGeometry {
                stride: self.stride,
                first_centre: self.stride / 2.0 + 0.5,
                receptive_field: 4.0 * self.stride,
            },
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSpec {
    /// Number of images.
    pub num_images: usize,
    /// Filters per layer.
    pub channels: usize,
    /// Layers, shallowest first (default: a 28×28 stride-8 `low` and a 14×14 stride-16 `top`).
    pub layers: Vec<SyntheticLayer>,
    /// Number of independently moving parts (landmarks).
    pub parts: usize,
    /// Global translation of the object, uniform in ± this many input pixels per axis.
    pub translation_px: f64,
    /// Each part's own motion, uniform in ± this many input pixels per axis.
    pub part_motion_px: f64,
    /// Noise blobs per filter and image.
    pub noise_blobs: usize,
    /// Share of images whose object appears mirrored (0 = none).
    pub mirrored_share: f64,
    /// Also store a mirrored view of every image.
    pub with_flipped_view: bool,
    /// Seed.
    pub seed: u64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        Self {
            num_images: 40,
            channels: 6,
            layers: vec![SyntheticLayer::new("low", 28, 8.0), SyntheticLayer::new("top", 14, 16.0)],
            parts: 4,
            translation_px: 12.0,
            part_motion_px: 12.0,
            noise_blobs: 1,
            mirrored_share: 0.0,
            with_flipped_view: false,
            seed: 1,
        }
    }
}

/// A planted blob of one filter.
#[derive(Debug, Clone, PartialEq)]
pub struct PlantedBlob {
    /// The part it is attached to.
    pub part: usize,
    /// Fixed offset from the part's landmark, input pixels `(h, w)`.
    pub offset_px: [f64; 2],
    /// Base amplitude (scaled per image by `strength`).
    pub amplitude: f64,
    /// Blob std in map cells.
    pub sd_cells: f64,
    /// Per-image strength factor.
    pub strength: Vec<f64>,
}

/// Generated features and the ground truth.
#[derive(Debug, Clone)]
pub struct SyntheticData {
    /// The feature maps (`backbone = "synthetic"`, input 224).
    pub features: InMemoryFeatures,
    /// `[image][part]` landmark position in input pixels (1-based, original frame).
    pub landmarks_px: Vec<Vec<[f64; 2]>>,
    /// `[image]` whether the object appears mirrored in the original view.
    pub mirrored: Vec<bool>,
    /// `[layer][channel][blob]`.
    pub blobs: Vec<Vec<Vec<PlantedBlob>>>,
    /// The layer specs.
    pub layers: Vec<SyntheticLayer>,
}

impl SyntheticData {
    /// Where blob `b` of `channel` in `layer` is in image `image`, map coordinates of the
    /// original view (1-based).
    pub fn blob_position(&self, layer: usize, channel: usize, b: usize, image: usize) -> [f64; 2] {
        let blob = &self.blobs[layer][channel][b];
        let lm = self.landmarks_px[image][blob.part];
        let g = self.layers[layer].info(1).geometry;
        let mut w_off = blob.offset_px[1];
        if self.mirrored[image] {
            w_off = -w_off;
        }
        [g.pixel_to_map(lm[0] + blob.offset_px[0]), g.pixel_to_map(lm[1] + w_off)]
    }
}

/// Generate synthetic features with planted parts (deterministic for a seed).
pub fn generate(spec: &SyntheticSpec) -> SyntheticData {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let n = spec.num_images;
    // Part base positions: spread on a ring around the centre, at least ~55 px apart.
    let base: Vec<[f64; 2]> = (0..spec.parts)
        .map(|p| {
            let a = std::f64::consts::TAU * p as f64 / spec.parts.max(1) as f64 + rng.random_range(-0.2..0.2);
            let r = rng.random_range(45.0..55.0);
            [112.5 + r * a.sin(), 112.5 + r * a.cos()]
        })
        .collect();
    let mirrored: Vec<bool> = (0..n).map(|_| rng.random::<f64>() < spec.mirrored_share).collect();
    let landmarks_px: Vec<Vec<[f64; 2]>> = (0..n)
        .map(|i| {
            let t =
                [rng.random_range(-1.0..1.0) * spec.translation_px, rng.random_range(-1.0..1.0) * spec.translation_px];
            base.iter()
                .map(|b| {
                    let m = [
                        rng.random_range(-1.0..1.0) * spec.part_motion_px,
                        rng.random_range(-1.0..1.0) * spec.part_motion_px,
                    ];
                    let w = b[1] + t[1] + m[1];
                    let w = if mirrored[i] { expgraph_geometry::mirror(w, 224.0) } else { w };
                    [b[0] + t[0] + m[0], w]
                })
                .collect()
        })
        .collect();
    let mut blobs = Vec::new();
    let mut layers = Vec::new();
    for layer in &spec.layers {
        let chans: Vec<Vec<PlantedBlob>> = (0..spec.channels)
            .map(|_| {
                let count = rng.random_range(2..=3usize).min(spec.parts);
                let mut parts: Vec<usize> = (0..spec.parts).collect();
                for i in 0..count {
                    let j = rng.random_range(i..parts.len());
                    parts.swap(i, j);
                }
                parts[..count]
                    .iter()
                    .map(|&part| PlantedBlob {
                        part,
                        offset_px: [
                            rng.random_range(-0.5..0.5) * layer.stride,
                            rng.random_range(-0.5..0.5) * layer.stride,
                        ],
                        amplitude: rng.random_range(2.0..4.0),
                        sd_cells: rng.random_range(0.6..0.9),
                        strength: (0..n).map(|_| rng.random_range(0.3..1.7)).collect(),
                    })
                    .collect()
            })
            .collect();
        blobs.push(chans);
    }
    let data_stub = SyntheticData {
        features: InMemoryFeatures {
            backbone: String::new(),
            input_size: 224,
            image_ids: Vec::new(),
            layers: Vec::new(),
        },
        landmarks_px: landmarks_px.clone(),
        mirrored: mirrored.clone(),
        blobs: blobs.clone(),
        layers: spec.layers.clone(),
    };
    for (l, layer) in spec.layers.iter().enumerate() {
        let s = layer.size;
        let c = spec.channels;
        let mut maps = vec![0.0f32; n * c * s * s];
        for i in 0..n {
            for ch in 0..c {
                let map = &mut maps[(i * c + ch) * s * s..(i * c + ch + 1) * s * s];
                for v in map.iter_mut() {
                    *v = (rng.random_range(-1.0f32..0.1)).max(0.0);
                }
                for (b, blob) in blobs[l][ch].iter().enumerate() {
                    let p = data_stub.blob_position(l, ch, b, i);
                    add_blob(map, s, p, blob.amplitude * blob.strength[i], blob.sd_cells);
                }
                for _ in 0..spec.noise_blobs {
                    let p = [rng.random_range(1.0..s as f64), rng.random_range(1.0..s as f64)];
                    let amp = rng.random_range(0.5..2.0);
                    let sd = rng.random_range(0.6..1.2);
                    add_blob(map, s, p, amp, sd);
                }
            }
        }
        let flipped = spec.with_flipped_view.then(|| {
            let mut f = maps.clone();
            for row in f.chunks_exact_mut(s) {
                row.reverse();
            }
            f
        });
        let info = layer.info(c);
        layers.push(
            InMemoryLayer::new(info, maps, flipped).unwrap_or_else(|e| unreachable!("synthetic maps are valid: {e}")),
        );
    }
    SyntheticData {
        features: InMemoryFeatures {
            backbone: "synthetic".into(),
            input_size: 224,
            image_ids: (0..n).map(|i| format!("synthetic-{i:04}")).collect(),
            layers,
        },
        ..data_stub
    }
}

fn add_blob(map: &mut [f32], s: usize, p: [f64; 2], amp: f64, sd: f64) {
    for r in 0..s {
        for c in 0..s {
            let d = ((r as f64 + 1.0) - p[0]).powi(2) + ((c as f64 + 1.0) - p[1]).powi(2);
            map[r * s + c] += (amp * (-d / (2.0 * sd * sd)).exp()) as f32;
        }
    }
}
