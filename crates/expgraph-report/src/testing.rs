//! Synthetic graphs, activations and crops for tests and examples (feature `testing`).
//! Deterministic: a SplitMix64 stream seeded by the caller.

use crate::export::{ExportEdge, ExportLayer, ExportNode, GraphExport, GRAPH_EXPORT_SCHEMA, GRAPH_EXPORT_VERSION};
use expgraph_graph::{ExplanatoryGraph, ImageActivations, LayerActivations, TapGeometry};
use image::{Rgb, RgbImage};

/// SplitMix64: tiny seeded generator (no dependency, stable across platforms).
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A stream seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A two-layer VGG-like graph: `conv4_3` (28×28, stride 8) below `conv5_2` (14×14, stride 16),
/// `channels` filters and `k` nodes per filter in each, two parents per lower node.
pub fn synthetic_graph(channels: usize, k: usize, seed: u64) -> crate::Result<ExplanatoryGraph> {
    let mut rng = SplitMix::new(seed);
    let specs = [("conv4_3", 28usize, 8.0, 4.5, 92.0), ("conv5_2", 14usize, 16.0, 8.5, 164.0)];
    let upper_nodes = channels * k;
    let layers = specs
        .iter()
        .enumerate()
        .map(|(index, &(name, side, stride, first_centre, receptive_field))| {
            let nodes = (0..channels * k)
                .map(|n| {
                    let mu = [1.0 + rng.unit() * (side - 1) as f64, 1.0 + rng.unit() * (side - 1) as f64];
                    let parents = if index == 0 {
                        (0..2)
                            .map(|_| ExportEdge {
                                node: (rng.next_u64() % upper_nodes as u64) as u32,
                                weight: rng.unit() as f32,
                            })
                            .collect()
                    } else {
                        vec![]
                    };
                    let g = TapGeometry { stride, first_centre, receptive_field };
                    ExportNode {
                        index: n,
                        filter: n / k,
                        k: n % k,
                        mu,
                        mu_pixel: [g.map_to_pixel(mu[0]), g.map_to_pixel(mu[1])],
                        sigma: 0.5 + 2.5 * rng.unit(),
                        mean_position: mu,
                        parents,
                    }
                })
                .collect();
            ExportLayer {
                index,
                name: name.into(),
                channels,
                height: side,
                width: side,
                geometry: TapGeometry { stride, first_centre, receptive_field },
                nodes_per_filter: k,
                score_norm: 1.0,
                nodes,
            }
        })
        .collect();
    let export = GraphExport {
        schema: GRAPH_EXPORT_SCHEMA.into(),
        schema_version: GRAPH_EXPORT_VERSION,
        backbone: "synthetic".into(),
        input_size: 224,
        params: serde_json::Value::Null,
        layers,
    };
    export.to_graph()
}

/// Activations of `images` images: each node near its μ (±1 map cell), scores in `[0, 2)`,
/// every third image flipped.
pub fn synthetic_activations(graph: &ExplanatoryGraph, images: usize, seed: u64) -> Vec<ImageActivations> {
    let mut rng = SplitMix::new(seed);
    (0..images)
        .map(|i| ImageActivations {
            image_id: format!("img{i:03}"),
            flipped: i % 3 == 2,
            layers: graph
                .layers
                .iter()
                .map(|l| LayerActivations {
                    layer: l.info.name.clone(),
                    positions: l
                        .mu
                        .iter()
                        .map(|m| [(m[0] + rng.unit() * 2.0 - 1.0) as f32, (m[1] + rng.unit() * 2.0 - 1.0) as f32])
                        .collect(),
                    scores: (0..l.num_nodes()).map(|_| (rng.unit() * 2.0) as f32).collect(),
                })
                .collect(),
        })
        .collect()
}

/// Raw filter maxima of `acts`' images (one "node" per filter: its argmax cell in the original
/// view and its value, as `expgraph_localize::filter_argmaxes` gives them): filter f of image i
/// peaks at a cell that moves with i.
pub fn synthetic_filter_maxima(graph: &ExplanatoryGraph, acts: &[ImageActivations]) -> Vec<ImageActivations> {
    acts.iter()
        .enumerate()
        .map(|(i, a)| ImageActivations {
            image_id: a.image_id.clone(),
            flipped: false,
            layers: graph
                .layers
                .iter()
                .map(|l| LayerActivations {
                    layer: l.info.name.clone(),
                    positions: (0..l.info.channels).map(|f| [(2 + (i + f) % 9) as f32, (3 + f) as f32]).collect(),
                    scores: (0..l.info.channels).map(|f| ((i * 7 + f * 3) % 11) as f32).collect(),
                })
                .collect(),
        })
        .collect()
}

/// `images` colourful `side`×`side` crops (gradients plus a few discs), distinct per image.
pub fn synthetic_crops(images: usize, side: u32, seed: u64) -> Vec<RgbImage> {
    let mut rng = SplitMix::new(seed);
    (0..images)
        .map(|_| {
            let base = [rng.unit(), rng.unit(), rng.unit()];
            let discs: Vec<([f64; 2], f64, [u8; 3])> = (0..4)
                .map(|_| {
                    let c = [rng.unit() * side as f64, rng.unit() * side as f64];
                    let colour = [0, 1, 2].map(|_| (rng.unit() * 255.0) as u8);
                    (c, 10.0 + rng.unit() * side as f64 / 6.0, colour)
                })
                .collect();
            RgbImage::from_fn(side, side, |x, y| {
                for (c, r, colour) in &discs {
                    if (x as f64 - c[0]).powi(2) + (y as f64 - c[1]).powi(2) < r * r {
                        return Rgb(*colour);
                    }
                }
                let t = (x + y) as f64 / (2 * side) as f64;
                Rgb(base.map(|b| ((b * 0.6 + t * 0.4) * 255.0) as u8))
            })
        })
        .collect()
}
