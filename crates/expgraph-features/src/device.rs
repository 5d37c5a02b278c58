//! Choosing the candle device from a command-line string: the backbone crate's
//! [`expgraph_backbone::parse_device`] (and its [`expgraph_backbone::device_label`] and
//! [`expgraph_backbone::device_memory`]), re-exported here so that extraction code has one import.
//! Its error converts into [`crate::FeaturesError`] with `?`.

pub use expgraph_backbone::{device_label, device_memory, parse_device};

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::FeaturesError;

    fn parse(name: &str) -> Result<Device, FeaturesError> {
        Ok(parse_device(name)?)
    }

    #[test]
    fn cpu_parses_and_junk_is_rejected() {
        assert!(matches!(parse("cpu"), Ok(Device::Cpu)));
        assert!(matches!(parse(" CPU "), Ok(Device::Cpu)));
        let err = parse("tpu").unwrap_err().to_string();
        assert!(err.starts_with("device tpu:") && err.contains("cuda:N"), "{err}");
        assert!(parse("cuda:x").unwrap_err().to_string().contains("GPU number"));
        #[cfg(not(feature = "cuda"))]
        {
            let err = parse("cuda:0").unwrap_err().to_string();
            assert!(err.contains("cuda:0") && err.contains("--features cuda"), "{err}");
        }
        assert_eq!(device_label(&Device::Cpu), "cpu");
        assert_eq!(device_memory(&Device::Cpu), None);
    }
}
