//! The chat history and outbox in an SQLite file in the data dir (WAL,
//! schema versioned by `PRAGMA user_version`). An outgoing message is
//! written to the history and the outbox in one transaction before it is
//! sent, so a process killed at any moment either never accepted the
//! message or resends it at the next start; an incoming one is written
//! before it is acknowledged, and its (peer, id) key makes a resent copy a
//! no-op.

use super::{ChatError, Message, MsgId};
use crate::sqlite::Schema;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};

/// The history's file (opened by [`crate::sqlite`], whose full fsync
/// makes a committed message survive power loss; chat writes are few).
pub(super) const SCHEMA: Schema = Schema {
    what: "chat history",
    migrations: MIGRATIONS,
};

const MIGRATIONS: &[&str] = &[
    // 1: history and outbox.
    "CREATE TABLE messages (
        peer TEXT NOT NULL,
        id BLOB NOT NULL,
        outgoing INTEGER NOT NULL,
        text TEXT NOT NULL,
        sent_at INTEGER NOT NULL,
        at INTEGER NOT NULL,
        acked_at INTEGER,
        PRIMARY KEY (peer, id, outgoing)
    );
    CREATE INDEX messages_by_time ON messages (peer, at);
    CREATE TABLE outbox (
        peer TEXT NOT NULL,
        id BLOB NOT NULL,
        PRIMARY KEY (peer, id)
    );",
    // 2: how far each conversation is read: incoming messages up to
    // (sent_at, id), in that order, are read.
    "CREATE TABLE read_marks (
        peer TEXT PRIMARY KEY,
        sent_at INTEGER NOT NULL,
        id BLOB NOT NULL
    );",
];

pub struct ChatStore {
    path: PathBuf,
    conn: Connection,
}

impl std::fmt::Debug for ChatStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn id_of(v: Vec<u8>) -> MsgId {
    let mut id = [0u8; 16];
    let n = v.len().min(16);
    id[..n].copy_from_slice(&v[..n]);
    id
}

impl ChatStore {
    /// Open (or create) the history at `path`.
    pub fn open(path: &Path) -> Result<Self, ChatError> {
        Ok(ChatStore {
            path: path.to_owned(),
            conn: SCHEMA.open(path)?,
        })
    }

    /// A history that lives in memory only (tests).
    pub fn in_memory() -> Result<Self, ChatError> {
        Ok(ChatStore {
            path: PathBuf::from(":memory:"),
            conn: SCHEMA.open_in_memory()?,
        })
    }

    fn err(&self, e: rusqlite::Error) -> ChatError {
        ChatError::store(&self.path, e)
    }

    /// Record an outgoing message in the history and the outbox at once.
    pub fn queue_outgoing(&mut self, m: &Message) -> Result<(), ChatError> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| ChatError::store(&self.path, e))?;
        let r = (|| {
            tx.execute(
                "INSERT INTO messages (peer, id, outgoing, text, sent_at, at) VALUES (?1, ?2, 1, ?3, ?4, ?5)",
                params![m.peer, &m.id[..], m.text, m.sent_at_ms as i64, m.at_ms as i64],
            )?;
            tx.execute(
                "INSERT INTO outbox (peer, id) VALUES (?1, ?2)",
                params![m.peer, &m.id[..]],
            )?;
            tx.commit()
        })();
        r.map_err(|e| self.err(e))
    }

    /// Outgoing messages not acknowledged yet, oldest first.
    pub fn outbox(&self) -> Result<Vec<Message>, ChatError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT m.peer, m.id, m.text, m.sent_at, m.at FROM outbox o
                 JOIN messages m ON m.peer = o.peer AND m.id = o.id AND m.outgoing = 1
                 ORDER BY m.at",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(Message {
                    peer: r.get(0)?,
                    id: id_of(r.get(1)?),
                    outgoing: true,
                    text: r.get(2)?,
                    sent_at_ms: r.get::<_, i64>(3)? as u64,
                    at_ms: r.get::<_, i64>(4)? as u64,
                    acked_at_ms: None,
                    read: false,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Sending `id` is given up: out of the outbox (it stays in the
    /// history, never acknowledged).
    pub fn give_up(&mut self, peer: &str, id: &MsgId) -> Result<(), ChatError> {
        self.conn
            .execute(
                "DELETE FROM outbox WHERE peer = ?1 AND id = ?2",
                params![peer, &id[..]],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// The recipient acknowledged `id`: out of the outbox. Returns whether
    /// it was waiting there.
    pub fn mark_acked(&mut self, peer: &str, id: &MsgId, at_ms: u64) -> Result<bool, ChatError> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| ChatError::store(&self.path, e))?;
        let r = (|| {
            let n = tx.execute(
                "DELETE FROM outbox WHERE peer = ?1 AND id = ?2",
                params![peer, &id[..]],
            )?;
            tx.execute(
                "UPDATE messages SET acked_at = ?3 WHERE peer = ?1 AND id = ?2 AND outgoing = 1 AND acked_at IS NULL",
                params![peer, &id[..], at_ms as i64],
            )?;
            tx.commit()?;
            Ok(n > 0)
        })();
        r.map_err(|e| self.err(e))
    }

    /// Keep an incoming message; returns false when it was already there.
    pub fn insert_incoming(&mut self, m: &Message) -> Result<bool, ChatError> {
        let n = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO messages (peer, id, outgoing, text, sent_at, at) VALUES (?1, ?2, 0, ?3, ?4, ?5)",
                params![m.peer, &m.id[..], m.text, m.sent_at_ms as i64, m.at_ms as i64],
            )
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// Keep a message we sent from another of our devices, as outgoing
    /// (not in our outbox: that device sends it); returns false when it
    /// was already there.
    pub fn insert_sent_copy(&mut self, m: &Message) -> Result<bool, ChatError> {
        let n = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO messages (peer, id, outgoing, text, sent_at, at, acked_at) VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6)",
                params![
                    m.peer,
                    &m.id[..],
                    m.text,
                    m.sent_at_ms as i64,
                    m.at_ms as i64,
                    m.acked_at_ms.map(|v| v as i64)
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// Whether our outgoing message `id` to `peer` is in the history.
    pub fn has_outgoing(&self, peer: &str, id: &MsgId) -> Result<bool, ChatError> {
        self.conn
            .query_row(
                "SELECT 1 FROM messages WHERE peer = ?1 AND id = ?2 AND outgoing = 1",
                params![peer, &id[..]],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(|e| self.err(e))
    }

    /// The conversation with `peer` is read up to this mark: (sent_at, id)
    /// of the newest incoming message read.
    pub fn read_mark(&self, peer: &str) -> Result<Option<(u64, MsgId)>, ChatError> {
        self.conn
            .query_row(
                "SELECT sent_at, id FROM read_marks WHERE peer = ?1",
                params![peer],
                |r| Ok((r.get::<_, i64>(0)? as u64, id_of(r.get(1)?))),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Move the read mark of `peer` up to `mark` (never back). Returns
    /// whether it moved.
    pub fn mark_read(&mut self, peer: &str, mark: (u64, MsgId)) -> Result<bool, ChatError> {
        if self.read_mark(peer)?.is_some_and(|m| m >= mark) {
            return Ok(false);
        }
        self.conn
            .execute(
                "INSERT INTO read_marks (peer, sent_at, id) VALUES (?1, ?2, ?3)
                 ON CONFLICT (peer) DO UPDATE SET sent_at = ?2, id = ?3",
                params![peer, mark.0 as i64, &mark.1[..]],
            )
            .map(|_| true)
            .map_err(|e| self.err(e))
    }

    /// The newest incoming message from `peer`, as a read mark.
    pub fn newest_incoming(&self, peer: &str) -> Result<Option<(u64, MsgId)>, ChatError> {
        self.conn
            .query_row(
                "SELECT sent_at, id FROM messages WHERE peer = ?1 AND outgoing = 0
                 ORDER BY sent_at DESC, id DESC LIMIT 1",
                params![peer],
                |r| Ok((r.get::<_, i64>(0)? as u64, id_of(r.get(1)?))),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Incoming messages from `peer` after its read mark.
    pub fn unread(&self, peer: &str) -> Result<u64, ChatError> {
        // No mark: every incoming message is unread.
        let (at, id) = self
            .read_mark(peer)?
            .map_or((-1, [0; 16]), |(at, id)| (at as i64, id));
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM messages WHERE peer = ?1 AND outgoing = 0
                 AND (sent_at > ?2 OR (sent_at = ?2 AND id > ?3))",
                params![peer, at, &id[..]],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// Whether an outgoing message is still waiting for its ack.
    pub fn is_pending(&self, peer: &str, id: &MsgId) -> Result<bool, ChatError> {
        self.conn
            .query_row(
                "SELECT 1 FROM outbox WHERE peer = ?1 AND id = ?2",
                params![peer, &id[..]],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(|e| self.err(e))
    }

    /// The last `limit` messages exchanged with `peer`, oldest first.
    pub fn history(&self, peer: &str, limit: usize) -> Result<Vec<Message>, ChatError> {
        let mark = self.read_mark(peer)?;
        let mut st = self
            .conn
            .prepare(
                "SELECT id, outgoing, text, sent_at, at, acked_at FROM messages
                 WHERE peer = ?1 ORDER BY at DESC, rowid DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![peer, limit as i64], |r| {
                Ok(Message {
                    peer: peer.to_owned(),
                    id: id_of(r.get(0)?),
                    outgoing: r.get::<_, i64>(1)? != 0,
                    text: r.get(2)?,
                    sent_at_ms: r.get::<_, i64>(3)? as u64,
                    at_ms: r.get::<_, i64>(4)? as u64,
                    acked_at_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
                    read: false,
                })
            })
            .map_err(|e| self.err(e))?;
        let mut v: Vec<Message> = rows.collect::<Result<_, _>>().map_err(|e| self.err(e))?;
        for m in &mut v {
            m.read = !m.outgoing && mark.is_some_and(|k| (m.sent_at_ms, m.id) <= k);
        }
        v.reverse();
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(peer: &str, id: u8, outgoing: bool, at: u64) -> Message {
        Message {
            peer: peer.into(),
            id: [id; 16],
            outgoing,
            text: format!("m{id}"),
            sent_at_ms: at,
            at_ms: at,
            acked_at_ms: None,
            read: false,
        }
    }

    #[test]
    fn outbox_survives_reopen_and_empties_on_ack() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("chat.db");
        {
            let mut s = ChatStore::open(&p).unwrap();
            s.queue_outgoing(&msg("bob", 1, true, 10)).unwrap();
            s.queue_outgoing(&msg("bob", 2, true, 20)).unwrap();
        }
        let mut s = ChatStore::open(&p).unwrap();
        let out = s.outbox().unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].id, [1; 16]);
        assert!(s.mark_acked("bob", &[1; 16], 30).unwrap());
        assert!(!s.mark_acked("bob", &[1; 16], 31).unwrap(), "acked once");
        assert_eq!(s.outbox().unwrap().len(), 1);
        let h = s.history("bob", 10).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].acked_at_ms, Some(30));
        assert_eq!(h[1].acked_at_ms, None);
    }

    #[test]
    fn incoming_is_deduplicated() {
        let mut s = ChatStore::in_memory().unwrap();
        assert!(s.insert_incoming(&msg("alice", 1, false, 5)).unwrap());
        assert!(!s.insert_incoming(&msg("alice", 1, false, 6)).unwrap());
        // The same id from someone else, or as our own outgoing id, is
        // another message.
        assert!(s.insert_incoming(&msg("carol", 1, false, 7)).unwrap());
        s.queue_outgoing(&msg("alice", 1, true, 8)).unwrap();
        assert_eq!(s.history("alice", 10).unwrap().len(), 2);
        assert_eq!(s.history("alice", 1).unwrap()[0].at_ms, 8);
    }

    #[test]
    fn sent_copies_and_read_marks() {
        let mut s = ChatStore::in_memory().unwrap();
        assert!(s.insert_sent_copy(&msg("bob", 1, true, 5)).unwrap());
        assert!(
            !s.insert_sent_copy(&msg("bob", 1, true, 6)).unwrap(),
            "once"
        );
        assert!(s.has_outgoing("bob", &[1; 16]).unwrap());
        assert!(s.outbox().unwrap().is_empty(), "the other device sends it");
        for (id, at) in [(2, 10), (3, 20), (4, 20)] {
            s.insert_incoming(&msg("bob", id, false, at)).unwrap();
        }
        assert_eq!(s.unread("bob").unwrap(), 3);
        assert_eq!(s.newest_incoming("bob").unwrap(), Some((20, [4; 16])));
        assert!(s.mark_read("bob", (20, [3; 16])).unwrap());
        assert_eq!(s.unread("bob").unwrap(), 1, "same time, higher id: unread");
        assert!(!s.mark_read("bob", (10, [2; 16])).unwrap(), "never back");
        let h = s.history("bob", 10).unwrap();
        let read: Vec<bool> = h.iter().map(|m| m.read).collect();
        assert_eq!(read, [false, true, true, false]);
        assert!(s.mark_read("bob", (20, [4; 16])).unwrap());
        assert_eq!(s.unread("bob").unwrap(), 0);
        assert_eq!(s.unread("carol").unwrap(), 0);
    }

    #[test]
    fn newer_schema_is_refused() {
        use crate::sqlite::SqliteError;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("chat.db");
        drop(ChatStore::open(&p).unwrap());
        let c = Connection::open(&p).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        assert!(matches!(
            ChatStore::open(&p),
            Err(ChatError::Store(SqliteError::TooNew { found: 99, .. }))
        ));
    }
}
