//! Interleaved old-vs-new timing of the CPU fast path (noise-robust on a shared machine: both
//! variants run in turn in every round, and the report gives the median of per-round ratios).
//!
//! `cargo run --release -p expgraph-backbone --example conv_speed -- [rounds]` (RAYON_NUM_THREADS
//! sets the threads). Prints, per VGG-16 layer shape, the im2col + matmul kernel against Winograd,
//! then the whole forward to conv5_3 (real weights when `EXPGRAPH_SHARED`/`../shared` has them)
//! at batch 1 and 8, im2col everywhere against the default (Winograd in every layer).
//! Second argument: `layers` (kernels only), `winograd` (the new kernels only, for profiling),
//! `resnet` (ResNet-50 to layer4, random weights, all-gemm against the default), `resnet-packed`
//! (ResNet-50, the `gemm` crate's product against the packed one, both with Winograd; under
//! `LD_PRELOAD=target/xtask/libisacap.so`, see `cargo xtask bench-backbone --isa avx2`, both on
//! AVX2), `spin` and
//! `spin-vgg` (ResNet-50 or VGG-16, the other workers sleeping against spinning), `profile` (only
//! the default VGG-16 forward, `rounds` times; `resnet-profile` the same for ResNet-50), `stock` (VGG-16, candle's `conv2d` against the
//! default), `resnet-layers` (ResNet-50's default forward to layer4, random weights, timed per
//! convolution through the backbone's trace-level `conv` spans, each one's median over the rounds
//! summed by layer shape; `B=8` in
//! the environment sets the batch, `KERNEL=avx2` the packed kernel's AVX2 tiles on an AVX-512
//! CPU). ONNX Runtime's profiler gives the same table for its side:
//! `ort_bench.py --model resnet50 WEIGHTS --profile-layers` (benches/onnxruntime).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::{Device, Tensor};
use expgraph_backbone::kernels::{im2col_conv3x3, im2col_weight, set_spinning, GemmKernel, Winograd3x3};
use expgraph_backbone::{Backbone, ResNet, ResNetDepth, Vgg16};

// As the `expgraph` binary: mimalloc, keeping freed memory (crates/expgraph-alloc).
#[global_allocator]
static GLOBAL: expgraph_alloc::MiMalloc = expgraph_alloc::MiMalloc;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `a` and `b` alternately for `rounds` rounds; returns (median a, median b, median a/b), seconds.
fn interleave(rounds: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64, f64) {
    a();
    b();
    let (mut ta, mut tb, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let time = |f: &mut dyn FnMut()| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        };
        // Alternate which goes first, so neither always gets the warmer cache.
        let (x, y) = if round % 2 == 0 {
            let x = time(&mut a);
            (x, time(&mut b))
        } else {
            let y = time(&mut b);
            (time(&mut a), y)
        };
        ta.push(x);
        tb.push(y);
        ratio.push(x / y);
    }
    (median(ta), median(tb), median(ratio))
}

/// A convolution's shape, from the fields of the backbone's `conv` span; sorts by map side
/// (largest first), then kernel, stride and channels.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct ConvShape {
    side: std::cmp::Reverse<u64>,
    kernel: u64,
    stride: u64,
    c_in: u64,
    c_out: u64,
    residual: bool,
    winograd: bool,
}

impl tracing::field::Visit for ConvShape {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        match field.name() {
            "kernel" => self.kernel = value,
            "stride" => self.stride = value,
            "c_in" => self.c_in = value,
            "c_out" => self.c_out = value,
            "side" => self.side = std::cmp::Reverse(value),
            _ => {}
        }
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        match field.name() {
            "residual" => self.residual = value,
            "winograd" => self.winograd = value,
            _ => {}
        }
    }

    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

/// The `conv` spans closed so far, in order: each one's shape and seconds inside.
type ConvLog = Arc<Mutex<Vec<(ConvShape, f64)>>>;

/// A tracing layer that logs the time spent inside each of the backbone's `conv` spans.
struct ConvTimes(ConvLog);

/// A `conv` span's shape and when it was entered.
struct OpenConv(ConvShape, Option<Instant>);

impl<S> tracing_subscriber::Layer<S> for ConvTimes
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() != "conv" {
            return;
        }
        let mut shape = ConvShape::default();
        attrs.record(&mut shape);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(OpenConv(shape, None));
        }
    }

    fn on_enter(&self, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(open) = ext.get_mut::<OpenConv>() {
            open.1 = Some(Instant::now());
        }
    }

    fn on_exit(&self, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        let Some(OpenConv(shape, Some(start))) = ext.get_mut::<OpenConv>() else { return };
        let seconds = start.elapsed().as_secs_f64();
        self.0.lock().expect("timing lock").push((shape.clone(), seconds));
    }
}

/// `resnet-layers`: ResNet-50's default forward, timed per convolution: each convolution's
/// median over the rounds (a forward calls them in a fixed order), summed by shape, as
/// `ort_bench.py --profile-layers` gives ORT's nodes (medians, not means: a host that stalls
/// now and then inflates a mean).
fn resnet_layers(rounds: usize, dev: &Device) -> Result<(), Box<dyn std::error::Error>> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;
    let batch: usize = std::env::var("B").ok().map(|b| b.parse()).transpose()?.unwrap_or(1);
    let log = ConvLog::default();
    let filter = tracing_subscriber::filter::Targets::new().with_target("expgraph_backbone", tracing::Level::TRACE);
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(ConvTimes(log.clone()).with_filter(filter)),
    )?;
    let model = ResNet::random(ResNetDepth::R50, 1, 50, dev)?;
    let (model, kernel) = match std::env::var("KERNEL").as_deref() {
        Ok("avx2") => (model.with_gemm_kernel(GemmKernel::PackedAvx2)?, "the AVX2 tiles"),
        Ok(other) => return Err(format!("KERNEL={other}: only `avx2` is known").into()),
        Err(_) => (model, "the default kernels"),
    };
    let x = Tensor::randn(0f32, 1.0, (batch, 3, 224, 224), dev)?;
    for _ in 0..3 {
        model.forward_taps(&x, &["layer4"])?;
    }
    log.lock().expect("timing lock").clear();
    let (mut forwards, mut convs) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        let start = Instant::now();
        model.forward_taps(&x, &["layer4"])?;
        forwards.push(start.elapsed().as_secs_f64());
        convs.push(std::mem::take(&mut *log.lock().expect("timing lock")));
    }
    if convs.iter().any(|round| round.len() != convs[0].len()) {
        return Err("the forward passes ran different numbers of convolutions".into());
    }
    let per_image = |s: f64| s * 1e3 / batch as f64;
    let mut by_shape: BTreeMap<ConvShape, (f64, usize)> = BTreeMap::new();
    for (i, (shape, _)) in convs[0].iter().enumerate() {
        let entry = by_shape.entry(shape.clone()).or_default();
        entry.0 += median(convs.iter().map(|round| round[i].1).collect());
        entry.1 += 1;
    }
    println!(
        "ResNet-50 to layer4, batch {batch}, {} threads, {rounds} rounds, {kernel}; medians over the rounds, ms per image",
        rayon::current_num_threads()
    );
    println!("| kernel/stride | channels | side | per forward | ms | ms each |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    let mut sum = 0.0;
    for (shape, &(seconds, count)) in &by_shape {
        let ms = per_image(seconds);
        sum += ms;
        let notes = match (shape.residual, shape.winograd) {
            (true, _) => " (+ residual)",
            (_, true) => " (Winograd)",
            _ => "",
        };
        println!(
            "| {k}×{k}/{s} | {}→{}{notes} | {} | {count} | {ms:.3} | {:.3} |",
            shape.c_in,
            shape.c_out,
            shape.side.0,
            ms / count as f64,
            k = shape.kernel,
            s = shape.stride,
        );
    }
    println!("convolutions {sum:.2} ms of the forward's {:.2} ms per image", per_image(median(forwards)));
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    expgraph_alloc::keep_freed_memory();
    let rounds: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let mode = std::env::args().nth(2).unwrap_or_default();
    let only_layers = mode == "layers" || mode == "winograd";
    if mode == "resnet" || mode == "resnet-packed" {
        let new = ResNet::random(ResNetDepth::R50, 1, 50, &Device::Cpu)?;
        let old = ResNet::random(ResNetDepth::R50, 1, 50, &Device::Cpu)?;
        let (old, names) = if mode == "resnet" {
            (old.with_winograd(false)?, ("gemm", "winograd"))
        } else {
            (old.with_gemm_kernel(GemmKernel::Portable)?, ("portable", "packed"))
        };
        for batch in [1usize, 8] {
            let x = Tensor::randn(0f32, 1.0, (batch, 3, 224, 224), &Device::Cpu)?;
            let rounds = if batch == 1 { rounds } else { rounds.div_ceil(4) };
            let (ta, tb, r) = interleave(
                rounds,
                || drop(old.forward_taps(&x, &["layer4"]).expect("old")),
                || drop(new.forward_taps(&x, &["layer4"]).expect("new")),
            );
            println!(
                "resnet50 to layer4, batch {batch}: {} {:.1} ms/img, {} {:.1} ms/img, old/new {r:.2}",
                names.0,
                ta * 1e3 / batch as f64,
                names.1,
                tb * 1e3 / batch as f64
            );
        }
        return Ok(());
    }
    // `winograd`: only the new kernel runs (for profiling it alone).
    let skip_old = mode == "winograd";
    let dev = Device::Cpu;
    if mode == "stock" {
        // candle's stock conv2d against the default, VGG-16 at batch 1 (random weights).
        let new = Vgg16::random(1, 0, &dev)?;
        let stock = Vgg16::random(1, 0, &dev)?.with_conv_impl(expgraph_backbone::ConvImpl::Candle)?;
        let x = Tensor::randn(0f32, 50.0, (1, 3, 224, 224), &dev)?;
        let (ta, tb, r) = interleave(
            rounds,
            || drop(stock.forward_taps(&x, &["conv5_3"]).expect("stock")),
            || drop(new.forward_taps(&x, &["conv5_3"]).expect("new")),
        );
        println!(
            "vgg16 to conv5_3, batch 1: candle conv2d {:.1} ms, winograd {:.1} ms, old/new {r:.2}",
            ta * 1e3,
            tb * 1e3
        );
        return Ok(());
    }
    if mode == "spin" || mode == "spin-vgg" {
        // The forward with the other workers spinning (the default) against sleeping.
        let model: Box<dyn Backbone> = if mode == "spin" {
            Box::new(ResNet::random(ResNetDepth::R50, 1, 50, &dev)?)
        } else {
            Box::new(Vgg16::random(1, 0, &dev)?)
        };
        let tap = if mode == "spin" { "layer4" } else { "conv5_3" };
        for batch in [1usize, 8] {
            let x = Tensor::randn(0f32, 1.0, (batch, 3, 224, 224), &dev)?;
            let rounds = if batch == 1 { rounds } else { rounds.div_ceil(4) };
            let forward = |spin: bool| {
                set_spinning(spin);
                drop(model.forward_taps(&x, &[tap]).expect("forward"));
            };
            let (ta, tb, r) = interleave(rounds, || forward(false), || forward(true));
            println!(
                "{tap}, batch {batch}: sleeping {:.1} ms/img, spinning {:.1} ms/img, old/new {r:.3}",
                ta * 1e3 / batch as f64,
                tb * 1e3 / batch as f64
            );
        }
        set_spinning(true);
        return Ok(());
    }
    if mode == "resnet-layers" {
        return resnet_layers(rounds, &dev);
    }
    if mode == "resnet-profile" {
        // The default ResNet-50 forward to layer4 alone, `rounds` times (for a profiler).
        let model = ResNet::random(ResNetDepth::R50, 1, 50, &dev)?;
        let x = Tensor::randn(0f32, 1.0, (1, 3, 224, 224), &dev)?;
        for _ in 0..rounds {
            model.forward_taps(&x, &["layer4"])?;
        }
        return Ok(());
    }
    if mode == "profile" {
        // The default VGG-16 forward alone, `rounds` times (for a profiler).
        let model = Vgg16::random(1, 0, &dev)?;
        let x = Tensor::randn(0f32, 50.0, (1, 3, 224, 224), &dev)?;
        for _ in 0..rounds {
            model.forward_taps(&x, &["conv5_3"])?;
        }
        return Ok(());
    }
    println!("threads: {}", rayon::current_num_threads());
    let shapes = [
        ("conv1_1", 3, 64, 224),
        ("conv1_2", 64, 64, 224),
        ("conv2_1", 64, 128, 112),
        ("conv2_2", 128, 128, 112),
        ("conv3_1", 128, 256, 56),
        ("conv3_2", 256, 256, 56),
        ("conv4_1", 256, 512, 28),
        ("conv4_2", 512, 512, 28),
        ("conv5_2", 512, 512, 14),
    ];
    for (name, c_in, c_out, side) in shapes {
        let x = Tensor::randn(0f32, 1.0, (1, side, side, c_in), &dev)?;
        let w = Tensor::randn(0f32, 0.05, (c_out, c_in, 3, 3), &dev)?;
        let b = Tensor::randn(0f32, 0.1, c_out, &dev)?;
        let gw = im2col_weight(&w)?;
        let wino = Winograd3x3::new(&w, &b)?;
        let gflop = 2.0 * (side * side * c_in * c_out * 9) as f64 / 1e9;
        let (ta, tb, r) = interleave(
            rounds,
            || {
                if !skip_old {
                    drop(im2col_conv3x3(&x, &gw, &b, true).expect("im2col"))
                }
            },
            || drop(wino.forward(&x, true).expect("winograd")),
        );
        println!(
            "{name} {c_in}->{c_out}@{side}: im2col {:.2} ms ({:.0} GFLOP/s), winograd {:.2} ms ({:.0} eff. GFLOP/s), old/new {r:.2}",
            ta * 1e3,
            gflop / ta,
            tb * 1e3,
            gflop / tb
        );
    }
    if only_layers {
        return Ok(());
    }
    let shared = std::env::var_os("EXPGRAPH_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    let weights = shared.join("models/vgg16-imagenet-conv.safetensors");
    let new = if weights.is_file() { Vgg16::load_file(&weights, &dev)? } else { Vgg16::random(1, 0, &dev)? };
    let old = if weights.is_file() { Vgg16::load_file(&weights, &dev)? } else { Vgg16::random(1, 0, &dev)? }
        .with_winograd(false)?;
    for batch in [1usize, 8] {
        let x = Tensor::randn(0f32, 50.0, (batch, 3, 224, 224), &dev)?;
        let rounds = if batch == 1 { rounds } else { rounds.div_ceil(4) };
        let (ta, tb, r) = interleave(
            rounds,
            || drop(old.forward_taps(&x, &["conv5_3"]).expect("old")),
            || drop(new.forward_taps(&x, &["conv5_3"]).expect("new")),
        );
        println!(
            "vgg16 to conv5_3, batch {batch}: im2col {:.1} ms/img, winograd {:.1} ms/img, old/new {r:.2}",
            ta * 1e3 / batch as f64,
            tb * 1e3 / batch as f64
        );
    }
    Ok(())
}
