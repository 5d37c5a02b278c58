//! The errors of fine-tuning.

use std::path::PathBuf;

/// What can go wrong while loading the data or weights, training, or writing the result.
#[derive(Debug, thiserror::Error)]
pub enum FinetuneError {
    /// A hyper-parameter out of its range.
    #[error("invalid parameter {name} = {value}: {reason}")]
    InvalidParam {
        /// The parameter's name.
        name: &'static str,
        /// Its value, as text.
        value: String,
        /// What it must be.
        reason: String,
    },
    /// The training data do not allow training (too few images, a split without a class, …).
    #[error("training data: {0}")]
    Data(String),
    /// An image that cannot be read, decoded or cropped.
    #[error("image {path}: {what}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// A weight file that is missing, unreadable or not a VGG-16.
    #[error("weights {path}: {what}")]
    Weights {
        /// The weight file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// A checkpoint that cannot be read, or that belongs to another run.
    #[error("checkpoint {path}: {what}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// Writing an output file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An error of the backbone crate (devices, preprocessing); boxed, it is large.
    #[error(transparent)]
    Backbone(Box<expgraph_backbone::BackboneError>),
    /// A tensor operation failed; boxed, it is large.
    #[error("tensor operation: {0}")]
    Candle(Box<candle_core::Error>),
}

impl From<expgraph_backbone::BackboneError> for FinetuneError {
    fn from(e: expgraph_backbone::BackboneError) -> Self {
        FinetuneError::Backbone(Box::new(e))
    }
}

impl From<candle_core::Error> for FinetuneError {
    fn from(e: candle_core::Error) -> Self {
        FinetuneError::Candle(Box::new(e))
    }
}

/// `Result` with [`FinetuneError`].
pub type Result<T, E = FinetuneError> = std::result::Result<T, E>;
