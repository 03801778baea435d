//! The device's files in the data dir: its identity keys and its current
//! certificate.

use crate::identity::{Certificate, DeviceIdentity, KeyFileError, load_or_create_device};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DeviceError {
    #[error(transparent)]
    Key(#[from] KeyFileError),
    #[error("certificate file {path}: {message}")]
    Certificate { path: PathBuf, message: String },
}

/// Paths of a device's state under one data dir.
#[derive(Debug, Clone)]
pub struct DeviceFiles {
    pub dir: PathBuf,
}

impl DeviceFiles {
    pub fn new(dir: &Path) -> Self {
        DeviceFiles {
            dir: dir.to_owned(),
        }
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join("device.key")
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("certificate")
    }

    /// Load the identity, making it on first run.
    pub fn identity(&self) -> Result<(DeviceIdentity, bool), DeviceError> {
        Ok(load_or_create_device(&self.key_path())?)
    }

    /// The saved certificate, if any. Undecodable files are errors, not
    /// silently ignored.
    pub fn certificate(&self) -> Result<Option<Certificate>, DeviceError> {
        let path = self.cert_path();
        match std::fs::read(&path) {
            Ok(bytes) => {
                Certificate::decode(&bytes)
                    .map(Some)
                    .map_err(|e| DeviceError::Certificate {
                        path,
                        message: format!("corrupt ({e}); log in again to replace it"),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DeviceError::Certificate {
                path,
                message: e.to_string(),
            }),
        }
    }

    /// Save atomically.
    pub fn save_certificate(&self, cert: &Certificate) -> Result<(), DeviceError> {
        use std::io::Write;
        let path = self.cert_path();
        let err = |e: std::io::Error| DeviceError::Certificate {
            path: path.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(&self.dir).map_err(err)?;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(&cert.encode()).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)
    }
}
