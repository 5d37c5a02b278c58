//! The error type of the crate.

/// Everything that can go wrong while fitting or applying a part model.
#[derive(Debug, thiserror::Error)]
pub enum LocalizeError {
    /// A parameter outside its valid range.
    #[error("invalid parameter `{name}` = {value}: {reason}")]
    InvalidParam { name: &'static str, value: String, reason: &'static str },
    /// An input set that must not be empty is empty.
    #[error("empty input: {0}")]
    Empty(String),
    /// Activations that do not match the unit layout (layer count, names or lengths).
    #[error("image {image}: {what}")]
    Shape { image: String, what: String },
    /// A NaN or infinite position, score or point.
    #[error("image {image}: non-finite {what}")]
    NonFinite { image: String, what: String },
    /// No unit survived the node selection for an annotated example (spec §4.1).
    #[error(
        "annotated image {image}: no unit selected (every unit in the top fraction has a score at or \
         below the detection threshold or a displacement above the bound); loosen the parameters"
    )]
    NoUnitSelected { image: String },
    /// A layout or model that is internally inconsistent (e.g. a corrupt saved model).
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// A feature-map read that does not fit the layer (image index, missing view).
    #[error("layer {layer}: {what}")]
    Maps { layer: String, what: String },
    /// Malformed JSON.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Shorthand for this crate's results.
pub type Result<T, E = LocalizeError> = std::result::Result<T, E>;
