//! The backbone flags `extract` and `features dump` share: weights, architecture, layers,
//! preprocessing, device, arithmetic precision and explicit ONNX tap geometry.

use std::collections::BTreeMap;

use anyhow::Context;
use expgraph_backbone::{Precision, TapGeometry};
use expgraph_features::LoadedBackbone;

/// Which backbone to run, on what, and which layers to tap.
#[derive(clap::Args, Debug)]
pub struct BackboneArgs {
    /// Weights: a .safetensors file, a hub repo id such as `timm/vgg16.tv_in1k` or
    /// `timm/resnet50.a1_in1k`, or an ONNX model (`model.onnx`; needs a build with `--features onnx`).
    #[arg(long, value_name = "FILE|REPO")]
    pub weights: String,
    /// Architecture of the weights; `auto` tells it from the tensor names, or `onnx` from a
    /// `.onnx` file name (`expgraph backbones` lists the others with their layers). `onnx`
    /// needs `--layers`: the ONNX node outputs to tap.
    #[arg(long, default_value = "auto", value_parser = expgraph_features::Architecture::FLAG_CHOICES)]
    pub backbone: String,
    /// Layers, comma-separated; default by backbone: the paper's graph layers (vgg16:
    /// conv4_2,conv4_3,conv5_2,conv5_3; resnet*: layer2.pre_relu,layer3.pre_relu,layer4.pre_relu);
    /// required for onnx (node output names, e.g. Conv outputs for pre-ReLU maps).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<String>>,
    /// ONNX only: the geometry of a tap where the graph walk cannot tell it, as
    /// NAME=STRIDE,CENTRE,FIELD (input pixels: cell stride, 1-based centre of the first cell,
    /// receptive field); repeatable.
    #[arg(long, value_name = "NAME=STRIDE,CENTRE,FIELD", value_parser = parse_tap_geometry)]
    pub tap_geometry: Vec<(String, TapGeometry)>,
    /// Pixel preprocessing; default: `caffe` for a local file, `torchvision` for a hub repo.
    #[arg(long, value_parser = ["caffe", "torchvision"])]
    pub preprocess: Option<String>,
    /// `cpu`, `cuda` or `cuda:N` (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Arithmetic of the backbone's forward pass: f32 (default), or f16 / bf16 (half precision,
    /// meant for GPUs: faster there, slower on most CPUs). The cache stores f16 or u8 either way.
    #[arg(long, default_value = "f32", value_parser = PRECISION_CHOICES)]
    pub precision: String,
}

/// The names `--precision` accepts.
pub const PRECISION_CHOICES: [&str; 3] = ["f32", "f16", "bf16"];

/// The backbone precision a `--precision` value names (clap has checked it against
/// [`PRECISION_CHOICES`]; the library's parser has the last word).
pub fn parse_precision(name: &str) -> anyhow::Result<Precision> {
    Precision::from_name(name).with_context(|| format!("--precision {name}"))
}

impl BackboneArgs {
    /// Loads the backbone in `--precision` on `--device`, and the layers to tap: `--layers`, or
    /// the architecture's default.
    pub fn load(&self) -> anyhow::Result<(LoadedBackbone, Vec<String>)> {
        let mut geometry = BTreeMap::new();
        for (name, g) in &self.tap_geometry {
            if geometry.insert(name.clone(), *g).is_some() {
                anyhow::bail!("--tap-geometry names {name} twice");
            }
        }
        let precision = parse_precision(&self.precision)?;
        let mut loaded = LoadedBackbone::load(
            &self.weights,
            &self.backbone,
            self.preprocess.as_deref(),
            &self.device,
            self.layers.as_deref(),
            &geometry,
        )?;
        loaded
            .model
            .set_precision(precision)
            .with_context(|| format!("--precision {} on --device {}", self.precision, self.device))?;
        let layers = self.layers.clone().unwrap_or_else(|| loaded.architecture.default_layers());
        Ok((loaded, layers))
    }
}

/// Parses an explicit tap geometry `NAME=STRIDE,CENTRE,FIELD` (stride, first-unit centre and
/// receptive field in input pixels, spec §1.3), as `--tap-geometry` takes it. The name may
/// itself contain `=`: the last one separates it.
fn parse_tap_geometry(s: &str) -> Result<(String, TapGeometry), String> {
    let (name, values) = s.rsplit_once('=').ok_or_else(|| format!("expected NAME=STRIDE,CENTRE,FIELD, got {s:?}"))?;
    let numbers: Vec<f64> = values
        .split(',')
        .map(|v| v.trim().parse::<f64>().map_err(|e| format!("{v:?} in {s:?}: {e}")))
        .collect::<Result<_, _>>()?;
    let [stride, first_centre, receptive_field] = numbers[..] else {
        return Err(format!("expected three numbers STRIDE,CENTRE,FIELD after `=`, got {values:?}"));
    };
    if name.is_empty() || !(stride > 0.0 && receptive_field > 0.0 && first_centre.is_finite() && stride.is_finite()) {
        return Err(format!("{s:?}: needs a tap name, a positive stride and field and a finite centre"));
    }
    Ok((name.to_string(), TapGeometry { stride, first_centre, receptive_field }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_geometry_flags() {
        let (name, g) = parse_tap_geometry("/layer3/Add_output_0=16,8.5,99").unwrap();
        assert_eq!(name, "/layer3/Add_output_0");
        assert_eq!((g.stride, g.first_centre, g.receptive_field), (16.0, 8.5, 99.0));
        assert_eq!(parse_tap_geometry("a=b=2, 1.5 ,3").unwrap().0, "a=b");
        for bad in ["conv", "conv=1,2", "conv=1,2,3,4", "conv=x,1,1", "=1,1,1", "c=0,1,1", "c=1,1,-3"] {
            assert!(parse_tap_geometry(bad).is_err(), "{bad}");
        }
        let once = parse_tap_geometry("t=1,1,1").unwrap();
        let args = BackboneArgs {
            weights: "m.onnx".into(),
            backbone: "onnx".into(),
            layers: None,
            tap_geometry: vec![once.clone(), once],
            preprocess: None,
            device: "cpu".into(),
            precision: "f32".into(),
        };
        let err = args.load().unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }
}
