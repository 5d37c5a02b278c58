//! `cargo xtask bench-backbone`: our backbone forward (VGG-16 to `conv5_3`, ResNet-50 to
//! `layer4`) on the CPU, optionally side by side with ONNX Runtime on the same graph, weights and
//! input (`--compare-onnxruntime`). ONNX Runtime runs in a Python process
//! (`benches/onnxruntime/ort_bench.py`) that builds the graph from the same safetensors file,
//! checks its output against ours, and then answers timing requests over stdin/stdout, so that
//! the two engines take turns: per round and batch, K runs of ours in this process, then K runs
//! of ORT (or the other way round: the order alternates). ONNX Runtime is a comparison tool only;
//! no crate depends on it. Writes a JSON record and prints a Markdown table.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use expgraph::backbone::testing::{random_input, BenchNet};
use expgraph::backbone::Backbone;
use expgraph::cache::{serialize_safetensors, OwnedTensor};
use expgraph::record::Host;
use serde::{Deserialize, Serialize};

use crate::bench::git_rev;
use crate::extract_bench::{at_least, DEFAULT_WEIGHTS};
use crate::isa_cap::{Capped, IsaCap};

/// The largest relative L2 error between ORT's output and ours that passes the check.
pub const MAX_REL_L2: f64 = 1e-4;

/// The pause before each engine's turn, so that the other engine's worker threads (ORT's and
/// rayon's spin before they sleep) are idle when the timing starts.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

/// The Python side, relative to the workspace root.
const ORT_SCRIPT: &str = "benches/onnxruntime/ort_bench.py";

/// The scratch virtual environment made without `--python`, relative to the workspace root.
const ORT_VENV: &str = "target/xtask/ort-venv";

/// What the Python side imports (and `pip` installs into the scratch venv).
const ORT_PACKAGES: [&str; 4] = ["onnxruntime", "onnx", "numpy", "safetensors"];

/// `bench-backbone` arguments.
#[derive(clap::Args, Debug)]
pub struct BenchBackboneArgs {
    /// Networks: vgg16 (to conv5_3, pre-ReLU), resnet50 (to layer4, after its ReLU) or all;
    /// repeatable or comma-separated.
    #[arg(long = "model", value_name = "vgg16|resnet50|all", value_delimiter = ',', default_value = "all")]
    pub models: Vec<String>,
    /// Batch sizes, comma-separated; ms per image are reported for each.
    #[arg(long = "batch", value_name = "B,…", value_delimiter = ',', default_value = "1,8", value_parser = at_least(1))]
    pub batches: Vec<usize>,
    /// Threads of both engines: our rayon pool (and candle's gemm) and ORT's
    /// `intra_op_num_threads` [default: RAYON_NUM_THREADS when set, else the number of cores].
    #[arg(long, value_name = "N", value_parser = at_least(1))]
    pub threads: Option<usize>,
    /// Rounds; each times every batch size with both engines, in alternating order.
    #[arg(long, value_name = "R", default_value_t = 5, value_parser = at_least(1))]
    pub rounds: usize,
    /// After the R rounds, more rounds until every batch size has N quiet ones (neither turn
    /// losing more than 2 % of its CPU time to the virtual machine's host), at most 3 × max(R,
    /// N) rounds in all; needs `/proc/stat`.
    #[arg(long, value_name = "N", value_parser = at_least(1))]
    pub quiet_rounds: Option<usize>,
    /// Timed runs per engine, batch size and round [default: 5 at batch 1, 3 at larger batches].
    #[arg(long, value_name = "K", value_parser = at_least(1))]
    pub runs: Option<usize>,
    /// Untimed warm-up runs per engine and batch size, before the first round.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub warmup: usize,
    /// Also time ONNX Runtime on the same graph, weights and input (interleaved with ours), after
    /// checking that its output agrees with ours (relative L2 ≤ 1e-4).
    #[arg(long)]
    pub compare_onnxruntime: bool,
    /// A Python with onnxruntime, onnx, numpy and safetensors [default: the venv
    /// target/xtask/ort-venv of the workspace, created with `python3 -m venv` and `pip install`
    /// when missing].
    #[arg(long, value_name = "PATH", requires = "compare_onnxruntime")]
    pub python: Option<PathBuf>,
    /// Where to write the JSON record [default: target/xtask/bench-backbone.json].
    #[arg(long, value_name = "FILE.json")]
    pub out: Option<PathBuf>,
    /// The instruction set of both engines: native, or avx2 (AVX-512 hidden from every engine
    /// by CPUID faulting, so that an AVX-512 machine times what an AVX2 one runs; the record
    /// says so).
    #[arg(long, value_enum, default_value_t = IsaCap::Native)]
    pub isa: IsaCap,
    /// Input side (the tests use a small one; the record names it).
    #[arg(long, value_name = "PX", default_value_t = 224, value_parser = at_least(32), hide = true)]
    pub input_size: usize,
}

/// Minimum and median of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    pub min: f64,
    pub median: f64,
}

/// The minimum and median of `samples` (the mean of the middle two for an even count); `None`
/// when empty.
pub fn stats(samples: &[f64]) -> Option<Stats> {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = match n {
        0 => return None,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    Some(Stats { min: v[0], median })
}

/// How ORT's output compares with ours (from `ort_bench.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// max |ORT − ours|.
    pub max_abs_diff: f64,
    /// max |ours|.
    pub max_abs_ref: f64,
    /// `max_abs_diff / max_abs_ref`.
    pub max_abs_rel: f64,
    /// ‖ORT − ours‖₂ / ‖ours‖₂.
    pub rel_l2: f64,
}

/// The machine, with the vector extensions that matter to the kernels.
#[derive(Debug, Clone, Serialize)]
pub struct BenchHost {
    #[serde(flatten)]
    pub host: Host,
    /// `avx2`, `avx512f`, `fma`: whether the engines see them (false off x86-64).
    pub isa: BTreeMap<&'static str, bool>,
    /// `avx2` when AVX-512 was hidden from both engines (`--isa avx2`), else `null`.
    pub isa_cap: Option<&'static str>,
}

impl BenchHost {
    fn detect(isa_cap: Option<&'static str>) -> Self {
        BenchHost { host: Host::detect(), isa: isa_flags(), isa_cap }
    }
}

/// `avx2`, `avx512f`, `fma`: whether this process sees them (false off x86-64).
pub(crate) fn isa_flags() -> BTreeMap<&'static str, bool> {
    #[cfg(target_arch = "x86_64")]
    let flags = [
        ("avx2", std::arch::is_x86_feature_detected!("avx2")),
        ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
        ("fma", std::arch::is_x86_feature_detected!("fma")),
    ];
    #[cfg(not(target_arch = "x86_64"))]
    let flags = [("avx2", false), ("avx512f", false), ("fma", false)];
    flags.into_iter().collect()
}

/// The weights both engines read.
#[derive(Debug, Clone, Serialize)]
pub struct WeightsInfo {
    /// The file (a random one lives in a temporary folder, removed afterwards).
    pub path: String,
    /// `real` (the shared pretrained file) or `random`.
    pub kind: &'static str,
    /// The seed of random weights.
    pub seed: Option<u64>,
}

/// The timed runs of one round, milliseconds per batch run.
#[derive(Debug, Clone, Serialize)]
pub struct RoundSamples {
    /// Whether ours ran before ORT in this round.
    pub ours_first: bool,
    pub ours_ms: Vec<f64>,
    pub ort_ms: Option<Vec<f64>>,
    /// The share of the machine's CPU time that its host took away (steal, on a virtual
    /// machine) during each engine's turn; `null` where `/proc/stat` is absent.
    pub ours_steal: Option<f64>,
    pub ort_steal: Option<f64>,
}

impl RoundSamples {
    /// Whether the host was quiet in this round: every turn's steal is known and at most
    /// [`BUSY_STEAL`].
    pub fn quiet(&self) -> bool {
        let calm = |steal: Option<f64>| steal.is_some_and(|s| s <= BUSY_STEAL);
        calm(self.ours_steal) && (self.ort_ms.is_none() || calm(self.ort_steal))
    }

    /// Ours ÷ ORT of this round's medians; `None` without ORT.
    pub fn ratio(&self) -> Option<f64> {
        let ort = stats(self.ort_ms.as_deref()?)?.median;
        (ort > 0.0).then(|| stats(&self.ours_ms).map(|s| s.median / ort)).flatten()
    }
}

/// The rounds of one batch size of [`RoundSamples::quiet`] hosts, and the median of their
/// ratios ([`RoundSamples::ratio`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QuietRounds {
    pub rounds: usize,
    pub ratio: Option<f64>,
}

/// How many of `rounds` were [`RoundSamples::quiet`].
fn quiet_count(rounds: &[RoundSamples]) -> usize {
    rounds.iter().filter(|r| r.quiet()).count()
}

/// The median of the rounds' own ratios ([`RoundSamples::ratio`]); `None` if none has one.
fn median_round_ratio<'a>(rounds: impl Iterator<Item = &'a RoundSamples>) -> Option<f64> {
    stats(&rounds.filter_map(RoundSamples::ratio).collect::<Vec<_>>()).map(|s| s.median)
}

/// Above this share of stolen CPU time in a turn, the host was busy and its timings are suspect:
/// on the 2-core cloud machines, forward passes took up to 1.5× longer in such phases, and not
/// by the same factor for both engines.
pub const BUSY_STEAL: f64 = 0.02;

/// The stolen share of CPU time over the timed turns (see [`RoundSamples::ours_steal`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Steal {
    pub median: f64,
    pub max: f64,
    /// Turns above [`BUSY_STEAL`].
    pub busy_turns: usize,
    pub turns: usize,
}

impl Steal {
    /// Over every turn of `models` that has a value; `None` if none has.
    pub fn over(models: &[ModelResult]) -> Option<Self> {
        let shares: Vec<f64> = models
            .iter()
            .flat_map(|m| &m.batches)
            .flat_map(|b| &b.rounds)
            .flat_map(|r| [r.ours_steal, r.ort_steal])
            .flatten()
            .collect();
        let median = stats(&shares)?.median;
        let max = shares.iter().copied().fold(0.0, f64::max);
        let busy_turns = shares.iter().filter(|&&s| s > BUSY_STEAL).count();
        Some(Steal { median, max, busy_turns, turns: shares.len() })
    }
}

/// Runs one engine's turn; returns its result and the share of CPU time stolen meanwhile.
fn turn<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Option<f64>)> {
    let before = expgraph::io::CpuTicks::now();
    let out = f()?;
    let steal = before.zip(expgraph::io::CpuTicks::now()).and_then(|(b, a)| a.steal_since(&b));
    Ok((out, steal))
}

/// Whether the timing loop stops before round `round` (counted from 0): not before `rounds`
/// rounds; then at once without `quiet`, else once every batch size's `samples` hold `quiet`
/// quiet rounds ([`RoundSamples::quiet`]), or at 3 × max(`rounds`, `quiet`) rounds.
pub fn enough_rounds(round: usize, rounds: usize, quiet: Option<usize>, samples: &[Vec<RoundSamples>]) -> bool {
    if round < rounds {
        return false;
    }
    let Some(wanted) = quiet else { return true };
    round >= 3 * rounds.max(wanted) || samples.iter().all(|s| quiet_count(s) >= wanted)
}

/// One batch size of one model.
#[derive(Debug, Clone, Serialize)]
pub struct BatchResult {
    pub batch: usize,
    /// Timed runs per engine and round.
    pub runs_per_round: usize,
    /// Over all rounds' runs.
    pub ours_ms_per_image: Stats,
    pub ort_ms_per_image: Option<Stats>,
    /// Ours ÷ ORT of the medians (above 1: we are slower).
    pub ratio_median: Option<f64>,
    /// Ours ÷ ORT of the minima.
    pub ratio_min: Option<f64>,
    /// The median over rounds of each round's ratio (ours ÷ ORT of its medians): paired, so a
    /// slow phase of the host that spans a round weighs on both engines' samples of it.
    pub ratio_rounds: Option<f64>,
    /// The same over the rounds in which the host was quiet ([`RoundSamples::quiet`]).
    pub quiet: QuietRounds,
    /// The raw samples, round by round.
    pub rounds: Vec<RoundSamples>,
}

impl BatchResult {
    /// The per-image statistics and ratios of the samples in `rounds`.
    pub fn from_rounds(batch: usize, runs_per_round: usize, rounds: Vec<RoundSamples>) -> Result<Self> {
        let per_image = |ms: &mut dyn Iterator<Item = &f64>| -> Vec<f64> { ms.map(|t| t / batch as f64).collect() };
        let ours = stats(&per_image(&mut rounds.iter().flat_map(|r| &r.ours_ms)))
            .with_context(|| format!("batch {batch}: no timed runs"))?;
        let ort = if rounds.iter().all(|r| r.ort_ms.is_some()) {
            stats(&per_image(&mut rounds.iter().flat_map(|r| r.ort_ms.iter().flatten())))
        } else {
            None
        };
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        Ok(BatchResult {
            batch,
            runs_per_round,
            ours_ms_per_image: ours,
            ort_ms_per_image: ort,
            ratio_median: ort.and_then(|o| ratio(ours.median, o.median)),
            ratio_min: ort.and_then(|o| ratio(ours.min, o.min)),
            ratio_rounds: median_round_ratio(rounds.iter()),
            quiet: QuietRounds {
                rounds: quiet_count(&rounds),
                ratio: median_round_ratio(rounds.iter().filter(|r| r.quiet())),
            },
            rounds,
        })
    }
}

/// One model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelResult {
    /// `vgg16` or `resnet50`.
    pub model: &'static str,
    /// The tap both engines output.
    pub output: &'static str,
    pub weights: WeightsInfo,
    /// ORT against ours on the largest batch (`--compare-onnxruntime`), else `null`.
    pub agreement: Option<Agreement>,
    pub batches: Vec<BatchResult>,
}

/// The JSON record of `bench-backbone`.
#[derive(Debug, Clone, Serialize)]
pub struct BackboneBenchRecord {
    /// Always `backbone`.
    pub bench: &'static str,
    pub git_rev: String,
    pub host: BenchHost,
    /// Threads of each engine.
    pub threads: usize,
    /// `--rounds` (each batch size's `rounds` holds as many or, with `--quiet-rounds`, more).
    pub rounds: usize,
    /// `--quiet-rounds` as given, else `null`.
    pub quiet_rounds: Option<usize>,
    /// `--runs` as given (`null`: the default, 5 at batch 1 and 3 above; see each batch's
    /// `runs_per_round`).
    pub runs: Option<usize>,
    /// Untimed runs per engine and batch before the first round.
    pub warmup: usize,
    /// Input side in pixels.
    pub input_size: usize,
    /// The ONNX Runtime version (`--compare-onnxruntime`), else `null`.
    pub onnxruntime: Option<String>,
    /// The host's steal over all timed turns (`null` where it cannot be read): whether the
    /// machine ran in a quiet phase.
    pub steal: Option<Steal>,
    pub models: Vec<ModelResult>,
}

/// The networks `--model` names, in bench order, each once.
pub fn resolve_models(names: &[String]) -> Result<Vec<BenchNet>> {
    let mut nets = Vec::new();
    for name in names.iter().map(|n| n.trim().to_ascii_lowercase()) {
        if name == "all" {
            nets.extend(BenchNet::ALL);
        } else {
            let all: Vec<&str> = BenchNet::ALL.iter().map(|n| n.name()).collect();
            nets.push(
                BenchNet::from_name(&name)
                    .with_context(|| format!("--model {name}: expected one of {}, or all", all.join(", ")))?,
            );
        }
    }
    nets.sort();
    nets.dedup();
    Ok(nets)
}

/// The batch sizes, each once, in the order given.
fn dedup_batches(batches: &[usize]) -> Vec<usize> {
    let mut out = Vec::new();
    for &b in batches {
        if !out.contains(&b) {
            out.push(b);
        }
    }
    out
}

/// Timed runs per round at `batch` without `--runs`.
pub fn default_runs(batch: usize) -> usize {
    if batch <= 1 {
        5
    } else {
        3
    }
}

/// `--threads`, else a positive `RAYON_NUM_THREADS`, else `cores`.
pub fn resolve_threads(given: Option<usize>, env: Option<&str>, cores: usize) -> usize {
    given.or_else(|| env.and_then(|v| v.trim().parse().ok()).filter(|&n| n > 0)).unwrap_or(cores).max(1)
}

/// Whether ours runs first in `round` at the `batch_index`-th batch size: alternating from
/// round to round (and from batch to batch), so neither engine always follows the other.
pub fn ours_first(round: usize, batch_index: usize) -> bool {
    (round + batch_index).is_multiple_of(2)
}

/// Run `cargo xtask bench-backbone`.
pub fn run(a: BenchBackboneArgs) -> Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".."));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let isa_cap = match crate::isa_cap::apply(a.isa, workspace, &args)? {
        Capped::Here(cap) => cap,
        Capped::Done => return Ok(()),
    };
    let models = resolve_models(&a.models)?;
    let batches = dedup_batches(&a.batches);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads = resolve_threads(a.threads, std::env::var("RAYON_NUM_THREADS").ok().as_deref(), cores);
    use_threads(threads)?;
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("target/xtask/bench-backbone.json"));
    if a.quiet_rounds.is_some() && expgraph::io::CpuTicks::now().is_none() {
        bail!("--quiet-rounds needs the host's steal, from /proc/stat, which cannot be read here");
    }

    let ort_setup = if a.compare_onnxruntime {
        let script = workspace.join(ORT_SCRIPT);
        if !script.is_file() {
            bail!("{} is missing", script.display());
        }
        Some((resolve_python(a.python.as_deref(), workspace)?, script))
    } else {
        None
    };
    let scratch = tempfile::Builder::new().prefix("bench-backbone-").tempdir().context("creating a temp folder")?;
    let device = expgraph::backbone::parse_device("cpu")?;
    let max_batch = batches.iter().copied().max().context("--batch: no batch size")?;

    let mut onnxruntime = None;
    let mut results = Vec::new();
    for net in models {
        let (name, tap) = (net.name(), net.output_tap());
        let weights = model_weights(net, workspace, scratch.path())?;
        eprintln!("{name}: {} weights {}", weights.kind, weights.path);
        let model = net.load_file(Path::new(&weights.path), &device).with_context(|| format!("loading {name}"))?;
        let input = random_input(max_batch, a.input_size, net.seed() + 1, &device)?;
        // Our output on the largest batch: the reference ORT is checked against (and a warm-up).
        let output = model.forward_taps(&input, &[tap]).with_context(|| format!("{name} forward"))?.remove(0);
        let mut ort = match &ort_setup {
            Some((python, script)) => {
                let reference = scratch.path().join(format!("{name}-reference.safetensors"));
                write_tensors(&reference, &[("input".into(), input.clone()), ("output".into(), output)], &[])?;
                eprintln!("{name}: starting ONNX Runtime ({} {})", python.display(), script.display());
                let ort = Ort::start(python, script, net, Path::new(&weights.path), &reference, threads)?;
                onnxruntime.get_or_insert_with(|| ort.hello.onnxruntime.clone());
                Some(ort)
            }
            None => None,
        };
        let agreement = ort.as_ref().map(|o| o.agreement(name)).transpose()?;
        if let Some(ag) = &agreement {
            eprintln!("{name}: ORT agrees with ours: max|Δ|/max {:.2e}, relative L2 {:.2e}", ag.max_abs_rel, ag.rel_l2);
        }

        let inputs =
            batches.iter().map(|&b| Ok(input.narrow(0, 0, b)?.contiguous()?)).collect::<Result<Vec<Tensor>>>()?;
        let runs: Vec<usize> = batches.iter().map(|&b| a.runs.unwrap_or_else(|| default_runs(b))).collect();
        for (x, &batch) in inputs.iter().zip(&batches) {
            time_ours(model.as_ref(), x, tap, a.warmup)?;
            if let Some(ort) = &mut ort {
                ort.time(batch, 0, a.warmup)?;
            }
        }
        let mut samples: Vec<Vec<RoundSamples>> = vec![Vec::new(); batches.len()];
        let mut round = 0;
        while !enough_rounds(round, a.rounds, a.quiet_rounds, &samples) {
            let label = if round < a.rounds {
                format!("{}/{}", round + 1, a.rounds)
            } else {
                format!("{} (for quiet rounds)", round + 1)
            };
            for (i, (x, &batch)) in inputs.iter().zip(&batches).enumerate() {
                let first = ours_first(round, i);
                // Each turn starts after a pause (SETTLE).
                let mut time_ort = || -> Result<(Option<Vec<f64>>, Option<f64>)> {
                    match ort.as_mut() {
                        Some(o) => {
                            std::thread::sleep(SETTLE);
                            let (ms, steal) = turn(|| o.time(batch, runs[i], 0))?;
                            Ok((Some(ms), steal))
                        }
                        None => Ok((None, None)),
                    }
                };
                let (mut ort_ms, mut ort_steal) = (None, None);
                if !first {
                    (ort_ms, ort_steal) = time_ort()?;
                }
                std::thread::sleep(SETTLE);
                let (ours_ms, ours_steal) = turn(|| time_ours(model.as_ref(), x, tap, runs[i]))?;
                if first {
                    (ort_ms, ort_steal) = time_ort()?;
                }
                let busy = [ours_steal, ort_steal].into_iter().flatten().fold(0f64, f64::max);
                eprintln!(
                    "{name} round {label} batch {batch}: ours {:.1} ms/img{}{}",
                    stats(&ours_ms).map_or(0.0, |s| s.median / batch as f64),
                    ort_ms
                        .as_deref()
                        .and_then(stats)
                        .map_or(String::new(), |s| format!(", ORT {:.1} ms/img", s.median / batch as f64)),
                    if busy > BUSY_STEAL {
                        format!(" (busy host: {:.1} % of CPU time stolen)", busy * 100.0)
                    } else {
                        String::new()
                    },
                );
                samples[i].push(RoundSamples { ours_first: first, ours_ms, ort_ms, ours_steal, ort_steal });
            }
            round += 1;
        }
        if let Some(wanted) = a.quiet_rounds {
            for (rounds, batch) in samples.iter().zip(&batches) {
                let quiet = quiet_count(rounds);
                if quiet < wanted {
                    eprintln!(
                        "{name} batch {batch}: only {quiet} quiet round{} of the {wanted} wanted in {} rounds (the host \
                         stayed busy)",
                        if quiet == 1 { "" } else { "s" },
                        rounds.len()
                    );
                }
            }
        }
        if let Some(ort) = ort {
            ort.finish()?;
        }
        let batch_results = batches
            .iter()
            .zip(runs)
            .zip(samples)
            .map(|((&b, k), rounds)| BatchResult::from_rounds(b, k, rounds))
            .collect::<Result<Vec<_>>>()?;
        results.push(ModelResult { model: name, output: tap, weights, agreement, batches: batch_results });
    }

    let record = BackboneBenchRecord {
        bench: "backbone",
        git_rev: git_rev(),
        host: BenchHost::detect(isa_cap),
        threads,
        rounds: a.rounds,
        quiet_rounds: a.quiet_rounds,
        runs: a.runs,
        warmup: a.warmup,
        input_size: a.input_size,
        onnxruntime,
        steal: Steal::over(&results),
        models: results,
    };
    expgraph::record::write_json(&out, &record)?; // atomic; the error names the file
    println!("{}", markdown_table(&record));
    println!("record: {}", out.display());
    Ok(())
}

/// Makes both our rayon pool and candle's gemm (which reads `RAYON_NUM_THREADS`) use `threads`.
fn use_threads(threads: usize) -> Result<()> {
    // Before any thread of this process starts (xtask runs single-threaded until here).
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().context("setting up the rayon pool")?;
    if rayon::current_num_threads() != threads {
        bail!("the rayon pool has {} threads, not {threads}", rayon::current_num_threads());
    }
    Ok(())
}

/// VGG-16: the shared pretrained file when present, else random weights; ResNet-50: random
/// weights (seed 50). Random weights are written into `scratch` so that both engines read them.
fn model_weights(net: BenchNet, workspace: &Path, scratch: &Path) -> Result<WeightsInfo> {
    if net == BenchNet::Vgg16 {
        let real = workspace.join(DEFAULT_WEIGHTS);
        if real.is_file() {
            let path = std::fs::canonicalize(&real).unwrap_or(real);
            return Ok(WeightsInfo { path: path.display().to_string(), kind: "real", seed: None });
        }
        eprintln!("vgg16: {} not found, using random weights", real.display());
    }
    let seed = net.seed();
    let path = scratch.join(format!("{}-random.safetensors", net.name()));
    write_tensors(&path, &net.random_weights(seed)?, &[("seed", seed.to_string())])?;
    Ok(WeightsInfo { path: path.display().to_string(), kind: "random", seed: Some(seed) })
}

/// Writes f32 `tensors` as a safetensors file (atomically).
fn write_tensors(path: &Path, tensors: &[(String, Tensor)], metadata: &[(&str, String)]) -> Result<()> {
    let owned = tensors
        .iter()
        .map(|(n, t)| Ok((n.as_str(), OwnedTensor::f32(t.dims().to_vec(), t.flatten_all()?.to_vec1::<f32>()?))))
        .collect::<Result<Vec<_>>>()?;
    let bytes = serialize_safetensors(owned.iter().map(|(n, t)| (*n, t)), metadata.iter().cloned())?;
    expgraph::io::write_atomic(path, |w| w.write_all(&bytes)).with_context(|| format!("writing {}", path.display()))
}

/// Milliseconds of each of `runs` forward passes of `x` to `tap`.
fn time_ours(model: &dyn Backbone, x: &Tensor, tap: &str, runs: usize) -> Result<Vec<f64>> {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            let out = model.forward_taps(x, &[tap])?;
            drop(out);
            Ok(start.elapsed().as_secs_f64() * 1e3)
        })
        .collect()
}

/// The first line `ort_bench.py --serve` prints.
#[derive(Debug, Deserialize)]
struct OrtHello {
    onnxruntime: String,
    threads: usize,
    agreement: Option<Agreement>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct OrtTimes {
    ms: Vec<f64>,
}

/// A running `ort_bench.py --serve`.
struct Ort {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    hello: OrtHello,
}

impl Ort {
    /// Starts the script, which builds the graph from `weights`, checks it against `reference`
    /// and answers with its first line.
    fn start(
        python: &Path,
        script: &Path,
        net: BenchNet,
        weights: &Path,
        reference: &Path,
        threads: usize,
    ) -> Result<Self> {
        let mut child = Command::new(python)
            .arg(script)
            .arg(weights)
            .args(["--model", net.name(), "--serve", "--threads", &threads.to_string(), "--reference"])
            .arg(reference)
            .arg("--max-rel-l2")
            .arg(MAX_REL_L2.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} {}", python.display(), script.display()))?;
        let stdin = child.stdin.take().context("the ORT process's stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().context("the ORT process's stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line).context("reading the ORT process's first line")?;
        if line.trim().is_empty() {
            let status = child.wait().context("waiting for the ORT process")?;
            bail!(
                "ONNX Runtime ({}) ended ({status}) before checking its {} output; its messages are above",
                script.display(),
                net.name()
            );
        }
        let hello: OrtHello =
            serde_json::from_str(&line).with_context(|| format!("the ORT process's first line {:?}", line.trim()))?;
        if let Some(e) = &hello.error {
            let _ = child.wait();
            bail!("ONNX Runtime on {}: {e}", net.name());
        }
        if hello.threads != threads {
            bail!("the ORT process runs {} threads, not {threads}", hello.threads);
        }
        Ok(Ort { child, stdin, stdout, hello })
    }

    /// The agreement of ORT with our output; an error above [`MAX_REL_L2`].
    fn agreement(&self, name: &str) -> Result<Agreement> {
        let ag = self.hello.agreement.clone().context("the ORT process reported no agreement")?;
        if ag.rel_l2.is_nan() || ag.rel_l2 > MAX_REL_L2 {
            bail!(
                "ONNX Runtime disagrees with our {name} output: relative L2 {:.3e} > {MAX_REL_L2:e} (max|Δ| {:.3e} of \
                 max {:.3e}); the graphs differ",
                ag.rel_l2,
                ag.max_abs_diff,
                ag.max_abs_ref
            );
        }
        Ok(ag)
    }

    /// Milliseconds of each of `runs` ORT runs at `batch` after `warmup` untimed ones.
    fn time(&mut self, batch: usize, runs: usize, warmup: usize) -> Result<Vec<f64>> {
        let request = serde_json::json!({ "batch": batch, "runs": runs, "warmup": warmup });
        writeln!(self.stdin, "{request}").and_then(|()| self.stdin.flush()).context("sending a request to ORT")?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).context("reading ORT's answer")?;
        if line.trim().is_empty() {
            bail!("the ORT process ended while timing batch {batch}; its messages are above");
        }
        let times: OrtTimes = serde_json::from_str(&line).with_context(|| format!("ORT's answer {:?}", line.trim()))?;
        if times.ms.len() != runs {
            bail!("ORT timed {} runs, not {runs}", times.ms.len());
        }
        Ok(times.ms)
    }

    /// Closes stdin (the script ends on EOF) and waits for it.
    fn finish(self) -> Result<()> {
        let Ort { mut child, stdin, .. } = self;
        drop(stdin);
        let status = child.wait().context("waiting for the ORT process")?;
        if !status.success() {
            bail!("the ORT process ended with {status}");
        }
        Ok(())
    }
}

/// `--python`, checked; else the scratch venv of the workspace, made when missing.
fn resolve_python(given: Option<&Path>, workspace: &Path) -> Result<PathBuf> {
    if let Some(python) = given {
        check_python(python).with_context(|| format!("--python {}", python.display()))?;
        return Ok(python.to_path_buf());
    }
    let venv = workspace.join(ORT_VENV);
    let python = venv.join("bin").join("python");
    if python.is_file() && check_python(&python).is_ok() {
        eprintln!("ONNX Runtime: reusing the venv {}", venv.display());
        return Ok(python);
    }
    if !python.is_file() {
        eprintln!("ONNX Runtime: creating a venv: python3 -m venv {}", venv.display());
        run_step(Command::new("python3").arg("-m").arg("venv").arg(&venv)).with_context(|| {
            format!(
                "step 1/2, `python3 -m venv {}` failed (on Debian/Ubuntu: apt-get install python3-venv); or pass \
                 --python PATH",
                venv.display()
            )
        })?;
    }
    eprintln!("ONNX Runtime: {} -m pip install {}", python.display(), ORT_PACKAGES.join(" "));
    run_step(Command::new(&python).args(["-m", "pip", "install", "--disable-pip-version-check"]).args(ORT_PACKAGES))
        .with_context(|| {
            format!(
                "step 2/2, `{} -m pip install {}` failed (no network?); or pass --python PATH",
                python.display(),
                ORT_PACKAGES.join(" ")
            )
        })?;
    check_python(&python).context("after pip install")?;
    Ok(python)
}

/// Runs `cmd` with its output on our stderr; an error unless it succeeds.
fn run_step(cmd: &mut Command) -> Result<()> {
    let status = cmd.stdout(std::io::stderr()).stderr(Stdio::inherit()).status().context("cannot start it")?;
    if !status.success() {
        bail!("it ended with {status}");
    }
    Ok(())
}

/// That `python` runs and imports the packages.
fn check_python(python: &Path) -> Result<()> {
    let import = format!("import {}", ORT_PACKAGES.join(", "));
    let out = Command::new(python)
        .args(["-c", &import])
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!(
            "{} cannot `{import}` ({}); install them with `pip install {}`",
            python.display(),
            err.lines().last().unwrap_or("").trim(),
            ORT_PACKAGES.join(" ")
        );
    }
    Ok(())
}

/// The record as a Markdown table: a row per model and batch size.
pub fn markdown_table(r: &BackboneBenchRecord) -> String {
    let ort = r.onnxruntime.as_deref().map_or("ours only".to_string(), |v| format!("ONNX Runtime {v}"));
    let host = &r.host.host;
    let cpu = match (host.family, host.model) {
        (Some(f), Some(m)) => format!("{} (family {f}, model {m})", host.cpu),
        _ => host.cpu.clone(),
    };
    let cap = r.host.isa_cap.map_or(String::new(), |isa| format!(" (capped to {isa}: AVX-512 hidden from both)"));
    let mut s = format!(
        "bench-backbone: {} threads, {} rounds, input {px}×{px}, {ort}, {cpu}{cap}; ms per image (min and median over \
         all rounds' runs); per round: the median of each round's ratio of medians; quiet rounds: the same over the \
         rounds in which neither turn lost more than {busy:.0} % of its CPU time to the host\n\n\
         | model | weights | batch | runs | ours median | ORT median | ours / ORT | ours min | ORT min | ours / ORT (min) \
         | ours / ORT (per round) | quiet rounds |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        r.threads,
        r.rounds,
        px = r.input_size,
        busy = BUSY_STEAL * 100.0,
    );
    let num = |x: Option<f64>, digits: usize| x.map_or_else(|| "–".to_string(), |x| format!("{x:.digits$}"));
    for m in &r.models {
        for b in &m.batches {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.1} | {} | {} | {:.1} | {} | {} | {} | {} ({} of {}) |\n",
                m.model,
                m.weights.kind,
                b.batch,
                b.runs_per_round * b.rounds.len(),
                b.ours_ms_per_image.median,
                num(b.ort_ms_per_image.map(|o| o.median), 1),
                num(b.ratio_median, 2),
                b.ours_ms_per_image.min,
                num(b.ort_ms_per_image.map(|o| o.min), 1),
                num(b.ratio_min, 2),
                num(b.ratio_rounds, 2),
                num(b.quiet.ratio, 2),
                b.quiet.rounds,
                b.rounds.len(),
            ));
        }
    }
    if let Some(st) = &r.steal {
        s.push_str(&format!(
            "\nHost steal (CPU time the virtual machine's host took away) over the {} timed turns: median {:.1} %, \
             at most {:.1} %{}",
            st.turns,
            st.median * 100.0,
            st.max * 100.0,
            if st.busy_turns > 0 {
                format!(
                    "; {} turn{} above {:.0} % (the host busy: its ratios may not hold in a quiet phase)",
                    st.busy_turns,
                    if st.busy_turns == 1 { "" } else { "s" },
                    BUSY_STEAL * 100.0
                )
            } else {
                String::new()
            }
        ));
    }
    for m in &r.models {
        if let Some(a) = &m.agreement {
            s.push_str(&format!(
                "\n{} `{}`: ORT vs ours max|Δ|/max {:.1e} (max|Δ| {:.2e} of {:.3}), relative L2 {:.1e}",
                m.model, m.output, a.max_abs_rel, a.max_abs_diff, a.max_abs_ref, a.rel_l2
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchBackboneArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchBackboneArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench-backbone").chain(args.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn defaults_and_flags_parse() {
        let a = parse(&[]).unwrap();
        assert_eq!((a.models.clone(), a.batches.clone()), (vec!["all".to_string()], vec![1, 8]));
        assert_eq!((a.threads, a.rounds, a.runs, a.warmup, a.input_size), (None, 5, None, 2, 224));
        assert_eq!((a.quiet_rounds, parse(&["--quiet-rounds", "7"]).unwrap().quiet_rounds), (None, Some(7)));
        assert!(!a.compare_onnxruntime && a.python.is_none() && a.out.is_none());
        assert_eq!(a.isa, IsaCap::Native);
        assert_eq!(resolve_models(&a.models).unwrap(), BenchNet::ALL);
        assert_eq!(parse(&["--isa", "avx2"]).unwrap().isa, IsaCap::Avx2);

        let a = parse(&[
            "--model",
            "resnet50",
            "--model",
            "vgg16,resnet50",
            "--batch",
            "2,4",
            "--threads",
            "3",
            "--rounds",
            "2",
            "--runs",
            "7",
            "--compare-onnxruntime",
            "--python",
            "/x/python",
            "--out",
            "r.json",
        ])
        .unwrap();
        assert_eq!(resolve_models(&a.models).unwrap(), vec![BenchNet::Vgg16, BenchNet::ResNet50]);
        assert_eq!((a.batches.clone(), a.threads, a.rounds, a.runs), (vec![2, 4], Some(3), 2, Some(7)));
        assert!(a.compare_onnxruntime);
        assert_eq!((a.python.unwrap(), a.out.unwrap()), (PathBuf::from("/x/python"), PathBuf::from("r.json")));
    }

    #[test]
    fn bad_flags_are_rejected_clearly() {
        for bad in [
            &["--batch", "0"][..],
            &["--rounds", "0"],
            &["--runs", "x"],
            &["--threads", "0"],
            &["--isa", "sse2"],
            &["--quiet-rounds", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        // --python only means something with --compare-onnxruntime.
        assert!(parse(&["--python", "/x/python"]).is_err());
        let e = format!("{:#}", resolve_models(&["resnet18".to_string()]).unwrap_err());
        assert!(e.contains("--model resnet18") && e.contains("vgg16, resnet50, or all"), "{e}");
        assert_eq!(resolve_models(&[" ALL ".into(), "vgg16".into()]).unwrap(), BenchNet::ALL);
    }

    #[test]
    fn threads_runs_batches_and_the_order_of_engines() {
        assert_eq!(resolve_threads(Some(3), Some("2"), 8), 3);
        assert_eq!(resolve_threads(None, Some("2"), 8), 2);
        assert_eq!(resolve_threads(None, Some("0"), 8), 8);
        assert_eq!(resolve_threads(None, Some("x"), 8), 8);
        assert_eq!(resolve_threads(None, None, 4), 4);
        assert_eq!((default_runs(1), default_runs(8)), (5, 3));
        assert_eq!(dedup_batches(&[8, 1, 8]), vec![8, 1]);
        // Each batch size alternates from round to round; within a round, batch sizes alternate.
        for b in 0..3 {
            assert_ne!(ours_first(0, b), ours_first(1, b));
            assert_eq!(ours_first(0, b), ours_first(2, b));
        }
        assert_ne!(ours_first(0, 0), ours_first(0, 1));
    }

    #[test]
    fn min_and_median() {
        assert_eq!(stats(&[]), None);
        assert_eq!(stats(&[4.0]), Some(Stats { min: 4.0, median: 4.0 }));
        assert_eq!(stats(&[5.0, 1.0, 3.0]), Some(Stats { min: 1.0, median: 3.0 }));
        assert_eq!(stats(&[4.0, 1.0, 3.0, 10.0]), Some(Stats { min: 1.0, median: 3.5 }));
    }

    fn record(with_ort: bool) -> BackboneBenchRecord {
        let round = |ours_first, ours_ms: [f64; 2], ort_ms: [f64; 2], steal: [f64; 2]| RoundSamples {
            ours_first,
            ours_ms: ours_ms.to_vec(),
            ort_ms: with_ort.then(|| ort_ms.to_vec()),
            ours_steal: Some(steal[0]),
            ort_steal: with_ort.then_some(steal[1]),
        };
        let rounds = vec![
            round(true, [20.0, 24.0], [10.0, 8.0], [0.001, 0.004]),
            round(false, [22.0, 30.0], [12.0, 9.0], [0.05, 0.003]),
        ];
        let batch = BatchResult::from_rounds(2, 2, rounds).unwrap();
        let models = vec![ModelResult {
            model: "resnet50",
            output: "layer4",
            weights: WeightsInfo { path: "/tmp/w".into(), kind: "random", seed: Some(50) },
            agreement: with_ort.then_some(Agreement {
                max_abs_diff: 6e-5,
                max_abs_ref: 61.0,
                max_abs_rel: 1e-6,
                rel_l2: 9e-7,
            }),
            batches: vec![batch],
        }];
        BackboneBenchRecord {
            bench: "backbone",
            git_rev: "r".into(),
            host: BenchHost {
                host: Host { cpu: "c".into(), family: Some(25), model: Some(1), cores: 2, mem: 1 },
                isa: [("avx2", true), ("avx512f", false), ("fma", true)].into_iter().collect(),
                isa_cap: with_ort.then_some("avx2"),
            },
            threads: 2,
            rounds: 2,
            quiet_rounds: None,
            runs: None,
            warmup: 2,
            input_size: 224,
            onnxruntime: with_ort.then(|| "1.32.0".to_string()),
            steal: Steal::over(&models),
            models,
        }
    }

    #[test]
    fn the_record_has_per_image_stats_and_ratios() {
        let r = record(true);
        let b = &r.models[0].batches[0];
        // ms per batch of 2: ours 20, 22, 24, 30 → per image 10, 11, 12, 15; ORT 8, 9, 10, 12 → 4 … 6.
        assert_eq!(b.ours_ms_per_image, Stats { min: 10.0, median: 11.5 });
        assert_eq!(b.ort_ms_per_image, Some(Stats { min: 4.0, median: 4.75 }));
        assert_eq!((b.ratio_min, b.ratio_median.map(|x| (x * 1e6).round() / 1e6)), (Some(2.5), Some(2.421053)));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["bench"], "backbone");
        assert_eq!((json["host"]["cpu"].as_str(), json["host"]["isa"]["avx2"].as_bool()), (Some("c"), Some(true)));
        assert_eq!(json["onnxruntime"], "1.32.0");
        assert_eq!(json["host"]["isa_cap"], "avx2");
        let m = &json["models"][0];
        assert_eq!((m["model"].as_str(), m["weights"]["kind"].as_str()), (Some("resnet50"), Some("random")));
        assert_eq!(m["agreement"]["rel_l2"], 9e-7);
        assert_eq!(m["batches"][0]["ours_ms_per_image"]["median"], 11.5);
        assert_eq!(m["batches"][0]["rounds"][1]["ours_first"], false);

        let table = markdown_table(&r);
        // Per round: 22 ÷ 9 (steal 0.1 % and 0.4 %: quiet) and 26 ÷ 10.5 (ours 5 %: busy).
        let (r1, r2) = (22.0 / 9.0, 26.0 / 10.5);
        assert_eq!(b.ratio_rounds, Some((r1 + r2) / 2.0));
        assert_eq!(b.quiet, QuietRounds { rounds: 1, ratio: Some(r1) });
        assert_eq!((m["batches"][0]["quiet"]["rounds"].as_u64(), json["quiet_rounds"].is_null()), (Some(1), true));
        assert!(
            table.contains(
                "| resnet50 | random | 2 | 4 | 11.5 | 4.8 | 2.42 | 10.0 | 4.0 | 2.50 | 2.46 | 2.44 (1 of 2) |"
            ),
            "{table}"
        );
        assert!(table.contains("relative L2 9.0e-7"), "{table}");
        assert!(table.contains("(capped to avx2: AVX-512 hidden from both)"), "{table}");
        assert!(table.contains(", c (family 25, model 1) (capped"), "{table}");
        // Steal per turn: ours 0.1 %, 5 %; ORT 0.4 %, 0.3 %.
        assert_eq!(m["batches"][0]["rounds"][1]["ours_steal"], 0.05);
        assert_eq!(r.steal, Some(Steal { median: 0.0035, max: 0.05, busy_turns: 1, turns: 4 }));
        assert!(
            table.contains("4 timed turns: median 0.4 %, at most 5.0 %; 1 turn above 2 % (the host busy"),
            "{table}"
        );
    }

    #[test]
    fn without_ort_the_ratios_are_null() {
        let r = record(false);
        let b = &r.models[0].batches[0];
        assert_eq!((b.ort_ms_per_image, b.ratio_median, b.ratio_min), (None, None, None));
        let json = serde_json::to_value(&r).unwrap();
        let jb = &json["models"][0]["batches"][0];
        assert!(jb["ratio_median"].is_null() && jb["ort_ms_per_image"].is_null() && json["onnxruntime"].is_null());
        assert!(json["models"][0]["agreement"].is_null());
        let table = markdown_table(&r);
        assert!(
            table.contains("| resnet50 | random | 2 | 4 | 11.5 | – | – | 10.0 | – | – | – | – (1 of 2) |"),
            "{table}"
        );
        assert_eq!((b.ratio_rounds, b.quiet), (None, QuietRounds { rounds: 1, ratio: None }));
        assert!(table.contains("ours only") && !table.contains("capped"), "{table}");
        assert!(json["host"]["isa_cap"].is_null());
        // Ours' turns only: 0.1 % and 5 %.
        assert_eq!(r.steal.map(|s| (s.turns, s.busy_turns)), Some((2, 1)));
        assert!(jb["rounds"][0]["ort_steal"].is_null());
    }

    #[test]
    fn quiet_rounds_and_when_the_rounds_end() {
        let round = |ours_steal: Option<f64>, ort_steal: Option<f64>| RoundSamples {
            ours_first: true,
            ours_ms: vec![3.0, 1.0, 2.0],
            ort_ms: Some(vec![4.0]),
            ours_steal,
            ort_steal,
        };
        // Quiet only when both turns' steal is known and at most 2 %.
        assert!(round(Some(0.0), Some(BUSY_STEAL)).quiet());
        assert!(!round(Some(0.021), Some(0.0)).quiet() && !round(Some(0.0), Some(0.03)).quiet());
        assert!(!round(None, Some(0.0)).quiet() && !round(Some(0.0), None).quiet());
        assert_eq!(round(None, None).ratio(), Some(0.5));
        assert!(RoundSamples { ort_ms: None, ..round(Some(0.0), None) }.quiet());
        assert_eq!(RoundSamples { ort_ms: Some(vec![0.0]), ..round(None, None) }.ratio(), None);

        let (quiet, busy) = (round(Some(0.0), Some(0.0)), round(Some(0.1), Some(0.0)));
        // Without --quiet-rounds: exactly R rounds.
        assert!(!enough_rounds(2, 3, None, &[]) && enough_rounds(3, 3, None, &[]));
        // With it: on until every batch size has N quiet rounds, at most 3 × max(R, N) in all.
        let two_batches = |a: Vec<RoundSamples>, b: Vec<RoundSamples>| vec![a, b];
        let s = two_batches(vec![quiet.clone(), busy.clone()], vec![quiet.clone(), quiet.clone()]);
        assert!(!enough_rounds(1, 3, Some(2), &s) && !enough_rounds(3, 2, Some(2), &s));
        let s = two_batches(vec![quiet.clone(), busy.clone(), quiet.clone()], vec![quiet.clone(); 3]);
        assert!(enough_rounds(3, 2, Some(2), &s) && !enough_rounds(2, 3, Some(2), &s));
        let s = two_batches(vec![busy.clone(); 9], vec![quiet.clone(); 9]);
        assert!(!enough_rounds(8, 3, Some(2), &s) && enough_rounds(9, 3, Some(2), &s));
        assert!(!enough_rounds(11, 3, Some(4), &s) && enough_rounds(12, 3, Some(4), &s));
    }

    #[test]
    fn a_python_that_cannot_run_is_named() {
        let e = format!("{:#}", resolve_python(Some(Path::new("/nonexistent/python")), Path::new(".")).unwrap_err());
        assert!(e.contains("--python /nonexistent/python") && e.contains("cannot run"), "{e}");
    }
}
