//! The ONNX backbone against the native VGG-16 (feature `onnx`): the converted VGG-16 conv stack
//! (`shared/models/vgg16-imagenet-conv.safetensors`) is exported to an ONNX model here (Conv +
//! Relu + MaxPool nodes, weights as initializers, conv outputs named `convX_Y`), and its pre-ReLU
//! taps and their geometry must match `Vgg16`'s on the golden inputs.
//! Skips (passes with a printed reason) when the shared files are absent.
#![cfg(feature = "onnx")]

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor};
use candle_onnx::onnx;
use expgraph_backbone::{Backbone, OnnxBackbone, Vgg16, REFERENCE_INPUT_SIZE};
use onnx::attribute_proto::AttributeType;
use onnx::tensor_proto::DataType;
use onnx::tensor_shape_proto::dimension::Value as Dim;
use prost::Message;

mod common;
use common::vgg16_golden_files;

const TAPS: [&str; 4] = ["conv4_2", "conv4_3", "conv5_2", "conv5_3"];

/// VGG-16 "D": conv layer names; `true` where a 2×2 max-pool follows the ReLU.
const CONVS: [(&str, bool); 13] = [
    ("conv1_1", false),
    ("conv1_2", true),
    ("conv2_1", false),
    ("conv2_2", true),
    ("conv3_1", false),
    ("conv3_2", false),
    ("conv3_3", true),
    ("conv4_1", false),
    ("conv4_2", false),
    ("conv4_3", true),
    ("conv5_1", false),
    ("conv5_2", false),
    ("conv5_3", true),
];

fn ints(name: &str, v: &[i64]) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn initializer(name: &str, t: &Tensor) -> onnx::TensorProto {
    let values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    onnx::TensorProto {
        name: name.into(),
        dims: t.dims().iter().map(|&d| d as i64).collect(),
        data_type: DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attribute: Vec<onnx::AttributeProto>) -> onnx::NodeProto {
    onnx::NodeProto {
        op_type: op.into(),
        name: format!("{op}:{output}"),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    }
}

/// The VGG-16 conv stack of `model` as an ONNX model: input `image` `[1, 3, 224, 224]` (the
/// backbone relaxes batch and size), conv outputs `convX_Y` (pre-ReLU), ReLU outputs
/// `reluX_Y`, pool outputs `poolN`, graph output `pool5`.
fn export_vgg16(model: &Vgg16) -> onnx::ModelProto {
    let weights: HashMap<String, Tensor> = model.named_weights().into_iter().collect();
    let features = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28];
    let (mut nodes, mut initializers) = (Vec::new(), Vec::new());
    let mut x = "image".to_string();
    let mut pools = 0;
    for ((name, pool_after), index) in CONVS.iter().zip(features) {
        let (w, b) = (format!("features.{index}.weight"), format!("features.{index}.bias"));
        initializers.push(initializer(&w, &weights[&w]));
        initializers.push(initializer(&b, &weights[&b]));
        let attrs = vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1]), ints("strides", &[1, 1])];
        nodes.push(node("Conv", &[&x, &w, &b], name, attrs));
        let relu = name.replace("conv", "relu");
        nodes.push(node("Relu", &[name], &relu, vec![]));
        x = relu;
        if *pool_after {
            pools += 1;
            let pool = format!("pool{pools}");
            nodes.push(node("MaxPool", &[&x], &pool, vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])]));
            x = pool;
        }
    }
    let dim = |v: Dim| onnx::tensor_shape_proto::Dimension { value: Some(v), ..Default::default() };
    let input = onnx::ValueInfoProto {
        name: "image".into(),
        r#type: Some(onnx::TypeProto {
            value: Some(onnx::type_proto::Value::TensorType(onnx::type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(onnx::TensorShapeProto {
                    dim: vec![
                        dim(Dim::DimValue(1)),
                        dim(Dim::DimValue(3)),
                        dim(Dim::DimValue(224)),
                        dim(Dim::DimValue(224)),
                    ],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Initializers listed among the inputs too, as older exporters do.
    let mut inputs = vec![input];
    inputs.extend(initializers.iter().map(|t| onnx::ValueInfoProto { name: t.name.clone(), ..Default::default() }));
    onnx::ModelProto {
        ir_version: 8,
        producer_name: "expgraph test".into(),
        opset_import: vec![onnx::OperatorSetIdProto { domain: String::new(), version: 17 }],
        graph: Some(onnx::GraphProto {
            name: "vgg16".into(),
            node: nodes,
            initializer: initializers,
            input: inputs,
            output: vec![onnx::ValueInfoProto { name: x, ..Default::default() }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

fn l2(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap().sqrt()
}

/// The golden test's tolerance: max|Δ| ≤ 2e-5·max|reference| and relative L2 ≤ 5e-6.
fn assert_close(what: &str, ours: &Tensor, reference: &Tensor) {
    assert_eq!(ours.dims(), reference.dims(), "{what}: shape");
    let diff = (ours - reference).unwrap();
    let (max_diff, scale) = (max_abs(&diff), max_abs(reference));
    let rel_l2 = l2(&diff) / l2(reference);
    eprintln!("{what}: max|Δ| = {max_diff:.3e} (max|reference| = {scale:.1}), relative L2 = {rel_l2:.3e}");
    assert!(max_diff <= 2e-5 * scale, "{what}: max|Δ| {max_diff} > 2e-5 × {scale}");
    assert!(rel_l2 <= 5e-6, "{what}: relative L2 {rel_l2} > 5e-6");
}

#[test]
fn onnx_vgg16_matches_native_vgg16() {
    let Some((weights, golden)) = vgg16_golden_files() else {
        return;
    };
    let native = Vgg16::load_file(&weights, &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vgg16.onnx");
    std::fs::write(&path, export_vgg16(&native).encode_to_vec()).unwrap();

    // Requested out of order: the taps come back in graph order.
    let requested: Vec<String> = ["conv5_3", "conv4_2", "conv5_2", "conv4_3"].map(String::from).to_vec();
    let model = OnnxBackbone::load_file(&path, &requested, &BTreeMap::new(), &Device::Cpu).unwrap();
    assert_eq!(model.name(), "onnx");
    assert_eq!(model.input_name(), "image");
    assert_eq!(model.weights_digest(), blake3::hash(&std::fs::read(&path).unwrap()).to_hex().as_str());
    let names: Vec<&str> = model.taps().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, TAPS);

    // Geometry from the graph walk = the native VGG-16 geometry, for every tap.
    for tap in TAPS {
        let (ours, theirs) = (model.tap(tap).unwrap(), native.tap(tap).unwrap());
        assert_eq!(ours.geometry, theirs.geometry, "{tap}: geometry");
        assert_eq!(ours.channels, theirs.channels, "{tap}: channels");
        for side in [REFERENCE_INPUT_SIZE, 100, 33, 16] {
            assert_eq!(model.tap_map_size(tap, side).ok(), native.tap_map_size(tap, side).ok(), "{tap}: side {side}");
        }
    }
    let conv53 = model.tap("conv5_3").unwrap().geometry;
    assert_eq!((conv53.stride, conv53.first_centre), (16.0, 8.5));

    // Every conv layer's geometry, from a model tapping all of them.
    let all: Vec<String> = CONVS.iter().map(|(n, _)| n.to_string()).collect();
    let every = OnnxBackbone::load_file(&path, &all, &BTreeMap::new(), &Device::Cpu).unwrap();
    for (ours, theirs) in every.taps().iter().zip(native.taps()) {
        assert_eq!((&ours.name, ours.geometry, ours.channels), (&theirs.name, theirs.geometry, theirs.channels));
    }

    // Activations on the golden inputs: against the native model, and against the golden file.
    let input = &golden["input"];
    let theirs = native.forward_taps(input, &TAPS).unwrap();
    let order = ["conv5_2", "conv4_2", "conv5_3", "conv4_3"];
    let ours = model.forward_taps(input, &order).unwrap();
    for (tap, ours) in order.iter().zip(&ours) {
        let i = TAPS.iter().position(|t| t == tap).unwrap();
        assert_close(&format!("{tap} onnx vs native"), ours, &theirs[i]);
        assert_close(&format!("{tap} onnx vs golden"), ours, &golden[*tap]);
    }
    // A shallow tap alone runs only the pruned graph up to it.
    let shallow = model.forward_taps(&input.narrow(0, 0, 1).unwrap(), &["conv4_2"]).unwrap();
    assert_close("conv4_2 first image", &shallow[0], &theirs[0].narrow(0, 0, 1).unwrap());

    // A ReLU output is a tap too; its channels come from the conv before it.
    let relu = OnnxBackbone::load_file(&path, &["relu5_3".to_string()], &BTreeMap::new(), &Device::Cpu).unwrap();
    assert_eq!(relu.taps()[0].channels, 512);
    assert_eq!(relu.taps()[0].geometry, native.tap("conv5_3").unwrap().geometry);

    // Unknown taps name the file and list node outputs.
    let err = OnnxBackbone::load_file(&path, &["conv6_1".to_string()], &BTreeMap::new(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("conv6_1") && err.contains("vgg16.onnx") && err.contains("conv1_1 (Conv)"), "{err}");
}
