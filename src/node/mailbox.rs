//! The durable copy of a supernode's offline mailbox (`mailbox.db` in its
//! data directory): the envelopes it keeps for offline users survive a
//! restart. The core decides what is kept; this applies its
//! [`MailboxChange`]s and hands the rows back at start.

use crate::overlay::supernode::MailboxChange;
use crate::sqlite::{Schema, SqliteError};
use crate::time::UnixMillis;
use rusqlite::{Connection, params};
use std::path::{Path, PathBuf};

const SCHEMA: Schema = Schema {
    what: "supernode mailbox",
    cache_kib: Schema::DEFAULT_CACHE_KIB,
    migrations: &["CREATE TABLE mail (
        user TEXT NOT NULL,
        id BLOB NOT NULL,
        sender TEXT NOT NULL,
        expires_ms INTEGER NOT NULL,
        bytes BLOB NOT NULL,
        PRIMARY KEY (user, id)
    );"],
};

/// The file name in a supernode's data directory.
pub const FILE: &str = "mailbox.db";

/// One kept envelope as stored: recipient, sender, sealed bytes.
pub type Row = (String, String, Vec<u8>);

pub struct MailboxStore {
    conn: Connection,
    path: PathBuf,
}

impl MailboxStore {
    pub fn open(path: &Path) -> Result<Self, SqliteError> {
        Ok(MailboxStore {
            conn: SCHEMA.open(path)?,
            path: path.to_owned(),
        })
    }

    /// Every envelope not yet expired at `now` (the wall clock, as the
    /// envelopes' signed expiries; expired ones are deleted).
    pub fn load(&self, now: UnixMillis) -> Result<Vec<Row>, SqliteError> {
        let e = |err| SCHEMA.error(&self.path, err);
        self.conn
            .execute(
                "DELETE FROM mail WHERE expires_ms <= ?1",
                params![now.get() as i64],
            )
            .map_err(e)?;
        let mut st = self
            .conn
            .prepare("SELECT user, sender, bytes FROM mail ORDER BY rowid")
            .map_err(e)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(e)?;
        rows.collect::<Result<_, _>>().map_err(e)
    }

    /// Apply the core's changes in one transaction.
    pub fn apply(&mut self, changes: &[MailboxChange]) -> Result<(), SqliteError> {
        if changes.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let e = |err| SCHEMA.error(&path, err);
        let tx = self.conn.transaction().map_err(e)?;
        for c in changes {
            match c {
                MailboxChange::Kept {
                    user,
                    sender,
                    id,
                    expires,
                    bytes,
                } => tx.execute(
                    "INSERT OR REPLACE INTO mail (user, id, sender, expires_ms, bytes)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![user, &id[..], sender, expires.get() as i64, &bytes[..]],
                ),
                MailboxChange::Gone { user, id } => tx.execute(
                    "DELETE FROM mail WHERE user = ?1 AND id = ?2",
                    params![user, &id[..]],
                ),
            }
            .map_err(e)?;
        }
        tx.commit().map_err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn kept_mail_survives_reopening_and_gone_mail_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let kept = |id: u8, exp: u64| MailboxChange::Kept {
            user: "bob".into(),
            sender: "alice".into(),
            id: [id; 16],
            expires: UnixMillis(exp),
            bytes: Arc::from(&[id; 40][..]),
        };
        let mut s = MailboxStore::open(&path).unwrap();
        s.apply(&[kept(1, 5_000), kept(2, 5_000), kept(3, 1_000)])
            .unwrap();
        s.apply(&[MailboxChange::Gone {
            user: "bob".into(),
            id: [2; 16],
        }])
        .unwrap();
        drop(s);
        let s = MailboxStore::open(&path).unwrap();
        let rows = s.load(UnixMillis(2_000)).unwrap();
        assert_eq!(rows, vec![("bob".into(), "alice".into(), vec![1; 40])]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
