//! Groups in an SQLite file in the data dir (`groups.db`, opened by
//! [`crate::sqlite`]): each group's signed op log, our sender key and
//! sequence, the members' sender keys, the history (with each message's
//! ciphertext, so what a key can open can be checked later), what we last
//! sent each member (for hold-back) and the outbox of items not yet
//! acknowledged. An incoming message is written before it is
//! acknowledged and its (group, sender, seq) key makes a resent copy a
//! no-op; an outgoing one is written with its outbox entries in one
//! transaction before it is sent.

use super::{Dev, GroupError, GroupId, GroupMessage};
use crate::sqlite::Schema;
use rusqlite::{Connection, params};
use std::path::{Path, PathBuf};

pub(super) const SCHEMA: Schema = Schema {
    what: "group history",
    cache_kib: Schema::SMALL_CACHE_KIB,
    migrations: MIGRATIONS,
};

const MIGRATIONS: &[&str] = &[MIGRATIONS_V1, MIGRATION_V2];

/// 1: groups, op logs, keys, history, outbox.
pub(super) const MIGRATIONS_V1: &str = "CREATE TABLE groups (
        id BLOB PRIMARY KEY,
        key_id INTEGER NOT NULL,
        key BLOB NOT NULL,
        seq INTEGER NOT NULL
    );
    CREATE TABLE ops (
        grp BLOB NOT NULL,
        op_id BLOB NOT NULL,
        bytes BLOB NOT NULL,
        PRIMARY KEY (grp, op_id)
    );
    CREATE TABLE keys (
        grp BLOB NOT NULL,
        sender TEXT NOT NULL,
        key_id INTEGER NOT NULL,
        key BLOB NOT NULL,
        PRIMARY KEY (grp, sender, key_id)
    );
    CREATE TABLE messages (
        grp BLOB NOT NULL,
        sender TEXT NOT NULL,
        seq INTEGER NOT NULL,
        key_id INTEGER NOT NULL,
        ct BLOB NOT NULL,
        text TEXT NOT NULL,
        sent_at INTEGER NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (grp, sender, seq)
    );
    CREATE INDEX messages_by_time ON messages (grp, at);
    CREATE TABLE sent_to (
        grp BLOB NOT NULL,
        peer TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (grp, peer)
    );
    CREATE TABLE outbox (
        peer TEXT NOT NULL,
        item BLOB NOT NULL,
        payload BLOB NOT NULL,
        created INTEGER NOT NULL,
        PRIMARY KEY (peer, item)
    );";

/// 2: one account on several devices. Sender keys and messages are per
/// sending device (its x25519 key; 32 zero bytes for rows from before,
/// [`LEGACY`], taken over by the first device of that sender heard from);
/// an outbox item may be for one device of its peer; a group's log may
/// have come whole from another of our devices (`late`).
const MIGRATION_V2: &str = "ALTER TABLE groups ADD COLUMN late INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE outbox ADD COLUMN device BLOB;
    CREATE TABLE keys2 (
        grp BLOB NOT NULL,
        sender TEXT NOT NULL,
        device BLOB NOT NULL,
        key_id INTEGER NOT NULL,
        key BLOB NOT NULL,
        PRIMARY KEY (grp, sender, device, key_id)
    );
    INSERT INTO keys2 SELECT grp, sender, zeroblob(32), key_id, key FROM keys;
    DROP TABLE keys;
    ALTER TABLE keys2 RENAME TO keys;
    CREATE TABLE messages2 (
        grp BLOB NOT NULL,
        sender TEXT NOT NULL,
        device BLOB NOT NULL,
        seq INTEGER NOT NULL,
        key_id INTEGER NOT NULL,
        ct BLOB NOT NULL,
        text TEXT NOT NULL,
        sent_at INTEGER NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (grp, sender, device, seq)
    );
    INSERT INTO messages2 SELECT grp, sender, zeroblob(32), seq, key_id, ct, text, sent_at, at
        FROM messages ORDER BY rowid;
    DROP TABLE messages;
    ALTER TABLE messages2 RENAME TO messages;
    CREATE INDEX messages_by_time ON messages (grp, at);
    CREATE INDEX messages_by_sent ON messages (grp, sent_at);";

/// The device of rows written before schema version 2 (unknown then).
pub const LEGACY: Dev = [0; 32];

/// One group as stored.
#[derive(Debug, Clone)]
pub struct StoredGroup {
    pub id: GroupId,
    pub key_id: u32,
    pub key: [u8; 32],
    pub seq: u64,
    /// Learned from another of our devices.
    pub late: bool,
    /// Encoded ops.
    pub ops: Vec<Vec<u8>>,
    /// (sender, device, key id, key).
    pub keys: Vec<(String, Dev, u32, [u8; 32])>,
    /// Highest seq kept from each sending device.
    pub last_seq: Vec<(String, Dev, u64)>,
    /// Our last seq sent to each member.
    pub sent_to: Vec<(String, u64)>,
}

/// An outbox entry: (peer, only this device of theirs, item, payload,
/// created ms).
pub type OutboxRow = (String, Option<Dev>, [u8; 16], Vec<u8>, u64);

/// A stored message with its ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRow {
    pub sender: String,
    /// The sending device ([`LEGACY`] for rows from before version 2).
    pub device: Dev,
    pub seq: u64,
    pub key_id: u32,
    pub ct: Vec<u8>,
}

pub struct GroupStore {
    path: PathBuf,
    conn: Connection,
}

impl std::fmt::Debug for GroupStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn arr<const N: usize>(v: Vec<u8>) -> [u8; N] {
    let mut a = [0u8; N];
    let n = v.len().min(N);
    a[..n].copy_from_slice(&v[..n]);
    a
}

impl GroupStore {
    /// Open (or create) the file at `path`.
    pub fn open(path: &Path) -> Result<Self, GroupError> {
        Ok(GroupStore {
            path: path.to_owned(),
            conn: SCHEMA.open(path)?,
        })
    }

    /// A store in memory only (tests).
    pub fn in_memory() -> Result<Self, GroupError> {
        Ok(GroupStore {
            path: PathBuf::from(":memory:"),
            conn: SCHEMA.open_in_memory()?,
        })
    }

    fn err(&self, e: rusqlite::Error) -> GroupError {
        GroupError::Store(SCHEMA.error(&self.path, e))
    }

    /// Every group with its log, keys and counters.
    pub fn load(&self) -> Result<Vec<StoredGroup>, GroupError> {
        let r = (|| -> rusqlite::Result<Vec<StoredGroup>> {
            let mut st = self
                .conn
                .prepare("SELECT id, key_id, key, seq, late FROM groups")?;
            let mut groups: Vec<StoredGroup> = st
                .query_map([], |r| {
                    Ok(StoredGroup {
                        id: arr(r.get(0)?),
                        key_id: r.get::<_, i64>(1)? as u32,
                        key: arr(r.get(2)?),
                        seq: r.get::<_, i64>(3)? as u64,
                        late: r.get::<_, i64>(4)? != 0,
                        ops: Vec::new(),
                        keys: Vec::new(),
                        last_seq: Vec::new(),
                        sent_to: Vec::new(),
                    })
                })?
                .collect::<Result<_, _>>()?;
            for g in &mut groups {
                let id = &g.id[..];
                g.ops = self
                    .conn
                    .prepare("SELECT bytes FROM ops WHERE grp = ?1")?
                    .query_map([id], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                g.keys = self
                    .conn
                    .prepare("SELECT sender, device, key_id, key FROM keys WHERE grp = ?1")?
                    .query_map([id], |r| {
                        Ok((
                            r.get(0)?,
                            arr(r.get(1)?),
                            r.get::<_, i64>(2)? as u32,
                            arr(r.get(3)?),
                        ))
                    })?
                    .collect::<Result<_, _>>()?;
                g.last_seq = self
                    .conn
                    .prepare(
                        "SELECT sender, device, MAX(seq) FROM messages WHERE grp = ?1
                         GROUP BY sender, device",
                    )?
                    .query_map([id], |r| {
                        Ok((r.get(0)?, arr(r.get(1)?), r.get::<_, i64>(2)? as u64))
                    })?
                    .collect::<Result<_, _>>()?;
                g.sent_to = self
                    .conn
                    .prepare("SELECT peer, seq FROM sent_to WHERE grp = ?1")?
                    .query_map([id], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
                    .collect::<Result<_, _>>()?;
            }
            Ok(groups)
        })();
        r.map_err(|e| self.err(e))
    }

    /// A new group, or our new sender key in one.
    pub fn save_key(
        &mut self,
        g: &GroupId,
        key_id: u32,
        key: &[u8; 32],
        seq: u64,
    ) -> Result<(), GroupError> {
        self.conn
            .execute(
                "INSERT INTO groups (id, key_id, key, seq) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET key_id = ?2, key = ?3",
                params![&g[..], key_id as i64, &key[..], seq as i64],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Ops added to a group's log.
    pub fn add_ops(&mut self, g: &GroupId, ops: &[([u8; 16], Vec<u8>)]) -> Result<(), GroupError> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| GroupError::Store(SCHEMA.error(&self.path, e)))?;
        let r = (|| {
            for (id, b) in ops {
                tx.execute(
                    "INSERT OR IGNORE INTO ops (grp, op_id, bytes) VALUES (?1, ?2, ?3)",
                    params![&g[..], &id[..], b],
                )?;
            }
            tx.commit()
        })();
        r.map_err(|e| self.err(e))
    }

    /// A group learned from another of our devices.
    pub fn set_late(&mut self, g: &GroupId) -> Result<(), GroupError> {
        self.conn
            .execute("UPDATE groups SET late = 1 WHERE id = ?1", params![&g[..]])
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// A sending device's sender key.
    pub fn add_key(
        &mut self,
        g: &GroupId,
        (sender, device): (&str, &Dev),
        key_id: u32,
        key: &[u8; 32],
    ) -> Result<(), GroupError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO keys (grp, sender, device, key_id, key) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![&g[..], sender, &device[..], key_id as i64, &key[..]],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// A sending device's sender key pushed out.
    pub fn remove_key(
        &mut self,
        g: &GroupId,
        (sender, device): (&str, &Dev),
        key_id: u32,
    ) -> Result<(), GroupError> {
        self.conn
            .execute(
                "DELETE FROM keys WHERE grp = ?1 AND sender = ?2 AND device = ?3 AND key_id = ?4",
                params![&g[..], sender, &device[..], key_id as i64],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// `sender`'s keys and messages from before version 2 ([`LEGACY`]) are
    /// their device `device`'s from now on (the first of theirs heard from).
    pub fn adopt(&mut self, g: &GroupId, sender: &str, device: &Dev) -> Result<(), GroupError> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| GroupError::Store(SCHEMA.error(&self.path, e)))?;
        let r = (|| {
            for table in ["keys", "messages"] {
                tx.execute(
                    &format!(
                        "UPDATE OR IGNORE {table} SET device = ?3 WHERE grp = ?1 AND sender = ?2 AND device = ?4"
                    ),
                    params![&g[..], sender, &device[..], &LEGACY[..]],
                )?;
            }
            tx.commit()
        })();
        r.map_err(|e| self.err(e))
    }

    /// Our message `m` (with its ciphertext) into the history, our seq
    /// moved on, and its outbox entries, in one transaction.
    pub fn queue_outgoing(
        &mut self,
        m: &GroupMessage,
        device: &Dev,
        key_id: u32,
        ct: &[u8],
        items: &[(String, [u8; 16], u64, Vec<u8>)],
        created: u64,
    ) -> Result<(), GroupError> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| GroupError::Store(SCHEMA.error(&self.path, e)))?;
        let g = &m.group[..];
        let r = (|| {
            tx.execute(
                "INSERT INTO messages (grp, sender, device, seq, key_id, ct, text, sent_at, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![g, m.sender, &device[..], m.seq as i64, key_id as i64, ct, m.text, m.sent_at_ms as i64, m.at_ms as i64],
            )?;
            tx.execute(
                "UPDATE groups SET seq = ?2 WHERE id = ?1",
                params![g, m.seq as i64],
            )?;
            for (peer, item, seq, payload) in items {
                tx.execute(
                    "INSERT INTO sent_to (grp, peer, seq) VALUES (?1, ?2, ?3)
                     ON CONFLICT (grp, peer) DO UPDATE SET seq = ?3",
                    params![g, peer, *seq as i64],
                )?;
                tx.execute(
                    "INSERT INTO outbox (peer, item, payload, created) VALUES (?1, ?2, ?3, ?4)",
                    params![peer, &item[..], payload, created as i64],
                )?;
            }
            tx.commit()
        })();
        r.map_err(|e| self.err(e))
    }

    /// An item for `peer` (only their device `device`, when given) into
    /// the outbox.
    pub fn queue_item(
        &mut self,
        peer: &str,
        device: Option<&Dev>,
        item: &[u8; 16],
        payload: &[u8],
        created: u64,
    ) -> Result<(), GroupError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO outbox (peer, device, item, payload, created) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![peer, device.map(|d| &d[..]), &item[..], payload, created as i64],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// An item acknowledged or given up: out of the outbox.
    pub fn remove_item(&mut self, peer: &str, item: &[u8; 16]) -> Result<(), GroupError> {
        self.conn
            .execute(
                "DELETE FROM outbox WHERE peer = ?1 AND item = ?2",
                params![peer, &item[..]],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Items not acknowledged yet.
    pub fn outbox(&self) -> Result<Vec<OutboxRow>, GroupError> {
        let r = (|| -> rusqlite::Result<Vec<OutboxRow>> {
            self.conn
                .prepare(
                    "SELECT peer, device, item, payload, created FROM outbox ORDER BY created",
                )?
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get::<_, Option<Vec<u8>>>(1)?.map(arr),
                        arr(r.get(2)?),
                        r.get(3)?,
                        r.get::<_, i64>(4)? as u64,
                    ))
                })?
                .collect()
        })();
        r.map_err(|e| self.err(e))
    }

    /// Keep an incoming message from the sender's device `device`; false
    /// when it was already there.
    pub fn insert_incoming(
        &mut self,
        m: &GroupMessage,
        device: &Dev,
        key_id: u32,
        ct: &[u8],
    ) -> Result<bool, GroupError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO messages (grp, sender, device, seq, key_id, ct, text, sent_at, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![&m.group[..], m.sender, &device[..], m.seq as i64, key_id as i64, ct, m.text, m.sent_at_ms as i64, m.at_ms as i64],
            )
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    /// The last `limit` messages of a group, oldest first by their
    /// senders' clocks, so every device of an account lists them alike
    /// (`me` marks ours outgoing).
    pub fn history(
        &self,
        g: &GroupId,
        me: &str,
        limit: usize,
    ) -> Result<Vec<GroupMessage>, GroupError> {
        let r = (|| -> rusqlite::Result<Vec<GroupMessage>> {
            let mut v: Vec<GroupMessage> = self
                .conn
                .prepare(
                    "SELECT sender, seq, text, sent_at, at FROM messages WHERE grp = ?1
                     ORDER BY sent_at DESC, sender DESC, device DESC, seq DESC LIMIT ?2",
                )?
                .query_map(params![&g[..], limit as i64], |r| {
                    let sender: String = r.get(0)?;
                    Ok(GroupMessage {
                        group: *g,
                        outgoing: sender == me,
                        sender,
                        seq: r.get::<_, i64>(1)? as u64,
                        text: r.get(2)?,
                        sent_at_ms: r.get::<_, i64>(3)? as u64,
                        at_ms: r.get::<_, i64>(4)? as u64,
                    })
                })?
                .collect::<Result<_, _>>()?;
            v.reverse();
            Ok(v)
        })();
        r.map_err(|e| self.err(e))
    }

    /// The sealed form of a group's messages from `sender` (every one
    /// when `None`), by seq: for checking which keys open them.
    pub fn sealed(&self, g: &GroupId, sender: Option<&str>) -> Result<Vec<SealedRow>, GroupError> {
        let r = (|| -> rusqlite::Result<Vec<SealedRow>> {
            self.conn
                .prepare(
                    "SELECT sender, device, seq, key_id, ct FROM messages WHERE grp = ?1
                     AND (?2 IS NULL OR sender = ?2) ORDER BY sender, device, seq",
                )?
                .query_map(params![&g[..], sender], |r| {
                    Ok(SealedRow {
                        sender: r.get(0)?,
                        device: arr(r.get(1)?),
                        seq: r.get::<_, i64>(2)? as u64,
                        key_id: r.get::<_, i64>(3)? as u32,
                        ct: r.get(4)?,
                    })
                })?
                .collect()
        })();
        r.map_err(|e| self.err(e))
    }

    /// Every sender key we hold for a group, of every sending device:
    /// (sender, key id, key), ours included.
    pub fn keys(&self, g: &GroupId) -> Result<Vec<(String, u32, [u8; 32])>, GroupError> {
        let all = self.load()?;
        Ok(all
            .into_iter()
            .find(|s| s.id == *g)
            .map(|s| s.keys.into_iter().map(|(u, _, i, k)| (u, i, k)).collect())
            .unwrap_or_default())
    }

    /// Every group id in the file.
    pub fn group_ids(&self) -> Result<Vec<GroupId>, GroupError> {
        Ok(self.load()?.into_iter().map(|g| g.id).collect())
    }
}
