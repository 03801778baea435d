//! The sans-IO core of every file transfer of one node, both directions.
//!
//! It takes `now` (ms), signalling messages, link messages and the
//! owner's commands, and gives back [`Output`]s: envelopes and link
//! messages to send, data packets to read from disk and send, resume
//! records to write, files to check, and [`FileEvent`]s. It never touches
//! a file, a socket or a clock: the node's files sub-driver does.
//!
//! Sender: offers (name, size, hash), then on the receiver's answer sends
//! the byte ranges the receiver lacks in numbered packets under a
//! [`Ledbat`] window; acknowledged packet numbers retire them, a packet
//! three numbers behind the newest acknowledged one is lost and its bytes
//! go back in the queue; nothing acknowledged for a retransmission
//! timeout sends everything in flight again with the window at its
//! minimum. Once every byte is acknowledged it waits for the receiver's
//! verdict on the whole-file hash.
//!
//! Receiver: holds an offer until the user accepts (with a destination)
//! or declines; records the byte ranges written (persisted every
//! `persist_ms`, so a restart resumes: the ranges on disk are always
//! ones already written), acknowledges every second packet (or after
//! [`ACK_DELAY_MS`]), asks for the file to be checked once it holds every
//! byte, and re-sends its answer when data stops coming (the sender may
//! have restarted).

use super::ledbat::{self, Ledbat};
use super::ranges::RangeSet;
use super::wire::{CancelReason, LinkMsg, Signal, TransferId, kind};
use crate::time::Millis;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;

/// Acknowledge at least this often while data arrives, ms.
pub const ACK_DELAY_MS: u64 = 2;
/// Packets received before an acknowledgement goes at once.
const ACK_EVERY: u32 = 2;
/// Packet numbers behind the newest acknowledged one that count as lost.
const REORDER_THRESHOLD: u64 = 3;
/// Packet-number ranges a receiver remembers for its acknowledgements.
const MAX_PN_RANGES: usize = 64;

/// Limits and timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferConfig {
    /// File bytes per data packet (fits a 1280-byte path with headers);
    /// a path known to carry more may get larger ones
    /// ([`Transfers::set_path_chunk`]).
    pub chunk: usize,
    /// Ceiling of the congestion window, bytes.
    pub max_window: u64,
    /// Progress events per transfer at most this often, ms.
    pub progress_ms: u64,
    /// Resume records are written at most this often, ms...
    pub persist_ms: u64,
    /// ...or once this many new bytes were written, whichever is first.
    pub persist_bytes: u64,
    /// A receiver with no data for this long re-sends its answer (and
    /// doubles the wait up to 16 times); a sender with data in flight and
    /// no acknowledgement for this long reconnects.
    pub stall_ms: u64,
    /// An offer nobody answered expires after this long, ms.
    pub offer_ttl_ms: u64,
    /// Incoming transfers (offers included) held at once, in all.
    pub max_incoming: usize,
    /// Incoming transfers one peer may hold.
    pub max_incoming_per_peer: usize,
    /// Outgoing transfers at once.
    pub max_outgoing: usize,
    /// File bytes per second this node sends, all transfers together
    /// (leaves room for a call on a thin uplink); 0: no limit.
    pub max_rate: u64,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            chunk: 1200,
            max_window: 8 << 20,
            progress_ms: 500,
            persist_ms: 250,
            persist_bytes: 1 << 20,
            stall_ms: 4000,
            offer_ttl_ms: 3_600_000,
            max_incoming: 64,
            max_incoming_per_peer: 8,
            max_outgoing: 64,
            max_rate: 0,
        }
    }
}

/// Why a transfer ended without the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFailure {
    /// The receiver declined the offer.
    Declined,
    /// One side cancelled it (`by_peer`: the other one).
    Cancelled { by_peer: bool },
    /// The whole file's hash did not match the offer: not moved into place.
    HashMismatch,
    /// Reading or writing the file failed (here, or at the peer).
    Io { by_peer: bool },
    /// The sender's file changed since it was offered.
    Changed,
    /// Nobody answered the offer in time.
    Expired,
    /// The other side does not know the transfer (it was forgotten).
    Unknown,
    /// The offer was refused: too many transfers from that peer or in all.
    Refused,
}

impl FileFailure {
    /// A stable short code for scripts.
    pub fn code(self) -> &'static str {
        match self {
            FileFailure::Declined => "declined",
            FileFailure::Cancelled { by_peer: false } => "cancelled",
            FileFailure::Cancelled { by_peer: true } => "cancelled_by_peer",
            FileFailure::HashMismatch => "hash_mismatch",
            FileFailure::Io { by_peer: false } => "io",
            FileFailure::Io { by_peer: true } => "peer_io",
            FileFailure::Changed => "changed",
            FileFailure::Expired => "expired",
            FileFailure::Unknown => "unknown",
            FileFailure::Refused => "refused",
        }
    }
}

/// How far a transfer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProgress {
    pub id: TransferId,
    pub peer: String,
    pub outgoing: bool,
    /// Bytes the receiver holds (acknowledged, for the sender).
    pub done: u64,
    pub size: u64,
    /// Bytes per second over the last seconds.
    pub rate: u64,
    /// Time left at that rate, ms (none while nothing moves).
    pub eta_ms: Option<u64>,
    /// File bytes this process put on the wire (sender, retransmissions
    /// included) or took from it (receiver, new bytes only).
    pub wire_bytes: u64,
}

/// What the transfers report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileEvent {
    /// A user offers us a file; accept or decline it by `id`.
    Offered {
        id: TransferId,
        peer: String,
        name: String,
        size: u64,
    },
    /// Our offer is out (again, after a restart).
    Offering {
        id: TransferId,
        peer: String,
        name: String,
        size: u64,
    },
    /// Data flows (again): the receiver held `resumed_from` bytes.
    Started {
        id: TransferId,
        peer: String,
        outgoing: bool,
        resumed_from: u64,
    },
    Progress(FileProgress),
    /// The file arrived whole (hash checked) at `path` (the sender's own
    /// file for outgoing transfers).
    Completed {
        id: TransferId,
        peer: String,
        outgoing: bool,
        path: PathBuf,
        size: u64,
        /// As in [`FileProgress::wire_bytes`]: after a restart, what this
        /// process moved (not the whole file when it resumed).
        wire_bytes: u64,
    },
    Failed {
        id: TransferId,
        peer: String,
        outgoing: bool,
        reason: FileFailure,
    },
}

/// One transfer, for lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub id: TransferId,
    pub peer: String,
    pub outgoing: bool,
    pub name: String,
    pub size: u64,
    pub done: u64,
    pub state: FileState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// Offered, not answered.
    Offered,
    /// Accepted; data flows or will once the peer path is up.
    Transferring,
    /// Every byte is there; the whole-file hash is being checked.
    Verifying,
}

/// What the core asks of its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A sealed envelope to `to`.
    Signal {
        to: String,
        id: TransferId,
        kind: u8,
        payload: Vec<u8>,
    },
    /// A message on the peer link with `to`.
    Link {
        to: String,
        bytes: Vec<u8>,
    },
    /// Open a peer connection to `peer` (no-op when one is up).
    Connect {
        peer: String,
    },
    /// The peer restarted: drop the old peer connection, open a new one.
    Reconnect {
        peer: String,
    },
    /// Write the resume record of incoming transfer `id`.
    Persist {
        id: TransferId,
    },
    /// Incoming `id` holds every byte: hash it, then call
    /// [`Transfers::verified`].
    Verify {
        id: TransferId,
    },
    /// Drop what is kept for `id` (its resume record; the partial file
    /// too when `discard`).
    Forget {
        id: TransferId,
        discard: bool,
    },
    Event(FileEvent),
}

/// A data packet to send: read `len` bytes of `id`'s file at `offset`,
/// put them after [`LinkMsg::data_header`]`(id, pn, ts, offset)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataOut {
    pub to: String,
    pub id: TransferId,
    pub pn: u64,
    pub ts: u32,
    pub offset: u64,
    pub len: usize,
}

/// How the sender of a signal stands to us (from the contact list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// An authorized contact (or a node without a contact list).
    Contact,
    /// Anyone else who is not blocked.
    Stranger,
    /// A user we blocked.
    Blocked,
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Offers refused for the per-peer or total limit.
    pub offers_refused: u64,
    /// Offers from users who are not contacts, dropped unanswered.
    pub offers_from_strangers: u64,
    /// Offers from blocked users, dropped unanswered.
    pub offers_from_blocked: u64,
    /// Link messages for no transfer of that peer, or out of range.
    pub stray: u64,
    /// Data packets declared lost.
    pub lost: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
}

/// Bytes-done samples for the rate.
#[derive(Debug, Clone, Default)]
struct Rate {
    /// (ms, bytes done), oldest first, a few seconds' worth.
    samples: VecDeque<(Millis, u64)>,
}

impl Rate {
    fn sample(&mut self, now: Millis, done: u64) -> u64 {
        self.samples.push_back((now, done));
        while self.samples.len() > 2 && now.since(self.samples[0].0) > 3000 {
            self.samples.pop_front();
        }
        let (t0, d0) = self.samples[0];
        if now > t0 {
            done.saturating_sub(d0) * 1000 / now.since(t0)
        } else {
            0
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    offset: u64,
    len: u64,
    at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    Offered,
    Sending,
    /// Every byte acknowledged; waiting for the receiver's DONE.
    Finishing,
}

/// A file we send.
#[derive(Debug)]
pub(super) struct Outgoing {
    peer: String,
    /// Our file (its bytes are read by the driver).
    path: PathBuf,
    name: String,
    size: u64,
    state: OutState,
    /// When offered (for the offer's expiry).
    offered_at: Millis,
    /// Bytes the receiver lacks that are not in flight, lowest first.
    to_send: RangeSet,
    /// Packets in flight by number.
    inflight: BTreeMap<u64, Sent>,
    /// File bytes per data packet now: the configured chunk, or what the
    /// path to the peer is known to carry.
    chunk: u64,
    /// Sum of `inflight` lengths.
    pub(super) flight: u64,
    next_pn: u64,
    /// Newest packet number acknowledged.
    largest_acked: Option<u64>,
    pub(super) cc: Ledbat,
    /// Smoothed round trip and its variation, ms (RFC 6298).
    srtt: Option<f64>,
    rttvar: f64,
    /// Consecutive retransmission timeouts (doubles the timeout).
    backoff: u32,
    /// Last acknowledgement (or start of sending), for the timeout and
    /// the stall.
    last_ack_at: Millis,
    /// The receiver's process, from its answer: a new one means it
    /// restarted.
    incarnation: Option<u64>,
    /// File bytes put on the wire by this process.
    wire_bytes: u64,
    progress_at: Millis,
    rate: Rate,
}

impl Outgoing {
    fn done(&self) -> u64 {
        self.size - self.to_send.total().min(self.size) - self.flight.min(self.size)
    }

    /// Send packets of `chunk` file bytes from now on.
    fn set_chunk(&mut self, chunk: u64) {
        self.chunk = chunk;
        self.cc.set_mss(chunk);
    }

    fn rto(&self) -> u64 {
        let base = match self.srtt {
            Some(s) => (s + 4.0 * self.rttvar) as u64,
            None => 1000,
        };
        (base.clamp(200, 4000) << self.backoff.min(4)).min(20_000)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InState {
    Offered,
    Receiving,
    Verifying,
}

/// A file we receive.
#[derive(Debug)]
struct Incoming {
    peer: String,
    name: String,
    size: u64,
    hash: [u8; 32],
    state: InState,
    offered_at: Millis,
    /// Where it goes once whole (the driver writes `dest` + ".part").
    dest: Option<PathBuf>,
    /// Byte ranges written: the resume record.
    have: RangeSet,
    /// Bytes held when this process took the transfer up.
    resumed_from: u64,
    /// Recent packet numbers, for acknowledgements.
    pns: RangeSet,
    /// Timestamp of the newest packet and the receive time, for the
    /// delay echo.
    newest_ts: u32,
    /// Packets since the last acknowledgement.
    unacked: u32,
    /// When the pending acknowledgement is due.
    ack_at: Option<Millis>,
    /// Last data packet, or when we (re)sent our answer.
    last_data_at: Millis,
    /// Answers re-sent since data last came (doubles the wait).
    resends: u32,
    /// `have` changed since the record was last written.
    dirty: bool,
    /// New bytes since the record was last written.
    unpersisted: u64,
    persist_at: Millis,
    wire_bytes: u64,
    progress_at: Millis,
    rate: Rate,
}

/// Incoming transfer's resume record, borrowed: (peer, name, size, hash,
/// destination, ranges held).
pub type Record<'a> = (
    &'a str,
    &'a str,
    u64,
    [u8; 32],
    Option<&'a std::path::Path>,
    &'a RangeSet,
);

/// Every transfer of one node; see the module docs.
#[derive(Debug)]
pub struct Transfers {
    config: TransferConfig,
    /// This process's incarnation, sent in answers.
    incarnation: u64,
    pub(super) outgoing: BTreeMap<TransferId, Outgoing>,
    incoming: BTreeMap<TransferId, Incoming>,
    /// Peers with a peer link up, for sending data.
    up: HashMap<String, ()>,
    /// Peers to connect to again at the time given (after a failure).
    reconnect_at: HashMap<String, Millis>,
    /// Data packet sizes above the configured chunk that the path to a
    /// peer is known to carry ([`Transfers::set_path_chunk`]).
    path_chunks: HashMap<String, u64>,
    /// Round-robin position among senders.
    cursor: TransferId,
    /// Send credit under `max_rate`: bytes, and when it was last topped up.
    pace: (u64, Millis),
    /// A call is running on this node: windows aim at
    /// [`ledbat::CALL_TARGET_MS`] of queuing, so the call's packets do not
    /// wait behind the transfer's.
    call: bool,
    out: VecDeque<Output>,
    stats: TransferStats,
}

impl Transfers {
    /// `incarnation`: random, new per process start.
    pub fn new(config: TransferConfig, incarnation: u64) -> Self {
        Transfers {
            config,
            incarnation,
            outgoing: BTreeMap::new(),
            incoming: BTreeMap::new(),
            up: HashMap::new(),
            reconnect_at: HashMap::new(),
            path_chunks: HashMap::new(),
            cursor: 0,
            pace: (0, Millis::ZERO),
            call: false,
            out: VecDeque::new(),
            stats: TransferStats::default(),
        }
    }

    /// Whether a call runs on this node (see [`Transfers::call`]'s field).
    pub fn set_call(&mut self, on: bool) {
        if self.call == on {
            return;
        }
        self.call = on;
        let target = self.target();
        for o in self.outgoing.values_mut() {
            o.cc.set_target(target);
        }
    }

    /// Whether a call runs on this node.
    pub fn call(&self) -> bool {
        self.call
    }

    /// The path to `peer` is known to carry data packets of `chunk` file
    /// bytes (a loopback path, say): transfers to it use them (never less
    /// than the configured chunk). Forgotten when the path goes down, and
    /// when a retransmission timeout suggests the path no longer does.
    pub fn set_path_chunk(&mut self, peer: &str, chunk: usize) {
        let chunk = (chunk as u64).max(self.config.chunk as u64);
        if chunk > self.config.chunk as u64 {
            self.path_chunks.insert(peer.to_owned(), chunk);
        } else {
            self.path_chunks.remove(peer);
        }
        for o in self.outgoing.values_mut().filter(|o| o.peer == peer) {
            o.set_chunk(chunk);
        }
    }

    fn target(&self) -> i64 {
        if self.call {
            ledbat::CALL_TARGET_MS
        } else {
            ledbat::TARGET_MS
        }
    }

    /// A congestion controller for a new transfer.
    fn new_cc(&self) -> Ledbat {
        let mut cc = Ledbat::new(self.config.chunk as u64, self.config.max_window);
        cc.set_target(self.target());
        cc
    }

    pub fn config(&self) -> &TransferConfig {
        &self.config
    }

    pub fn stats(&self) -> &TransferStats {
        &self.stats
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    fn event(&mut self, e: FileEvent) {
        self.out.push_back(Output::Event(e));
    }

    fn signal(&mut self, to: &str, id: TransferId, s: Signal<'_>) {
        self.out.push_back(Output::Signal {
            to: to.to_owned(),
            id,
            kind: s.kind(),
            payload: s.encode(),
        });
    }

    /// The file of outgoing `id` (to read data from).
    pub fn source(&self, id: TransferId) -> Option<&std::path::Path> {
        self.outgoing.get(&id).map(|o| o.path.as_path())
    }

    /// Incoming `id`: (peer, name, size, hash, destination, ranges held),
    /// for its resume record.
    pub fn record(&self, id: TransferId) -> Option<Record<'_>> {
        let i = self.incoming.get(&id)?;
        Some((&i.peer, &i.name, i.size, i.hash, i.dest.as_deref(), &i.have))
    }

    /// The offered name of incoming `id`.
    pub fn offered_name(&self, id: TransferId) -> Option<&str> {
        self.incoming.get(&id).map(|i| i.name.as_str())
    }

    pub fn list(&self) -> Vec<FileInfo> {
        let outs = self.outgoing.iter().map(|(&id, o)| FileInfo {
            id,
            peer: o.peer.clone(),
            outgoing: true,
            name: o.name.clone(),
            size: o.size,
            done: o.done(),
            state: match o.state {
                OutState::Offered => FileState::Offered,
                OutState::Sending => FileState::Transferring,
                OutState::Finishing => FileState::Verifying,
            },
        });
        let ins = self.incoming.iter().map(|(&id, i)| FileInfo {
            id,
            peer: i.peer.clone(),
            outgoing: false,
            name: i.name.clone(),
            size: i.size,
            done: i.have.total(),
            state: match i.state {
                InState::Offered => FileState::Offered,
                InState::Receiving => FileState::Transferring,
                InState::Verifying => FileState::Verifying,
            },
        });
        outs.chain(ins).collect()
    }

    /// Offer `path` (hashed by the driver) to `peer`. With `restored`,
    /// this is an offer of a previous process taken up again.
    #[allow(clippy::too_many_arguments)]
    pub fn offer(
        &mut self,
        now: Millis,
        id: TransferId,
        peer: &str,
        path: PathBuf,
        name: &str,
        size: u64,
        hash: [u8; 32],
    ) -> Result<(), FileFailure> {
        if self.outgoing.len() >= self.config.max_outgoing {
            return Err(FileFailure::Refused);
        }
        self.outgoing.insert(
            id,
            Outgoing {
                peer: peer.to_owned(),
                path,
                name: name.to_owned(),
                size,
                state: OutState::Offered,
                offered_at: now,
                to_send: RangeSet::new(),
                inflight: BTreeMap::new(),
                chunk: self.config.chunk as u64,
                flight: 0,
                next_pn: 0,
                largest_acked: None,
                cc: self.new_cc(),
                srtt: None,
                rttvar: 0.0,
                backoff: 0,
                last_ack_at: now,
                incarnation: None,
                wire_bytes: 0,
                progress_at: now,
                rate: Rate::default(),
            },
        );
        self.signal(
            peer,
            id,
            Signal::Offer {
                id,
                size,
                hash,
                name,
            },
        );
        self.event(FileEvent::Offering {
            id,
            peer: peer.to_owned(),
            name: name.to_owned(),
            size,
        });
        Ok(())
    }

    /// Take up incoming `id` of a previous process (its resume record).
    #[allow(clippy::too_many_arguments)]
    pub fn restore_incoming(
        &mut self,
        now: Millis,
        id: TransferId,
        peer: &str,
        name: &str,
        size: u64,
        hash: [u8; 32],
        dest: PathBuf,
        have: RangeSet,
    ) {
        let mut i = new_incoming(now, peer, name, size, hash);
        i.dest = Some(dest);
        i.resumed_from = have.total();
        i.have = have;
        self.incoming.insert(id, i);
        self.event(FileEvent::Offered {
            id,
            peer: peer.to_owned(),
            name: name.to_owned(),
            size,
        });
        self.start_receiving(now, id);
    }

    /// Accept incoming `id` into `dest`.
    pub fn accept(
        &mut self,
        now: Millis,
        id: TransferId,
        dest: PathBuf,
    ) -> Result<(), FileFailure> {
        match self.incoming.get_mut(&id) {
            Some(i) if i.state == InState::Offered => {
                i.dest = Some(dest);
                i.dirty = true;
            }
            _ => return Err(FileFailure::Unknown),
        }
        self.out.push_back(Output::Persist { id });
        self.start_receiving(now, id);
        Ok(())
    }

    fn start_receiving(&mut self, now: Millis, id: TransferId) {
        let Some(i) = self.incoming.get_mut(&id) else {
            return;
        };
        i.state = InState::Receiving;
        i.last_data_at = now;
        i.resends = 0;
        let (peer, resumed_from) = (i.peer.clone(), i.have.total());
        self.send_answer(id);
        self.event(FileEvent::Started {
            id,
            peer,
            outgoing: false,
            resumed_from,
        });
        self.check_complete(now, id);
    }

    fn send_answer(&mut self, id: TransferId) {
        let Some(i) = self.incoming.get(&id) else {
            return;
        };
        let (peer, have) = (i.peer.clone(), i.have.ranges().to_vec());
        let incarnation = self.incarnation;
        self.signal(
            &peer,
            id,
            Signal::Answer {
                id,
                accept: true,
                incarnation,
                have,
            },
        );
    }

    /// Decline incoming `id` (not yet accepted).
    pub fn decline(&mut self, id: TransferId) -> Result<(), FileFailure> {
        match self.incoming.get(&id) {
            Some(i) if i.state == InState::Offered => {}
            _ => return Err(FileFailure::Unknown),
        }
        let i = self.incoming.remove(&id).expect("checked above");
        self.signal(
            &i.peer,
            id,
            Signal::Answer {
                id,
                accept: false,
                incarnation: self.incarnation,
                have: Vec::new(),
            },
        );
        self.event(FileEvent::Failed {
            id,
            peer: i.peer,
            outgoing: false,
            reason: FileFailure::Declined,
        });
        Ok(())
    }

    /// Cancel transfer `id` in either direction.
    pub fn cancel(&mut self, id: TransferId) -> Result<(), FileFailure> {
        self.end(id, FileFailure::Cancelled { by_peer: false }, true)
            .then_some(())
            .ok_or(FileFailure::Unknown)
    }

    /// End `id` with `reason`: tell the peer (`tell`), forget it, report.
    fn end(&mut self, id: TransferId, reason: FileFailure, tell: bool) -> bool {
        let wire = match reason {
            FileFailure::Io { .. } => CancelReason::Io,
            FileFailure::Changed => CancelReason::Changed,
            _ => CancelReason::User,
        };
        let (peer, outgoing) = if let Some(o) = self.outgoing.remove(&id) {
            (o.peer, true)
        } else if let Some(i) = self.incoming.remove(&id) {
            (i.peer, false)
        } else {
            return false;
        };
        if tell {
            self.signal(&peer, id, Signal::Cancel { id, reason: wire });
        }
        self.out.push_back(Output::Forget { id, discard: true });
        self.event(FileEvent::Failed {
            id,
            peer,
            outgoing,
            reason,
        });
        true
    }

    /// Reading or writing `id`'s file failed here.
    pub fn io_failed(&mut self, id: TransferId) {
        self.end(id, FileFailure::Io { by_peer: false }, true);
    }

    /// The sender's file no longer matches its offer.
    pub fn source_changed(&mut self, id: TransferId) {
        self.end(id, FileFailure::Changed, true);
    }

    /// The driver hashed incoming `id`'s file: `ok` when it matched (and
    /// the file is in place).
    pub fn verified(&mut self, id: TransferId, ok: bool) {
        let Some(i) = self.incoming.remove(&id) else {
            return;
        };
        self.signal(&i.peer, id, Signal::Done { id, ok });
        self.out.push_back(Output::Forget { id, discard: !ok });
        let e = if ok {
            FileEvent::Completed {
                id,
                peer: i.peer,
                outgoing: false,
                path: i.dest.unwrap_or_default(),
                size: i.size,
                wire_bytes: i.wire_bytes,
            }
        } else {
            FileEvent::Failed {
                id,
                peer: i.peer,
                outgoing: false,
                reason: FileFailure::HashMismatch,
            }
        };
        self.event(e);
    }

    /// The peer link with `peer` is up (or down).
    pub fn path(&mut self, now: Millis, peer: &str, up: bool) {
        if up {
            self.up.insert(peer.to_owned(), ());
            self.reconnect_at.remove(peer);
            for o in self.outgoing.values_mut().filter(|o| o.peer == peer) {
                o.last_ack_at = now;
            }
            return;
        }
        // The next path says what it carries.
        self.set_path_chunk(peer, 0);
        if self.up.remove(peer).is_some() || self.sending_to(peer) {
            self.reconnect_at
                .insert(peer.to_owned(), now + self.config.stall_ms);
        }
    }

    fn sending_to(&self, peer: &str) -> bool {
        self.outgoing
            .values()
            .any(|o| o.peer == peer && o.state != OutState::Offered)
    }

    /// A signalling envelope from `from` (its certificate's user), who
    /// stands to us as `standing`. A new offer is taken from a contact
    /// only: a stranger's is dropped unanswered and counted (they ask to
    /// be a contact first, through chat); a blocked user's is dropped
    /// whatever it is (a resumed one too). A stranger's offer of a
    /// transfer we already hold (accepted while they were a contact)
    /// resumes it.
    pub fn on_signal(&mut self, now: Millis, from: &str, standing: Standing, s: Signal<'_>) {
        match s {
            Signal::Offer { .. } if standing == Standing::Blocked => {
                self.stats.offers_from_blocked += 1;
            }
            Signal::Offer { id, .. }
                if standing == Standing::Stranger
                    && self.incoming.get(&id).is_none_or(|i| i.peer != from) =>
            {
                self.stats.offers_from_strangers += 1;
                if crate::limits::log_worthy(self.stats.offers_from_strangers) {
                    tracing::info!(%from, dropped = self.stats.offers_from_strangers, "file offer from a stranger dropped");
                }
            }
            Signal::Offer {
                id,
                size,
                hash,
                name,
            } => self.on_offer(now, from, id, size, hash, name),
            Signal::Answer {
                id,
                accept,
                incarnation,
                have,
            } => self.on_answer(now, from, id, accept, incarnation, have),
            Signal::Cancel { id, reason } => {
                if self.peer_of(id) != Some(from) {
                    self.stats.stray += 1;
                    return;
                }
                let r = match reason {
                    CancelReason::User => {
                        if self
                            .outgoing
                            .get(&id)
                            .is_some_and(|o| o.state == OutState::Offered)
                        {
                            FileFailure::Declined
                        } else {
                            FileFailure::Cancelled { by_peer: true }
                        }
                    }
                    CancelReason::Io => FileFailure::Io { by_peer: true },
                    CancelReason::Changed => FileFailure::Changed,
                    CancelReason::Unknown => FileFailure::Unknown,
                };
                self.end(id, r, false);
            }
            Signal::Done { id, ok } => {
                if self.outgoing.get(&id).is_none_or(|o| o.peer != from) {
                    self.stats.stray += 1;
                    return;
                }
                let o = self.outgoing.remove(&id).expect("checked above");
                self.out.push_back(Output::Forget { id, discard: false });
                self.event(if ok {
                    FileEvent::Completed {
                        id,
                        peer: o.peer,
                        outgoing: true,
                        path: o.path,
                        size: o.size,
                        wire_bytes: o.wire_bytes,
                    }
                } else {
                    FileEvent::Failed {
                        id,
                        peer: o.peer,
                        outgoing: true,
                        reason: FileFailure::HashMismatch,
                    }
                });
            }
        }
    }

    fn peer_of(&self, id: TransferId) -> Option<&str> {
        self.outgoing
            .get(&id)
            .map(|o| o.peer.as_str())
            .or_else(|| self.incoming.get(&id).map(|i| i.peer.as_str()))
    }

    fn on_offer(
        &mut self,
        now: Millis,
        from: &str,
        id: TransferId,
        size: u64,
        hash: [u8; 32],
        name: &str,
    ) {
        if let Some(i) = self.incoming.get(&id) {
            if i.peer != from || i.size != size || i.hash != hash {
                self.stats.stray += 1;
                return;
            }
            // The sender restarted: tell it what we hold.
            if i.state != InState::Offered {
                self.send_answer(id);
                if let Some(i) = self.incoming.get_mut(&id) {
                    i.last_data_at = now;
                    i.resends = 0;
                    // It numbers its packets from 0 again: acknowledging
                    // the dead process's numbers would retire new packets
                    // that were lost.
                    i.pns = RangeSet::new();
                    i.unacked = 0;
                    i.ack_at = None;
                }
            }
            return;
        }
        let per_peer = self.incoming.values().filter(|i| i.peer == from).count();
        if self.incoming.len() >= self.config.max_incoming
            || per_peer >= self.config.max_incoming_per_peer
        {
            self.stats.offers_refused += 1;
            self.signal(
                from,
                id,
                Signal::Answer {
                    id,
                    accept: false,
                    incarnation: self.incarnation,
                    have: Vec::new(),
                },
            );
            return;
        }
        let name = safe_name(name);
        self.incoming
            .insert(id, new_incoming(now, from, &name, size, hash));
        self.event(FileEvent::Offered {
            id,
            peer: from.to_owned(),
            name,
            size,
        });
    }

    fn on_answer(
        &mut self,
        now: Millis,
        from: &str,
        id: TransferId,
        accept: bool,
        incarnation: u64,
        have: Vec<(u64, u64)>,
    ) {
        let cc = self.new_cc();
        let Some(o) = self.outgoing.get_mut(&id) else {
            // A transfer we forgot: the receiver should stop asking.
            self.signal(
                from,
                id,
                Signal::Cancel {
                    id,
                    reason: CancelReason::Unknown,
                },
            );
            return;
        };
        if o.peer != from {
            self.stats.stray += 1;
            return;
        }
        if !accept {
            let reason = if o.state == OutState::Offered {
                FileFailure::Declined
            } else {
                FileFailure::Refused
            };
            self.end(id, reason, false);
            return;
        }
        let have = RangeSet::from_ranges(have, o.size);
        if o.state == OutState::Sending && o.incarnation == Some(incarnation) {
            // A repeated answer (the receiver saw a stall): what it holds
            // need not be sent; what is in flight stays in flight.
            for &(s, e) in have.ranges() {
                o.to_send.remove(s, e);
            }
            return;
        }
        o.to_send = have.complement(o.size);
        o.inflight.clear();
        o.flight = 0;
        o.largest_acked = None;
        o.backoff = 0;
        o.last_ack_at = now;
        o.cc = cc;
        o.chunk = self.config.chunk as u64;
        if let Some(&c) = self.path_chunks.get(&o.peer) {
            o.set_chunk(c);
        }
        let restarted = o.incarnation.is_some_and(|i| i != incarnation);
        o.incarnation = Some(incarnation);
        o.state = if o.to_send.is_empty() {
            OutState::Finishing
        } else {
            OutState::Sending
        };
        let peer = o.peer.clone();
        if restarted {
            self.up.remove(&peer);
            self.out.push_back(Output::Reconnect { peer: peer.clone() });
        } else if !self.up.contains_key(&peer) {
            self.out.push_back(Output::Connect { peer: peer.clone() });
        }
        self.event(FileEvent::Started {
            id,
            peer,
            outgoing: true,
            resumed_from: have.total(),
        });
    }

    /// Whether a DATA packet for `id` from `from` at `[offset, offset+len)`
    /// is wanted: the driver writes it, then calls `Transfers::on_data`.
    pub fn wants_data(&mut self, from: &str, id: TransferId, offset: u64, len: usize) -> bool {
        let ok = self.incoming.get(&id).is_some_and(|i| {
            i.peer == from
                && i.state == InState::Receiving
                && i.dest.is_some()
                && offset
                    .checked_add(len as u64)
                    .is_some_and(|end| end <= i.size)
        });
        if !ok {
            self.stats.stray += 1;
        }
        ok
    }

    /// A link message from `from` (a DATA's bytes already written when
    /// [`Transfers::wants_data`] said so).
    pub fn on_link(&mut self, now: Millis, from: &str, m: &LinkMsg<'_>) {
        match m {
            LinkMsg::Data {
                id,
                pn,
                ts,
                offset,
                bytes,
            } => self.on_data(now, *id, *pn, *ts, *offset, bytes.len() as u64),
            LinkMsg::Ack { id, delay, ranges } => {
                if self.outgoing.get(id).is_none_or(|o| o.peer != from) {
                    self.stats.stray += 1;
                    return;
                }
                self.on_ack(now, *id, *delay, ranges);
            }
        }
    }

    fn on_data(&mut self, now: Millis, id: TransferId, pn: u64, ts: u32, offset: u64, len: u64) {
        let Some(i) = self.incoming.get_mut(&id) else {
            return;
        };
        if i.state != InState::Receiving {
            return;
        }
        let fresh = i.have.insert(offset, offset + len);
        i.wire_bytes += fresh;
        i.dirty |= fresh > 0;
        i.unpersisted += fresh;
        if i.unpersisted >= self.config.persist_bytes {
            i.unpersisted = 0;
            i.dirty = false;
            i.persist_at = now + self.config.persist_ms;
            self.out.push_back(Output::Persist { id });
        }
        i.last_data_at = now;
        i.resends = 0;
        if i.pns.max().is_none_or(|m| pn >= m) {
            i.newest_ts = ts;
        }
        i.pns.insert(pn, pn + 1);
        while i.pns.len() > MAX_PN_RANGES {
            let (s, e) = i.pns.ranges()[0];
            i.pns.remove(s, e);
        }
        i.unacked += 1;
        if i.unacked >= ACK_EVERY {
            self.send_ack(now, id);
        } else if i.ack_at.is_none() {
            i.ack_at = Some(now + ACK_DELAY_MS);
        }
        self.check_complete(now, id);
    }

    fn send_ack(&mut self, now: Millis, id: TransferId) {
        let Some(i) = self.incoming.get_mut(&id) else {
            return;
        };
        i.unacked = 0;
        i.ack_at = None;
        if i.pns.is_empty() {
            return;
        }
        let ranges: Vec<(u64, u64)> = i
            .pns
            .ranges()
            .iter()
            .rev()
            .take(super::wire::MAX_ACK_RANGES)
            .copied()
            .collect();
        let delay = (now.get() as u32).wrapping_sub(i.newest_ts);
        let bytes = LinkMsg::Ack { id, delay, ranges }.encode();
        let to = i.peer.clone();
        self.out.push_back(Output::Link { to, bytes });
    }

    fn check_complete(&mut self, now: Millis, id: TransferId) {
        let Some(i) = self.incoming.get_mut(&id) else {
            return;
        };
        if i.state == InState::Receiving && i.have.covers_to(i.size) {
            i.state = InState::Verifying;
            i.dirty = false;
            self.send_ack(now, id);
            self.out.push_back(Output::Persist { id });
            self.out.push_back(Output::Verify { id });
        }
    }

    fn on_ack(&mut self, now: Millis, id: TransferId, delay: u32, ranges: &[(u64, u64)]) {
        let Some(o) = self.outgoing.get_mut(&id) else {
            return;
        };
        if o.state != OutState::Sending {
            return;
        }
        let flight_before = o.flight;
        let mut newly = 0;
        let mut rtt_sample = None;
        for &(s, e) in ranges {
            let pns: Vec<u64> = o.inflight.range(s..e).map(|(&pn, _)| pn).collect();
            for pn in pns {
                if let Some(p) = o.inflight.remove(&pn) {
                    newly += p.len;
                    o.flight -= p.len;
                    if o.largest_acked.is_none_or(|l| pn > l) {
                        o.largest_acked = Some(pn);
                        rtt_sample = Some(now.since(p.at));
                    }
                }
            }
        }
        if newly == 0 {
            return;
        }
        if let Some(r) = rtt_sample {
            let r = r as f64;
            match o.srtt {
                None => {
                    o.srtt = Some(r);
                    o.rttvar = r / 2.0;
                }
                Some(s) => {
                    o.rttvar = 0.75 * o.rttvar + 0.25 * (s - r).abs();
                    o.srtt = Some(0.875 * s + 0.125 * r);
                }
            }
        }
        o.cc.on_delay(now, delay);
        o.cc.on_ack(newly, flight_before);
        o.backoff = 0;
        o.last_ack_at = now;
        // Packets well behind the newest acknowledged one are lost.
        let largest = o.largest_acked.unwrap_or(0);
        let srtt = o.srtt.unwrap_or(100.0) as u64;
        while let Some((&pn, &p)) = o.inflight.first_key_value() {
            if pn + REORDER_THRESHOLD > largest {
                break;
            }
            o.inflight.remove(&pn);
            o.flight -= p.len;
            o.to_send.insert(p.offset, p.offset + p.len);
            o.cc.on_loss(now, p.at, srtt);
            self.stats.lost += 1;
        }
        if o.to_send.is_empty() && o.inflight.is_empty() {
            o.state = OutState::Finishing;
        }
    }

    /// The next data packet to send, round robin among the transfers whose
    /// window has room; `None` when every window is full or idle.
    pub fn poll_data(&mut self, now: Millis) -> Option<DataOut> {
        let min_chunk = self.config.chunk as u64;
        if self.config.max_rate > 0 {
            self.pace = (self.credit(now), now);
            if self.pace.0 < min_chunk {
                return None;
            }
        }
        let start = self.cursor;
        let ids = self
            .outgoing
            .range(start.wrapping_add(1)..)
            .chain(self.outgoing.range(..=start))
            .filter(|(_, o)| {
                o.state == OutState::Sending
                    && !o.to_send.is_empty()
                    && self.up.contains_key(&o.peer)
                    && (o.flight == 0 || o.flight + o.chunk <= o.cc.window())
            })
            .map(|(&id, _)| id)
            .next()?;
        self.cursor = ids;
        let o = self.outgoing.get_mut(&ids)?;
        // Under `max_rate`, no larger than the credit (at least one
        // configured chunk, checked above).
        let chunk = if self.config.max_rate > 0 {
            o.chunk.min(self.pace.0)
        } else {
            o.chunk
        };
        let (s, e) = o.to_send.pop_front(chunk)?;
        let pn = o.next_pn;
        o.next_pn += 1;
        let len = e - s;
        o.inflight.insert(
            pn,
            Sent {
                offset: s,
                len,
                at: now,
            },
        );
        o.flight += len;
        o.wire_bytes += len;
        if self.config.max_rate > 0 {
            self.pace.0 = self.pace.0.saturating_sub(len);
        }
        Some(DataOut {
            to: o.peer.clone(),
            id: ids,
            pn,
            ts: now.get() as u32,
            offset: s,
            len: len as usize,
        })
    }

    /// The send credit under `max_rate` at `now`: what was left plus the
    /// rate since, at most 100 ms of it (or one packet).
    fn credit(&self, now: Millis) -> u64 {
        let rate = self.config.max_rate;
        let burst = (rate / 10).max(self.config.chunk as u64);
        let (left, at) = self.pace;
        let gained = rate.saturating_mul(now.since(at)) / 1000;
        left.saturating_add(gained).min(burst)
    }

    /// When the send credit covers one packet: `now` when it does or
    /// there is no `max_rate`.
    fn pace_ready_at(&self, now: Millis) -> Millis {
        let rate = self.config.max_rate;
        if rate == 0 {
            return now;
        }
        match (self.config.chunk as u64).checked_sub(self.credit(now)) {
            None | Some(0) => now,
            Some(short) => now + short.saturating_mul(1000).div_ceil(rate),
        }
    }

    /// Whether [`Transfers::poll_data`] has something now.
    fn can_send(&self) -> bool {
        self.outgoing.values().any(|o| {
            o.state == OutState::Sending
                && !o.to_send.is_empty()
                && self.up.contains_key(&o.peer)
                && (o.flight == 0 || o.flight + o.chunk <= o.cc.window())
        })
    }

    pub fn poll_timeout(&self, now: Millis) -> Millis {
        let mut t = Millis::MAX;
        if self.can_send() {
            t = self.pace_ready_at(now);
            if t == now {
                return now;
            }
        }
        for o in self.outgoing.values() {
            // No progress reports while an offer waits (handle_timeout
            // sends none then: a deadline here would come back at once).
            if o.state != OutState::Offered {
                t = t.min(o.progress_at + self.config.progress_ms);
            }
            match o.state {
                OutState::Offered => t = t.min(o.offered_at + self.config.offer_ttl_ms),
                OutState::Sending if !o.inflight.is_empty() => {
                    t = t.min(o.last_ack_at + o.rto());
                }
                _ => {}
            }
        }
        for i in self.incoming.values() {
            match i.state {
                InState::Offered => t = t.min(i.offered_at + self.config.offer_ttl_ms),
                InState::Receiving => {
                    t = t.min(i.progress_at + self.config.progress_ms);
                    t = t.min(i.last_data_at + self.stall_wait(i.resends));
                    if let Some(a) = i.ack_at {
                        t = t.min(a);
                    }
                    if i.dirty {
                        t = t.min(i.persist_at);
                    }
                }
                InState::Verifying => {}
            }
        }
        for &r in self.reconnect_at.values() {
            t = t.min(r);
        }
        t
    }

    fn stall_wait(&self, resends: u32) -> u64 {
        self.config.stall_ms << resends.min(4)
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        let ttl = self.config.offer_ttl_ms;
        let expired: Vec<TransferId> = self
            .outgoing
            .iter()
            .filter(|(_, o)| o.state == OutState::Offered && now >= o.offered_at + ttl)
            .map(|(&id, _)| id)
            .chain(
                self.incoming
                    .iter()
                    .filter(|(_, i)| i.state == InState::Offered && now >= i.offered_at + ttl)
                    .map(|(&id, _)| id),
            )
            .collect();
        for id in expired {
            self.end(id, FileFailure::Expired, true);
        }
        self.sender_timers(now);
        self.receiver_timers(now);
        let due: Vec<String> = self
            .reconnect_at
            .iter()
            .filter(|&(_, &t)| t <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for peer in due {
            self.reconnect_at.remove(&peer);
            if self.sending_to(&peer) && !self.up.contains_key(&peer) {
                self.reconnect_at
                    .insert(peer.clone(), now + 4 * self.config.stall_ms);
                self.out.push_back(Output::Connect { peer });
            }
        }
    }

    fn sender_timers(&mut self, now: Millis) {
        let progress_ms = self.config.progress_ms;
        let stall_ms = self.config.stall_ms;
        let mut events = Vec::new();
        let mut reconnect = Vec::new();
        let mut shrunk = Vec::new();
        for (&id, o) in &mut self.outgoing {
            if o.state == OutState::Sending && !o.inflight.is_empty() {
                if now >= o.last_ack_at + stall_ms.max(o.rto()) && o.backoff >= 3 {
                    // Nothing for long: the path is likely gone.
                    reconnect.push(o.peer.clone());
                }
                if now >= o.last_ack_at + o.rto() {
                    for (_, p) in std::mem::take(&mut o.inflight) {
                        o.to_send.insert(p.offset, p.offset + p.len);
                    }
                    o.flight = 0;
                    if o.chunk > self.config.chunk as u64 {
                        // The larger packets may no longer get through
                        // (a black hole): back to the configured size.
                        o.set_chunk(self.config.chunk as u64);
                        shrunk.push(o.peer.clone());
                    }
                    o.cc.on_timeout(now);
                    o.backoff += 1;
                    o.last_ack_at = now;
                    self.stats.timeouts += 1;
                }
            }
            if o.state != OutState::Offered && now >= o.progress_at + progress_ms {
                o.progress_at = now;
                let done = o.done();
                let rate = o.rate.sample(now, done);
                events.push(FileEvent::Progress(FileProgress {
                    id,
                    peer: o.peer.clone(),
                    outgoing: true,
                    done,
                    size: o.size,
                    rate,
                    eta_ms: eta(o.size - done, rate),
                    wire_bytes: o.wire_bytes,
                }));
            }
        }
        for e in events {
            self.event(e);
        }
        for peer in shrunk {
            self.set_path_chunk(&peer, 0);
        }
        for peer in reconnect {
            if self.up.remove(&peer).is_some() {
                self.out.push_back(Output::Reconnect { peer });
            }
        }
    }

    fn receiver_timers(&mut self, now: Millis) {
        let ids: Vec<TransferId> = self.incoming.keys().copied().collect();
        for id in ids {
            let stall = {
                let i = &self.incoming[&id];
                self.stall_wait(i.resends)
            };
            let Some(i) = self.incoming.get_mut(&id) else {
                continue;
            };
            if i.state != InState::Receiving {
                continue;
            }
            if i.ack_at.is_some_and(|a| a <= now) {
                self.send_ack(now, id);
            }
            let Some(i) = self.incoming.get_mut(&id) else {
                continue;
            };
            if i.dirty && now >= i.persist_at {
                i.dirty = false;
                i.unpersisted = 0;
                i.persist_at = now + self.config.persist_ms;
                self.out.push_back(Output::Persist { id });
            }
            let Some(i) = self.incoming.get_mut(&id) else {
                continue;
            };
            if now >= i.last_data_at + stall {
                i.last_data_at = now;
                i.resends += 1;
                self.send_answer(id);
            }
            let Some(i) = self.incoming.get_mut(&id) else {
                continue;
            };
            if now >= i.progress_at + self.config.progress_ms {
                i.progress_at = now;
                let done = i.have.total();
                let rate = i.rate.sample(now, done);
                let p = FileProgress {
                    id,
                    peer: i.peer.clone(),
                    outgoing: false,
                    done,
                    size: i.size,
                    rate,
                    eta_ms: eta(i.size - done.min(i.size), rate),
                    wire_bytes: i.wire_bytes,
                };
                self.event(FileEvent::Progress(p));
            }
        }
    }

    /// Whether envelope kind `k` is ours.
    pub fn is_signal_kind(k: u8) -> bool {
        kind::ALL.contains(&k)
    }
}

fn new_incoming(now: Millis, peer: &str, name: &str, size: u64, hash: [u8; 32]) -> Incoming {
    Incoming {
        peer: peer.to_owned(),
        name: name.to_owned(),
        size,
        hash,
        state: InState::Offered,
        offered_at: now,
        dest: None,
        have: RangeSet::new(),
        resumed_from: 0,
        pns: RangeSet::new(),
        newest_ts: 0,
        unacked: 0,
        ack_at: None,
        last_data_at: now,
        resends: 0,
        dirty: false,
        unpersisted: 0,
        persist_at: now,
        wire_bytes: 0,
        progress_at: now,
        rate: Rate::default(),
    }
}

fn eta(left: u64, rate: u64) -> Option<u64> {
    (rate > 0).then(|| left.saturating_mul(1000) / rate)
}

/// A file name a stranger offered, made safe to use as the last part of a
/// path: no separators, no `..`, no control characters, not empty.
pub fn safe_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = cleaned.trim_matches(|c: char| c == '.' || c.is_whitespace());
    if trimmed.is_empty() {
        "file".to_owned()
    } else {
        trimmed.to_owned()
    }
}
