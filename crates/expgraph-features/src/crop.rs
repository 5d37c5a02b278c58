//! Image decoding, object-box cropping, resizing and mirroring (spec §3).

use std::io::Cursor;
use std::path::Path;

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::FeaturesError;

/// An 8-bit RGB image, row-major `H × W × 3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `height * width * 3` bytes.
    pub pixels: Vec<u8>,
}

fn image_err(path: &Path, what: impl std::fmt::Display) -> FeaturesError {
    FeaturesError::Image { path: path.to_path_buf(), what: what.to_string() }
}

/// An image reader on `bytes`, its format guessed from the content (the extension of `path` when
/// the content says nothing).
fn reader<'a>(bytes: &'a [u8], path: &Path) -> Result<ImageReader<Cursor<&'a [u8]>>, FeaturesError> {
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| image_err(path, e))?;
    if reader.format().is_none() {
        if let Ok(format) = ImageFormat::from_path(path) {
            reader.set_format(format);
        }
    }
    Ok(reader)
}

fn read_file(path: &Path) -> Result<Vec<u8>, FeaturesError> {
    if !path.is_file() {
        return Err(image_err(path, "file not found"));
    }
    std::fs::read(path).map_err(|e| image_err(path, e))
}

/// Whether `orientation` turns the image by a quarter turn (width and height swap).
fn swaps_sides(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH
    )
}

/// Width and height of an image file as [`load_rgb`] returns it (after its EXIF orientation),
/// without decoding the pixels.
pub fn image_size(path: &Path) -> Result<(u32, u32), FeaturesError> {
    if !path.is_file() {
        return Err(image_err(path, "file not found"));
    }
    let reader = ImageReader::open(path).and_then(|r| r.with_guessed_format()).map_err(|e| image_err(path, e))?;
    let mut decoder = reader.into_decoder().map_err(|e| image_err(path, e))?;
    let (w, h) = decoder.dimensions();
    let orientation = decoder.orientation().map_err(|e| image_err(path, format!("cannot read orientation: {e}")))?;
    Ok(if swaps_sides(orientation) { (h, w) } else { (w, h) })
}

/// Decode a JPEG or PNG file to RGB; gray images are replicated to 3 channels, alpha dropped.
///
/// The image comes upright, as image viewers show it: its EXIF orientation (JPEG, PNG `eXIf`) is
/// applied, so width and height swap for a quarter turn ([`image_size`] says the same). A JPEG
/// whose data end before its end-of-image marker (a truncated file, which the decoder would
/// otherwise complete with gray) is an error, as is a PNG that the decoder finds cut short.
pub fn load_rgb(path: &Path) -> Result<RgbImage, FeaturesError> {
    let bytes = read_file(path)?;
    let reader = reader(&bytes, path)?;
    if reader.format() == Some(ImageFormat::Jpeg) {
        check_jpeg_complete(&bytes).map_err(|what| image_err(path, what))?;
    }
    let mut decoder = reader.into_decoder().map_err(|e| image_err(path, format!("cannot decode: {e}")))?;
    let orientation = decoder.orientation().map_err(|e| image_err(path, format!("cannot read orientation: {e}")))?;
    let mut decoded =
        DynamicImage::from_decoder(decoder).map_err(|e| image_err(path, format!("cannot decode: {e}")))?;
    decoded.apply_orientation(orientation);
    let rgb = decoded.to_rgb8();
    Ok(RgbImage { width: rgb.width(), height: rgb.height(), pixels: rgb.into_raw() })
}

/// Check that a JPEG's data run to its end-of-image marker (`FF D9`).
///
/// Walks the marker segments by their lengths (so an `FF D9` inside a segment, e.g. the EXIF
/// thumbnail, does not count) and the entropy-coded data between them (where `FF 00` is a stuffed
/// byte and `FF D0`..`FF D7` are restart markers), up to the first EOI. Bytes after that EOI
/// (padding, appended data such as MPF secondary images) are allowed; stray bytes between
/// segments are skipped as decoders do. A file that ends before the EOI (or inside a segment)
/// is truncated: the decoder would fill the missing part with gray without an error.
pub(crate) fn check_jpeg_complete(data: &[u8]) -> Result<(), String> {
    let n = data.len();
    let truncated = |at: &str| {
        format!(
            "truncated JPEG: the data ({n} bytes) end {at}, before the end-of-image marker FF D9 \
             (premature end of file)"
        )
    };
    if !data.starts_with(&[0xFF, 0xD8]) {
        return Err("not a JPEG: no start-of-image marker FF D8".into());
    }
    let mut i = 2;
    loop {
        // next marker: skip data (entropy-coded or stray) up to an FF, then fill bytes FF
        match data[i..].iter().position(|&b| b == 0xFF) {
            Some(k) => i += k,
            None => return Err(truncated("in image data")),
        }
        while i < n && data[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = data.get(i) else { return Err(truncated("in image data")) };
        i += 1;
        match marker {
            0xD9 => return Ok(()),
            // stuffed byte, TEM, SOI, restart markers: no length follows
            0x00 | 0x01 | 0xD0..=0xD8 => {}
            _ => {
                let Some(len) = data.get(i..i + 2) else {
                    return Err(truncated(&format!("in marker FF {marker:02X}")));
                };
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                if len < 2 {
                    return Err(format!("corrupt JPEG: segment FF {marker:02X} at byte {} has length {len}", i - 2));
                }
                i += len;
                if i > n {
                    return Err(truncated(&format!("inside segment FF {marker:02X}")));
                }
            }
        }
    }
}

/// Clip an object box `[x0, y0, x1, y1]` (source pixels, 0-based, `x1`/`y1` exclusive) to a
/// `width × height` image. A box that is not finite, or less than one pixel wide or high after
/// clipping, is an error.
pub fn clip_box(id: &str, bbox: [f64; 4], width: u32, height: u32) -> Result<[f64; 4], FeaturesError> {
    let err = |what: String| FeaturesError::Box { id: id.to_string(), what };
    if bbox.iter().any(|v| !v.is_finite()) {
        return Err(err(format!("{bbox:?} has a non-finite coordinate")));
    }
    let (w, h) = (f64::from(width), f64::from(height));
    let clipped = [bbox[0].clamp(0.0, w), bbox[1].clamp(0.0, h), bbox[2].clamp(0.0, w), bbox[3].clamp(0.0, h)];
    if clipped[2] - clipped[0] < 1.0 || clipped[3] - clipped[1] < 1.0 {
        return Err(err(format!(
            "{bbox:?} is empty or under one pixel inside the {width}x{height} image (clipped: {clipped:?})"
        )));
    }
    Ok(clipped)
}

/// Crop `bbox` (already clipped, see [`clip_box`]) from `image` and resize it anisotropically to
/// `size × size` with an antialiased bilinear filter (spec §3, §7 #13). A box that is the whole
/// image at the target size is copied unchanged.
pub fn crop_resize(image: &RgbImage, bbox: [f64; 4], size: usize) -> Result<Vec<u8>, FeaturesError> {
    let whole = [0.0, 0.0, f64::from(image.width), f64::from(image.height)];
    if bbox == whole && image.width as usize == size && image.height as usize == size {
        return Ok(image.pixels.clone());
    }
    let side = u32::try_from(size).map_err(|_| FeaturesError::Input(format!("input size {size} too large")))?;
    let resize_err = |e: &dyn std::fmt::Display| FeaturesError::Input(format!("resize failed: {e}"));
    let src = Image::from_vec_u8(image.width, image.height, image.pixels.clone(), PixelType::U8x3)
        .map_err(|e| resize_err(&e))?;
    let mut dst = Image::new(side, side, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)).crop(
        bbox[0],
        bbox[1],
        bbox[2] - bbox[0],
        bbox[3] - bbox[1],
    );
    Resizer::new().resize(&src, &mut dst, &options).map_err(|e| resize_err(&e))?;
    Ok(dst.into_vec())
}

/// Mirror a `size × size × 3` image left–right (the real flip of spec §7 #1).
pub fn mirror(pixels: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(pixels.len());
    for row in pixels.chunks_exact(size * 3) {
        for px in row.chunks_exact(3).rev() {
            out.extend_from_slice(px);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: u32, h: u32) -> RgbImage {
        let pixels = (0..h).flat_map(|y| (0..w).flat_map(move |x| [x as u8 * 10, y as u8 * 10, 7])).collect();
        RgbImage { width: w, height: h, pixels }
    }

    #[test]
    fn boxes_are_clipped_and_degenerate_ones_rejected() {
        assert_eq!(clip_box("a", [-5.0, 2.0, 30.0, 8.0], 20, 10).unwrap(), [0.0, 2.0, 20.0, 8.0]);
        assert!(clip_box("a", [5.0, 5.0, 5.0, 9.0], 20, 10).is_err(), "zero width");
        assert!(clip_box("a", [8.0, 5.0, 3.0, 9.0], 20, 10).is_err(), "inverted");
        assert!(clip_box("a", [25.0, 0.0, 40.0, 9.0], 20, 10).is_err(), "outside");
        assert!(clip_box("a", [0.0, f64::NAN, 4.0, 9.0], 20, 10).is_err());
        let e = clip_box("img7", [0.0, 0.0, 0.5, 9.0], 20, 10).unwrap_err().to_string();
        assert!(e.contains("img7"), "{e}");
    }

    #[test]
    fn crop_of_a_constant_region_stays_constant() {
        // left half red, right half blue; crop inside the right half
        let (w, h) = (40u32, 20u32);
        let pixels = (0..h).flat_map(|_| (0..w).flat_map(|x| if x < 20 { [255, 0, 0] } else { [0, 0, 255] })).collect();
        let img = RgbImage { width: w, height: h, pixels };
        let out = crop_resize(&img, [24.0, 2.0, 38.0, 18.0], 8).unwrap();
        assert_eq!(out.len(), 8 * 8 * 3);
        assert!(out.chunks_exact(3).all(|p| p == [0, 0, 255]));
    }

    #[test]
    fn anisotropic_resize_keeps_the_ramp_direction() {
        let img = ramp(20, 10);
        let out = crop_resize(&img, [0.0, 0.0, 20.0, 10.0], 16).unwrap();
        // red grows along x, green along y, in every row/column
        for y in 0..16 {
            let row: Vec<u8> = (0..16).map(|x| out[(y * 16 + x) * 3]).collect();
            assert!(row.windows(2).all(|p| p[0] <= p[1]), "{row:?}");
            assert!(row[15] > row[0] + 100);
        }
    }

    #[test]
    fn identity_crop_is_exact() {
        let img = ramp(6, 6);
        assert_eq!(crop_resize(&img, [0.0, 0.0, 6.0, 6.0], 6).unwrap(), img.pixels);
    }

    #[test]
    fn jpeg_walk_finds_the_end_marker_past_segments_and_scan_data() {
        // SOI, APP0 holding FF D9, SOS header, scan data with a stuffed FF 00 and a restart
        // marker, fill bytes, EOI
        let whole: &[u8] = &[
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x06, 0xFF, 0xD9, 0x00, 0x00, 0xFF, 0xDA, 0x00, 0x04, 0x01, 0x02, 0x12, 0xFF,
            0x00, 0x34, 0xFF, 0xD3, 0x56, 0xFF, 0xFF, 0xD9,
        ];
        assert_eq!(check_jpeg_complete(whole), Ok(()));
        let mut tail = whole.to_vec();
        tail.extend_from_slice(b"\0\0 anything");
        assert_eq!(check_jpeg_complete(&tail), Ok(()));
        for cut in 0..whole.len() {
            assert!(check_jpeg_complete(&whole[..cut]).is_err(), "cut at {cut}");
        }
        // a segment length under 2 is corrupt
        assert!(check_jpeg_complete(&[0xFF, 0xD8, 0xFF, 0xDB, 0x00, 0x01, 0xFF, 0xD9])
            .unwrap_err()
            .contains("corrupt"));
    }

    #[test]
    fn mirror_is_a_real_left_right_flip() {
        let img = ramp(4, 4);
        let m = mirror(&img.pixels, 4);
        assert_ne!(m, img.pixels);
        for y in 0..4 {
            for x in 0..4 {
                let (a, b) = ((y * 4 + x) * 3, (y * 4 + 3 - x) * 3);
                assert_eq!(&m[a..a + 3], &img.pixels[b..b + 3]);
            }
        }
        assert_eq!(mirror(&m, 4), img.pixels);
    }
}
