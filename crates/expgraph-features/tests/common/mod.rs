//! A tiny, hand-checkable backbone for tests: tap `p4` is the 4×4 average pool of the
//! preprocessed input (3 channels, stride 4), tap `p8` the 8×8 one.

#![allow(clippy::result_large_err)] // the trait fixes the error type

use candle_core::{Device, Tensor};
use expgraph_backbone::{Backbone, BackboneError, BackboneMeta, TapGeometry, TapInfo};

pub struct FakeBackbone {
    meta: BackboneMeta,
}

impl FakeBackbone {
    pub fn new() -> Self {
        let tap = |name: &str, s: f64| TapInfo {
            name: name.into(),
            channels: 3,
            geometry: TapGeometry { stride: s, first_centre: (s + 1.0) / 2.0, receptive_field: s },
        };
        let taps = vec![tap("p4", 4.0), tap("p8", 8.0)];
        Self { meta: BackboneMeta { taps, device: Device::Cpu, digest: "fake-weights".into() } }
    }

    fn pool(&self, tap: &str) -> Result<usize, BackboneError> {
        match tap {
            "p4" => Ok(4),
            "p8" => Ok(8),
            _ => {
                Err(BackboneError::UnknownTap { name: tap.into(), backbone: "fake".into(), available: "p4, p8".into() })
            }
        }
    }
}

impl Backbone for FakeBackbone {
    fn name(&self) -> &str {
        "fake"
    }
    fn meta(&self) -> &BackboneMeta {
        &self.meta
    }
    fn tap_map_size(&self, tap: &str, input_size: usize) -> Result<usize, BackboneError> {
        Ok(input_size / self.pool(tap)?)
    }
    fn forward_taps(&self, input: &Tensor, taps: &[&str]) -> Result<Vec<Tensor>, BackboneError> {
        taps.iter().map(|t| Ok(input.avg_pool2d(self.pool(t)?)?)).collect()
    }
}
