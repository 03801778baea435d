//! The authority's accounts, in one of two backends chosen by `[authority]
//! database`: an embedded SQLite file (the default), opened by
//! [`crate::sqlite`] (WAL mode, full fsync on commit, so a registration
//! the authority confirmed survives a crash, and a schema versioned by
//! `PRAGMA user_version` with forward-only migrations), or a PostgreSQL
//! database ([`super::postgres`]) that several authorities share.
//!
//! With SQLite one authority owns the file and its throttle lives in its
//! memory ([`super::throttle::Throttle`]); with PostgreSQL the throttle is
//! also kept in the database (`shared_*` methods), so a lockout earned
//! through one authority holds at all of them.

use super::core::AccountInfo;
use super::postgres::{PgError, PgStore};
use super::throttle::ThrottlePolicy;
use crate::identity::{Role, Username};
use crate::limits::SourceKey;
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
    #[error(transparent)]
    Postgres(#[from] PgError),
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

pub use super::core::Account;

/// Where the accounts are: `[authority] database` as parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file (a plain path or `sqlite:PATH`).
    Sqlite(PathBuf),
    /// A `postgres://` or `postgresql://` URL.
    Postgres(String),
}

impl std::str::FromStr for Database {
    type Err = String;
    /// A `postgres://` URL is checked here (at config load); a path is
    /// anything else.
    fn from_str(s: &str) -> Result<Self, String> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            super::postgres::parse_url(s)?;
            return Ok(Database::Postgres(s.to_owned()));
        }
        let path = s.strip_prefix("sqlite:").unwrap_or(s);
        if path.is_empty() {
            return Err(
                "empty: expected a file path, \"sqlite:PATH\" or \"postgres://USER@HOST/DB\""
                    .into(),
            );
        }
        if path.contains("://") {
            return Err(format!(
                "{s:?}: unknown database kind; expected a file path, \"sqlite:PATH\" or \"postgres://USER@HOST/DB\""
            ));
        }
        Ok(Database::Sqlite(path.into()))
    }
}

impl<'de> serde::Deserialize<'de> for Database {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Database {
    /// The same database with a relative SQLite path put under `dir`.
    pub fn under(&self, dir: &Path) -> Database {
        match self {
            Database::Sqlite(p) if p.is_relative() => Database::Sqlite(dir.join(p)),
            d => d.clone(),
        }
    }
}

pub struct Store {
    backend: Backend,
    /// Verified against for unknown users, so that a miss costs as much
    /// time as a wrong password.
    dummy_hash: String,
}

enum Backend {
    Sqlite {
        /// For error messages.
        path: PathBuf,
        conn: Mutex<Connection>,
    },
    Postgres(PgStore),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Store");
        match &self.backend {
            Backend::Sqlite { path, .. } => d.field("path", path),
            Backend::Postgres(pg) => d.field("postgres", pg),
        };
        d.finish_non_exhaustive()
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

    /// Open `db`, creating (SQLite) or migrating (both) its schema. A
    /// PostgreSQL password may come from `password_file` instead of the
    /// URL. Blocks: call it off the async runtime.
    pub fn open_database(db: &Database, password_file: Option<&Path>) -> Result<Self, StoreError> {
        match db {
            Database::Sqlite(path) => Self::open(path),
            Database::Postgres(url) => {
                Self::with_backend(Backend::Postgres(PgStore::open(url, password_file)?))
            }
        }
    }

    /// [`Store::open_database`] for `natter admin`: an SQLite file must
    /// exist already.
    pub fn open_existing_database(
        db: &Database,
        password_file: Option<&Path>,
    ) -> Result<Self, StoreError> {
        match db {
            Database::Sqlite(path) => Self::open_existing(path),
            Database::Postgres(_) => Self::open_database(db, password_file),
        }
    }

    fn with(path: &Path, conn: rusqlite::Connection) -> Result<Self, StoreError> {
        Self::with_backend(Backend::Sqlite {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    fn with_backend(backend: Backend) -> Result<Self, StoreError> {
        Ok(Store {
            backend,
            dummy_hash: hash_password("natter dummy password")?,
        })
    }

    /// Whether other authorities may use the same database (then the
    /// throttle is kept there too).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// The SQLite connection and a maker of errors naming its file.
    fn lock<'a>(
        path: &'a Path,
        conn: &'a Mutex<Connection>,
    ) -> (
        std::sync::MutexGuard<'a, Connection>,
        impl Fn(rusqlite::Error) -> StoreError + 'a,
    ) {
        (
            // A panic while holding the lock cannot leave SQLite
            // inconsistent (it has its own transactions), so a poisoned
            // lock is still usable.
            conn.lock().unwrap_or_else(|p| p.into_inner()),
            move |e| StoreError::from(SCHEMA.error(path, e)),
        )
    }

    pub fn schema_version(&self) -> Result<u32, StoreError> {
        match &self.backend {
            Backend::Postgres(pg) => Ok(pg.schema_version()?),
            Backend::Sqlite { path, conn } => {
                let (c, err) = Self::lock(path, conn);
                c.pragma_query_value(None, "user_version", |r| r.get(0))
                    .map_err(err)
            }
        }
    }

    /// Insert an account with an already computed hash. `Ok(false)` if the
    /// name is taken. Returns only after the commit is on disk.
    pub fn insert_account(
        &self,
        user: &Username,
        password_hash: &str,
        now: u64,
    ) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Postgres(pg) => Ok(pg.insert_account(user, password_hash, now)?),
            Backend::Sqlite { path, conn } => {
                let (c, err) = Self::lock(path, conn);
                c.execute(
                    "INSERT INTO accounts (username, password_hash, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(username) DO NOTHING",
                    params![user.as_str(), password_hash, now as i64],
                )
                .map(|n| n == 1)
                .map_err(err)
            }
        }
    }

    pub fn account(&self, user: &Username) -> Result<Option<Account>, StoreError> {
        let (path, conn) = match &self.backend {
            Backend::Postgres(pg) => return Ok(pg.account(user)?),
            Backend::Sqlite { path, conn } => (path, conn),
        };
        let (c, err) = Self::lock(path, conn);
        c.query_row(
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
        .map_err(err)
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

    /// One UPDATE of the account named `?1`; `Ok(false)` if there is none.
    fn update_sqlite(
        path: &Path,
        conn: &Mutex<Connection>,
        sql: &str,
        user: &Username,
        value: &dyn rusqlite::ToSql,
    ) -> Result<bool, StoreError> {
        let (c, err) = Self::lock(path, conn);
        c.execute(sql, params![user.as_str(), value])
            .map(|n| n > 0)
            .map_err(err)
    }

    pub fn touch_login(&self, user: &Username, now: u64) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Postgres(pg) => Ok(pg.touch_login(user, now)?),
            Backend::Sqlite { path, conn } => {
                let sql = "UPDATE accounts SET last_login = ?2 WHERE username = ?1";
                Self::update_sqlite(path, conn, sql, user, &(now as i64)).map(|_| ())
            }
        }
    }

    pub fn set_role(&self, user: &Username, role: Role) -> Result<(), StoreError> {
        let found = match &self.backend {
            Backend::Postgres(pg) => pg.set_role(user, role)?,
            Backend::Sqlite { path, conn } => {
                let sql = "UPDATE accounts SET role = ?2 WHERE username = ?1";
                Self::update_sqlite(path, conn, sql, user, &role.as_str())?
            }
        };
        if !found {
            return Err(StoreError::NoSuchAccount(user.to_string()));
        }
        Ok(())
    }

    pub fn set_disabled(&self, user: &Username, disabled: bool) -> Result<(), StoreError> {
        let found = match &self.backend {
            Backend::Postgres(pg) => pg.set_disabled(user, disabled)?,
            Backend::Sqlite { path, conn } => {
                let sql = "UPDATE accounts SET disabled = ?2 WHERE username = ?1";
                Self::update_sqlite(path, conn, sql, user, &(disabled as i64))?
            }
        };
        if !found {
            return Err(StoreError::NoSuchAccount(user.to_string()));
        }
        Ok(())
    }

    pub fn count_accounts(&self) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Postgres(pg) => Ok(pg.count_accounts()?),
            Backend::Sqlite { path, conn } => {
                let (c, err) = Self::lock(path, conn);
                c.query_row("SELECT count(*) FROM accounts", [], |r| r.get::<_, i64>(0))
                    .map(|n| n as u64)
                    .map_err(err)
            }
        }
    }

    pub fn usernames(&self) -> Result<Vec<String>, StoreError> {
        let (path, conn) = match &self.backend {
            Backend::Postgres(pg) => return Ok(pg.usernames()?),
            Backend::Sqlite { path, conn } => (path, conn),
        };
        let (c, err) = Self::lock(path, conn);
        let mut st = c
            .prepare("SELECT username FROM accounts ORDER BY username")
            .map_err(&err)?;
        let rows = st
            .query_map([], |r| r.get(0))
            .map_err(&err)?
            .collect::<Result<Vec<String>, _>>();
        rows.map_err(err)
    }

    /// A password attempt counted in the shared throttle before it is
    /// hashed: `Err(wait)` if the account or source is locked out at any
    /// authority on this database, else whether the device is known (it
    /// logged in to the account before, through any authority). With
    /// SQLite, whose one authority throttles in memory, always
    /// `Ok(known_device)`.
    pub fn shared_login_attempt(
        &self,
        now_ms: u64,
        user: &Username,
        source: SourceKey,
        ed25519: &[u8; 32],
        known_device: bool,
        policy: &ThrottlePolicy,
    ) -> Result<Result<bool, u64>, StoreError> {
        match &self.backend {
            Backend::Postgres(pg) => {
                Ok(pg.login_attempt(now_ms, user, source, ed25519, known_device, policy)?)
            }
            Backend::Sqlite { .. } => Ok(Ok(known_device)),
        }
    }

    /// The right password: clears the account's shared failures, refunds
    /// the source's attempt and remembers the device (PostgreSQL only).
    pub fn shared_login_succeeded(
        &self,
        now_ms: u64,
        user: &Username,
        source: SourceKey,
        ed25519: &[u8; 32],
        policy: &ThrottlePolicy,
    ) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Postgres(pg) => Ok(pg.login_succeeded(now_ms, user, source, ed25519, policy)?),
            Backend::Sqlite { .. } => Ok(()),
        }
    }

    /// The shared registration limit per source: `Some(wait)` if reached
    /// (PostgreSQL only).
    pub fn shared_registration(
        &self,
        now_ms: u64,
        source: SourceKey,
        policy: &ThrottlePolicy,
    ) -> Result<Option<u64>, StoreError> {
        match &self.backend {
            Backend::Postgres(pg) => Ok(pg.registration(now_ms, source, policy)?),
            Backend::Sqlite { .. } => Ok(None),
        }
    }

    /// Forget shared throttle rows that hold nothing back; the number
    /// deleted (PostgreSQL only).
    pub fn shared_prune(&self, now_ms: u64, policy: &ThrottlePolicy) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Postgres(pg) => Ok(pg.prune(now_ms, policy)?),
            Backend::Sqlite { .. } => Ok(0),
        }
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
        let Backend::Sqlite { conn, .. } = &s.backend else {
            unreachable!()
        };
        conn.lock()
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        drop(s);
        assert!(matches!(
            Store::open(&p),
            Err(StoreError::Sqlite(SqliteError::TooNew { found: 99, .. }))
        ));
    }
}
