//! Errors of learning and inference.

/// Errors of learning and inference.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    /// A hyper-parameter out of range.
    #[error("invalid parameter `{name}`: {why}")]
    InvalidParam {
        /// Parameter name.
        name: &'static str,
        /// What is wrong.
        why: String,
    },
    /// Not enough images to learn (positional variance and parents need ≥ 2).
    #[error("learning needs at least 2 images, the features have {0}")]
    TooFewImages(usize),
    /// Inference on an empty image set.
    #[error("no images to run inference on")]
    NoImages,
    /// A layer the graph or the parameters need is not in the features.
    #[error("layer {layer} is not in the features (they have {available:?})")]
    MissingLayer {
        /// Layer name.
        layer: String,
        /// Layers the features have.
        available: Vec<String>,
    },
    /// Features that do not fit the graph or the method (other backbone, shapes, geometry).
    #[error("features do not match: {0}")]
    Mismatch(String),
    /// A non-finite feature value.
    #[error("layer {layer}: non-finite feature value in image {image}, channel {channel}")]
    NonFinite {
        /// Layer name.
        layer: String,
        /// Image index.
        image: usize,
        /// Channel.
        channel: usize,
    },
    /// A learning team's exchange failed (a member sent something else than expected, or a
    /// member is gone).
    #[error("team exchange: {0}")]
    Team(String),
    /// Feature cache errors.
    #[error(transparent)]
    Cache(#[from] expgraph_cache::CacheError),
    /// Parent selection failed.
    #[error(transparent)]
    Cliques(#[from] expgraph_cliques::CliqueError),
    /// Graph format errors.
    #[error(transparent)]
    Graph(#[from] expgraph_graph::GraphError),
}
