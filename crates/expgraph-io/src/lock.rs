//! An exclusive advisory lock on an output folder, held for a whole run, so that two runs never
//! write into one folder at once.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Name of the lock file inside a locked folder.
pub const LOCK_FILE: &str = ".expgraph.lock";

/// An exclusive lock on a folder (the file [`LOCK_FILE`] in it, locked with the operating
/// system's advisory lock). Released when dropped, also when the process dies.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Lock `dir` (created if missing) for this process. Fails at once, never waits, when another
    /// run holds it; the error names that run (its pid and command line).
    pub fn acquire(dir: &Path) -> io::Result<Self> {
        Self::acquire_named(dir, LOCK_FILE)
    }

    /// Like [`DirLock::acquire`], with the lock file `name` in `dir`: writers of disjoint parts of
    /// one folder (the shards of a sharded extraction) each hold their own lock.
    pub fn acquire_named(dir: &Path, name: &str) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(name);
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() { "another run" } else { holder };
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is in use by {holder}; wait for it to finish or use another folder", dir.display()),
                ));
            }
            Err(TryLockError::Error(e)) => return Err(e),
        }
        let args: Vec<String> = std::env::args().collect();
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "pid {} ({})", std::process::id(), args.join(" "))?;
        file.flush()?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_fails_at_once_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let first = DirLock::acquire(&out).unwrap();
        let err = DirLock::acquire(&out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let msg = err.to_string();
        assert!(msg.contains(&format!("pid {}", std::process::id())) && msg.contains("out"), "{msg}");
        drop(first);
        let again = DirLock::acquire(&out).unwrap();
        assert!(again.path().ends_with(LOCK_FILE));
    }

    #[test]
    fn named_locks_of_one_folder_are_independent() {
        let dir = tempfile::tempdir().unwrap();
        let a = DirLock::acquire_named(dir.path(), ".part-a.lock").unwrap();
        let b = DirLock::acquire_named(dir.path(), ".part-b.lock").unwrap();
        assert_eq!(DirLock::acquire_named(dir.path(), ".part-a.lock").unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_ne!(a.path(), b.path());
    }
}
