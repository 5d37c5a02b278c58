//! End-to-end tests on synthetic activations with a planted part: some units move rigidly with
//! the part, others are distractors at random positions.

use expgraph_cache::{InMemoryLayer, LayerInfo, TapGeometry, View};
use expgraph_graph::{ImageActivations, LayerActivations};
use expgraph_localize::{
    filter_argmaxes, Kernel, LocalizeError, LocalizeParams, PartModel, Point, TemplateScore, UnitLayerLayout,
    UnitLayout, VoteWeight,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SIZE: usize = 224;

fn geometry(stride: f64) -> TapGeometry {
    TapGeometry { stride, first_centre: stride / 2.0, receptive_field: 100.0 }
}

fn layout(units: usize) -> UnitLayout {
    UnitLayout {
        input_size: SIZE,
        layers: vec![
            UnitLayerLayout { name: "conv4_3".into(), geometry: geometry(8.0), num_units: units },
            UnitLayerLayout { name: "conv5_3".into(), geometry: geometry(16.0), num_units: units },
        ],
    }
}

/// A synthetic scene: per layer, per unit, an offset from the part (pixels) for the `rigid`
/// units, and scores; the remaining units are placed at random and score lower.
struct Scene {
    layout: UnitLayout,
    rigid: usize,
    offsets: Vec<Vec<[f64; 2]>>,
}

impl Scene {
    fn new(units: usize, rigid: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let offsets = (0..2)
            .map(|_| (0..units).map(|_| [rng.random_range(-40.0..40.0), rng.random_range(-40.0..40.0)]).collect())
            .collect();
        Self { layout: layout(units), rigid, offsets }
    }

    /// Activations of an image whose part sits at `part` (original orientation). When `flipped`
    /// the object faces the other way, so inference chose the mirrored view, in which the object
    /// looks as in unflipped images: the activations are that view's. Rigid units score 2–3, the others 0.5–1.5 (top-scoring
    /// distractors exist only when `distract`).
    fn image(&self, id: &str, part: Point, flipped: bool, seed: u64, distract: bool) -> ImageActivations {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let layers = self
            .layout
            .layers
            .iter()
            .zip(&self.offsets)
            .map(|(spec, offsets)| {
                let mut positions = Vec::new();
                let mut scores = Vec::new();
                for (unit, o) in offsets.iter().enumerate() {
                    let (px, score) = if unit < self.rigid {
                        // A rigid unit fires on the object as its view shows it: in the
                        // mirrored view the object is mirrored, and so is its offset.
                        let w = if flipped { part.w + o[1] } else { part.w - o[1] };
                        ([part.h - o[0], w], rng.random_range(2.0..3.0))
                    } else {
                        let random = [rng.random_range(1.0..224.0), rng.random_range(1.0..224.0)];
                        if distract && unit < self.rigid + 2 {
                            // near the part (within the displacement bound), top score
                            let near = [part.h + rng.random_range(-45.0..45.0), part.w + rng.random_range(-45.0..45.0)];
                            (near, 5.0)
                        } else {
                            (random, rng.random_range(0.5..1.5))
                        }
                    };
                    let w = if flipped { SIZE as f64 + 1.0 - px[1] } else { px[1] };
                    let g = spec.geometry;
                    positions.push([g.pixel_to_map(px[0]) as f32, g.pixel_to_map(w) as f32]);
                    scores.push(score as f32);
                }
                LayerActivations { layer: spec.name.clone(), positions, scores }
            })
            .collect();
        ImageActivations { image_id: id.into(), flipped, layers }
    }
}

fn annotated(scene: &Scene, flips: [bool; 3]) -> Vec<(ImageActivations, Point)> {
    let parts = [Point::new(80.0, 90.0), Point::new(120.0, 60.0), Point::new(100.0, 150.0)];
    (0..3).map(|k| (scene.image(&format!("train{k}"), parts[k], flips[k], 100 + k as u64, true), parts[k])).collect()
}

#[test]
fn rigid_units_recover_the_part_exactly_with_every_kernel_and_weight() {
    // 40 units per layer, 8 rigid (the top scorers), q = 20 % keeps exactly them.
    let scene = Scene::new(40, 8, 1);
    let parts = [Point::new(80.0, 90.0), Point::new(120.0, 60.0), Point::new(100.0, 150.0)];
    let train: Vec<_> =
        (0..3).map(|k| (scene.image(&format!("train{k}"), parts[k], false, 100 + k as u64, false), parts[k])).collect();
    for kernel in [Kernel::aog(), Kernel::gaussian()] {
        for weight in [VoteWeight::Detected, VoteWeight::Score] {
            let params =
                LocalizeParams::default().top_fraction(0.2).kernel(kernel).vote_weight(weight).check().unwrap();
            let model = params.fit_units(&scene.layout, &train).unwrap();
            assert_eq!(model.templates.len(), 3);
            for t in &model.templates {
                assert_eq!(t.units.len(), 16);
                assert!(t.units.iter().all(|u| u.unit < 8));
            }
            for (i, part) in
                [Point::new(50.0, 60.0), Point::new(170.0, 180.0), Point::new(112.0, 37.0)].into_iter().enumerate()
            {
                let test = scene.image("test", part, false, 7 + i as u64, false);
                let p = model.predict(&test).unwrap();
                assert_eq!(p.point, part, "{kernel:?} {weight:?}");
                assert!(!p.fallback);
                assert_eq!(p.voters, 16);
                assert_eq!(p.template_scores.len(), 3);
            }
        }
    }
}

#[test]
fn distractors_selected_in_training_do_not_move_the_aog_peak() {
    // q = 25 % keeps 10 per layer: the 8 rigid units + 2 high-scoring distractors (random
    // positions, so their displacement is meaningless and their test votes scatter).
    let scene = Scene::new(40, 8, 1);
    let train = annotated(&scene, [false; 3]);
    let model = LocalizeParams::default().top_fraction(0.25).check().unwrap().fit_units(&scene.layout, &train).unwrap();
    for t in &model.templates {
        assert_eq!(t.units.len(), 20);
    }
    for (i, part) in [Point::new(50.0, 60.0), Point::new(170.0, 180.0)].into_iter().enumerate() {
        let p = model.predict(&scene.image("test", part, false, 20 + i as u64, false)).unwrap();
        assert_eq!(p.point, part);
    }
}

#[test]
fn flips_are_undone_for_annotated_and_test_images() {
    let scene = Scene::new(30, 10, 2);
    let train = annotated(&scene, [true, false, true]);
    let params = LocalizeParams::default().top_fraction(0.5).check().unwrap();
    let model = params.fit_units(&scene.layout, &train).unwrap();
    // δ is the same for every template: it is kept in the frame of the view the units fired in.
    for t in &model.templates[1..] {
        let same: Vec<_> = t.units.iter().filter(|u| u.unit < 10).collect();
        for u in same {
            let first = model.templates[0].units.iter().find(|v| v.layer == u.layer && v.unit == u.unit).unwrap();
            assert!((u.delta[0] - first.delta[0]).abs() < 1e-3 && (u.delta[1] - first.delta[1]).abs() < 1e-3);
        }
    }
    let part = Point::new(60.0, 40.0);
    let mirrored = scene.image("test", part, true, 9, false);
    let p = model.predict(&mirrored).unwrap();
    assert!(p.flipped);
    assert_eq!(p.point, part, "prediction is in the original orientation");
}

#[test]
fn predict_views_keeps_the_better_view() {
    let scene = Scene::new(30, 10, 3);
    let model = LocalizeParams::default()
        .top_fraction(0.4)
        .check()
        .unwrap()
        .fit_units(&scene.layout, &annotated(&scene, [false; 3]))
        .unwrap();
    let part = Point::new(100.0, 100.0);
    let good = scene.image("x", part, true, 11, false);
    let mut weak = scene.image("x", Point::new(30.0, 30.0), false, 12, false);
    for l in &mut weak.layers {
        l.scores.iter_mut().for_each(|s| *s *= 0.1);
    }
    for views in [[&weak, &good], [&good, &weak]] {
        let p = model.predict_views(&views, false).unwrap();
        assert!(p.flipped);
        assert_eq!(p.point, part);
    }
    let other = scene.image("y", part, false, 13, false);
    assert!(model.predict_views(&[&good, &other], false).is_err());
    let none: [&ImageActivations; 0] = [];
    assert!(matches!(model.predict_views(&none, false), Err(LocalizeError::Empty(_))));
}

#[test]
fn selection_respects_top_fraction_detection_and_displacement_bound() {
    // One layer, 10 units: scores 10..1 (unit 0 best); unit 3 undetected (score 0).
    let layout = UnitLayout {
        input_size: SIZE,
        layers: vec![UnitLayerLayout { name: "l".into(), geometry: geometry(8.0), num_units: 10 }],
    };
    let part = Point::new(100.0, 100.0);
    let g = geometry(8.0);
    // displacement of unit i: 10·i px along h (unit 7: 70 px > 67.2; unit 6: 60 px ≤ 67.2)
    let positions =
        (0..10).map(|i| [g.pixel_to_map(100.0 - 10.0 * i as f64) as f32, g.pixel_to_map(100.0) as f32]).collect();
    let mut scores: Vec<f32> = (0..10).map(|i| 10.0 - i as f32).collect();
    scores[3] = 0.0;
    let acts = ImageActivations {
        image_id: "a".into(),
        flipped: false,
        layers: vec![LayerActivations { layer: "l".into(), positions, scores }],
    };
    let fit = |q: f64, bound: f64| {
        let p = LocalizeParams::default().top_fraction(q).max_displacement(bound).check().unwrap();
        p.fit_units(&layout, &[(acts.clone(), part)])
    };
    let units = |m: PartModel| m.templates[0].units.iter().map(|u| u.unit).collect::<Vec<_>>();
    assert_eq!(units(fit(0.3, 67.2).unwrap()), vec![0, 1, 2]);
    assert_eq!(units(fit(0.5, 67.2).unwrap()), vec![0, 1, 2, 4, 5]);
    assert_eq!(units(fit(1.0, 67.2).unwrap()), vec![0, 1, 2, 4, 5, 6]);
    assert_eq!(units(fit(1.0, 60.0).unwrap()), vec![0, 1, 2, 4, 5, 6]);
    assert_eq!(units(fit(1.0, 59.9).unwrap()), vec![0, 1, 2, 4, 5]);
    let m = fit(0.3, 67.2).unwrap();
    assert!((m.templates[0].score - 9.0).abs() < 1e-9, "mean of 10, 9, 8");
    assert_eq!(m.templates[0].units[2].delta, [20.0, 0.0]);
    // Nothing detected → a clear error.
    let mut dead = acts.clone();
    dead.layers[0].scores.iter_mut().for_each(|s| *s = -1.0);
    let err = LocalizeParams::default().check().unwrap().fit_units(&layout, &[(dead.clone(), part)]).unwrap_err();
    assert!(matches!(err, LocalizeError::NoUnitSelected { .. }), "{err}");
    // An example that selects nothing is skipped when another one gives a template.
    let m =
        LocalizeParams::default().check().unwrap().fit_units(&layout, &[(dead, part), (acts.clone(), part)]).unwrap();
    assert_eq!(m.templates.len(), 1);
    assert_eq!(m.templates[0].image_id, acts.image_id);
    // Unknown layer subset → error; known subset → fine.
    let p = LocalizeParams::default().layers(vec!["nope".into()]).check().unwrap();
    assert!(matches!(p.fit_units(&layout, &[(acts.clone(), part)]), Err(LocalizeError::InvalidParam { .. })));
    let p = LocalizeParams::default().layers(vec!["l".into()]).check().unwrap();
    assert!(p.fit_units(&layout, &[(acts, part)]).is_ok());
}

#[test]
fn empty_and_bad_inputs_are_errors() {
    let scene = Scene::new(10, 5, 4);
    let params = LocalizeParams::default().top_fraction(0.5).check().unwrap();
    let none: [(ImageActivations, Point); 0] = [];
    assert!(matches!(params.fit_units(&scene.layout, &none), Err(LocalizeError::Empty(_))));
    let empty_layout = UnitLayout { input_size: SIZE, layers: vec![] };
    let train = annotated(&scene, [false; 3]);
    assert!(params.fit_units(&empty_layout, &train).is_err());
    let mut nan_point = train.clone();
    nan_point[1].1 = Point::new(f64::NAN, 3.0);
    assert!(matches!(params.fit_units(&scene.layout, &nan_point), Err(LocalizeError::NonFinite { .. })));
    let model = params.fit_units(&scene.layout, &train).unwrap();
    let mut short = scene.image("t", Point::new(50.0, 50.0), false, 1, false);
    short.layers[1].scores.pop();
    assert!(matches!(model.predict(&short), Err(LocalizeError::Shape { .. })));
}

#[test]
fn deterministic_with_ties_broken_by_index() {
    let scene = Scene::new(20, 6, 5);
    let part = Point::new(90.0, 90.0);
    // Three identical annotated examples → identical templates and scores → template 0 wins.
    let one = scene.image("same", part, false, 1, false);
    let train = vec![(one.clone(), part), (one.clone(), part), (one, part)];
    let model = LocalizeParams::default().top_fraction(0.3).check().unwrap().fit_units(&scene.layout, &train).unwrap();
    let test = scene.image("t", Point::new(70.0, 100.0), false, 2, false);
    let a = model.predict_with_vote_map(&test).unwrap();
    let b = model.predict_with_vote_map(&test).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.template, 0);
    assert_eq!(a.template_scores[0], a.template_scores[2]);
    let map = a.vote_map.as_ref().unwrap();
    assert_eq!(map.values.len(), SIZE * SIZE);
    let peak = map.values[(a.point.h as usize - 1) * SIZE + a.point.w as usize - 1];
    assert!(map.values.iter().all(|&v| v <= peak));
}

#[test]
fn no_voter_falls_back_to_the_template_point() {
    let scene = Scene::new(10, 5, 6);
    let train = annotated(&scene, [false; 3]);
    let model = LocalizeParams::default().top_fraction(0.5).check().unwrap().fit_units(&scene.layout, &train).unwrap();
    let mut silent = scene.image("s", Point::new(50.0, 50.0), false, 3, false);
    for l in &mut silent.layers {
        l.scores.iter_mut().for_each(|s| *s = 0.0);
    }
    let p = model.predict(&silent).unwrap();
    assert!(p.fallback);
    assert_eq!(p.voters, 0);
    assert_eq!(p.point, model.templates[p.template].point);
    // Units detected but far outside the frame: votes land nowhere → fallback too.
    let mut away = scene.image("s", Point::new(50.0, 50.0), false, 3, false);
    for l in &mut away.layers {
        l.positions.iter_mut().for_each(|p| *p = [-100.0, -100.0]);
    }
    let p = model.predict(&away).unwrap();
    assert!(p.fallback && p.voters > 0);
    assert_eq!(p.point, model.templates[p.template].point);
}

#[test]
fn aog_template_score_prefers_the_consistent_template() {
    let scene = Scene::new(30, 10, 7);
    let train = annotated(&scene, [false; 3]);
    let rule = TemplateScore::Aog { spatial_weight: 5.0, scale: 35.0 * 2f64.sqrt() };
    let model = LocalizeParams::default()
        .top_fraction(0.4)
        .template_score(rule)
        .check()
        .unwrap()
        .fit_units(&scene.layout, &train)
        .unwrap();
    let part = Point::new(140.0, 70.0);
    let p = model.predict(&scene.image("t", part, false, 8, false)).unwrap();
    assert_eq!(p.point, part);
}

#[test]
fn model_json_round_trip_and_corruption() {
    let scene = Scene::new(16, 6, 8);
    let model = LocalizeParams::default()
        .top_fraction(0.5)
        .kernel(Kernel::gaussian())
        .check()
        .unwrap()
        .fit_units(&scene.layout, &annotated(&scene, [false, true, false]))
        .unwrap();
    let text = model.to_json().unwrap();
    let back = PartModel::from_json(&text).unwrap();
    assert_eq!(back, model);
    let test = scene.image("t", Point::new(77.0, 66.0), true, 4, false);
    assert_eq!(back.predict(&test).unwrap(), model.predict(&test).unwrap());
    let mut broken = model.clone();
    broken.templates[0].units[0].unit = 999;
    assert!(matches!(PartModel::from_json(&broken.to_json().unwrap()), Err(LocalizeError::InvalidModel(_))));
    let mut bad_q = serde_json::to_value(&model).unwrap();
    bad_q["params"]["top_fraction"] = serde_json::json!(2.0);
    assert!(matches!(PartModel::from_json(&bad_q.to_string()), Err(LocalizeError::InvalidParam { .. })));
    assert!(matches!(PartModel::from_json("{"), Err(LocalizeError::Json(_))));
    let prior = model.prior_mean().unwrap().predict();
    assert_eq!(prior, Point::new(100.0, 100.0), "mean of (80,90), (120,60), (100,150)");
}

/// Raw-filter baseline end to end: feature maps with one blob per filter that moves with the
/// part; argmax units from the in-memory cache; the same voter recovers the part.
#[test]
fn raw_filter_baseline_from_feature_maps() {
    let info = |name: &str, side: usize, stride: f64| LayerInfo {
        name: name.into(),
        channels: 6,
        height: side,
        width: side,
        geometry: geometry(stride),
    };
    let infos = [info("conv4_3", 28, 8.0), info("conv5_3", 14, 16.0)];
    // Part at map cell (r, c) of the 28-map ⇒ pixel geometry(8).map_to_pixel; blob of filter f at
    // a fixed cell offset from it. Parts chosen on the 16-px grid so both layers are exact.
    let cells = [(5usize, 6usize), (9, 4), (7, 9), (6, 5)]; // conv5 cells of the part, 1-based
    let offsets = [(0i64, 0i64), (1, -1), (-1, 2), (2, 1), (-2, -2), (0, 3)];
    let build = |inf: &LayerInfo, scale: usize| {
        let mut data = vec![0.0f32; cells.len() * inf.image_len()];
        for (img, &(r, c)) in cells.iter().enumerate() {
            for (f, &(dr, dc)) in offsets.iter().enumerate() {
                let rr = ((r as i64 + dr) * scale as i64 - (scale as i64 - 1)) as usize;
                let cc = ((c as i64 + dc) * scale as i64 - (scale as i64 - 1)) as usize;
                let at = img * inf.image_len() + f * inf.map_len() + (rr - 1) * inf.width + (cc - 1);
                data[at] = 1.0 + f as f32;
            }
        }
        InMemoryLayer::new(inf.clone(), data, None).unwrap()
    };
    let l4 = build(&infos[0], 2);
    let l5 = build(&infos[1], 1);
    let ids: Vec<String> = (0..cells.len()).map(|i| format!("img{i}")).collect();
    let units = filter_argmaxes(&[&l4, &l5], &ids, View::Original).unwrap();
    let g5 = geometry(16.0);
    let part_px = |(r, c): (usize, usize)| Point::new(g5.map_to_pixel(r as f64), g5.map_to_pixel(c as f64));
    let train: Vec<_> = (0..3).map(|i| (units[i].clone(), part_px(cells[i]))).collect();
    let layout = UnitLayout::for_filters(SIZE, &infos);
    let model = LocalizeParams::default().top_fraction(1.0).check().unwrap().fit_units(&layout, &train).unwrap();
    assert_eq!(model.templates[0].units.len(), 12);
    let p = model.predict(&units[3]).unwrap();
    // Each layer's δ absorbs its own cell-centre offset, so the recovery is exact.
    assert_eq!(p.point, part_px(cells[3]));
    assert_eq!(p.voters, 12);
}
