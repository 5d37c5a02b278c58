//! The floating-point precision a backbone computes in.

use candle_core::{DType, Tensor};

use crate::BackboneError;

/// Element type of a backbone's weights and activations while it computes
/// ([`crate::Backbone::set_precision`]). Inputs and returned taps are `f32` whatever the precision.
///
/// Half precision is meant for GPUs (tensor cores; half the memory traffic). On the CPU it works
/// but runs candle's generic convolution instead of the f32-only fast path
/// ([`crate::ConvImpl::Im2colNhwc`]), so it is slower there, not faster; bf16 convolutions on the
/// CPU are computed in f32 from the bf16 values and rounded to bf16 (candle has no CPU bf16
/// matrix product), which is what a GPU does too (f32 accumulation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// IEEE single precision (the default; the only one every backbone supports).
    #[default]
    F32,
    /// IEEE half precision (10-bit mantissa, range ±65504).
    F16,
    /// bfloat16 (8-bit mantissa, the range of f32).
    Bf16,
}

impl Precision {
    /// All precisions, widest first.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::F16, Precision::Bf16];

    /// The name used on command lines and in records: `f32`, `f16` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }

    /// The precision called `name` (any case, surrounding spaces ignored); an unknown name is
    /// [`BackboneError::UnknownPrecision`], which lists the choices.
    pub fn from_name(name: &str) -> Result<Self, BackboneError> {
        let lower = name.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|p| p.name() == lower)
            .ok_or_else(|| BackboneError::UnknownPrecision(name.to_string()))
    }

    /// The candle element type.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Bf16 => DType::BF16,
        }
    }

    /// Whether this is one of the 16-bit precisions.
    pub fn is_half(self) -> bool {
        self != Precision::F32
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = BackboneError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s)
    }
}

/// candle's `conv2d` (dilation 1, one group), also for bf16 on the CPU, where candle 0.11 has no
/// bf16 matrix product: there the bf16 operands are widened to f32 (exactly), convolved and the
/// result rounded to bf16 — bf16 operands, f32 accumulation, a bf16 result, as on a GPU.
pub(crate) fn conv2d(x: &Tensor, weight: &Tensor, padding: usize, stride: usize) -> candle_core::Result<Tensor> {
    if x.dtype() == DType::BF16 && x.device().is_cpu() {
        x.to_dtype(DType::F32)?.conv2d(&weight.to_dtype(DType::F32)?, padding, stride, 1, 1)?.to_dtype(DType::BF16)
    } else {
        x.conv2d(weight, padding, stride, 1, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for p in Precision::ALL {
            assert_eq!(Precision::from_name(p.name()).unwrap(), p);
            assert_eq!(p.to_string(), p.name());
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
        }
        assert_eq!(Precision::from_name(" BF16 ").unwrap(), Precision::Bf16);
        assert_eq!(Precision::default(), Precision::F32);
        assert_eq!(Precision::F16.dtype(), DType::F16);
        assert_eq!(Precision::Bf16.dtype(), DType::BF16);
        assert!(!Precision::F32.is_half() && Precision::F16.is_half());
        for bad in ["f64", "half", "", "fp16"] {
            let err = Precision::from_name(bad).unwrap_err();
            assert!(matches!(err, BackboneError::UnknownPrecision(_)));
            let msg = err.to_string();
            assert!(msg.contains(&format!("`{bad}`")) && msg.contains("f32, f16, bf16"), "{msg}");
        }
    }
}
