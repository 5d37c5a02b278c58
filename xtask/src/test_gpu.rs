//! `cargo xtask test-gpu`: the GPU tests (every test with `gpu` in its name) of the crates that
//! have a `cuda` feature, built with it. Without a GPU they skip with a printed reason;
//! `--require-gpu` makes them fail instead (`EXPGRAPH_REQUIRE_GPU=1`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The packages whose GPU tests run, each built with its own `cuda` feature.
pub const GPU_PACKAGES: [&str; 3] = ["expgraph-backbone", "expgraph-features", "expgraph-cli"];

/// The environment variable that turns a GPU test's skip (no GPU, or a build without CUDA) into
/// a failure.
pub const REQUIRE_GPU_ENV: &str = "EXPGRAPH_REQUIRE_GPU";

/// `test-gpu` arguments.
#[derive(clap::Args, Debug)]
pub struct TestGpuArgs {
    /// Fail, instead of skipping, when no GPU is usable (sets EXPGRAPH_REQUIRE_GPU=1).
    #[arg(long)]
    pub require_gpu: bool,
    /// Print the cargo command and exit without running it.
    #[arg(long)]
    pub dry_run: bool,
    /// More arguments for the test binaries, after `--` (e.g. `--nocapture`).
    #[arg(last = true)]
    pub test_args: Vec<String>,
}

/// The arguments of the cargo command: `test --release -p … --features pkg/cuda,… -- gpu …`.
/// The features are spelled `pkg/cuda` because a plain `--features cuda` is ambiguous with
/// several packages selected.
pub fn cargo_args(test_args: &[String]) -> Vec<String> {
    let mut args: Vec<String> = vec!["test".into(), "--release".into()];
    for p in GPU_PACKAGES {
        args.extend(["-p".into(), p.into()]);
    }
    let features: Vec<String> = GPU_PACKAGES.iter().map(|p| format!("{p}/cuda")).collect();
    args.extend(["--features".into(), features.join(",")]);
    args.extend(["--".into(), "gpu".into()]);
    args.extend(test_args.iter().cloned());
    args
}

/// Run `cargo xtask test-gpu`.
pub fn run(a: TestGpuArgs) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let args = cargo_args(&a.test_args);
    let shown = format!(
        "{}{} {}",
        if a.require_gpu { format!("{REQUIRE_GPU_ENV}=1 ") } else { String::new() },
        Path::new(&cargo).file_name().map_or_else(|| "cargo".into(), |n| n.to_string_lossy()),
        args.join(" ")
    );
    if find_on_path("nvcc", std::env::var_os("PATH")).is_none() {
        eprintln!(
            "note: nvcc is not on PATH; building with `--features cuda` needs the CUDA toolkit: run \
             `.ci/install-cuda` once, then `source target/cuda-toolkit/env.sh` (skip this if the cuda build is \
             already compiled)"
        );
    }
    println!("{shown}");
    if a.dry_run {
        return Ok(());
    }
    let mut cmd = Command::new(&cargo);
    cmd.args(&args);
    if a.require_gpu {
        cmd.env(REQUIRE_GPU_ENV, "1");
    }
    let status = cmd.status().with_context(|| format!("running {}", Path::new(&cargo).display()))?;
    if !status.success() {
        bail!("the GPU tests failed ({status})");
    }
    Ok(())
}

/// The first executable file `name` in the folders of `path` (a `PATH` value).
fn find_on_path(name: &str, path: Option<OsString>) -> Option<PathBuf> {
    std::env::split_paths(&path?).map(|dir| dir.join(name)).find(|p| is_executable(p))
}

#[cfg(unix)]
fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(p: &Path) -> bool {
    p.is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_selects_each_package_with_its_cuda_feature_and_filters_gpu_tests() {
        let args = cargo_args(&["--nocapture".into()]);
        assert_eq!(
            args.join(" "),
            "test --release -p expgraph-backbone -p expgraph-features -p expgraph-cli \
             --features expgraph-backbone/cuda,expgraph-features/cuda,expgraph-cli/cuda -- gpu --nocapture"
        );
    }

    #[test]
    fn every_gpu_package_has_a_cuda_feature() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
        for p in GPU_PACKAGES {
            let manifest = std::fs::read_to_string(root.join(p).join("Cargo.toml")).unwrap();
            let features: toml::Table = toml::from_str::<toml::Table>(&manifest).unwrap()["features"]
                .as_table()
                .cloned()
                .unwrap_or_else(|| panic!("{p} has no [features]"));
            assert!(features.contains_key("cuda"), "{p} has no cuda feature");
        }
    }

    #[test]
    fn nvcc_is_found_only_as_an_executable_on_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let path = std::env::join_paths([&a, &b]).unwrap();
        assert_eq!(find_on_path("nvcc", Some(path.clone())), None);
        assert_eq!(find_on_path("nvcc", None), None);
        std::fs::write(b.join("nvcc"), "#!/bin/sh\n").unwrap();
        #[cfg(unix)]
        {
            assert_eq!(find_on_path("nvcc", Some(path.clone())), None, "not executable");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(b.join("nvcc"), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        assert_eq!(find_on_path("nvcc", Some(path)), Some(b.join("nvcc")));
    }
}
