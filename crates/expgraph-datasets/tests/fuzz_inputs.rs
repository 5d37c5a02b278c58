//! Property tests of the readers on mutated inputs (issue 11): the CUB text files of the
//! `cub-tiny` fixture and of a small synthetic set, and the authors' real MATLAB v7.3 files in
//! `shared/data/annotations` (skipped with a message when absent), cut short, with flipped bits,
//! overwritten bytes, huge integers written over length fields, and odd tokens.
//!
//! Every read must end in an error or a consistent result: never a panic, never a hang (each
//! read runs on its own thread under a time limit), never an allocation sized by a number in
//! the file (a global allocator refuses any single request above [`MAX_ALLOC`]).
//!
//! Cases per property: 64 (24 for the 3 MB MATLAB files) unless `PROPTEST_CASES` is set; the
//! seed is fixed unless `PROPTEST_RNG_SEED` is set.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use expgraph_datasets::{generate_synthetic_cub, read_cub, CubOptions, Dataset, Sampling, SynthParams};

// The harness (bounded runs, capped allocations, byte mutations, JSON edits): expgraph-testkit.
use expgraph_testkit::*;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

// ---- CUB text files ----

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fixtures/cub-tiny")
}

const CUB_FILES: [&str; 7] = [
    "images.txt",
    "bounding_boxes.txt",
    "train_test_split.txt",
    "classes.txt",
    "image_class_labels.txt",
    "parts/parts.txt",
    "parts/part_locs.txt",
];

/// Tokens that break number parsing and id checks.
const NASTY: [&str; 20] = [
    "",
    "0",
    "-1",
    "4294967295",
    "4294967296",
    "18446744073709551616",
    "1000000000000",
    "1e308",
    "-1e308",
    "1e400",
    "1e-320",
    "NaN",
    "inf",
    "-0",
    "0x10",
    "2",
    "\u{0}",
    "\u{feff}1",
    "１",
    "a b",
];

/// One change to a text file.
#[derive(Debug, Clone)]
enum TextEdit {
    /// Replace a whitespace-separated token of a line.
    Token(Index, Index, String),
    /// Write a line twice.
    Duplicate(Index),
    /// Drop a line.
    Drop(Index),
    /// A byte-level change.
    Bytes(Mutation),
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(NASTY.to_vec()).prop_map(String::from),
        1 => any::<u64>().prop_map(|v| v.to_string()),
        1 => any::<f64>().prop_map(|v| format!("{v:?}")),
        1 => "[ -~]{0,12}",
    ]
}

fn text_edit() -> impl Strategy<Value = TextEdit> {
    prop_oneof![
        4 => (any::<Index>(), any::<Index>(), token()).prop_map(|(l, t, s)| TextEdit::Token(l, t, s)),
        1 => any::<Index>().prop_map(TextEdit::Duplicate),
        1 => any::<Index>().prop_map(TextEdit::Drop),
        2 => mutation().prop_map(TextEdit::Bytes),
    ]
}

fn edit_text(bytes: &[u8], edit: &TextEdit) -> Vec<u8> {
    let TextEdit::Bytes(m) = edit else {
        let text = String::from_utf8_lossy(bytes);
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        if lines.is_empty() {
            return bytes.to_vec();
        }
        match edit {
            TextEdit::Token(l, t, s) => {
                let k = l.index(lines.len());
                let line = &mut lines[k];
                let mut tokens: Vec<&str> = line.split_whitespace().collect();
                if !tokens.is_empty() {
                    let k = t.index(tokens.len());
                    tokens[k] = s;
                }
                *line = tokens.join(" ");
            }
            TextEdit::Duplicate(l) => {
                let k = l.index(lines.len());
                lines.insert(k, lines[k].clone());
            }
            TextEdit::Drop(l) => {
                lines.remove(l.index(lines.len()));
            }
            TextEdit::Bytes(_) => unreachable!(),
        }
        return (lines.join("\n") + "\n").into_bytes();
    };
    apply(bytes, m, 64)
}

/// Which objects to keep: everything, the paper's filters, or a sampling list.
fn cub_options() -> impl Strategy<Value = CubOptions> {
    let index = prop::sample::select(vec![0usize, 1, 2, 3, 4, 5, 1 << 40, usize::MAX]);
    prop_oneof![
        Just(CubOptions::default()),
        Just(CubOptions::paper()),
        prop::collection::vec(index, 0..4)
            .prop_map(|v| CubOptions { sampling: Some(Sampling::Indices(v)), ..CubOptions::default() }),
    ]
}

/// What a successful read must satisfy: a consistent data set, no more objects than images.
fn consistent(ds: &Dataset, images_txt: &Path) -> Result<(), TestCaseError> {
    ds.validate().map_err(|m| TestCaseError::fail(format!("inconsistent data set: {m}")))?;
    let lines = std::fs::read_to_string(images_txt).map_or(usize::MAX, |t| t.lines().count());
    prop_assert!(ds.images.len() <= lines, "{} images from {lines} lines", ds.images.len());
    for o in &ds.objects {
        for p in o.parts.iter().flat_map(|p| &p.instances) {
            prop_assert!(p.centre.iter().all(|v| v.is_finite()), "object {}: non-finite part {:?}", o.id, p.centre);
        }
    }
    Ok(())
}

/// A copy of the CUB text files of `from` (and its `images/` folder when `images`) in a new
/// temporary folder.
fn copy_cub(from: &Path, images: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("parts")).unwrap();
    for rel in CUB_FILES {
        std::fs::copy(from.join(rel), dir.path().join(rel)).unwrap();
    }
    if images {
        let mut stack = vec![PathBuf::from("images")];
        while let Some(rel) = stack.pop() {
            std::fs::create_dir_all(dir.path().join(&rel)).unwrap();
            for e in std::fs::read_dir(from.join(&rel)).unwrap() {
                let name = rel.join(e.unwrap().file_name());
                if from.join(&name).is_dir() {
                    stack.push(name);
                } else {
                    std::fs::copy(from.join(&name), dir.path().join(&name)).unwrap();
                }
            }
        }
    }
    dir
}

/// Read the CUB folder `dir` with `file` replaced by `content`.
fn read_mutated_cub(dir: &Path, file: &Path, content: &[u8], options: &CubOptions) -> Result<(), TestCaseError> {
    std::fs::write(dir.join(file), content).unwrap();
    let (d, o) = (dir.to_path_buf(), options.clone());
    let result = bounded(&format!("read_cub with mutated {}", file.display()), move || read_cub(&d, &o));
    match result {
        Ok(ds) => consistent(&ds, &dir.join("images.txt")),
        Err(e) => {
            // The error names a file of the data set (or the sampling list).
            let msg = e.to_string();
            prop_assert!(msg.contains(".txt") || msg.contains("sampling") || msg.contains("images"), "{msg}");
            Ok(())
        }
    }
}

#[test]
fn cub_fixture_text_files_survive_mutation() {
    let tmp = copy_cub(&fixture(), false);
    let originals: Vec<Vec<u8>> = CUB_FILES.iter().map(|f| std::fs::read(fixture().join(f)).unwrap()).collect();
    let strategy = (prop::sample::select((0..CUB_FILES.len()).collect::<Vec<_>>()), text_edit(), cub_options());
    check(64, strategy, |(f, edit, options)| {
        let mutated = edit_text(&originals[f], &edit);
        let result = read_mutated_cub(tmp.path(), Path::new(CUB_FILES[f]), &mutated, &options);
        std::fs::write(tmp.path().join(CUB_FILES[f]), &originals[f]).unwrap();
        result
    });
}

/// A small synthetic CUB set with images, made once.
fn synthetic() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let params = SynthParams { n_images: 6, image_size: 64, seed: 3, ..SynthParams::default() };
        generate_synthetic_cub(dir.path(), &params).unwrap();
        dir
    })
    .path()
}

#[test]
fn synthetic_cub_text_files_and_image_headers_survive_mutation() {
    let src = synthetic();
    let tmp = copy_cub(src, true);
    let first_image = {
        let text = std::fs::read_to_string(src.join("images.txt")).unwrap();
        let rel = text.lines().next().and_then(|l| l.split_whitespace().nth(1)).unwrap().to_string();
        Path::new("images").join(rel)
    };
    let mut files: Vec<PathBuf> = CUB_FILES.iter().map(PathBuf::from).collect();
    files.push(first_image);
    let originals: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(src.join(f)).unwrap()).collect();
    let options = CubOptions { probe_image_sizes: true, ..CubOptions::default() };
    let strategy = (prop::sample::select((0..files.len()).collect::<Vec<_>>()), text_edit(), mutation());
    check(64, strategy, |(f, edit, bytes)| {
        let mutated = if f == CUB_FILES.len() {
            apply(&originals[f], &bytes, 64) // the PNG: its header is in the first 33 bytes
        } else {
            edit_text(&originals[f], &edit)
        };
        let result = read_mutated_cub(tmp.path(), &files[f], &mutated, &options);
        std::fs::write(tmp.path().join(&files[f]), &originals[f]).unwrap();
        result
    });
}

/// Regression: `x + width` that overflows to infinity (or rounds back to `x`) made a box that
/// `Dataset::validate` rejects; such a box is now a parse error naming the line.
#[test]
fn boxes_that_overflow_or_vanish_are_errors() {
    let tmp = copy_cub(&fixture(), false);
    let good = std::fs::read(fixture().join("bounding_boxes.txt")).unwrap();
    for line in
        ["1 1e308 27.0 1e308 304.0", "1 60.0 1e308 325.0 1e308", "1 1e300 27.0 1.0 304.0", "1 60.0 -1e17 325.0 1.0"]
    {
        let text = String::from_utf8(good.clone()).unwrap();
        let text = text.replacen("1 60.0 27.0 325.0 304.0", line, 1);
        std::fs::write(tmp.path().join("bounding_boxes.txt"), text).unwrap();
        let e = read_cub(tmp.path(), &CubOptions::default()).expect_err(line).to_string();
        assert!(e.contains("bounding_boxes.txt:1") && e.contains("box"), "{line}: {e}");
    }
}

/// Regression (found by `synthetic_cub_text_files_and_image_headers_survive_mutation`): an image
/// path `/` in images.txt made `read_cub` probe the root folder (`images/` joined with an
/// absolute path is that path), so a downloaded data set could name any local file. Absolute
/// paths and `..` are now errors naming images.txt and the line.
#[test]
fn image_paths_stay_inside_the_images_folder() {
    let tmp = copy_cub(&fixture(), false);
    for bad in ["/", "/etc/passwd", "../../secret.jpg", "a/../../b.jpg"] {
        std::fs::write(tmp.path().join("images.txt"), format!("1 a.jpg\n2 {bad}\n3 c.jpg\n4 d.jpg\n")).unwrap();
        let e = read_cub(tmp.path(), &CubOptions::default()).expect_err(bad).to_string();
        assert!(e.contains("images.txt:2") && e.contains("leaves images/"), "{bad}: {e}");
    }
    std::fs::write(tmp.path().join("images.txt"), "1 a.jpg\n2 ./b/c.jpg\n3 c.jpg\n4 d.jpg\n").unwrap();
    assert!(read_cub(tmp.path(), &CubOptions::default()).is_ok());
}

/// Huge ids and counts in the text files are plain parse or lookup errors.
#[test]
fn huge_ids_are_errors() {
    let tmp = copy_cub(&fixture(), false);
    for (file, text, expect) in [
        ("images.txt", "18446744073709551616 a.jpg\n", "cannot parse"),
        ("bounding_boxes.txt", "4294967295 1 1 1 1\n", "image id 4294967295"),
        ("parts/part_locs.txt", "1 1000000000000 1 1 1\n", "cannot parse"),
        ("parts/part_locs.txt", "1 4294967295 1 1 1\n", "part id 4294967295"),
        ("image_class_labels.txt", "1 4294967295\n", "class id 4294967295"),
    ] {
        let original = std::fs::read(fixture().join(file)).unwrap();
        std::fs::write(tmp.path().join(file), text).unwrap();
        let e = read_cub(tmp.path(), &CubOptions::default()).expect_err(text).to_string();
        assert!(e.contains(file) && e.contains(expect), "{file}: {e}");
        std::fs::write(tmp.path().join(file), original).unwrap();
    }
}

// ---- MATLAB v7.3 annotation files ----

#[cfg(feature = "mat")]
mod mat {
    use super::*;
    use expgraph_datasets::{read_cub_sampling, read_ilsvrc_part_truth, read_pascal_part, PascalPartOptions};

    fn annotations() -> Option<PathBuf> {
        let shared = std::env::var_os("EXPGRAPH_SHARED")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
        let dir = shared.join("data").join("annotations");
        if dir.is_dir() {
            Some(dir)
        } else {
            eprintln!("skipping: {} not found (set EXPGRAPH_SHARED)", dir.display());
            None
        }
    }

    /// What a MAT reader returned: `Ok(())` when the result is consistent, else what is wrong.
    type Verdict = Result<(), String>;

    fn pascal(path: PathBuf) -> Verdict {
        match read_pascal_part(&path, Path::new("."), "cow", &PascalPartOptions::default()) {
            Ok(ds) => ds.validate(),
            Err(e) => named(&e.to_string(), &path),
        }
    }

    fn ilsvrc(path: PathBuf) -> Verdict {
        match read_ilsvrc_part_truth(&path) {
            Ok(truth) => {
                for t in truth.iter().flatten() {
                    let finite = t.bbox.iter().chain(t.centres_hw.iter().chain(&t.scales_hw).flatten());
                    if !finite.clone().all(|v| v.is_finite()) {
                        return Err(format!("{}: non-finite numbers", t.filename));
                    }
                    if !t.scales_hw.is_empty() && t.scales_hw.len() != t.centres_hw.len() {
                        return Err(format!("{}: scales and centres differ in number", t.filename));
                    }
                }
                Ok(())
            }
            Err(e) => named(&e.to_string(), &path),
        }
    }

    fn sampling(path: PathBuf) -> Verdict {
        match read_cub_sampling(&path) {
            Ok(v) if v.contains(&0) => Err("index 0 in a 1-based list".into()),
            Ok(_) => Ok(()),
            Err(e) => named(&e.to_string(), &path),
        }
    }

    /// An error must name the file.
    fn named(msg: &str, path: &Path) -> Verdict {
        let name = path.file_name().unwrap().to_string_lossy();
        if msg.contains(name.as_ref()) {
            Ok(())
        } else {
            Err(format!("error does not name the file: {msg}"))
        }
    }

    /// Read `name` from the annotations folder mutated `cases` times with `reader`.
    fn fuzz_mat(name: &str, cases: u32, reader: fn(PathBuf) -> Verdict) {
        let Some(dir) = annotations() else { return };
        let original = std::fs::read(dir.join(name)).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(name);
        assert_eq!(reader(dir.join(name)), Ok(()), "the original file reads");
        check(cases, mutation(), |m| {
            // HDF5 metadata (superblock, root group, object headers) starts after the
            // 512-byte MATLAB header; `head` positions land in the first 8 KB.
            std::fs::write(&path, apply(&original, &m, 8192)).unwrap();
            let p = path.clone();
            let verdict = bounded(&format!("{name} with {m:?}"), move || reader(p));
            verdict.map_err(TestCaseError::fail)
        });
    }

    #[test]
    fn pascal_part_truth_survives_mutation() {
        fuzz_mat("voc-part-truth_cow.mat", 24, pascal);
    }

    #[test]
    fn ilsvrc_part_truth_survives_mutation() {
        fuzz_mat("ilsvrc-animalpart-n01503061-truth_part01.mat", 24, ilsvrc);
    }

    #[test]
    fn cub_sampling_survives_mutation() {
        fuzz_mat("cub-sampling.mat", 64, sampling);
    }

    /// Regression (found by `cub_sampling_survives_mutation`, seed 12345): three flipped bits
    /// (bit 1 of byte 1357, bit 3 of byte 1794, bit 0 of byte 2088) gave `validObj` a chunked
    /// layout declaring 35 PB, which hdf5-pure allocated before reading. Now a named error.
    #[test]
    fn cub_sampling_regression_huge_chunked_array() {
        let Some(dir) = annotations() else { return };
        let mut bytes = std::fs::read(dir.join("cub-sampling.mat")).unwrap();
        for (at, bit) in [(1357, 1), (1794, 3), (2088, 0)] {
            bytes[at] ^= 1 << bit;
        }
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("cub-sampling.mat");
        std::fs::write(&path, &bytes).unwrap();
        let p = path.clone();
        let e = bounded("regression", move || read_cub_sampling(&p)).expect_err("a damaged file");
        assert!(e.to_string().contains("cub-sampling.mat"), "{e}");
    }

    /// Every 8-byte little-endian 2000 (`validObj` is 1 × 2000) replaced by a huge count: the
    /// dimension fields of the dataspace among them. Each read is a quick error or a result.
    #[test]
    fn cub_sampling_with_huge_dimensions() {
        let Some(dir) = annotations() else { return };
        let original = std::fs::read(dir.join("cub-sampling.mat")).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("cub-sampling.mat");
        let needle = 2000u64.to_le_bytes();
        let spots: Vec<usize> = original.windows(8).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect();
        assert!(!spots.is_empty(), "the dimension 2000 is stored as a u64");
        for &at in &spots {
            for huge in [1u64 << 60, 1 << 40, 1_000_000_000_000, u64::MAX] {
                let mut bytes = original.clone();
                bytes[at..at + 8].copy_from_slice(&huge.to_le_bytes());
                std::fs::write(&path, &bytes).unwrap();
                let p = path.clone();
                let verdict = bounded(&format!("2000 at {at} set to {huge}"), move || sampling(p));
                assert_eq!(verdict, Ok(()), "2000 at {at} set to {huge}");
            }
        }
    }
}
