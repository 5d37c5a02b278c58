//! Bad inputs get clear errors, never panics.

use expgraph_cache::{InMemoryLayer, LayerMaps};
use expgraph_learn::synthetic::{generate, SyntheticSpec};
use expgraph_learn::{infer, infer_views, InMemoryFeatures, LearnError, LearnParams, ViewPolicy};

fn small() -> InMemoryFeatures {
    generate(&SyntheticSpec { num_images: 6, channels: 2, seed: 9, ..SyntheticSpec::default() }).features
}

fn params() -> expgraph_learn::CheckedLearnParams {
    LearnParams::default().layers(&[("low", 0.05), ("top", 0.1)]).iterations(2).top_n(3).check().unwrap()
}

#[test]
fn invalid_parameters_are_typed_errors() {
    let e = |p: LearnParams| match p.check() {
        Err(LearnError::InvalidParam { name, .. }) => name,
        other => panic!("expected InvalidParam, got {other:?}"),
    };
    assert_eq!(e(LearnParams::default().iterations(0)), "iterations");
    assert_eq!(e(LearnParams::default().layers(&[])), "layers");
    assert_eq!(e(LearnParams::default().layers(&[("a", 0.0)])), "layers");
    assert_eq!(e(LearnParams::default().layers(&[("a", 0.1), ("a", 0.1)])), "layers");
    assert_eq!(e(LearnParams::default().eta(f64::NAN)), "eta");
    assert_eq!(e(LearnParams::default().valid_tau(-1.0)), "valid_tau");
    assert_eq!(e(LearnParams::default().chunk_size(0)), "chunk_size");
    assert_eq!(e(LearnParams::default().max_images(Some(1))), "max_images");
}

#[test]
fn too_few_images_and_missing_layers() {
    let mut f = small();
    let one = |l: &InMemoryLayer| {
        let mut v = vec![0.0; l.info().image_len()];
        l.read_image(0, expgraph_cache::View::Original, &mut v);
        InMemoryLayer::new(l.info().clone(), v, None).unwrap()
    };
    f.layers = f.layers.iter().map(one).collect();
    f.image_ids.truncate(1);
    assert!(matches!(params().fit(&f), Err(LearnError::TooFewImages(1))));
    f.image_ids.clear();
    assert!(matches!(params().fit(&f), Err(LearnError::TooFewImages(0))));
    let err = LearnParams::default().check().unwrap().fit(&small()).unwrap_err();
    assert!(matches!(err, LearnError::MissingLayer { ref layer, .. } if layer == "conv4_2"), "{err}");
    assert!(err.to_string().contains("conv4_2") && err.to_string().contains("low"));
}

#[test]
fn non_finite_features_are_reported_with_their_place() {
    // InMemoryLayer rejects NaN itself; a source that yields NaN anyway (e.g. a corrupt cache)
    // is caught by the learner.
    struct Poisoned(InMemoryFeatures);
    struct PoisonedLayer<'a>(Box<dyn LayerMaps + 'a>);
    impl LayerMaps for PoisonedLayer<'_> {
        fn info(&self) -> &expgraph_cache::LayerInfo {
            self.0.info()
        }
        fn num_images(&self) -> usize {
            self.0.num_images()
        }
        fn has_flipped(&self) -> bool {
            false
        }
        fn read_channel(&self, image: usize, view: expgraph_cache::View, channel: usize, out: &mut [f32]) {
            self.0.read_channel(image, view, channel, out);
            if image == 4 && channel == 1 {
                out[3] = f32::INFINITY;
            }
        }
    }
    impl expgraph_learn::FeatureSource for Poisoned {
        fn backbone(&self) -> &str {
            "synthetic"
        }
        fn input_size(&self) -> usize {
            224
        }
        fn layers(&self) -> Vec<expgraph_cache::LayerInfo> {
            self.0.layers()
        }
        fn image_ids(&self) -> Vec<String> {
            self.0.image_ids()
        }
        fn open_layer(&self, name: &str) -> Result<Box<dyn LayerMaps + '_>, LearnError> {
            Ok(Box::new(PoisonedLayer(self.0.open_layer(name)?)))
        }
    }
    match params().fit(&Poisoned(small())) {
        Err(LearnError::NonFinite { layer, image: 4, channel: 1 }) => assert_eq!(layer, "top"),
        other => panic!("expected NonFinite, got {other:?}"),
    }
}

#[test]
fn inference_rejects_features_of_another_backbone_or_shape() {
    let f = small();
    let g = params().fit(&f).unwrap().graph;
    let mut other = f.clone();
    other.backbone = "resnet".into();
    assert!(matches!(infer(&g, &other, None), Err(LearnError::Mismatch(m)) if m.contains("resnet")));
    // Same names, other shape: 3 channels instead of 2.
    let wider = generate(&SyntheticSpec { num_images: 6, channels: 3, seed: 9, ..SyntheticSpec::default() }).features;
    let err = infer(&g, &wider, None).unwrap_err();
    assert!(matches!(err, LearnError::Mismatch(ref m) if m.contains("top") || m.contains("low")), "{err}");
    // Other layer set.
    let mut renamed = f.clone();
    renamed.layers.truncate(1);
    assert!(matches!(infer(&g, &renamed, None), Err(LearnError::MissingLayer { .. })));
    // No mirrored view to infer in.
    let err = infer_views(&g, &f, None, ViewPolicy::Mirrored).unwrap_err();
    assert!(matches!(err, LearnError::Mismatch(ref m) if m.contains("no mirrored view")), "{err}");
    let mut empty = f;
    empty.image_ids.clear();
    assert!(matches!(infer(&g, &empty, None), Err(LearnError::NoImages)));
}
