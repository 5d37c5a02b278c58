//! One forward pass: RGB crops → pre-ReLU maps of the requested taps, as `f32` on the host.

use std::time::Instant;

use candle_core::{DType, Tensor};
use expgraph_backbone::{Backbone, Preprocess};

use crate::stats::NORMALIZED_MAX;
use crate::FeaturesError;

/// Shape and values of one tap's output for a batch.
#[derive(Debug, Clone)]
pub struct TapOutput {
    /// `[N, C, H, W]`.
    pub shape: [usize; 4],
    /// Row-major values.
    pub values: Vec<f32>,
}

impl TapOutput {
    /// Values of image `i` (`[C, H, W]`).
    pub fn image(&self, i: usize) -> &[f32] {
        let per = self.shape[1] * self.shape[2] * self.shape[3];
        &self.values[i * per..(i + 1) * per]
    }
}

/// Seconds spent in each step of [`forward_crops_timed`], added up over calls.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ForwardTimes {
    /// Pixel normalization and the host → device copy.
    pub upload_s: f64,
    /// The forward pass, up to a device synchronization.
    pub forward_s: f64,
    /// The device → host copy of the maps.
    pub download_s: f64,
}

/// Run `backbone` on `crops` (`size × size × 3` RGB each) and return the pre-ReLU maps of `taps`.
pub fn forward_crops(
    backbone: &dyn Backbone,
    preprocess: Preprocess,
    crops: &[&[u8]],
    size: usize,
    taps: &[&str],
) -> Result<Vec<TapOutput>, FeaturesError> {
    forward_crops_timed(backbone, preprocess, crops, size, taps, &mut ForwardTimes::default())
}

/// [`forward_crops`], adding the time of each step to `times`. On a GPU the device is
/// synchronized after the forward pass, so `forward_s` holds the kernels' time, not their launch.
pub fn forward_crops_timed(
    backbone: &dyn Backbone,
    preprocess: Preprocess,
    crops: &[&[u8]],
    size: usize,
    taps: &[&str],
    times: &mut ForwardTimes,
) -> Result<Vec<TapOutput>, FeaturesError> {
    forward_impl(backbone, preprocess, crops, size, taps, None, times)
}

/// [`forward_crops_timed`] with the per-unit normalization done on the backbone's device:
/// `divisors[i]` (`[C, H, W]`, on the device) divides tap `i` after a ReLU, values are capped at
/// [`NORMALIZED_MAX`] and sent to the host as f16 (half the bytes of f32), then widened. The
/// values equal the host's normalization ([`crate::normalize_in_place`]) rounded to f16, which is
/// what an f16 cache stores.
pub fn forward_crops_normalized_f16(
    backbone: &dyn Backbone,
    preprocess: Preprocess,
    crops: &[&[u8]],
    size: usize,
    taps: &[&str],
    divisors: &[Tensor],
    times: &mut ForwardTimes,
) -> Result<Vec<TapOutput>, FeaturesError> {
    if divisors.len() != taps.len() {
        return Err(FeaturesError::Input(format!("{} divisor maps for {} taps", divisors.len(), taps.len())));
    }
    forward_impl(backbone, preprocess, crops, size, taps, Some(divisors), times)
}

fn forward_impl(
    backbone: &dyn Backbone,
    preprocess: Preprocess,
    crops: &[&[u8]],
    size: usize,
    taps: &[&str],
    divisors: Option<&[Tensor]>,
    times: &mut ForwardTimes,
) -> Result<Vec<TapOutput>, FeaturesError> {
    let clock = Instant::now();
    let input = preprocess.to_tensor(crops, size, backbone.device())?;
    times.upload_s += clock.elapsed().as_secs_f64();
    let clock = Instant::now();
    let outputs = backbone.forward_taps(&input, taps)?;
    backbone.device().synchronize()?;
    times.forward_s += clock.elapsed().as_secs_f64();
    if outputs.len() != taps.len() {
        return Err(FeaturesError::Input(format!("backbone returned {} maps for {} taps", outputs.len(), taps.len())));
    }
    let clock = Instant::now();
    let maps = outputs
        .into_iter()
        .zip(taps)
        .enumerate()
        .map(|(i, (t, name))| {
            let dims = t.dims().to_vec();
            let [n, c, h, w] = dims[..] else {
                return Err(FeaturesError::Input(format!("tap {name}: output shape {dims:?} is not NCHW")));
            };
            if n != crops.len() {
                return Err(FeaturesError::Input(format!("tap {name}: {n} maps for {} images", crops.len())));
            }
            let values = match divisors {
                None => to_host(&t)?,
                Some(divisors) => {
                    let normalized = t
                        .relu()?
                        .broadcast_div(&divisors[i])?
                        .minimum(f64::from(NORMALIZED_MAX))?
                        .to_dtype(DType::F16)?;
                    to_host_f16(&normalized)?
                }
            };
            Ok(TapOutput { shape: [n, c, h, w], values })
        })
        .collect();
    times.download_s += clock.elapsed().as_secs_f64();
    maps
}

/// `t` as an `f32` host vector. From a GPU the copy goes through a page-locked staging buffer
/// kept per thread: a copy into pageable memory runs at a fraction of the bus speed.
fn to_host(t: &Tensor) -> Result<Vec<f32>, FeaturesError> {
    let t = t.to_dtype(DType::F32)?.flatten_all()?;
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(device) = t.device() {
        return cuda::to_host(&t, device, &cuda::STAGING_F32);
    }
    Ok(t.to_vec1::<f32>()?)
}

/// An f16 tensor to the host (as [`to_host`]), widened to f32 in parallel.
fn to_host_f16(t: &Tensor) -> Result<Vec<f32>, FeaturesError> {
    use half::slice::HalfFloatSliceExt;
    use rayon::prelude::*;
    let t = t.flatten_all()?;
    #[cfg(feature = "cuda")]
    let halves = match t.device() {
        candle_core::Device::Cuda(device) => cuda::to_host(&t, device, &cuda::STAGING_F16)?,
        _ => t.to_vec1::<half::f16>()?,
    };
    #[cfg(not(feature = "cuda"))]
    let halves = t.to_vec1::<half::f16>()?;
    let mut out = vec![0f32; halves.len()];
    const CHUNK: usize = 1 << 16;
    out.par_chunks_mut(CHUNK).zip(halves.par_chunks(CHUNK)).for_each(|(o, h)| h.convert_to_f32_slice(o));
    Ok(out)
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::cell::RefCell;

    use std::thread::LocalKey;

    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, PinnedHostSlice, ValidAsZeroBits};
    use candle_core::cuda_backend::CudaDType;
    use candle_core::{CudaDevice, Storage, Tensor, WithDType};

    use crate::FeaturesError;

    /// A thread's staging buffer for values of type `T`, grown to the largest copy so far.
    pub(super) type Staging<T> = LocalKey<RefCell<Option<PinnedHostSlice<T>>>>;

    thread_local! {
        pub(super) static STAGING_F32: RefCell<Option<PinnedHostSlice<f32>>> = const { RefCell::new(None) };
        pub(super) static STAGING_F16: RefCell<Option<PinnedHostSlice<half::f16>>> = const { RefCell::new(None) };
    }

    fn driver(e: impl std::fmt::Display) -> FeaturesError {
        FeaturesError::Input(format!("copying maps from the GPU: {e}"))
    }

    /// A contiguous f32 tensor on `device` → host, through the staging buffer; a plain copy when
    /// the staging buffer cannot be used (a warning says why).
    pub(super) fn to_host<T>(
        t: &Tensor,
        device: &CudaDevice,
        staging: &'static Staging<T>,
    ) -> Result<Vec<T>, FeaturesError>
    where
        T: CudaDType + WithDType + DeviceRepr + ValidAsZeroBits,
    {
        match staged(t, device, staging) {
            Ok(Some(values)) => return Ok(values),
            Ok(None) => {}
            Err(e) => tracing::warn!("{e}; copying without the page-locked buffer"),
        }
        Ok(t.to_vec1::<T>()?)
    }

    /// The staged copy, or `None` for a tensor that is not one contiguous CUDA buffer.
    fn staged<T>(t: &Tensor, device: &CudaDevice, staging: &'static Staging<T>) -> Result<Option<Vec<T>>, FeaturesError>
    where
        T: CudaDType + WithDType + DeviceRepr + ValidAsZeroBits,
    {
        let (storage, layout) = t.storage_and_layout();
        let (Storage::Cuda(storage), Some((start, end))) = (&*storage, layout.contiguous_offsets()) else {
            return Ok(None);
        };
        let source = storage.as_cuda_slice::<T>()?.slice(start..end);
        let stream = device.cuda_stream();
        let len = end - start;
        staging.with(|cell| {
            let mut staging = cell.borrow_mut();
            let fits =
                staging.as_ref().is_some_and(|s| s.len() >= len && s.context().ordinal() == stream.context().ordinal());
            if !fits {
                *staging = None; // free the old buffer first
                                 // SAFETY: the buffer is read only after the copy into it has completed (the
                                 // stream is synchronized below). Flags 0: plain page-locked memory (cudarc's
                                 // default, write-combined, is slow to read back on the host).
                *staging = Some(unsafe { stream.context().alloc_pinned_with_flags::<T>(len, 0) }.map_err(driver)?);
            }
            let Some(buffer) = staging.as_mut() else {
                return Err(driver("no staging buffer"));
            };
            // The copy moves as many bytes as its destination holds: exactly `len` values.
            let target = &mut buffer.as_mut_slice().map_err(driver)?[..len];
            stream.memcpy_dtoh(&source, target).map_err(driver)?;
            stream.synchronize().map_err(driver)?;
            Ok(Some(target.to_vec()))
        })
    }
}
