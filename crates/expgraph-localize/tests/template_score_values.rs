//! The AOG template score's VALUE (not only which point or template wins) on a tiny hand-made
//! case: two templates, five units already in pixels, the default (AOG) parameters.

use expgraph_localize::{
    ImageUnits, LocalizeParams, PartModel, PartTemplate, Point, SelectedUnit, TapGeometry, TemplateScore, UnitLayer,
    UnitLayerLayout, UnitLayout,
};

const SIZE: usize = 96;

fn unit(unit: u32, delta: [f64; 2]) -> SelectedUnit {
    SelectedUnit { layer: 0, unit, delta }
}

fn template(id: &str, units: Vec<SelectedUnit>) -> PartTemplate {
    PartTemplate { image_id: id.into(), point: Point::new(10.0, 10.0), flipped: false, score: 1.0, units }
}

/// Template A (index 0) and template B (index 1) on a test image whose units sit at (pixels):
///
/// | unit | position | score | A: δ → vote centre c      | B: δ → vote centre c     |
/// |------|----------|-------|---------------------------|--------------------------|
/// | 0    | (19, 32) | 2.0   | (1, −2) → (20, 30)        | (1, −2) → (20, 30)       |
/// | 1    | (20, 30) | 1.0   | (6, 8) → (26, 38)         | —                        |
/// | 2    | (20, 68) | 0.5   | (0, −3) → (20, 65)        | (−5, 0) → (15, 68)       |
/// | 3    | (22, 31) | 3.0   | (−2, −1) → (20, 30)       | (−2, −1) → (20, 30)      |
/// | 4    | (5, 5)   | −0.5  | (0, 0), not detected      | —                        |
fn case() -> (PartModel, ImageUnits) {
    let params = LocalizeParams::default().check().unwrap();
    assert_eq!(params.template_score(), TemplateScore::AOG, "λ = 5, scale = 35·√2");
    let layout = UnitLayout {
        input_size: SIZE,
        layers: vec![UnitLayerLayout {
            name: "l".into(),
            geometry: TapGeometry { stride: 16.0, first_centre: 8.5, receptive_field: 100.0 },
            num_units: 5,
        }],
    };
    let a = template(
        "a",
        vec![
            unit(0, [1.0, -2.0]),
            unit(1, [6.0, 8.0]),
            unit(2, [0.0, -3.0]),
            unit(3, [-2.0, -1.0]),
            unit(4, [0.0, 0.0]),
        ],
    );
    let b = template("b", vec![unit(0, [1.0, -2.0]), unit(3, [-2.0, -1.0]), unit(2, [-5.0, 0.0])]);
    let model = PartModel { params, layout, templates: vec![a, b] };
    model.validate().unwrap();
    let units = ImageUnits {
        image_id: "test".into(),
        flipped: false,
        layers: vec![UnitLayer {
            positions: vec![[19.0, 32.0], [20.0, 30.0], [20.0, 68.0], [22.0, 31.0], [5.0, 5.0]],
            scores: vec![2.0, 1.0, 0.5, 3.0, -0.5],
        }],
    };
    (model, units)
}

#[test]
fn aog_template_scores_equal_hand_computed_values() {
    let (model, units) = case();
    let p = model.predict_unit_views(&[units], true).unwrap();
    // Both templates peak at p̂ = (20, 30), where two of their votes coincide (the map's other
    // vote centres get one vote each). λ/(2·scale²) = 5 / (2·2450) = 1/980.
    //
    // A: mean over its 5 units of s − ‖p̂ − c‖²/980 (detected) or s (undetected):
    //   unit 0: 2.0 − 0/980;  unit 1: 1.0 − ((20−26)² + (30−38)²)/980 = 1 − 100/980;
    //   unit 2: 0.5 − (0² + (30−65)²)/980 = 0.5 − 1225/980 = −0.75;  unit 3: 3.0 − 0;
    //   unit 4: −0.5 (no spatial term)
    //   → (6 − 1325/980) / 5 = 0.9295918367346939
    // B: unit 0: 2.0; unit 3: 3.0; unit 2: 0.5 − ((20−15)² + (30−68)²)/980 = 0.5 − 1469/980
    //   → (5.5 − 1469/980) / 3 = 1.3336734693877552
    // (Swapping h and w in ‖p̂ − c‖ would give 0.6153 and 0.8371; a missing factor 2 in 2·scale²
    // or a spatial term on the undetected unit would also move both.)
    let (want_a, want_b) = (0.929_591_836_734_693_9, 1.333_673_469_387_755_2);
    assert_eq!(p.template_scores.len(), 2);
    assert!((p.template_scores[0] - want_a).abs() < 1e-12, "A: {}", p.template_scores[0]);
    assert!((p.template_scores[1] - want_b).abs() < 1e-12, "B: {}", p.template_scores[1]);
    // B wins with its own score, at its peak.
    assert_eq!(p.template, 1);
    assert!((p.score - want_b).abs() < 1e-12, "{}", p.score);
    assert_eq!(p.point, Point::new(20.0, 30.0));
    assert_eq!((p.voters, p.fallback), (3, false));

    // B's vote map (AOG kernel κ(d) = exp(−‖d‖/(35√2)) − exp(−11/35) on ‖d‖∞ ≤ 11, weight 1):
    let map = p.vote_map.as_ref().expect("asked for the vote map");
    let at = |h: usize, w: usize| f64::from(map.values[(h - 1) * SIZE + (w - 1)]);
    // at the winner (20, 30): 2·κ(0) + κ((5, −38)) = 2·(1 − exp(−11/35)) + 0 = 0.5393793234972855
    assert!((at(20, 30) - 0.539_379_323_497_285_5).abs() < 1e-6, "{}", at(20, 30));
    // at unit 2's centre (15, 68): κ(0) = 1 − exp(−11/35) = 0.26968966174864273
    assert!((at(15, 68) - 0.269_689_661_748_642_73).abs() < 1e-6, "{}", at(15, 68));
    // at (23, 34), 5 px from the winner: 2·κ((3, 4)) = 2·(exp(−5/49.4975) − exp(−11/35)) = 0.34721781146741026
    assert!((at(23, 34) - 0.347_217_811_467_410_26).abs() < 1e-6, "{}", at(23, 34));
}

#[test]
fn mean_score_rule_ignores_detection_and_position() {
    let (mut model, units) = case();
    model.params = LocalizeParams::default().template_score(TemplateScore::MeanScore).check().unwrap();
    let p = model.predict_unit_views(&[units], false).unwrap();
    // A: (2 + 1 + 0.5 + 3 − 0.5) / 5 = 1.2;  B: (2 + 3 + 0.5) / 3 = 1.8333333333333333
    assert!((p.template_scores[0] - 1.2).abs() < 1e-12, "{}", p.template_scores[0]);
    assert!((p.template_scores[1] - 5.5 / 3.0).abs() < 1e-12, "{}", p.template_scores[1]);
    assert_eq!((p.template, p.point), (1, Point::new(20.0, 30.0)));
}
