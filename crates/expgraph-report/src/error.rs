//! Error type of the report crate.

use std::path::PathBuf;

/// Error of a crop source (the caller's image decoding), boxed.
pub type CropError = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong while drawing or writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The crop source failed for one image.
    #[error("cannot load the object crop of image {index}: {source}")]
    Crop {
        /// Image index (position in the activation list).
        index: usize,
        /// The caller's error.
        source: CropError,
    },
    /// Inputs that do not fit together (shapes, indices, non-finite values).
    #[error("invalid input ({what}): {detail}")]
    Invalid {
        /// Which input.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// A file or folder could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A PNG could not be encoded.
    #[error("cannot encode PNG {path}: {source}")]
    Png {
        /// The path.
        path: PathBuf,
        /// The encoder error.
        source: image::ImageError,
    },
    /// A JSON export could not be written or parsed.
    #[error("JSON {path}: {source}")]
    Json {
        /// The path.
        path: PathBuf,
        /// The serde error.
        source: serde_json::Error,
    },
    /// A graph export of an unknown schema or version.
    #[error("{path}: {detail}")]
    Schema {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The HTML template failed to render.
    #[error("cannot render the HTML report: {0}")]
    Template(#[from] minijinja::Error),
    /// A plot failed to draw.
    #[error("cannot draw plot `{title}`: {detail}")]
    Plot {
        /// Plot title.
        title: String,
        /// The plotters error, as text.
        detail: String,
    },
}

impl ReportError {
    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Invalid { what, detail: detail.into() }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

/// Result alias of this crate.
pub type Result<T, E = ReportError> = std::result::Result<T, E>;
