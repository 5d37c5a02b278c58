//! Planted-structure tests (spec §7 "Suggested tests"): nodes lock onto planted blobs, parents
//! are co-moving nodes, nodes are far more stable than raw filter argmaxes.

mod common;

use common::*;
use expgraph_learn::synthetic::{generate, SyntheticSpec};
use expgraph_learn::{infer, infer_in_views, infer_views, LearnParams, ViewPolicy, ViewRule};

/// The two planted layers `low` (density 0.05) and `top` (0.1), 3 parents per node.
fn planted_params(iterations: usize) -> LearnParams {
    LearnParams::default().layers(&[("low", 0.05), ("top", 0.1)]).iterations(iterations).top_n(3)
}

fn fit(data: &expgraph_learn::synthetic::SyntheticData, params: LearnParams) -> expgraph_learn::LearnOutput {
    params.check().unwrap().fit(&data.features).unwrap()
}

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
    let learned = fit(&data, planted_params(10).reference_compat(compat));
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
    // randomly initialized model took as canonical), and better than the spec's own rule.
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
    let fit = |rule: ViewRule| fit(&data, planted_params(10).view_rule(rule));
    let agreement = |flips: &[bool]| {
        let agree = flips.iter().zip(&data.mirrored).filter(|(a, b)| a == b).count() as f64 / 60.0;
        agree.max(1.0 - agree)
    };
    let learned = fit(ViewRule::NodeScore);
    let legacy = fit(ViewRule::LogProb);
    let (agree, agree_legacy) = (agreement(&learned.flips), agreement(&legacy.flips));
    eprintln!("flip agreement: node scores {agree:.2}, the spec's Σ ln(prob)·prior {agree_legacy:.2}");
    // Measured 0.98 with node scores; the spec's rule (every ln prob < 0, so it mostly keeps the
    // view with less window evidence) 0.68; the node-score rule reversed (keep the worse view) 0.60.
    assert!(agree >= 0.9, "flip agreement {agree}");
    assert!(agree > agree_legacy, "node scores {agree} vs the spec's rule {agree_legacy}");
    assert!(learned.flips.iter().any(|f| *f) && !learned.flips.iter().all(|f| *f));
    // Inference in a forced view: every image in that view; the chosen view's activations are
    // exactly the forced view's of the same image (lower layers follow the top layer's view).
    let chosen = infer_views(&learned.graph, &data.features, None, ViewPolicy::Choose).unwrap();
    let original = infer_views(&learned.graph, &data.features, None, ViewPolicy::Original).unwrap();
    let mirrored = infer_views(&learned.graph, &data.features, None, ViewPolicy::Mirrored).unwrap();
    assert!(original.iter().all(|a| !a.flipped) && mirrored.iter().all(|a| a.flipped));
    assert!(chosen.iter().any(|a| a.flipped) && chosen.iter().any(|a| !a.flipped));
    // And each image's other view, given per image, is the other forced view.
    let flips: Vec<bool> = chosen.iter().map(|a| a.flipped).collect();
    let negated: Vec<bool> = flips.iter().map(|f| !f).collect();
    let opposite = infer_in_views(&learned.graph, &data.features, &negated).unwrap();
    assert_eq!(infer_in_views(&learned.graph, &data.features, &flips).unwrap(), chosen);
    for (i, c) in chosen.iter().enumerate() {
        let (forced, other) = if c.flipped { (&mirrored[i], &original[i]) } else { (&original[i], &mirrored[i]) };
        assert_eq!(c, forced, "image {i}");
        assert_eq!(&opposite[i], other, "image {i}");
    }
    assert!(infer_in_views(&learned.graph, &data.features, &flips[1..]).is_err(), "one view per image");
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

#[test]
fn learned_records_are_what_inference_computes_on_the_training_images() {
    // The records and the stored mean positions come from an E-step with the final μ and σ, so
    // inference on the training images reproduces them exactly (views included); in
    // reference-compat mode they are the reference's, from the E-step before the last M-step.
    let data = generate(&SyntheticSpec {
        num_images: 24,
        channels: 4,
        seed: 5,
        mirrored_share: 0.5,
        with_flipped_view: true,
        ..SyntheticSpec::default()
    });
    for compat in [false, true] {
        let learned = fit(&data, planted_params(3).reference_compat(compat));
        let acts = infer(&learned.graph, &data.features, None).unwrap();
        let inferred_flips: Vec<bool> = acts.iter().map(|a| a.flipped).collect();
        let mut same = true;
        for (l, record) in learned.records.iter().enumerate() {
            let nodes = learned.graph.layers[l].num_nodes();
            for (i, a) in acts.iter().enumerate() {
                same &= a.layers[l].positions == record.positions[i * nodes..(i + 1) * nodes];
                same &= a.layers[l].scores == record.scores[i * nodes..(i + 1) * nodes];
            }
            // The stored mean positions are the records' means.
            let layer = &learned.graph.layers[l];
            for v in 0..nodes {
                let n = acts.len() as f64;
                let m = [0, 1]
                    .map(|d| record.positions.iter().skip(v).step_by(nodes).map(|p| f64::from(p[d])).sum::<f64>() / n);
                assert!(
                    (m[0] - layer.mean_position[v][0]).abs() < 1e-9 && (m[1] - layer.mean_position[v][1]).abs() < 1e-9
                );
            }
        }
        if compat {
            assert!(!same, "reference-compat records come from the E-step before the last M-step");
        } else {
            assert!(same, "records differ from inference on the training images");
            assert_eq!(inferred_flips, learned.flips);
            assert!(learned.flips.iter().any(|f| *f), "the test needs some mirrored views");
        }
    }
}
