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
use crate::time::{UnixMillis, UnixSecs};
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
    cache_kib: Schema::DEFAULT_CACHE_KIB,
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
    // 2: each account's devices (issue 14.9), and when an account was
    // disabled (for the revocation list).
    "CREATE TABLE devices (
        username TEXT NOT NULL,
        ed25519 BLOB NOT NULL,
        name TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        revoked_at INTEGER,
        PRIMARY KEY (username, ed25519)
    );
    CREATE INDEX devices_revoked ON devices (revoked_at);
    ALTER TABLE accounts ADD COLUMN disabled_at INTEGER;",
];

pub use super::core::{Account, Device, DeviceState, MAX_DEVICES, RevokedEntries, default_name};

/// What [`Store::revoke_device`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// This device is revoked now (or was already).
    Revoked(Device),
    /// No device of the account has that id or name.
    NoSuchDevice,
    /// Several devices match; give more of the id.
    Ambiguous,
}

/// Pick the one device `selector` names: its name, or a prefix (at least
/// 4 hex digits) of its id (the hex ed25519 key).
pub fn select_device(devices: &[Device], selector: &str) -> RevokeOutcome {
    let sel = selector.trim().to_ascii_lowercase();
    let by_name: Vec<&Device> = devices.iter().filter(|d| d.name == selector).collect();
    let by_id: Vec<&Device> = if sel.len() >= 4 {
        devices
            .iter()
            .filter(|d| crate::wire::hex_encode(&d.ed25519).starts_with(&sel))
            .collect()
    } else {
        Vec::new()
    };
    let hits = if by_name.len() == 1 { by_name } else { by_id };
    match hits.as_slice() {
        [] => RevokeOutcome::NoSuchDevice,
        [d] => RevokeOutcome::Revoked((*d).clone()),
        _ => RevokeOutcome::Ambiguous,
    }
}

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
        now: UnixSecs,
    ) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Postgres(pg) => Ok(pg.insert_account(user, password_hash, now)?),
            Backend::Sqlite { path, conn } => {
                let (c, err) = Self::lock(path, conn);
                c.execute(
                    "INSERT INTO accounts (username, password_hash, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(username) DO NOTHING",
                    params![user.as_str(), password_hash, now.get() as i64],
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
                    created_at: UnixSecs(r.get::<_, i64>(4)? as u64),
                    last_login: r.get::<_, Option<i64>>(5)?.map(|v| UnixSecs(v as u64)),
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

    pub fn touch_login(&self, user: &Username, now: UnixSecs) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Postgres(pg) => Ok(pg.touch_login(user, now)?),
            Backend::Sqlite { path, conn } => {
                let sql = "UPDATE accounts SET last_login = ?2 WHERE username = ?1";
                Self::update_sqlite(path, conn, sql, user, &(now.get() as i64)).map(|_| ())
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

    /// Disable (from `now`) or enable an account.
    pub fn set_disabled(
        &self,
        user: &Username,
        disabled: bool,
        now: UnixSecs,
    ) -> Result<(), StoreError> {
        let at = disabled.then_some(now.get() as i64);
        let found = match &self.backend {
            Backend::Postgres(pg) => pg.set_disabled(user, disabled, at)?,
            Backend::Sqlite { path, conn } => {
                let (c, err) = Self::lock(path, conn);
                c.execute(
                    "UPDATE accounts SET disabled = ?2, disabled_at = ?3 WHERE username = ?1",
                    params![user.as_str(), disabled as i64, at],
                )
                .map(|n| n > 0)
                .map_err(err)?
            }
        };
        if !found {
            return Err(StoreError::NoSuchAccount(user.to_string()));
        }
        Ok(())
    }

    /// Replace the account's password hash; `Ok(false)` if there is none.
    pub fn set_password_hash(&self, user: &Username, hash: &str) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Postgres(pg) => Ok(pg.set_password_hash(user, hash)?),
            Backend::Sqlite { path, conn } => {
                let sql = "UPDATE accounts SET password_hash = ?2 WHERE username = ?1";
                Self::update_sqlite(path, conn, sql, user, &hash)
            }
        }
    }

    /// A device logged in or renewed: add it to the account's devices (as
    /// `name`, if it is new or a name is given) or mark it seen, unless
    /// it is revoked. A new device beyond [`MAX_DEVICES`] forgets the
    /// least recently seen unrevoked one.
    pub fn device_seen(
        &self,
        user: &Username,
        ed25519: &[u8; 32],
        name: &str,
        now: UnixSecs,
    ) -> Result<DeviceState, StoreError> {
        let (path, conn) = match &self.backend {
            Backend::Postgres(pg) => return Ok(pg.device_seen(user, ed25519, name, now)?),
            Backend::Sqlite { path, conn } => (path, conn),
        };
        let (mut c, err) = Self::lock(path, conn);
        let tx = c.transaction().map_err(&err)?;
        let found: Option<Option<i64>> = tx
            .query_row(
                "SELECT revoked_at FROM devices WHERE username = ?1 AND ed25519 = ?2",
                params![user.as_str(), &ed25519[..]],
                |r| r.get(0),
            )
            .optional()
            .map_err(&err)?;
        let state = match found {
            Some(Some(_)) => DeviceState::Revoked,
            Some(None) => {
                tx.execute(
                    "UPDATE devices SET last_seen = ?3,
                       name = CASE WHEN ?4 = '' THEN name ELSE ?4 END
                     WHERE username = ?1 AND ed25519 = ?2",
                    params![user.as_str(), &ed25519[..], now.get() as i64, name],
                )
                .map_err(&err)?;
                DeviceState::Active
            }
            None => {
                let n: i64 = tx
                    .query_row(
                        "SELECT count(*) FROM devices WHERE username = ?1",
                        params![user.as_str()],
                        |r| r.get(0),
                    )
                    .map_err(&err)?;
                if n as usize >= MAX_DEVICES {
                    tx.execute(
                        "DELETE FROM devices WHERE rowid IN (SELECT rowid FROM devices
                         WHERE username = ?1 ORDER BY revoked_at IS NOT NULL, last_seen LIMIT 1)",
                        params![user.as_str()],
                    )
                    .map_err(&err)?;
                }
                tx.execute(
                    "INSERT INTO devices (username, ed25519, name, first_seen, last_seen)
                     VALUES (?1, ?2, ?3, ?4, ?4)",
                    params![
                        user.as_str(),
                        &ed25519[..],
                        default_name(name, ed25519),
                        now.get() as i64
                    ],
                )
                .map_err(&err)?;
                DeviceState::Active
            }
        };
        tx.commit().map_err(&err)?;
        Ok(state)
    }

    /// The account's devices, oldest first.
    pub fn devices(&self, user: &Username) -> Result<Vec<Device>, StoreError> {
        let (path, conn) = match &self.backend {
            Backend::Postgres(pg) => return Ok(pg.devices(user)?),
            Backend::Sqlite { path, conn } => (path, conn),
        };
        let (c, err) = Self::lock(path, conn);
        let mut st = c
            .prepare(
                "SELECT ed25519, name, first_seen, last_seen, revoked_at FROM devices
                 WHERE username = ?1 ORDER BY first_seen, name",
            )
            .map_err(&err)?;
        let rows = st
            .query_map(params![user.as_str()], |r| {
                let key: Vec<u8> = r.get(0)?;
                Ok((
                    key,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })
            .map_err(&err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(&err)?;
        Ok(rows
            .into_iter()
            .filter_map(|(key, name, first, last, revoked)| {
                Some(Device {
                    ed25519: key.try_into().ok()?,
                    name,
                    first_seen: UnixSecs(first as u64),
                    last_seen: UnixSecs(last as u64),
                    revoked_at: revoked.map(|v| UnixSecs(v as u64)),
                })
            })
            .collect())
    }

    /// Revoke the device `selector` names (see [`select_device`]) at
    /// `now`; a device already revoked keeps its first time.
    pub fn revoke_device(
        &self,
        user: &Username,
        selector: &str,
        now: UnixSecs,
    ) -> Result<RevokeOutcome, StoreError> {
        let out = select_device(&self.devices(user)?, selector);
        let RevokeOutcome::Revoked(d) = &out else {
            return Ok(out);
        };
        match &self.backend {
            Backend::Postgres(pg) => pg.revoke_device(user, &d.ed25519, now)?,
            Backend::Sqlite { path, conn } => {
                let (c, err) = Self::lock(path, conn);
                c.execute(
                    "UPDATE devices SET revoked_at = ?3
                     WHERE username = ?1 AND ed25519 = ?2 AND revoked_at IS NULL",
                    params![user.as_str(), &d.ed25519[..], now.get() as i64],
                )
                .map_err(err)?;
            }
        }
        let mut d = d.clone();
        d.revoked_at.get_or_insert(now);
        Ok(RevokeOutcome::Revoked(d))
    }

    /// What the revocation list holds: devices revoked and accounts
    /// disabled at or after `since` (older ones hold no
    /// certificate that is still valid), as (username, device key) and
    /// usernames, at most `limit` of each, newest first.
    pub fn revocations(&self, since: UnixSecs, limit: usize) -> Result<RevokedEntries, StoreError> {
        let (path, conn) = match &self.backend {
            Backend::Postgres(pg) => return Ok(pg.revocations(since, limit)?),
            Backend::Sqlite { path, conn } => (path, conn),
        };
        let (c, err) = Self::lock(path, conn);
        let mut st = c
            .prepare(
                "SELECT username, ed25519 FROM devices WHERE revoked_at >= ?1
                 ORDER BY revoked_at DESC LIMIT ?2",
            )
            .map_err(&err)?;
        let devices = st
            .query_map(params![since.get() as i64, limit as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(&err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(&err)?
            .into_iter()
            .filter_map(|(u, k)| Some((u, k.try_into().ok()?)))
            .collect();
        let mut st = c
            .prepare(
                "SELECT username FROM accounts WHERE disabled != 0
                 AND (disabled_at IS NULL OR disabled_at >= ?1)
                 ORDER BY disabled_at DESC LIMIT ?2",
            )
            .map_err(&err)?;
        let accounts = st
            .query_map(params![since.get() as i64, limit as i64], |r| r.get(0))
            .map_err(&err)?
            .collect::<Result<Vec<String>, _>>()
            .map_err(&err)?;
        Ok((devices, accounts))
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
        now: UnixMillis,
        user: &Username,
        source: SourceKey,
        ed25519: &[u8; 32],
        known_device: bool,
        policy: &ThrottlePolicy,
    ) -> Result<Result<bool, u64>, StoreError> {
        match &self.backend {
            Backend::Postgres(pg) => {
                Ok(pg.login_attempt(now, user, source, ed25519, known_device, policy)?)
            }
            Backend::Sqlite { .. } => Ok(Ok(known_device)),
        }
    }

    /// The right password: clears the account's shared failures, refunds
    /// the source's attempt and remembers the device (PostgreSQL only).
    pub fn shared_login_succeeded(
        &self,
        now: UnixMillis,
        user: &Username,
        source: SourceKey,
        ed25519: &[u8; 32],
        policy: &ThrottlePolicy,
    ) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Postgres(pg) => Ok(pg.login_succeeded(now, user, source, ed25519, policy)?),
            Backend::Sqlite { .. } => Ok(()),
        }
    }

    /// The shared registration limit per source: `Some(wait)` if reached
    /// (PostgreSQL only).
    pub fn shared_registration(
        &self,
        now: UnixMillis,
        source: SourceKey,
        policy: &ThrottlePolicy,
    ) -> Result<Option<u64>, StoreError> {
        match &self.backend {
            Backend::Postgres(pg) => Ok(pg.registration(now, source, policy)?),
            Backend::Sqlite { .. } => Ok(None),
        }
    }

    /// Forget shared throttle rows that hold nothing back; the number
    /// deleted (PostgreSQL only).
    pub fn shared_prune(
        &self,
        now: UnixMillis,
        policy: &ThrottlePolicy,
    ) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Postgres(pg) => Ok(pg.prune(now, policy)?),
            Backend::Sqlite { .. } => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14.9: devices are listed, a revoked one stays revoked (and
    /// is listed as such), the table per account is bounded, and the
    /// revocation list holds revoked devices and disabled accounts.
    #[test]
    fn devices_revocation_and_password_change() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.db")).unwrap();
        let alice = Username::parse("alice").unwrap();
        s.insert_account(&alice, &hash_password("password1").unwrap(), UnixSecs(1))
            .unwrap();
        assert_eq!(
            s.device_seen(&alice, &[1; 32], "laptop", UnixSecs(10))
                .unwrap(),
            DeviceState::Active
        );
        assert_eq!(
            s.device_seen(&alice, &[2; 32], "", UnixSecs(20)).unwrap(),
            DeviceState::Active
        );
        s.device_seen(&alice, &[1; 32], "", UnixSecs(30)).unwrap();
        let ds = s.devices(&alice).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(
            (ds[0].name.as_str(), ds[0].last_seen),
            ("laptop", UnixSecs(30))
        );
        assert_eq!(ds[1].name, "device-02020202");
        assert_eq!(
            s.revoke_device(&alice, "nope", UnixSecs(40)).unwrap(),
            RevokeOutcome::NoSuchDevice
        );
        let RevokeOutcome::Revoked(d) = s.revoke_device(&alice, "0202", UnixSecs(40)).unwrap()
        else {
            panic!("not revoked")
        };
        assert_eq!((d.ed25519, d.revoked_at), ([2; 32], Some(UnixSecs(40))));
        assert_eq!(
            s.device_seen(&alice, &[2; 32], "", UnixSecs(50)).unwrap(),
            DeviceState::Revoked
        );
        assert!(s.revoke_device(&alice, "laptop", UnixSecs(60)).is_ok());
        let (devs, accts) = s.revocations(UnixSecs(0), 100).unwrap();
        assert_eq!(devs.len(), 2);
        assert!(accts.is_empty());
        assert_eq!(s.revocations(UnixSecs(55), 100).unwrap().0.len(), 1);
        s.set_disabled(&alice, true, UnixSecs(70)).unwrap();
        assert_eq!(
            s.revocations(UnixSecs(65), 100).unwrap().1,
            vec!["alice".to_owned()]
        );
        assert!(s.revocations(UnixSecs(75), 100).unwrap().1.is_empty());
        // Password change.
        assert!(
            s.set_password_hash(&alice, &hash_password("password2").unwrap())
                .unwrap()
        );
        assert_eq!(s.check_password(&alice, "password1").unwrap(), Err(true));
        assert!(s.check_password(&alice, "password2").unwrap().is_ok());
        // Bounded: the 33rd device forgets the least recently seen
        // unrevoked one, never a revoked one.
        for i in 0..40u8 {
            s.device_seen(&alice, &[100 + i; 32], "", UnixSecs(100 + i as u64))
                .unwrap();
        }
        let ds = s.devices(&alice).unwrap();
        assert_eq!(ds.len(), MAX_DEVICES);
        assert_eq!(ds.iter().filter(|d| d.revoked_at.is_some()).count(), 2);
    }

    #[test]
    fn insert_lookup_and_case_uniqueness() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("a.db")).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as u32);
        let h = hash_password("password1").unwrap();
        let alice = Username::parse("Alice").unwrap();
        assert!(s.insert_account(&alice, &h, UnixSecs(1)).unwrap());
        assert!(
            !s.insert_account(&Username::parse("ALICE").unwrap(), &h, UnixSecs(2))
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
            s.insert_account(&Username::parse("carol").unwrap(), "x", UnixSecs(1))
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
