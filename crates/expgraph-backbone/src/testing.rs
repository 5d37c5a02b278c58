//! Seeded random weights and inputs for benchmarks and cross-engine checks: the networks that
//! `cargo xtask bench-backbone` runs both here and in ONNX Runtime
//! (`benches/onnxruntime/ort_bench.py`), and the example `resnet50_weights`. Hidden from the
//! docs: a tool for the workspace's benches, not part of the API callers code against.

use std::path::Path;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

use crate::{Backbone, BackboneError, ResNet, ResNetDepth, Vgg16};

/// Seed of the random ResNet-50 of `benches/benches/resnet50_forward.rs` and of
/// `cargo xtask bench-backbone`.
pub const RESNET50_SEED: u64 = 50;

/// Seed of the random VGG-16 (used where the real weights are absent).
pub const VGG16_SEED: u64 = 0;

/// A network the cross-engine benchmark runs in both engines, at full width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BenchNet {
    /// VGG-16 conv stack up to `conv5_3`.
    Vgg16,
    /// ResNet-50 trunk up to `layer4`.
    ResNet50,
}

impl BenchNet {
    /// Every network, in bench order.
    pub const ALL: [BenchNet; 2] = [BenchNet::Vgg16, BenchNet::ResNet50];

    /// `vgg16` or `resnet50` (the `--model` names).
    pub fn name(self) -> &'static str {
        match self {
            BenchNet::Vgg16 => "vgg16",
            BenchNet::ResNet50 => "resnet50",
        }
    }

    /// The network called `name` (see [`BenchNet::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.name() == name)
    }

    /// The tap both engines output: `conv5_3` for VGG-16 (pre-ReLU, as every VGG-16 tap; there
    /// is no post-ReLU tap), `layer4` for ResNet-50 (after the stage's last ReLU).
    pub fn output_tap(self) -> &'static str {
        match self {
            BenchNet::Vgg16 => "conv5_3",
            BenchNet::ResNet50 => "layer4",
        }
    }

    /// The default seed of [`BenchNet::random_weights`].
    pub fn seed(self) -> u64 {
        match self {
            BenchNet::Vgg16 => VGG16_SEED,
            BenchNet::ResNet50 => RESNET50_SEED,
        }
    }

    /// Random full-width weights under their torchvision names (f32 CPU tensors; ResNet with
    /// BatchNorm statistics, unfolded): [`Vgg16::random`] / [`ResNet::random_state_dict`] with
    /// `seed`. A file of these loads with [`BenchNet::load_file`] into the same network.
    pub fn random_weights(self, seed: u64) -> Result<Vec<(String, Tensor)>, BackboneError> {
        match self {
            BenchNet::Vgg16 => Ok(Vgg16::random(1, seed, &Device::Cpu)?.named_weights()),
            BenchNet::ResNet50 => ResNet::random_state_dict(ResNetDepth::R50, 1, seed),
        }
    }

    /// Loads a torchvision-named safetensors file of this network onto `device`.
    pub fn load_file(self, path: &Path, device: &Device) -> Result<Box<dyn Backbone>, BackboneError> {
        Ok(match self {
            BenchNet::Vgg16 => Box::new(Vgg16::load_file(path, device)?),
            BenchNet::ResNet50 => Box::new(ResNet::load_file(ResNetDepth::R50, path, device)?),
        })
    }
}

/// A `[batch, 3, size, size]` f32 input, uniform in [-2, 2) (the range of torchvision-normalized
/// pixels), drawn from ChaCha8 seeded with `seed` image after image: the first images do not
/// depend on `batch`.
pub fn random_input(batch: usize, size: usize, seed: u64, device: &Device) -> Result<Tensor, BackboneError> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let values: Vec<f32> = (0..batch * 3 * size * size).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    Ok(Tensor::from_vec(values, (batch, 3, size, size), device)?)
}

/// The bits of every tap of `model.forward_taps(x, taps)`, computed on a rayon pool of `threads`
/// threads: the tests that check results do not depend on the thread count compare these.
#[cfg(test)]
pub(crate) fn tap_bits_with_threads(model: &dyn Backbone, x: &Tensor, taps: &[&str], threads: usize) -> Vec<Vec<u32>> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a rayon pool");
    let outs = pool.install(|| model.forward_taps(x, taps)).expect("forward");
    outs.iter()
        .map(|t| {
            t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("f32 taps").iter().map(|v| v.to_bits()).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_taps_exist() {
        for net in BenchNet::ALL {
            assert_eq!(BenchNet::from_name(net.name()), Some(net));
        }
        assert_eq!(BenchNet::from_name("resnet18"), None);
        assert_eq!(BenchNet::Vgg16.output_tap(), "conv5_3");
        assert_eq!(BenchNet::ResNet50.output_tap(), "layer4");
    }

    #[test]
    fn inputs_are_seeded_and_prefix_stable() {
        let a = random_input(2, 8, 3, &Device::Cpu).unwrap();
        let b = random_input(1, 8, 3, &Device::Cpu).unwrap();
        assert_eq!(a.dims(), &[2, 3, 8, 8]);
        let first: Vec<f32> = a.narrow(0, 0, 1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(first, b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert!(first.iter().all(|v| (-2.0..2.0).contains(v)));
        assert_ne!(
            first,
            random_input(1, 8, 4, &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}
