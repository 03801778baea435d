//! Groups in an SQLite file in the data dir (`groups.db`, opened by
//! [`crate::sqlite`]): each group's signed op log, our sender key and
//! sequence, the members' sender keys, the history (with each message's
//! ciphertext, so what a key can open can be checked later), what we last
//! sent each member (for hold-back) and the outbox of items not yet
//! acknowledged. An incoming message is written before it is
//! acknowledged and its (group, sender, seq) key makes a resent copy a
//! no-op; an outgoing one is written with its outbox entries in one
//! transaction before it is sent.

use super::{GroupError, GroupId, GroupMessage};
use crate::sqlite::Schema;
use rusqlite::{Connection, params};
use std::path::{Path, PathBuf};

pub(super) const SCHEMA: Schema = Schema {
    what: "group history",
    migrations: MIGRATIONS,
};

const MIGRATIONS: &[&str] = &[
    // 1: groups, op logs, keys, history, outbox.
    "CREATE TABLE groups (
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
    );",
];

/// One group as stored.
#[derive(Debug, Clone)]
pub struct StoredGroup {
    pub id: GroupId,
    pub key_id: u32,
    pub key: [u8; 32],
    pub seq: u64,
    /// Encoded ops.
    pub ops: Vec<Vec<u8>>,
    /// (sender, key id, key).
    pub keys: Vec<(String, u32, [u8; 32])>,
    /// Highest seq kept from each sender.
    pub last_seq: Vec<(String, u64)>,
    /// Our last seq sent to each member.
    pub sent_to: Vec<(String, u64)>,
}

/// An outbox entry: (peer, item, payload, created ms).
pub type OutboxRow = (String, [u8; 16], Vec<u8>, u64);

/// A stored message with its ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRow {
    pub sender: String,
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
                .prepare("SELECT id, key_id, key, seq FROM groups")?;
            let mut groups: Vec<StoredGroup> = st
                .query_map([], |r| {
                    Ok(StoredGroup {
                        id: arr(r.get(0)?),
                        key_id: r.get::<_, i64>(1)? as u32,
                        key: arr(r.get(2)?),
                        seq: r.get::<_, i64>(3)? as u64,
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
                    .prepare("SELECT sender, key_id, key FROM keys WHERE grp = ?1")?
                    .query_map([id], |r| {
                        Ok((r.get(0)?, r.get::<_, i64>(1)? as u32, arr(r.get(2)?)))
                    })?
                    .collect::<Result<_, _>>()?;
                g.last_seq = self
                    .conn
                    .prepare(
                        "SELECT sender, MAX(seq) FROM messages WHERE grp = ?1 GROUP BY sender",
                    )?
                    .query_map([id], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
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

    /// A member's sender key.
    pub fn add_key(
        &mut self,
        g: &GroupId,
        sender: &str,
        key_id: u32,
        key: &[u8; 32],
    ) -> Result<(), GroupError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO keys (grp, sender, key_id, key) VALUES (?1, ?2, ?3, ?4)",
                params![&g[..], sender, key_id as i64, &key[..]],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// A member's sender key pushed out.
    pub fn remove_key(&mut self, g: &GroupId, sender: &str, key_id: u32) -> Result<(), GroupError> {
        self.conn
            .execute(
                "DELETE FROM keys WHERE grp = ?1 AND sender = ?2 AND key_id = ?3",
                params![&g[..], sender, key_id as i64],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Our message `m` (with its ciphertext) into the history, our seq
    /// moved on, and its outbox entries, in one transaction.
    pub fn queue_outgoing(
        &mut self,
        m: &GroupMessage,
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
                "INSERT INTO messages (grp, sender, seq, key_id, ct, text, sent_at, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![g, m.sender, m.seq as i64, key_id as i64, ct, m.text, m.sent_at_ms as i64, m.at_ms as i64],
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

    /// An item for `peer` into the outbox.
    pub fn queue_item(
        &mut self,
        peer: &str,
        item: &[u8; 16],
        payload: &[u8],
        created: u64,
    ) -> Result<(), GroupError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO outbox (peer, item, payload, created) VALUES (?1, ?2, ?3, ?4)",
                params![peer, &item[..], payload, created as i64],
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
                .prepare("SELECT peer, item, payload, created FROM outbox ORDER BY created")?
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        arr(r.get(1)?),
                        r.get(2)?,
                        r.get::<_, i64>(3)? as u64,
                    ))
                })?
                .collect()
        })();
        r.map_err(|e| self.err(e))
    }

    /// Keep an incoming message; false when it was already there.
    pub fn insert_incoming(
        &mut self,
        m: &GroupMessage,
        key_id: u32,
        ct: &[u8],
    ) -> Result<bool, GroupError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO messages (grp, sender, seq, key_id, ct, text, sent_at, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![&m.group[..], m.sender, m.seq as i64, key_id as i64, ct, m.text, m.sent_at_ms as i64, m.at_ms as i64],
            )
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    /// The last `limit` messages of a group, oldest first (`me` marks
    /// ours outgoing).
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
                     ORDER BY at DESC, rowid DESC LIMIT ?2",
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
                    "SELECT sender, seq, key_id, ct FROM messages WHERE grp = ?1
                     AND (?2 IS NULL OR sender = ?2) ORDER BY sender, seq",
                )?
                .query_map(params![&g[..], sender], |r| {
                    Ok(SealedRow {
                        sender: r.get(0)?,
                        seq: r.get::<_, i64>(1)? as u64,
                        key_id: r.get::<_, i64>(2)? as u32,
                        ct: r.get(3)?,
                    })
                })?
                .collect()
        })();
        r.map_err(|e| self.err(e))
    }

    /// Every sender key we hold for a group: (sender, key id, key),
    /// ours included.
    pub fn keys(&self, g: &GroupId) -> Result<Vec<(String, u32, [u8; 32])>, GroupError> {
        let all = self.load()?;
        Ok(all
            .into_iter()
            .find(|s| s.id == *g)
            .map(|s| s.keys)
            .unwrap_or_default())
    }

    /// Every group id in the file.
    pub fn group_ids(&self) -> Result<Vec<GroupId>, GroupError> {
        Ok(self.load()?.into_iter().map(|g| g.id).collect())
    }
}
