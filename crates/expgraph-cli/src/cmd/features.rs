//! `expgraph features …`: debugging tools for raw backbone features.

use std::path::PathBuf;

use crate::summary::Summary;

use crate::backbone_args::BackboneArgs;
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
    #[command(flatten)]
    pub backbone: BackboneArgs,
    /// Use each image as is (it must be 224×224); otherwise the whole image is resized.
    #[arg(long)]
    pub no_crop: bool,
    /// Output safetensors file.
    #[arg(long, short, value_name = "OUT.safetensors")]
    pub out: PathBuf,
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
    let (loaded, layers) = args.backbone.load()?;
    let (backbone, preprocess) = (loaded.model, loaded.preprocess);
    let size = expgraph_backbone::REFERENCE_INPUT_SIZE;
    let maps = dump_raw_maps(backbone.as_ref(), preprocess, &layers, &args.images, size, args.no_crop, args.batch)?;
    write_raw_maps(&args.out, &maps)?;
    let shapes: Vec<_> = maps.iter().map(|m| serde_json::json!({"layer": m.layer, "shape": m.shape})).collect();
    let json = serde_json::json!({
        "out": args.out, "backbone": loaded.architecture.name(), "preprocess": preprocess.name(), "tensors": shapes,
    });
    Ok(Summary::new(format!("{} layers of {} images: {}", maps.len(), args.images.len(), args.out.display()), json))
}
