//! Accounts in an embedded SQLite file, opened by [`crate::sqlite`]: WAL
//! mode, full fsync on commit (a registration the authority confirmed
//! survives a crash), and a schema versioned by `PRAGMA user_version` with
//! forward-only migrations.

use super::core::AccountInfo;
use crate::identity::{Role, Username};
use crate::sqlite::{Schema, SqliteError};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error(transparent)]
    Sqlite(#[from] SqliteError),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("no account named {0}")]
    NoSuchAccount(String),
}

/// The accounts file (opened by [`crate::sqlite`]).
const SCHEMA: Schema = Schema {
    what: "account database",
    migrations: MIGRATIONS,
};

/// Each entry moves the schema from version i to i + 1.
const MIGRATIONS: &[&str] = &[
    // 1: accounts.
    "CREATE TABLE accounts (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'supernode')),
        disabled INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        last_login INTEGER
    );",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub username: String,
    pub password_hash: String,
    pub info: AccountInfo,
    pub created_at: u64,
    pub last_login: Option<u64>,
}

pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Verified against for unknown users, so that a miss costs as much
    /// time as a wrong password.
    dummy_hash: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

pub fn hash_password(password: &str) -> Result<String, StoreError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Hash(e.to_string()))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::with(path, SCHEMA.open(path)?)
    }

    /// Open an account database that must exist already (`natter admin`):
    /// a wrong data dir is an error, not a new empty database.
    pub fn open_existing(path: &Path) -> Result<Self, StoreError> {
        Self::with(path, SCHEMA.open_existing(path)?)
    }

    fn with(path: &Path, conn: rusqlite::Connection) -> Result<Self, StoreError> {
        Ok(Store {
            path: path.to_owned(),
            conn: Mutex::new(conn),
            dummy_hash: hash_password("natter dummy password")?,
        })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        SCHEMA.error(&self.path, source).into()
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (it has its own transactions), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Insert an account with an already computed hash. `Ok(false)` if the
    /// name is taken. Returns only after the commit is on disk.
    pub fn insert_account(
        &self,
        user: &Username,
        password_hash: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        let r = self.conn().execute(
            "INSERT INTO accounts (username, password_hash, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(username) DO NOTHING",
            params![user.as_str(), password_hash, now as i64],
        );
        r.map(|n| n == 1).map_err(|e| self.err(e))
    }

    pub fn account(&self, user: &Username) -> Result<Option<Account>, StoreError> {
        self.conn()
            .query_row(
                "SELECT username, password_hash, role, disabled, created_at, last_login
                 FROM accounts WHERE username = ?1",
                params![user.as_str()],
                |r| {
                    let role: String = r.get(2)?;
                    Ok(Account {
                        username: r.get(0)?,
                        password_hash: r.get(1)?,
                        info: AccountInfo {
                            role: if role == "supernode" {
                                Role::Supernode
                            } else {
                                Role::User
                            },
                            disabled: r.get::<_, i64>(3)? != 0,
                        },
                        created_at: r.get::<_, i64>(4)? as u64,
                        last_login: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Check a password; unknown users cost one argon2 verification too.
    pub fn check_password(
        &self,
        user: &Username,
        password: &str,
    ) -> Result<Result<AccountInfo, bool>, StoreError> {
        match self.account(user)? {
            Some(a) if verify_password(password, &a.password_hash) => Ok(Ok(a.info)),
            Some(_) => Ok(Err(true)),
            None => {
                let _ = verify_password(password, &self.dummy_hash);
                Ok(Err(false))
            }
        }
    }

    pub fn touch_login(&self, user: &Username, now: u64) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE accounts SET last_login = ?2 WHERE username = ?1",
                params![user.as_str(), now as i64],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn set_role(&self, user: &Username, role: Role) -> Result<(), StoreError> {
        let n = self
            .conn()
            .execute(
                "UPDATE accounts SET role = ?2 WHERE username = ?1",
                params![user.as_str(), role.as_str()],
            )
            .map_err(|e| self.err(e))?;
        if n == 0 {
            return Err(StoreError::NoSuchAccount(user.to_string()));
        }
        Ok(())
    }

    pub fn set_disabled(&self, user: &Username, disabled: bool) -> Result<(), StoreError> {
        let n = self
            .conn()
            .execute(
                "UPDATE accounts SET disabled = ?2 WHERE username = ?1",
                params![user.as_str(), disabled as i64],
            )
            .map_err(|e| self.err(e))?;
        if n == 0 {
            return Err(StoreError::NoSuchAccount(user.to_string()));
        }
        Ok(())
    }

    pub fn count_accounts(&self) -> Result<u64, StoreError> {
        self.conn()
            .query_row("SELECT count(*) FROM accounts", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    pub fn usernames(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT username FROM accounts ORDER BY username")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| r.get(0))
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<String>, _>>();
        rows.map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_lookup_and_case_uniqueness() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.db")).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as u32);
        let h = hash_password("password1").unwrap();
        let alice = Username::parse("Alice").unwrap();
        assert!(s.insert_account(&alice, &h, 1).unwrap());
        assert!(
            !s.insert_account(&Username::parse("ALICE").unwrap(), &h, 2)
                .unwrap()
        );
        assert_eq!(
            s.check_password(&alice, "password1").unwrap(),
            Ok(AccountInfo {
                role: Role::User,
                disabled: false
            })
        );
        assert_eq!(s.check_password(&alice, "password2").unwrap(), Err(true));
        let bob = Username::parse("bob").unwrap();
        assert_eq!(s.check_password(&bob, "password1").unwrap(), Err(false));
        s.set_role(&alice, Role::Supernode).unwrap();
        assert_eq!(
            s.account(&alice).unwrap().unwrap().info.role,
            Role::Supernode
        );
        assert!(matches!(
            s.set_role(&bob, Role::User),
            Err(StoreError::NoSuchAccount(_))
        ));
    }

    #[test]
    fn reopen_keeps_data_and_refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.db");
        {
            let s = Store::open(&p).unwrap();
            s.insert_account(&Username::parse("carol").unwrap(), "x", 1)
                .unwrap();
        }
        let s = Store::open(&p).unwrap();
        assert_eq!(s.count_accounts().unwrap(), 1);
        s.conn().pragma_update(None, "user_version", 99).unwrap();
        drop(s);
        assert!(matches!(
            Store::open(&p),
            Err(StoreError::Sqlite(SqliteError::TooNew { found: 99, .. }))
        ));
    }
}
