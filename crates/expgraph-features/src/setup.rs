//! The one backbone setup: weights → architecture → preprocessing preset → device → model.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use candle_core::Device;
use expgraph_backbone::{resolve_weights, Backbone, Preprocess, ResNet, ResNetDepth, TapGeometry, Vgg16, WeightSource};

use crate::{parse_device, FeaturesError};

/// The names `--backbone` accepts where the layers default by architecture: `auto` and every
/// [`Architecture::name`] of [`Architecture::ALL`]. Commands that take `--layers` accept
/// [`Architecture::FLAG_CHOICES`], which adds `onnx`.
pub const BACKBONE_CHOICES: [&str; 7] = ["auto", "vgg16", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"];

/// A backbone architecture that [`load_backbone`] can build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Architecture {
    /// VGG-16 (torchvision names `features.N.weight`, taps `conv1_1` … `conv5_3`).
    Vgg16,
    /// A torchvision/timm ResNet (taps `layerN`, `layerN.pre_relu`).
    ResNet(ResNetDepth),
    /// Any CNN exported to ONNX (a `.onnx` file), taps at named node outputs given by the caller;
    /// needs a build with the `onnx` feature (see [`Architecture::ONNX_UNAVAILABLE`] otherwise). Not in
    /// [`Architecture::ALL`]: it has no default layers and no random variant.
    Onnx,
}

impl Architecture {
    /// Every architecture, VGG-16 first, then the ResNets shallow to deep.
    pub const ALL: [Architecture; 6] = [
        Architecture::Vgg16,
        Architecture::ResNet(ResNetDepth::R18),
        Architecture::ResNet(ResNetDepth::R34),
        Architecture::ResNet(ResNetDepth::R50),
        Architecture::ResNet(ResNetDepth::R101),
        Architecture::ResNet(ResNetDepth::R152),
    ];

    /// The error text of `--backbone onnx` (or an `.onnx` weight file) in a build without the
    /// `onnx` feature.
    pub const ONNX_UNAVAILABLE: &'static str = "this build has no ONNX support; rebuild with `cargo build --release \
         --features onnx` (candle-onnx's build script needs `protoc`: apt-get install protobuf-compiler)";

    /// The names a `--backbone` flag next to `--layers` accepts: [`BACKBONE_CHOICES`] and
    /// `onnx` (which needs the layers, and a build with the `onnx` feature).
    pub const FLAG_CHOICES: [&'static str; 8] =
        ["auto", "vgg16", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "onnx"];

    /// The name a backbone reports and a cache manifest records: `vgg16`, `resnet18`, …, `onnx`.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Vgg16 => "vgg16",
            Architecture::ResNet(depth) => depth.name(),
            Architecture::Onnx => "onnx",
        }
    }

    /// The architecture called `name` (as [`Architecture::name`], `onnx` included); `None` for
    /// anything else, `auto` included.
    pub fn from_name(name: &str) -> Option<Self> {
        if name == "onnx" {
            return Some(Architecture::Onnx);
        }
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The layers extracted when none are named (none for [`Architecture::Onnx`], whose layers
    /// the caller names). See [`default_layers`].
    pub fn default_layers(self) -> Vec<String> {
        let names: &[&str] = match self {
            Architecture::Vgg16 => &VGG16_LAYERS,
            Architecture::ResNet(_) => &RESNET_LAYERS,
            Architecture::Onnx => &[],
        };
        names.iter().map(|s| s.to_string()).collect()
    }

    /// The preprocessing the weights expect unless told otherwise: `caffe` for a local VGG-16
    /// file (the project's converted original VGG-16), `torchvision` for a ResNet (torchvision
    /// and timm train them so), for an ONNX model (most are exported from PyTorch; override
    /// with `--preprocess caffe` for Caffe-style models) and for anything from the hub.
    pub fn default_preprocess(self, source: &WeightSource) -> Preprocess {
        match self {
            Architecture::Vgg16 => source.default_preprocess(),
            Architecture::ResNet(_) | Architecture::Onnx => Preprocess::Torchvision,
        }
    }

    /// The architecture of a safetensors weight file, from its tensor names and shapes (only the
    /// header is read): VGG-16 when it has `features.0.weight` … `features.28.weight`, a ResNet
    /// when it has `conv1.weight` and `layerS.B.*` tensors (depth by
    /// [`ResNet::detect_depth`]). A file named `*.onnx` is [`Architecture::Onnx`]. An error says
    /// what the file holds otherwise.
    pub fn detect_file(path: &Path) -> Result<Self, FeaturesError> {
        if is_onnx_file(path) {
            return Ok(Architecture::Onnx);
        }
        let tensors = read_tensor_shapes(path)?;
        let has = |name: &str| tensors.iter().any(|(n, _)| n == name);
        if has("features.0.weight") && has("features.28.weight") {
            return Ok(Architecture::Vgg16);
        }
        if has("conv1.weight") && tensors.iter().any(|(n, _)| n.starts_with("layer1.")) {
            let depth =
                ResNet::detect_depth(tensors.iter().map(|(n, s)| (n.as_str(), s.as_slice()))).map_err(|e| match e {
                    expgraph_backbone::BackboneError::Input(what) => FeaturesError::file(path, what),
                    other => other.into(),
                })?;
            return Ok(Architecture::ResNet(depth));
        }
        let mut sample: Vec<String> = tensors.iter().take(6).map(|(n, s)| format!("{n} {s:?}")).collect();
        if tensors.len() > sample.len() {
            sample.push("…".into());
        }
        Err(FeaturesError::file(
            path,
            format!(
                "cannot tell the backbone architecture from its {} tensors [{}]: expected VGG-16 \
                 (`features.0.weight` … `features.28.weight`) or a torchvision/timm ResNet (`conv1.weight`, \
                 `layerS.B.conv1.weight`, …); name it with --backbone",
                tensors.len(),
                sample.join(", ")
            ),
        ))
    }

    /// This architecture with random (seeded) weights and every width divided by
    /// `width_divisor`: for tests and for describing taps and geometry without weights.
    pub fn random(self, width_divisor: usize, seed: u64, device: &Device) -> Result<Box<dyn Backbone>, FeaturesError> {
        Ok(match self {
            Architecture::Vgg16 => Box::new(Vgg16::random(width_divisor, seed, device)?),
            Architecture::ResNet(depth) => Box::new(ResNet::random(depth, width_divisor, seed, device)?),
            Architecture::Onnx => {
                return Err(FeaturesError::Input(
                    "an ONNX backbone has no random variant; load it from its file".into(),
                ))
            }
        })
    }
}

/// One tap of an architecture at full width (see [`Architecture::describe`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TapDescription {
    /// Tap name, e.g. `layer4` or `conv5_3`.
    pub name: String,
    /// Output channels of the full-width network.
    pub channels: usize,
    /// Where the map's cells sit in a 224×224 input (stride, first centre, receptive field; spec §1.3).
    pub geometry: expgraph_backbone::TapGeometry,
    /// Side of the (square) map for a 224×224 input.
    pub map_size: usize,
}

impl Architecture {
    /// Every tap, shallow to deep, with its full-width channels and geometry, without any weight
    /// file: the taps of a width-divided random model (every width of these networks is a
    /// multiple of 64, so the channels scale back exactly).
    pub fn describe(self) -> Result<Vec<TapDescription>, FeaturesError> {
        const DIVISOR: usize = 64;
        let model = self.random(DIVISOR, 0, &Device::Cpu)?;
        model
            .taps()
            .iter()
            .map(|t| {
                Ok(TapDescription {
                    name: t.name.clone(),
                    channels: t.channels * DIVISOR,
                    geometry: t.geometry,
                    map_size: model.tap_map_size(&t.name, expgraph_backbone::REFERENCE_INPUT_SIZE)?,
                })
            })
            .collect()
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The paper's VGG-16 graph layers (spec §1.2): pre-ReLU `conv4_2`, `conv4_3`, `conv5_2`, `conv5_3`.
const VGG16_LAYERS: [&str; 4] = ["conv4_2", "conv4_3", "conv5_2", "conv5_3"];

/// The paper's three ResNet graph layers (paper-spec §1.2: the outputs of the conv3_x, conv4_x and
/// conv5_x stages, maps 28, 14, 7 at a 224 input), i.e. torchvision's `layer2`, `layer3`,
/// `layer4`, tapped **before the stage's final ReLU** (`layerN.pre_relu`, the residual sum).
///
/// Why pre-ReLU: the graph disentangles where filters fire, and what the next stage sees is the
/// stage output `relu(layerN.pre_relu)`. The cache stores `max(x / std, 0)` (spec §3), so the
/// pre-ReLU tap yields exactly the stage output's firing pattern divided by a positive per-unit
/// constant; the post-ReLU tap would give the same pattern too. The two differ only in the
/// normalizer, and paper-spec §3 is explicit there: it divides by the std of the **pre-ReLU**
/// response over the negatives, as the VGG-16 taps do. The std of a post-ReLU map is near zero
/// for units that seldom fire on negatives, which would inflate exactly those units. The
/// post-ReLU `layerN` taps remain available through `--layers`.
const RESNET_LAYERS: [&str; 3] = ["layer2.pre_relu", "layer3.pre_relu", "layer4.pre_relu"];

/// The layers extracted (and learned) when none are named, by backbone name: `vgg16` →
/// `conv4_2, conv4_3, conv5_2, conv5_3`; `resnet18` … `resnet152` → `layer2.pre_relu,
/// layer3.pre_relu, layer4.pre_relu` (why pre-ReLU: see the source of this constant's
/// definition, `RESNET_LAYERS`: the cache's ReLU'd maps equal the stage outputs', normalized by
/// the pre-ReLU std as spec §3 prescribes).
pub fn default_layers(backbone: &str) -> Result<Vec<String>, FeaturesError> {
    if backbone == Architecture::Onnx.name() {
        return Err(onnx_needs_layers());
    }
    Architecture::ALL.into_iter().find(|a| a.name() == backbone).map(Architecture::default_layers).ok_or_else(|| {
        FeaturesError::Input(format!("unknown backbone {backbone:?}; known: {}", BACKBONE_CHOICES[1..].join(", ")))
    })
}

fn onnx_needs_layers() -> FeaturesError {
    FeaturesError::Input(
        "an ONNX backbone has no default layers: name the node outputs to tap with --layers \
         (e.g. the outputs of Conv nodes for pre-ReLU maps)"
            .into(),
    )
}

/// Whether `path` names an ONNX model file (extension `.onnx`, any case).
fn is_onnx_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// A backbone ready to extract, with the preprocessing its weights expect.
pub struct LoadedBackbone {
    /// The model on its device.
    pub model: Box<dyn Backbone>,
    /// Its architecture (named or detected).
    pub architecture: Architecture,
    /// The preprocessing preset: `preprocess` when given, else [`Architecture::default_preprocess`]
    /// (`caffe` for a local VGG-16 file, `torchvision` for a ResNet or a hub repo).
    pub preprocess: Preprocess,
    /// Where the weights came from.
    pub source: WeightSource,
}

impl std::fmt::Debug for LoadedBackbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedBackbone")
            .field("architecture", &self.architecture)
            .field("preprocess", &self.preprocess)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Load the backbone from `weights` (a `.safetensors` path or a Hugging Face repo id) onto
/// `device` (`cpu`, `cuda`, `cuda:N`). `backbone` is one of [`BACKBONE_CHOICES`]: `auto` reads the
/// file's tensor names ([`Architecture::detect_file`]), any other name must match the file.
/// `preprocess` is `caffe` or `torchvision`; `None` = [`Architecture::default_preprocess`].
/// An ONNX model needs its layers: see [`LoadedBackbone::load`].
pub fn load_backbone(
    weights: &str,
    backbone: &str,
    preprocess: Option<&str>,
    device: &str,
) -> Result<LoadedBackbone, FeaturesError> {
    LoadedBackbone::load(weights, backbone, preprocess, device, None, &BTreeMap::new())
}

impl LoadedBackbone {
    /// [`load_backbone`], and also ONNX models: `backbone` is one of
    /// [`Architecture::FLAG_CHOICES`] (`auto` picks `onnx` for a `*.onnx` file). `layers` are the
    /// layers the caller will extract (`None`: the architecture's defaults); an ONNX model needs
    /// them, as the node outputs to tap. `tap_geometry` gives the geometry of ONNX taps whose
    /// geometry the graph walk cannot tell (an error for other backbones). Without the `onnx`
    /// feature, an ONNX model is the error [`Architecture::ONNX_UNAVAILABLE`].
    pub fn load(
        weights: &str,
        backbone: &str,
        preprocess: Option<&str>,
        device: &str,
        layers: Option<&[String]>,
        tap_geometry: &BTreeMap<String, TapGeometry>,
    ) -> Result<LoadedBackbone, FeaturesError> {
        let named = match backbone {
            "auto" => None,
            name => Some(Architecture::from_name(name).ok_or_else(|| {
                FeaturesError::Input(format!(
                    "unknown backbone {name:?}; expected one of {}",
                    Architecture::FLAG_CHOICES.join(", ")
                ))
            })?),
        };
        if named == Some(Architecture::Onnx) {
            check_onnx_request(layers)?;
        }
        let preprocess = preprocess.map(Preprocess::from_name).transpose()?;
        let device = parse_device(device)?;
        let source = WeightSource::parse(weights);
        let path = resolve_weights(&source)?;
        let architecture = match named {
            Some(a) => a,
            None => {
                let a = Architecture::detect_file(&path)?;
                tracing::info!(weights = %source, backbone = a.name(), "detected the backbone architecture");
                a
            }
        };
        if architecture != Architecture::Onnx && !tap_geometry.is_empty() {
            return Err(FeaturesError::Input(format!(
                "explicit tap geometry (--tap-geometry) applies only to ONNX backbones, not {architecture}"
            )));
        }
        let preprocess = preprocess.unwrap_or_else(|| architecture.default_preprocess(&source));
        tracing::info!(weights = %source, backbone = architecture.name(), preprocess = preprocess.name(), "loading backbone");
        let model: Box<dyn Backbone> = match architecture {
            Architecture::Vgg16 => Box::new(Vgg16::load_file(&path, &device)?),
            Architecture::ResNet(depth) => Box::new(ResNet::load_file(depth, &path, &device)?),
            Architecture::Onnx => load_onnx(&path, check_onnx_request(layers)?, tap_geometry, &device)?,
        };
        Ok(LoadedBackbone { model, architecture, preprocess, source })
    }
}

/// The taps of an ONNX request, or why it cannot be served (no layers; no ONNX in this build).
fn check_onnx_request(layers: Option<&[String]>) -> Result<&[String], FeaturesError> {
    if !cfg!(feature = "onnx") {
        return Err(FeaturesError::Input(Architecture::ONNX_UNAVAILABLE.into()));
    }
    layers.filter(|l| !l.is_empty()).ok_or_else(onnx_needs_layers)
}

#[cfg(feature = "onnx")]
fn load_onnx(
    path: &Path,
    taps: &[String],
    tap_geometry: &BTreeMap<String, TapGeometry>,
    device: &Device,
) -> Result<Box<dyn Backbone>, FeaturesError> {
    Ok(Box::new(expgraph_backbone::OnnxBackbone::load_file(path, taps, tap_geometry, device)?))
}

#[cfg(not(feature = "onnx"))]
fn load_onnx(
    _path: &Path,
    _taps: &[String],
    _tap_geometry: &BTreeMap<String, TapGeometry>,
    _device: &Device,
) -> Result<Box<dyn Backbone>, FeaturesError> {
    Err(FeaturesError::Input(Architecture::ONNX_UNAVAILABLE.into()))
}

/// Names and shapes of the tensors of a safetensors file, from its header alone.
fn read_tensor_shapes(path: &Path) -> Result<Vec<(String, Vec<usize>)>, FeaturesError> {
    /// Headers above this size are not safetensors files we wrote or downloaded.
    const MAX_HEADER: u64 = 100 << 20;
    let bad = |what: String| FeaturesError::file(path, what);
    let mut file = std::fs::File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|e| bad(format!("not a safetensors file (no header length): {e}")))?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER {
        return Err(bad(format!("not a safetensors file (header length {len})")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(|e| bad(format!("not a safetensors file (truncated header): {e}")))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("not a safetensors file (header: {e})")))?;
    let mut tensors: Vec<(String, Vec<usize>)> = header
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, info)| {
            let shape = info
                .get("shape")
                .and_then(|s| s.as_array())
                .map(|dims| dims.iter().filter_map(|d| d.as_u64().map(|d| d as usize)).collect())
                .unwrap_or_default();
            (name, shape)
        })
        .collect();
    tensors.sort();
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_header(dir: &Path, names: &[(&str, Vec<usize>)]) -> std::path::PathBuf {
        let path = dir.join("w.safetensors");
        let tensors: Vec<(String, expgraph_cache::OwnedTensor)> = names
            .iter()
            .map(|(n, s)| {
                let len = s.iter().product();
                (n.to_string(), expgraph_cache::OwnedTensor::f32(s.clone(), std::iter::repeat_n(0.0, len)))
            })
            .collect();
        let bytes = expgraph_cache::serialize_safetensors(
            tensors.iter().map(|(n, t)| (n.as_str(), t)),
            std::iter::empty::<(String, String)>(),
        )
        .unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn names_and_default_layers() {
        for a in Architecture::ALL {
            assert_eq!(Architecture::from_name(a.name()), Some(a));
            assert!(BACKBONE_CHOICES.contains(&a.name()));
        }
        assert_eq!(Architecture::from_name("auto"), None);
        assert_eq!(default_layers("vgg16").unwrap(), ["conv4_2", "conv4_3", "conv5_2", "conv5_3"]);
        assert_eq!(default_layers("resnet101").unwrap(), ["layer2.pre_relu", "layer3.pre_relu", "layer4.pre_relu"]);
        assert!(default_layers("alexnet").unwrap_err().to_string().contains("resnet50"));
        // Every default layer is a tap of its architecture.
        for a in Architecture::ALL {
            let model = a.random(64, 0, &Device::Cpu).unwrap();
            for l in a.default_layers() {
                assert!(model.tap(&l).is_some(), "{a} has no tap {l}");
            }
        }
    }

    #[test]
    fn descriptions_have_full_width_channels() {
        let r50 = Architecture::ResNet(ResNetDepth::R50).describe().unwrap();
        let l4 = r50.iter().find(|t| t.name == "layer4").unwrap();
        assert_eq!((l4.channels, l4.map_size, l4.geometry.stride), (2048, 7, 32.0));
        let r18 = Architecture::ResNet(ResNetDepth::R18).describe().unwrap();
        assert_eq!(r18.iter().find(|t| t.name == "layer2.pre_relu").unwrap().channels, 128);
        let vgg = Architecture::Vgg16.describe().unwrap();
        let c53 = vgg.iter().find(|t| t.name == "conv5_3").unwrap();
        assert_eq!((c53.channels, c53.map_size, c53.geometry.stride, c53.geometry.first_centre), (512, 14, 16.0, 8.5));
        assert_eq!(vgg[0].channels, 64);
    }

    #[test]
    fn default_preprocessing_by_architecture_and_source() {
        let file = WeightSource::parse("w.safetensors");
        let hub = WeightSource::parse("timm/resnet50.a1_in1k");
        assert_eq!(Architecture::Vgg16.default_preprocess(&file), Preprocess::Caffe);
        assert_eq!(Architecture::Vgg16.default_preprocess(&hub), Preprocess::Torchvision);
        let r50 = Architecture::ResNet(ResNetDepth::R50);
        assert_eq!(r50.default_preprocess(&file), Preprocess::Torchvision);
        assert_eq!(r50.default_preprocess(&hub), Preprocess::Torchvision);
    }

    #[test]
    fn detects_the_architecture_from_tensor_names() {
        let dir = tempfile::tempdir().unwrap();
        // Shapes only matter to the ResNet depth rule; tiny shapes keep the files small.
        let vgg: Vec<(&str, Vec<usize>)> = vec![("features.0.weight", vec![1]), ("features.28.weight", vec![1])];
        assert_eq!(Architecture::detect_file(&write_header(dir.path(), &vgg)).unwrap(), Architecture::Vgg16);
        for depth in [ResNetDepth::R18, ResNetDepth::R50, ResNetDepth::R152] {
            let shapes = depth.state_dict_shapes();
            let names: Vec<(&str, Vec<usize>)> = shapes
                .iter()
                .map(|(n, s)| (n.as_str(), if n == "conv1.weight" { s.clone() } else { vec![1] }))
                .collect();
            let path = write_header(dir.path(), &names);
            assert_eq!(Architecture::detect_file(&path).unwrap(), Architecture::ResNet(depth));
        }
        let other: Vec<(&str, Vec<usize>)> = vec![("encoder.weight", vec![2, 2])];
        let err = Architecture::detect_file(&write_header(dir.path(), &other)).unwrap_err().to_string();
        assert!(err.contains("encoder.weight [2, 2]") && err.contains("--backbone"), "{err}");
        // A ResNet-like file of no standard depth says what it found.
        let odd: Vec<(&str, Vec<usize>)> = vec![
            ("conv1.weight", vec![64, 3, 7, 7]),
            ("layer1.0.conv1.weight", vec![1]),
            ("layer2.0.conv1.weight", vec![1]),
        ];
        let err = Architecture::detect_file(&write_header(dir.path(), &odd)).unwrap_err().to_string();
        assert!(err.contains("blocks per stage [1, 1, 0, 0]"), "{err}");
        std::fs::write(dir.path().join("junk"), b"hello").unwrap();
        assert!(Architecture::detect_file(&dir.path().join("junk")).unwrap_err().to_string().contains("safetensors"));
    }

    #[test]
    fn onnx_requests() {
        assert_eq!(Architecture::from_name("onnx"), Some(Architecture::Onnx));
        assert!(!Architecture::ALL.contains(&Architecture::Onnx));
        assert!(Architecture::FLAG_CHOICES.iter().all(|c| *c == "onnx" || BACKBONE_CHOICES.contains(c)));
        assert!(default_layers("onnx").unwrap_err().to_string().contains("--layers"));
        assert!(Architecture::Onnx.random(1, 0, &Device::Cpu).is_err());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("Model.ONNX");
        std::fs::write(&file, b"\xff\xff not protobuf").unwrap();
        assert_eq!(Architecture::detect_file(&file).unwrap(), Architecture::Onnx);
        let weights = file.to_str().unwrap();
        let layers = ["conv1".to_string()];
        let none = BTreeMap::new();
        for backbone in ["onnx", "auto"] {
            let err =
                LoadedBackbone::load(weights, backbone, None, "cpu", Some(&layers), &none).unwrap_err().to_string();
            if cfg!(feature = "onnx") {
                assert!(err.contains("Model.ONNX") && err.contains("not a valid ONNX"), "{err}");
            } else {
                assert!(err.contains("no ONNX support") && err.contains("--features onnx"), "{err}");
            }
            let err = LoadedBackbone::load(weights, backbone, None, "cpu", None, &none).unwrap_err().to_string();
            if cfg!(feature = "onnx") {
                assert!(err.contains("--layers"), "{err}");
            } else {
                assert!(err.contains("no ONNX support"), "{err}");
            }
        }
        // Explicit geometry is for ONNX taps only (checked before the weights are read).
        let vgg = write_header(dir.path(), &[("features.0.weight", vec![1]), ("features.28.weight", vec![1])]);
        let geometry = BTreeMap::from([(
            "conv4_3".to_string(),
            TapGeometry { stride: 8.0, first_centre: 4.5, receptive_field: 196.0 },
        )]);
        let err = LoadedBackbone::load(vgg.to_str().unwrap(), "auto", None, "cpu", None, &geometry).unwrap_err();
        assert!(err.to_string().contains("only to ONNX"), "{err}");
    }

    #[test]
    fn load_backbone_rejects_unknown_names_before_reading_weights() {
        let err = load_backbone("/no/such.safetensors", "resnet51", None, "cpu").unwrap_err().to_string();
        assert!(err.contains("resnet51") && err.contains("resnet50"), "{err}");
    }
}
