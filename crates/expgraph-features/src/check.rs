//! Input checks done before any expensive work: every image file is there and its header
//! decodes, so a bad file is named in seconds, not after the normalization statistics.

use std::path::Path;

use crate::FeaturesError;

/// Check that every file in `paths` exists and is an image whose header decodes (format and
/// size), and that a JPEG is complete (ends with its end-of-image marker); the error names the
/// first bad file. `what` says which input (`image`, `negative`).
pub fn check_image_files<'a>(paths: impl IntoIterator<Item = &'a Path>, what: &str) -> Result<usize, FeaturesError> {
    let mut n = 0;
    for path in paths {
        let bytes = std::fs::read(path).map_err(|e| FeaturesError::file(path, e))?;
        let reader = image::ImageReader::new(std::io::Cursor::new(&bytes))
            .with_guessed_format()
            .map_err(|e| FeaturesError::file(path, e))?;
        if reader.format() == Some(image::ImageFormat::Jpeg) {
            crate::crop::check_jpeg_complete(&bytes)
                .map_err(|e| FeaturesError::Input(format!("{what} {}: {e}", path.display())))?;
        }
        let (w, h) = reader
            .into_dimensions()
            .map_err(|e| FeaturesError::Input(format!("{what} {}: not a readable image: {e}", path.display())))?;
        if w == 0 || h == 0 {
            return Err(FeaturesError::Input(format!("{what} {}: empty image ({w}×{h})", path.display())));
        }
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_missing_or_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("ok.png");
        image::RgbImage::from_pixel(4, 3, image::Rgb([1, 2, 3])).save(&good).unwrap();
        assert_eq!(check_image_files([good.as_path()], "image").unwrap(), 1);
        let broken = dir.path().join("broken.jpg");
        std::fs::write(&broken, b"not an image").unwrap();
        let err = check_image_files([good.as_path(), broken.as_path()], "image").unwrap_err().to_string();
        assert!(err.contains("broken.jpg"), "{err}");
        // a truncated JPEG is found before any model runs
        let jpeg = dir.path().join("cut.jpg");
        let mut bytes = Vec::new();
        image::RgbImage::from_pixel(16, 16, image::Rgb([9, 99, 199]))
            .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Jpeg)
            .unwrap();
        std::fs::write(&jpeg, &bytes[..bytes.len() - 40]).unwrap();
        let err = check_image_files([jpeg.as_path()], "image").unwrap_err().to_string();
        assert!(err.contains("cut.jpg") && err.contains("truncated"), "{err}");
        let missing = dir.path().join("missing.jpg");
        let err = check_image_files([missing.as_path()], "negative").unwrap_err().to_string();
        assert!(err.contains("missing.jpg"), "{err}");
    }
}
