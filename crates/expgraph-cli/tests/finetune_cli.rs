//! `expgraph finetune` end to end on tiny random VGG-16 and ResNet files and generated images.
//! Run with `--release`.

mod common;
use common::expgraph;

use std::path::Path;

/// A random VGG-16 with every width divided by 16, under torchvision names.
fn write_tiny_vgg(path: &Path) {
    let vgg = expgraph_backbone::Vgg16::random(16, 1, &candle_core::Device::Cpu).unwrap();
    candle_core::safetensors::save(&vgg.named_weights().into_iter().collect(), path).unwrap();
}

/// `n` objects (bright discs) in `dir/pos` and `n` negatives (dark stripes) in `dir/neg`.
fn write_images(dir: &Path, n: u32) {
    std::fs::create_dir_all(dir.join("pos")).unwrap();
    std::fs::create_dir_all(dir.join("neg")).unwrap();
    for i in 0..n {
        let img = image::RgbImage::from_fn(40, 40, |x, y| {
            let (dx, dy) = (x as i32 - 20 - i as i32, y as i32 - 20);
            if dx * dx + dy * dy < 100 {
                image::Rgb([250, 240, 200])
            } else {
                image::Rgb([((x * 7 + y * 3 + i) % 50) as u8, 20, 30])
            }
        });
        img.save(dir.join(format!("pos/p{i}.png"))).unwrap();
        let img = image::RgbImage::from_fn(50, 36, |x, y| {
            let v = if (x / (2 + i)) % 2 == 0 { 70 } else { 10 };
            image::Rgb([v, ((y * 5) % 40) as u8, v / 2])
        });
        img.save(dir.join(format!("neg/n{i}.png"))).unwrap();
    }
}

fn finetune(dir: &Path, out: &Path, epochs: &str, extra: &[&str]) -> std::process::Output {
    expgraph()
        .arg("finetune")
        .arg("--images")
        .arg(dir.join("pos"))
        .arg("--negatives")
        .arg(dir.join("neg"))
        .arg("--weights")
        .arg(dir.join("weights.safetensors"))
        .arg("--out")
        .arg(out)
        .args(["--epochs", epochs, "--input-size", "32", "--batch", "4", "--seed", "3", "--json"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn finetune_writes_loadable_weights_and_reports_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_vgg(&dir.path().join("weights.safetensors"));
    write_images(dir.path(), 6);
    let boxes = dir.path().join("boxes.json");
    std::fs::write(
        &boxes,
        r#"{"p0.png": [2, 2, 38, 38], "p1.png": [0, 0, 40, 40], "p2.png": [4, 4, 40, 40],
            "p3.png": [0, 0, 40, 40], "p4.png": [1, 1, 39, 39], "p5.png": [0, 0, 40, 40]}"#,
    )
    .unwrap();
    let out = dir.path().join("tuned.safetensors");
    let run = finetune(dir.path(), &out, "3", &["--boxes", boxes.to_str().unwrap()]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let accuracy = report["held_out_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy), "{report}");
    assert_eq!(report["epochs"], 3);
    assert_eq!(report["positives"], 6);
    assert_eq!(report["history"].as_array().unwrap().len(), 3);
    assert!(report["history"][2]["train_loss"].as_f64().unwrap().is_finite());

    // The output reads back as a VGG-16 (narrow widths) with its head and metadata.
    let tuned = expgraph_finetune::BaseWeights::load(&out).unwrap();
    assert_eq!(tuned.vgg_layers().map(<[_]>::len), Some(13));
    let meta = expgraph_finetune::read_metadata(&out).unwrap();
    assert_eq!(meta["held_out_accuracy"].as_f64(), Some(accuracy));
    assert_eq!(meta["params"]["epochs"], 3);
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("head.weight").unwrap().shape(), [1, 32]);
    assert_eq!(st.tensor("head.bias").unwrap().shape(), [1]);
    assert!(!dir.path().join("tuned.safetensors.checkpoint.safetensors").exists());

    // An existing --out is kept unless --overwrite.
    let again = finetune(dir.path(), &out, "3", &[]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("exists") && err.contains("--overwrite"), "{err}");
    let again = finetune(dir.path(), &out, "1", &["--overwrite"]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(expgraph_finetune::read_metadata(&out).unwrap()["params"]["epochs"], 1);
}

#[test]
fn finetune_names_an_unreadable_negative() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_vgg(&dir.path().join("weights.safetensors"));
    write_images(dir.path(), 3);
    std::fs::write(dir.path().join("neg/broken.jpg"), b"not a jpeg at all").unwrap();
    let out = dir.path().join("tuned.safetensors");
    let run = finetune(dir.path(), &out, "3", &[]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("broken.jpg"), "{err}");
    assert!(!out.exists());
}

#[test]
fn finetune_takes_a_resnet_and_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let depth = expgraph_backbone::ResNetDepth::R18;
    let tensors = expgraph_backbone::ResNet::random_state_dict(depth, 8, 2).unwrap();
    candle_core::safetensors::save(&tensors.into_iter().collect(), dir.path().join("weights.safetensors")).unwrap();
    write_images(dir.path(), 6);
    let out = dir.path().join("tuned.safetensors");
    let run = finetune(dir.path(), &out, "2", &["--limit", "4", "--negatives-limit", "5"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!((report["positives"].as_u64(), report["negatives"].as_u64()), (Some(4), Some(5)));
    assert_eq!(report["architecture"], "resnet18");
    assert_eq!(report["train_from"], "layer4");
    assert_eq!(report["preprocess"], "torchvision");
    let meta = expgraph_finetune::read_metadata(&out).unwrap();
    assert_eq!(meta["trained"], serde_json::json!(["layer4"]));
    let tuned = expgraph_finetune::BaseWeights::load(&out).unwrap();
    assert_eq!(tuned.architecture(), expgraph_features::Architecture::ResNet(depth));

    // A VGG-16 layer for a ResNet is refused before any work, naming the layers it has.
    let bad = finetune(dir.path(), &dir.path().join("bad.safetensors"), "1", &["--train-from", "conv4_1"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("conv4_1") && err.contains("layer1 … layer4"), "{err}");
}
