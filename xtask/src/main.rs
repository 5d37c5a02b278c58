//! `cargo xtask …`: benchmarks that run the whole pipeline (or feature extraction alone, or the
//! backbone forward against ONNX Runtime: `bench-backbone [--compare-onnxruntime]`) and write a
//! JSON record, the GPU test run, data set fetchers, and the report screenshot. Wired
//! through the `xtask` alias in `.cargo/config.toml`; a GPU build is
//! `cargo run --release -p xtask --features cuda -- …`.

// As the `expgraph` binary's (see crates/expgraph-cli/src/main.rs), so that the benchmarks time
// the backbone as the binary runs it.
#[global_allocator]
static GLOBAL: expgraph_alloc::MiMalloc = expgraph_alloc::MiMalloc;

mod backbone_bench;
mod bench;
#[cfg(test)]
mod cdp;
mod chromium;
mod explore_bench;
mod extract_bench;
mod fetch;
mod finetune_bench;
mod gate;
mod isa_cap;
mod screenshot;
mod test_gpu;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "expgraph project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmark on a generated synthetic part data set (no download needed).
    BenchSynth(bench::SynthArgs),
    /// Time the explorer's pages (`expgraph serve`) under a load test: p50/p99 per page kind.
    BenchExplore(explore_bench::ExploreBenchArgs),
    /// Benchmark on CUB-200-2011 (DIR holds `images.txt`).
    BenchCub(bench::CubArgs),
    /// Benchmark on Pascal-Part (VOC2010 + the authors' `truth_<cat>.mat`).
    BenchPascal(bench::PascalArgs),
    /// Benchmark on ILSVRC 2013 DET Animal-Part.
    BenchIlsvrc(bench::IlsvrcArgs),
    /// Time feature extraction alone (decode, forward, normalize, write) on generated or real
    /// images, optionally against the serial extractor (`--serial`).
    BenchExtract(extract_bench::ExtractBenchArgs),
    /// Time the backbone forward (VGG-16 to conv5_3, ResNet-50 to layer4) on the CPU, with
    /// `--compare-onnxruntime` interleaved with ONNX Runtime on the same graph, weights and input.
    BenchBackbone(backbone_bench::BenchBackboneArgs),
    /// Run the GPU tests (`gpu` in their names) of the crates with a `cuda` feature, built with it.
    TestGpu(test_gpu::TestGpuArgs),
    /// Download CUB-200-2011 and verify its checksum.
    FetchCub(fetch::FetchArgs),
    /// Put the paper's 1000 negative images into DIR/negatives (download or `--from` a local
    /// copy), verified against `datasets/negatives.sha256`.
    FetchNegatives(fetch::FetchNegativesArgs),
    /// Screenshot a report's index.html in headless Chromium.
    Screenshot(screenshot::ScreenshotArgs),
    /// Check a benchmark record: quality checks and the committed baseline (fails on a regression).
    BenchGate(gate::BenchGateArgs),
    /// Check the E-step's instruction count on the fixture layer against its baseline (valgrind).
    WorkGate(gate::WorkGateArgs),
}

fn main() -> anyhow::Result<()> {
    expgraph_alloc::keep_freed_memory();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match Cli::parse().command {
        Command::BenchSynth(a) => bench::synth(a),
        Command::BenchExplore(a) => explore_bench::run(a),
        Command::BenchCub(a) => bench::cub(a),
        Command::BenchPascal(a) => bench::pascal(a),
        Command::BenchIlsvrc(a) => bench::ilsvrc(a),
        Command::BenchExtract(a) => extract_bench::run(a),
        Command::BenchBackbone(a) => backbone_bench::run(a),
        Command::TestGpu(a) => test_gpu::run(a),
        Command::FetchCub(a) => fetch::cub(a),
        Command::FetchNegatives(a) => fetch::negatives(a),
        Command::Screenshot(a) => screenshot::run(a),
        Command::BenchGate(a) => gate::bench_gate(a),
        Command::WorkGate(a) => gate::work_gate(a),
    }
}
