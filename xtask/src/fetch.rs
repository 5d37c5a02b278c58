//! `cargo xtask fetch-cub`: download a benchmark data set, verify it, unpack it.
//! `cargo xtask fetch-negatives`: the paper's 1000 negative images, downloaded or copied from a
//! local folder, verified file by file against `datasets/negatives.sha256`, installed atomically.
//!
//! Downloads go through `curl` (its own progress bar), unpack through `tar` and hashes through
//! `md5sum` / `sha256sum`, as rust-analyzer's xtask shells out to standard tools. URLs and
//! checksums come from `datasets/<name>.toml` (and the checksum lists it names), their only home.

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

/// Where `fetch-negatives` puts the paper's negatives by default, and where the paper
/// benchmarks look for them when `--negatives` is not given.
pub const DEFAULT_NEGATIVES_DIR: &str = "data/negatives";

/// The `[files]` table of `datasets/negatives.toml`.
#[derive(Debug, Deserialize)]
struct NegativesFiles {
    /// URL prefix of one file (`<raw_base><file name>`).
    raw_base: String,
    /// Number of files.
    count: usize,
    /// The checksum list, relative to `datasets/`.
    checksums: String,
}

#[derive(Debug, Deserialize)]
struct NegativesManifest {
    files: NegativesFiles,
}

/// A checksum list in `sha256sum`'s format: one `<sha256>  <file name>` line per file.
#[derive(Debug, Clone)]
pub struct Checksums {
    /// The list file (named in messages).
    pub source: PathBuf,
    /// (file name, lower-case hex SHA-256), in the list's order.
    pub files: Vec<(String, String)>,
}

impl Checksums {
    /// Parse a list; `source` names it in errors. File names must be plain (letters, digits,
    /// `.`, `-`, `_`; no leading `.` or `-`), one per line, each listed once.
    pub fn parse(text: &str, source: &Path) -> Result<Self> {
        let mut files = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, line) in text.lines().enumerate() {
            let at = || format!("{} line {}", source.display(), i + 1);
            if line.trim().is_empty() {
                continue;
            }
            let (hash, name) = line
                .split_once("  ")
                .or_else(|| line.split_once(" *"))
                .ok_or_else(|| anyhow!("{}: expected `<sha256>  <file name>`, found {line:?}", at()))?;
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                bail!("{}: {hash:?} is not a lower-case hex SHA-256", at());
            }
            let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
            if name.is_empty() || name.starts_with(['.', '-']) || !name.chars().all(plain) {
                bail!("{}: {name:?} is not a plain file name", at());
            }
            if !seen.insert(name.to_string()) {
                bail!("{}: {name} is listed twice", at());
            }
            files.push((name.to_string(), hash.to_string()));
        }
        if files.is_empty() {
            bail!("{}: lists no file", source.display());
        }
        Ok(Self { source: source.to_path_buf(), files })
    }

    /// Read a list file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// The paper's negatives: the list that `datasets/negatives.toml` names, and its URL prefix.
    pub fn negatives() -> Result<(Self, String)> {
        Manifest::load("negatives")?;
        let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
        let datasets = xtask.parent().unwrap_or(xtask).join("datasets");
        let path = datasets.join("negatives.toml");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let manifest: NegativesManifest =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let list = Self::load(&datasets.join(&manifest.files.checksums))?;
        if list.files.len() != manifest.files.count {
            bail!(
                "{} lists {} files, {} says {}",
                list.source.display(),
                list.files.len(),
                path.display(),
                manifest.files.count
            );
        }
        Ok((list, manifest.files.raw_base))
    }

    /// Cheap check: `dir` holds exactly the listed files (names only, no hashing).
    pub fn check_names(&self, dir: &Path) -> Result<()> {
        let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        let mut present = BTreeSet::new();
        let mut not_files = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_file() {
                present.insert(name);
            } else {
                not_files.push(name);
            }
        }
        let expected: BTreeSet<String> = self.files.iter().map(|(n, _)| n.clone()).collect();
        let missing: Vec<String> = expected.difference(&present).cloned().collect();
        let extra: Vec<String> = present.difference(&expected).cloned().collect();
        let mut problems = Vec::new();
        if !missing.is_empty() {
            problems.push(format!("{} missing: {}", missing.len(), few(&missing)));
        }
        if !extra.is_empty() {
            problems.push(format!("{} not in the list: {}", extra.len(), few(&extra)));
        }
        if !not_files.is_empty() {
            not_files.sort();
            problems.push(format!("{} not a regular file: {}", not_files.len(), few(&not_files)));
        }
        if !problems.is_empty() {
            bail!(
                "{} does not hold the {} files of {}: {}",
                dir.display(),
                self.files.len(),
                self.source.display(),
                problems.join("; ")
            );
        }
        Ok(())
    }

    /// Full check: the names as in [`Self::check_names`], then every file's SHA-256.
    pub fn verify(&self, dir: &Path) -> Result<()> {
        self.check_names(dir)?;
        let found = sha256_files(dir, self.files.iter().map(|(n, _)| n.as_str()))?;
        let bad: Vec<String> = self
            .files
            .iter()
            .filter(|(name, hash)| found.get(name) != Some(hash))
            .map(|(name, hash)| {
                let got = found.get(name).map_or("(no hash)", String::as_str);
                format!("{}: sha256 {got}, expected {hash}", dir.join(name).display())
            })
            .collect();
        if !bad.is_empty() {
            bail!("{} file(s) do not match {}: {}", bad.len(), self.source.display(), few(&bad));
        }
        Ok(())
    }
}

/// Up to five items, then how many more.
fn few(items: &[String]) -> String {
    let shown: Vec<&str> = items.iter().take(5).map(String::as_str).collect();
    match items.len() {
        n if n > 5 => format!("{} … and {} more", shown.join(", "), n - 5),
        _ => shown.join(", "),
    }
}

/// SHA-256 of the named files of `dir` (one `sha256sum` run), by file name.
fn sha256_files<'a>(dir: &Path, names: impl IntoIterator<Item = &'a str>) -> Result<BTreeMap<String, String>> {
    let out = Command::new("sha256sum")
        .arg("--")
        .args(names)
        .current_dir(dir)
        .output()
        .context("running sha256sum (coreutils; is it installed?)")?;
    if !out.status.success() {
        bail!("sha256sum failed in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| l.split_once("  ").or_else(|| l.split_once(" *")))
        .map(|(hash, name)| (name.to_string(), hash.to_string()))
        .collect())
}

/// Arguments of `fetch-negatives`.
#[derive(clap::Args, Debug)]
pub struct FetchNegativesArgs {
    /// Folder to put `negatives/` into (the paper benchmarks look for `data/negatives`).
    #[arg(long, default_value = "data")]
    pub dir: PathBuf,
    /// Copy from this local folder (e.g. ../shared/data/negatives) instead of downloading from
    /// the authors' repository.
    #[arg(long, value_name = "LOCAL_DIR")]
    pub from: Option<PathBuf>,
}

/// Fetch the paper's 1000 negatives into `dir/negatives`.
pub fn negatives(args: FetchNegativesArgs) -> Result<()> {
    let (list, raw_base) = Checksums::negatives()?;
    let target = install_negatives(&args.dir, args.from.as_deref(), &list, &raw_base)?;
    println!(
        "the paper's {} negatives are at {} (verified against {})",
        list.files.len(),
        target.display(),
        list.source.display()
    );
    Ok(())
}

/// Put the files of `list` into `dir/negatives`: copied from `from`, or downloaded from
/// `<raw_base><name>`. Written into a temporary folder beside the target, verified, then renamed,
/// so a failure leaves nothing behind. An existing `dir/negatives` is never touched: if it
/// verifies there is nothing to do, otherwise it is an error.
fn install_negatives(dir: &Path, from: Option<&Path>, list: &Checksums, raw_base: &str) -> Result<PathBuf> {
    let target = dir.join("negatives");
    if target.symlink_metadata().is_ok() {
        list.verify(&target).with_context(|| {
            format!(
                "{} already exists but is not the paper's negatives; it was left as it is (move it away and \
                 fetch again, or fetch with another --dir)",
                target.display()
            )
        })?;
        println!("{} already holds the paper's negatives (verified); nothing to do", target.display());
        return Ok(target);
    }
    if let Some(from) = from {
        list.verify(from).with_context(|| format!("--from {}: not a copy of the paper's negatives", from.display()))?;
    }
    let created = !dir.exists();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = fill_and_rename(dir, &target, from, list, raw_base);
    if result.is_err() && created {
        let _ = std::fs::remove_dir(dir); // only if still empty: what this call created
    }
    result.map(|()| target)
}

fn fill_and_rename(dir: &Path, target: &Path, from: Option<&Path>, list: &Checksums, raw_base: &str) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix(".negatives-partial-")
        .tempdir_in(dir)
        .with_context(|| format!("creating a temporary folder in {}", dir.display()))?;
    match from {
        Some(from) => {
            for (name, _) in &list.files {
                let (src, dst) = (from.join(name), tmp.path().join(name));
                let copy = || -> std::io::Result<()> {
                    let mut out = std::fs::File::create(&dst)?;
                    std::io::copy(&mut std::fs::File::open(&src)?, &mut out)?;
                    out.sync_all()
                };
                copy().with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
            }
        }
        None => download_files(raw_base, list, tmp.path()).map_err(|e| {
            e.context(format!(
                "could not download the paper's negatives from {raw_base} (offline?). Copy a local copy with \
                 `cargo xtask fetch-negatives --from DIR` (e.g. --from ../shared/data/negatives), or pass \
                 --negatives DIR to the benchmarks"
            ))
        })?,
    }
    list.verify(tmp.path()).context("the fetched files do not verify; nothing was installed")?;
    std::fs::rename(tmp.path(), target)
        .with_context(|| format!("renaming {} to {}", tmp.path().display(), target.display()))?;
    let _ = tmp.keep(); // renamed: nothing left to clean up
    Ok(())
}

/// Download `<raw_base><name>` into `dir/<name>` for every listed file (one `curl` run).
fn download_files(raw_base: &str, list: &Checksums, dir: &Path) -> Result<()> {
    println!("downloading {} files from {raw_base} …", list.files.len());
    let mut config = String::new();
    for (name, _) in &list.files {
        config.push_str(&format!("url = \"{raw_base}{name}\"\noutput = \"{name}\"\n"));
    }
    let mut child = Command::new("curl")
        .args(["--fail", "--fail-early", "--location", "--connect-timeout", "15", "--retry", "2"])
        .args(["--silent", "--show-error", "--config", "-"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .spawn()
        .context("running curl (is it installed?)")?;
    let written = child.stdin.take().map(|mut stdin| stdin.write_all(config.as_bytes()));
    let status = child.wait().context("waiting for curl")?;
    if !status.success() {
        bail!("curl could not fetch every file of {raw_base} ({status})");
    }
    written.transpose().context("writing curl's URL list")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA_A: &str = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb";
    const SHA_B: &str = "3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d";

    /// A folder with `a.jpg` ("a") and `b.jpg` ("b"), and their list.
    fn fixture() -> (tempfile::TempDir, PathBuf, Checksums) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("src");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.jpg"), "a").unwrap();
        std::fs::write(dir.join("b.jpg"), "b").unwrap();
        let text = format!("{SHA_A}  a.jpg\n{SHA_B}  b.jpg\n");
        let list = Checksums::parse(&text, Path::new("list.sha256")).unwrap();
        (tmp, dir, list)
    }

    fn message(e: anyhow::Error) -> String {
        format!("{e:#}")
    }

    #[test]
    fn checksums_accept_the_right_files() {
        let (_tmp, dir, list) = fixture();
        list.check_names(&dir).unwrap();
        list.verify(&dir).unwrap();
    }

    #[test]
    fn checksums_name_a_missing_file() {
        let (_tmp, dir, list) = fixture();
        std::fs::remove_file(dir.join("b.jpg")).unwrap();
        let e = message(list.check_names(&dir).unwrap_err());
        assert!(e.contains("missing") && e.contains("b.jpg"), "{e}");
        let e = message(list.verify(&dir).unwrap_err());
        assert!(e.contains("b.jpg"), "{e}");
    }

    #[test]
    fn checksums_name_an_extra_file() {
        let (_tmp, dir, list) = fixture();
        std::fs::write(dir.join("c.jpg"), "c").unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        let e = message(list.verify(&dir).unwrap_err());
        assert!(e.contains("not in the list: c.jpg") && e.contains("sub"), "{e}");
    }

    #[test]
    fn checksums_name_a_corrupted_file() {
        let (_tmp, dir, list) = fixture();
        std::fs::write(dir.join("b.jpg"), "B").unwrap();
        list.check_names(&dir).unwrap(); // the cheap check looks at names only
        let e = message(list.verify(&dir).unwrap_err());
        assert!(e.contains("b.jpg: sha256") && e.contains(SHA_B) && !e.contains("a.jpg"), "{e}");
    }

    #[test]
    fn checksum_lists_are_strict() {
        let src = Path::new("l.sha256");
        for (text, why) in [
            ("", "lists no file"),
            ("abc  a.jpg", "not a lower-case hex"),
            (&format!("{SHA_A} a.jpg") as &str, "expected"),
            (&format!("{SHA_A}  ../a.jpg"), "not a plain file name"),
            (&format!("{SHA_A}  .hidden"), "not a plain file name"),
            (&format!("{SHA_A}  a.jpg\n{SHA_B}  a.jpg"), "line 2: a.jpg is listed twice"),
        ] {
            let e = message(Checksums::parse(text, src).unwrap_err());
            assert!(e.contains(why) && e.contains("l.sha256"), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_committed_negatives_list_matches_its_manifest() {
        let (list, raw_base) = Checksums::negatives().unwrap();
        assert_eq!(list.files.len(), 1000);
        assert_eq!(list.files[0].0, "00001.JPEG");
        assert_eq!(list.files[999].0, "01000.JPEG");
        assert!(raw_base.starts_with("https://") && raw_base.ends_with("/data/neg/"), "{raw_base}");
    }

    /// No `.negatives-partial-*` folder is left in `dir`.
    fn no_partial(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries {
                let name = e.unwrap().file_name();
                assert!(!name.to_string_lossy().starts_with(".negatives-partial"), "left behind: {name:?}");
            }
        }
    }

    #[test]
    fn install_copies_verifies_and_renames() {
        let (tmp, src, list) = fixture();
        let data = tmp.path().join("data");
        let target = install_negatives(&data, Some(&src), &list, "https://invalid/").unwrap();
        assert_eq!(target, data.join("negatives"));
        list.verify(&target).unwrap();
        no_partial(&data);
        // Again: already there, nothing to do (and no download tried).
        install_negatives(&data, None, &list, "https://invalid/").unwrap();
    }

    #[test]
    fn install_refuses_a_corrupted_source_and_leaves_nothing() {
        let (tmp, src, list) = fixture();
        std::fs::write(src.join("a.jpg"), "x").unwrap();
        let data = tmp.path().join("data");
        let e = message(install_negatives(&data, Some(&src), &list, "https://invalid/").unwrap_err());
        assert!(e.contains("a.jpg: sha256"), "{e}");
        assert!(!data.exists(), "the folder this call created is removed again");
    }

    #[test]
    fn install_never_touches_an_existing_folder() {
        let (tmp, src, list) = fixture();
        let data = tmp.path().join("data");
        let mine = data.join("negatives");
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::write(mine.join("mine.txt"), "keep me").unwrap();
        let e = message(install_negatives(&data, Some(&src), &list, "https://invalid/").unwrap_err());
        assert!(e.contains("already exists") && e.contains("mine.txt"), "{e}");
        assert_eq!(std::fs::read_to_string(mine.join("mine.txt")).unwrap(), "keep me");
        assert!(!mine.join("a.jpg").exists());
        no_partial(&data);
    }

    #[test]
    fn a_failed_download_leaves_nothing_behind() {
        let (tmp, _src, list) = fixture();
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        // Port 9 (discard) on localhost: refused at once, no network needed.
        let e = message(install_negatives(&data, None, &list, "http://127.0.0.1:9/neg/").unwrap_err());
        assert!(e.contains("could not download") && e.contains("--from"), "{e}");
        assert!(!data.join("negatives").exists());
        no_partial(&data);
        assert!(data.is_dir(), "a folder the user had is kept");
    }

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
