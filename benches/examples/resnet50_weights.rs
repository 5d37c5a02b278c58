//! Writes the random ResNet-50 of the `resnet50_forward` bench (full width, seed 50) as a
//! torchvision-named safetensors state dict, plus a reference file with a fixed input and our
//! `layer4` output on it, so that `benches/onnxruntime/resnet50_ort.py` runs the same weights in
//! ONNX Runtime and checks that both engines agree.
//!
//! `cargo run --release -p expgraph-benches --example resnet50_weights -- OUT_DIR`
//! writes `OUT_DIR/resnet50-random.safetensors` and `OUT_DIR/resnet50-reference.safetensors`
//! (`input` [1, 3, 224, 224], `layer4` [1, 2048, 7, 7], both f32).

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use expgraph_backbone::{Backbone, ResNet, ResNetDepth};
use expgraph_cache::{serialize_safetensors, OwnedTensor};
use rand::{Rng, SeedableRng};

/// The seed of `benches/resnet50_forward.rs`.
const SEED: u64 = 50;

fn owned(t: &Tensor) -> Result<OwnedTensor, Box<dyn std::error::Error>> {
    Ok(OwnedTensor::f32(t.dims().to_vec(), t.flatten_all()?.to_vec1::<f32>()?))
}

fn write(path: &PathBuf, tensors: &[(String, OwnedTensor)]) -> Result<(), Box<dyn std::error::Error>> {
    let bytes = serialize_safetensors(tensors.iter().map(|(n, t)| (n.as_str(), t)), [("seed", SEED.to_string())])?;
    std::fs::write(path, bytes)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: resnet50_weights OUT_DIR")?);
    std::fs::create_dir_all(&dir)?;
    let state = ResNet::random_state_dict(ResNetDepth::R50, 1, SEED)?;
    let tensors = state
        .iter()
        .map(|(n, t)| Ok((n.clone(), owned(t)?)))
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    write(&dir.join("resnet50-random.safetensors"), &tensors)?;

    // A fixed input in the range of torchvision-normalized pixels.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SEED + 1);
    let values: Vec<f32> = (0..3 * 224 * 224).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let input = Tensor::from_vec(values, (1, 3, 224, 224), &Device::Cpu)?;
    let model = ResNet::random(ResNetDepth::R50, 1, SEED, &Device::Cpu)?;
    let layer4 = model.forward_taps(&input, &["layer4"])?.remove(0);
    write(
        &dir.join("resnet50-reference.safetensors"),
        &[("input".to_string(), owned(&input)?), ("layer4".to_string(), owned(&layer4)?)],
    )?;
    Ok(())
}
