//! # expgraph-finetune
//!
//! Per-category fine-tuning of the backbone (VGG-16 or a ResNet), as the paper does before
//! learning a graph: binary object-vs-background classification of object crops (each also
//! mirrored) against negative photos (whole images), with a small head on the last layer,
//! `logit = linear(C → 1)(global-average-pool(ReLU(conv5_3)))` (a ResNet: of `layer4`), trained
//! by binary cross-entropy with logits (mean over the batch).
//!
//! * [`TrainingSet`]: decoded, cropped, resized images; a seeded held-out split by object
//!   ([`TrainingSet::split`]) and a digest of the data.
//! * [`BaseWeights`]: a torchvision-named VGG-16 (its 13 convolutions) or ResNet
//!   ([`ResNetWeights`]: convolutions, BatchNorms, shortcuts) safetensors file, any width
//!   (channels read from the file).
//! * [`FinetuneParams`] → [`FinetuneValidParams`] → [`FinetuneValidParams::fit`]: the layers
//!   before `train_from` (default `conv4_1`, a ResNet's `layer4`) are frozen and run once per
//!   sample; each step runs the trained layers and the head with candle autograd, on any candle
//!   device, then SGD with momentum and weight decay ([`Sgd`]). A ResNet's BatchNorms keep their
//!   running statistics (inference form) and train their scales and shifts.
//! * After every epoch a checkpoint `<out>.checkpoint.safetensors` (trained tensors, momentum,
//!   history, and the digests of the parameters, data and base weights); `resume` continues it,
//!   bit for bit as an uninterrupted run on the same device and thread count. It is removed once
//!   the output is written.
//! * The output: every tensor of the network under its torchvision name (frozen ones copied,
//!   f32) plus `head.weight` `[1, C]` and `head.bias` `[1]`, with `__metadata__` entry
//!   [`METADATA_KEY`] (JSON: architecture, base-weight digest and path, data digest and counts,
//!   hyper-parameters, trained layers, per-epoch history, final held-out accuracy, crate
//!   version; see [`read_metadata`]). `expgraph_backbone::Vgg16::load_file` or
//!   `ResNet::load_file` loads it (they ignore the head).
//!
//! ```no_run
//! use expgraph_finetune::{BaseWeights, FinetuneParams, TrainingSet};
//! use expgraph_features::{list_images, objects_from_dir};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let objects = objects_from_dir("images/".as_ref(), None, None)?;
//! let negatives = list_images("negatives/".as_ref())?;
//! let data = TrainingSet::load(&objects, &negatives, 224, expgraph_backbone::Preprocess::Caffe)?;
//! let base = BaseWeights::load("vgg16-imagenet-conv.safetensors".as_ref())?;
//! let report = FinetuneParams::default()
//!     .epochs(5)
//!     .resume(true)
//!     .check()?
//!     .fit(&base, &data, "vgg16-birds.safetensors".as_ref(), &candle_core::Device::Cpu)?;
//! println!("held-out accuracy {:.3}", report.held_out_accuracy);
//! # Ok(()) }
//! ```

mod data;
mod error;
mod model;
mod optim;
mod params;
mod resnet;
mod train;

pub use data::{Sample, Split, TrainingSet, MIN_NEGATIVES, MIN_POSITIVES};
pub use error::{FinetuneError, Result};
pub use model::{
    bce_value, bce_with_logits, conv_index, is_trainable_layer_name, BaseWeights, ConvSpec, ConvWeights, FrozenStack,
    TrainableNet, HEAD_BIAS, HEAD_WEIGHT, VGG16_CONVS,
};
pub use optim::Sgd;
pub use params::{FinetuneParams, FinetuneValidParams};
pub use resnet::{ResNetWeights, RESNET_STAGES};
pub use train::{checkpoint_path, read_metadata, EpochStats, FinetuneReport, CHECKPOINT_METADATA_KEY, METADATA_KEY};
