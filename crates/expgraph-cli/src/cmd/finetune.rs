//! `expgraph finetune`: fine-tune VGG-16 or a ResNet on one category (object crops vs
//! negatives) and write the tuned weights, which `expgraph extract --weights` then takes like
//! any weight file of that architecture.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use crate::summary::Summary;
use expgraph_backbone::{parse_device, resolve_weights, Preprocess, WeightSource};
use expgraph_features::{objects_from_dir, read_boxes};
use expgraph_finetune::{BaseWeights, FinetuneParams, TrainingSet};

/// Arguments of `expgraph finetune`.
///
/// Binary object-vs-background classification: each object crop (its box from `--boxes`, or
/// the whole image) and its mirror against whole negative images, with a head
/// `linear(global-average-pool(ReLU(conv5_3)))` (a ResNet: of `layer4`). The layers before
/// `--train-from` stay frozen.
/// A checkpoint `OUT.checkpoint.safetensors` is written after every epoch; `--resume` continues it.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder of JPEG/PNG images of the category.
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    /// Object boxes JSON `{"file.jpg": [x0, y0, x1, y1], ...}` (as for `expgraph extract`);
    /// without it the whole images are the objects.
    #[arg(long, value_name = "FILE.json")]
    pub boxes: Option<PathBuf>,
    /// Folder of negative images (whole images, resized); at least 2.
    #[arg(long, value_name = "DIR")]
    pub negatives: PathBuf,
    /// Use only the first N objects (in name order).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Use only the first N negatives (in name order).
    #[arg(long, value_name = "N")]
    pub negatives_limit: Option<usize>,
    /// VGG-16 or ResNet weights (architecture told by the tensor names): a .safetensors file
    /// with torchvision names, or a hub repo id.
    #[arg(long, value_name = "FILE|REPO")]
    pub weights: String,
    /// Output weight file (.safetensors): every tensor of the network (torchvision names) plus
    /// `head.weight`, `head.bias`.
    #[arg(long, short, value_name = "FILE")]
    pub out: PathBuf,
    /// Passes over the training samples.
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// SGD learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// L2 weight decay.
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// Samples per SGD step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// First trained layer, the ones before it frozen: a VGG-16 convolution `conv1_1` …
    /// `conv5_3` (default `conv4_1`) or a ResNet stage `layer1` … `layer4` (default `layer4`).
    #[arg(long, value_name = "LAYER")]
    pub train_from: Option<String>,
    /// Fraction of the objects and of the negatives held out to measure accuracy.
    #[arg(long, default_value_t = 0.2)]
    pub held_out: f64,
    /// Seed of the held-out split, the head's initialization and the epochs' order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Side of the network input (crops and negatives are resized to it).
    #[arg(long, default_value_t = 224)]
    pub input_size: usize,
    /// Pixel preprocessing; default: `caffe` for a local VGG-16 file, `torchvision` for a
    /// ResNet or a hub repo.
    #[arg(long, value_parser = ["caffe", "torchvision"])]
    pub preprocess: Option<String>,
    /// `cpu`, `cuda` or `cuda:N` (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Continue from `OUT.checkpoint.safetensors` (same data, weights and parameters).
    #[arg(long)]
    pub resume: bool,
    /// Replace an existing `--out`.
    #[arg(long)]
    pub overwrite: bool,
}

/// Run `expgraph finetune`.
pub fn run(args: Args) -> anyhow::Result<Summary> {
    if args.out.exists() && !args.overwrite {
        anyhow::bail!("--out {} exists; pass --overwrite to replace it", args.out.display());
    }
    let mut params = FinetuneParams::default()
        .epochs(args.epochs)
        .learning_rate(args.lr)
        .momentum(args.momentum)
        .weight_decay(args.weight_decay)
        .batch(args.batch)
        .held_out(args.held_out)
        .seed(args.seed)
        .input_size(args.input_size)
        .resume(args.resume)
        .progress(crate::progress::sink());
    if let Some(layer) = &args.train_from {
        params = params.train_from(layer.clone());
    }
    let params = params.check()?;
    let device = parse_device(&args.device)?;
    let source = WeightSource::parse(&args.weights);
    let weights_path = resolve_weights(&source).with_context(|| format!("--weights {}", args.weights))?;
    let base = BaseWeights::load(&weights_path)?;
    let preprocess = match &args.preprocess {
        Some(name) => Preprocess::from_name(name)?,
        None => base.architecture().default_preprocess(&source),
    };
    let train_from = args.train_from.clone().unwrap_or_else(|| base.default_train_from().to_string());
    base.train_from_index(&train_from).with_context(|| format!("--weights {}", args.weights))?;

    let boxes = args.boxes.as_deref().map(read_boxes).transpose()?;
    let objects = objects_from_dir(&args.images, boxes.as_ref(), args.limit)?;
    let negatives = crate::cmd::extract::negatives_list(&args.negatives, args.negatives_limit)?;
    expgraph_io::check_writable(&expgraph_io::parent_dir(&args.out))
        .with_context(|| format!("--out {}: cannot write there", args.out.display()))?;
    let started = Instant::now();
    let data = TrainingSet::load(&objects, &negatives, args.input_size, preprocess)?;
    let report = params.fit(&base, &data, &args.out, &device)?;
    let seconds = started.elapsed().as_secs_f64();
    let last = report.history.last();
    let human = format!(
        "fine-tuned weights {}: {} epochs{}, {} objects (×2 views) vs {} negatives, held-out accuracy {:.3} \
         (loss {:.4}), training loss {:.4}, {seconds:.1} s",
        report.out.display(),
        report.epochs_done,
        report.resumed_from.map(|e| format!(" (resumed after {e})")).unwrap_or_default(),
        report.positives,
        report.negatives,
        report.held_out_accuracy,
        last.map_or(f64::NAN, |h| h.held_out_loss),
        last.map_or(f64::NAN, |h| h.train_loss),
    );
    let json = serde_json::json!({
        "out": report.out, "epochs": report.epochs_done, "resumed_from": report.resumed_from,
        "positives": report.positives, "negatives": report.negatives,
        "train_samples": report.train_samples, "held_out_samples": report.held_out_samples,
        "held_out_accuracy": report.held_out_accuracy, "history": report.history,
        "architecture": base.architecture().name(), "train_from": train_from,
        "device": args.device, "preprocess": preprocess.name(),
        "base_weights_digest": base.digest(), "data_digest": data.digest(), "seconds": seconds,
    });
    Ok(Summary::new(human, json))
}
