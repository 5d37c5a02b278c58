//! Hand-computed checks of the pool filters, similarity and the prior.

use super::*;

fn recs<'a>(n: usize, p: usize, pos: &'a [[f32; 2]], sc: &'a [f32]) -> LayerRecords<'a> {
    LayerRecords { name: "up", num_images: n, num_nodes: p, positions: pos, scores: sc }
}

#[test]
fn pool_drops_low_motion_then_border_then_ranks_and_clamps() {
    // 6 nodes, 2 images. Variances (h+w, N-1): node v moves by v cells in h.
    let mut pos = Vec::new();
    for i in 0..2 {
        for v in 0..6 {
            let m = if v == 5 { 1.0 } else { 7.0 }; // node 5 sits at the border
            pos.push([m + (i as f32) * v as f32, 7.0]);
        }
    }
    // Scores: node 4 highest, then 3, then 5.
    let sc: Vec<f32> = (0..2).flat_map(|_| [9.0, 8.0, 7.0, 2.0, 3.0, 5.0]).collect();
    let r = recs(2, 6, &pos, &sc);
    // Lowest-variance half = nodes 0,1,2 (ceil(6·0.5) = 3); node 5 mean h = 1 + 2.5 = 3.5 ≥ 1.4: kept.
    assert_eq!(candidate_pool(&r, 14.0, 0.5, 0.1, 600).unwrap(), vec![5, 4, 3]);
    // With a stricter border (0.3·14 = 4.2 > 3.5) node 5 goes; top_m clamps.
    assert_eq!(candidate_pool(&r, 14.0, 0.5, 0.3, 1).unwrap(), vec![4]);
    assert_eq!(candidate_pool(&r, 14.0, 1.0, 0.1, 600), Err(CliqueError::EmptyPool { layer: "up".into() }));
    assert_eq!(candidate_pool(&recs(1, 6, &pos[..6], &sc[..6]), 14.0, 0.5, 0.1, 9), Err(CliqueError::TooFewImages(1)));
}

#[test]
fn displacement_frames() {
    let g = TapGeometryLike::conv4();
    let pos = [[3.0f32, 5.0], [5.0, 5.0]];
    let r = recs(2, 1, &pos, &[1.0, 1.0]);
    assert_eq!(displacements(&r, &g, DisplacementFrame::Pixels), vec![[-8.0, 0.0], [8.0, 0.0]]);
    // x2p_ on a displacement: 4.5 + (d − 1)·8.
    assert_eq!(displacements(&r, &g, DisplacementFrame::ReferenceAffine), vec![[-11.5, -3.5], [4.5, -3.5]]);
}

#[test]
fn displacements_of_listed_nodes_are_those_rows_in_list_order() {
    let g = TapGeometryLike::conv4();
    // 2 images × 3 nodes, [image][node].
    let pos = [[3.0f32, 5.0], [1.0, 2.0], [7.0, 7.0], [5.0, 5.0], [2.0, 6.0], [6.0, 9.0]];
    let r = recs(2, 3, &pos, &[1.0; 6]);
    let all = displacements(&r, &g, DisplacementFrame::Pixels);
    let some = displacements_of(&r, &g, DisplacementFrame::Pixels, &[2, 0]);
    assert_eq!(some, [all[4], all[5], all[0], all[1]]);
    // Node 2: mean (6.5, 8), displacements (±0.5, ∓1) cells = (±4, ∓8) px.
    assert_eq!(some[..2], [[4.0, -8.0], [-4.0, 8.0]]);
}

struct TapGeometryLike;
impl TapGeometryLike {
    fn conv4() -> expgraph_graph::TapGeometry {
        expgraph_graph::TapGeometry { stride: 8.0, first_centre: 4.5, receptive_field: 92.0 }
    }
}

#[test]
fn similarity_by_hand() {
    // One child, two candidates, two images. Child e = (±1, 0); cand 0 d = (±1, 0) (co-moving),
    // cand 1 d = (∓1, 0). sq: cand0 = 0,0; cand1 = 4,4 → bandwidth m = 2.
    let child = vec![[1.0, 0.0], [-1.0, 0.0]];
    let pool_disp = vec![[1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]];
    let best = [2.0f32, 0.5];
    let p = select_parents(&child, &best, 1, 2, &[10, 20], &pool_disp, 2);
    assert_eq!(p[0][0].node, 10);
    assert!((p[0][0].similarity - 2.5).abs() < 1e-6);
    let want = (2.5 * (-4.0f64 / 4.0).exp()) as f32;
    assert!((p[0][1].similarity - want).abs() < 1e-6);
    // top_n larger than the pool: all of it.
    assert_eq!(select_parents(&child, &best, 1, 2, &[10, 20], &pool_disp, 15)[0].len(), 2);
}

#[test]
fn prior_and_lambda_in_log_space_by_hand() {
    // Parents σ = 1 and 2, M = 2: w = (1/2, 1/8), Σw = 5/8, σ_V = sqrt(8/5).
    let pr = ParentPrior::new(vec![0, 1], &[1.0, 2.0]);
    assert!((pr.sigma() - (8.0f64 / 5.0).sqrt()).abs() < 1e-15);
    let d = [[1.0, 0.0], [-1.0, 2.0]];
    let (shift, log_l) = pr.for_image(|i| d[i]);
    // Δμ = (0.5·(1,0) + 0.125·(−1,2)) / 0.625 = (0.6, 0.4)
    assert!((shift[0] - 0.6).abs() < 1e-15 && (shift[1] - 0.4).abs() < 1e-15);
    // ln λ = ln σ_V − ln 1 − ln 2 − ‖Δμ−d1‖²/(2·2·1) − ‖Δμ−d2‖²/(2·2·4)
    let e1 = 0.4f64.powi(2) + 0.4f64.powi(2);
    let e2 = 1.6f64.powi(2) + 1.6f64.powi(2);
    let want = (8.0f64 / 5.0).sqrt().ln() - 2.0f64.ln() - e1 / 4.0 - e2 / 16.0;
    assert!((log_l - want).abs() < 1e-14, "{log_l} vs {want}");
    // 15 tiny σ parents: λ itself overflows f64 only through the product; the log stays finite.
    let many = ParentPrior::new((0..15).collect(), &[1e-30; 15]);
    let (_, l) = many.for_image(|_| [0.0, 0.0]);
    assert!(l.is_finite() && l > 700.0);
}

#[test]
fn parents_of_child_ranges_concatenate_to_the_whole_selection() {
    // 7 children, 5 pool members, 6 images of pseudo-random displacements.
    let (n, kids, m) = (6, 7, 5);
    let val = |k: usize| ((k * 7919 % 101) as f64 - 50.0) / 10.0;
    let child_disp: Vec<[f64; 2]> = (0..kids * n).map(|k| [val(k), val(k + 13)]).collect();
    let pool_disp: Vec<[f64; 2]> = (0..m * n).map(|k| [val(k + 29), val(k + 47)]).collect();
    let best: Vec<f32> = (0..n * kids).map(|k| 0.5 + (k % 5) as f32).collect();
    let pool: Vec<u32> = vec![9, 3, 4, 1, 7];
    let whole = select_parents(&child_disp, &best, kids, n, &pool, &pool_disp, 3);
    // One range for everything, two, and four (one of them empty).
    #[allow(clippy::single_range_in_vec_init)]
    let splits: [&[std::ops::Range<usize>]; 3] = [&[0..7], &[0..3, 3..7], &[0..2, 2..2, 2..5, 5..7]];
    for split in splits {
        let parts: Vec<expgraph_graph::Parent> = split
            .iter()
            .cloned()
            .flat_map(|r| {
                let mine = &child_disp[r.start * n..r.end * n];
                select_parents_of(mine, &best, kids, n, &pool, &pool_disp, 3, r)
            })
            .flatten()
            .collect();
        assert_eq!(parts, whole.iter().flatten().copied().collect::<Vec<_>>());
    }
}
