//! The data sets' ground truth feeds the metrics: perfect predictions score 0, a shift scores
//! its distance, a unit on a landmark is perfectly stable.

use expgraph::datasets::{generate_synthetic_cub, SynthParams};
use expgraph::eval::{
    evaluate_localization, location_instability, Landmarks, LayerTracks, LocalizationParams, ObjectResult, Point,
    StabilityProtocol,
};

fn small(seed: u64) -> SynthParams {
    SynthParams { n_images: 12, image_size: 128, seed, occlusion_prob: 0.3, ..SynthParams::default() }
}

#[test]
fn ground_truth_feeds_the_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let s = generate_synthetic_cub(&tmp.path().join("b"), &small(5)).unwrap();
    let ds = &s.dataset;
    let beak = ds.part_index("beak").unwrap();
    // perfect predictions → distance 0; predictions 10 px off in x → 10 / (224·√2)
    let truth = ds.truth_in_frame(beak, 224.0);
    let perfect: Vec<ObjectResult> =
        truth.iter().map(|t| ObjectResult { prediction: t.first().map(|i| i.centre), truth: t.clone() }).collect();
    let r = evaluate_localization(&perfect, &LocalizationParams::default()).unwrap();
    assert_eq!(r.objects, ds.objects_with_part(beak));
    assert_eq!(r.normalized_distance, 0.0);
    let off: Vec<ObjectResult> = truth
        .iter()
        .map(|t| ObjectResult {
            prediction: t.first().map(|i| Point::new(i.centre.x + 10.0, i.centre.y)),
            truth: t.clone(),
        })
        .collect();
    let r = evaluate_localization(&off, &LocalizationParams::default()).unwrap();
    assert!((r.normalized_distance - 10.0 / (224.0 * 2f64.sqrt())).abs() < 1e-12);
    // a "unit" sitting exactly on the tail in every image is perfectly stable
    let tail = ds.part_index("tail").unwrap();
    let marks = Landmarks::new(ds.landmarks_in_frame(&[tail], 224.0)).unwrap();
    let n = ds.objects.len();
    let positions: Vec<Point> =
        ds.objects.iter().map(|o| o.landmark_in_frame(tail, 224.0).unwrap_or(Point::new(0.0, 0.0))).collect();
    let tracks = LayerTracks::new("t", 1, n, positions, vec![1.0; n]).unwrap();
    let r = location_instability(&[tracks], &marks, StabilityProtocol::ICNN, 224.0).unwrap();
    assert!(r.instability.abs() < 1e-12);
}
