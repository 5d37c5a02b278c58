//! Image decoding (issue 11): a truncated JPEG or PNG is an error that names the file, the EXIF
//! orientation is applied as image viewers do, and the real photos and negatives of
//! `shared/data` (when present) all still load.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use expgraph_features::{image_size, load_rgb, RgbImage};

/// A `w × h` image with texture (long entropy-coded data) and a red top-left quadrant.
fn textured(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        if x < w / 2 && y < h / 2 {
            image::Rgb([230, 20, 20])
        } else {
            let v = ((x * 37 + y * 91) ^ (x * y)) as u8;
            image::Rgb([20, v / 4, 200u8.saturating_add(v / 8)])
        }
    })
}

fn encode(img: &image::RgbImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn load_err(path: &Path) -> String {
    match load_rgb(path) {
        Ok(img) => panic!("{} loaded ({}x{}) but should not", path.display(), img.width, img.height),
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains(&path.display().to_string()), "error does not name the file: {e}");
            e
        }
    }
}

/// `jpeg` with an APP1 Exif segment right after SOI holding one IFD0 entry, Orientation (0x0112).
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\0\x2a"); // big-endian TIFF
    tiff.extend_from_slice(&8u32.to_be_bytes()); // IFD0 right after the header
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count 1
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padded to 4 bytes
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&tiff);
    assert_eq!(&jpeg[..2], [0xFF, 0xD8]);
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
    out.extend_from_slice(&u16::try_from(payload.len() + 2).unwrap().to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn px(img: &RgbImage, x: u32, y: u32) -> [u8; 3] {
    let i = ((y * img.width + x) * 3) as usize;
    [img.pixels[i], img.pixels[i + 1], img.pixels[i + 2]]
}

fn is_red(p: [u8; 3]) -> bool {
    p[0] > 150 && p[1] < 90 && p[2] < 90
}

#[test]
fn every_truncation_of_an_in_memory_jpeg_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let jpeg = encode(&textured(64, 48), image::ImageFormat::Jpeg);
    assert_eq!(load_rgb(&write(dir.path(), "whole.jpg", &jpeg)).unwrap().width, 64);
    let mut lenient = 0;
    for cut in 1..jpeg.len() {
        // the decoder alone completes many of these with gray, without an error
        lenient += usize::from(image::load_from_memory(&jpeg[..cut]).is_ok());
        let path = write(dir.path(), &format!("cut{cut}.jpg"), &jpeg[..cut]);
        let e = load_err(&path);
        if cut >= 2 {
            assert!(e.contains("truncated"), "{e}");
        }
    }
    eprintln!("the decoder alone accepted {lenient} of {} truncations", jpeg.len() - 1);
    // a cut in the middle: the message says what happened
    let e = load_err(&write(dir.path(), "half.jpg", &jpeg[..jpeg.len() / 2]));
    assert!(e.contains("premature end"), "{e}");
    // zero padding after a cut (a download cut short into a preallocated file) is still a cut
    let mut padded = jpeg[..jpeg.len() / 2].to_vec();
    padded.resize(jpeg.len() + 100, 0);
    load_err(&write(dir.path(), "padded.jpg", &padded));
}

#[test]
fn bytes_after_the_end_of_image_marker_are_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let jpeg = encode(&textured(64, 48), image::ImageFormat::Jpeg);
    let want = load_rgb(&write(dir.path(), "whole.jpg", &jpeg)).unwrap();
    for tail in [&[0u8; 300][..], b"\xff\xff\xff", b"trailing garbage\xff\xd8\xff\xe0"] {
        let mut bytes = jpeg.clone();
        bytes.extend_from_slice(tail);
        assert_eq!(load_rgb(&write(dir.path(), "tail.jpg", &bytes)).unwrap(), want);
    }
}

#[test]
fn an_end_marker_inside_a_segment_does_not_count() {
    // an APP segment holding FF D9 (like an EXIF thumbnail), then the file cut after it
    let dir = tempfile::tempdir().unwrap();
    let jpeg = encode(&textured(64, 48), image::ImageFormat::Jpeg);
    let thumb = [0xFF, 0xD8, 0x01, 0x02, 0xFF, 0xD9];
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE1, 0, (thumb.len() + 2) as u8];
    bytes.extend_from_slice(&thumb);
    bytes.extend_from_slice(&jpeg[2..]);
    let whole = load_rgb(&write(dir.path(), "thumb.jpg", &bytes)).unwrap();
    assert_eq!((whole.width, whole.height), (64, 48));
    let e = load_err(&write(dir.path(), "thumb-cut.jpg", &bytes[..bytes.len() - 40]));
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn a_truncated_png_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let png = encode(&textured(64, 48), image::ImageFormat::Png);
    assert_eq!(load_rgb(&write(dir.path(), "whole.png", &png)).unwrap().height, 48);
    // every cut up to the IEND chunk (whose absence loses no pixel) fails in the decoder
    for cut in 1..png.len() - 12 {
        let e = load_err(&write(dir.path(), &format!("cut{cut}.png"), &png[..cut]));
        assert!(e.contains(&format!("cut{cut}.png")), "{e}");
    }
}

#[test]
fn exif_orientation_is_applied_as_viewers_do() {
    let dir = tempfile::tempdir().unwrap();
    // 64 wide, 32 high; red top-left quadrant
    let jpeg = encode(&textured(64, 32), image::ImageFormat::Jpeg);

    let plain = write(dir.path(), "plain.jpg", &jpeg);
    let img = load_rgb(&plain).unwrap();
    assert_eq!((img.width, img.height), (64, 32));
    assert!(is_red(px(&img, 8, 8)) && !is_red(px(&img, 56, 24)));

    // 1: upright, nothing to do
    let one = load_rgb(&write(dir.path(), "o1.jpg", &with_exif_orientation(&jpeg, 1))).unwrap();
    assert_eq!(one, img);

    // 6: rotate 90° clockwise to view -> 32 wide, 64 high, red quadrant at the top right
    let path = write(dir.path(), "o6.jpg", &with_exif_orientation(&jpeg, 6));
    assert_eq!(image_size(&path).unwrap(), (32, 64));
    let rot = load_rgb(&path).unwrap();
    assert_eq!((rot.width, rot.height), (32, 64));
    assert!(is_red(px(&rot, 24, 8)), "{:?}", px(&rot, 24, 8));
    assert!(!is_red(px(&rot, 8, 8)) && !is_red(px(&rot, 24, 56)));
    for y in 0..64 {
        for x in 0..32 {
            // viewed (x, y) shows stored (y, 31 - x)
            assert_eq!(px(&rot, x, y), px(&img, y, 31 - x), "({x}, {y})");
        }
    }

    // 3: rotate 180° -> same size, red quadrant at the bottom right
    let path = write(dir.path(), "o3.jpg", &with_exif_orientation(&jpeg, 3));
    assert_eq!(image_size(&path).unwrap(), (64, 32));
    let half = load_rgb(&path).unwrap();
    assert!(is_red(px(&half, 56, 24)) && !is_red(px(&half, 8, 8)));
    assert_eq!(px(&half, 5, 7), px(&img, 63 - 5, 31 - 7));
}

fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("EXPGRAPH_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")))
        .join("data");
    let ok = dir.join("photos/dog.jpg").is_file() && dir.join("negatives").is_dir();
    if !ok {
        eprintln!("skipping: shared/data photos and negatives not found at {} (set EXPGRAPH_SHARED)", dir.display());
    }
    ok.then_some(dir)
}

fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn real_photos_and_negatives_still_load() {
    let Some(data) = shared_data() else { return };
    let photos = sorted_files(&data.join("photos"));
    assert_eq!(photos.len(), 10, "{photos:?}");
    let negatives: Vec<PathBuf> = sorted_files(&data.join("negatives")).into_iter().take(100).collect();
    assert_eq!(negatives.len(), 100);
    for path in photos.iter().chain(&negatives) {
        let img = load_rgb(path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(image_size(path).unwrap(), (img.width, img.height), "{}", path.display());
        assert_eq!(img.pixels.len(), (img.width * img.height * 3) as usize);
    }
}

#[test]
fn a_truncated_real_photo_is_an_error_naming_the_file() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dog = std::fs::read(data.join("photos/dog.jpg")).unwrap();
    // `head -c 54586 dog.jpg`: the decoder alone returns an image ~2/3 gray, without an error
    assert!(image::load_from_memory(&dog[..54586]).is_ok(), "the decoder is no longer lenient");
    let e = load_err(&write(dir.path(), "dog-cut.jpg", &dog[..54586]));
    assert!(e.contains("truncated") && e.contains("dog-cut.jpg"), "{e}");
    let png = std::fs::read(data.join("photos/cat-chelsea.png")).unwrap();
    load_err(&write(dir.path(), "cat-cut.png", &png[..png.len() / 2]));
}
