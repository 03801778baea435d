//! The call history in an SQLite file in the data dir (`calls.db`): one
//! row per ended call — who, which way, when it started, when (and
//! whether) it was answered, when it ended and why — and whether a missed
//! call was seen. A missed call (incoming, never answered) stays unseen
//! until [`CallHistory::mark_seen`].

use super::EndReason;
use crate::sqlite::{Schema, SqliteError};
use crate::time::UnixMillis;
use rusqlite::{Connection, params};
use std::path::{Path, PathBuf};

const SCHEMA: Schema = Schema {
    what: "call history",
    cache_kib: Schema::SMALL_CACHE_KIB,
    migrations: &[
        // 1: the calls.
        "CREATE TABLE calls (
            n INTEGER PRIMARY KEY AUTOINCREMENT,
            peer TEXT NOT NULL,
            outgoing INTEGER NOT NULL,
            started_at INTEGER NOT NULL,
            answered_at INTEGER,
            ended_at INTEGER NOT NULL,
            reason TEXT NOT NULL,
            seen INTEGER NOT NULL
        );",
        // 2: a conference's other participants (comma-separated; '' for 1:1).
        "ALTER TABLE calls ADD COLUMN members TEXT NOT NULL DEFAULT '';",
    ],
};

/// Rows kept: older calls go as new ones come.
const MAX_ROWS: i64 = 1000;

/// One ended call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub peer: String,
    pub outgoing: bool,
    /// When it was dialled or began to ring here.
    pub started_at: UnixMillis,
    /// When it was answered; `None`: never answered.
    pub answered_at: Option<UnixMillis>,
    /// When it ended.
    pub ended_at: UnixMillis,
    pub reason: EndReason,
    /// For a missed call: the user has seen it (always true otherwise).
    pub seen: bool,
    /// A conference: everyone else who took part (`peer` is the first of
    /// them); empty for a 1:1 call.
    pub conference: Vec<String>,
}

impl CallRecord {
    /// Incoming and never answered (on any of our devices: a call
    /// answered on another one is not missed).
    pub fn missed(&self) -> bool {
        !self.outgoing
            && self.answered_at.is_none()
            && !matches!(self.reason, EndReason::AnsweredElsewhere { .. })
    }

    /// Who it was with: the peer, or "conference with ann, bob".
    pub fn with_whom(&self) -> String {
        if self.conference.is_empty() {
            self.peer.clone()
        } else {
            format!("conference with {}", self.conference.join(", "))
        }
    }

    /// How long it was answered, in ms (0 if never).
    pub fn duration_ms(&self) -> u64 {
        self.answered_at.map_or(0, |a| self.ended_at.since(a))
    }
}

fn reason_code(r: EndReason) -> std::borrow::Cow<'static, str> {
    std::borrow::Cow::Borrowed(match r {
        EndReason::AnsweredElsewhere { device } => {
            return format!("answered_elsewhere:{device}").into();
        }
        EndReason::Moved { device } => return format!("moved:{device}").into(),
        EndReason::TakeRefused => "take_refused",
        EndReason::HungUp { by_us: true } => "hung_up_by_us",
        EndReason::HungUp { by_us: false } => "hung_up_by_them",
        EndReason::Declined { by_us: true } => "declined_by_us",
        EndReason::Declined { by_us: false } => "declined_by_them",
        EndReason::Busy => "busy",
        EndReason::Cancelled { by_us: true } => "cancelled_by_us",
        EndReason::Cancelled { by_us: false } => "cancelled_by_them",
        EndReason::NoAnswer => "no_answer",
        EndReason::NoResponse => "no_response",
        EndReason::MediaFailed => "media_failed",
        EndReason::AudioFailed => "audio_failed",
    })
}

fn reason_of(code: &str) -> EndReason {
    if let Some(device) = code.strip_prefix("answered_elsewhere:") {
        return EndReason::AnsweredElsewhere {
            device: crate::call::DeviceName::new(device),
        };
    }
    if let Some(device) = code.strip_prefix("moved:") {
        return EndReason::Moved {
            device: crate::call::DeviceName::new(device),
        };
    }
    match code {
        "take_refused" => EndReason::TakeRefused,
        "hung_up_by_us" => EndReason::HungUp { by_us: true },
        "hung_up_by_them" => EndReason::HungUp { by_us: false },
        "declined_by_us" => EndReason::Declined { by_us: true },
        "declined_by_them" => EndReason::Declined { by_us: false },
        "busy" => EndReason::Busy,
        "cancelled_by_us" => EndReason::Cancelled { by_us: true },
        "cancelled_by_them" => EndReason::Cancelled { by_us: false },
        "no_answer" => EndReason::NoAnswer,
        "no_response" => EndReason::NoResponse,
        "audio_failed" => EndReason::AudioFailed,
        _ => EndReason::MediaFailed,
    }
}

pub struct CallHistory {
    path: PathBuf,
    conn: Connection,
}

impl std::fmt::Debug for CallHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallHistory")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl CallHistory {
    /// Open (or create) the history at `path`.
    pub fn open(path: &Path) -> Result<Self, SqliteError> {
        Ok(CallHistory {
            path: path.to_owned(),
            conn: SCHEMA.open(path)?,
        })
    }

    /// A history in memory only (tests).
    pub fn in_memory() -> Result<Self, SqliteError> {
        Ok(CallHistory {
            path: PathBuf::from(":memory:"),
            conn: SCHEMA.open_in_memory()?,
        })
    }

    fn err(&self, e: rusqlite::Error) -> SqliteError {
        SCHEMA.error(&self.path, e)
    }

    /// Add an ended call (a missed one unseen), dropping the oldest rows
    /// past `MAX_ROWS`.
    pub fn record(&mut self, c: &CallRecord) -> Result<(), SqliteError> {
        let seen = c.seen || !c.missed();
        self.conn
            .execute(
                "INSERT INTO calls (peer, outgoing, started_at, answered_at, ended_at, reason, seen, members)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    c.peer,
                    c.outgoing,
                    c.started_at.get() as i64,
                    c.answered_at.map(|a| a.get() as i64),
                    c.ended_at.get() as i64,
                    reason_code(c.reason),
                    seen,
                    c.conference.join(",")
                ],
            )
            .map_err(|e| self.err(e))?;
        self.conn
            .execute(
                "DELETE FROM calls WHERE n <= (SELECT MAX(n) FROM calls) - ?1",
                params![MAX_ROWS],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The newest `limit` calls, newest first.
    pub fn recent(&self, limit: u32) -> Result<Vec<CallRecord>, SqliteError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT peer, outgoing, started_at, answered_at, ended_at, reason, seen, members
                 FROM calls ORDER BY n DESC LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![limit], |r| {
                Ok(CallRecord {
                    peer: r.get(0)?,
                    outgoing: r.get(1)?,
                    started_at: UnixMillis(r.get::<_, i64>(2)? as u64),
                    answered_at: r.get::<_, Option<i64>>(3)?.map(|a| UnixMillis(a as u64)),
                    ended_at: UnixMillis(r.get::<_, i64>(4)? as u64),
                    reason: reason_of(&r.get::<_, String>(5)?),
                    seen: r.get(6)?,
                    conference: r
                        .get::<_, String>(7)?
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned)
                        .collect(),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The missed calls from `peer` (from anyone when `None`) are now
    /// seen; returns how many were not.
    pub fn mark_seen(&mut self, peer: Option<&str>) -> Result<usize, SqliteError> {
        self.conn
            .execute(
                "UPDATE calls SET seen = 1 WHERE seen = 0 AND (?1 IS NULL OR peer = ?1)",
                params![peer],
            )
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(peer: &str, outgoing: bool, answered: Option<u64>, reason: EndReason) -> CallRecord {
        CallRecord {
            peer: peer.into(),
            outgoing,
            started_at: UnixMillis(1_000),
            answered_at: answered.map(UnixMillis),
            ended_at: UnixMillis(61_000),
            reason,
            seen: false,
            conference: Vec::new(),
        }
    }

    #[test]
    fn a_conference_keeps_its_members() {
        let mut h = CallHistory::in_memory().unwrap();
        let mut c = call("ann", false, Some(6_000), EndReason::HungUp { by_us: true });
        c.conference = vec!["ann".into(), "bob".into()];
        h.record(&c).unwrap();
        h.record(&call("bob", true, None, EndReason::NoAnswer))
            .unwrap();
        let r = h.recent(10).unwrap();
        assert_eq!(r[1], CallRecord { seen: true, ..c });
        assert_eq!(r[1].with_whom(), "conference with ann, bob");
        assert_eq!(r[0].with_whom(), "bob");
        assert!(r[0].conference.is_empty());
    }

    #[test]
    fn missed_calls_stay_unseen_until_marked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calls.db");
        let mut h = CallHistory::open(&path).unwrap();
        h.record(&call(
            "carol",
            false,
            None,
            EndReason::Cancelled { by_us: false },
        ))
        .unwrap();
        h.record(&call(
            "bob",
            true,
            Some(6_000),
            EndReason::HungUp { by_us: true },
        ))
        .unwrap();
        drop(h);
        // Kept on disk.
        let mut h = CallHistory::open(&path).unwrap();
        let r = h.recent(10).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].peer, "bob");
        assert_eq!(r[0].duration_ms(), 55_000);
        assert!(r[0].seen && !r[0].missed());
        assert!(r[1].missed() && !r[1].seen);
        assert_eq!(r[1].reason, EndReason::Cancelled { by_us: false });
        assert_eq!(h.mark_seen(Some("bob")).unwrap(), 0);
        assert_eq!(h.mark_seen(Some("carol")).unwrap(), 1);
        assert!(h.recent(10).unwrap().iter().all(|c| c.seen));
        assert_eq!(h.mark_seen(None).unwrap(), 0);
    }

    /// Issue 17: a call answered on another device of ours is kept with
    /// that device's name, and is no missed call.
    #[test]
    fn a_call_answered_elsewhere_is_not_missed() {
        let mut h = CallHistory::in_memory().unwrap();
        let reason = EndReason::AnsweredElsewhere {
            device: crate::call::DeviceName::new("alice-laptop"),
        };
        h.record(&call("bob", false, None, reason)).unwrap();
        let r = h.recent(1).unwrap();
        assert_eq!(r[0].reason, reason);
        assert!(!r[0].missed() && r[0].seen);
    }

    #[test]
    fn old_rows_go() {
        let mut h = CallHistory::in_memory().unwrap();
        for _ in 0..(MAX_ROWS + 5) {
            h.record(&call("bob", true, None, EndReason::NoAnswer))
                .unwrap();
        }
        assert_eq!(h.recent(5000).unwrap().len(), MAX_ROWS as usize);
    }
}
