//! Writes the random ResNet-50 of the `resnet50_forward` bench (full width, seed 50) as a
//! torchvision-named safetensors state dict, plus a reference file with a fixed input and our
//! `layer4` output on it, so that ONNX Runtime can run the same weights and check that both
//! engines agree (`benches/onnxruntime/ort_bench.py`; `cargo xtask bench-backbone` does all of
//! this itself and times both engines).
//!
//! `cargo run --release -p expgraph-benches --example resnet50_weights -- OUT_DIR`
//! writes `OUT_DIR/resnet50-random.safetensors` and `OUT_DIR/resnet50-reference.safetensors`
//! (`input` [1, 3, 224, 224], `output` [1, 2048, 7, 7], both f32).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use expgraph_backbone::testing::{random_input, BenchNet, RESNET50_SEED};
use expgraph_cache::{serialize_safetensors, OwnedTensor};

fn owned(t: &Tensor) -> Result<OwnedTensor, Box<dyn std::error::Error>> {
    Ok(OwnedTensor::f32(t.dims().to_vec(), t.flatten_all()?.to_vec1::<f32>()?))
}

fn write(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), Box<dyn std::error::Error>> {
    let owned = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), owned(t)?)))
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    let bytes =
        serialize_safetensors(owned.iter().map(|(n, t)| (n.as_str(), t)), [("seed", RESNET50_SEED.to_string())])?;
    std::fs::write(path, bytes)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: resnet50_weights OUT_DIR")?);
    std::fs::create_dir_all(&dir)?;
    let net = BenchNet::ResNet50;
    let weights = dir.join("resnet50-random.safetensors");
    write(&weights, &net.random_weights(RESNET50_SEED)?)?;
    // Our output with the weights just written, on a fixed input.
    let input = random_input(1, 224, RESNET50_SEED + 1, &Device::Cpu)?;
    let output = net.load_file(&weights, &Device::Cpu)?.forward_taps(&input, &[net.output_tap()])?.remove(0);
    write(&dir.join("resnet50-reference.safetensors"), &[("input".into(), input), ("output".into(), output)])?;
    Ok(())
}
