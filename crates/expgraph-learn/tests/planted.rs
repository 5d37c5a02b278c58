//! Planted-structure tests (spec §7 "Suggested tests"): nodes lock onto planted blobs, parents
//! are co-moving nodes, nodes are far more stable than raw filter argmaxes.

mod common;

use common::*;
use expgraph_learn::synthetic::{generate, SyntheticSpec};
use expgraph_learn::{infer, infer_views, LearnParams, ViewPolicy};

fn learn_planted(
    compat: bool,
) -> (expgraph_learn::synthetic::SyntheticData, expgraph_learn::LearnOutput, Vec<expgraph_graph::ImageActivations>) {
    let data = generate(&SyntheticSpec {
        num_images: 80,
        channels: 6,
        seed: 3,
        translation_px: 6.0,
        part_motion_px: 20.0,
        ..SyntheticSpec::default()
    });
    let learned = LearnParams::default()
        .layers(&[("low", 0.05), ("top", 0.1)])
        .iterations(10)
        .top_n(3)
        .reference_compat(compat)
        .check()
        .unwrap()
        .fit(&data.features)
        .unwrap();
    let acts = infer(&learned.graph, &data.features, None).unwrap();
    (data, learned, acts)
}

#[test]
fn nodes_lock_onto_blobs_parents_co_move_and_nodes_are_stable() {
    let (data, learned, acts) = learn_planted(false);
    let graph = &learned.graph;
    for layer in 0..2 {
        let bn = blob_nodes(&data, graph, &acts, layer);
        // Position error of a blob-node: its systematic offset from the blob, ‖mean_I (p_V(I) −
        // blob(I))‖ in map cells (the per-image scatter is bounded below by the candidate grid
        // spacing 2h/6, up to 4/3 cell; it is printed for information).
        let biases: Vec<f64> = bn.iter().map(|b| bias(&data, graph, &acts, layer, b.0, b.1, b.2)).collect();
        let locked = biases.iter().filter(|e| **e < 0.5).count();
        let scatter = bn.iter().map(|b| b.3).sum::<f64>() / bn.len() as f64;
        eprintln!("layer {layer}: {locked}/{} blob-nodes within 0.5 cell; mean per-image distance {scatter:.2} cells; biases {biases:.2?}", bn.len());
        assert!(locked as f64 >= 0.9 * bn.len() as f64, "layer {layer}: only {locked}/{} locked", bn.len());
        // Instability: blob-nodes vs raw filter argmax on the same data.
        let node_series: Vec<Vec<[f64; 2]>> = bn
            .iter()
            .map(|b| (0..acts.len()).map(|i| acts[i].position_pixels(&graph.layers[layer], layer, b.2, 224)).collect())
            .collect();
        let nodes_inst = instability(&node_series, &data.landmarks_px);
        let raw_inst = instability(&raw_argmax_series(&data, layer), &data.landmarks_px);
        eprintln!("layer {layer}: instability nodes {nodes_inst:.4} raw filters {raw_inst:.4}");
        assert!(nodes_inst < 0.5 * raw_inst, "layer {layer}: nodes {nodes_inst} vs raw {raw_inst}");
    }
    // Parents of low-layer blob-nodes: a parent co-moves when its displacement across images
    // correlates best with the child's own part (of all parts; the global translation is shared).
    let bn = blob_nodes(&data, graph, &acts, 0);
    let n = acts.len();
    let top = &graph.layers[1];
    let parts = data.landmarks_px[0].len();
    let part_disp: Vec<Vec<[f64; 2]>> =
        (0..parts).map(|q| centred(&(0..n).map(|i| data.landmarks_px[i][q]).collect::<Vec<_>>())).collect();
    let (mut good, mut total) = (0, 0);
    for &(ch, b, v, _) in &bn {
        let part = data.blobs[0][ch][b].part;
        for parent in &graph.layers[0].parents[v] {
            let d = centred(
                &(0..n).map(|i| acts[i].position_pixels(top, 1, parent.node as usize, 224)).collect::<Vec<_>>(),
            );
            let best =
                (0..parts).max_by(|&a, &c| corr(&d, &part_disp[a]).total_cmp(&corr(&d, &part_disp[c]))).unwrap_or(0);
            total += 1;
            if best == part {
                good += 1;
            }
        }
    }
    let precision = good as f64 / total as f64;
    eprintln!("parent precision {good}/{total} = {precision:.3}");
    assert!(precision >= 0.8, "parent precision {precision}");
}

fn centred(p: &[[f64; 2]]) -> Vec<[f64; 2]> {
    let m = mean(p);
    p.iter().map(|x| [x[0] - m[0], x[1] - m[1]]).collect()
}

fn corr(a: &[[f64; 2]], b: &[[f64; 2]]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x[0] * y[0] + x[1] * y[1]).sum();
    let na: f64 = a.iter().map(|x| x[0] * x[0] + x[1] * x[1]).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x[0] * x[0] + x[1] * x[1]).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-12)
}

fn mean(p: &[[f64; 2]]) -> [f64; 2] {
    let n = p.len() as f64;
    [p.iter().map(|x| x[0]).sum::<f64>() / n, p.iter().map(|x| x[1]).sum::<f64>() / n]
}

#[test]
fn real_flips_are_chosen_for_mirrored_objects() {
    // Half the objects appear mirrored; their mirrored view shows them upright. The top layer's
    // view choice (spec §1.7, §7 #1) must split the images by orientation (up to which one the
    // randomly initialized model took as canonical).
    let data = generate(&SyntheticSpec {
        num_images: 60,
        channels: 6,
        seed: 11,
        translation_px: 6.0,
        part_motion_px: 10.0,
        mirrored_share: 0.5,
        with_flipped_view: true,
        ..SyntheticSpec::default()
    });
    let learned = LearnParams::default()
        .layers(&[("low", 0.05), ("top", 0.1)])
        .iterations(10)
        .top_n(3)
        .check()
        .unwrap()
        .fit(&data.features)
        .unwrap();
    let agree = learned.flips.iter().zip(&data.mirrored).filter(|(a, b)| a == b).count() as f64 / 60.0;
    eprintln!("flip agreement {agree:.2}");
    // The reference's criterion Σ ln(prob)·prior is weak (ln prob < 0, so it mostly prefers the
    // view with less window evidence); measured 0.68 here. Assert better than chance.
    assert!(agree.max(1.0 - agree) >= 0.6, "flip agreement {agree}");
    assert!(learned.flips.iter().any(|f| *f) && !learned.flips.iter().all(|f| *f));
    // Inference in a forced view: every image in that view; the chosen view's activations are
    // exactly the forced view's of the same image (lower layers follow the top layer's view).
    let chosen = infer_views(&learned.graph, &data.features, None, ViewPolicy::Choose).unwrap();
    let original = infer_views(&learned.graph, &data.features, None, ViewPolicy::Original).unwrap();
    let mirrored = infer_views(&learned.graph, &data.features, None, ViewPolicy::Mirrored).unwrap();
    assert!(original.iter().all(|a| !a.flipped) && mirrored.iter().all(|a| a.flipped));
    assert!(chosen.iter().any(|a| a.flipped) && chosen.iter().any(|a| !a.flipped));
    for (i, c) in chosen.iter().enumerate() {
        let forced = if c.flipped { &mirrored[i] } else { &original[i] };
        assert_eq!(c, forced, "image {i}");
    }
    // The compat mode never flips (the reference's flip is a no-op).
    let compat = LearnParams::default()
        .layers(&[("low", 0.05), ("top", 0.1)])
        .iterations(2)
        .reference_compat(true)
        .check()
        .unwrap()
        .fit(&data.features)
        .unwrap();
    assert!(compat.flips.iter().all(|f| !f));
}
