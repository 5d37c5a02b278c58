//! Fine-tuning a ResNet: the candle-op network against the backbone crate's (golden-tested)
//! one, gradients, a falling loss, and a full-width run whose output loads and extracts.

mod common;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::{check_gradients, write_resnet, write_set};
use expgraph_backbone::{Backbone, Preprocess, ResNet, ResNetDepth};
use expgraph_features::Architecture;
use expgraph_finetune::{
    read_metadata, BaseWeights, FinetuneParams, FrozenStack, TrainableNet, TrainingSet, HEAD_WEIGHT,
};
use rand::{Rng, SeedableRng};

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn random_input(n: usize, size: usize, seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * 3 * size * size).map(|_| rng.random_range(-2.0..2.0)).collect();
    Tensor::from_vec(v, (n, 3, size, size), &Device::Cpu).unwrap()
}

/// name → (shape, bytes) of a safetensors file.
fn tensors_of(path: &Path) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors().into_iter().map(|(n, v)| (n, (v.shape().to_vec(), v.data().to_vec()))).collect()
}

#[test]
fn candle_ops_match_the_backbone_for_bottleneck_and_basic_blocks() {
    let dir = tempfile::tempdir().unwrap();
    for (depth, divisor, train_from, tap) in
        [(ResNetDepth::R50, 8, "layer4", "layer3"), (ResNetDepth::R18, 4, "layer3", "layer2")]
    {
        let path = dir.path().join(format!("{}.safetensors", depth.name()));
        write_resnet(&path, depth, divisor, 3);
        let base = BaseWeights::load(&path).unwrap();
        assert_eq!(base.architecture(), Architecture::ResNet(depth));
        assert_eq!(base.channels(), depth.stage_channels(3) / divisor);
        let frozen = FrozenStack::new(&base, train_from, &Device::Cpu).unwrap();
        assert!(!frozen.is_fast(), "reduced width runs candle's ops");
        let x = random_input(2, 64, 1);
        let ours = frozen.forward(&x).unwrap();
        let golden =
            ResNet::random(depth, divisor, 3, &Device::Cpu).unwrap().forward_taps(&x, &[tap]).unwrap().remove(0);
        assert_eq!(ours.dims(), golden.dims(), "{depth}");
        let scale = max_abs(&golden);
        let diff = max_abs(&(ours - golden).unwrap());
        assert!(scale > 0.0 && diff <= 1e-4 * scale, "{depth} {tap}: {diff} of {scale}");
    }
}

#[test]
fn gradients_of_a_trained_stage_match_finite_differences() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r50.safetensors");
    write_resnet(&path, ResNetDepth::R50, 16, 4);
    let base = BaseWeights::load(&path).unwrap();
    let net = TrainableNet::new(&base, "layer4", 5, 1, DType::F64, &Device::Cpu).unwrap();
    // conv weights and BatchNorm scale/shift of layer4's 3 blocks (+ downsample), then the head
    assert_eq!(net.vars().len(), (3 * 3 + 1) * 3 + 2);
    assert!(net.vars().iter().all(|(n, _)| n.starts_with("layer4.") || n.starts_with("head.")));
    assert!(!net.vars().iter().any(|(n, _)| n.contains("running")));
    let c = ResNetDepth::R50.stage_channels(2) / 16;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let values: Vec<f64> = (0..4 * c * 16).map(|_| rng.random_range(0.0..2.0)).collect();
    let x = Tensor::from_vec(values, (4, c, 4, 4), &Device::Cpu).unwrap();
    let y = Tensor::new(&[1.0f64, 0.0, 1.0, 0.0], &Device::Cpu).unwrap();
    let checked = check_gradients(&net, &x, &y, |_, len| (0..3).map(|k| k * len / 3).collect());
    assert!(checked >= 90, "checked {checked} entries");
}

#[test]
fn loss_falls_when_training_two_stages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r18.safetensors");
    write_resnet(&path, ResNetDepth::R18, 8, 5);
    let (objects, negatives) = write_set(dir.path(), 8, 3);
    let data = TrainingSet::load(&objects, &negatives, 32, Preprocess::Torchvision).unwrap();
    let base = BaseWeights::load(&path).unwrap();
    let out = dir.path().join("tuned.safetensors");
    let report = FinetuneParams::default()
        .input_size(32)
        .batch(4)
        .learning_rate(1e-2)
        .seed(7)
        .epochs(8)
        .train_from("layer3")
        .check()
        .unwrap()
        .fit(&base, &data, &out, &Device::Cpu)
        .unwrap();
    eprintln!("history: {:#?}", report.history);
    let (first, last) = (&report.history[0], &report.history[7]);
    assert!(last.train_loss < 0.5 * first.train_loss, "loss did not fall: {} → {}", first.train_loss, last.train_loss);
    assert!(last.held_out_accuracy >= 0.8, "held-out accuracy {}", last.held_out_accuracy);
    let meta = read_metadata(&out).unwrap();
    assert_eq!(meta["architecture"], "resnet18");
    assert_eq!(meta["trained"], serde_json::json!(["layer3", "layer4"]));
}

#[test]
fn full_width_run_uses_the_fast_frozen_part_and_its_output_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r18.safetensors");
    write_resnet(&path, ResNetDepth::R18, 1, 6);
    let (objects, negatives) = write_set(dir.path(), 2, 6);
    let data = TrainingSet::load(&objects, &negatives, 32, Preprocess::Torchvision).unwrap();
    let base = BaseWeights::load(&path).unwrap();
    assert_eq!(base.default_train_from(), "layer4");
    // train_from a VGG-16 layer is refused for a ResNet, naming what it has
    let e = FinetuneParams::default().input_size(32).train_from("conv4_1").check().unwrap().fit(
        &base,
        &data,
        &dir.path().join("x"),
        &Device::Cpu,
    );
    let text = e.unwrap_err().to_string();
    assert!(text.contains("resnet18") && text.contains("layer1") && text.contains("layer4"), "{text}");

    let frozen = FrozenStack::new(&base, "layer4", &Device::Cpu).unwrap();
    assert!(frozen.is_fast());
    let x = random_input(2, 64, 2);
    let fast = frozen.forward(&x).unwrap();
    let slow = FrozenStack::new(&base, "layer4", &Device::Cpu).unwrap().with_fast_kernels(false).forward(&x).unwrap();
    assert_eq!(fast.dims(), &[2, 256, 4, 4]);
    let diff = max_abs(&(fast - &slow).unwrap());
    assert!(diff <= 1e-4 * max_abs(&slow), "fast vs candle frozen part: {diff}");

    let out = dir.path().join("tuned.safetensors");
    let report = FinetuneParams::default().input_size(32).batch(2).epochs(1).check().unwrap().fit(
        &base,
        &data,
        &out,
        &Device::Cpu,
    );
    assert!(report.unwrap().finished);
    let model = ResNet::load_file(ResNetDepth::R18, &out, &Device::Cpu).unwrap();
    let maps = model.forward_taps(&x, &["layer4"]).unwrap();
    assert_eq!(maps[0].dims(), &[2, 512, 2, 2]);
    let loaded = expgraph_features::load_backbone(out.to_str().unwrap(), "auto", None, "cpu").unwrap();
    assert_eq!(loaded.architecture, Architecture::ResNet(ResNetDepth::R18));

    // Frozen tensors and running statistics copied byte for byte; trained ones changed.
    let (before, after) = (tensors_of(&path), tensors_of(&out));
    for name in ["conv1.weight", "layer3.1.conv2.weight", "layer4.0.bn1.running_var", "layer4.1.bn2.running_mean"] {
        assert_eq!(before[name], after[name], "{name}");
    }
    for name in ["layer4.0.conv1.weight", "layer4.1.bn2.weight", "layer4.0.downsample.0.weight"] {
        assert_eq!(before[name].0, after[name].0);
        assert_ne!(before[name].1, after[name].1, "{name} was trained");
    }
    assert_eq!(after[HEAD_WEIGHT].0, [1, 512]);
    assert!(!after.contains_key("fc.weight"));
    let meta = read_metadata(&out).unwrap();
    assert_eq!(meta["trained"], serde_json::json!(["layer4"]));
    assert_eq!(meta["head"], "logit = head.weight · mean_hw(layer4) + head.bias");
    assert!(meta["params"]["train_from"].is_null());
}
