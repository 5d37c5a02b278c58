//! Fine-tuning end to end on tiny random VGG-16s and generated images. Fast in `--release`.

mod common;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::{check_gradients, write_set, write_vgg};
use expgraph_backbone::{Backbone, Preprocess, Vgg16};
use expgraph_finetune::{
    checkpoint_path, read_metadata, BaseWeights, FinetuneError, FinetuneParams, FrozenStack, TrainableNet, TrainingSet,
    HEAD_BIAS, HEAD_WEIGHT,
};
use rand::{Rng, SeedableRng};

fn tiny_params() -> FinetuneParams {
    FinetuneParams::default().input_size(32).batch(4).learning_rate(0.01).seed(7)
}

/// The tensors of a safetensors file, name → (shape, bytes), and its metadata.
fn tensors_of(path: &Path) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec())).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn loss_falls_and_accuracy_is_measured() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("vgg.safetensors");
    write_vgg(&weights, 16, 1);
    let (objects, negatives) = write_set(dir.path(), 8, 3);
    let data = TrainingSet::load(&objects, &negatives, 32, Preprocess::Caffe).unwrap();
    assert_eq!(data.samples().len(), 8 * 2 + 8);
    let base = BaseWeights::load(&weights).unwrap();
    let out = dir.path().join("tuned.safetensors");
    let report =
        tiny_params().epochs(8).learning_rate(1e-3).check().unwrap().fit(&base, &data, &out, &Device::Cpu).unwrap();
    eprintln!("history: {:#?}", report.history);
    assert!(report.finished);
    assert_eq!(report.history.len(), 8);
    let (first, last) = (&report.history[0], &report.history[7]);
    assert!(last.train_loss < 0.5 * first.train_loss, "loss did not fall: {} → {}", first.train_loss, last.train_loss);
    assert!(last.held_out_accuracy >= 0.8, "held-out accuracy {}", last.held_out_accuracy);
    // 20 % of 8 objects (2, with mirrors: 4 samples) and of 8 negatives (2) held out.
    assert_eq!((report.train_samples, report.held_out_samples), (18, 6));
    for h in &report.history {
        assert!(h.held_out_loss.is_finite() && (0.0..=1.0).contains(&h.held_out_accuracy), "{h:?}");
        // accuracy is a count over 6 samples
        assert!(((h.held_out_accuracy * 6.0).round() - h.held_out_accuracy * 6.0).abs() < 1e-9);
    }
    assert!(out.is_file());
    assert!(!checkpoint_path(&out).exists(), "the checkpoint is removed at the end");
    let meta = read_metadata(&out).unwrap();
    assert_eq!(meta["held_out_accuracy"].as_f64(), Some(report.held_out_accuracy));
}

#[test]
fn head_and_conv_gradients_match_finite_differences() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("vgg.safetensors");
    write_vgg(&weights, 16, 2);
    let base = BaseWeights::load(&weights).unwrap();
    let net = TrainableNet::new(&base, "conv5_1", 5, 1, DType::F64, &Device::Cpu).unwrap();
    // Fixed "frozen" features: 4 samples of conv4_3's pooled output shape [32, 4, 4].
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let values: Vec<f64> = (0..4 * 32 * 16).map(|_| rng.random_range(0.0..2.0)).collect();
    let x = Tensor::from_vec(values, (4, 32, 4, 4), &Device::Cpu).unwrap();
    let y = Tensor::new(&[1.0f64, 0.0, 1.0, 0.0], &Device::Cpu).unwrap();
    // the head fully, a few entries of each conv
    let checked = check_gradients(&net, &x, &y, |name, len| {
        if name.starts_with("head") {
            (0..len).collect()
        } else {
            (0..4).map(|k| k * len / 4).collect()
        }
    });
    assert!(checked > 32, "checked {checked} entries");
    assert!(net.vars().iter().any(|(n, _)| n == HEAD_WEIGHT) && net.vars().iter().any(|(n, _)| n == HEAD_BIAS));
}

#[test]
fn resume_after_an_interruption_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("vgg.safetensors");
    write_vgg(&weights, 16, 3);
    let (objects, negatives) = write_set(dir.path(), 5, 4);
    let data = TrainingSet::load(&objects, &negatives, 32, Preprocess::Caffe).unwrap();
    let base = BaseWeights::load(&weights).unwrap();
    let params = || tiny_params().epochs(3).train_from("conv3_3").batch(3);

    let whole = dir.path().join("whole.safetensors");
    let a = params().check().unwrap().fit(&base, &data, &whole, &Device::Cpu).unwrap();

    let parts = dir.path().join("parts.safetensors");
    let stopped = params().stop_after(Some(1)).check().unwrap().fit(&base, &data, &parts, &Device::Cpu).unwrap();
    assert!(!stopped.finished && stopped.epochs_done == 1);
    assert!(!parts.exists() && checkpoint_path(&parts).is_file(), "stopped: checkpoint only");

    // a checkpoint of other parameters is refused, and kept
    let err = params().learning_rate(0.02).resume(true).check().unwrap().fit(&base, &data, &parts, &Device::Cpu);
    let text = err.unwrap_err().to_string();
    assert!(text.contains("checkpoint") && text.contains("other parameters"), "{text}");
    // ... and one of other base weights
    let other = dir.path().join("other.safetensors");
    write_vgg(&other, 16, 99);
    let other_base = BaseWeights::load(&other).unwrap();
    let text =
        params().resume(true).check().unwrap().fit(&other_base, &data, &parts, &Device::Cpu).unwrap_err().to_string();
    assert!(text.contains("base weights"), "{text}");

    let b = params().resume(true).check().unwrap().fit(&base, &data, &parts, &Device::Cpu).unwrap();
    assert_eq!(b.resumed_from, Some(1));
    assert!(b.finished && !checkpoint_path(&parts).exists());
    assert_eq!(a.history, b.history);
    let (ta, tb) = (tensors_of(&whole), tensors_of(&parts));
    assert_eq!(ta.len(), 26 + 2);
    assert_eq!(ta, tb, "resumed weights differ from the uninterrupted run's");
    // training changed the trained tensors and kept the frozen ones
    let base_tensors = tensors_of(&weights);
    let get = |t: &[(String, Vec<usize>, Vec<u8>)], n: &str| t.iter().find(|x| x.0 == n).unwrap().2.clone();
    assert_eq!(get(&ta, "features.12.weight"), get(&base_tensors, "features.12.weight"));
    assert_ne!(get(&ta, "features.14.weight"), get(&base_tensors, "features.14.weight"));
    assert_ne!(get(&ta, "features.28.weight"), get(&base_tensors, "features.28.weight"));
}

#[test]
fn output_loads_as_a_vgg16_backbone_and_extracts() {
    let dir = tempfile::tempdir().unwrap();
    // Vgg16::load_file needs full widths: a full-width random VGG, only conv5_3 trained.
    let weights = dir.path().join("vgg-full.safetensors");
    write_vgg(&weights, 1, 5);
    let (objects, negatives) = write_set(dir.path(), 2, 6);
    let data = TrainingSet::load(&objects, &negatives, 32, Preprocess::Caffe).unwrap();
    let base = BaseWeights::load(&weights).unwrap();
    let out = dir.path().join("tuned.safetensors");
    let report = tiny_params()
        .epochs(1)
        .train_from("conv5_3")
        .learning_rate(1e-3)
        .check()
        .unwrap()
        .fit(&base, &data, &out, &Device::Cpu)
        .unwrap();
    assert_eq!((report.train_samples, report.held_out_samples), (3, 3));

    // The frozen part ran through the fast CPU kernels; candle's ops agree with them.
    let frozen = FrozenStack::new(&base, "conv5_3", &Device::Cpu).unwrap();
    assert!(frozen.is_fast());
    let pixels: Vec<&[u8]> = data.samples()[..2].iter().map(|s| s.pixels.as_slice()).collect();
    let x = Preprocess::Caffe.to_tensor(&pixels, 32, &Device::Cpu).unwrap();
    let fast = frozen.forward(&x).unwrap();
    let slow = FrozenStack::new(&base, "conv5_3", &Device::Cpu).unwrap().with_fast_kernels(false).forward(&x).unwrap();
    assert_eq!(fast.dims(), &[2, 512, 2, 2]);
    assert_eq!(fast.dims(), slow.dims());
    let scale = slow.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let diff = (fast - slow).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(scale > 0.0 && diff <= 1e-3 * scale, "fast vs candle frozen layers: {diff} of {scale}");

    let vgg = Vgg16::load_file(&out, &Device::Cpu).unwrap();
    let pixels = vec![100u8; 32 * 32 * 3];
    let input = Preprocess::Caffe.to_tensor(&[&pixels], 32, &Device::Cpu).unwrap();
    let maps = vgg.forward_taps(&input, &["conv4_3", "conv5_3"]).unwrap();
    assert_eq!(maps[0].dims(), &[1, 512, 4, 4]);
    assert_eq!(maps[1].dims(), &[1, 512, 2, 2]);
    for m in &maps {
        assert!(m.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|v| v.is_finite()));
    }
    // `auto` detection is not confused by the head tensors.
    let loaded = expgraph_features::load_backbone(out.to_str().unwrap(), "auto", None, "cpu").unwrap();
    assert_eq!(loaded.architecture, expgraph_features::Architecture::Vgg16);
    assert_eq!(loaded.model.forward_taps(&input, &["conv5_3"]).unwrap()[0].dims(), &[1, 512, 2, 2]);

    let meta = read_metadata(&out).unwrap();
    assert_eq!(meta["base_weights"]["blake3"], base.digest());
    assert_eq!(meta["data"]["digest"], data.digest());
    assert_eq!(meta["data"]["positives"], 2);
    assert_eq!(meta["params"]["train_from"], "conv5_3");
    assert_eq!(meta["history"].as_array().unwrap().len(), 1);
    assert_eq!(meta["crate_version"], env!("CARGO_PKG_VERSION"));
    let head = tensors_of(&out).into_iter().find(|t| t.0 == HEAD_WEIGHT).unwrap();
    assert_eq!(head.1, [1, 512]);
}

#[test]
fn bad_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (objects, negatives) = write_set(dir.path(), 3, 8);
    let load = |o: &[expgraph_features::ObjectImage], n: &[std::path::PathBuf]| {
        TrainingSet::load(o, n, 32, Preprocess::Caffe).unwrap_err().to_string()
    };
    assert!(load(&[], &negatives).contains("no positive"), "{}", load(&[], &negatives));
    assert!(load(&objects, &[]).contains("no negative"));
    let one = load(&objects, &negatives[..1]);
    assert!(one.contains("too few negatives") && one.contains("at least 2"), "{one}");
    let garbage = dir.path().join("neg/garbage.png");
    std::fs::write(&garbage, b"this is not an image").unwrap();
    let mut with_garbage = negatives.clone();
    with_garbage.push(garbage);
    let text = load(&objects, &with_garbage);
    assert!(text.contains("garbage.png"), "{text}");
    let mut missing = objects.clone();
    missing[1].path = dir.path().join("pos/nope.png");
    let text = load(&missing, &negatives);
    assert!(text.contains("nope.png") && text.contains("not found"), "{text}");
    let mut outside = objects.clone();
    outside[0].bbox = Some([500.0, 500.0, 600.0, 600.0]);
    let text = load(&outside, &negatives);
    assert!(text.contains("obj00.png"), "{text}");

    // weights that are not a VGG-16
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"garbage").unwrap();
    let text = BaseWeights::load(&bad).unwrap_err().to_string();
    assert!(text.contains("bad.safetensors") && text.contains("not a safetensors"), "{text}");
    // input size mismatch between data and params
    let weights = dir.path().join("vgg.safetensors");
    write_vgg(&weights, 16, 1);
    let data = TrainingSet::load(&objects, &negatives, 32, Preprocess::Caffe).unwrap();
    let base = BaseWeights::load(&weights).unwrap();
    let e = FinetuneParams::default().check().unwrap().fit(&base, &data, &dir.path().join("o"), &Device::Cpu);
    assert!(matches!(e, Err(FinetuneError::Data(ref t)) if t.contains("input size 224")), "{e:?}");
}
