//! Accounts, and the throttle state that several authorities must share,
//! in a PostgreSQL database (`[authority] database = "postgres://..."`).
//!
//! The schema is created and migrated by the authority at start, under an
//! advisory lock and in one transaction, so two authorities starting at
//! once apply each migration once; `natter_schema` holds its version. A
//! username is unique by constraint, so a name registered through one
//! authority is taken for all. Connections are kept in a small pool and
//! used from the blocking pool (the `postgres` client is synchronous); a
//! connection that broke is dropped and a new one made on next use, so an
//! authority rides out a database restart.

use super::core::{
    Account, AccountInfo, Device, DeviceState, MAX_DEVICES, RevokedEntries, default_name,
};
use super::throttle::{Failures, ThrottlePolicy};
use crate::identity::{Role, Username};
use crate::limits::SourceKey;
use crate::time::{UnixMillis, UnixSecs};
use postgres::{Client, NoTls, Transaction};
use std::sync::Mutex;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PgError {
    #[error("database URL: {0}")]
    Url(String),
    #[error("database password file {path}: {source}")]
    PasswordFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Postgres {
        what: String,
        source: postgres::Error,
    },
    #[error(
        "{what} has schema version {found}, newer than this build knows ({known}); upgrade natter"
    )]
    TooNew {
        what: String,
        found: i32,
        known: i32,
    },
}

/// Advisory-lock class of the schema migration (any constant unlikely to
/// be used by another program on the same database).
const MIGRATION_LOCK: i64 = 0x6e61_7474_6572_0001;
/// Advisory-lock class of one source's registration count (with the
/// source's hash as the second key).
const REGISTRATION_LOCK: i32 = 0x6e61_7401;

/// Each entry moves the schema from version i to i + 1. Same columns and
/// meanings as the SQLite file's `accounts`.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, the shared throttle, devices that logged in before.
    "CREATE TABLE accounts (
        id BIGSERIAL PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'supernode')),
        disabled BOOLEAN NOT NULL DEFAULT FALSE,
        created_at BIGINT NOT NULL,
        last_login BIGINT
    );
    CREATE TABLE throttle_failures (
        key TEXT PRIMARY KEY,
        count INTEGER NOT NULL,
        last_ms BIGINT NOT NULL,
        locked_until_ms BIGINT NOT NULL
    );
    CREATE TABLE throttle_registrations (
        source TEXT NOT NULL,
        at_ms BIGINT NOT NULL
    );
    CREATE INDEX throttle_registrations_source ON throttle_registrations (source, at_ms);
    CREATE TABLE known_devices (
        ed25519 BYTEA PRIMARY KEY,
        username TEXT NOT NULL,
        last_ms BIGINT NOT NULL
    );",
    // 2: each account's devices (issue 14.9), and when an account was
    // disabled (for the revocation list).
    "CREATE TABLE devices (
        username TEXT NOT NULL,
        ed25519 BYTEA NOT NULL,
        name TEXT NOT NULL,
        first_seen BIGINT NOT NULL,
        last_seen BIGINT NOT NULL,
        revoked_at BIGINT,
        PRIMARY KEY (username, ed25519)
    );
    CREATE INDEX devices_revoked ON devices (revoked_at);
    ALTER TABLE accounts ADD COLUMN disabled_at BIGINT;",
];

/// A device unused this long is a stranger again.
const KNOWN_DEVICE_MS: u64 = 90 * 24 * 3600 * 1000;
const HOUR_MS: u64 = 3_600_000;
/// Idle connections kept for reuse.
const POOL_IDLE: usize = 16;

/// Open connections to one database.
pub struct PgStore {
    config: postgres::Config,
    /// "PostgreSQL database D on H" (no password), for errors and logs.
    what: String,
    /// Connections not in use; a broken one is dropped, not returned.
    idle: Mutex<Vec<Client>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

/// Check a `postgres://` URL (at config load): `Err` says what is wrong.
pub fn parse_url(url: &str) -> Result<postgres::Config, String> {
    let config: postgres::Config = url.parse().map_err(|e: postgres::Error| {
        format!(
            "not a PostgreSQL URL ({e}): expected e.g. \"postgres://natter@db.example.org/natter\""
        )
    })?;
    if config.get_ssl_mode() == postgres::config::SslMode::Require {
        return Err(
            "sslmode=require: this build speaks to PostgreSQL without TLS; use a local socket, a private network or a tunnel".into(),
        );
    }
    Ok(config)
}

fn describe(c: &postgres::Config) -> String {
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(s) => s.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    format!(
        "PostgreSQL database {} on {}",
        c.get_dbname().unwrap_or("(default)"),
        hosts.join(",")
    )
}

fn tx_err(what: &str) -> impl Fn(postgres::Error) -> PgError + '_ {
    move |source| PgError::Postgres {
        what: what.to_owned(),
        source,
    }
}

impl PgStore {
    /// Connect to `url` (with the password from `password_file` if given),
    /// create or migrate the schema.
    pub fn open(url: &str, password_file: Option<&std::path::Path>) -> Result<Self, PgError> {
        let mut config = parse_url(url).map_err(PgError::Url)?;
        if let Some(path) = password_file {
            let text = std::fs::read_to_string(path).map_err(|source| PgError::PasswordFile {
                path: path.to_owned(),
                source,
            })?;
            config.password(text.trim_end_matches(['\r', '\n']));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_application_name().is_none() {
            config.application_name("natter-authority");
        }
        let store = PgStore {
            what: describe(&config),
            config,
            idle: Mutex::new(Vec::new()),
        };
        store.with(|c| store.migrate(c))?;
        Ok(store)
    }

    fn connect(&self) -> Result<Client, PgError> {
        self.config.connect(NoTls).map_err(tx_err(&self.what))
    }

    /// Run `f` on a pooled connection; a connection that broke is dropped.
    fn with<T>(&self, f: impl FnOnce(&mut Client) -> Result<T, PgError>) -> Result<T, PgError> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut client = match pooled {
            Some(c) if !c.is_closed() => c,
            _ => self.connect()?,
        };
        let r = f(&mut client);
        if !client.is_closed() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < POOL_IDLE {
                idle.push(client);
            }
        }
        r
    }

    fn err(&self) -> impl Fn(postgres::Error) -> PgError + '_ {
        tx_err(&self.what)
    }

    fn migrate(&self, c: &mut Client) -> Result<(), PgError> {
        let e = self.err();
        let mut tx = c.transaction().map_err(&e)?;
        // Serialises authorities starting at once; released at commit.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(&e)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS natter_schema (
                component TEXT PRIMARY KEY,
                version INTEGER NOT NULL
            )",
        )
        .map_err(&e)?;
        let found: i32 = tx
            .query_opt(
                "SELECT version FROM natter_schema WHERE component = 'authority'",
                &[],
            )
            .map_err(&e)?
            .map_or(0, |r| r.get(0));
        let known = MIGRATIONS.len() as i32;
        if found > known {
            return Err(PgError::TooNew {
                what: self.what.clone(),
                found,
                known,
            });
        }
        for sql in &MIGRATIONS[found as usize..] {
            tx.batch_execute(sql).map_err(&e)?;
        }
        if found < known {
            tx.execute(
                "INSERT INTO natter_schema (component, version) VALUES ('authority', $1)
                 ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version",
                &[&known],
            )
            .map_err(&e)?;
            tracing::info!(from = found, to = known, "{}: schema migrated", self.what);
        }
        tx.commit().map_err(&e)
    }

    pub fn schema_version(&self) -> Result<u32, PgError> {
        self.with(|c| {
            let r = c
                .query_one(
                    "SELECT version FROM natter_schema WHERE component = 'authority'",
                    &[],
                )
                .map_err(self.err())?;
            Ok(r.get::<_, i32>(0) as u32)
        })
    }

    /// `Ok(false)` if the name is taken (by any authority on this
    /// database). Returns after the commit.
    pub fn insert_account(
        &self,
        user: &Username,
        hash: &str,
        now: UnixSecs,
    ) -> Result<bool, PgError> {
        self.with(|c| {
            let n = c
                .execute(
                    "INSERT INTO accounts (username, password_hash, created_at) VALUES ($1, $2, $3)
                     ON CONFLICT (username) DO NOTHING",
                    &[&user.as_str(), &hash, &(now.get() as i64)],
                )
                .map_err(self.err())?;
            Ok(n == 1)
        })
    }

    pub fn account(&self, user: &Username) -> Result<Option<Account>, PgError> {
        self.with(|c| {
            let row = c
                .query_opt(
                    "SELECT username, password_hash, role, disabled, created_at, last_login
                     FROM accounts WHERE username = $1",
                    &[&user.as_str()],
                )
                .map_err(self.err())?;
            Ok(row.map(|r| Account {
                username: r.get(0),
                password_hash: r.get(1),
                info: AccountInfo {
                    role: if r.get::<_, &str>(2) == "supernode" {
                        Role::Supernode
                    } else {
                        Role::User
                    },
                    disabled: r.get(3),
                },
                created_at: UnixSecs(r.get::<_, i64>(4) as u64),
                last_login: r.get::<_, Option<i64>>(5).map(|v| UnixSecs(v as u64)),
            }))
        })
    }

    /// Run one UPDATE on the account; `Ok(false)` if there is none.
    fn update(
        &self,
        sql: &str,
        user: &Username,
        value: &(dyn postgres::types::ToSql + Sync),
    ) -> Result<bool, PgError> {
        self.with(|c| {
            let n = c
                .execute(sql, &[&user.as_str(), value])
                .map_err(self.err())?;
            Ok(n > 0)
        })
    }

    pub fn touch_login(&self, user: &Username, now: UnixSecs) -> Result<(), PgError> {
        let sql = "UPDATE accounts SET last_login = $2 WHERE username = $1";
        self.update(sql, user, &(now.get() as i64)).map(|_| ())
    }

    pub fn set_role(&self, user: &Username, role: Role) -> Result<bool, PgError> {
        let sql = "UPDATE accounts SET role = $2 WHERE username = $1";
        self.update(sql, user, &role.as_str())
    }

    pub fn set_disabled(
        &self,
        user: &Username,
        disabled: bool,
        at: Option<i64>,
    ) -> Result<bool, PgError> {
        self.with(|c| {
            let n = c
                .execute(
                    "UPDATE accounts SET disabled = $2, disabled_at = $3 WHERE username = $1",
                    &[&user.as_str(), &disabled, &at],
                )
                .map_err(self.err())?;
            Ok(n > 0)
        })
    }

    pub fn set_password_hash(&self, user: &Username, hash: &str) -> Result<bool, PgError> {
        let sql = "UPDATE accounts SET password_hash = $2 WHERE username = $1";
        self.update(sql, user, &hash)
    }

    /// See `Store::device_seen`; one transaction, the
    /// account's row locked so two authorities add devices one at a time.
    pub fn device_seen(
        &self,
        user: &Username,
        ed25519: &[u8; 32],
        name: &str,
        now: UnixSecs,
    ) -> Result<DeviceState, PgError> {
        self.with(|c| {
            let e = self.err();
            let mut tx = c.transaction().map_err(&e)?;
            tx.execute(
                "SELECT 1 FROM accounts WHERE username = $1 FOR UPDATE",
                &[&user.as_str()],
            )
            .map_err(&e)?;
            let key = &ed25519[..];
            let found = tx
                .query_opt(
                    "SELECT revoked_at FROM devices WHERE username = $1 AND ed25519 = $2",
                    &[&user.as_str(), &key],
                )
                .map_err(&e)?
                .map(|r| r.get::<_, Option<i64>>(0));
            let state = match found {
                Some(Some(_)) => DeviceState::Revoked,
                Some(None) => {
                    tx.execute(
                        "UPDATE devices SET last_seen = $3,
                           name = CASE WHEN $4 = '' THEN name ELSE $4 END
                         WHERE username = $1 AND ed25519 = $2",
                        &[&user.as_str(), &key, &(now.get() as i64), &name],
                    )
                    .map_err(&e)?;
                    DeviceState::Active
                }
                None => {
                    let n: i64 = tx
                        .query_one(
                            "SELECT count(*) FROM devices WHERE username = $1",
                            &[&user.as_str()],
                        )
                        .map_err(&e)?
                        .get(0);
                    if n as usize >= MAX_DEVICES {
                        tx.execute(
                            "DELETE FROM devices WHERE (username, ed25519) IN (
                               SELECT username, ed25519 FROM devices WHERE username = $1
                               ORDER BY revoked_at IS NOT NULL, last_seen LIMIT 1)",
                            &[&user.as_str()],
                        )
                        .map_err(&e)?;
                    }
                    tx.execute(
                        "INSERT INTO devices (username, ed25519, name, first_seen, last_seen)
                         VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING",
                        &[
                            &user.as_str(),
                            &key,
                            &default_name(name, ed25519),
                            &(now.get() as i64),
                        ],
                    )
                    .map_err(&e)?;
                    DeviceState::Active
                }
            };
            tx.commit().map_err(&e)?;
            Ok(state)
        })
    }

    pub fn devices(&self, user: &Username) -> Result<Vec<Device>, PgError> {
        self.with(|c| {
            let rows = c
                .query(
                    "SELECT ed25519, name, first_seen, last_seen, revoked_at FROM devices
                     WHERE username = $1 ORDER BY first_seen, name",
                    &[&user.as_str()],
                )
                .map_err(self.err())?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    Some(Device {
                        ed25519: r.get::<_, Vec<u8>>(0).try_into().ok()?,
                        name: r.get(1),
                        first_seen: UnixSecs(r.get::<_, i64>(2) as u64),
                        last_seen: UnixSecs(r.get::<_, i64>(3) as u64),
                        revoked_at: r.get::<_, Option<i64>>(4).map(|v| UnixSecs(v as u64)),
                    })
                })
                .collect())
        })
    }

    pub fn revoke_device(
        &self,
        user: &Username,
        ed25519: &[u8; 32],
        now: UnixSecs,
    ) -> Result<(), PgError> {
        self.with(|c| {
            c.execute(
                "UPDATE devices SET revoked_at = $3
                 WHERE username = $1 AND ed25519 = $2 AND revoked_at IS NULL",
                &[&user.as_str(), &&ed25519[..], &(now.get() as i64)],
            )
            .map_err(self.err())?;
            Ok(())
        })
    }

    /// See `Store::revocations`.
    pub fn revocations(&self, since: UnixSecs, limit: usize) -> Result<RevokedEntries, PgError> {
        self.with(|c| {
            let e = self.err();
            let (since, limit) = (since.get() as i64, limit as i64);
            let devices = c
                .query(
                    "SELECT username, ed25519 FROM devices WHERE revoked_at >= $1
                     ORDER BY revoked_at DESC LIMIT $2",
                    &[&since, &limit],
                )
                .map_err(&e)?
                .iter()
                .filter_map(|r| Some((r.get(0), r.get::<_, Vec<u8>>(1).try_into().ok()?)))
                .collect();
            let accounts = c
                .query(
                    "SELECT username FROM accounts WHERE disabled
                     AND (disabled_at IS NULL OR disabled_at >= $1)
                     ORDER BY disabled_at DESC LIMIT $2",
                    &[&since, &limit],
                )
                .map_err(&e)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            Ok((devices, accounts))
        })
    }

    pub fn count_accounts(&self) -> Result<u64, PgError> {
        self.with(|c| {
            let r = c
                .query_one("SELECT count(*) FROM accounts", &[])
                .map_err(self.err())?;
            Ok(r.get::<_, i64>(0) as u64)
        })
    }

    pub fn usernames(&self) -> Result<Vec<String>, PgError> {
        self.with(|c| {
            let rows = c
                .query("SELECT username FROM accounts ORDER BY username", &[])
                .map_err(self.err())?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    /// The shared form of [`super::throttle::Throttle::login_attempt`]:
    /// checks and counts a password attempt against the account and the
    /// source in one transaction (rows locked, so attempts through two
    /// authorities at once are both counted). `Err(wait)` when blocked,
    /// else whether the device is known for the account.
    pub fn login_attempt(
        &self,
        now: UnixMillis,
        user: &Username,
        source: SourceKey,
        ed25519: &[u8; 32],
        known_here: bool,
        policy: &ThrottlePolicy,
    ) -> Result<Result<bool, u64>, PgError> {
        let keys = [format!("a:{user}"), format!("s:{source}")];
        self.with(|c| {
            let e = self.err();
            let mut tx = c.transaction().map_err(&e)?;
            let known = known_here
                || tx
                    .query_opt(
                        "SELECT 1 FROM known_devices WHERE ed25519 = $1 AND username = $2",
                        &[&&ed25519[..], &user.as_str()],
                    )
                    .map_err(&e)?
                    .is_some();
            // Rows are made and locked in key order ("a:" before "s:").
            let mut rows = Vec::with_capacity(2);
            for k in &keys {
                rows.push(lock_failures(&mut tx, k).map_err(&e)?);
            }
            let w = policy.window_ms;
            for f in &mut rows {
                f.decay(now, w);
            }
            let wait = if known { 0 } else { rows[0].wait(now) }.max(rows[1].wait(now));
            if wait == 0 {
                rows[0].fail(now, policy.account_failures, policy);
                rows[1].fail(now, policy.address_failures, policy);
            }
            for (k, f) in keys.iter().zip(&rows) {
                store_failures(&mut tx, k, f).map_err(&e)?;
            }
            tx.commit().map_err(&e)?;
            Ok(if wait > 0 { Err(wait) } else { Ok(known) })
        })
    }

    /// The shared form of [`super::throttle::Throttle::login_succeeded`],
    /// and the device is remembered as known for the account.
    pub fn login_succeeded(
        &self,
        now: UnixMillis,
        user: &Username,
        source: SourceKey,
        ed25519: &[u8; 32],
        policy: &ThrottlePolicy,
    ) -> Result<(), PgError> {
        self.with(|c| {
            let e = self.err();
            let mut tx = c.transaction().map_err(&e)?;
            tx.execute(
                "DELETE FROM throttle_failures WHERE key = $1",
                &[&format!("a:{user}")],
            )
            .map_err(&e)?;
            let key = format!("s:{source}");
            let mut f = lock_failures(&mut tx, &key).map_err(&e)?;
            f.refund(policy.address_failures);
            store_failures(&mut tx, &key, &f).map_err(&e)?;
            tx.execute(
                "INSERT INTO known_devices (ed25519, username, last_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (ed25519) DO UPDATE SET username = EXCLUDED.username, last_ms = EXCLUDED.last_ms",
                &[&&ed25519[..], &user.as_str(), &(now.get() as i64)],
            )
            .map_err(&e)?;
            tx.commit().map_err(&e)
        })
    }

    /// The shared form of [`super::throttle::Throttle::registration`].
    pub fn registration(
        &self,
        now: UnixMillis,
        source: SourceKey,
        policy: &ThrottlePolicy,
    ) -> Result<Option<u64>, PgError> {
        let limit = policy.registrations_per_hour as i64;
        if limit == 0 {
            return Ok(None);
        }
        let src = source.to_string();
        self.with(|c| {
            let e = self.err();
            let mut tx = c.transaction().map_err(&e)?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&REGISTRATION_LOCK, &src],
            )
            .map_err(&e)?;
            let since = (now - HOUR_MS).get() as i64;
            let r = tx
                .query_one(
                    "SELECT count(*), min(at_ms) FROM throttle_registrations
                     WHERE source = $1 AND at_ms > $2",
                    &[&src, &since],
                )
                .map_err(&e)?;
            let (n, oldest): (i64, Option<i64>) = (r.get(0), r.get(1));
            let wait = if n >= limit {
                let oldest = oldest.map_or(now, |t| UnixMillis(t as u64));
                Some((oldest + HOUR_MS).since(now).max(1))
            } else {
                tx.execute(
                    "INSERT INTO throttle_registrations (source, at_ms) VALUES ($1, $2)",
                    &[&src, &(now.get() as i64)],
                )
                .map_err(&e)?;
                None
            };
            tx.commit().map_err(&e)?;
            Ok(wait)
        })
    }

    /// Delete throttle rows that no longer hold anything back and devices
    /// not seen for 90 days. Any authority may run it.
    pub fn prune(&self, now: UnixMillis, policy: &ThrottlePolicy) -> Result<u64, PgError> {
        self.with(|c| {
            let e = self.err();
            let n = now.get() as i64;
            let stale = (now - policy.window_ms).get() as i64;
            let mut gone = c
                .execute(
                    "DELETE FROM throttle_failures
                     WHERE locked_until_ms <= $1 AND (count = 0 OR last_ms < $2)",
                    &[&n, &stale],
                )
                .map_err(&e)?;
            gone += c
                .execute(
                    "DELETE FROM throttle_registrations WHERE at_ms <= $1",
                    &[&((now - HOUR_MS).get() as i64)],
                )
                .map_err(&e)?;
            gone += c
                .execute(
                    "DELETE FROM known_devices WHERE last_ms < $1",
                    &[&((now - KNOWN_DEVICE_MS).get() as i64)],
                )
                .map_err(&e)?;
            Ok(gone)
        })
    }
}

/// The row for `key`, made if missing, locked until the transaction ends.
fn lock_failures(tx: &mut Transaction<'_>, key: &str) -> Result<Failures, postgres::Error> {
    tx.execute(
        "INSERT INTO throttle_failures (key, count, last_ms, locked_until_ms) VALUES ($1, 0, 0, 0)
         ON CONFLICT (key) DO NOTHING",
        &[&key],
    )?;
    let r = tx.query_one(
        "SELECT count, last_ms, locked_until_ms FROM throttle_failures WHERE key = $1 FOR UPDATE",
        &[&key],
    )?;
    Ok(Failures {
        count: r.get::<_, i32>(0).max(0) as u32,
        last: UnixMillis(r.get::<_, i64>(1).max(0) as u64),
        locked_until: UnixMillis(r.get::<_, i64>(2).max(0) as u64),
    })
}

fn store_failures(
    tx: &mut Transaction<'_>,
    key: &str,
    f: &Failures,
) -> Result<(), postgres::Error> {
    tx.execute(
        "UPDATE throttle_failures SET count = $2, last_ms = $3, locked_until_ms = $4 WHERE key = $1",
        &[
            &key,
            &(f.count.min(i32::MAX as u32) as i32),
            &(f.last.get() as i64),
            &(f.locked_until.get() as i64),
        ],
    )?;
    Ok(())
}
