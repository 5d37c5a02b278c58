//! `cargo xtask bench-extract`: feature extraction alone (decode → crop → forward of both views
//! → normalize → cache shards), timed by stage, on the generated synthetic data set or a folder
//! of real images; optionally also with the old one-after-another loop (`--serial`) on the same
//! inputs. Writes a JSON record and prints a Markdown table.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use expgraph::backbone::Precision;
use expgraph::features::{
    compute_norm_stats, load_backbone, objects_from_dir, BatchSize, ExtractParams, ExtractTiming, NormStatsParams,
};
use expgraph::pipeline::{extraction_objects, synthetic_dataset, synthetic_negatives};
use expgraph::record::Host;
use serde::Serialize;

use crate::bench::{git_rev, PRECISION_CHOICES};

/// The default weights, relative to the workspace root (used when neither `--weights` nor
/// `EXPGRAPH_WEIGHTS` is given and the file exists).
pub const DEFAULT_WEIGHTS: &str = "../shared/models/vgg16-imagenet-conv.safetensors";

/// `bench-extract` arguments.
#[derive(clap::Args, Debug)]
pub struct ExtractBenchArgs {
    /// Backbone weights: a local `.safetensors` file or a Hugging Face repo id [default:
    /// ../shared/models/vgg16-imagenet-conv.safetensors beside the workspace, when it exists].
    #[arg(long, env = "EXPGRAPH_WEIGHTS", value_name = "FILE|REPO")]
    pub weights: Option<String>,
    /// Architecture: auto (detected from the weight file), vgg16, resnet18 … resnet152. It picks
    /// the layers too (the paper's graph layers of that architecture).
    #[arg(long, default_value = "auto")]
    pub backbone: String,
    /// Where the backbone runs: `cpu`, `cuda` or `cuda:N` (CUDA needs xtask built with
    /// `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Arithmetic of the forward pass: f32, or f16 / bf16 (half precision, for GPUs).
    #[arg(long, default_value = "f32", value_parser = PRECISION_CHOICES)]
    pub precision: String,
    /// Objects per forward pass (each also runs its mirrored view): `auto` (from the device) or N.
    #[arg(long, value_name = "auto|N", default_value = "auto")]
    pub batch: BatchSize,
    /// Objects to extract (generated ones, or the first N images of `--images`).
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = at_least(1))]
    pub objects: usize,
    /// Generated negative images for the normalization statistics (computed before the timed
    /// runs; they also warm the device up).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = at_least(2))]
    pub negatives: usize,
    /// A folder of real JPEG/PNG images (the whole image is the object) instead of the generated
    /// synthetic CUB-format data set.
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// Also run the old one-after-another extraction (`pipelined(false)`) on the same inputs and
    /// report pipelined ÷ serial speed.
    #[arg(long)]
    pub serial: bool,
    /// Seed of the generated data sets.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Working folder: generated data under `data/`, the caches of the runs in
    /// `extract-bench/pipelined` and `extract-bench/serial` (both replaced on every run) [default:
    /// a temporary folder, removed afterwards].
    #[arg(long, value_name = "DIR")]
    pub work: Option<PathBuf>,
    /// Where to write the JSON record [default: target/xtask/bench-extract.json].
    #[arg(long, value_name = "FILE.json")]
    pub out: Option<PathBuf>,
}

/// A clap parser of a count of at least `min` (the error names the minimum).
pub(crate) fn at_least(min: usize) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |s: &str| match s.trim().parse::<usize>() {
        Ok(n) if n >= min => Ok(n),
        Ok(n) => Err(format!("must be at least {min}, got {n}")),
        Err(e) => Err(format!("expected a count, got {s:?}: {e}")),
    }
}

/// One timed extraction.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Objects per forward pass that were used (the resolved `--batch`).
    pub batch: usize,
    /// Objects (both views each) per second of wall time.
    pub objects_per_s: f64,
    /// Milliseconds of wall time per object (both views).
    pub ms_per_object: f64,
    /// Where the time went, and peak memory (the process's peak so far: a serial run after the
    /// pipelined one reports at least the pipelined peak).
    pub timing: ExtractTiming,
}

/// The JSON record of `bench-extract`.
#[derive(Debug, Clone, Serialize)]
pub struct ExtractBenchRecord {
    /// Always `extract`.
    pub bench: &'static str,
    /// The checked-out commit.
    pub git_rev: String,
    /// The machine.
    pub host: Host,
    /// The device as the backbone crate names it (e.g. `cpu`, `cuda:0 (NVIDIA H200)`).
    pub device: String,
    /// The weights as given.
    pub weights: String,
    /// The architecture that ran.
    pub backbone: String,
    /// `f32`, `f16` or `bf16`.
    pub precision: String,
    /// The layers stored in the cache.
    pub layers: Vec<String>,
    /// Views per object (as is and mirrored).
    pub views: usize,
    /// `synthetic-cub` or the `--images` folder.
    pub data: String,
    /// Objects extracted per run.
    pub objects: usize,
    /// The batch asked for (`auto` or N).
    pub batch_requested: BatchSize,
    /// The pipelined run (the default extractor).
    #[serde(flatten)]
    pub pipelined: RunResult,
    /// The serial run (`--serial`), else `null`.
    pub serial: Option<RunResult>,
    /// Pipelined objects/s ÷ serial objects/s (`--serial`), else `null`.
    pub pipelined_over_serial_speed: Option<f64>,
}

/// Run `cargo xtask bench-extract`.
pub fn run(a: ExtractBenchArgs) -> Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".."));
    let weights = resolve_weights(a.weights.as_deref(), workspace)?;
    let precision = Precision::from_name(&a.precision).with_context(|| format!("--precision {}", a.precision))?;
    // The backbone first: a bad weight file or device fails before data is generated.
    let mut loaded = load_backbone(&weights, &a.backbone, None, &a.device).with_context(|| {
        format!("loading the backbone {weights} (--backbone {}) on --device {}", a.backbone, a.device)
    })?;
    loaded
        .model
        .set_precision(precision)
        .with_context(|| format!("--precision {} on --device {}", a.precision, a.device))?;
    let device = expgraph::backbone::device_label(loaded.model.device());
    // Without --work: a temporary folder, removed when `_temp` drops at the end.
    let (work, _temp) = match &a.work {
        Some(dir) => (dir.clone(), None),
        None => {
            let t = tempfile::Builder::new().prefix("bench-extract-").tempdir().context("creating a temp folder")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let keep_caches = a.work.is_some();
    std::fs::create_dir_all(&work).with_context(|| format!("--work {}: cannot create it", work.display()))?;
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("target/xtask/bench-extract.json"));

    let (data, objects) = match &a.images {
        Some(dir) => {
            let objects =
                objects_from_dir(dir, None, Some(a.objects)).with_context(|| format!("--images {}", dir.display()))?;
            (dir.display().to_string(), objects)
        }
        None => ("synthetic-cub".to_string(), extraction_objects(&synthetic_dataset(&work, a.objects, a.seed)?)),
    };
    if objects.len() < a.objects {
        tracing::warn!(wanted = a.objects, found = objects.len(), "fewer objects than --objects; timing those");
    }
    let negatives = synthetic_negatives(&work, a.negatives, a.seed)?;

    let layers = loaded.architecture.default_layers();
    let stats_params = NormStatsParams {
        layers: layers.clone(),
        preprocess: loaded.preprocess,
        input_size: expgraph::backbone::REFERENCE_INPUT_SIZE,
        batch: match a.batch {
            BatchSize::Fixed(n) => n,
            BatchSize::Auto => 4,
        },
        progress: expgraph::io::ProgressSink::none(),
    };
    // Untimed, and always computed: it also warms the device up (kernels, allocator) before the
    // timed runs.
    let stats = compute_norm_stats(loaded.model.as_ref(), &stats_params, &negatives)
        .context("normalization statistics over the generated negatives")?;

    let runs_dir = work.join("extract-bench");
    let extract = |pipelined: bool| -> Result<RunResult> {
        let dir = runs_dir.join(if pipelined { "pipelined" } else { "serial" });
        if dir.exists() {
            // Ours from an earlier run: a cache there would resume and compute nothing.
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing the earlier run {}", dir.display()))?;
        }
        let report = ExtractParams::new()
            .layers(layers.clone())
            .preprocess(loaded.preprocess)
            .input_size(expgraph::backbone::REFERENCE_INPUT_SIZE)
            .batch_size(a.batch)
            .pipelined(pipelined)
            .check(loaded.model.as_ref(), &stats)?
            .run(&objects, &dir)
            .with_context(|| format!("extracting into {}", dir.display()))?;
        if report.computed != objects.len() {
            bail!("{}: computed {} of {} objects", dir.display(), report.computed, objects.len());
        }
        if !keep_caches {
            // Only the timing matters: free the disk before the next run.
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(run_result(report.computed, report.batch, report.timing))
    };
    let pipelined = extract(true)?;
    let serial = if a.serial { Some(extract(false)?) } else { None };
    let speed = serial.as_ref().and_then(|s| speed_ratio(&pipelined, s));

    let record = ExtractBenchRecord {
        bench: "extract",
        git_rev: git_rev(),
        host: Host::detect(),
        device,
        weights,
        backbone: loaded.architecture.name().to_string(),
        precision: precision.name().to_string(),
        layers,
        views: 2,
        data,
        objects: objects.len(),
        batch_requested: a.batch,
        pipelined,
        serial,
        pipelined_over_serial_speed: speed,
    };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("--out {}: cannot create its folder", out.display()))?;
    }
    expgraph::record::write_json(&out, &record)?; // the error names the file
    println!("{}", markdown_table(&record));
    println!("record: {}", out.display());
    Ok(())
}

/// `--weights` (or `EXPGRAPH_WEIGHTS`), else the shared VGG-16 beside `workspace` when present.
fn resolve_weights(given: Option<&str>, workspace: &Path) -> Result<String> {
    if let Some(w) = given.filter(|w| !w.trim().is_empty()) {
        return Ok(w.to_string());
    }
    let default = workspace.join(DEFAULT_WEIGHTS);
    if default.is_file() {
        return Ok(std::fs::canonicalize(&default).unwrap_or(default).display().to_string());
    }
    bail!(
        "no weights: pass --weights FILE|REPO (or set EXPGRAPH_WEIGHTS); the default {} does not exist",
        default.display()
    )
}

/// The rates of a run of `objects` objects.
fn run_result(objects: usize, batch: usize, timing: ExtractTiming) -> RunResult {
    let (objects_per_s, ms_per_object) = if timing.wall_s > 0.0 && objects > 0 {
        (objects as f64 / timing.wall_s, timing.wall_s * 1000.0 / objects as f64)
    } else {
        (0.0, 0.0)
    };
    RunResult { batch, objects_per_s, ms_per_object, timing }
}

/// Pipelined ÷ serial objects per second (`None` when the serial rate is 0).
fn speed_ratio(pipelined: &RunResult, serial: &RunResult) -> Option<f64> {
    (serial.objects_per_s > 0.0).then(|| pipelined.objects_per_s / serial.objects_per_s)
}

/// The record as a Markdown table: one row per run.
fn markdown_table(r: &ExtractBenchRecord) -> String {
    let mib = |b: Option<u64>| b.map_or_else(|| "–".to_string(), |b| format!("{}", b >> 20));
    let stage_names: Vec<String> = r.pipelined.timing.stages().iter().map(|(name, _)| name.replace('_', " ")).collect();
    let mut s = format!(
        "bench-extract: {} objects × {} views, {} on {} ({}), layers {}\n\n\
         | run | batch | objects/s | ms/object | wall s | {} | peak RSS MiB | peak device MiB |\n\
         | --- |{}\n",
        r.objects,
        r.views,
        r.backbone,
        r.device,
        r.precision,
        r.layers.join(","),
        stage_names.join(" | "),
        " ---: |".repeat(6 + stage_names.len()),
    );
    let runs = std::iter::once(("pipelined", &r.pipelined)).chain(r.serial.as_ref().map(|s| ("serial", s)));
    for (name, run) in runs {
        let t = &run.timing;
        let stages: Vec<String> = t.stages().iter().map(|(_, secs)| format!("{secs:.2}")).collect();
        s.push_str(&format!(
            "| {name} | {} | {:.2} | {:.1} | {:.2} | {} | {} | {} |\n",
            run.batch,
            run.objects_per_s,
            run.ms_per_object,
            t.wall_s,
            stages.join(" | "),
            mib(t.peak_rss_bytes),
            mib(t.peak_device_bytes)
        ));
    }
    if let Some(x) = r.pipelined_over_serial_speed {
        s.push_str(&format!("\npipelined ÷ serial speed: {x:.2}×\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(wall_s: f64) -> ExtractTiming {
        ExtractTiming { wall_s, forward_s: wall_s / 2.0, peak_rss_bytes: Some(5 << 20), ..ExtractTiming::default() }
    }

    #[test]
    fn weights_come_from_the_flag_else_the_shared_default_else_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let workspace = tmp.path().join("ws/main");
        std::fs::create_dir_all(&workspace).unwrap();
        assert_eq!(resolve_weights(Some("timm/vgg16.tv_in1k"), &workspace).unwrap(), "timm/vgg16.tv_in1k");
        let e = format!("{:#}", resolve_weights(None, &workspace).unwrap_err());
        assert!(e.contains("--weights") && e.contains("EXPGRAPH_WEIGHTS") && e.contains("vgg16-imagenet-conv"), "{e}");
        let e = format!("{:#}", resolve_weights(Some(" "), &workspace).unwrap_err());
        assert!(e.contains("--weights"), "{e}");
        let shared = tmp.path().join("ws/shared/models/vgg16-imagenet-conv.safetensors");
        std::fs::create_dir_all(shared.parent().unwrap()).unwrap();
        std::fs::write(&shared, "x").unwrap();
        let found = resolve_weights(None, &workspace).unwrap();
        assert_eq!(PathBuf::from(found), std::fs::canonicalize(&shared).unwrap());
    }

    #[test]
    fn rates_and_the_speed_ratio() {
        let fast = run_result(10, 8, timing(2.0));
        assert_eq!((fast.objects_per_s, fast.ms_per_object, fast.batch), (5.0, 200.0, 8));
        let slow = run_result(10, 8, timing(4.0));
        assert_eq!(speed_ratio(&fast, &slow), Some(2.0));
        let none = run_result(10, 8, timing(0.0));
        assert_eq!((none.objects_per_s, none.ms_per_object), (0.0, 0.0));
        assert_eq!(speed_ratio(&fast, &none), None);
    }

    #[test]
    fn the_table_has_a_row_per_run_and_the_ratio() {
        let record = ExtractBenchRecord {
            bench: "extract",
            git_rev: "r".into(),
            host: Host { cpu: "c".into(), family: None, model: None, cores: 1, mem: 1 },
            device: "cpu".into(),
            weights: "w".into(),
            backbone: "vgg16".into(),
            precision: "f32".into(),
            layers: vec!["conv5_3".into()],
            views: 2,
            data: "synthetic-cub".into(),
            objects: 10,
            batch_requested: BatchSize::Auto,
            pipelined: run_result(10, 4, timing(2.0)),
            serial: Some(run_result(10, 4, timing(3.0))),
            pipelined_over_serial_speed: Some(1.5),
        };
        let table = markdown_table(&record);
        assert!(table.contains("| pipelined | 4 | 5.00 | 200.0 | 2.00 |"), "{table}");
        assert!(table.contains("| serial | 4 | 3.33 |"), "{table}");
        assert!(table.contains("| 5 | – |") && table.contains("1.50×"), "{table}");
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!((json["bench"].as_str(), json["batch"].as_u64()), (Some("extract"), Some(4)));
        assert_eq!(json["batch_requested"], "auto");
        assert_eq!(json["timing"]["wall_s"], 2.0);
        assert_eq!(json["serial"]["timing"]["wall_s"], 3.0);
    }

    #[test]
    fn counts_below_the_minimum_are_rejected() {
        assert_eq!(at_least(2)("3"), Ok(3));
        assert!(at_least(2)("1").unwrap_err().contains("at least 2"));
        assert!(at_least(1)("x").unwrap_err().contains("count"));
    }
}
