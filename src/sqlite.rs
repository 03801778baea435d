//! Opening natter's SQLite files (the chat history, the contact list, the
//! authority's accounts): the parent directory, the pragmas every store
//! wants (WAL, full fsync on commit, a busy timeout), and the schema
//! versioned by `PRAGMA user_version` with forward-only migrations. The
//! stores own their schemas and queries; errors name the file and what it
//! holds.
//!
//! The files hold password hashes and private conversations: a new file
//! is made 0600 in a directory made 0700, and an existing file readable by
//! others is narrowed to 0600 (SQLite gives its `-wal` and `-shm` files the
//! main file's mode). Tools that must not create a database (`natter
//! admin`) open with [`Schema::open_existing`].
//!
//! A damaged file is never repaired or replaced behind the user's back:
//! [`SqliteError::Damaged`] names it, says nothing was changed and what to
//! do. An existing file of zero bytes (with no write-ahead log holding its
//! data) counts as damaged too: natter never leaves one (its first open
//! writes the schema), so an empty file means its contents were lost, and
//! silently starting a new history on top would hide that. Deleting the
//! file is how a user asks for a fresh one.

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// How long a statement waits for another connection's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a store's file could not be opened or used.
#[derive(Debug, Error)]
pub enum SqliteError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path}: {source}")]
    Sqlite {
        what: &'static str,
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "{what} {path} is damaged ({why}); natter changed nothing. Move the file away to start with an empty one, or restore it from a backup"
    )]
    Damaged {
        what: &'static str,
        path: PathBuf,
        /// What SQLite or the file's size said.
        why: String,
    },
    #[error("{what} {path} does not exist (nothing was created)")]
    Missing { what: &'static str, path: PathBuf },
    #[error(
        "{what} {path} has schema version {found}, newer than this build knows ({known}); upgrade natter"
    )]
    TooNew {
        what: &'static str,
        path: PathBuf,
        found: u32,
        known: u32,
    },
}

/// One kind of SQLite file.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// What errors call the file ("chat history").
    pub what: &'static str,
    /// Entry `i` moves the schema from version `i` to `i + 1`.
    pub migrations: &'static [&'static str],
    /// The connection's page cache, KiB. SQLite's default (2 MiB) is
    /// grown into as the file grows; a client keeps five stores open, so
    /// its small ones take [`Schema::SMALL_CACHE_KIB`] (the kernel's page
    /// cache still holds the file).
    pub cache_kib: u32,
}

impl Schema {
    /// The page cache of a client's stores (chat, groups, contacts,
    /// calls): each file is small, and read mostly a page at a time.
    pub const SMALL_CACHE_KIB: u32 = 256;
    /// SQLite's own default: the authority's accounts, a supernode's
    /// mailbox.
    pub const DEFAULT_CACHE_KIB: u32 = 2048;

    /// The schema version this build writes.
    pub fn version(&self) -> u32 {
        self.migrations.len() as u32
    }

    /// A query error on the file at `path`; a damaged file is
    /// [`SqliteError::Damaged`].
    pub fn error(&self, path: &Path, source: rusqlite::Error) -> SqliteError {
        use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
        if let rusqlite::Error::SqliteFailure(e, _) = &source
            && matches!(e.code, DatabaseCorrupt | NotADatabase)
        {
            let why = match e.code {
                NotADatabase => "not an SQLite database",
                _ => "its contents are corrupt",
            };
            return SqliteError::Damaged {
                what: self.what,
                path: path.to_owned(),
                why: why.to_owned(),
            };
        }
        SqliteError::Sqlite {
            what: self.what,
            path: path.to_owned(),
            source,
        }
    }

    /// Open (or create) the file at `path` and bring its schema up to date.
    pub fn open(&self, path: &Path) -> Result<Connection, SqliteError> {
        let created = create_file(path).map_err(|source| SqliteError::Io {
            what: self.what,
            path: path.to_owned(),
            source,
        })?;
        if !created && lost_contents(path) {
            return Err(SqliteError::Damaged {
                what: self.what,
                path: path.to_owned(),
                why: "the file is empty".to_owned(),
            });
        }
        let conn = Connection::open(path).map_err(|e| self.error(path, e))?;
        self.init(path, conn)
    }

    /// Open the file at `path` only if it exists: for tools that act on
    /// a database another process made, where creating an empty one would
    /// hide a wrong path.
    pub fn open_existing(&self, path: &Path) -> Result<Connection, SqliteError> {
        if !path.is_file() {
            return Err(SqliteError::Missing {
                what: self.what,
                path: path.to_owned(),
            });
        }
        self.open(path)
    }

    /// A database in memory only (tests), with the schema in place.
    pub fn open_in_memory(&self) -> Result<Connection, SqliteError> {
        let path = Path::new(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| self.error(path, e))?;
        self.init(path, conn)
    }

    fn init(&self, path: &Path, mut conn: Connection) -> Result<Connection, SqliteError> {
        let e = |err| self.error(path, err);
        conn.busy_timeout(BUSY_TIMEOUT).map_err(e)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
        // A committed write survives power loss too.
        conn.pragma_update(None, "synchronous", "FULL").map_err(e)?;
        // Negative: KiB, not pages.
        conn.pragma_update(None, "cache_size", -i64::from(self.cache_kib))
            .map_err(e)?;
        let found: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(e)?;
        if found > self.version() {
            return Err(SqliteError::TooNew {
                what: self.what,
                path: path.to_owned(),
                found,
                known: self.version(),
            });
        }
        for (i, sql) in self.migrations.iter().enumerate().skip(found as usize) {
            let tx = conn.transaction().map_err(e)?;
            tx.execute_batch(sql).map_err(e)?;
            tx.pragma_update(None, "user_version", i as u32 + 1)
                .map_err(e)?;
            tx.commit().map_err(e)?;
        }
        Ok(conn)
    }
}

/// An existing database file of zero bytes whose write-ahead log holds
/// nothing either: whatever it held is gone.
fn lost_contents(path: &Path) -> bool {
    let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    len(path) == 0 && len(Path::new(&wal)) == 0
}

/// Create the file's directory and the file itself if missing (SQLite
/// gives its `-wal` and `-shm` files the main file's permissions).
/// Returns whether the file was created now.
fn create_file(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let created = !path.exists();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let mut perms = file.metadata()?.permissions();
    if perms.mode() & 0o077 != 0 {
        perms.set_mode(0o600);
        file.set_permissions(perms)?;
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: Schema = Schema {
        what: "test file",
        migrations: &["CREATE TABLE a (x INTEGER);", "CREATE TABLE b (y TEXT);"],
        cache_kib: Schema::SMALL_CACHE_KIB,
    };

    fn version(c: &Connection) -> u32 {
        c.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn creates_directories_and_migrates_forward() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/dir/t.db");
        let one = Schema {
            migrations: &SCHEMA.migrations[..1],
            ..SCHEMA
        };
        let c = one.open(&p).unwrap();
        assert_eq!(version(&c), 1);
        c.execute("INSERT INTO a VALUES (7)", []).unwrap();
        drop(c);
        // Reopened by a build that knows one more migration.
        let c = SCHEMA.open(&p).unwrap();
        assert_eq!(version(&c), 2);
        let x: i64 = c.query_row("SELECT x FROM a", [], |r| r.get(0)).unwrap();
        assert_eq!(x, 7);
        c.execute("INSERT INTO b VALUES ('y')", []).unwrap();
        let mode: String = c
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = c
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
        let cache: i64 = c
            .pragma_query_value(None, "cache_size", |r| r.get(0))
            .unwrap();
        assert_eq!(cache, -256, "KiB");
        assert_eq!(version(&SCHEMA.open_in_memory().unwrap()), 2);
    }

    #[test]
    fn files_are_private_and_open_existing_creates_nothing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data/t.db");
        let e = SCHEMA.open_existing(&p).unwrap_err();
        assert!(matches!(e, SqliteError::Missing { .. }), "{e}");
        assert!(e.to_string().contains("nothing was created"), "{e}");
        assert!(!p.exists() && !p.parent().unwrap().exists());
        drop(SCHEMA.open(&p).unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(p.parent().unwrap()), 0o700);
        // A file left readable by others is narrowed on the next open.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(SCHEMA.open_existing(&p).unwrap());
        assert_eq!(mode(&p), 0o600);
    }

    #[test]
    fn newer_schema_and_bad_paths_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.db");
        SCHEMA
            .open(&p)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let e = SCHEMA.open(&p).unwrap_err();
        assert!(
            matches!(
                e,
                SqliteError::TooNew {
                    found: 99,
                    known: 2,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().starts_with("test file "), "{e}");
        // A directory where the file should be.
        let e = SCHEMA.open(dir.path()).unwrap_err();
        assert!(matches!(e, SqliteError::Io { .. }), "{e}");
        // Not a database.
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, [0x55; 4096]).unwrap();
        let e = SCHEMA.open(&junk).unwrap_err();
        assert!(matches!(e, SqliteError::Damaged { .. }), "{e}");
    }

    /// Issue 13.13: a damaged file is named once, left as it was, and the
    /// error says what to do; an emptied file is not silently recreated.
    #[test]
    fn damaged_or_emptied_files_are_reported_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("contacts.db");
        let bytes = [0x55u8; 4096];
        std::fs::write(&junk, bytes).unwrap();
        let e = SCHEMA.open(&junk).unwrap_err().to_string();
        let name = junk.display().to_string();
        assert_eq!(e.matches(&name).count(), 1, "{e}");
        assert!(e.contains("not an SQLite database"), "{e}");
        assert!(
            e.contains("changed nothing") && e.contains("Move the file away"),
            "{e}"
        );
        assert_eq!(std::fs::read(&junk).unwrap(), bytes);
        // A real database whose pages were overwritten.
        let torn = dir.path().join("chat.db");
        {
            let c = SCHEMA.open(&torn).unwrap();
            for i in 0..2000 {
                c.execute(
                    "INSERT INTO b VALUES (?1)",
                    [format!("row {i} {}", "x".repeat(50))],
                )
                .unwrap();
            }
        }
        let mut data = std::fs::read(&torn).unwrap();
        assert!(data.len() > 8192, "checkpointed on close");
        for b in &mut data[4096..] {
            *b = 0xA5;
        }
        std::fs::write(&torn, &data).unwrap();
        let e = SCHEMA
            .open(&torn)
            .and_then(|c| {
                c.query_row("SELECT count(*) FROM b", [], |r| r.get::<_, i64>(0))
                    .map_err(|err| SCHEMA.error(&torn, err))
            })
            .unwrap_err();
        assert!(matches!(e, SqliteError::Damaged { .. }), "{e}");
        assert_eq!(e.to_string().matches("corrupt").count(), 1, "{e}");
        // Emptied: refused, not recreated; deleting it is how to start anew.
        let empty = dir.path().join("calls.db");
        drop(SCHEMA.open(&empty).unwrap());
        std::fs::write(&empty, b"").unwrap();
        let e = SCHEMA.open(&empty).unwrap_err();
        assert!(e.to_string().contains("the file is empty"), "{e}");
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
        std::fs::remove_file(&empty).unwrap();
        drop(SCHEMA.open(&empty).unwrap());
        // A database whose data is still in its write-ahead log (a crash
        // before the checkpoint) is not "empty".
        let wal = dir.path().join("wal.db");
        let c = SCHEMA.open(&wal).unwrap();
        c.execute("INSERT INTO a VALUES (1)", []).unwrap();
        std::mem::forget(c);
        let c = SCHEMA.open(&wal).unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM a", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }
}
