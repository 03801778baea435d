//! One natter process per data dir. Two processes on one data dir would
//! both write the same SQLite files, certificate and host cache; the
//! long-running modes (softphone, headless, supernode, authority) hold an
//! exclusive `flock` on `natter.lock` in the data dir while they run, and
//! the file names the holder's PID so the second one can say who has it.
//! The kernel drops the lock when the process ends, however it ends, so a
//! crash never leaves a stale lock behind. Short commands (`login`,
//! `admin`, ...) take no lock: they must work beside a running node.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DataDirError {
    #[error(
        "the data dir {dir} is in use by another natter{}; run one natter per data dir (--data-dir picks another)",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse { dir: PathBuf, pid: Option<u32> },
    #[error("data dir {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held for as long as the process uses the data dir; dropping it (or
/// exiting) releases the lock.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Make the data dir if missing (0700), then lock it or say who holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, DataDirError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| DataDirError::Io { path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        let path = dir.join("natter.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io(&path))?;
        // SAFETY: flock on a descriptor we own; the result is checked.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(&path)(e));
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(DataDirError::InUse {
                dir: dir.to_owned(),
                pid: text.trim().parse().ok(),
            });
        }
        file.set_len(0).map_err(io(&path))?;
        file.rewind().map_err(io(&path))?;
        writeln!(file, "{}", std::process::id()).map_err(io(&path))?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = DataDirLock::acquire(&data).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // flock locks belong to the open file description: a second open
        // in this process conflicts just as another process would.
        match DataDirLock::acquire(&data) {
            Err(DataDirError::InUse { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        let e = DataDirLock::acquire(&data).unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(first);
        DataDirLock::acquire(&data).unwrap();
    }
}
