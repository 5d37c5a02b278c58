//! `cargo xtask fetch-cub`: download a benchmark data set, verify it, unpack it.
//!
//! Downloads go through `curl` (its own progress bar) and unpack through `tar`, as rust-analyzer's
//! xtask shells out to standard tools. The URLs and checksums are the ones in `datasets/*.toml`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Arguments of `fetch-*`.
#[derive(clap::Args, Debug)]
pub struct FetchArgs {
    /// Folder to unpack into.
    #[arg(long, default_value = "data")]
    pub dir: PathBuf,
}

const CUB_URL: &str = "https://data.caltech.edu/records/65de6-vzc23/files/CUB_200_2011.tgz";
const CUB_MD5: &str = "97eceeb196236b17998738112f37df78";

/// Fetch CUB-200-2011 into `dir/CUB_200_2011`.
pub fn cub(args: FetchArgs) -> Result<()> {
    let target = args.dir.join("CUB_200_2011");
    if target.join("images.txt").is_file() {
        println!("CUB-200-2011 is already at {}", target.display());
        return Ok(());
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let archive = args.dir.join("CUB_200_2011.tgz");
    download(CUB_URL, &archive).map_err(|e| {
        e.context(format!(
            "could not download CUB-200-2011 (offline?). Download {CUB_URL} yourself, unpack it so \
             that {} exists, and pass --data {} to `cargo xtask bench-cub`",
            target.join("images.txt").display(),
            target.display()
        ))
    })?;
    verify_md5(&archive, CUB_MD5)?;
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&args.dir)
        .status()
        .context("running tar")?;
    if !status.success() {
        bail!("tar failed to unpack {}", archive.display());
    }
    println!("CUB-200-2011 is at {}", target.display());
    Ok(())
}

/// Download `url` to `dest` through a temporary file, so no partial file is left behind.
fn download(url: &str, dest: &Path) -> Result<()> {
    let partial = dest.with_extension("partial");
    let status = Command::new("curl")
        .args(["--fail", "--location", "--connect-timeout", "15", "--progress-bar", "--output"])
        .arg(&partial)
        .arg(url)
        .status()
        .context("running curl (is it installed?)")?;
    if !status.success() {
        let _ = std::fs::remove_file(&partial);
        bail!("curl could not fetch {url} ({status})");
    }
    std::fs::rename(&partial, dest).with_context(|| format!("renaming to {}", dest.display()))?;
    Ok(())
}

fn verify_md5(file: &Path, expected: &str) -> Result<()> {
    let out = Command::new("md5sum").arg(file).output().context("running md5sum")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let found = text.split_whitespace().next().unwrap_or("");
    if found != expected {
        bail!("{}: md5 {found}, expected {expected}; delete it and fetch again", file.display());
    }
    Ok(())
}
