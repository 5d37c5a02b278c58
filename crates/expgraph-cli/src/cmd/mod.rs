//! One module per subcommand.

pub mod extract;
pub mod features;
pub mod infer;
pub mod learn;
