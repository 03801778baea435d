//! The contact list in an SQLite file in the data dir (WAL, schema
//! versioned by `PRAGMA user_version`): who is a contact, in which state of
//! the authorization handshake, and who is blocked.

use super::{ContactState, ContactsError};
use crate::sqlite::Schema;
use rusqlite::{Connection, params};
use std::path::{Path, PathBuf};

/// The contact list's file (opened by [`crate::sqlite`]).
pub(super) const SCHEMA: Schema = Schema {
    what: "contact list",
    cache_kib: Schema::SMALL_CACHE_KIB,
    migrations: MIGRATIONS,
};

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
        Ok(ContactStore {
            path: path.to_owned(),
            conn: SCHEMA.open(path)?,
        })
    }

    pub fn in_memory() -> Result<Self, ContactsError> {
        Ok(ContactStore {
            path: PathBuf::from(":memory:"),
            conn: SCHEMA.open_in_memory()?,
        })
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
