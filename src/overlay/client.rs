//! A client's overlay role, sans-IO: attachment to a primary and a backup
//! supernode from its host cache, keepalives, re-attachment with jittered
//! exponential backoff, publishing its signed presence record, lookups and
//! presence watches, and sealed envelopes to other users
//! ([`ClientCore::send_envelope`], [`ClientEvent::Envelope`]).
//!
//! A user may be online on several devices, each with its own record: a
//! lookup answers all of them and presence merges them (the user is as
//! available as their most available device, last seen when the newest
//! saw them; [`ClientCore::known_devices`] has the list), and an envelope
//! goes to every device, one sealed copy each, reported once.

use super::Transmit;
use super::addr::HostAddr;
use super::envelope::{self, EnvelopeId, SealArgs};
use super::msg::{EnvResult, Found, Msg};
use super::record::{PresenceRecord, RecordContent, Status, merged_last_seen, most_available};
use crate::identity::{Certificate, DeviceIdentity};
use crate::time::{Millis, UnixMillis, UnixSecs};
use rand::{Rng, RngCore, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

/// How long a supernode that stopped answering is left out of attach
/// rounds.
const STOPPED_ANSWERING_AVOID_MS: u64 = 15_000;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub keepalive_ms: u64,
    /// A supernode that acknowledged nothing for this long is dropped.
    pub dead_after_ms: u64,
    pub attach_timeout_ms: u64,
    /// Supernodes tried at once when attached to none.
    pub parallel_attach: usize,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// The record is re-signed and republished this often.
    pub refresh_ms: u64,
    /// How long a record shows the user online without a refresh. A
    /// device that goes silent is shown offline by its supernode within
    /// seconds (its will); this bounds only a device lost together with
    /// its supernode. Its primary supernode passes a refresh on to the
    /// record's owners when their copy has 30 s left: with 420 s and
    /// 120-s refreshes, one refresh in three.
    pub online_secs: u64,
    pub lookup_timeout_ms: u64,
    /// A lookup unanswered this long is sent again through the other
    /// supernode.
    pub lookup_retry_ms: u64,
    /// After attaching, wait this long for the second attachment before
    /// publishing, so that one record names both supernodes.
    pub publish_delay_ms: u64,
    pub watch_refresh_ms: u64,
    pub host_cache_max: usize,
    /// Envelopes: re-send (through the other supernode) when the overlay
    /// has not answered for this long.
    pub envelope_retry_ms: u64,
    /// Envelopes: give up (`EnvelopeFailed`) after this long.
    pub envelope_timeout_ms: u64,
    /// Envelopes: how long they may wait for an offline recipient.
    pub envelope_ttl_ms: u64,
    /// Recipients' certificates learnt from their records are used this
    /// long before being looked up again.
    pub peer_cert_ttl_ms: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            keepalive_ms: 1_000,
            dead_after_ms: 3_000,
            attach_timeout_ms: 1_000,
            parallel_attach: 4,
            backoff_base_ms: 250,
            backoff_max_ms: 30_000,
            refresh_ms: 120_000,
            online_secs: 420,
            lookup_timeout_ms: 4_000,
            lookup_retry_ms: 800,
            publish_delay_ms: 300,
            watch_refresh_ms: 40_000,
            host_cache_max: 64,
            envelope_retry_ms: 2_500,
            envelope_timeout_ms: 20_000,
            envelope_ttl_ms: envelope::MAX_TTL_MS,
            peer_cert_ttl_ms: 600_000,
        }
    }
}

/// A lookup's answer. For a user on several devices, the record is the
/// most available device's (see [`super::record::most_available`]) and
/// `last_seen` the newest of theirs; [`ClientCore::known_devices`] has
/// every device's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupOutcome {
    Online(Box<PresenceRecord>),
    Offline {
        record: Box<PresenceRecord>,
        /// When the user was last online (wall clock); `None` when the
        /// record hides it.
        last_seen: Option<UnixSecs>,
    },
    NotFound,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    Attached {
        supernode: SocketAddr,
        primary: bool,
        observed: SocketAddr,
    },
    Detached {
        supernode: SocketAddr,
        reason: &'static str,
        /// The backup that took over as primary (the primary was lost).
        promoted: Option<SocketAddr>,
    },
    Redirected {
        from: SocketAddr,
        to: Vec<SocketAddr>,
    },
    Published {
        seq: u64,
    },
    PublishRejected {
        seq: u64,
        reason: String,
    },
    Lookup {
        qid: u32,
        username: String,
        outcome: LookupOutcome,
    },
    /// A watched user's presence changed on one of their devices:
    /// `record` and `online` are merged over the devices known (as for a
    /// lookup).
    PresenceChanged {
        record: Box<PresenceRecord>,
        online: bool,
    },
    /// Short-lived credentials for the group's TURN relays.
    RelayCredentials {
        username: String,
        password: String,
        realm: String,
        /// Unix seconds.
        expires: u64,
        relays: Vec<SocketAddr>,
    },
    RelayRefused {
        reason: String,
    },
    /// An envelope for us, opened and verified: `from` is the sender's
    /// certificate, checked against the pinned authority key. Each id is
    /// reported once (duplicates are acknowledged and dropped).
    Envelope {
        from: Box<Certificate>,
        kind: u8,
        id: EnvelopeId,
        payload: Vec<u8>,
        /// When the sender made it (signed): protocols judge age by it.
        created_ms: u64,
    },
    /// The recipient's supernode reports that the recipient took it.
    EnvelopeDelivered {
        id: EnvelopeId,
    },
    /// The recipient is offline; it waits on their directory owners.
    EnvelopeStored {
        id: EnvelopeId,
    },
    EnvelopeFailed {
        id: EnvelopeId,
        reason: String,
    },
    /// The directory has no user of this name (after the envelopes to
    /// them failed): retrying cannot help.
    NoSuchUser {
        username: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// Points in time on the node's timeline ([`Millis`]).
enum LinkState {
    Attaching { deadline: Millis },
    Attached { last_ack: Millis, last_ping: Millis },
}

#[derive(Debug, Clone)]
struct Link {
    addr: SocketAddr,
    primary: bool,
    state: LinkState,
}

/// Counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClientStats {
    pub malformed: u64,
    pub bad_records: u64,
    pub attach_attempts: u64,
    pub redirects: u64,
    pub bytes_sent: u64,
    pub envelopes_sent: u64,
    pub envelopes_received: u64,
    pub envelopes_duplicate: u64,
    pub envelopes_rejected: u64,
    /// Copies to a device of ours found after the envelope had found this
    /// device alone (see [`ALONE_KEEP_MS`]).
    pub envelopes_late_copies: u64,
}

#[derive(Debug)]
struct PendingLookup {
    username: String,
    /// Given up at (node timeline).
    deadline: Millis,
    /// Sent again through the other supernode at (node timeline).
    retry_at: Option<Millis>,
    via: SocketAddr,
    /// Asked for an envelope recipient's key, not by the user.
    internal: bool,
}

#[derive(Debug)]
struct OutEnvelope {
    /// The id the caller was given: copies to several devices share it.
    group: EnvelopeId,
    /// The x25519 key of the device this copy is sealed to; `None` until
    /// the recipient's devices are known.
    device: Option<[u8; 32]>,
    to: String,
    kind: u8,
    payload: Vec<u8>,
    store: bool,
    /// Which of the recipient's devices it goes to.
    devices: Devices,
    /// Seed of the ephemeral key, drawn when the envelope was sent (cores
    /// get randomness only from their caller).
    seed: [u8; 32],
    sealed: Option<Vec<u8>>,
    resealed: bool,
    /// A late copy to a device of ours found after the envelope finished
    /// (see `ClientCore::alone`): it reports no outcome.
    quiet: bool,
    /// Failed at (node timeline).
    deadline: Millis,
    /// Sent (again) at (node timeline); `Millis::MAX` while unsealed.
    next_send: Millis,
    sends: u32,
}

/// How long an envelope to our own account that found this device alone
/// is kept for a device of ours found late (the directory's view of our
/// devices catches up within seconds).
pub const ALONE_KEEP_MS: u64 = 60_000;
/// Such envelopes kept at most, and their payload bytes at most.
pub const ALONE_KEEP: usize = 64;
pub const ALONE_KEEP_BYTES: usize = 256 * 1024;

/// An envelope to our own account that finished with no other device to
/// go to; see `ClientCore::alone`.
#[derive(Debug)]
struct Alone {
    /// The id the caller was given.
    group: EnvelopeId,
    /// When it finished (node timeline).
    at: Millis,
    kind: u8,
    payload: Vec<u8>,
    store: bool,
    seed: [u8; 32],
    /// Devices of ours (x25519 keys) it was copied to since.
    sent_to: Vec<[u8; 32]>,
}

/// What became of the copies of one envelope (one per device).
#[derive(Debug, Default)]
struct Group {
    left: usize,
    delivered: bool,
    stored: bool,
    failure: Option<String>,
    /// Devices (x25519 keys) copies were sealed to.
    devices: Vec<[u8; 32]>,
}

/// Whether envelopes of `kind` go to every device of the recipient (chat,
/// contacts, group chat and the rest) or to one (calls, ICE, media,
/// conferences and file transfers: the device pinned with
/// [`ClientCore::pin_device`], else the device that last wrote to us,
/// else the most available). Call signalling names its devices itself
/// ([`Devices`]): an invitation rings every device.
fn to_every_device(kind: u8) -> bool {
    !(envelope::kind::CALL_FIRST..envelope::kind::GROUP_FIRST).contains(&kind)
}

/// Which of the recipient's devices an envelope goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Devices {
    /// As its kind says (see `to_every_device`).
    ByKind,
    /// Every device of the recipient.
    Every,
    /// This device alone (its x25519 key); the envelope fails when the
    /// recipient has no such device any more.
    Only([u8; 32]),
    /// Every device but this one (x25519 key); the envelope fails when
    /// the recipient has no other device.
    Except([u8; 32]),
}

/// The id of copy `i` of envelope `id` (copy 0 keeps the id).
fn copy_id(id: EnvelopeId, i: usize) -> EnvelopeId {
    if i == 0 {
        return id;
    }
    derived(b"natter envelope copy\0", id, &(i as u64).to_be_bytes()).0
}

/// An id derived from `id` and `extra` under `domain`, and the hash it
/// was mixed with.
fn derived(domain: &[u8], id: EnvelopeId, extra: &[u8]) -> (EnvelopeId, [u8; 8]) {
    let mut data = id.to_vec();
    data.extend_from_slice(extra);
    let h = super::h64(domain, &data).to_be_bytes();
    let mut c = id;
    for (x, y) in c.iter_mut().zip(h.iter().chain(h.iter())) {
        *x ^= y;
    }
    (c, h)
}

#[derive(Debug)]
pub struct ClientCore {
    device: DeviceIdentity,
    /// Shared with whoever else holds it (a simulator holds a million).
    cert: Arc<Certificate>,
    authority: [u8; 32],
    cfg: ClientConfig,
    host_cache: VecDeque<HostAddr>,
    links: Vec<Link>,
    /// Supernodes left out of attach rounds until then (node timeline).
    avoid: BTreeMap<SocketAddr, Millis>,
    failures: u32,
    /// Next attach round (node timeline).
    next_attempt_at: Millis,
    round_open: bool,
    status: Status,
    message: String,
    candidates: Vec<SocketAddr>,
    observed: Option<SocketAddr>,
    seq: u64,
    /// When the record was last published (node timeline).
    last_publish: Millis,
    need_publish: bool,
    /// Do not publish before this (node timeline; lets the backup attach
    /// first).
    publish_not_before: Millis,
    published_seq: u64,
    /// A hash of what the last record said (all but its timing), the seq
    /// of the last record that said something new, once acknowledged, and
    /// of one not acknowledged yet: refreshes that only extend a record
    /// reach its owners late by design, so a lookup answer is stale only
    /// when older than `content_seq`.
    content_hash: u64,
    content_seq: u64,
    content_pending: Option<u64>,
    lookups: BTreeMap<u32, PendingLookup>,
    next_qid: u32,
    watches: BTreeSet<String>,
    /// Watches are renewed at (node timeline).
    next_watch_at: Millis,
    ka_seq: u32,
    verified_certs: std::collections::HashSet<[u8; 32]>,
    /// Users' device records from verified lookups and presence updates,
    /// with when the list was last looked up (node timeline; `None`: only
    /// presence updates so far, which may not name every device).
    peer_devices: BTreeMap<String, (Vec<PresenceRecord>, Option<Millis>)>,
    /// Envelope copies in flight, one per recipient device, by copy id.
    envelopes: BTreeMap<EnvelopeId, OutEnvelope>,
    /// Envelopes sent to several devices: copies not finished yet and
    /// what became of those that did, by the id the caller was given.
    groups: BTreeMap<EnvelopeId, Group>,
    /// The device (x25519 key) each user last sent us an envelope from.
    last_device: BTreeMap<String, [u8; 32]>,
    /// Devices pinned for single-device kinds (a call's peer device, so
    /// its ICE goes there whoever wrote last), by user; see
    /// [`ClientCore::pin_device`].
    pinned: BTreeMap<String, [u8; 32]>,
    key_lookups: BTreeMap<String, u32>,
    /// Envelopes to our own account that finished because our device list
    /// said this device was alone, newest last, kept [`ALONE_KEEP_MS`]
    /// (at most [`ALONE_KEEP`], [`ALONE_KEEP_BYTES`] of payload): the list
    /// may predate a device that came online with us, so a device of ours
    /// found within that time gets them then (`late_copies`).
    alone: VecDeque<Alone>,
    /// Envelope ids received, until they expire (their signed expiry, on
    /// the wall clock).
    seen: BTreeMap<EnvelopeId, UnixMillis>,
    /// The wall clock as the entry point being run was given it: records
    /// and envelopes are signed and judged at it (timers use `now`).
    unix: UnixMillis,
    out: Vec<(SocketAddr, Vec<u8>)>,
    events: VecDeque<ClientEvent>,
    pub stats: ClientStats,
}

impl ClientCore {
    /// `host_cache`: supernodes to try, best first (learned ones, then the
    /// configured bootstrap list).
    pub fn new(
        device: DeviceIdentity,
        cert: impl Into<Arc<Certificate>>,
        authority: [u8; 32],
        host_cache: Vec<SocketAddr>,
        cfg: ClientConfig,
        now: Millis,
    ) -> Self {
        let mut hc = VecDeque::new();
        for a in host_cache {
            let a = HostAddr::from(a);
            if !hc.contains(&a) {
                hc.push_back(a);
            }
        }
        ClientCore {
            device,
            cert: cert.into(),
            authority,
            cfg,
            host_cache: hc,
            links: Vec::new(),
            avoid: BTreeMap::new(),
            failures: 0,
            next_attempt_at: now,
            round_open: false,
            status: Status::Online,
            message: String::new(),
            candidates: Vec::new(),
            observed: None,
            seq: 0,
            last_publish: Millis::ZERO,
            need_publish: true,
            publish_not_before: Millis::ZERO,
            published_seq: 0,
            content_hash: 0,
            content_seq: 0,
            content_pending: None,
            lookups: BTreeMap::new(),
            next_qid: 1,
            watches: BTreeSet::new(),
            next_watch_at: Millis::ZERO,
            ka_seq: 0,
            verified_certs: std::collections::HashSet::new(),
            peer_devices: BTreeMap::new(),
            envelopes: BTreeMap::new(),
            groups: BTreeMap::new(),
            last_device: BTreeMap::new(),
            pinned: BTreeMap::new(),
            key_lookups: BTreeMap::new(),
            alone: VecDeque::new(),
            seen: BTreeMap::new(),
            unix: UnixMillis::ZERO,
            out: Vec::new(),
            events: VecDeque::new(),
            stats: ClientStats::default(),
        }
    }

    /// The same device started afresh, as after a restart of its process:
    /// same keys, certificate and known supernodes, nothing else.
    pub fn restarted(&self, now: Millis) -> Self {
        ClientCore::new(
            self.device.clone(),
            self.cert.clone(),
            self.authority,
            self.host_cache(),
            self.cfg.clone(),
            now,
        )
    }

    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    /// `username`'s certificate (their most available device's), if a
    /// verified record showed it lately.
    pub fn known_certificate(&self, username: &str) -> Option<&Certificate> {
        let (recs, _) = self.peer_devices.get(username)?;
        most_available(recs, self.unix.secs()).map(|r| &r.cert)
    }

    /// The records of `username`'s devices from the last lookup and the
    /// presence updates since (empty if never looked up): where each
    /// device is and its keys.
    pub fn known_devices(&self, username: &str) -> &[PresenceRecord] {
        self.peer_devices
            .get(username)
            .map_or(&[], |(recs, _)| recs.as_slice())
    }

    /// How many of `username`'s devices are reachable (attached, not
    /// offline) by the records known (0 if never looked up).
    pub fn reachable_devices(&self, username: &str) -> usize {
        let now = self.unix.secs();
        self.known_devices(username)
            .iter()
            .filter(|r| r.is_reachable(now))
            .count()
    }

    /// Send `payload` to `to` in a sealed envelope (see
    /// [`super::envelope`]); `kind` tells the recipient's protocols what it
    /// is. The recipient's key comes from their presence record (looked up
    /// when not known). When they are offline and `store_if_offline` is
    /// set, it waits on their directory owners for up to
    /// [`ClientConfig::envelope_ttl_ms`]. The outcome comes as
    /// [`ClientEvent::EnvelopeDelivered`], [`ClientEvent::EnvelopeStored`]
    /// or [`ClientEvent::EnvelopeFailed`] with the returned id. Delivery is
    /// at least once; receivers drop duplicates by id.
    #[allow(clippy::too_many_arguments)]
    pub fn send_envelope(
        &mut self,
        now: Millis,
        unix: UnixMillis,
        rng: &mut dyn RngCore,
        to: &str,
        kind: u8,
        payload: &[u8],
        store_if_offline: bool,
    ) -> EnvelopeId {
        self.send_envelope_to(
            now,
            unix,
            rng,
            (to, Devices::ByKind),
            kind,
            payload,
            store_if_offline,
        )
    }

    /// Single-device kinds to `username` go to their device `x25519`
    /// while pinned (the device in a call with us), whoever wrote last;
    /// `None` unpins.
    pub fn pin_device(&mut self, username: &str, x25519: Option<[u8; 32]>) {
        let name = username.to_ascii_lowercase();
        match x25519 {
            Some(k) => {
                if self.pinned.len() >= 64 && !self.pinned.contains_key(&name) {
                    self.pinned.pop_first();
                }
                self.pinned.insert(name, k);
            }
            None => {
                self.pinned.remove(&name);
            }
        }
    }

    /// [`ClientCore::send_envelope`] to the devices `to.1` of user `to.0`.
    #[allow(clippy::too_many_arguments)]
    pub fn send_envelope_to(
        &mut self,
        now: Millis,
        unix: UnixMillis,
        rng: &mut dyn RngCore,
        to: (&str, Devices),
        kind: u8,
        payload: &[u8],
        store_if_offline: bool,
    ) -> EnvelopeId {
        let (to, devices) = to;
        self.unix = unix;
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        if payload.len() > envelope::MAX_PAYLOAD {
            self.events.push_back(ClientEvent::EnvelopeFailed {
                id,
                reason: format!(
                    "message of {} bytes exceeds the {}-byte limit",
                    payload.len(),
                    envelope::MAX_PAYLOAD
                ),
            });
            return id;
        }
        self.envelopes.insert(
            id,
            OutEnvelope {
                group: id,
                device: None,
                to: to.to_ascii_lowercase(),
                kind,
                payload: payload.to_vec(),
                store: store_if_offline,
                devices,
                seed,
                sealed: None,
                resealed: false,
                quiet: false,
                deadline: now + self.cfg.envelope_timeout_ms,
                next_send: Millis::MAX,
                sends: 0,
            },
        );
        self.seal_and_send(now, id);
        id
    }

    /// Seal envelope copy `id` if its recipient's keys are known and send
    /// it; otherwise look the keys up. An envelope not yet copied is
    /// copied to every device of the recipient first; a copy whose device
    /// went away (resealed) goes to a device that has no copy yet, or
    /// finishes.
    fn seal_and_send(&mut self, now: Millis, id: EnvelopeId) {
        let Some(e) = self.envelopes.get(&id) else {
            return;
        };
        // To our own username: our other devices (never this one).
        let own = e.to == self.cert.username.to_ascii_lowercase();
        let fresh: Option<Vec<Certificate>> = self
            .peer_devices
            .get(&e.to)
            .filter(|(recs, at)| {
                at.is_some_and(|at| now.since(at) < self.cfg.peer_cert_ttl_ms) && !recs.is_empty()
            })
            .map(|(recs, _)| {
                let every = match e.devices {
                    Devices::Every => true,
                    Devices::ByKind => to_every_device(e.kind),
                    Devices::Only(x) => {
                        // That device, or none (it went: the copy fails).
                        return recs
                            .iter()
                            .filter(|r| r.cert.x25519 == x)
                            .map(|r| r.cert.clone())
                            .take(1)
                            .collect();
                    }
                    Devices::Except(x) => {
                        return recs
                            .iter()
                            .filter(|r| r.cert.x25519 != x)
                            .map(|r| r.cert.clone())
                            .collect();
                    }
                };
                if every {
                    // To our own username: never this device.
                    return recs
                        .iter()
                        .filter(|r| !own || r.cert.x25519 != self.cert.x25519)
                        .map(|r| r.cert.clone())
                        .collect();
                }
                // One device: the one pinned (in a call with us), else the
                // one that last wrote to us, else the most available.
                let last = self
                    .pinned
                    .get(&e.to)
                    .filter(|k| recs.iter().any(|r| &r.cert.x25519 == *k))
                    .or_else(|| self.last_device.get(&e.to));
                recs.iter()
                    .find(|r| Some(&r.cert.x25519) == last)
                    .or_else(|| most_available(recs, self.unix.secs()))
                    .map(|r| vec![r.cert.clone()])
                    .unwrap_or_default()
            });
        // Named devices that are not there fail the envelope, after one
        // fresh lookup (our copy of the records may predate a new device);
        // an empty list otherwise means the records must be looked up.
        let only_gone = matches!(e.devices, Devices::Only(_) | Devices::Except(_))
            && fresh.as_ref().is_some_and(|c| c.is_empty());
        if only_gone {
            if e.resealed {
                return self.device_gone(now, id);
            }
            let to = e.to.clone();
            if let Some(e) = self.envelopes.get_mut(&id) {
                e.resealed = true;
            }
            self.peer_devices.remove(&to);
            return self.seal_and_send(now, id);
        }
        if own && fresh.as_ref().is_some_and(|c| c.is_empty()) {
            if e.device.is_none() && !self.groups.contains_key(&e.group) {
                // Not copied yet, and this is our only device: every
                // other one has it (there is none). Kept for a while in
                // case our list predates one.
                if !e.quiet {
                    self.keep_alone(now, id);
                }
                self.finish_copy(id, envelope::EnvelopeOutcome::Delivered);
            } else {
                self.device_gone(now, id);
            }
            return;
        }
        let fresh = fresh.filter(|certs: &Vec<Certificate>| !certs.is_empty());
        let Some(certs) = fresh else {
            let to = e.to.clone();
            if !self.key_lookups.contains_key(&to) {
                let qid = self.start_lookup(now, &to, true);
                self.key_lookups.insert(to, qid);
            }
            return;
        };
        let cert = match e.device {
            Some(x) => match certs.iter().find(|c| c.x25519 == x) {
                Some(c) => c.clone(),
                None => return self.device_gone(now, id),
            },
            None if !self.groups.contains_key(&e.group) => {
                // First sealing: one copy per device.
                let group = e.group;
                let Some(mut first) = self.envelopes.remove(&id) else {
                    return;
                };
                self.groups.insert(
                    group,
                    Group {
                        left: certs.len(),
                        devices: certs.iter().map(|c| c.x25519).collect(),
                        ..Group::default()
                    },
                );
                let mut ids = Vec::new();
                for (i, c) in certs.iter().enumerate().skip(1) {
                    let cid = copy_id(group, i);
                    let mut seed = first.seed;
                    seed[1] ^= i as u8;
                    seed[2] ^= (i >> 8) as u8;
                    self.envelopes.insert(
                        cid,
                        OutEnvelope {
                            group,
                            device: Some(c.x25519),
                            to: first.to.clone(),
                            kind: first.kind,
                            payload: first.payload.clone(),
                            store: first.store,
                            devices: first.devices,
                            seed,
                            sealed: None,
                            resealed: false,
                            quiet: first.quiet,
                            deadline: first.deadline,
                            next_send: Millis::MAX,
                            sends: 0,
                        },
                    );
                    ids.push(cid);
                }
                first.device = Some(certs[0].x25519);
                self.envelopes.insert(id, first);
                self.seal_and_send(now, id);
                for cid in ids {
                    self.seal_and_send(now, cid);
                }
                return;
            }
            None => {
                // A resealed copy: to a device with no copy yet.
                let covered = self
                    .groups
                    .get(&e.group)
                    .map(|g| g.devices.clone())
                    .unwrap_or_default();
                let Some(c) = certs.iter().find(|c| !covered.contains(&c.x25519)) else {
                    return self.device_gone(now, id);
                };
                let c = c.clone();
                if let Some(g) = self.groups.get_mut(&e.group) {
                    g.devices.push(c.x25519);
                }
                if let Some(e) = self.envelopes.get_mut(&id) {
                    e.device = Some(c.x25519);
                }
                c
            }
        };
        let Some(e) = self.envelopes.get(&id) else {
            return;
        };
        let mut seed = e.seed;
        if e.resealed {
            seed[0] ^= 0xff;
        }
        let mut rng = rand::rngs::StdRng::from_seed(seed);
        let sealed = envelope::seal(
            &mut rng,
            &self.device,
            &self.cert,
            &cert,
            SealArgs {
                id,
                kind: e.kind,
                payload: &e.payload,
                created_ms: self.unix.get(),
                ttl_ms: self.cfg.envelope_ttl_ms,
                store: e.store,
            },
        );
        match sealed {
            Ok(b) => {
                if let Some(e) = self.envelopes.get_mut(&id) {
                    e.sealed = Some(b);
                    e.payload = Vec::new();
                    e.next_send = now;
                }
                self.transmit_envelope(now, id);
            }
            Err(err) => self.fail_envelope(id, err.to_string()),
        }
    }

    /// A copy's device is no longer among the recipient's (its record
    /// went, or its key changed and every device has a copy already).
    fn device_gone(&mut self, _now: Millis, id: EnvelopeId) {
        self.fail_envelope(id, EnvResult::KeyChanged.describe().to_owned());
    }

    fn fail_envelope(&mut self, id: EnvelopeId, reason: String) {
        self.finish_copy(id, envelope::EnvelopeOutcome::Failed(reason));
    }

    /// Copy `id` finished with `outcome`: once every copy of its envelope
    /// did, report the envelope once (delivered to some device, else
    /// stored for some, else the first failure). Returns whether it was
    /// reported.
    fn finish_copy(&mut self, id: EnvelopeId, outcome: envelope::EnvelopeOutcome) -> bool {
        use envelope::EnvelopeOutcome as O;
        let Some(e) = self.envelopes.remove(&id) else {
            return false;
        };
        let group = e.group;
        if e.quiet {
            let left = self.groups.get_mut(&group).map(|g| {
                g.left = g.left.saturating_sub(1);
                g.left
            });
            if left == Some(0) {
                self.groups.remove(&group);
            }
            return left.is_none_or(|l| l == 0);
        }
        let outcome = match self.groups.get_mut(&group) {
            None => outcome,
            Some(g) => {
                g.left = g.left.saturating_sub(1);
                match outcome {
                    O::Delivered => g.delivered = true,
                    O::Stored => g.stored = true,
                    O::Failed(why) => {
                        g.failure.get_or_insert(why);
                    }
                }
                if g.left > 0 {
                    return false;
                }
                let g = self.groups.remove(&group).expect("present");
                if g.delivered {
                    O::Delivered
                } else if g.stored {
                    O::Stored
                } else {
                    O::Failed(g.failure.unwrap_or_default())
                }
            }
        };
        let id = group;
        self.events.push_back(match outcome {
            O::Delivered => ClientEvent::EnvelopeDelivered { id },
            O::Stored => ClientEvent::EnvelopeStored { id },
            O::Failed(reason) => ClientEvent::EnvelopeFailed { id, reason },
        });
        true
    }

    fn transmit_envelope(&mut self, now: Millis, id: EnvelopeId) {
        let attached: Vec<SocketAddr> = {
            let mut v: Vec<SocketAddr> = self.primary().into_iter().collect();
            v.extend(self.attached().filter(|a| Some(*a) != self.primary()));
            v
        };
        let Some(e) = self.envelopes.get_mut(&id) else {
            return;
        };
        e.next_send = now + self.cfg.envelope_retry_ms;
        let (Some(bytes), false) = (e.sealed.clone(), attached.is_empty()) else {
            return;
        };
        // First through the primary, retries alternate.
        let via = attached[e.sends as usize % attached.len()];
        e.sends += 1;
        self.stats.envelopes_sent += 1;
        self.send(via, &Msg::EnvSend { envelope: &bytes });
    }

    /// Keep envelope `id` (to our own account, finishing because this
    /// device is alone) for a device of ours found late.
    fn keep_alone(&mut self, now: Millis, id: EnvelopeId) {
        let Some(e) = self.envelopes.get(&id) else {
            return;
        };
        self.alone.push_back(Alone {
            group: e.group,
            at: now,
            kind: e.kind,
            payload: e.payload.clone(),
            store: e.store,
            seed: e.seed,
            sent_to: Vec::new(),
        });
        self.trim_alone(now);
    }

    /// Forget kept envelopes past [`ALONE_KEEP_MS`] and over the bounds.
    fn trim_alone(&mut self, now: Millis) {
        while self
            .alone
            .front()
            .is_some_and(|a| now.since(a.at) >= ALONE_KEEP_MS)
        {
            self.alone.pop_front();
        }
        let mut bytes: usize = self.alone.iter().map(|a| a.payload.len()).sum();
        while self.alone.len() > ALONE_KEEP || bytes > ALONE_KEEP_BYTES {
            let Some(a) = self.alone.pop_front() else {
                break;
            };
            bytes -= a.payload.len();
        }
    }

    /// Our own devices were just looked up: each kept envelope goes to
    /// each device of ours (not this one) it has not gone to, once, oldest
    /// first, before anything waiting for the lookup.
    fn late_copies(&mut self, now: Millis) {
        self.trim_alone(now);
        let name = self.cert.username.to_ascii_lowercase();
        let Some((recs, _)) = self.peer_devices.get(&name) else {
            return;
        };
        let mine = self.cert.x25519;
        let mut late = Vec::new();
        for a in &mut self.alone {
            for r in recs.iter().filter(|r| r.cert.x25519 != mine) {
                let x = r.cert.x25519;
                if a.sent_to.contains(&x) {
                    continue;
                }
                a.sent_to.push(x);
                let (id, h) = derived(b"natter late copy\0", a.group, &x);
                let mut seed = a.seed;
                seed[3] ^= 0x5a;
                seed[4..12].copy_from_slice(&h);
                late.push((
                    id,
                    OutEnvelope {
                        group: id,
                        device: None,
                        to: name.clone(),
                        kind: a.kind,
                        payload: a.payload.clone(),
                        store: a.store,
                        devices: Devices::Only(x),
                        seed,
                        sealed: None,
                        resealed: false,
                        quiet: true,
                        deadline: now + self.cfg.envelope_timeout_ms,
                        next_send: Millis::MAX,
                        sends: 0,
                    },
                ));
            }
        }
        if late.is_empty() {
            return;
        }
        self.stats.envelopes_late_copies += late.len() as u64;
        for (id, e) in late {
            self.envelopes.insert(id, e);
            self.seal_and_send(now, id);
        }
    }

    /// A lookup answered `name`'s device records (verified, theirs).
    fn learn_devices(&mut self, now: Millis, name: &str, recs: Vec<PresenceRecord>) {
        let name = name.to_owned();
        let own = name == self.cert.username.to_ascii_lowercase();
        self.peer_devices.insert(name.clone(), (recs, Some(now)));
        if own {
            self.late_copies(now);
        }
        if self.peer_devices.len() > 4096 {
            let cut = now.saturating_sub(self.cfg.peer_cert_ttl_ms);
            let watches = &self.watches;
            self.peer_devices
                .retain(|n, (_, at)| at.is_some_and(|at| at >= cut) || watches.contains(n));
        }
        if self.key_lookups.remove(&name).is_some() {
            let waiting: Vec<EnvelopeId> = self
                .envelopes
                .iter()
                .filter(|(_, e)| e.to == name && e.sealed.is_none())
                .map(|(id, _)| *id)
                .collect();
            for id in waiting {
                self.seal_and_send(now, id);
            }
        }
    }

    /// A key lookup for envelopes to `name` found nothing usable.
    /// Fail what waits for `name`'s key; returns whether `qid` was that
    /// key lookup.
    fn key_lookup_failed(&mut self, name: &str, qid: u32, why: &str) -> bool {
        if self.key_lookups.get(name) != Some(&qid) {
            return false;
        }
        self.key_lookups.remove(name);
        let waiting: Vec<EnvelopeId> = self
            .envelopes
            .iter()
            .filter(|(_, e)| e.to == name && e.sealed.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.fail_envelope(id, why.to_owned());
        }
        true
    }

    fn on_env_result(&mut self, now: Millis, id: EnvelopeId, result: EnvResult) {
        let Some(e) = self.envelopes.get_mut(&id) else {
            return;
        };
        match result {
            EnvResult::Delivered => {
                self.finish_copy(id, envelope::EnvelopeOutcome::Delivered);
            }
            EnvResult::Stored => {
                self.finish_copy(id, envelope::EnvelopeOutcome::Stored);
            }
            EnvResult::KeyChanged if !e.resealed => {
                // Our copy of their devices is old: fetch them again.
                e.resealed = true;
                e.sealed = None;
                e.device = None;
                e.next_send = Millis::MAX;
                let to = e.to.clone();
                self.peer_devices.remove(&to);
                self.seal_and_send(now, id);
            }
            EnvResult::Busy => e.next_send = now + 2 * self.cfg.envelope_retry_ms,
            EnvResult::NotFound => {
                let username = e.to.clone();
                if self.finish_copy(
                    id,
                    envelope::EnvelopeOutcome::Failed(EnvResult::NotFound.describe().to_owned()),
                ) {
                    self.events.push_back(ClientEvent::NoSuchUser { username });
                }
            }
            other => self.fail_envelope(id, other.describe().to_owned()),
        }
    }

    fn on_env_deliver(&mut self, now: Millis, from: SocketAddr, bytes: &[u8]) {
        let Ok(sealed) = envelope::Sealed::decode(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        let id = sealed.header.id;
        match envelope::open(
            bytes,
            &self.device,
            &self.cert.username,
            &self.authority,
            self.unix,
        ) {
            Ok(o) => {
                self.send(from, &Msg::EnvAck { id, ok: true });
                if self.seen.contains_key(&id) {
                    self.stats.envelopes_duplicate += 1;
                    return;
                }
                self.seen.insert(id, UnixMillis(o.expires_ms));
                if self.seen.len() > 65_536 {
                    self.seen.retain(|_, exp| *exp > self.unix);
                    while self.seen.len() > 65_536 {
                        self.seen.pop_first();
                    }
                }
                self.stats.envelopes_received += 1;
                if self.last_device.len() >= 4096 {
                    self.last_device.clear();
                }
                self.last_device
                    .insert(o.from.username.clone(), o.from.x25519);
                // A device of theirs our copy of their records lacks (one
                // added since we looked, e.g. a new device of our own
                // account): they are looked up again before the next
                // envelope to them.
                let name = o.from.username.to_ascii_lowercase();
                if let Some((recs, at)) = self.peer_devices.get_mut(&name)
                    && !recs.iter().any(|r| r.cert.x25519 == o.from.x25519)
                {
                    *at = None;
                    // A device of ours that may lack what found us alone:
                    // look our devices up now.
                    let own = name == self.cert.username.to_ascii_lowercase();
                    if own && !self.alone.is_empty() && !self.key_lookups.contains_key(&name) {
                        let qid = self.start_lookup(now, &name, true);
                        self.key_lookups.insert(name.clone(), qid);
                    }
                }
                self.events.push_back(ClientEvent::Envelope {
                    from: Box::new(o.from),
                    kind: o.kind,
                    id,
                    payload: o.payload,
                    created_ms: o.created_ms,
                });
            }
            Err(e) => {
                tracing::debug!("envelope refused: {e}");
                self.stats.envelopes_rejected += 1;
                self.send(from, &Msg::EnvAck { id, ok: false });
            }
        }
    }

    pub fn username(&self) -> &str {
        &self.cert.username
    }

    /// Supernodes known, best first, for saving in the data dir.
    pub fn host_cache(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.attached().collect();
        for a in &self.host_cache {
            let a = a.get();
            if !v.contains(&a) {
                v.push(a);
            }
        }
        v
    }

    pub fn attached(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.links
            .iter()
            .filter(|l| matches!(l.state, LinkState::Attached { .. }))
            .map(|l| l.addr)
    }

    pub fn primary(&self) -> Option<SocketAddr> {
        self.links
            .iter()
            .find(|l| l.primary && matches!(l.state, LinkState::Attached { .. }))
            .map(|l| l.addr)
    }

    pub fn observed_addr(&self) -> Option<SocketAddr> {
        self.observed
    }

    pub fn status(&self) -> Status {
        self.status
    }

    pub fn published_seq(&self) -> u64 {
        self.published_seq
    }

    /// The seq of the newest acknowledged record that said something its
    /// predecessor did not (status, message, supernodes, addresses): what
    /// a lookup must show at least.
    pub fn content_seq(&self) -> u64 {
        self.content_seq
    }

    pub fn set_status(&mut self, status: Status, message: &str) {
        self.status = status;
        self.message = message.to_owned();
        self.need_publish = true;
    }

    pub fn set_candidates(&mut self, c: Vec<SocketAddr>) {
        self.candidates = c;
        self.need_publish = true;
    }

    pub fn set_certificate(&mut self, cert: Certificate) {
        self.cert = Arc::new(cert);
        self.need_publish = true;
    }

    /// Look `username` up; the answer comes as [`ClientEvent::Lookup`].
    pub fn lookup(&mut self, now: Millis, username: &str) -> u32 {
        self.start_lookup(now, username, false)
    }

    fn start_lookup(&mut self, now: Millis, username: &str, internal: bool) -> u32 {
        let qid = self.next_qid;
        self.next_qid = self.next_qid.wrapping_add(1).max(1);
        let target = self.primary().or_else(|| self.attached().next());
        match target {
            Some(sn) => {
                self.send(sn, &Msg::Lookup { qid, username });
                self.lookups.insert(
                    qid,
                    PendingLookup {
                        username: username.to_owned(),
                        deadline: now + self.cfg.lookup_timeout_ms,
                        retry_at: Some(now + self.cfg.lookup_retry_ms),
                        via: sn,
                        internal,
                    },
                );
            }
            None if internal => {
                // Tried again once attached (see handle_timeout).
            }
            None => self.events.push_back(ClientEvent::Lookup {
                qid,
                username: username.to_owned(),
                outcome: LookupOutcome::Failed("not attached to any supernode".into()),
            }),
        }
        qid
    }

    /// Ask the primary supernode for relay credentials; the answer comes
    /// as [`ClientEvent::RelayCredentials`] or [`ClientEvent::RelayRefused`].
    pub fn request_relay_credentials(&mut self) -> u32 {
        let qid = self.next_qid;
        self.next_qid = self.next_qid.wrapping_add(1).max(1);
        match self.primary().or_else(|| self.attached().next()) {
            Some(sn) => self.send(sn, &Msg::RelayCredentialsReq { qid }),
            None => self.events.push_back(ClientEvent::RelayRefused {
                reason: "not attached to any supernode".into(),
            }),
        }
        qid
    }

    /// Follow `username`'s presence: changes come as
    /// [`ClientEvent::PresenceChanged`].
    pub fn watch(&mut self, username: &str) {
        if self.watches.insert(username.to_owned())
            && let Some(p) = self.primary()
        {
            self.send(p, &Msg::WatchReq { username });
        }
    }

    /// Say goodbye: publish an offline record and detach.
    pub fn shutdown(&mut self, now: Millis, unix: UnixMillis) {
        self.unix = unix;
        self.status = Status::Offline;
        self.publish(now);
        let addrs: Vec<SocketAddr> = self.attached().collect();
        for a in addrs {
            self.send(a, &Msg::Detach);
        }
        self.links.clear();
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop().map(|(dst, bytes)| Transmit { dst, bytes })
    }

    /// Takes the buffer itself: an idle client holds no spare capacity
    /// (a simulation runs a million of them).
    pub fn drain_transmits(&mut self) -> impl Iterator<Item = Transmit> + '_ {
        std::mem::take(&mut self.out)
            .into_iter()
            .map(|(dst, bytes)| Transmit { dst, bytes })
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        let e = self.events.pop_front();
        if e.is_none() && self.events.capacity() > 0 {
            // Drained: give the space back (see `drain_transmits`).
            self.events = VecDeque::new();
        }
        e
    }

    fn send(&mut self, to: SocketAddr, m: &Msg<'_>) {
        let b = m.encode();
        self.stats.bytes_sent += b.len() as u64;
        self.out.push((to, b));
    }

    /// An emptied map keeps its first node (room for 11 lookups): drop it,
    /// since most clients look something up now and then, not constantly.
    fn take_lookup(&mut self, qid: u32) -> Option<PendingLookup> {
        let l = self.lookups.remove(&qid);
        if self.lookups.is_empty() {
            self.lookups = BTreeMap::new();
        }
        l
    }

    fn learn(&mut self, addrs: &[SocketAddr]) {
        for a in addrs {
            let a = HostAddr::from(*a);
            // Room first: growing past the limit to cut back would double
            // the list's allocation in every client.
            if self.host_cache.len() < self.cfg.host_cache_max && !self.host_cache.contains(&a) {
                self.host_cache.push_back(a);
            }
        }
        while self.host_cache.len() > self.cfg.host_cache_max {
            self.host_cache.pop_back();
        }
        // Learning is rare (attachments, redirects); the list is kept by
        // every client.
        self.host_cache.shrink_to_fit();
    }

    fn drop_link(&mut self, now: Millis, addr: SocketAddr, reason: &'static str, avoid_ms: u64) {
        let Some(i) = self.links.iter().position(|l| l.addr == addr) else {
            return;
        };
        let l = self.links.remove(i);
        tracing::debug!(%addr, reason, "supernode link dropped");
        let mut promoted = None;
        if l.primary {
            // The backup takes over as primary.
            if let Some(b) = self
                .links
                .iter_mut()
                .find(|l| matches!(l.state, LinkState::Attached { .. }))
            {
                b.primary = true;
                let addr = b.addr;
                promoted = Some(addr);
                let names: Vec<String> = self.watches.iter().cloned().collect();
                for n in names {
                    self.send(addr, &Msg::WatchReq { username: &n });
                }
            }
        }
        if matches!(l.state, LinkState::Attached { .. }) {
            self.events.push_back(ClientEvent::Detached {
                supernode: addr,
                reason,
                promoted,
            });
            self.need_publish = true;
        }
        self.avoid.insert(addr, now + avoid_ms);
    }

    fn backoff(&mut self, now: Millis, rng: &mut dyn RngCore) {
        self.failures = self.failures.saturating_add(1);
        let exp = self
            .cfg
            .backoff_base_ms
            .saturating_mul(1 << self.failures.min(16));
        let cap = exp.min(self.cfg.backoff_max_ms);
        // Full jitter, so that clients of a failed supernode spread out.
        self.next_attempt_at = now + rng.gen_range(cap / 2..=cap.max(1));
    }

    /// The link to supernode `from` answered BUSY (its session table is
    /// full) naming `others`: as a Redirect, without the wait for a
    /// handshake to time out.
    pub fn link_busy(&mut self, now: Millis, from: SocketAddr, others: Vec<SocketAddr>) {
        if !self.links.iter().any(|l| l.addr == from) {
            return;
        }
        self.stats.redirects += 1;
        let others = others.into_iter().filter(|a| *a != from).collect();
        self.redirected(now, from, others);
    }

    /// `from` is full or leaving: drop it for a while and try `supernodes`
    /// (then the rest of the host cache) at once.
    fn redirected(&mut self, now: Millis, from: SocketAddr, supernodes: Vec<SocketAddr>) {
        self.drop_link(now, from, "redirected", 30_000);
        // Sent on, not failed: no backoff for this round.
        if !self
            .links
            .iter()
            .any(|l| matches!(l.state, LinkState::Attaching { .. }))
        {
            self.round_open = false;
        }
        self.next_attempt_at = now;
        for a in supernodes.iter().rev() {
            let a = HostAddr::from(*a);
            self.host_cache.retain(|x| *x != a);
            self.host_cache.push_front(a);
        }
        self.events.push_back(ClientEvent::Redirected {
            from,
            to: supernodes,
        });
    }

    /// A message from `from` at `now`; records and envelopes in it are
    /// judged at `unix` (the wall clock).
    pub fn handle_message(
        &mut self,
        now: Millis,
        unix: UnixMillis,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        self.unix = unix;
        let Ok(msg) = Msg::decode(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        let idx = match self.links.iter().position(|l| l.addr == from) {
            Some(idx) => idx,
            // A late answer to an attempt that timed out (its attach waited
            // for the link to come up, e.g. over TCP once UDP proved
            // blocked): the supernode holds our attachment, so take it.
            None if matches!(msg, Msg::AttachOk { .. })
                && self.host_cache.contains(&HostAddr::from(from)) =>
            {
                tracing::debug!(supernode = %from, "late attach answer taken");
                self.avoid.remove(&from);
                self.links.push(Link {
                    addr: from,
                    primary: false,
                    state: LinkState::Attaching { deadline: now },
                });
                self.links.len() - 1
            }
            None => {
                // Not from a supernode we talk to: ignore (counted).
                tracing::debug!(%from, "overlay message from no supernode of ours");
                self.stats.malformed += 1;
                return;
            }
        };
        match msg {
            Msg::AttachOk {
                observed,
                supernodes,
            } => {
                let attached = self.attached().count();
                if attached >= 2 && matches!(self.links[idx].state, LinkState::Attaching { .. }) {
                    // A parallel attempt answered after two others did.
                    self.links.remove(idx);
                    self.learn(&supernodes);
                    self.send(from, &Msg::Detach);
                    return;
                }
                if matches!(self.links[idx].state, LinkState::Attaching { .. }) {
                    let has_primary = self.primary().is_some();
                    let l = &mut self.links[idx];
                    l.state = LinkState::Attached {
                        last_ack: now,
                        last_ping: now,
                    };
                    l.primary = !has_primary;
                    let primary = l.primary;
                    self.observed = Some(observed);
                    self.need_publish = true;
                    let attaching = self
                        .links
                        .iter()
                        .any(|l| matches!(l.state, LinkState::Attaching { .. }));
                    self.publish_not_before = if attaching {
                        now + self.cfg.publish_delay_ms
                    } else {
                        now
                    };
                    self.learn(&supernodes);
                    self.events.push_back(ClientEvent::Attached {
                        supernode: from,
                        primary,
                        observed,
                    });
                    if primary {
                        let names: Vec<String> = self.watches.iter().cloned().collect();
                        for n in names {
                            self.send(from, &Msg::WatchReq { username: &n });
                        }
                    }
                }
            }
            Msg::Redirect { supernodes } => {
                self.stats.redirects += 1;
                if supernodes == [from] {
                    // It restarted and forgot us: attach again at once.
                    self.drop_link(now, from, "supernode lost our attachment", 0);
                    self.next_attempt_at = now;
                    let f = HostAddr::from(from);
                    self.host_cache.retain(|a| *a != f);
                    self.host_cache.push_front(f);
                    return;
                }
                self.redirected(now, from, supernodes);
            }
            Msg::KeepaliveAck { .. } => {
                if let LinkState::Attached { last_ack, .. } = &mut self.links[idx].state {
                    *last_ack = now;
                }
            }
            Msg::PublishAck { seq } => {
                if let LinkState::Attached { last_ack, .. } = &mut self.links[idx].state {
                    *last_ack = now;
                }
                if self.content_pending.is_some_and(|c| c <= seq) {
                    self.content_seq = self.content_pending.take().unwrap_or(seq);
                }
                if seq > self.published_seq {
                    self.published_seq = seq;
                    self.events.push_back(ClientEvent::Published { seq });
                }
            }
            Msg::PublishRejected { seq, reason } => {
                self.events.push_back(ClientEvent::PublishRejected {
                    seq,
                    reason: reason.to_owned(),
                });
            }
            Msg::LookupReply { qid, found } => {
                let Some(PendingLookup {
                    username, internal, ..
                }) = self.take_lookup(qid)
                else {
                    return;
                };
                let mut recs: Vec<PresenceRecord> = Vec::new();
                let outcome = match found {
                    Found::NotFound => LookupOutcome::NotFound,
                    found => {
                        // Every device's record, verified, one per device
                        // (a bad one among good ones is left out).
                        for b in found.records() {
                            if let Some(r) = self.verify(b)
                                && r.username() == username
                                && !recs.iter().any(|x| x.cert.ed25519 == r.cert.ed25519)
                            {
                                recs.push(r);
                            }
                        }
                        self.merged(&recs).unwrap_or_else(|| {
                            LookupOutcome::Failed("the supernode returned an invalid record".into())
                        })
                    }
                };
                match &outcome {
                    LookupOutcome::Online(_) | LookupOutcome::Offline { .. } => {
                        self.learn_devices(now, &username, recs)
                    }
                    LookupOutcome::NotFound => {
                        if self.key_lookup_failed(&username, qid, "no such user") {
                            self.events.push_back(ClientEvent::NoSuchUser {
                                username: username.clone(),
                            });
                        }
                    }
                    LookupOutcome::Failed(why) => {
                        let why = format!("looking up the recipient failed: {why}");
                        self.key_lookup_failed(&username, qid, &why);
                    }
                }
                if !internal {
                    self.events.push_back(ClientEvent::Lookup {
                        qid,
                        username,
                        outcome,
                    });
                }
            }
            Msg::RelayCredentials {
                username,
                password,
                realm,
                expires,
                relays,
                ..
            } => self.events.push_back(ClientEvent::RelayCredentials {
                username: username.to_owned(),
                password: password.to_owned(),
                realm: realm.to_owned(),
                expires,
                relays,
            }),
            Msg::RelayRefused { reason, .. } => self.events.push_back(ClientEvent::RelayRefused {
                reason: reason.to_owned(),
            }),
            Msg::EnvResult { id, result } => self.on_env_result(now, id, result),
            Msg::EnvDeliver { envelope } => self.on_env_deliver(now, from, envelope),
            Msg::PresenceUpdate { record } => {
                if let Some(r) = self.verify(record)
                    && self.watches.contains(r.username())
                {
                    // One device changed: merge it with the others known.
                    let name = r.username().to_owned();
                    let (recs, _) = self
                        .peer_devices
                        .entry(name.clone())
                        .or_insert_with(|| (Vec::new(), None));
                    let n = recs.len();
                    match recs.iter_mut().find(|x| x.cert.ed25519 == r.cert.ed25519) {
                        Some(x) if x.seq >= r.seq => {}
                        Some(x) => *x = r,
                        None if n < super::msg::MAX_DEVICES => recs.push(r),
                        None => {}
                    }
                    let recs = recs.clone();
                    if let Some(o) = self.merged(&recs) {
                        let (record, online) = match o {
                            LookupOutcome::Online(r) => (r, true),
                            LookupOutcome::Offline { record, .. } => (record, false),
                            _ => return,
                        };
                        self.events
                            .push_back(ClientEvent::PresenceChanged { record, online });
                    }
                }
            }
            _ => self.stats.malformed += 1,
        }
    }

    /// A user's devices merged: online with the most available device's
    /// record if any shows them online, else offline, last seen when the
    /// newest device saw them. `None` for no records.
    fn merged(&self, recs: &[PresenceRecord]) -> Option<LookupOutcome> {
        let secs = self.unix.secs();
        let best = most_available(recs, secs)?.clone();
        Some(if best.is_online(secs) {
            LookupOutcome::Online(Box::new(best))
        } else {
            LookupOutcome::Offline {
                record: Box::new(best),
                last_seen: merged_last_seen(recs, secs),
            }
        })
    }

    fn verify(&mut self, b: &[u8]) -> Option<PresenceRecord> {
        let r = PresenceRecord::decode(b).ok()?;
        // Contacts' certificates come back again and again: check each once.
        let digest = super::record::cert_digest(&r.cert);
        let known = self.verified_certs.contains(&digest);
        let ok = (known || r.verify_certificate(&self.authority).is_ok())
            && r.verify_signed(self.unix.secs()).is_ok();
        if !ok {
            self.stats.bad_records += 1;
            return None;
        }
        if !known {
            if self.verified_certs.len() >= 1024 {
                self.verified_certs.clear();
            }
            self.verified_certs.insert(digest);
        }
        Some(r)
    }

    fn publish(&mut self, now: Millis) {
        // The primary first: it alone pushes the record to its owners.
        let primary = self.primary();
        let sns: Vec<SocketAddr> = primary
            .into_iter()
            .chain(self.attached().filter(|a| Some(*a) != primary))
            .collect();
        if sns.is_empty() {
            return;
        }
        self.seq = (self.seq + 1).max(self.unix.get());
        let mut candidates = self.candidates.clone();
        if let Some(o) = self.observed
            && !candidates.contains(&o)
        {
            candidates.insert(0, o);
        }
        // Anyone may read a record: an invisible user's shows no address
        // of theirs (contacts reach them through envelopes and ICE).
        if self.status == Status::Invisible {
            candidates.clear();
        }
        let rec = PresenceRecord::sign(
            &self.device,
            &self.cert,
            RecordContent {
                seq: self.seq,
                signed_at_ms: self.unix.get(),
                online_secs: self.cfg.online_secs,
                status: self.status,
                message: self.message.clone(),
                supernodes: sns.clone(),
                candidates,
            },
        );
        let bytes = rec.encode();
        let content = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (
                rec.status.to_u8(),
                &rec.message,
                &rec.supernodes,
                &rec.candidates,
            )
                .hash(&mut h);
            h.finish()
        };
        if content != self.content_hash {
            self.content_hash = content;
            self.content_pending = Some(rec.seq);
        }
        // The offline record a supernode publishes for us if we fall
        // silent; its seq is reserved, so the next publish is newer.
        self.seq += 1;
        let will = PresenceRecord::sign(
            &self.device,
            &self.cert,
            RecordContent {
                seq: self.seq,
                signed_at_ms: self.unix.get(),
                online_secs: 0,
                status: Status::Offline,
                message: self.message.clone(),
                supernodes: Vec::new(),
                candidates: Vec::new(),
            },
        )
        .encode();
        for s in sns {
            self.send(s, &Msg::Publish { record: &bytes });
            self.send(s, &Msg::PublishWill { record: &will });
        }
        self.last_publish = now;
        self.need_publish = false;
    }

    /// Start a round of attach attempts when none is in flight: several
    /// candidates at once when we have no supernode at all (a dead one
    /// costs only its timeout), one when we only lack the backup. A round
    /// that gets nothing backs off, exponentially and with jitter.
    fn attach_round(&mut self, now: Millis, rng: &mut dyn RngCore) {
        let attaching = self
            .links
            .iter()
            .filter(|l| matches!(l.state, LinkState::Attaching { .. }))
            .count();
        let attached = self.links.len() - attaching;
        if self.round_open && attaching == 0 {
            self.round_open = false;
            if attached == 0 {
                self.backoff(now, rng);
            } else {
                self.failures = 0;
            }
        }
        if attached >= 2 || attaching > 0 || now < self.next_attempt_at {
            return;
        }
        let want = if attached == 0 {
            self.cfg.parallel_attach.max(1)
        } else {
            1
        };
        self.avoid.retain(|_, until| *until > now);
        let linked: Vec<SocketAddr> = self.links.iter().map(|l| l.addr).collect();
        let picks: Vec<SocketAddr> = self
            .host_cache
            .iter()
            .map(HostAddr::get)
            .filter(|a| !linked.contains(a) && !self.avoid.contains_key(a))
            .take(want)
            .collect();
        if picks.is_empty() {
            if attached == 0 {
                // Everything known failed recently: forget that and back
                // off before going round again.
                self.avoid.clear();
                self.backoff(now, rng);
            } else {
                self.next_attempt_at = now + self.cfg.backoff_max_ms / 2;
            }
            return;
        }
        self.round_open = true;
        for a in picks {
            // Rotate it to the back so that failures move on.
            let h = HostAddr::from(a);
            self.host_cache.retain(|x| *x != h);
            self.host_cache.push_back(h);
            self.stats.attach_attempts += 1;
            let primary = self.primary().is_none();
            self.links.push(Link {
                addr: a,
                primary: false,
                state: LinkState::Attaching {
                    deadline: now + self.cfg.attach_timeout_ms,
                },
            });
            tracing::debug!(supernode = %a, "attaching");
            self.send(a, &Msg::Attach { primary });
        }
    }

    /// Run the timers due at `now`; records are signed at `unix` (the wall
    /// clock).
    pub fn handle_timeout(&mut self, now: Millis, unix: UnixMillis, rng: &mut dyn RngCore) {
        self.unix = unix;
        // Liveness of attached supernodes; keepalives.
        let mut dead = Vec::new();
        let mut timed_out = Vec::new();
        let mut pings = Vec::new();
        for l in &mut self.links {
            match &mut l.state {
                LinkState::Attached {
                    last_ack,
                    last_ping,
                } => {
                    if now.since(*last_ack) > self.cfg.dead_after_ms {
                        dead.push(l.addr);
                    } else if now.since(*last_ping) >= self.cfg.keepalive_ms {
                        *last_ping = now;
                        pings.push(l.addr);
                    }
                }
                LinkState::Attaching { deadline } => {
                    if now >= *deadline {
                        timed_out.push(l.addr);
                    }
                }
            }
        }
        for a in pings {
            self.ka_seq = self.ka_seq.wrapping_add(1);
            let seq = self.ka_seq;
            self.send(a, &Msg::Keepalive { seq });
        }
        // One that stopped answering may be restarting: try it again soon
        // (an attempt costs one handshake), not after a whole minute.
        for a in dead {
            self.drop_link(
                now,
                a,
                "supernode stopped answering",
                STOPPED_ANSWERING_AVOID_MS,
            );
        }
        for a in timed_out {
            self.drop_link(now, a, "attach timed out", 60_000);
        }
        // Attach until we have a primary and a backup.
        self.attach_round(now, rng);
        // Presence.
        let due = self.need_publish || now.since(self.last_publish) >= self.cfg.refresh_ms;
        if due && now >= self.publish_not_before {
            self.publish(now);
        }
        // Lookups without an answer: once through the other supernode,
        // then give up.
        let attached: Vec<SocketAddr> = self.attached().collect();
        let mut resend = Vec::new();
        for (qid, l) in self.lookups.iter_mut() {
            if l.retry_at.is_some_and(|t| t <= now) {
                l.retry_at = None;
                if let Some(other) = attached.iter().find(|a| **a != l.via) {
                    l.via = *other;
                    resend.push((*other, *qid, l.username.clone()));
                }
            }
        }
        for (to, qid, username) in resend {
            self.send(
                to,
                &Msg::Lookup {
                    qid,
                    username: &username,
                },
            );
        }
        let expired: Vec<u32> = self
            .lookups
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(q, _)| *q)
            .collect();
        for qid in expired {
            if let Some(l) = self.take_lookup(qid) {
                if l.internal {
                    self.key_lookup_failed(&l.username, qid, "looking up the recipient timed out");
                    continue;
                }
                self.events.push_back(ClientEvent::Lookup {
                    qid,
                    username: l.username,
                    outcome: LookupOutcome::Failed("lookup timed out".into()),
                });
            }
        }
        self.envelope_timers(now);
        // Keep watches alive.
        if now >= self.next_watch_at {
            self.next_watch_at = now + self.cfg.watch_refresh_ms;
            if let Some(p) = self.primary() {
                let names: Vec<String> = self.watches.iter().cloned().collect();
                for n in names {
                    self.send(p, &Msg::WatchReq { username: &n });
                }
            }
        }
    }

    /// When [`ClientCore::handle_timeout`] is next due (node timeline),
    /// or `None` when no timer runs.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let mut t = Millis::MAX;
        for l in &self.links {
            match l.state {
                LinkState::Attached {
                    last_ack,
                    last_ping,
                } => {
                    t = t
                        .min(last_ping + self.cfg.keepalive_ms)
                        .min(last_ack + self.cfg.dead_after_ms + 1);
                }
                LinkState::Attaching { deadline } => t = t.min(deadline),
            }
        }
        if self.links.len() < 2
            && !self
                .links
                .iter()
                .any(|l| matches!(l.state, LinkState::Attaching { .. }))
        {
            t = t.min(self.next_attempt_at);
        }
        if self
            .links
            .iter()
            .any(|l| matches!(l.state, LinkState::Attached { .. }))
        {
            if self.need_publish {
                return Some(t.min(self.publish_not_before));
            }
            t = t.min(self.last_publish + self.cfg.refresh_ms);
            if !self.watches.is_empty() {
                t = t.min(self.next_watch_at);
            }
        }
        for l in self.lookups.values() {
            t = t.min(l.deadline).min(l.retry_at.unwrap_or(Millis::MAX));
        }
        for e in self.envelopes.values() {
            t = t.min(e.deadline).min(e.next_send);
        }
        (t != Millis::MAX).then_some(t)
    }

    fn envelope_timers(&mut self, now: Millis) {
        let expired: Vec<EnvelopeId> = self
            .envelopes
            .iter()
            .filter(|(_, e)| e.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let why = match self.envelopes.get(&id) {
                Some(e) if e.sealed.is_none() => {
                    "the recipient's key could not be looked up in time"
                }
                _ => "no answer from the overlay",
            };
            self.fail_envelope(id, why.to_owned());
        }
        let due: Vec<EnvelopeId> = self
            .envelopes
            .iter()
            .filter(|(_, e)| e.next_send <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.transmit_envelope(now, id);
        }
        // Key lookups that could not start while detached.
        if self.primary().is_some() {
            let stalled: Vec<(String, u32)> = self
                .key_lookups
                .iter()
                .filter(|(_, q)| !self.lookups.contains_key(q))
                .map(|(n, q)| (n.clone(), *q))
                .collect();
            for (name, _) in stalled {
                let qid = self.start_lookup(now, &name, true);
                self.key_lookups.insert(name, qid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{AuthorityKey, Role, Username};
    use rand::rngs::StdRng;

    fn client(sn: SocketAddr) -> (ClientCore, StdRng) {
        let mut rng = StdRng::seed_from_u64(1);
        let authority = AuthorityKey::generate(&mut rng);
        let d = DeviceIdentity::generate(&mut rng);
        let user = Username::parse("alice").unwrap();
        let cert = Certificate::issue(
            &authority,
            1,
            Role::User,
            0,
            u64::MAX / 2,
            &user,
            d.ed25519_public(),
            d.x25519_public(),
        );
        let core = ClientCore::new(
            d,
            cert,
            authority.public(),
            vec![sn],
            ClientConfig::default(),
            Millis(0),
        );
        (core, rng)
    }

    /// An attach answer that comes after the attempt timed out (it waited
    /// for the link to come up over TCP) still attaches: the supernode
    /// holds the attachment, and ignoring it cost a backoff round.
    #[test]
    fn late_attach_answer_attaches() {
        let sn: SocketAddr = "198.51.100.1:7710".parse().unwrap();
        let (mut c, mut rng) = client(sn);
        c.handle_timeout(Millis(0), UnixMillis(0), &mut rng);
        assert_eq!(c.stats.attach_attempts, 1);
        c.handle_timeout(Millis(1_500), UnixMillis(1_500), &mut rng);
        assert_eq!(c.attached().count(), 0, "the attempt timed out");
        while c.poll_event().is_some() {}
        let ok = Msg::AttachOk {
            observed: "203.0.113.5:4000".parse().unwrap(),
            supernodes: vec![sn],
        }
        .encode();
        c.handle_message(Millis(1_600), UnixMillis(1_600), sn, &ok);
        assert_eq!(c.attached().collect::<Vec<_>>(), vec![sn]);
        assert!(
            std::iter::from_fn(|| c.poll_event())
                .any(|e| matches!(e, ClientEvent::Attached { primary: true, .. }))
        );
        // From an address that is no supernode of ours: still ignored.
        let stranger: SocketAddr = "192.0.2.9:7710".parse().unwrap();
        c.handle_message(Millis(1_700), UnixMillis(1_700), stranger, &ok);
        assert_eq!(c.attached().count(), 1);
        assert_eq!(c.stats.malformed, 1);
    }

    /// Issue 14.3: a supernode whose link table is full answers BUSY
    /// naming others; the client tries them at once, as on a Redirect,
    /// instead of waiting for its handshake to time out.
    #[test]
    fn a_busy_supernode_sends_us_to_the_ones_it_names_at_once() {
        let sn: SocketAddr = "198.51.100.1:7710".parse().unwrap();
        let other: SocketAddr = "198.51.100.2:7710".parse().unwrap();
        let (mut c, mut rng) = client(sn);
        c.handle_timeout(Millis(0), UnixMillis(0), &mut rng);
        assert_eq!(c.stats.attach_attempts, 1);
        while c.poll_transmit().is_some() {}
        // BUSY from an address we are not attaching to: ignored.
        c.link_busy(Millis(10), "192.0.2.9:7710".parse().unwrap(), vec![other]);
        assert_eq!(c.stats.redirects, 0);
        c.link_busy(Millis(20), sn, vec![other, sn]);
        assert_eq!(c.stats.redirects, 1);
        assert!(std::iter::from_fn(|| c.poll_event()).any(|e| matches!(
            e,
            ClientEvent::Redirected { from, ref to } if from == sn && *to == vec![other]
        )));
        c.handle_timeout(Millis(20), UnixMillis(20), &mut rng);
        assert_eq!(c.stats.attach_attempts, 2, "the next attempt is now");
        let to: Vec<SocketAddr> = std::iter::from_fn(|| c.poll_transmit())
            .map(|t| t.dst)
            .collect();
        assert!(to.contains(&other), "{to:?}");
        assert!(!to.contains(&sn), "{to:?}");
    }

    /// Bug 12 (first hour): a supernode that stopped answering may be
    /// restarting; with the backup still attached, it is tried again
    /// within half a minute, not after a whole one.
    #[test]
    fn a_supernode_that_stopped_answering_is_tried_again_soon() {
        let sn: SocketAddr = "198.51.100.1:7710".parse().unwrap();
        let sn2: SocketAddr = "198.51.100.2:7710".parse().unwrap();
        let (mut c, mut rng) = client(sn);
        let ok = Msg::AttachOk {
            observed: "203.0.113.5:4000".parse().unwrap(),
            supernodes: vec![sn, sn2],
        }
        .encode();
        let mut t = 0;
        let mut dropped_at = None;
        let mut retried_at = None;
        while t < 60_000 && retried_at.is_none() {
            c.handle_timeout(Millis(t), UnixMillis(t), &mut rng);
            let out: Vec<Transmit> = std::iter::from_fn(|| c.poll_transmit()).collect();
            for tx in out {
                let Ok(m) = Msg::decode(&tx.bytes) else {
                    continue;
                };
                match m {
                    // sn answers until 5 s, then falls silent; sn2 always.
                    Msg::Attach { .. } if tx.dst == sn2 || t < 5_000 => {
                        c.handle_message(Millis(t), UnixMillis(t), tx.dst, &ok)
                    }
                    Msg::Attach { .. } if dropped_at.is_some() => retried_at = Some(t),
                    Msg::Keepalive { seq } if tx.dst == sn2 || t < 5_000 => c.handle_message(
                        Millis(t),
                        UnixMillis(t),
                        tx.dst,
                        &Msg::KeepaliveAck { seq }.encode(),
                    ),
                    _ => {}
                }
            }
            let attached: Vec<SocketAddr> = c.attached().collect();
            if t >= 5_000 && dropped_at.is_none() && !attached.contains(&sn) {
                assert!(attached.contains(&sn2), "the backup stays");
                dropped_at = Some(t);
            }
            t += 250;
        }
        let dropped_at = dropped_at.expect("the silent supernode was dropped");
        let retried_at = retried_at.expect("never tried again");
        assert!(
            retried_at - dropped_at <= 30_000,
            "tried again {} ms after",
            retried_at - dropped_at
        );
    }
}
