//! Secret key files: small text files, mode 0600, written atomically, with
//! a checksum so that a damaged file is reported, never silently replaced.

use super::{AuthorityKey, DeviceIdentity};
use crate::wire::{hex_decode, hex_encode};
use blake2::{Blake2s256, Digest};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use thiserror::Error;

const DEVICE_HEADER: &str = "natter device key v1";
const AUTHORITY_HEADER: &str = "natter authority key v1";

#[derive(Debug, Error)]
pub enum KeyFileError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key file {path} is corrupt ({reason}); it was left untouched: restore it from a backup, or move it away to make a new identity"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "key file {path} has permissions {mode:04o}, readable by others; run `chmod 600 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
}

fn checksum(parts: &[&[u8; 32]]) -> String {
    let mut h = Blake2s256::new();
    for p in parts {
        h.update(p);
    }
    hex_encode(&h.finalize()[..8])
}

/// Write `contents` to `path` with mode 0600, atomically: a crash leaves
/// either the old file or the new one, never half of one.
fn write_secret(path: &Path, contents: &str) -> Result<(), KeyFileError> {
    let err = |source| KeyFileError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(contents.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

fn read_secret(path: &Path) -> Result<String, KeyFileError> {
    let meta = fs::metadata(path).map_err(|source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::InvalidData => KeyFileError::Corrupt {
            path: path.to_owned(),
            reason: "not text".into(),
        },
        _ => KeyFileError::Read {
            path: path.to_owned(),
            source,
        },
    })
}

/// Parse `header` then `name hex` lines in order, then the checksum.
fn parse<const N: usize>(
    path: &Path,
    text: &str,
    header: &str,
    names: [&str; N],
) -> Result<[[u8; 32]; N], KeyFileError> {
    let corrupt = |reason: String| KeyFileError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let mut lines = text.lines();
    if lines.next() != Some(header) {
        return Err(corrupt(format!("first line is not {header:?}")));
    }
    let mut out = [[0u8; 32]; N];
    for (i, name) in names.iter().enumerate() {
        let line = lines
            .next()
            .ok_or_else(|| corrupt(format!("missing {name}")))?;
        let value = line
            .strip_prefix(name)
            .and_then(|r| r.strip_prefix(' '))
            .ok_or_else(|| corrupt(format!("expected {name}")))?;
        out[i] =
            hex_decode(value).ok_or_else(|| corrupt(format!("{name} is not 64 hex digits")))?;
    }
    let sum = lines
        .next()
        .and_then(|l| l.strip_prefix("checksum "))
        .ok_or_else(|| corrupt("missing checksum".into()))?;
    let refs: Vec<&[u8; 32]> = out.iter().collect();
    if sum != checksum(&refs) {
        return Err(corrupt("checksum mismatch".into()));
    }
    if lines.any(|l| !l.trim().is_empty()) {
        return Err(corrupt("unexpected trailing lines".into()));
    }
    Ok(out)
}

pub fn write_device(path: &Path, id: &DeviceIdentity) -> Result<(), KeyFileError> {
    let ed = id.ed25519_secret();
    let x = id.x25519_secret();
    let text = format!(
        "{DEVICE_HEADER}\ned25519-secret {}\nx25519-secret {}\nchecksum {}\n",
        hex_encode(&ed),
        hex_encode(&x),
        checksum(&[&ed, &x])
    );
    write_secret(path, &text)
}

pub fn read_device(path: &Path) -> Result<DeviceIdentity, KeyFileError> {
    let text = read_secret(path)?;
    let [ed, x] = parse(
        path,
        &text,
        DEVICE_HEADER,
        ["ed25519-secret", "x25519-secret"],
    )?;
    Ok(DeviceIdentity::from_secrets(ed, x))
}

/// Load the device identity at `path`, making one on first run. Returns
/// whether it was created.
pub fn load_or_create_device(path: &Path) -> Result<(DeviceIdentity, bool), KeyFileError> {
    if path.exists() {
        return Ok((read_device(path)?, false));
    }
    let id = DeviceIdentity::generate(&mut rand::rngs::OsRng);
    write_device(path, &id)?;
    Ok((id, true))
}

impl AuthorityKey {
    pub fn write(&self, path: &Path) -> Result<(), KeyFileError> {
        let s = self.secret();
        let text = format!(
            "{AUTHORITY_HEADER}\ned25519-secret {}\nchecksum {}\n",
            hex_encode(&s),
            checksum(&[&s])
        );
        write_secret(path, &text)
    }

    pub fn read(path: &Path) -> Result<Self, KeyFileError> {
        let text = read_secret(path)?;
        let [s] = parse(path, &text, AUTHORITY_HEADER, ["ed25519-secret"])?;
        Ok(AuthorityKey::from_secret(s))
    }

    /// Load the key at `path`, making one on first start.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeyFileError> {
        if path.exists() {
            return Ok((Self::read(path)?, false));
        }
        let k = AuthorityKey::generate(&mut rand::rngs::OsRng);
        k.write(path)?;
        Ok((k, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_key_round_trip_with_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/device.key");
        let (a, created) = load_or_create_device(&p).unwrap();
        assert!(created);
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, created) = load_or_create_device(&p).unwrap();
        assert!(!created);
        assert_eq!(a.ed25519_public(), b.ed25519_public());
        assert_eq!(a.x25519_public(), b.x25519_public());
    }

    #[test]
    fn corrupt_file_is_an_error_and_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("device.key");
        load_or_create_device(&p).unwrap();
        let mut text = fs::read_to_string(&p).unwrap();
        // Change one hex digit of the secret.
        let i = text.find("ed25519-secret ").unwrap() + 15;
        let c = if &text[i..i + 1] == "0" { "1" } else { "0" };
        text.replace_range(i..i + 1, c);
        fs::write(&p, &text).unwrap();
        let err = load_or_create_device(&p).unwrap_err();
        assert!(matches!(err, KeyFileError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("checksum"));
        assert_eq!(fs::read_to_string(&p).unwrap(), text);

        fs::write(&p, "garbage").unwrap();
        assert!(matches!(read_device(&p), Err(KeyFileError::Corrupt { .. })));
        fs::write(&p, [0xff, 0xfe, 0x00]).unwrap();
        assert!(matches!(read_device(&p), Err(KeyFileError::Corrupt { .. })));
    }

    #[test]
    fn open_permissions_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("authority.key");
        AuthorityKey::load_or_create(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            AuthorityKey::read(&p),
            Err(KeyFileError::TooOpen { mode: 0o644, .. })
        ));
    }
}
