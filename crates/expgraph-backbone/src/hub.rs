//! Hugging Face hub access through the standard on-disk cache (the layout `huggingface_hub` uses).
//!
//! Cache folder: `HF_HUB_CACHE` if set, else `HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`,
//! else `~/.cache/huggingface/hub`. A file of repo `org/name` at revision `rev` lives at
//! `models--org--name/snapshots/<commit>/<file>` (usually a symlink into `blobs/`), where `<commit>`
//! is the content of `models--org--name/refs/<rev>` (or `rev` itself when it is a commit hash).
//! `HF_HUB_OFFLINE=1` forbids network access; `HF_ENDPOINT` and `HF_TOKEN` are honoured on download.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::BackboneError;

/// Settings for hub access, normally read from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubConfig {
    /// The hub cache folder (the one holding `models--*` folders).
    pub cache_dir: PathBuf,
    /// Never touch the network; a cache miss is an error.
    pub offline: bool,
    /// Hub URL; `None` means `https://huggingface.co`.
    pub endpoint: Option<String>,
    /// Access token for gated or private repositories.
    pub token: Option<String>,
    /// Show a download progress bar.
    pub progress: bool,
}

impl HubConfig {
    /// Reads `HF_HUB_CACHE`, `HF_HOME`, `XDG_CACHE_HOME`, `HOME`, `HF_HUB_OFFLINE`, `HF_ENDPOINT` and
    /// `HF_TOKEN`. The progress bar is shown only when stderr is a terminal.
    pub fn from_env() -> Result<Self, BackboneError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let cache_dir = if let Some(dir) = var("HF_HUB_CACHE") {
            PathBuf::from(dir)
        } else if let Some(home) = var("HF_HOME") {
            Path::new(&home).join("hub")
        } else if let Some(xdg) = var("XDG_CACHE_HOME") {
            Path::new(&xdg).join("huggingface").join("hub")
        } else if let Some(home) = var("HOME").or_else(|| var("USERPROFILE")) {
            Path::new(&home).join(".cache").join("huggingface").join("hub")
        } else {
            return Err(BackboneError::Input(
                "cannot locate the Hugging Face cache: set HF_HUB_CACHE or HF_HOME".into(),
            ));
        };
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| is_truthy(&v));
        Ok(HubConfig {
            cache_dir,
            offline,
            endpoint: var("HF_ENDPOINT"),
            token: var("HF_TOKEN"),
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        })
    }

    /// A configuration using only the cache at `cache_dir` (offline, no progress bar).
    pub fn offline(cache_dir: impl Into<PathBuf>) -> Self {
        HubConfig {
            cache_dir: cache_dir.into(),
            offline: true,
            endpoint: None,
            token: None,
            progress: Default::default(),
        }
    }
}

/// `huggingface_hub`'s reading of a boolean environment variable.
fn is_truthy(v: &str) -> bool {
    matches!(v.trim().to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE")
}

/// Folder of a model repository inside the cache: `models--org--name`.
pub fn repo_folder(cache_dir: &Path, repo: &str) -> PathBuf {
    cache_dir.join(format!("models--{}", repo.replace('/', "--")))
}

fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// The cached file for (`repo`, `revision`, `filename`), if present.
pub fn cached_file(cache_dir: &Path, repo: &str, revision: &str, filename: &str) -> Option<PathBuf> {
    let folder = repo_folder(cache_dir, repo);
    let commit = match std::fs::read_to_string(folder.join("refs").join(revision)) {
        Ok(c) => c.trim().to_string(),
        Err(_) if is_commit_hash(revision) => revision.to_string(),
        Err(_) => return None,
    };
    let path = folder.join("snapshots").join(commit).join(filename);
    // `is_file` follows the blob symlink, so a dangling link counts as a miss.
    path.is_file().then_some(path)
}

/// Where the file would be found: the snapshot path if the ref is known, else a `<revision>` pattern.
fn expected_path(cache_dir: &Path, repo: &str, revision: &str, filename: &str) -> PathBuf {
    let folder = repo_folder(cache_dir, repo);
    let commit = std::fs::read_to_string(folder.join("refs").join(revision))
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|_| {
            if is_commit_hash(revision) {
                revision.to_string()
            } else {
                format!("<commit of refs/{revision}>")
            }
        });
    folder.join("snapshots").join(commit).join(filename)
}

/// Returns the cached file, downloading it into the cache first when allowed.
pub(crate) fn fetch(config: &HubConfig, repo: &str, revision: &str, filename: &str) -> Result<PathBuf, BackboneError> {
    if let Some(path) = cached_file(&config.cache_dir, repo, revision, filename) {
        tracing::debug!(path = %path.display(), "hub cache hit");
        return Ok(path);
    }
    if config.offline {
        return Err(BackboneError::HubOffline {
            repo: repo.into(),
            revision: revision.into(),
            filename: filename.into(),
            expected: expected_path(&config.cache_dir, repo, revision, filename),
        });
    }
    tracing::info!(repo, revision, filename, cache = %config.cache_dir.display(), "downloading from the hub");
    let download_error = |message: String| BackboneError::HubDownload {
        repo: repo.into(),
        revision: revision.into(),
        filename: filename.into(),
        cache: config.cache_dir.clone(),
        message,
    };
    // hf-hub asserts that cache paths are absolute when it links snapshots to blobs.
    let cache_dir = std::path::absolute(&config.cache_dir).map_err(|e| download_error(e.to_string()))?;
    let mut builder = ApiBuilder::from_cache(Cache::new(cache_dir)).with_progress(config.progress);
    if let Some(endpoint) = &config.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    if config.token.is_some() {
        builder = builder.with_token(config.token.clone());
    }
    let api = builder.build().map_err(|e| download_error(e.to_string()))?;
    let hub_repo = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
    api.repo(hub_repo).download(filename).map_err(|e| download_error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthy_values() {
        for v in ["1", "true", "ON", "yes "] {
            assert!(is_truthy(v), "{v}");
        }
        for v in ["0", "false", "off", ""] {
            assert!(!is_truthy(v), "{v}");
        }
    }

    #[test]
    fn repo_folder_layout() {
        assert_eq!(repo_folder(Path::new("/c"), "timm/vgg16.tv_in1k"), PathBuf::from("/c/models--timm--vgg16.tv_in1k"));
    }
}
