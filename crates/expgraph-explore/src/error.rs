//! Errors of the explorer.

/// What can go wrong opening a graph or answering a request.
#[derive(Debug, thiserror::Error)]
pub enum ExploreError {
    /// The graph, activations or crops do not fit together.
    #[error("invalid input: {0}")]
    Input(String),
    /// A request names a layer, node or image that does not exist (HTTP 404).
    #[error("not found: {0}")]
    NotFound(String),
    /// A request with a malformed parameter (HTTP 400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Drawing or checking failed in the report crate.
    #[error(transparent)]
    Report(#[from] expgraph_report::ReportError),
    /// A page template failed to render.
    #[error("template: {0}")]
    Template(#[from] minijinja::Error),
    /// A PNG could not be encoded.
    #[error("image encoding: {0}")]
    Image(#[from] image::ImageError),
    /// The server could not bind or run.
    #[error("server {addr}: {source}")]
    Server {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The study file cannot be read or written, or belongs to another graph.
    #[error("study: {0}")]
    Study(String),
    /// A non-local address without `allow_remote`.
    #[error(
        "refusing to listen on {0}: the explorer has no authentication and serves the images it shows; \
         bind to 127.0.0.1 (the default), or pass --allow-remote to serve other machines"
    )]
    NotLocal(String),
}

/// `Result` with [`ExploreError`].
pub type Result<T, E = ExploreError> = std::result::Result<T, E>;
