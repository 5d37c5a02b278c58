//! `--isa avx2` of `cargo xtask bench-backbone`: the whole run, ONNX Runtime included, on the
//! AVX2 code of every engine, on an AVX-512 machine. The xtask builds `xtask/isa-cap/isacap.rs`
//! (an `LD_PRELOAD` library that hides AVX-512 from `cpuid`; see there) and runs itself again
//! under it; the child checks that AVX-512 is gone before it times anything.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The instruction sets a run may be capped to.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsaCap {
    /// Whatever the CPU has.
    Native,
    /// AVX2 (with FMA): AVX-512 hidden from every engine.
    Avx2,
}

/// Set in the re-run child, to the cap it runs under.
const CAPPED_ENV: &str = "EXPGRAPH_XTASK_ISA_CAP";

/// The library's source, relative to the workspace root.
const SHIM_SOURCE: &str = "xtask/isa-cap/isacap.rs";

/// What a run under `cap` does in this process.
#[derive(Debug, PartialEq, Eq)]
pub enum Capped {
    /// Run here: no cap, or this process already runs under it (the record names it, if any).
    Here(Option<&'static str>),
    /// The run was done by a child under the cap (and succeeded).
    Done,
}

/// Applies `cap`: returns [`Capped::Here`] when this process may run the benchmark itself,
/// else runs `args` again under the cap and returns [`Capped::Done`] (or the child's failure).
pub fn apply(cap: IsaCap, workspace: &Path, args: &[String]) -> Result<Capped> {
    if cap == IsaCap::Native {
        return Ok(Capped::Here(None));
    }
    let detected_avx512 = avx512_detected();
    if std::env::var(CAPPED_ENV).is_ok_and(|v| v == "avx2") {
        if detected_avx512 {
            bail!(
                "--isa avx2: AVX-512 is still visible under {SHIM_SOURCE}: this CPU or kernel has no CPUID \
                 faulting (`cpuid_fault` in /proc/cpuinfo), so the cap cannot be applied here"
            )
        }
        return Ok(Capped::Here(Some("avx2")));
    }
    if !detected_avx512 {
        eprintln!("--isa avx2: this CPU has no AVX-512F; every engine runs its AVX2 code already");
        return Ok(Capped::Here(None));
    }
    if !(cfg!(all(target_os = "linux", target_arch = "x86_64"))) {
        bail!("--isa avx2 needs Linux on x86-64 (CPUID faulting)")
    }
    if !cpuid_faulting()? {
        bail!("--isa avx2: /proc/cpuinfo lists no `cpuid_fault`: AVX-512 cannot be hidden on this machine")
    }
    let shim = build_shim(workspace)?;
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    eprintln!("--isa avx2: running again with AVX-512 hidden ({})", shim.display());
    let status = Command::new(&exe)
        .args(args)
        .env("LD_PRELOAD", &shim)
        .env(CAPPED_ENV, "avx2")
        .status()
        .with_context(|| format!("running {} under the cap", exe.display()))?;
    if !status.success() {
        bail!("the run under --isa avx2 failed ({status})")
    }
    Ok(Capped::Done)
}

/// Whether this process sees AVX-512F (what the record's `host.isa` says).
fn avx512_detected() -> bool {
    crate::backbone_bench::isa_flags().get("avx512f") == Some(&true)
}

/// Whether the CPU and kernel offer CPUID faulting (`cpuid_fault` in /proc/cpuinfo).
fn cpuid_faulting() -> Result<bool> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").context("reading /proc/cpuinfo")?;
    Ok(cpuinfo.split_whitespace().any(|flag| flag == "cpuid_fault"))
}

/// Builds the library into `target/xtask/` (with `$RUSTC`, else `rustc`); returns its path.
fn build_shim(workspace: &Path) -> Result<std::path::PathBuf> {
    let source = workspace.join(SHIM_SOURCE);
    if !source.is_file() {
        bail!("{} is missing", source.display())
    }
    let dir = workspace.join("target/xtask");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = dir.join("libisacap.so");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let status = Command::new(&rustc)
        .args(["--edition", "2021", "--crate-type", "cdylib", "-C", "opt-level=2", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .with_context(|| format!("running {}", rustc.to_string_lossy()))?;
    if !status.success() {
        bail!("building {} failed ({status})", source.display())
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_runs_here_uncapped() {
        assert_eq!(apply(IsaCap::Native, Path::new("."), &[]).unwrap(), Capped::Here(None));
    }

    /// On an AVX-512 machine with CPUID faulting, the library hides AVX-512 from a child
    /// process (this test binary, run again with one test) while AVX2 and FMA stay.
    #[test]
    fn the_library_hides_avx512_from_a_child() {
        if std::env::var(CAPPED_ENV).is_ok() {
            // The child: report what it sees.
            #[cfg(target_arch = "x86_64")]
            println!(
                "SEEN avx512f={} avx2={} fma={}",
                std::arch::is_x86_feature_detected!("avx512f"),
                std::arch::is_x86_feature_detected!("avx2"),
                std::arch::is_x86_feature_detected!("fma")
            );
            return;
        }
        if !avx512_detected() || !cpuid_faulting().unwrap_or(false) {
            eprintln!("skipped: this machine has no AVX-512F or no CPUID faulting");
            return;
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
        let shim = build_shim(workspace).expect("building the library");
        let out = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "isa_cap::tests::the_library_hides_avx512_from_a_child", "--nocapture"])
            .env("LD_PRELOAD", &shim)
            .env(CAPPED_ENV, "avx2")
            .output()
            .expect("running the child");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("SEEN avx512f=false avx2=true fma=true"), "{text}");
    }
}
