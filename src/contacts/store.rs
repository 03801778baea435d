//! The contact list in an SQLite file in the data dir (WAL, schema
//! versioned by `PRAGMA user_version`): who is a contact, in which state of
//! the authorization handshake, and who is blocked.

use super::{ContactState, ContactsError};
use rusqlite::{Connection, params};
use std::path::{Path, PathBuf};

const MIGRATIONS: &[&str] = &[
    // 1: contacts.
    "CREATE TABLE contacts (
        username TEXT PRIMARY KEY,
        state TEXT NOT NULL CHECK (state IN ('none', 'requested', 'pending', 'authorized', 'declined')),
        blocked INTEGER NOT NULL DEFAULT 0,
        greeting TEXT NOT NULL DEFAULT '',
        updated_at INTEGER NOT NULL
    );",
];

/// One stored row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub username: String,
    pub state: ContactState,
    pub blocked: bool,
    pub greeting: String,
    pub updated_at_ms: u64,
}

pub struct ContactStore {
    path: PathBuf,
    conn: Connection,
}

impl std::fmt::Debug for ContactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContactStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ContactStore {
    pub fn open(path: &Path) -> Result<Self, ContactsError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ContactsError::Io {
                path: path.to_owned(),
                source: e,
            })?;
        }
        let conn = Connection::open(path).map_err(|e| ContactsError::store(path, e))?;
        Self::init(path.to_owned(), conn)
    }

    pub fn in_memory() -> Result<Self, ContactsError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| ContactsError::store(&path, e))?;
        Self::init(path, conn)
    }

    fn init(path: PathBuf, mut conn: Connection) -> Result<Self, ContactsError> {
        let e = |err| ContactsError::store(&path, err);
        conn.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(e)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(e)?;
        let version: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(e)?;
        if version as usize > MIGRATIONS.len() {
            return Err(ContactsError::TooNew {
                path,
                found: version,
                known: MIGRATIONS.len() as u32,
            });
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(e)?;
            tx.execute_batch(m).map_err(e)?;
            tx.pragma_update(None, "user_version", i as u32 + 1)
                .map_err(e)?;
            tx.commit().map_err(e)?;
        }
        Ok(ContactStore { path, conn })
    }

    pub fn load(&self) -> Result<Vec<Row>, ContactsError> {
        let e = |err| ContactsError::store(&self.path, err);
        let mut st = self
            .conn
            .prepare("SELECT username, state, blocked, greeting, updated_at FROM contacts ORDER BY username")
            .map_err(e)?;
        let rows = st
            .query_map([], |r| {
                let state: String = r.get(1)?;
                Ok(Row {
                    username: r.get(0)?,
                    state: ContactState::parse(&state).unwrap_or(ContactState::None),
                    blocked: r.get::<_, i64>(2)? != 0,
                    greeting: r.get(3)?,
                    updated_at_ms: r.get::<_, i64>(4)? as u64,
                })
            })
            .map_err(e)?;
        rows.collect::<Result<_, _>>().map_err(e)
    }

    /// Write `row`, or delete it when it holds nothing worth keeping.
    pub fn save(&mut self, row: &Row) -> Result<(), ContactsError> {
        let e = |err| ContactsError::store(&self.path, err);
        if row.state == ContactState::None && !row.blocked {
            self.conn
                .execute(
                    "DELETE FROM contacts WHERE username = ?1",
                    params![row.username],
                )
                .map_err(e)?;
        } else {
            self.conn
                .execute(
                    "INSERT INTO contacts (username, state, blocked, greeting, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (username) DO UPDATE SET state = ?2, blocked = ?3, greeting = ?4, updated_at = ?5",
                    params![
                        row.username,
                        row.state.as_str(),
                        row.blocked as i64,
                        row.greeting,
                        row.updated_at_ms as i64
                    ],
                )
                .map_err(e)?;
        }
        Ok(())
    }
}
