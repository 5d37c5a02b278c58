//! `cargo xtask bench-*`: extract (cached) → learn → localize → evaluate on one data set, then
//! write a JSON record and print a Markdown table.

use anyhow::{bail, Context, Result};
use expgraph::pipeline::{DataSource, LocalizeViews, PipelineConfig};
use std::path::{Path, PathBuf};

use crate::fetch;

/// Settings shared by every benchmark.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Backbone weights: a local `.safetensors` file or a Hugging Face repo id.
    #[arg(long, env = "EXPGRAPH_WEIGHTS")]
    pub weights: String,
    /// Architecture: auto (detected from the weight file), vgg16, resnet18 … resnet152.
    #[arg(long, default_value = "auto")]
    pub backbone: String,
    /// Folder of negative images for the per-unit normalization (default: generated backgrounds).
    #[arg(long)]
    pub negatives: Option<PathBuf>,
    /// Use at most this many negatives.
    #[arg(long, default_value_t = 200)]
    pub negatives_limit: usize,
    /// Use at most this many objects (`--images N` is the old, hidden spelling).
    #[arg(long, value_name = "N", alias = "images")]
    pub limit: Option<usize>,
    /// Parts to localize (default: all of the data set's).
    #[arg(long, value_delimiter = ',')]
    pub parts: Option<Vec<String>>,
    /// Learning iterations per layer (paper: 20).
    #[arg(long, default_value_t = 20)]
    pub iterations: usize,
    /// Seed of every random choice (initialization, choice of the annotated examples).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Working folder (feature cache, graph, activations, report).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Where to write the JSON record.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write the HTML report into the working folder.
    #[arg(long)]
    pub report: bool,
    /// Views graph localization tries on a test image: both (as is and mirrored, the better
    /// template score winning) or chosen (only the view inference chose).
    #[arg(long, default_value = "both", value_parser = ["both", "chosen"])]
    pub localize_views: String,
    /// Independent seeded draws of the annotated examples per part (the record gives the mean
    /// and the spread over draws).
    #[arg(long, default_value_t = 5)]
    pub draws: usize,
    /// Where the backbone runs: `cpu`, `cuda` or `cuda:N` (CUDA needs xtask built with
    /// `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Arithmetic of the backbone's forward pass: f32, or f16 / bf16 (half precision, for GPUs).
    #[arg(long, default_value = "f32", value_parser = PRECISION_CHOICES)]
    pub precision: String,
}

/// The names `--precision` accepts.
pub const PRECISION_CHOICES: [&str; 3] = ["f32", "f16", "bf16"];

/// `bench-synth` arguments.
#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Small and fast: 48 objects, 24 negatives, 6 iterations (what CI runs).
    #[arg(long)]
    pub quick: bool,
    #[command(flatten)]
    pub finetune: crate::finetune_bench::FinetuneArgs,
}

/// `bench-cub` arguments.
#[derive(clap::Args, Debug)]
#[command(mut_arg("negatives", paper_negatives_help), mut_arg("negatives_limit", paper_negatives_limit))]
pub struct CubArgs {
    /// The CUB-200-2011 folder that holds `images.txt`.
    #[arg(long)]
    pub data: PathBuf,
    /// The reference's `sampling.mat`, whose `validObj` picks the paper's 2000 test objects
    /// [default: DATA/sampling.mat, else ../shared/data/annotations/cub-sampling.mat beside the
    /// workspace].
    #[arg(long, value_name = "FILE", conflicts_with = "all_test_objects")]
    pub sampling: Option<PathBuf>,
    /// Run every test-split object (area ≥ 2500) instead of the paper's 2000-object subset.
    #[arg(long)]
    pub all_test_objects: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `--negatives` of the paper benchmarks: the paper's negatives are the default.
fn paper_negatives_help(arg: clap::Arg) -> clap::Arg {
    arg.help(
        "Folder of negative images for the per-unit normalization [default: data/negatives, the paper's \
         1000 negatives, put there by `cargo xtask fetch-negatives`]",
    )
}

/// `--negatives-limit` of the paper benchmarks: all 1000 of the paper's negatives.
fn paper_negatives_limit(arg: clap::Arg) -> clap::Arg {
    arg.default_value("1000")
}

/// `bench-pascal` arguments.
#[derive(clap::Args, Debug)]
#[command(mut_arg("negatives", paper_negatives_help), mut_arg("negatives_limit", paper_negatives_limit))]
pub struct PascalArgs {
    /// The Pascal-Part folder (VOC2010 `JPEGImages/` and the `truth_<cat>.mat` files).
    #[arg(long)]
    pub data: PathBuf,
    /// Category: bird, cat, cow, dog, horse or sheep.
    #[arg(long, default_value = "bird")]
    pub category: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `bench-ilsvrc` arguments.
#[derive(clap::Args, Debug)]
#[command(mut_arg("negatives", paper_negatives_help), mut_arg("negatives_limit", paper_negatives_limit))]
pub struct IlsvrcArgs {
    /// The ILSVRC 2013 DET Animal-Part folder (as laid out by the authors' `detanimalpart`).
    #[arg(long)]
    pub data: PathBuf,
    /// Synset, e.g. n01503061 (bird).
    #[arg(long, default_value = "n01503061")]
    pub synset: String,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn synth(mut a: SynthArgs) -> Result<()> {
    if a.quick {
        a.common.limit.get_or_insert(48);
        a.common.negatives_limit = a.common.negatives_limit.min(24);
        a.common.iterations = a.common.iterations.min(6);
    }
    let images = a.common.limit.unwrap_or(300);
    let data = DataSource::Synthetic { images, seed: a.common.seed };
    if a.finetune.finetune {
        return crate::finetune_bench::run(data, a.common, &a.finetune);
    }
    run("synthetic-cub", data, a.common)
}

pub fn cub(mut a: CubArgs) -> Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".."));
    let sampling = cub_sampling(&a.data, a.sampling, a.all_test_objects, workspace)?;
    let name = if sampling.is_some() { "cub-200-2011/paper-subset" } else { "cub-200-2011/test" };
    a.common.negatives = paper_negatives(a.common.negatives, Path::new(fetch::DEFAULT_NEGATIVES_DIR))?;
    run(name, DataSource::Cub { dir: a.data, sampling }, a.common)
}

pub fn pascal(mut a: PascalArgs) -> Result<()> {
    let name = format!("pascal-part/{}", a.category);
    a.common.negatives = paper_negatives(a.common.negatives, Path::new(fetch::DEFAULT_NEGATIVES_DIR))?;
    run(&name, DataSource::Pascal { dir: a.data, category: a.category }, a.common)
}

pub fn ilsvrc(mut a: IlsvrcArgs) -> Result<()> {
    let name = format!("ilsvrc-animal-part/{}", a.synset);
    a.common.negatives = paper_negatives(a.common.negatives, Path::new(fetch::DEFAULT_NEGATIVES_DIR))?;
    run(&name, DataSource::Ilsvrc { dir: a.data, synset: a.synset }, a.common)
}

/// The CUB subset file: `--sampling` as given, none with `--all-test-objects`, else the first of
/// `DATA/sampling.mat` and `WORKSPACE/../shared/data/annotations/cub-sampling.mat` that exists.
fn cub_sampling(data: &Path, given: Option<PathBuf>, all: bool, workspace: &Path) -> Result<Option<PathBuf>> {
    if all {
        return Ok(None);
    }
    if let Some(file) = given {
        if !file.is_file() {
            bail!("--sampling {}: no such file", file.display());
        }
        return Ok(Some(file));
    }
    let candidates = [data.join("sampling.mat"), workspace.join("../shared/data/annotations/cub-sampling.mat")];
    match candidates.iter().find(|p| p.is_file()) {
        Some(found) => Ok(Some(std::fs::canonicalize(found).unwrap_or_else(|_| found.clone()))),
        None => bail!(
            "the paper's CUB subset (sampling.mat, whose validObj lists its 2000 test objects) is neither at {} nor \
             at {}; pass --sampling FILE (github.com/zqs1022/explanatoryGraph, \
             code/data_input/data_input_CUB-200-2011/sampling.mat), or --all-test-objects to run the whole test split",
            candidates[0].display(),
            candidates[1].display()
        ),
    }
}

/// The negatives of a paper benchmark: `--negatives` as given, else `default` (`data/negatives`)
/// if it holds exactly the files of `datasets/negatives.sha256` (names only; `fetch-negatives`
/// checked the hashes).
fn paper_negatives(given: Option<PathBuf>, default: &Path) -> Result<Option<PathBuf>> {
    if given.is_some() {
        return Ok(given);
    }
    let hint = "run `cargo xtask fetch-negatives` (downloads them from the authors' repository; \
                `--from ../shared/data/negatives` copies a local copy instead), or pass --negatives DIR";
    if !default.is_dir() {
        bail!("the paper's negatives are not at {} (the default without --negatives): {hint}", default.display());
    }
    let (list, _) = fetch::Checksums::negatives()?;
    list.check_names(default).with_context(|| format!("{} is not the paper's negatives: {hint}", default.display()))?;
    // Absolute, so the record's `config.negatives` says which folder it was.
    Ok(Some(std::fs::canonicalize(default).unwrap_or_else(|_| default.to_path_buf())))
}

/// The pipeline configuration of a benchmark on `data` with the settings `c`, working in `work`.
pub(crate) fn pipeline_config(name: &str, data: DataSource, c: CommonArgs, work: PathBuf) -> PipelineConfig {
    PipelineConfig {
        dataset_name: name.to_string(),
        data,
        weights: c.weights,
        backbone: c.backbone,
        preprocess: None,
        negatives: c.negatives,
        negatives_limit: c.negatives_limit,
        max_images: c.limit,
        parts: c.parts,
        iterations: c.iterations,
        seed: c.seed,
        work_dir: work,
        report: c.report,
        draws: c.draws,
        localize_views: if c.localize_views == "chosen" { LocalizeViews::Chosen } else { LocalizeViews::Both },
        device: c.device,
        precision: c.precision,
        ..PipelineConfig::default()
    }
}

/// Runs the pipeline of `config`; the record names the checked-out commit.
pub(crate) fn run_pipeline(config: &PipelineConfig) -> Result<expgraph::pipeline::PipelineOutcome> {
    let mut outcome = expgraph::pipeline::run(config).context("benchmark pipeline")?;
    outcome.record.git_rev = git_rev();
    Ok(outcome)
}

fn run(name: &str, data: DataSource, c: CommonArgs) -> Result<()> {
    let slug = name.replace('/', "-");
    let work = c.work.clone().unwrap_or_else(|| PathBuf::from("target/xtask").join(&slug));
    let out = c.out.clone().unwrap_or_else(|| work.join("record.json"));
    let outcome = run_pipeline(&pipeline_config(name, data, c, work))?;
    let record = outcome.record;
    expgraph::record::write_json(&out, &record)?;
    println!("{}", record.markdown_table());
    println!("record: {}", out.display());
    if let Some(report) = outcome.report_index {
        println!("report: {}", report.display());
    }
    Ok(())
}

/// The checked-out commit (`unknown` outside a git checkout).
pub(crate) fn git_rev() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cub_sampling_prefers_the_flag_then_the_data_folder_then_shared() {
        let tmp = tempfile::tempdir().unwrap();
        let (data, workspace) = (tmp.path().join("CUB"), tmp.path().join("ws/main"));
        let shared = tmp.path().join("ws/shared/data/annotations/cub-sampling.mat");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&workspace).unwrap();

        // Nothing anywhere: the error says where it looked and how to opt out.
        let e = format!("{:#}", cub_sampling(&data, None, false, &workspace).unwrap_err());
        assert!(
            e.contains("CUB/sampling.mat") && e.contains("cub-sampling.mat") && e.contains("--all-test-objects"),
            "{e}"
        );
        assert_eq!(cub_sampling(&data, None, true, &workspace).unwrap(), None);

        std::fs::create_dir_all(shared.parent().unwrap()).unwrap();
        std::fs::write(&shared, "x").unwrap();
        let found = cub_sampling(&data, None, false, &workspace).unwrap().unwrap();
        assert_eq!(found, std::fs::canonicalize(&shared).unwrap());

        std::fs::write(data.join("sampling.mat"), "x").unwrap();
        let found = cub_sampling(&data, None, false, &workspace).unwrap().unwrap();
        assert_eq!(found, std::fs::canonicalize(data.join("sampling.mat")).unwrap());

        let mine = tmp.path().join("mine.mat");
        let e = format!("{:#}", cub_sampling(&data, Some(mine.clone()), false, &workspace).unwrap_err());
        assert!(e.contains("mine.mat") && e.contains("no such file"), "{e}");
        std::fs::write(&mine, "x").unwrap();
        assert_eq!(cub_sampling(&data, Some(mine.clone()), false, &workspace).unwrap(), Some(mine));
        assert_eq!(cub_sampling(&data, None, true, &workspace).unwrap(), None);
    }

    #[test]
    fn paper_negatives_need_the_fetched_folder_unless_given() {
        let tmp = tempfile::tempdir().unwrap();
        let default = tmp.path().join("data/negatives");
        let given = Some(PathBuf::from("my/negatives"));
        assert_eq!(paper_negatives(given.clone(), &default).unwrap(), given);

        let e = format!("{:#}", paper_negatives(None, &default).unwrap_err());
        assert!(e.contains("fetch-negatives") && e.contains("--negatives DIR"), "{e}");

        std::fs::create_dir_all(&default).unwrap();
        let (list, _) = fetch::Checksums::negatives().unwrap();
        for (name, _) in &list.files[..999] {
            std::fs::write(default.join(name), "").unwrap();
        }
        let e = format!("{:#}", paper_negatives(None, &default).unwrap_err());
        assert!(e.contains("01000.JPEG") && e.contains("fetch-negatives"), "{e}");
        std::fs::write(default.join("01000.JPEG"), "").unwrap();
        assert_eq!(paper_negatives(None, &default).unwrap(), Some(std::fs::canonicalize(&default).unwrap()));
    }

    #[test]
    fn paper_benchmarks_default_to_all_1000_negatives_and_synth_keeps_200() {
        use clap::{Command, FromArgMatches};
        let parse = |cmd: Command, args: &[&str]| cmd.no_binary_name(true).try_get_matches_from(args).unwrap();
        let base = ["--data", "D", "--weights", "W"];
        let cub =
            CubArgs::from_arg_matches(&parse(<CubArgs as clap::Args>::augment_args(Command::new("c")), &base)).unwrap();
        assert_eq!((cub.common.negatives_limit, cub.common.negatives.clone()), (1000, None));
        let pascal =
            PascalArgs::from_arg_matches(&parse(<PascalArgs as clap::Args>::augment_args(Command::new("p")), &base))
                .unwrap();
        assert_eq!(pascal.common.negatives_limit, 1000);
        let ilsvrc =
            IlsvrcArgs::from_arg_matches(&parse(<IlsvrcArgs as clap::Args>::augment_args(Command::new("i")), &base))
                .unwrap();
        assert_eq!(ilsvrc.common.negatives_limit, 1000);
        let args = ["--data", "D", "--weights", "W", "--negatives-limit", "200", "--sampling", "s.mat"];
        let cub =
            CubArgs::from_arg_matches(&parse(<CubArgs as clap::Args>::augment_args(Command::new("c")), &args)).unwrap();
        assert_eq!((cub.common.negatives_limit, cub.sampling), (200, Some(PathBuf::from("s.mat"))));
        let synth =
            SynthArgs::from_arg_matches(&parse(<SynthArgs as clap::Args>::augment_args(Command::new("s")), &base[2..]))
                .unwrap();
        assert_eq!(synth.common.negatives_limit, 200);
        assert_eq!((synth.common.device.as_str(), synth.common.precision.as_str()), ("cpu", "f32"));
        let gpu = ["--weights", "W", "--device", "cuda:1", "--precision", "bf16"];
        let synth =
            SynthArgs::from_arg_matches(&parse(<SynthArgs as clap::Args>::augment_args(Command::new("s")), &gpu))
                .unwrap();
        assert_eq!((synth.common.device.as_str(), synth.common.precision.as_str()), ("cuda:1", "bf16"));
        let e = <SynthArgs as clap::Args>::augment_args(Command::new("s"))
            .no_binary_name(true)
            .try_get_matches_from(["--weights", "W", "--precision", "f64"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--precision") && e.contains("f16"), "{e}");
        let both = ["--data", "D", "--weights", "W", "--sampling", "s.mat", "--all-test-objects"];
        assert!(<CubArgs as clap::Args>::augment_args(Command::new("c"))
            .no_binary_name(true)
            .try_get_matches_from(both)
            .is_err());
    }
}
