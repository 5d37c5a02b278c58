//! One module per subcommand.

pub mod backbones;
pub mod cache;
pub mod export;
pub mod extract;
pub mod features;
pub mod finetune;
pub mod infer;
pub mod learn;
pub mod localize;
pub mod report;
pub mod run;
pub mod serve;
pub mod stats;
pub mod study;
