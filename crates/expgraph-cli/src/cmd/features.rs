//! `expgraph features …`: debugging tools for raw backbone features.

use std::path::PathBuf;

use crate::summary::Summary;

use super::extract::{load_backbone_args, parse_tap_geometry};
use expgraph_features::{dump_raw_maps, write_raw_maps};

/// Subcommands of `expgraph features`.
#[derive(clap::Subcommand, Debug)]
pub enum FeaturesCommand {
    /// Write the raw pre-ReLU, unnormalized maps of whole images to a safetensors file
    /// (f32 tensors named by layer, `[N, C, H, W]`, images in the order given).
    Dump(DumpArgs),
}

/// Arguments of `expgraph features dump`.
#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    /// Weights: a .safetensors file, a hub repo id such as `timm/vgg16.tv_in1k` or
    /// `timm/resnet50.a1_in1k`, or an ONNX model (`model.onnx`; needs a build with `--features onnx`).
    #[arg(long, value_name = "FILE|REPO")]
    pub weights: String,
    /// Architecture of the weights; `auto` tells it from the tensor names, or `onnx` from a
    /// `.onnx` file name. `onnx` needs `--layers`: the ONNX node outputs to tap.
    #[arg(long, default_value = "auto", value_parser = expgraph_features::Architecture::FLAG_CHOICES)]
    pub backbone: String,
    /// ONNX only: the geometry of a tap where the graph walk cannot tell it, as
    /// NAME=STRIDE,CENTRE,FIELD; repeatable (see `expgraph extract --help`).
    #[arg(long, value_name = "NAME=STRIDE,CENTRE,FIELD", value_parser = parse_tap_geometry)]
    pub tap_geometry: Vec<(String, expgraph_backbone::TapGeometry)>,
    /// Pixel preprocessing; default: `caffe` for a local file, `torchvision` for a hub repo.
    #[arg(long, value_parser = ["caffe", "torchvision"])]
    pub preprocess: Option<String>,
    /// Use each image as is (it must be 224×224); otherwise the whole image is resized.
    #[arg(long)]
    pub no_crop: bool,
    /// Layers, comma-separated; default by backbone (see `expgraph extract --help`); required
    /// for onnx (node output names).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<String>>,
    /// Output safetensors file.
    #[arg(long, short, value_name = "OUT.safetensors")]
    pub out: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Images per forward pass.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Images (JPEG/PNG).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
}

/// Run `expgraph features …`.
pub fn run(c: FeaturesCommand) -> anyhow::Result<Summary> {
    match c {
        FeaturesCommand::Dump(args) => dump(args),
    }
}

fn dump(args: DumpArgs) -> anyhow::Result<Summary> {
    let loaded = load_backbone_args(
        &args.weights,
        &args.backbone,
        args.preprocess.as_deref(),
        &args.device,
        args.layers.as_deref(),
        &args.tap_geometry,
    )?;
    let (backbone, preprocess) = (loaded.model, loaded.preprocess);
    let layers = args.layers.clone().unwrap_or_else(|| loaded.architecture.default_layers());
    let size = expgraph_backbone::REFERENCE_INPUT_SIZE;
    let maps = dump_raw_maps(backbone.as_ref(), preprocess, &layers, &args.images, size, args.no_crop, args.batch)?;
    write_raw_maps(&args.out, &maps)?;
    let shapes: Vec<_> = maps.iter().map(|m| serde_json::json!({"layer": m.layer, "shape": m.shape})).collect();
    let json = serde_json::json!({
        "out": args.out, "backbone": loaded.architecture.name(), "preprocess": preprocess.name(), "tensors": shapes,
    });
    Ok(Summary::new(format!("{} layers of {} images: {}", maps.len(), args.images.len(), args.out.display()), json))
}
