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
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The history's file (opened by [`crate::sqlite`], whose full fsync
/// makes a committed message survive power loss; chat writes are few).
pub(super) const SCHEMA: Schema = Schema {
    what: "chat history",
    cache_kib: Schema::SMALL_CACHE_KIB,
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
    // 3: history sync for a new device (issue 17). `history_synced`: 0
    // fresh, 1 done (history of its own, as a store that already held
    // messages, or taken from another of our devices), 2 partly taken.
    // Rows are listed by (sent_at, peer, id, outgoing).
    "CREATE TABLE sync_state (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    INSERT INTO sync_state (key, value)
        SELECT 'history_synced', EXISTS (SELECT 1 FROM messages);
    CREATE INDEX messages_by_sent ON messages (sent_at, peer, id, outgoing);
    CREATE INDEX messages_by_peer_sent ON messages (peer, sent_at, id);",
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

    /// The last `limit` messages exchanged with `peer`, oldest first, in
    /// (sent_at, id) order: the order every device of the account shows,
    /// whenever each message reached it.
    pub fn history(&self, peer: &str, limit: usize) -> Result<Vec<Message>, ChatError> {
        let mark = self.read_mark(peer)?;
        let mut st = self
            .conn
            .prepare(
                "SELECT id, outgoing, text, sent_at, at, acked_at FROM messages
                 WHERE peer = ?1 ORDER BY sent_at DESC, id DESC, outgoing DESC LIMIT ?2",
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

    /// Where this device stands in taking history from our other devices
    /// (see migration 3).
    pub fn history_state(&self) -> Result<HistoryState, ChatError> {
        let v = self
            .conn
            .query_row(
                "SELECT value FROM sync_state WHERE key = 'history_synced'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(match v.unwrap_or(0) {
            0 => HistoryState::Fresh,
            2 => HistoryState::Partial,
            _ => HistoryState::Done,
        })
    }

    pub fn set_history_state(&mut self, s: HistoryState) -> Result<(), ChatError> {
        let v = match s {
            HistoryState::Fresh => 0,
            HistoryState::Done => 1,
            HistoryState::Partial => 2,
        };
        self.conn
            .execute(
                "INSERT INTO sync_state (key, value) VALUES ('history_synced', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = ?1",
                params![v],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Whether the history holds any message.
    pub fn has_messages(&self) -> Result<bool, ChatError> {
        self.conn
            .query_row("SELECT EXISTS (SELECT 1 FROM messages)", [], |r| {
                r.get::<_, bool>(0)
            })
            .map_err(|e| self.err(e))
    }

    /// Up to `limit` messages (every peer, both directions) sent in
    /// `since_ms..until_ms`, after `after` in (sent_at, peer, id, outgoing)
    /// order; `read` as the conversation's read mark says.
    pub fn rows_since(
        &self,
        since_ms: u64,
        until_ms: u64,
        after: Option<&SyncKey>,
        limit: usize,
    ) -> Result<Vec<Message>, ChatError> {
        // No cursor: before every row at or after `since`.
        let (a_at, a_peer, a_id, a_out) = match after {
            Some(k) => (
                k.sent_at_ms as i64,
                k.peer.as_str(),
                k.id.to_vec(),
                k.outgoing,
            ),
            None => (since_ms as i64, "", Vec::new(), false),
        };
        let mut st = self
            .conn
            .prepare(
                "SELECT m.peer, m.id, m.outgoing, m.text, m.sent_at, m.at, m.acked_at,
                    (m.outgoing = 0 AND r.peer IS NOT NULL
                     AND (m.sent_at < r.sent_at OR (m.sent_at = r.sent_at AND m.id <= r.id)))
                 FROM messages m LEFT JOIN read_marks r ON r.peer = m.peer
                 WHERE m.sent_at >= ?1 AND m.sent_at < ?7
                   AND (m.sent_at, m.peer, m.id, m.outgoing) > (?2, ?3, ?4, ?5)
                 ORDER BY m.sent_at, m.peer, m.id, m.outgoing LIMIT ?6",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(
                params![
                    since_ms as i64,
                    a_at,
                    a_peer,
                    a_id,
                    a_out,
                    limit as i64,
                    until_ms.min(i64::MAX as u64) as i64
                ],
                |r| {
                    Ok(Message {
                        peer: r.get(0)?,
                        id: id_of(r.get(1)?),
                        outgoing: r.get::<_, i64>(2)? != 0,
                        text: r.get(3)?,
                        sent_at_ms: r.get::<_, i64>(4)? as u64,
                        at_ms: r.get::<_, i64>(5)? as u64,
                        acked_at_ms: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
                        read: r.get::<_, bool>(7)?,
                    })
                },
            )
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Take rows from another of our devices in one transaction: each
    /// message once (by peer, id and direction); an outgoing one's
    /// acknowledgement and an incoming one's read state are kept too.
    /// Returns, per peer, the messages added and whether the read mark
    /// moved.
    pub fn apply_rows(
        &mut self,
        rows: &[Message],
    ) -> Result<BTreeMap<String, (u64, bool)>, ChatError> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| ChatError::store(&self.path, e))?;
        let r = (|| {
            let mut out: BTreeMap<String, (u64, bool)> = BTreeMap::new();
            for m in rows {
                let n = tx.execute(
                    "INSERT OR IGNORE INTO messages (peer, id, outgoing, text, sent_at, at, acked_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        m.peer,
                        &m.id[..],
                        m.outgoing,
                        m.text,
                        m.sent_at_ms as i64,
                        m.at_ms as i64,
                        m.acked_at_ms.map(|v| v as i64)
                    ],
                )?;
                if n == 0 && m.acked_at_ms.is_some() {
                    tx.execute(
                        "UPDATE messages SET acked_at = ?3
                         WHERE peer = ?1 AND id = ?2 AND outgoing = 1 AND acked_at IS NULL",
                        params![m.peer, &m.id[..], m.acked_at_ms.map(|v| v as i64)],
                    )?;
                }
                let mut moved = false;
                if m.read && !m.outgoing {
                    // Forward only, as `mark_read`.
                    moved = tx.execute(
                        "INSERT INTO read_marks (peer, sent_at, id) VALUES (?1, ?2, ?3)
                         ON CONFLICT (peer) DO UPDATE SET sent_at = ?2, id = ?3
                         WHERE (sent_at, id) < (?2, ?3)",
                        params![m.peer, m.sent_at_ms as i64, &m.id[..]],
                    )? > 0;
                }
                let e = out.entry(m.peer.clone()).or_default();
                e.0 += n as u64;
                e.1 |= moved;
            }
            tx.commit()?;
            Ok(out)
        })();
        r.map_err(|e| self.err(e))
    }
}

/// The `history_synced` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryState {
    /// No history yet: ask our other devices.
    Fresh,
    /// Some taken, the sync not finished: ask again.
    Partial,
    /// Synced, or history of its own: never ask.
    Done,
}

/// Where a history listing stands: the last row's key, in the order of
/// [`ChatStore::rows_since`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncKey {
    pub sent_at_ms: u64,
    pub peer: String,
    pub id: MsgId,
    pub outgoing: bool,
}

impl SyncKey {
    pub fn of(m: &Message) -> Self {
        SyncKey {
            sent_at_ms: m.sent_at_ms,
            peer: m.peer.clone(),
            id: m.id,
            outgoing: m.outgoing,
        }
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

    /// A store from before migration 3 that holds messages has history of
    /// its own; a new one is fresh until told otherwise.
    #[test]
    fn history_state_after_upgrade_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        for (name, with_messages, want) in [
            ("old.db", true, HistoryState::Done),
            ("empty.db", false, HistoryState::Fresh),
        ] {
            let p = dir.path().join(name);
            let c = Connection::open(&p).unwrap();
            for m in &MIGRATIONS[..2] {
                c.execute_batch(m).unwrap();
            }
            c.pragma_update(None, "user_version", 2).unwrap();
            if with_messages {
                c.execute(
                    "INSERT INTO messages (peer, id, outgoing, text, sent_at, at) VALUES ('bob', x'01', 0, 'hi', 1, 1)",
                    [],
                )
                .unwrap();
            }
            drop(c);
            assert_eq!(ChatStore::open(&p).unwrap().history_state().unwrap(), want);
        }
        let p = dir.path().join("new.db");
        let mut s = ChatStore::open(&p).unwrap();
        assert_eq!(s.history_state().unwrap(), HistoryState::Fresh);
        s.set_history_state(HistoryState::Partial).unwrap();
        drop(s);
        let s = ChatStore::open(&p).unwrap();
        assert_eq!(s.history_state().unwrap(), HistoryState::Partial);
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
