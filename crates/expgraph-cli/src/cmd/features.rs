//! `expgraph features …`: debugging tools for raw backbone features.

use std::path::PathBuf;

use crate::summary::Summary;

use expgraph_features::{dump_raw_maps, load_backbone, write_raw_maps};

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
    /// Weights: a .safetensors file, or a hub repo id such as `timm/vgg16.tv_in1k` or
    /// `timm/resnet50.a1_in1k`.
    #[arg(long, value_name = "FILE|REPO")]
    pub weights: String,
    /// Architecture of the weights; `auto` tells it from the tensor names.
    #[arg(long, default_value = "auto", value_parser = expgraph_features::BACKBONE_CHOICES)]
    pub backbone: String,
    /// Pixel preprocessing; default: `caffe` for a local file, `torchvision` for a hub repo.
    #[arg(long, value_parser = ["caffe", "torchvision"])]
    pub preprocess: Option<String>,
    /// Use each image as is (it must be 224×224); otherwise the whole image is resized.
    #[arg(long)]
    pub no_crop: bool,
    /// Layers, comma-separated; default by backbone (see `expgraph extract --help`).
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
    let loaded = load_backbone(&args.weights, &args.backbone, args.preprocess.as_deref(), &args.device)?;
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
