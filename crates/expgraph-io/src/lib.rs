//! # expgraph-io
//!
//! Small plumbing every stage shares: the one atomic file writer, the progress sink through
//! which libraries report long work (only the CLI draws it, see [`ProgressSink`]), and what
//! Linux's `/proc` says of the host (memory, and [`CpuTicks`]: how much CPU time a virtual
//! machine's host took away, which the benchmark records keep).
//!
//! The one atomic file writer of expgraph. Every file the project writes goes through
//! [`write_atomic`] (or its shorthands [`write_bytes`] and [`write_json`]): the content goes to a
//! temp file in the target's folder, the file is synced, renamed over the target
//! ([`tempfile::NamedTempFile::persist`]), and the folder is synced, so a reader sees the old file
//! or the new one, never a part, even after a crash. On error the temp file is removed.
//!
//! New files get mode `0666` minus the process umask (`0644` under the usual umask), like any
//! file a program creates.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("out/value.json");
//! expgraph_io::write_json(&path, &[1, 2, 3]).unwrap();
//! assert_eq!(std::fs::read_to_string(&path).unwrap(), "[\n  1,\n  2,\n  3\n]\n");
//! ```

mod host;
mod lock;
mod progress;

pub use host::{peak_rss_bytes, total_memory_bytes, CpuTicks};
pub use lock::{DirLock, LOCK_FILE};
pub use progress::{Progress, ProgressSink};

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// The folder `path` lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Write `path` atomically through `fill`: a temp file beside it (its folder is created), synced,
/// renamed into place, then the folder synced. Nothing is left behind on error.
pub fn write_atomic(path: &Path, fill: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(&dir)?;
    let prefix = temp_prefix(path)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the output path has no file name"))?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let tmp = builder.tempfile_in(&dir)?;
    {
        let mut w = BufWriter::new(tmp.as_file());
        fill(&mut w)?;
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(&dir);
    Ok(())
}

/// Fail early, before long work, when `dir` cannot take output: it is created if missing and a
/// probe file is written into it and removed.
pub fn check_writable(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    tempfile::Builder::new().prefix(".expgraph-probe.").tempfile_in(dir).map(drop)
}

/// [`write_atomic`] of a byte slice.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic(path, |w| w.write_all(bytes))
}

/// [`write_atomic`] of `value` as pretty JSON with a final newline.
pub fn write_json<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> io::Result<()> {
    let mut text = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    text.push(b'\n');
    write_bytes(path, &text)
}

/// The temp-file name prefix [`write_atomic`] uses for `path`: `.<name>.`
fn temp_prefix(path: &Path) -> Option<String> {
    Some(format!(".{}.", path.file_name()?.to_string_lossy()))
}

/// Remove temp files that an interrupted [`write_atomic`] of `path` left beside it (a killed
/// process cannot clean up). Call it only while no other process writes `path`. Returns how many
/// were removed.
pub fn remove_stale_temps(path: &Path) -> io::Result<usize> {
    let Some(prefix) = temp_prefix(path) else { return Ok(0) };
    let dir = parent_dir(path);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".tmp") && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Persist a rename in `dir` (best effort: not every platform can sync a folder).
pub fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        write_bytes(&path, b"first, longer content").unwrap();
        write_bytes(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(entries(dir.path()), ["a.bin"]);
    }

    #[test]
    fn a_failing_fill_keeps_the_old_file_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        write_bytes(&path, b"old").unwrap();
        let err = write_atomic(&path, |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("encoder failed"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "encoder failed");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(entries(dir.path()), ["a.txt"]);
    }

    #[test]
    fn stale_temps_of_one_file_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard.bin");
        for name in [".shard.bin.abc123.tmp", ".shard.bin.x.tmp", ".other.bin.abc.tmp", "shard.bin.tmp", "keep.txt"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        assert_eq!(remove_stale_temps(&path).unwrap(), 2);
        assert_eq!(entries(dir.path()), [".other.bin.abc.tmp", "keep.txt", "shard.bin.tmp"]);
        assert_eq!(remove_stale_temps(&dir.path().join("missing/x")).unwrap(), 0);
    }

    #[test]
    fn creates_folders_and_rejects_a_path_without_a_name() {
        let dir = tempfile::tempdir().unwrap();
        write_json(&dir.path().join("x/y/z.json"), &serde_json::json!({"k": 1})).unwrap();
        assert!(dir.path().join("x/y/z.json").is_file());
        assert!(write_bytes(Path::new("/"), b"x").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn new_files_get_the_mode_of_a_plain_create() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        std::fs::File::create(dir.path().join("plain")).unwrap();
        write_bytes(&dir.path().join("atomic"), b"x").unwrap();
        assert_eq!(mode(&dir.path().join("atomic")), mode(&dir.path().join("plain")));
    }
}
