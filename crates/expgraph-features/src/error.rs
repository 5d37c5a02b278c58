//! The error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while reading images, normalizing or extracting features.
#[derive(Debug, thiserror::Error)]
pub enum FeaturesError {
    /// An image file that is missing, unreadable or cannot be decoded.
    #[error("image {}: {what}", path.display())]
    Image { path: PathBuf, what: String },
    /// An object box that is empty, degenerate or outside its image.
    #[error("object box of {id}: {what}")]
    Box { id: String, what: String },
    /// A file other than an image (boxes JSON, statistics, output) that cannot be read or written.
    #[error("{}: {what}", path.display())]
    File { path: PathBuf, what: String },
    /// Normalization statistics that cannot be computed or do not fit.
    #[error("normalization statistics: {0}")]
    Stats(String),
    /// A bad parameter or input.
    #[error("invalid input: {0}")]
    Input(String),
    /// An error of the backbone (boxed: it is large).
    #[error(transparent)]
    Backbone(Box<expgraph_backbone::BackboneError>),
    /// An error of the feature cache.
    #[error(transparent)]
    Cache(#[from] expgraph_cache::CacheError),
    /// An error inside candle.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

impl From<expgraph_backbone::BackboneError> for FeaturesError {
    fn from(e: expgraph_backbone::BackboneError) -> Self {
        Self::Backbone(Box::new(e))
    }
}

impl FeaturesError {
    pub(crate) fn file(path: impl Into<PathBuf>, what: impl std::fmt::Display) -> Self {
        Self::File { path: path.into(), what: what.to_string() }
    }
}
