//! Choosing the candle device from a user's string, and describing it.
//!
//! [`parse_device`] turns `cpu`, `cuda`, `gpu` or `cuda:N` into a [`Device`]; a CUDA request in a
//! build without the `cuda` feature, or on a machine without a usable GPU, is a clear error naming
//! the device, never a silent fall-back to the CPU and never a panic. [`device_label`] and
//! [`device_memory`] describe a device for logs, benchmark records and batch sizing.

use candle_core::Device;

use crate::BackboneError;

/// What `parse_device` accepts, for messages.
const DEVICE_CHOICES: &str = "`cpu`, `cuda`, `gpu` or `cuda:N`";

/// Parses `cpu`, `cuda`, `gpu` (both meaning `cuda:0`) or `cuda:N` (any case, surrounding spaces
/// ignored) into a candle [`Device`], opening the GPU for a CUDA request.
///
/// Errors ([`BackboneError::Device`], naming the device):
/// * a name that is none of the above;
/// * a CUDA request in a build without this crate's `cuda` feature ("this build has no CUDA
///   support; rebuild with `--features cuda`");
/// * a CUDA request the driver cannot serve: no driver, no GPU with that number, or a stub
///   `libcuda` (`CUDA_ERROR_STUB_LIBRARY`) — "no usable CUDA GPU (driver error); check
///   `nvidia-smi`, or use --device cpu".
pub fn parse_device(name: &str) -> Result<Device, BackboneError> {
    let lower = name.trim().to_ascii_lowercase();
    if lower == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match lower.as_str() {
        "cuda" | "gpu" => 0,
        _ => match lower.strip_prefix("cuda:") {
            Some(n) => n
                .trim()
                .parse::<usize>()
                .map_err(|_| device_error(name, "expected `cuda:N` with N a GPU number (0, 1, …)"))?,
            None => return Err(device_error(name, &format!("unknown device; expected {DEVICE_CHOICES}"))),
        },
    };
    open_cuda(ordinal)
}

fn device_error(name: &str, what: &str) -> BackboneError {
    BackboneError::Device { name: name.trim().to_string(), what: what.to_string() }
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize) -> Result<Device, BackboneError> {
    Err(device_error(&format!("cuda:{ordinal}"), "this build has no CUDA support; rebuild with `--features cuda`"))
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device, BackboneError> {
    let name = format!("cuda:{ordinal}");
    let unusable = |why: String| {
        device_error(&name, &format!("no usable CUDA GPU ({why}); check `nvidia-smi`, or use --device cpu"))
    };
    // Opening a device only returns driver errors today; the guard keeps a panic deep in the
    // driver bindings from taking the process down all the same.
    match std::panic::catch_unwind(|| Device::new_cuda(ordinal)) {
        Ok(Ok(device)) => Ok(device),
        // The first line: candle appends a backtrace to driver errors.
        Ok(Err(e)) => Err(unusable(e.to_string().lines().next().unwrap_or_default().trim().to_string())),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("the CUDA driver bindings panicked");
            Err(unusable(what.to_string()))
        }
    }
}

/// A short human-readable name of `device` for logs and benchmark records: `cpu`, or for a CUDA
/// device `cuda:N (GPU name, total memory in GiB)`, e.g. `cuda:0 (NVIDIA H200, 140 GiB)` (the
/// parenthesis is left out when the driver cannot tell).
pub fn device_label(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        #[cfg(feature = "cuda")]
        Device::Cuda(cuda) => cuda_label(cuda),
        #[allow(unreachable_patterns)] // Metal, and CUDA without the `cuda` feature (never built)
        other => format!("{other:?}"),
    }
}

#[cfg(feature = "cuda")]
fn cuda_label(cuda: &candle_core::CudaDevice) -> String {
    let stream = cuda.cuda_stream();
    let context = stream.context();
    let label = format!("cuda:{}", context.ordinal());
    match (context.name(), context.total_mem()) {
        (Ok(gpu), Ok(total)) => format!("{label} ({gpu}, {:.0} GiB)", total as f64 / GIB),
        (Ok(gpu), Err(_)) => format!("{label} ({gpu})"),
        (Err(_), _) => label,
    }
}

/// Bytes in a GiB.
#[cfg(feature = "cuda")]
const GIB: f64 = (1u64 << 30) as f64;

/// Free and total memory of `device` in bytes, as the driver reports them now: `Some((free,
/// total))` for a CUDA device, `None` on the CPU, in a build without the `cuda` feature, or when
/// the driver cannot tell.
pub fn device_memory(device: &Device) -> Option<(u64, u64)> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(cuda) => {
            let (free, total) = cuda.cuda_stream().context().mem_get_info().ok()?;
            Some((free as u64, total as u64))
        }
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_parses_in_any_case() {
        for name in ["cpu", " CPU ", "Cpu\n"] {
            assert!(matches!(parse_device(name), Ok(Device::Cpu)), "{name:?}");
        }
        assert_eq!(device_label(&Device::Cpu), "cpu");
        assert_eq!(device_memory(&Device::Cpu), None);
    }

    #[test]
    fn junk_is_an_error_naming_it() {
        for (name, expect) in [("tpu", "cuda:N"), ("cuda:x", "GPU number"), ("cuda:-1", "GPU number"), ("", "cpu")] {
            let err = parse_device(name).unwrap_err();
            assert!(matches!(err, BackboneError::Device { .. }), "{name:?}: {err:?}");
            let msg = err.to_string();
            assert!(msg.starts_with(&format!("device {}:", name.trim())) && msg.contains(expect), "{name:?}: {msg}");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_rebuild() {
        for (name, canonical) in [("cuda:0", "cuda:0"), ("CUDA", "cuda:0"), ("gpu", "cuda:0"), ("cuda:3", "cuda:3")] {
            let msg = parse_device(name).unwrap_err().to_string();
            assert!(
                msg.starts_with(&format!("device {canonical}:")) && msg.contains("rebuild with `--features cuda`"),
                "{name}: {msg}"
            );
        }
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_request_opens_a_gpu_or_says_why_not() {
        match parse_device("cuda:0") {
            Ok(device) => {
                assert!(device.is_cuda());
                assert!(device_label(&device).starts_with("cuda:0"));
                let (free, total) = device_memory(&device).expect("a CUDA device reports its memory");
                assert!(free <= total && total > 0);
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("cuda:0") && msg.contains("no usable CUDA GPU"), "{msg}");
            }
        }
    }
}
