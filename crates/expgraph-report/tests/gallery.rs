//! Galleries and heat maps on synthetic graphs with known node positions.

use expgraph_graph::ExplanatoryGraph;
use expgraph_report::testing::{synthetic_activations, synthetic_crops, synthetic_graph};
use expgraph_report::{
    cut_patch, heat_field, node_gallery, node_pixel, CropFn, CropSource, GalleryParams, HeatmapParams, MeanPatches,
    ReportError, SynthesisParams,
};
use image::{Rgb, RgbImage};

const MARK: [u8; 3] = [255, 0, 255];

/// A graph whose conv4_3 node 0 sits at map cell (h, w) = (10, 5) → pixel (x, y) = (36.5, 76.5)
/// 1-based = (35.5, 75.5) 0-based, and scores that make node 0 the best node.
fn fixture(flipped: bool) -> (ExplanatoryGraph, Vec<expgraph_graph::ImageActivations>, Vec<RgbImage>) {
    let graph = synthetic_graph(3, 2, 1).unwrap();
    let mut acts = synthetic_activations(&graph, 4, 2);
    for (i, a) in acts.iter_mut().enumerate() {
        a.flipped = flipped;
        a.layers[0].positions[0] = [10.0, 5.0];
        a.layers[0].scores[0] = 10.0 + i as f32; // image 3 is the best, then 2, 1, 0
    }
    // Grey crops with a magenta square of 9 px centred where node 0 must be.
    let crops = (0..4)
        .map(|_| {
            let mut c = RgbImage::from_pixel(224, 224, Rgb([100, 100, 100]));
            let (cx, cy) = if flipped { (224 - 1 - 35, 75) } else { (35, 75) };
            for y in cy - 4..=cy + 4 {
                for x in cx - 4..=cx + 4 {
                    c.put_pixel(x as u32, y as u32, Rgb(MARK));
                }
            }
            c
        })
        .collect();
    (graph, acts, crops)
}

fn check_marker_centred(flipped: bool) {
    let (graph, acts, crops) = fixture(flipped);
    let params = GalleryParams { nodes: 3, patches_per_node: 2, tile: 60, patch_side: Some(60), ..Default::default() };
    let g = node_gallery(&graph, &acts, 0, &crops, &params).unwrap();
    assert_eq!(g.rows[0].node, 0, "node 0 has the top scores");
    assert_eq!(g.rows[0].patches.iter().map(|p| p.image_index).collect::<Vec<_>>(), vec![3, 2]);
    let b = g.rows[0].patches[0].bbox.unwrap();
    let cx = if flipped { 187 } else { 35 };
    assert_eq!((b.x0 + b.x1) / 2, cx + 1, "box {b:?}");
    assert_eq!((b.y0 + b.y1) / 2, 75 + 1, "box {b:?}");
    // Pixel check in the gallery PNG: the tile's centre shows the magenta marker.
    let (label_w, header, tile) = (120, 24, 60);
    let centre = g.image.get_pixel(label_w + tile / 2, header + tile / 2);
    assert_eq!(centre.0, MARK);
    // …and the tile's corner does not.
    assert_ne!(g.image.get_pixel(label_w + 1, header + 1).0, MARK);
    let expected_w = 120 + 2 * (60 + 4) + 4;
    assert_eq!(g.image.dimensions(), (expected_w, 24 + 3 * (60 + 4) + 4));
}

#[test]
fn patches_are_cut_at_the_node_position() {
    check_marker_centred(false);
}

#[test]
fn flipped_views_are_mirrored_back() {
    check_marker_centred(true);
}

#[test]
fn patches_are_clipped_at_the_border_and_resized() {
    let crop = RgbImage::from_fn(224, 224, |x, y| Rgb([x as u8, y as u8, 0]));
    let (b, tile) = cut_patch(&crop, [2.0, 220.0], 60, 96).unwrap();
    assert_eq!((b.x0, b.y1), (0, 224));
    assert_eq!(tile.dimensions(), (96, 96));
    // the top-left of the tile shows the crop's left border
    assert!(tile.get_pixel(0, 0).0[0] < 3);
    let node = node_pixel(
        &expgraph_graph::TapGeometry { stride: 16.0, first_centre: 8.5, receptive_field: 164.0 },
        [14.0, 14.0],
        false,
        224,
        224,
    );
    assert_eq!(node, [215.5, 215.5]);
}

#[test]
fn crop_errors_and_bad_shapes_are_reported() {
    let (graph, mut acts, _) = fixture(false);
    let failing = CropFn(|i: usize| -> Result<RgbImage, expgraph_report::CropError> {
        Err(format!("cannot decode image {i}").into())
    });
    let err = node_gallery(&graph, &acts, 0, &failing, &GalleryParams::default()).unwrap_err();
    assert!(matches!(err, ReportError::Crop { .. }), "{err}");
    assert!(failing.crop(1).is_err());
    let err = node_gallery(&graph, &acts, 5, &Vec::<RgbImage>::new(), &GalleryParams::default()).unwrap_err();
    assert!(err.to_string().contains("layer 5"), "{err}");
    acts[1].layers[0].scores[2] = f32::NAN;
    let err = node_gallery(&graph, &acts, 0, &Vec::<RgbImage>::new(), &GalleryParams::default()).unwrap_err();
    assert!(err.to_string().contains("not finite"), "{err}");
    acts[1].layers[0].scores.pop();
    let err = node_gallery(&graph, &acts, 0, &Vec::<RgbImage>::new(), &GalleryParams::default()).unwrap_err();
    assert!(err.to_string().contains("scores"), "{err}");
}

#[test]
fn heat_field_peaks_at_the_strongest_node() {
    let graph = synthetic_graph(3, 2, 4).unwrap();
    let mut acts = synthetic_activations(&graph, 1, 5);
    let act = &mut acts[0];
    act.flipped = false;
    for s in act.layers[1].scores.iter_mut() {
        *s = 0.01;
    }
    act.layers[1].scores[3] = 50.0;
    act.layers[1].positions[3] = [4.0, 11.0]; // pixel (x, y) = (168.5, 56.5) 1-based
    let field = heat_field(&graph, act, 1, 224, 224, &HeatmapParams::default()).unwrap();
    assert_eq!(field.len(), 224 * 224);
    let (argmax, max) = field.iter().enumerate().fold((0, 0f32), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
    assert!((max - 1.0).abs() < 1e-3);
    let (x, y) = ((argmax % 224) as f64, (argmax / 224) as f64);
    assert!((x - 167.5).abs() <= 4.0 && (y - 55.5).abs() <= 4.0, "peak at ({x}, {y})");
    // all-zero scores give an all-zero field, not NaN
    for s in act.layers[1].scores.iter_mut() {
        *s = 0.0;
    }
    let field = heat_field(&graph, act, 1, 100, 100, &HeatmapParams::default()).unwrap();
    assert!(field.iter().all(|&v| v == 0.0));
}

#[test]
fn synthesis_reproduces_node_colours() {
    // One node's mean patch is pure red (a red crop); synthesizing puts red where it fires.
    let graph = synthetic_graph(2, 1, 9).unwrap();
    let acts = synthetic_activations(&graph, 3, 10);
    let red = vec![RgbImage::from_pixel(224, 224, Rgb([250, 10, 10])); 3];
    let params = SynthesisParams { mean_over: 2, ..Default::default() };
    let means = MeanPatches::build(&graph, &acts, 0, &red, &params).unwrap();
    assert_eq!(means.len(), 2);
    assert_eq!(means.patch_image(0).unwrap().get_pixel(5, 5).0, [250, 10, 10]);
    let out = means.synthesize(&graph, &acts[0], 224, 224, 1.0).unwrap();
    assert_eq!(out.dimensions(), (224, 224));
    let reds = out.pixels().filter(|p| p.0 == [250, 10, 10]).count();
    let greys = out.pixels().filter(|p| p.0 == [128, 128, 128]).count();
    assert!(reds > 1000, "{reds} red pixels");
    assert_eq!(reds + greys, 224 * 224);
    let crops = synthetic_crops(3, 224, 1);
    let means = MeanPatches::build(&graph, &acts, 1, &crops, &params).unwrap();
    assert!(!means.is_empty());
}
