//! Where backbone weights come from: a local `.safetensors` file or a Hugging Face hub repository.

use std::path::{Path, PathBuf};

use crate::{hub, BackboneError, Preprocess};

/// File fetched from a hub repository when none is named.
pub const DEFAULT_HUB_FILENAME: &str = "model.safetensors";

/// A source of weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightSource {
    /// A local safetensors file.
    File(PathBuf),
    /// A file of a Hugging Face model repository, fetched through the standard hub cache.
    Hub {
        /// Repository id, `org/name` (e.g. `timm/vgg16.tv_in1k`).
        repo: String,
        /// Branch, tag or commit; `None` means `main`.
        revision: Option<String>,
        /// File inside the repository, usually [`DEFAULT_HUB_FILENAME`].
        filename: String,
    },
}

impl WeightSource {
    /// A hub source for `repo` at `main` with [`DEFAULT_HUB_FILENAME`].
    pub fn hub(repo: impl Into<String>) -> Self {
        WeightSource::Hub { repo: repo.into(), revision: None, filename: DEFAULT_HUB_FILENAME.into() }
    }

    /// Interprets a command-line argument.
    ///
    /// * `hf:ORG/NAME[@REV][:FILE]` or `hf://…` is always a hub repository;
    /// * an existing path, or anything ending in `.safetensors`, starting with `.`, `/` or `~`, is a file;
    /// * otherwise `ORG/NAME[@REV][:FILE]` (one `/`, names of letters, digits, `-`, `_`, `.`) is a hub
    ///   repository; everything else is a file (whose absence is reported when loading).
    pub fn parse(s: &str) -> Self {
        if let Some(rest) = s.strip_prefix("hf://").or_else(|| s.strip_prefix("hf:")) {
            if let Some(hub) = Self::parse_hub(rest) {
                return hub;
            }
        }
        let looks_like_path = Path::new(s).exists()
            || s.ends_with(".safetensors")
            || s.starts_with(['.', '/', '~', '\\'])
            || s.contains('\\');
        if !looks_like_path {
            if let Some(hub) = Self::parse_hub(s) {
                return hub;
            }
        }
        WeightSource::File(PathBuf::from(s))
    }

    fn parse_hub(s: &str) -> Option<Self> {
        let (rest, filename) = match s.split_once(':') {
            Some((r, f)) if !f.is_empty() => (r, f.to_string()),
            Some(_) => return None,
            None => (s, DEFAULT_HUB_FILENAME.to_string()),
        };
        let (repo, revision) = match rest.split_once('@') {
            Some((r, rev)) if !rev.is_empty() => (r, Some(rev.to_string())),
            Some(_) => return None,
            None => (rest, None),
        };
        let (org, name) = repo.split_once('/')?;
        let valid = |part: &str| {
            !part.is_empty()
                && !part.starts_with('.')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        (valid(org) && valid(name)).then(|| WeightSource::Hub { repo: repo.to_string(), revision, filename })
    }

    /// The preprocessing these weights expect unless told otherwise: [`Preprocess::Caffe`] for a local
    /// file (the project's converted original VGG-16), [`Preprocess::Torchvision`] for hub weights
    /// (torchvision/timm training runs). See `/work/shared/models/README.md`.
    pub fn default_preprocess(&self) -> Preprocess {
        match self {
            WeightSource::File(_) => Preprocess::Caffe,
            WeightSource::Hub { .. } => Preprocess::Torchvision,
        }
    }

    /// The revision to use for a hub source (`main` when unset).
    pub fn revision(&self) -> Option<&str> {
        match self {
            WeightSource::File(_) => None,
            WeightSource::Hub { revision, .. } => Some(revision.as_deref().unwrap_or("main")),
        }
    }
}

impl std::fmt::Display for WeightSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WeightSource::File(p) => write!(f, "{}", p.display()),
            WeightSource::Hub { repo, revision, filename } => {
                write!(f, "hf:{repo}")?;
                if let Some(rev) = revision {
                    write!(f, "@{rev}")?;
                }
                write!(f, ":{filename}")
            }
        }
    }
}

/// Local path of the weight file: the file itself, or the hub cache entry (downloading it unless
/// `HF_HUB_OFFLINE` is set). Reads the hub settings from the environment ([`hub::HubConfig::from_env`]).
pub fn resolve_weights(source: &WeightSource) -> Result<PathBuf, BackboneError> {
    match source {
        WeightSource::File(path) => resolve_file(path),
        WeightSource::Hub { .. } => resolve_weights_with(source, &hub::HubConfig::from_env()?),
    }
}

/// [`resolve_weights`] with explicit hub settings instead of the environment.
pub fn resolve_weights_with(source: &WeightSource, config: &hub::HubConfig) -> Result<PathBuf, BackboneError> {
    match source {
        WeightSource::File(path) => resolve_file(path),
        WeightSource::Hub { repo, revision, filename } => {
            hub::fetch(config, repo, revision.as_deref().unwrap_or("main"), filename)
        }
    }
}

fn resolve_file(path: &Path) -> Result<PathBuf, BackboneError> {
    if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        Err(BackboneError::MissingFile { path: path.to_path_buf() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_hub_ids_and_paths() {
        assert_eq!(WeightSource::parse("timm/vgg16.tv_in1k"), WeightSource::hub("timm/vgg16.tv_in1k"));
        assert_eq!(
            WeightSource::parse("hf:timm/vgg16.tv_in1k@v1:weights.safetensors"),
            WeightSource::Hub {
                repo: "timm/vgg16.tv_in1k".into(),
                revision: Some("v1".into()),
                filename: "weights.safetensors".into()
            }
        );
        for p in ["models/vgg.safetensors", "./a/b", "/abs/x", "vgg16", "a/b/c", "~/w"] {
            assert_eq!(WeightSource::parse(p), WeightSource::File(p.into()), "{p}");
        }
    }

    #[test]
    fn display_round_trips_through_parse() {
        let s =
            WeightSource::Hub { repo: "org/m".into(), revision: Some("abc".into()), filename: "f.safetensors".into() };
        assert_eq!(WeightSource::parse(&s.to_string()), s);
        assert_eq!(WeightSource::parse(&WeightSource::hub("o/n").to_string()), WeightSource::hub("o/n"));
    }

    #[test]
    fn default_preprocess_rule() {
        assert_eq!(WeightSource::File("x.safetensors".into()).default_preprocess(), Preprocess::Caffe);
        assert_eq!(WeightSource::hub("timm/vgg16.tv_in1k").default_preprocess(), Preprocess::Torchvision);
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = resolve_weights(&WeightSource::File("/nonexistent/w.safetensors".into())).unwrap_err();
        assert!(matches!(err, BackboneError::MissingFile { .. }));
        assert!(err.to_string().contains("/nonexistent/w.safetensors"), "{err}");
    }
}
