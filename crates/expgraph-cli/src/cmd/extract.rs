//! `expgraph extract`: images + object boxes → a normalized feature cache (spec §3).

use std::path::PathBuf;

use anyhow::Context;

use crate::summary::Summary;
use expgraph_cache::StorageDtype;
use expgraph_features::{
    check_image_files, list_images, load_or_compute_norm_stats, objects_from_dir, read_boxes, ExtractParams, FlipMode,
    LoadedBackbone, NormStatsParams,
};

/// Arguments of `expgraph extract`.
///
/// Boxes file: JSON object `{"file.jpg": [x0, y0, x1, y1], ...}` in source pixels (0-based,
/// x1/y1 exclusive); only the images named there are extracted. Without it, every JPEG/PNG of
/// `--images` (sorted by name) is used with the whole image as the object box.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder of JPEG/PNG images.
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    /// Weights: a .safetensors file, a hub repo id such as `timm/vgg16.tv_in1k` or
    /// `timm/resnet50.a1_in1k`, or an ONNX model (`model.onnx`; needs a build with `--features onnx`).
    #[arg(long, value_name = "FILE|REPO")]
    pub weights: String,
    /// Architecture of the weights; `auto` tells it from the tensor names, or `onnx` from a
    /// `.onnx` file name (`expgraph backbones` lists the others with their layers). `onnx`
    /// needs `--layers`: the ONNX node outputs to tap.
    #[arg(long, default_value = "auto", value_parser = expgraph_features::Architecture::FLAG_CHOICES)]
    pub backbone: String,
    /// ONNX only: the geometry of a tap where the graph walk cannot tell it, as
    /// NAME=STRIDE,CENTRE,FIELD (input pixels: cell stride, 1-based centre of the first cell,
    /// receptive field); repeatable.
    #[arg(long, value_name = "NAME=STRIDE,CENTRE,FIELD", value_parser = parse_tap_geometry)]
    pub tap_geometry: Vec<(String, expgraph_backbone::TapGeometry)>,
    /// Folder of negative images for the per-unit std (spec §3); at least 2.
    #[arg(long, value_name = "DIR")]
    pub negatives: PathBuf,
    /// Output cache folder (created; an interrupted run resumes).
    #[arg(long, short, value_name = "CACHE")]
    pub out: PathBuf,
    /// Object boxes JSON (see above).
    #[arg(long, value_name = "FILE.json")]
    pub boxes: Option<PathBuf>,
    /// Layers to store, comma-separated; default by backbone: the paper's graph layers
    /// (vgg16: conv4_2,conv4_3,conv5_2,conv5_3; resnet*: layer2.pre_relu,layer3.pre_relu,layer4.pre_relu);
    /// required for onnx (node output names, e.g. Conv outputs for pre-ReLU maps).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<String>>,
    /// Use only the first N images.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Use only the first N negatives (sorted by name).
    #[arg(long, value_name = "N")]
    pub negatives_limit: Option<usize>,
    /// Objects per forward pass (each also runs its mirrored view).
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
    pub batch: usize,
    /// `cpu`, `cuda` or `cuda:N` (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Pixel preprocessing; default: `caffe` for a local file, `torchvision` for a hub repo.
    #[arg(long, value_parser = ["caffe", "torchvision"])]
    pub preprocess: Option<String>,
    /// Storage of the maps: f16 (rel. error ≤ 4.9e-4) or u8 (per image-channel min/range).
    #[arg(long, default_value = "f16", value_parser = ["f16", "u8"])]
    pub storage: String,
    /// Images per shard file.
    #[arg(long, default_value_t = expgraph_cache::StorageInfo::DEFAULT_SHARD_SIZE, value_parser = at_least_one)]
    pub shard_size: usize,
    /// Second view: `real` mirror (default), `noop` (the reference code's bug: a copy), `none`.
    #[arg(long, default_value = "real", value_parser = ["real", "noop", "none"])]
    pub flip: String,
    /// Normalization statistics file (reused when it fits, else computed and saved);
    /// default: OUT/norm-stats.safetensors.
    #[arg(long, value_name = "FILE")]
    pub stats: Option<PathBuf>,
    /// Replace a cache built from other inputs in `--out`.
    #[arg(long)]
    pub overwrite: bool,
}

/// Loads the backbone of `--weights`/`--backbone`/`--preprocess`/`--device`, with `--layers`
/// (the taps of an ONNX model) and `--tap-geometry` (explicit ONNX tap geometry).
pub(crate) fn load_backbone_args(
    weights: &str,
    backbone: &str,
    preprocess: Option<&str>,
    device: &str,
    layers: Option<&[String]>,
    tap_geometry: &[(String, expgraph_backbone::TapGeometry)],
) -> anyhow::Result<LoadedBackbone> {
    let mut geometry = std::collections::BTreeMap::new();
    for (name, g) in tap_geometry {
        if geometry.insert(name.clone(), *g).is_some() {
            anyhow::bail!("--tap-geometry names {name} twice");
        }
    }
    Ok(LoadedBackbone::load(weights, backbone, preprocess, device, layers, &geometry)?)
}

/// Parses an explicit tap geometry `NAME=STRIDE,CENTRE,FIELD` (stride, first-unit centre and
/// receptive field in input pixels, spec §1.3), as `--tap-geometry` takes it. The name may
/// itself contain `=`: the last one separates it.
pub(crate) fn parse_tap_geometry(s: &str) -> Result<(String, expgraph_backbone::TapGeometry), String> {
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
    Ok((name.to_string(), expgraph_backbone::TapGeometry { stride, first_centre, receptive_field }))
}

/// A count of at least 1 (clap names the flag when it is not).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Run `expgraph extract`.
pub fn run(args: Args) -> anyhow::Result<Summary> {
    let storage = StorageDtype::from_name(&args.storage).context("--storage must be f16 or u8")?;
    let flip = FlipMode::from_name(&args.flip).context("--flip must be real, noop or none")?;

    let boxes = args.boxes.as_deref().map(read_boxes).transpose()?;
    let objects = objects_from_dir(&args.images, boxes.as_ref(), args.limit)?;
    let mut negatives = list_images(&args.negatives)?;
    if let Some(n) = args.negatives_limit {
        negatives.truncate(n);
    }
    // Fail before the expensive work: unreadable inputs, an output folder we cannot write.
    check_image_files(objects.iter().map(|o| o.path.as_path()), "image")?;
    check_image_files(negatives.iter().map(|p| p.as_path()), "negative")?;
    expgraph_io::check_writable(&args.out)
        .with_context(|| format!("--out {}: cannot write there", args.out.display()))?;
    drop(expgraph_io::DirLock::acquire(&args.out).with_context(|| format!("--out {}", args.out.display()))?);
    tracing::info!(images = objects.len(), negatives = negatives.len(), "inputs checked");
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

    let stats_params = NormStatsParams {
        layers: layers.clone(),
        preprocess,
        input_size: expgraph_backbone::REFERENCE_INPUT_SIZE,
        batch: args.batch.max(1),
        progress: crate::progress::sink(),
    };
    let stats_path = args.stats.clone().unwrap_or_else(|| args.out.join("norm-stats.safetensors"));
    let stats = load_or_compute_norm_stats(backbone.as_ref(), &stats_params, &negatives, &stats_path)?;

    let report = ExtractParams::new()
        .layers(layers)
        .preprocess(preprocess)
        .input_size(expgraph_backbone::REFERENCE_INPUT_SIZE)
        .batch(args.batch)
        .storage(storage)
        .shard_size(args.shard_size)
        .flip(flip)
        .overwrite(args.overwrite)
        .progress(crate::progress::sink())
        .check(backbone.as_ref(), &stats)?
        .run(&objects, &args.out)?;
    let human = format!(
        "feature cache {}: {} images ({} computed now, {:.0} ms/image)",
        report.dir.display(),
        report.images,
        report.computed,
        report.ms_per_image
    );
    let json = serde_json::json!({
        "cache": report.dir, "key": report.key, "backbone": loaded.architecture.name(), "images": report.images,
        "computed": report.computed, "ms_per_image": report.ms_per_image,
        "norm_stats": stats_path, "norm_stats_digest": stats.digest(),
    });
    Ok(Summary::new(human, json))
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
        let twice = vec![once.clone(), once];
        let err = load_backbone_args("m.onnx", "onnx", None, "cpu", None, &twice).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }
}
