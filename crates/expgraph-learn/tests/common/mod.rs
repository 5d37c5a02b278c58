//! Shared helpers of the integration tests: metrics against the planted truth.
#![allow(dead_code)]

use expgraph_graph::{ExplanatoryGraph, ImageActivations};
use expgraph_learn::synthetic::SyntheticData;

/// Systematic error (cells) of node `v` on blob `b`: ‖mean_I (p_V(I) − blob(I))‖.
pub fn bias(
    data: &SyntheticData,
    graph: &ExplanatoryGraph,
    acts: &[ImageActivations],
    layer: usize,
    ch: usize,
    b: usize,
    v: usize,
) -> f64 {
    let n = acts.len();
    let mut m = [0.0; 2];
    for i in 0..n {
        let p = original_frame_map(graph, acts, layer, v, i);
        let t = data.blob_position(layer, ch, b, i);
        m[0] += (p[0] - t[0]) / n as f64;
        m[1] += (p[1] - t[1]) / n as f64;
    }
    (m[0] * m[0] + m[1] * m[1]).sqrt()
}

/// For each planted blob of `layer`: (channel, blob, best node, mean per-image error in cells).
pub fn blob_nodes(
    data: &SyntheticData,
    graph: &ExplanatoryGraph,
    acts: &[ImageActivations],
    layer: usize,
) -> Vec<(usize, usize, usize, f64)> {
    let gl = &graph.layers[layer];
    let k = gl.nodes_per_filter;
    let n = acts.len();
    let mut out = Vec::new();
    for (ch, blobs) in data.blobs[layer].iter().enumerate() {
        for b in 0..blobs.len() {
            let mut best = (usize::MAX, f64::INFINITY);
            for v in ch * k..(ch + 1) * k {
                let err: f64 = (0..n)
                    .map(|i| {
                        let p = original_frame_map(graph, acts, layer, v, i);
                        let t = data.blob_position(layer, ch, b, i);
                        ((p[0] - t[0]).powi(2) + (p[1] - t[1]).powi(2)).sqrt()
                    })
                    .sum::<f64>()
                    / n as f64;
                if err < best.1 {
                    best = (v, err);
                }
            }
            out.push((ch, b, best.0, best.1));
        }
    }
    out
}

/// A node's inferred position in image `i`, map coordinates of the original (unmirrored) view.
pub fn original_frame_map(
    graph: &ExplanatoryGraph,
    acts: &[ImageActivations],
    layer: usize,
    v: usize,
    i: usize,
) -> [f64; 2] {
    let gl = &graph.layers[layer];
    let px = acts[i].position_pixels(gl, layer, v, graph.input_size);
    [gl.info.geometry.pixel_to_map(px[0]), gl.info.geometry.pixel_to_map(px[1])]
}

/// Location instability (spec §4.3, over all images): mean over the given position series of
/// mean over landmarks of std_I(‖p(I) − landmark_k(I)‖) / (224·√2); positions in input pixels.
pub fn instability(series: &[Vec<[f64; 2]>], landmarks: &[Vec<[f64; 2]>]) -> f64 {
    let parts = landmarks[0].len();
    let norm = 224.0 * 2f64.sqrt();
    let mut total = 0.0;
    for s in series {
        let mut per = 0.0;
        for k in 0..parts {
            let d: Vec<f64> = s
                .iter()
                .zip(landmarks)
                .map(|(p, lm)| ((p[0] - lm[k][0]).powi(2) + (p[1] - lm[k][1]).powi(2)).sqrt())
                .collect();
            let m = d.iter().sum::<f64>() / d.len() as f64;
            let var = d.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (d.len() - 1) as f64;
            per += var.sqrt() / norm;
        }
        total += per / parts as f64;
    }
    total / series.len() as f64
}

/// Raw filter argmax positions (input pixels, original frame) of every channel of `layer`.
pub fn raw_argmax_series(data: &SyntheticData, layer: usize) -> Vec<Vec<[f64; 2]>> {
    use expgraph_cache::{LayerMaps, View};
    let l = &data.features.layers[layer];
    let info = l.info().clone();
    let mut map = vec![0.0f32; info.map_len()];
    (0..info.channels)
        .map(|c| {
            (0..l.num_images())
                .map(|i| {
                    l.read_channel(i, View::Original, c, &mut map);
                    let (mut best, mut bv) = (0, f32::MIN);
                    for (j, v) in map.iter().enumerate() {
                        if *v > bv {
                            bv = *v;
                            best = j;
                        }
                    }
                    let g = info.geometry;
                    [g.map_to_pixel((best / info.width + 1) as f64), g.map_to_pixel((best % info.width + 1) as f64)]
                })
                .collect()
        })
        .collect()
}
