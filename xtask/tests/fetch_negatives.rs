//! `cargo xtask fetch-negatives --from <shared>/data/negatives`: the local copy of the paper's
//! negatives installs and verifies; a corrupted copy is refused and leaves nothing behind.
//! Skips with a printed reason when `../shared` (or `$EXPGRAPH_SHARED`) is absent.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `<shared>/data/negatives`, or `None` with the reason printed.
fn shared_negatives() -> Option<PathBuf> {
    let shared = std::env::var_os("EXPGRAPH_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")));
    let negatives = shared.join("data/negatives");
    if !negatives.is_dir() {
        eprintln!("skipping: {} not found (set EXPGRAPH_SHARED)", negatives.display());
        return None;
    }
    Some(negatives)
}

fn fetch_negatives(from: &Path, dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["fetch-negatives", "--from"])
        .arg(from)
        .arg("--dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("xtask runs")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn file_count(dir: &Path) -> usize {
    std::fs::read_dir(dir).expect("readable folder").count()
}

/// A writable copy of `src` in `dst`.
fn copy_folder(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let to = dst.join(path.file_name().unwrap());
        std::fs::write(&to, std::fs::read(&path).unwrap()).unwrap();
    }
}

#[test]
fn fetch_negatives_from_the_shared_copy_installs_and_verifies() {
    let Some(shared) = shared_negatives() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");

    let out = fetch_negatives(&shared, &data);
    assert!(out.status.success(), "{}", text(&out));
    let installed = data.join("negatives");
    assert_eq!(file_count(&installed), 1000);
    assert_eq!(file_count(&data), 1, "only negatives/ in {}, no temporary folder", data.display());
    for name in ["00001.JPEG", "00500.JPEG", "01000.JPEG"] {
        assert_eq!(std::fs::read(installed.join(name)).unwrap(), std::fs::read(shared.join(name)).unwrap());
    }

    // Again: already there and verified, nothing to do.
    let out = fetch_negatives(&shared, &data);
    assert!(out.status.success() && text(&out).contains("nothing to do"), "{}", text(&out));

    // An installed copy that no longer verifies is reported, and left as it is.
    std::fs::write(installed.join("00007.JPEG"), b"not a jpeg").unwrap();
    let out = fetch_negatives(&shared, &data);
    assert!(!out.status.success(), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("00007.JPEG") && msg.contains("already exists"), "{msg}");
    assert_eq!(std::fs::read(installed.join("00007.JPEG")).unwrap(), b"not a jpeg");
    assert_eq!(file_count(&installed), 1000);
}

#[test]
fn fetch_negatives_refuses_a_corrupted_copy() {
    let Some(shared) = shared_negatives() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let corrupt = tmp.path().join("corrupt");
    copy_folder(&shared, &corrupt);
    let mut bytes = std::fs::read(corrupt.join("00500.JPEG")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(corrupt.join("00500.JPEG"), bytes).unwrap();

    let data = tmp.path().join("data");
    let out = fetch_negatives(&corrupt, &data);
    assert!(!out.status.success(), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("00500.JPEG") && msg.contains("sha256"), "{msg}");
    assert!(!data.exists(), "nothing is left behind");

    // A missing file is named too.
    std::fs::write(corrupt.join("00500.JPEG"), std::fs::read(shared.join("00500.JPEG")).unwrap()).unwrap();
    std::fs::remove_file(corrupt.join("00999.JPEG")).unwrap();
    let out = fetch_negatives(&corrupt, &data);
    assert!(!out.status.success() && text(&out).contains("00999.JPEG"), "{}", text(&out));
    assert!(!data.exists(), "nothing is left behind");
}
