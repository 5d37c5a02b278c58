//! `cargo xtask fetch-cub`: download a benchmark data set, verify it, unpack it.
//!
//! Downloads go through `curl` (its own progress bar) and unpack through `tar`, as rust-analyzer's
//! xtask shells out to standard tools. URLs and checksums come from `datasets/<name>.toml`, their
//! only home.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A data set manifest `datasets/<name>.toml` (the fields xtask needs; the rest is for people).
#[derive(Debug, Deserialize)]
pub struct Manifest {
    /// Data set name (the file's stem).
    pub name: String,
    /// Files to download, in order.
    #[serde(default)]
    pub download: Vec<Download>,
}

/// One `[[download]]` entry.
#[derive(Debug, Deserialize)]
pub struct Download {
    /// Where to get it (a direct URL when `file` and `md5` are given).
    pub url: String,
    /// File name of a direct download.
    pub file: Option<String>,
    /// Its MD5 checksum.
    pub md5: Option<String>,
}

impl Manifest {
    /// Read `datasets/<name>.toml` of this workspace.
    pub fn load(name: &str) -> Result<Self> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets").join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let manifest: Manifest = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if manifest.name != name {
            bail!("{}: name {:?} does not match the file name", path.display(), manifest.name);
        }
        Ok(manifest)
    }

    /// The direct downloads (URL, file name, MD5).
    pub fn direct_downloads(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.download.iter().filter_map(|d| Some((d.url.as_str(), d.file.as_deref()?, d.md5.as_deref()?)))
    }
}

/// Arguments of `fetch-*`.
#[derive(clap::Args, Debug)]
pub struct FetchArgs {
    /// Folder to unpack into.
    #[arg(long, default_value = "data")]
    pub dir: PathBuf,
}

/// Fetch CUB-200-2011 into `dir/CUB_200_2011`.
pub fn cub(args: FetchArgs) -> Result<()> {
    let target = args.dir.join("CUB_200_2011");
    if target.join("images.txt").is_file() {
        println!("CUB-200-2011 is already at {}", target.display());
        return Ok(());
    }
    let manifest = Manifest::load("cub-200-2011")?;
    let (url, file, md5) =
        manifest.direct_downloads().next().context("datasets/cub-200-2011.toml names no direct download")?;
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let archive = args.dir.join(file);
    download(url, &archive).map_err(|e| {
        e.context(format!(
            "could not download CUB-200-2011 (offline?). Download {url} yourself, unpack it so \
             that {} exists, and pass --data {} to `cargo xtask bench-cub`",
            target.join("images.txt").display(),
            target.display()
        ))
    })?;
    verify_md5(&archive, md5)?;
    let status =
        Command::new("tar").arg("-xzf").arg(&archive).arg("-C").arg(&args.dir).status().context("running tar")?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_data_set_manifest_parses_and_names_itself() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                let m = Manifest::load(&name).unwrap();
                for d in m.direct_downloads() {
                    assert!(d.0.starts_with("http"), "{name}: {}", d.0);
                    assert_eq!(d.2.len(), 32, "{name}: md5 {}", d.2);
                }
                names.push(name);
            }
        }
        assert!(names.len() >= 4, "{names:?}");
        let cub = Manifest::load("cub-200-2011").unwrap();
        let (url, file, _) = cub.direct_downloads().next().unwrap();
        assert!(url.ends_with(file), "{url} {file}");
    }
}
