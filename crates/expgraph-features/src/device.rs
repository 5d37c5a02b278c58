//! Choosing the candle device from a command-line string.

use candle_core::Device;

use crate::FeaturesError;

/// Parse `cpu`, `cuda` or `cuda:N` into a candle [`Device`].
///
/// CUDA needs this crate's `cuda` feature (and the CUDA toolkit at build time); without it a
/// CUDA request is a clear error, never a silent fall-back to the CPU.
pub fn parse_device(name: &str) -> Result<Device, FeaturesError> {
    let err = |what: String| FeaturesError::Device { name: name.to_string(), what };
    let lower = name.trim().to_ascii_lowercase();
    if lower == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match lower.as_str() {
        "cuda" | "gpu" => 0,
        _ => match lower.strip_prefix("cuda:") {
            Some(n) => n.parse::<usize>().map_err(|_| err("expected cuda:N with N a GPU number".into()))?,
            None => return Err(err("expected `cpu`, `cuda` or `cuda:N`".into())),
        },
    };
    if !cfg!(feature = "cuda") {
        return Err(err("this build has no CUDA support; rebuild with `--features cuda`".into()));
    }
    Device::new_cuda(ordinal).map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_parses_and_junk_is_rejected() {
        assert!(matches!(parse_device("cpu"), Ok(Device::Cpu)));
        assert!(matches!(parse_device(" CPU "), Ok(Device::Cpu)));
        assert!(parse_device("tpu").is_err());
        assert!(parse_device("cuda:x").is_err());
        #[cfg(not(feature = "cuda"))]
        assert!(parse_device("cuda:0").unwrap_err().to_string().contains("--features cuda"));
    }
}
