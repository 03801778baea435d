//! A supernode's overlay role, sans-IO: membership (via [`Membership`]),
//! the shard of the directory it owns, lookups on behalf of its clients,
//! presence watches, and the clients attached to it.
//!
//! Records of attached clients are pushed by their home supernode (the
//! client's primary: the first supernode its record lists; the backup
//! keeps the record and pushes nothing until the client promotes it) to
//! their owners with acknowledgements. A refresh that only extends how
//! long the record shows its device online is held until the owners' copy
//! is within [`REFRESH_AHEAD_SECS`] of running out, then sent as a delta
//! (`Refresh`: new timing fields and signature; the owner rebuilds the
//! record and verifies it): with the default 420-s records and 120-s
//! refreshes one refresh in three reaches the owners, at ~140 bytes. Every
//! check interval the home sends each owner one digest of the records it
//! expects it to hold (a count and an XOR of hashes of (user, seq) per
//! bucket of user keys; the owner keeps the same sums of what each home
//! claimed, so answering costs no scan). A bucket that differs only by
//! claims in flight when the digest left (pushes not yet acknowledged,
//! unclaims just sent: some subset of them explains the owner's sums) is
//! left alone; the rest are repaired, one `Check` per record there, and
//! the owner names what it counts there (`ClaimsAsk`, `Claimed`) so stale
//! claims are dropped. An owner that does not answer is
//! skipped (and probed) and the next supernode on the ring takes its place;
//! membership changes move records at once (the home pushes to new owners,
//! owners hand off what they no longer own), so a record whose owners all
//! died comes back within one check interval. Lookups walk the owners the
//! same way. A supernode at its client limit refuses new clients and
//! redirects them to others.

mod envelopes;

pub use envelopes::{EnvelopeStats, MailboxChange};

use super::membership::{Change, Membership, MembershipConfig};
use super::msg::{
    DIGEST_BUCKETS, DigestBucket, Found, MAX_CLAIMED, MAX_DEVICES, Msg, claim_hash, digest_bucket,
};
use super::record::{PresenceRecord, Status, name_user, record_name, user_range};
use super::{Transmit, node_id, user_key};
use crate::identity::revocation::{RevocationError, RevocationList, Revoked};
use crate::identity::{Certificate, Role};
use crate::limits::{Bucket, Rate, RateTable, SourceKey, log_worthy};
use crate::time::{Millis, UnixMillis, UnixSecs};
use rand::RngCore;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc as Rc;

#[derive(Debug, Clone)]
pub struct SupernodeConfig {
    /// Other addresses clients reach this supernode at (its IPv6 address
    /// beside the advertised IPv4 one): clients list the address they
    /// attached at in their records, so an envelope forwarded to one of
    /// these is ours, not a datagram to ourselves that nobody answers.
    pub aliases: Vec<SocketAddr>,
    pub max_clients: usize,
    pub replicas: usize,
    pub membership: MembershipConfig,
    /// How long to wait for one owner before trying the next.
    pub query_timeout_ms: u64,
    /// Successors tried beyond `replicas` when owners do not answer.
    pub query_extra: usize,
    /// A lookup whose candidates all timed out walks further along the
    /// ring, up to this many owners asked in all and for this long: after
    /// a mass failure this supernode may not know yet that the owners and
    /// their next successors died, and "not found" must mean that
    /// `replicas` live owners said so, not that everyone asked was dead.
    pub query_max_asked: usize,
    pub query_budget_ms: u64,
    /// Owners asked at once; the newest record among their answers wins,
    /// so one owner holding an old copy (it missed an update while others
    /// thought it dead) cannot hide a newer record.
    pub parallel_queries: usize,
    pub cache_ttl_ms: u64,
    /// A client silent this long is detached.
    pub client_timeout_ms: u64,
    /// Attached clients' records are compared with their owners' (one
    /// digest per owner) this often.
    pub check_interval_ms: u64,
    pub store_timeout_ms: u64,
    /// Owners skipped after not answering, for this long.
    pub unresponsive_ms: u64,
    /// Re-replication runs this long after a membership change (batching).
    pub rebalance_delay_ms: u64,
    pub watch_ttl_ms: u64,
    pub join_retry_ms: u64,
    /// Relay credentials for attached clients; `None`: this group runs no
    /// relay.
    pub relay: Option<crate::relay::RelayGrant>,
    /// Envelopes: how long to wait for the recipient's supernode to report
    /// the recipient's acknowledgement before trying the next one.
    pub envelope_forward_timeout_ms: u64,
    /// Envelopes: the longest a route (lookup, forwards, store) may take.
    pub envelope_route_timeout_ms: u64,
    /// Envelopes one client may have in flight through us.
    pub max_envelopes_in_flight: usize,
    /// Offline mailbox: envelopes kept per user, and bytes in total.
    pub mailbox_per_user: usize,
    /// Offline mailbox: envelopes one sender may have waiting for one
    /// user (a stranger cannot fill anyone's mailbox alone).
    pub mailbox_per_sender: usize,
    pub mailbox_max_bytes: usize,
    /// Offline mailbox: how often to retry delivery to attached users.
    pub mailbox_retry_ms: u64,
    /// Lookups one attached client may start (burst, then per second).
    pub lookups_per_client: Rate,
    /// Lookups all clients from one source (IPv4 address, IPv6 /64) may
    /// start together.
    pub lookups_per_address: Rate,
    /// Names one attached client may watch at once.
    pub max_watches_per_client: usize,
    /// Names all clients from one source (IPv4 address, IPv6 /64) may
    /// watch together.
    pub max_watches_per_address: usize,
}

/// A home holds a client's timing-only refresh until the owners' copy of
/// its record shows it online for less than this (seconds), then pushes
/// it: with records online for 420 s (the client's default) and
/// refreshed every 120 s, one refresh in three reaches the owners.
pub const REFRESH_AHEAD_SECS: u64 = 30;

/// Unclaims (not acknowledged) are taken as possibly in flight for this
/// many store timeouts after they were sent.
const UNCLAIM_INFLIGHT_TIMEOUTS: u64 = 2;

/// Link sessions a supernode keeps beyond `max_clients`: links to other
/// supernodes, and room for a full node to bring a client's link up just
/// to send it a Redirect (the refused link then idles out).
pub const LINK_HEADROOM: usize = 4096;

impl SupernodeConfig {
    /// `base` with its session cap made to agree with `max_clients`: the
    /// overlay's limit, which redirects, must bite before the link's,
    /// which can only let the handshake time out.
    pub fn link_config(&self, base: crate::link::LinkConfig) -> crate::link::LinkConfig {
        crate::link::LinkConfig {
            max_sessions: self.max_clients.saturating_add(LINK_HEADROOM),
            ..base
        }
    }
}

impl Default for SupernodeConfig {
    fn default() -> Self {
        SupernodeConfig {
            aliases: Vec::new(),
            max_clients: 100_000,
            replicas: 3,
            membership: MembershipConfig::default(),
            query_timeout_ms: 300,
            query_extra: 4,
            query_max_asked: 24,
            query_budget_ms: 3_000,
            parallel_queries: 2,
            cache_ttl_ms: 2_000,
            client_timeout_ms: 6_000,
            check_interval_ms: 5_000,
            store_timeout_ms: 500,
            unresponsive_ms: 10_000,
            rebalance_delay_ms: 300,
            watch_ttl_ms: 120_000,
            join_retry_ms: 1_000,
            relay: None,
            envelope_forward_timeout_ms: 1_500,
            envelope_route_timeout_ms: 10_000,
            max_envelopes_in_flight: 256,
            mailbox_per_user: 500,
            mailbox_per_sender: 50,
            mailbox_max_bytes: 256 << 20,
            mailbox_retry_ms: 5_000,
            lookups_per_client: Rate::new(30, 5),
            lookups_per_address: Rate::new(120, 20),
            max_watches_per_client: 1024,
            max_watches_per_address: 8192,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupernodeEvent {
    ClientAttached { addr: SocketAddr, username: String },
    ClientDetached { addr: SocketAddr, username: String },
    ClientRefused { addr: SocketAddr },
    MemberUp { id: u64 },
    MemberDown { id: u64, addr: SocketAddr },
    Joined,
}

/// Counters, including every refused or dropped input.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SupernodeStats {
    pub malformed: u64,
    pub not_supernode: u64,
    pub not_attached: u64,
    /// Attached clients whose link moved to a new address (they roamed).
    pub clients_roamed: u64,
    pub records_stored: u64,
    pub records_rejected_forged: u64,
    pub records_rejected_expired: u64,
    pub records_rejected_stale: u64,
    pub records_rejected_wrong_user: u64,
    /// Records signed in the future or numbered beyond now plus the
    /// allowed skew (a device that would freeze its user's entry).
    pub records_rejected_ahead: u64,
    /// Device records dropped (or refused) because their user had
    /// [`MAX_DEVICES`] newer ones.
    pub records_over_device_cap: u64,
    /// Offline records published for clients that fell silent.
    pub wills_published: u64,
    pub queries_answered: u64,
    pub lookups: u64,
    pub lookups_found: u64,
    pub lookups_cached: u64,
    /// Time from a client's lookup to its answer, found or not.
    pub lookup_latency: crate::histogram::LatencyHistogram,
    pub query_timeouts: u64,
    /// Queries sent to owners (overlay hops taken by lookups).
    pub queries_sent: u64,
    pub store_timeouts: u64,
    pub clients_refused: u64,
    pub peak_clients: u64,
    pub bytes_sent: u64,
    pub directory_bytes_sent: u64,
    /// Digests sent to owners, and buckets found different and repaired.
    pub digests_sent: u64,
    pub digest_repairs: u64,
    /// Buckets that differed only by claims in flight when the digest
    /// was sent (not repaired).
    pub digest_in_flight: u64,
    /// Client refreshes held back (the owners' copy was still fresh), and
    /// sent as `Refresh` deltas.
    pub refreshes_held: u64,
    pub refreshes_sent: u64,
    /// `Refresh` deltas an owner could not apply (it lacked the record or
    /// held another version): answered so the home sends it whole.
    pub refreshes_unapplied: u64,
    /// Owners that did not answer a digest in time.
    pub digest_timeouts: u64,
    pub relay_credentials_issued: u64,
    /// Lookups dropped: the client or its address was over its rate.
    pub lookups_rate_limited: u64,
    /// Watches refused: the client already watches its share of names.
    pub watches_refused: u64,
    /// Messages dropped: their sender's device is revoked or its account
    /// disabled (the authority's revocation list).
    pub revoked_refused: u64,
    /// Clients detached when a revocation list named them.
    pub revoked_detached: u64,
    /// Records refused or dropped: their device is revoked or their
    /// account disabled.
    pub records_rejected_revoked: u64,
    /// Revocation lists taken, and refused (bad signature, expired,
    /// older than the one held, malformed).
    pub revocation_lists: u64,
    pub revocation_lists_rejected: u64,
}

#[derive(Debug)]
struct Attached {
    username: String,
    /// The device's ed25519 key (from its certificate), for revocation.
    device: [u8; 32],
    /// The device's x25519 key (from its certificate): envelopes sealed
    /// to it are delivered to this client.
    x25519: [u8; 32],
    /// The directory's name for its record ([`record_name`]).
    record_name: String,
    /// When it was last heard from (node timeline).
    last_seen: Millis,
    /// The record its owners were given (claimed in our digests).
    record: Option<Rc<[u8]>>,
    record_seq: u64,
    /// The pushed record's `online_until` (wall clock, seconds): a held
    /// `fresh` record is pushed before the owners' copy runs out.
    online_until: u64,
    /// A newer record that only extends the pushed one's validity (a
    /// periodic refresh), held until the owners' copy comes within
    /// [`REFRESH_AHEAD_SECS`] of running out, then pushed as a `Refresh`
    /// delta: most refreshes cost the owners nothing.
    fresh: Option<(Rc<[u8]>, u64)>,
    /// The record lists this supernode first among the client's
    /// (its primary): only the primary pushes it and claims it in
    /// digests; the backup keeps it, ready for when the client promotes
    /// it (and publishes again, listing it first).
    primary: bool,
    /// The record's user key.
    record_key: u64,
    /// When the record must be dropped (wall clock; see
    /// [`PresenceRecord::valid_until`]).
    record_expires: UnixSecs,
    /// The owners this home last gave the record to (ids, ring order).
    owners: Vec<u64>,
    /// Lookups this client may still start (`lookups_per_client`).
    lookups: Bucket,
    /// Names this client watches (recounted at each sweep).
    watches: usize,
    /// The client's signed offline record (`PublishWill`) and its seq,
    /// published to its owners if the client falls silent: a crashed
    /// user shows offline within `client_timeout_ms`, not when their
    /// online record runs out minutes later.
    will: Option<(Rc<[u8]>, u64)>,
}

impl Attached {
    /// The newest record's seq: a held refresh's, or the pushed one's.
    fn latest_seq(&self) -> u64 {
        self.fresh.as_ref().map_or(self.record_seq, |f| f.1)
    }
}

#[derive(Debug)]
struct Held {
    bytes: Rc<[u8]>,
    /// The signing device's ed25519 key, for revocation.
    device: [u8; 32],
    seq: u64,
    /// Dropped at (wall clock; see [`PresenceRecord::valid_until`]).
    expires_at: UnixSecs,
    key: u64,
    pushed_to: Vec<u64>,
    /// Since when this supernode no longer owns it (node timeline).
    not_owner_since: Option<Millis>,
    /// Home supernodes that claimed this record, with the seq each named
    /// (counted in `claim_sums`).
    claims: Vec<(u64, u64)>,
}

#[derive(Debug)]
enum Origin {
    Client {
        addr: SocketAddr,
        qid: u32,
    },
    /// Routing an envelope from an attached client.
    Envelope {
        client: SocketAddr,
        id: super::EnvelopeId,
    },
}

#[derive(Debug)]
struct Query {
    origin: Origin,
    username: String,
    candidates: Vec<(u64, SocketAddr)>,
    next: usize,
    /// Owners asked and not yet answered, with their deadlines (node
    /// timeline).
    outstanding: Vec<(u64, Millis)>,
    not_found: usize,
    /// Owners asked that did not answer in time; each adds one to the
    /// owners asked at once, so a walk past dead members speeds up.
    timeouts: usize,
    /// When the lookup was asked (node timeline).
    started: Millis,
    /// Newest valid record of each device received so far, by record
    /// name.
    best: BTreeMap<String, (u64, Rc<[u8]>)>,
}

#[derive(Debug)]
struct PendingStore {
    owner: u64,
    key: u64,
    username: String,
    record: Rc<[u8]>,
    /// Acknowledged by then or the next owner is tried (node timeline).
    deadline: Millis,
    exclude: Vec<u64>,
    /// Sent as the record's home (a `HomeStore`), not as a hand-off.
    claim: bool,
    /// The seq this store claims (the record's, or a `Check`'s).
    seq: u64,
    /// What the owner counted for this record in our digest before this
    /// claim arrived: a digest answered while the claim is in flight may
    /// show either (see [`Inflight`]).
    was: ClaimWas,
}

/// How a record goes to one owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Push {
    /// Whole, not claimed (a hand-off or a will).
    Store,
    /// Whole, claimed by us as its home.
    Home,
    /// Claimed as a delta of the copy the owner holds (timing fields and
    /// signature).
    Refresh([u8; super::record::TIMING_LEN], [u8; 64]),
    /// "Do you hold it at this seq?" (a digest repair), claiming it.
    Check,
}

/// One record on its way to one owner.
struct Outgoing<'a> {
    username: &'a str,
    key: u64,
    record: &'a Rc<[u8]>,
    seq: u64,
    push: Push,
    was: ClaimWas,
}

/// A push as the record's home: the owners it was given to before and
/// the seq then (`None`: never given), and the delta from that record
/// when only its timing changed.
struct Claim<'a> {
    before: (&'a [u64], Option<u64>),
    delta: Option<([u8; super::record::TIMING_LEN], [u8; 64])>,
}

/// What an owner counted of one record in a home's digest before a claim
/// change reached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClaimWas {
    /// Not known (a repair's `Check`): a digest that differs there is
    /// repaired.
    Unknown,
    Absent,
    Seq(u64),
}

/// A claim change that may cross a digest: in flight to the owner when
/// the digest was sent, or sent before the owner's answer came. The
/// owner's answer may show either side of it. Hashes are
/// [`claim_hash`]es; `None`: no claim.
#[derive(Debug, Clone, Copy)]
struct Inflight {
    bucket: u8,
    /// What the owner may count instead.
    before: Option<u64>,
    /// What our digest counts.
    after: Option<u64>,
}

/// A digest sent to an owner and not answered yet.
#[derive(Debug)]
struct DigestOut {
    deadline: Millis,
    /// Its split ([`digest_parts`]).
    parts: u8,
    /// Per bucket, the (count, hash) we sent.
    sums: [(u32, u64); DIGEST_BUCKETS as usize],
    /// Claim changes that may cross it: in flight to the owner when it
    /// was sent, or sent since.
    inflight: Vec<Inflight>,
}

/// Most changes in one bucket that a differing digest is checked
/// against; beyond this it is repaired. A real difference passes for one
/// explained by `n` changes with odds 2^(n-64), so `n` stays well below
/// 64.
const MAX_INFLIGHT_PER_BUCKET: usize = 32;

/// Whether an owner's (count, hash) for a bucket equals ours with some
/// subset of the changes that may cross the digest taken the other way.
/// The hash is an XOR, so the subset is found by Gaussian elimination
/// over GF(2) (a burst of pushes puts dozens in one bucket, too many to
/// try every subset); the count then picks among the solutions.
fn explained(ours: (u32, u64), theirs: (u32, u64), changes: &[Inflight]) -> bool {
    if changes.len() > MAX_INFLIGHT_PER_BUCKET {
        return false;
    }
    // Basis vectors with the set of changes each is made of, by
    // descending leading bit; combinations of changes that XOR to zero.
    let mut basis: Vec<(u64, u64)> = Vec::new();
    let mut null: Vec<u64> = Vec::new();
    for (i, c) in changes.iter().enumerate() {
        let (mut v, mut m) = (c.before.unwrap_or(0) ^ c.after.unwrap_or(0), 1u64 << i);
        for &(b, bm) in &basis {
            if v ^ b < v {
                v ^= b;
                m ^= bm;
            }
        }
        if v == 0 {
            null.push(m);
        } else {
            let at = basis.partition_point(|(b, _)| *b > v);
            basis.insert(at, (v, m));
        }
    }
    let (mut t, mut m) = (ours.1 ^ theirs.1, 0u64);
    for &(b, bm) in &basis {
        if t ^ b < t {
            t ^= b;
            m ^= bm;
        }
    }
    if t != 0 || null.len() > 8 {
        return false;
    }
    let want = i64::from(theirs.0) - i64::from(ours.0);
    let count = |mask: u64| -> i64 {
        changes
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, c)| c.before.is_some() as i64 - c.after.is_some() as i64)
            .sum()
    };
    (0u32..1 << null.len()).any(|pick| {
        let mask = null
            .iter()
            .enumerate()
            .filter(|(j, _)| pick & (1 << j) != 0)
            .fold(m, |acc, (_, n)| acc ^ n);
        count(mask) == want
    })
}

/// A user's device records from a lookup, kept until then.
type Cached = (Vec<Rc<[u8]>>, Millis);

/// How finely to split a digest of `records` records: about 16 records
/// per part, from one part (a few bytes) to [`DIGEST_BUCKETS`].
fn digest_parts(records: u32) -> u8 {
    (records / 16)
        .next_power_of_two()
        .clamp(1, u32::from(DIGEST_BUCKETS)) as u8
}

/// Add (`add`) or remove one claim in the per-(home, bucket) sums.
fn claim_sum(sums: &mut HashMap<(u64, u8), (u32, u64)>, home: u64, key: u64, seq: u64, add: bool) {
    let k = (home, digest_bucket(key));
    let e = sums.entry(k).or_insert((0, 0));
    e.0 = if add {
        e.0.saturating_add(1)
    } else {
        e.0.saturating_sub(1)
    };
    e.1 ^= claim_hash(key, seq);
    if e.0 == 0 && e.1 == 0 {
        sums.remove(&k);
    }
}

pub struct SupernodeCore {
    authority: [u8; 32],
    pub me: u64,
    my_addr: SocketAddr,
    cfg: SupernodeConfig,
    members: Membership,
    clients: BTreeMap<SocketAddr, Attached>,
    /// The attached clients by record name ([`record_name`]; a device
    /// attached from two addresses at once, e.g. restarted before its old
    /// attachment timed out, has both): an owner's `Claimed` page is
    /// checked name by name, not against every client.
    by_record: HashMap<String, Vec<SocketAddr>>,
    /// Next digest round (home side; node timeline, as every timer here).
    next_digest_at: Millis,
    /// Owners sent a digest and not answered yet.
    digests_out: BTreeMap<u64, DigestOut>,
    /// Unclaims sent lately (sent at, wall clock; owner, bucket, claim
    /// hash): not acknowledged, so a digest sent soon after may cross
    /// one. (The wall clock: revocations detach clients outside the
    /// node's timeline.)
    recent_unclaims: VecDeque<(UnixMillis, u64, u8, u64)>,
    /// Recompute attached clients' owners at this time (after an owner
    /// timed out or membership changed), pushing to new owners.
    home_rebalance_at: Option<Millis>,
    /// Held records by record name ([`record_name`]): one per device,
    /// at most [`MAX_DEVICES`] per user.
    records: BTreeMap<String, Held>,
    /// Owner side: per (home, bucket), the count and XOR of claim hashes
    /// of the records that home claimed here. Entries go when their home
    /// goes down, when a record is dropped, or on `Unclaim`.
    claim_sums: HashMap<(u64, u8), (u32, u64)>,
    /// Users' device records from lookups answered lately (kept up to
    /// date by owners' notifications), kept until then.
    cache: BTreeMap<String, Cached>,
    queries: BTreeMap<u32, Query>,
    /// (deadline, query, owner asked).
    query_deadlines: BinaryHeap<Reverse<(Millis, u32, u64)>>,
    next_qid: u32,
    stores: BTreeMap<(u64, String), PendingStore>,
    /// (deadline, owner, username).
    store_deadlines: BinaryHeap<Reverse<(Millis, u64, String)>>,
    /// Members skipped until then (timed out lately).
    unresponsive: BTreeMap<u64, Millis>,
    /// Certificates already verified (by signature), to not verify the
    /// same one again for every refresh, with their `not_after` (wall
    /// clock).
    verified_certs: HashMap<[u8; 32], UnixSecs>,
    /// Supernodes watching records we own, until then.
    watchers: BTreeMap<String, Vec<(SocketAddr, Millis)>>,
    /// Our clients' watches, until then.
    client_watches: BTreeMap<String, Vec<(SocketAddr, Millis)>>,
    /// Lookups per source across its clients (`lookups_per_address`).
    lookups_by_source: RateTable<SourceKey>,
    /// Watches held per source across its clients (recounted at each
    /// sweep), against `max_watches_per_address`.
    watches_by_source: HashMap<SourceKey, usize>,
    /// When a watch for each name was last sent to its owners.
    watch_sent: BTreeMap<String, Millis>,
    bootstrap: Vec<SocketAddr>,
    joined: bool,
    next_join_at: Millis,
    next_sweep_at: Millis,
    rebalance_at: Option<Millis>,
    out: Vec<(SocketAddr, Vec<u8>)>,
    events: VecDeque<SupernodeEvent>,
    stats: SupernodeStats,
    env: envelopes::EnvState,
    env_stats: EnvelopeStats,
    /// The authority's newest revocation list: whom to refuse.
    revoked: Revoked,
    /// The wall clock as the entry point being run was given it: records,
    /// envelopes, revocation lists and relay credentials are judged at it
    /// (timers use `now`).
    unix: UnixMillis,
}

impl std::fmt::Debug for SupernodeCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupernodeCore")
            .field("me", &format_args!("{:016x}", self.me))
            .field("addr", &self.my_addr)
            .field("clients", &self.clients.len())
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

/// Whether member `id` may be asked at `now`: it has not timed out within
/// `unresponsive_ms` (a supernode's own view, apart from the membership).
fn responsive(unresponsive: &BTreeMap<u64, Millis>, id: u64, now: Millis) -> bool {
    unresponsive.get(&id).is_none_or(|until| *until <= now)
}

/// Distance from `key` to `id` going up the ring (wrapping).
fn ring_dist(key: u64, id: u64) -> u64 {
    id.wrapping_sub(key)
}

impl SupernodeCore {
    /// `cert` is this supernode's own certificate (role supernode);
    /// `incarnation` must grow across restarts (e.g. seconds since epoch).
    pub fn new(
        authority: [u8; 32],
        cert: &Certificate,
        my_addr: SocketAddr,
        bootstrap: Vec<SocketAddr>,
        cfg: SupernodeConfig,
        incarnation: u32,
        now: Millis,
    ) -> Self {
        let me = node_id(&cert.ed25519);
        let bootstrap: Vec<SocketAddr> = bootstrap.into_iter().filter(|a| *a != my_addr).collect();
        let check_interval = cfg.check_interval_ms;
        SupernodeCore {
            authority,
            me,
            my_addr,
            members: Membership::new(me, my_addr, incarnation, cfg.membership.clone(), now),
            lookups_by_source: RateTable::new(cfg.lookups_per_address, 65_536),
            watches_by_source: HashMap::new(),
            cfg,
            next_digest_at: now + check_interval,
            digests_out: BTreeMap::new(),
            recent_unclaims: VecDeque::new(),
            home_rebalance_at: None,
            clients: BTreeMap::new(),
            by_record: HashMap::new(),
            records: BTreeMap::new(),
            claim_sums: HashMap::new(),
            cache: BTreeMap::new(),
            queries: BTreeMap::new(),
            query_deadlines: BinaryHeap::new(),
            next_qid: 1,
            stores: BTreeMap::new(),
            store_deadlines: BinaryHeap::new(),
            unresponsive: BTreeMap::new(),
            verified_certs: HashMap::new(),
            watchers: BTreeMap::new(),
            client_watches: BTreeMap::new(),
            watch_sent: BTreeMap::new(),
            joined: bootstrap.is_empty(),
            bootstrap,
            next_join_at: now,
            next_sweep_at: now + 1000,
            rebalance_at: None,
            revoked: Revoked::default(),
            out: Vec::new(),
            events: VecDeque::new(),
            stats: SupernodeStats::default(),
            unix: UnixMillis::ZERO,
            env: Default::default(),
            env_stats: EnvelopeStats::default(),
        }
    }

    /// Start with all of `members` known as alive, as if learned by
    /// gossip: for simulations that begin from a converged overlay (one
    /// pass, tightly packed; see [`Membership::seed`]).
    pub fn seed_members(
        &mut self,
        now: Millis,
        members: impl IntoIterator<Item = (u64, SocketAddr)>,
    ) {
        self.members.seed(now, members);
        self.members.take_changes();
        self.joined = true;
    }

    /// Start with `id` at `addr` already known as alive, as if learned by
    /// gossip: for simulations that begin from a converged overlay.
    pub fn seed_member(&mut self, now: Millis, id: u64, addr: SocketAddr) {
        use super::msg::{MemberState, Update};
        self.members.apply(
            now,
            Update {
                id,
                addr,
                incarnation: 0,
                state: MemberState::Alive,
            },
        );
        self.members.take_changes();
        // Everyone starts converged: nothing to gossip about.
        self.members.clear_gossip();
        self.joined = true;
    }

    pub fn stats(&self) -> &SupernodeStats {
        &self.stats
    }

    pub fn membership_stats(&self) -> &super::membership::MembershipStats {
        &self.members.stats
    }

    pub fn membership(&self) -> &Membership {
        &self.members
    }

    /// Whether this supernode skips member `id` at `now` because it timed
    /// out recently (its own view, apart from the membership's).
    pub fn skips_unresponsive(&self, id: u64, now: Millis) -> bool {
        !responsive(&self.unresponsive, id, now)
    }

    /// Whether this supernode holds a record for `username` (of any of
    /// their devices), and the newest seq.
    pub fn holds(&self, username: &str) -> Option<u64> {
        self.records
            .range(user_range(username))
            .map(|(_, h)| h.seq)
            .max()
    }

    /// How many device records of `username` this supernode holds.
    pub fn device_records(&self, username: &str) -> usize {
        self.records.range(user_range(username)).count()
    }

    /// The unexpired records of `username`'s devices held here.
    fn user_records(&self, username: &str) -> Vec<Rc<[u8]>> {
        let secs = self.unix.secs();
        self.records
            .range(user_range(username))
            .filter(|(_, h)| h.expires_at > secs)
            .map(|(_, h)| h.bytes.clone())
            .collect()
    }

    /// A client's link moved from `from` to `to` on traffic it
    /// authenticated there (the client roamed to another network): its
    /// attachment, the watches it holds and the envelopes for it move
    /// with it, so it need not attach again (a Redirect cycle of seconds,
    /// in which nothing reaches it). Nothing moves onto an address that
    /// has an attachment of its own.
    pub fn client_roamed(&mut self, now: Millis, from: SocketAddr, to: SocketAddr) {
        if self.clients.contains_key(&to) {
            return;
        }
        let Some(mut c) = self.remove_client(&from) else {
            return;
        };
        c.last_seen = now;
        let name = c.username.clone();
        self.insert_client(to, c);
        self.env_client_gone(from, &name);
        self.env_client_attached(to, &name);
        for v in self
            .watchers
            .values_mut()
            .chain(self.client_watches.values_mut())
        {
            for (a, _) in v.iter_mut().filter(|(a, _)| *a == from) {
                *a = to;
            }
        }
        // Its record stays with its owners: the next digest round checks
        // it as for any attached client.
        self.stats.clients_roamed += 1;
        tracing::debug!(%from, %to, user = %name, "an attached client roamed");
    }

    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    pub fn addr(&self) -> SocketAddr {
        self.my_addr
    }

    /// Approximate heap bytes held per stored record and per attached
    /// client, for the memory benchmark.
    pub fn memory_estimate(&self) -> (usize, usize) {
        let rec: usize = self
            .records
            .iter()
            .map(|(k, h)| {
                k.len()
                    + h.bytes.len()
                    + h.pushed_to.len() * 8
                    + h.claims.len() * 16
                    + std::mem::size_of::<Held>()
                    + 32
            })
            .sum();
        let cl: usize = self
            .clients
            .values()
            .map(|c| {
                c.username.len()
                    + c.record.as_ref().map_or(0, |r| r.len())
                    + c.owners.len() * 8
                    + std::mem::size_of::<Attached>()
                    + 48
            })
            .sum();
        (rec, cl)
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop().map(|(dst, bytes)| {
            self.stats.bytes_sent += bytes.len() as u64;
            Transmit { dst, bytes }
        })
    }

    pub fn drain_transmits(&mut self) -> impl Iterator<Item = Transmit> + '_ {
        let bytes: u64 = self.out.iter().map(|(_, b)| b.len() as u64).sum();
        self.stats.bytes_sent += bytes;
        self.out
            .drain(..)
            .map(|(dst, bytes)| Transmit { dst, bytes })
    }

    pub fn poll_event(&mut self) -> Option<SupernodeEvent> {
        self.events.pop_front()
    }

    fn send(&mut self, to: SocketAddr, m: &Msg<'_>) {
        let b = m.encode();
        if matches!(
            m,
            Msg::Store { .. }
                | Msg::HomeStore { .. }
                | Msg::Query { .. }
                | Msg::QueryReply { .. }
                | Msg::StoreAck { .. }
                | Msg::Check { .. }
                | Msg::Digest { .. }
                | Msg::DigestAck { .. }
                | Msg::Claimed { .. }
                | Msg::Unclaim { .. }
                | Msg::ClaimsAsk { .. }
                | Msg::Refresh { .. }
                | Msg::Notify { .. }
                | Msg::Watch { .. }
        ) {
            self.stats.directory_bytes_sent += b.len() as u64;
        }
        self.out.push((to, b));
    }

    /// First `n` responsive owners of `key`, in ring order, then up to
    /// `extra` more successors.
    fn owners(&self, key: u64, n: usize, now: Millis) -> Vec<(u64, SocketAddr)> {
        self.members
            .ring_from(key)
            .filter(|(id, _)| responsive(&self.unresponsive, *id, now))
            .take(n)
            .collect()
    }

    fn mark_unresponsive(&mut self, now: Millis, id: u64) {
        if id != self.me {
            self.unresponsive.insert(id, now + self.cfg.unresponsive_ms);
            self.members.hint_unresponsive(now, id);
        }
    }

    fn is_owner(&self, key: u64, now: Millis) -> bool {
        self.owners(key, self.cfg.replicas, now)
            .iter()
            .any(|(id, _)| *id == self.me)
    }

    /// Whether the revocation list names `cert`'s device or account: its
    /// messages are dropped (and the driver closes its session).
    pub fn refuses(&self, cert: &Certificate) -> bool {
        self.revoked.refuses(&cert.username, &cert.ed25519)
    }

    /// Take the authority's signed revocation list (encoded): verified
    /// against the pinned key, ignored unless newer than the one held.
    /// Attached clients it names are detached (a `ClientDetached` event
    /// each, on which the driver closes the session) and records it names
    /// are dropped. Returns how many clients were detached.
    pub fn set_revocations(
        &mut self,
        unix: UnixMillis,
        bytes: &[u8],
    ) -> Result<usize, RevocationError> {
        self.unix = unix;
        let taken = RevocationList::decode(bytes)
            .map_err(RevocationError::from)
            .and_then(|l| {
                l.verify(&self.authority, self.unix.secs())?;
                self.revoked.update(&l)
            });
        if let Err(e) = taken {
            self.stats.revocation_lists_rejected += 1;
            tracing::warn!("revocation list refused: {e}");
            return Err(e);
        }
        self.stats.revocation_lists += 1;
        let gone: Vec<SocketAddr> = self
            .clients
            .iter()
            .filter(|(_, c)| self.revoked.refuses(&c.username, &c.device))
            .map(|(a, _)| *a)
            .collect();
        for a in &gone {
            if let Some(c) = self.remove_client(a) {
                self.detach_revoked(*a, c);
            }
        }
        let revoked = &self.revoked;
        let sums = &mut self.claim_sums;
        let before = self.records.len();
        self.records.retain(|name, h| {
            let keep = !revoked.refuses(name_user(name), &h.device);
            if !keep {
                for &(home, seq) in &h.claims {
                    claim_sum(sums, home, h.key, seq, false);
                }
            }
            keep
        });
        self.stats.records_rejected_revoked += (before - self.records.len()) as u64;
        Ok(gone.len())
    }

    fn detach_revoked(&mut self, addr: SocketAddr, c: Attached) {
        self.stats.revoked_detached += 1;
        self.unclaim(&c);
        tracing::info!(%addr, user = %c.username, "client detached: revoked device or disabled account");
        self.env_client_gone(addr, &c.username);
        self.events.push_back(SupernodeEvent::ClientDetached {
            addr,
            username: c.username,
        });
    }

    /// Handle a message from `from`, whose certificate the link verified.
    /// A message from `from` (whose link certificate is `peer`) at `now`;
    /// records, envelopes and credentials are judged at `unix`.
    pub fn handle_message(
        &mut self,
        now: Millis,
        unix: UnixMillis,
        from: SocketAddr,
        peer: &Certificate,
        bytes: &[u8],
        rng: &mut dyn RngCore,
    ) {
        self.unix = unix;
        if self.refuses(peer) {
            self.stats.revoked_refused += 1;
            if let Some(c) = self.remove_client(&from) {
                self.detach_revoked(from, c);
            }
            return;
        }
        let Ok(msg) = Msg::decode(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        let is_sn = peer.role == Role::Supernode;
        // Membership and directory traffic is for supernodes only.
        let supernode_only = matches!(
            msg,
            Msg::Ping { .. }
                | Msg::Ack { .. }
                | Msg::PingReq { .. }
                | Msg::Join
                | Msg::SyncReq { .. }
                | Msg::SyncPage { .. }
                | Msg::Store { .. }
                | Msg::HomeStore { .. }
                | Msg::StoreAck { .. }
                | Msg::Check { .. }
                | Msg::Digest { .. }
                | Msg::DigestAck { .. }
                | Msg::Claimed { .. }
                | Msg::Unclaim { .. }
                | Msg::ClaimsAsk { .. }
                | Msg::Refresh { .. }
                | Msg::Query { .. }
                | Msg::QueryReply { .. }
                | Msg::Watch { .. }
                | Msg::Notify { .. }
                | Msg::EnvForward { .. }
                | Msg::EnvForwardResult { .. }
                | Msg::EnvStore { .. }
                | Msg::EnvStoreAck { .. }
        );
        if supernode_only && !is_sn {
            self.stats.not_supernode += 1;
            return;
        }
        match msg {
            Msg::Ping { .. }
            | Msg::Ack { .. }
            | Msg::PingReq { .. }
            | Msg::Join
            | Msg::SyncReq { .. }
            | Msg::SyncPage { .. } => {
                let id = node_id(&peer.ed25519);
                self.unresponsive.remove(&id);
                if matches!(msg, Msg::SyncPage { .. }) && !self.joined {
                    self.joined = true;
                    self.events.push_back(SupernodeEvent::Joined);
                }
                let mut out = std::mem::take(&mut self.out);
                self.members.handle(now, from, id, msg, &mut out);
                self.out = out;
                self.after_membership(now);
            }
            Msg::Store { record } => {
                self.on_store(now, from, None, record);
            }
            Msg::HomeStore { record } => {
                let id = node_id(&peer.ed25519);
                self.on_store(now, from, Some(id), record);
            }
            Msg::Digest { parts, buckets } => {
                let home = node_id(&peer.ed25519);
                self.unresponsive.remove(&home);
                // Answer with ours where it differs (nothing, usually).
                let theirs = |b: u8| {
                    buckets
                        .iter()
                        .find(|x| x.bucket == b)
                        .map_or((0, 0), |x| (x.count, x.hash))
                };
                let mut ours = [(0u32, 0u64); DIGEST_BUCKETS as usize];
                for fine in 0..DIGEST_BUCKETS {
                    if let Some(&(count, hash)) = self.claim_sums.get(&(home, fine)) {
                        let e = &mut ours[(fine % parts) as usize];
                        e.0 = e.0.wrapping_add(count);
                        e.1 ^= hash;
                    }
                }
                let differ: Vec<DigestBucket> = (0..parts)
                    .filter_map(|bucket| {
                        let (count, hash) = ours[bucket as usize];
                        ((count, hash) != theirs(bucket)).then_some(DigestBucket {
                            bucket,
                            count,
                            hash,
                        })
                    })
                    .collect();
                self.send(
                    from,
                    &Msg::DigestAck {
                        parts,
                        buckets: differ,
                    },
                );
            }
            Msg::ClaimsAsk { parts, buckets } => {
                // The names behind buckets the home found different, so
                // it can unclaim what it no longer has (in pages; each
                // page stands alone).
                let home = node_id(&peer.ed25519);
                let names: Vec<&str> = self
                    .records
                    .iter()
                    .filter(|(_, h)| {
                        buckets.contains(&(digest_bucket(h.key) % parts))
                            && h.claims.iter().any(|(id, _)| *id == home)
                    })
                    .map(|(n, _)| n.as_str())
                    .collect();
                let pages: Vec<Vec<u8>> = names
                    .chunks(MAX_CLAIMED)
                    .map(|page| {
                        Msg::Claimed {
                            names: page.to_vec(),
                        }
                        .encode()
                    })
                    .collect();
                for b in pages {
                    self.stats.directory_bytes_sent += b.len() as u64;
                    self.out.push((from, b));
                }
            }
            Msg::Refresh {
                username,
                timing,
                signature,
            } => {
                let home = node_id(&peer.ed25519);
                let rebuilt = self
                    .records
                    .get(username)
                    .and_then(|h| super::record::with_timing(&h.bytes, &timing, &signature));
                match rebuilt {
                    Some(record) => self.on_store(now, from, Some(home), &record),
                    None => {
                        // We lack it: the home sends it whole.
                        self.stats.refreshes_unapplied += 1;
                        self.send(from, &Msg::StoreAck { username, seq: 0 });
                    }
                }
            }
            Msg::DigestAck { parts, buckets } => {
                let owner = node_id(&peer.ed25519);
                self.unresponsive.remove(&owner);
                self.on_digest_ack(now, from, owner, parts, &buckets);
            }
            Msg::Claimed { names } => {
                let owner = node_id(&peer.ed25519);
                self.on_claimed(now, from, owner, &names);
            }
            Msg::Unclaim { username } => {
                let home = node_id(&peer.ed25519);
                if let Some(h) = self.records.get_mut(username)
                    && let Some(i) = h.claims.iter().position(|(id, _)| *id == home)
                {
                    let (_, seq) = h.claims.swap_remove(i);
                    claim_sum(&mut self.claim_sums, home, h.key, seq, false);
                }
            }
            Msg::StoreAck { username, seq } => {
                let id = node_id(&peer.ed25519);
                self.unresponsive.remove(&id);
                let key = (id, username.to_owned());
                let Some(p) = self.stores.get_mut(&key) else {
                    return;
                };
                if p.seq <= seq {
                    self.stores.remove(&key);
                } else {
                    // The owner lacks it (answer to a Check): send it whole.
                    let record = p.record.clone();
                    let claim = p.claim;
                    p.deadline = now + self.cfg.store_timeout_ms;
                    let deadline = p.deadline;
                    self.store_deadlines
                        .push(Reverse((deadline, id, username.to_owned())));
                    if claim {
                        self.send(from, &Msg::HomeStore { record: &record });
                    } else {
                        self.send(from, &Msg::Store { record: &record });
                    }
                }
            }
            Msg::Check { username, seq } => {
                // Checks come from the record's home (digest repair): it
                // claims the record at `seq`.
                let home = node_id(&peer.ed25519);
                if let Some(h) = self.records.get_mut(username) {
                    let key = h.key;
                    match h.claims.iter_mut().find(|(id, _)| *id == home) {
                        Some(c) => {
                            claim_sum(&mut self.claim_sums, home, key, c.1, false);
                            c.1 = seq;
                        }
                        None => h.claims.push((home, seq)),
                    }
                    claim_sum(&mut self.claim_sums, home, key, seq, true);
                }
                let held = self.records.get(username).map_or(0, |h| h.seq);
                self.send(
                    from,
                    &Msg::StoreAck {
                        username,
                        seq: held,
                    },
                );
            }
            Msg::Query { qid, username } => {
                self.stats.queries_answered += 1;
                let recs = self.user_records(username);
                let found = Found::of(recs.iter().map(|b| &b[..]).collect());
                let m = Msg::QueryReply { qid, found };
                let b = m.encode();
                self.stats.directory_bytes_sent += b.len() as u64;
                self.out.push((from, b));
            }
            Msg::QueryReply { qid, found } => {
                let id = node_id(&peer.ed25519);
                self.unresponsive.remove(&id);
                self.on_query_reply(now, id, qid, found);
            }
            Msg::Watch { username } => {
                let exp = now + self.cfg.watch_ttl_ms;
                let list = self.watchers.entry(username.to_owned()).or_default();
                if let Some(e) = list.iter_mut().find(|(a, _)| *a == from) {
                    e.1 = exp;
                } else if list.len() < 1024 {
                    list.push((from, exp));
                }
            }
            Msg::Notify { record } => {
                self.on_notify(now, record);
            }
            Msg::EnvSend { envelope } => self.env_on_send(now, from, envelope),
            Msg::EnvForward { envelope } => self.env_on_forward(now, from, envelope),
            Msg::EnvForwardResult { id, result } => {
                self.env_on_forward_result(now, from, id, result)
            }
            Msg::EnvAck { id, ok } => {
                if let Some(c) = self.clients.get_mut(&from) {
                    c.last_seen = now;
                    self.env_on_ack(now, from, id, ok);
                } else {
                    self.stats.not_attached += 1;
                }
            }
            Msg::EnvStore { envelope, sender } => {
                let ok = self.env_on_store(now, envelope, sender);
                if let Ok(s) = super::envelope::Sealed::decode(envelope) {
                    let id = s.header.id;
                    self.send(from, &Msg::EnvStoreAck { id, ok });
                }
            }
            Msg::EnvStoreAck { id, ok } => self.env_on_store_ack(from, id, ok),
            Msg::Attach { primary: _ } => self.on_attach(now, from, peer, rng),
            Msg::Detach => {
                if let Some(c) = self.remove_client(&from) {
                    self.unclaim(&c);
                    self.env_client_gone(from, &c.username);
                    self.events.push_back(SupernodeEvent::ClientDetached {
                        addr: from,
                        username: c.username,
                    });
                }
            }
            Msg::Keepalive { seq } => {
                if let Some(c) = self.clients.get_mut(&from) {
                    c.last_seen = now;
                    self.send(from, &Msg::KeepaliveAck { seq });
                } else {
                    self.stats.not_attached += 1;
                    // Tell it to attach again: an empty redirect to us.
                    self.send(
                        from,
                        &Msg::Redirect {
                            supernodes: vec![self.my_addr],
                        },
                    );
                }
            }
            Msg::Publish { record } => self.on_publish(now, from, peer, record),
            Msg::PublishWill { record } => self.on_will(now, from, peer, record),
            Msg::Lookup { qid, username } => {
                let rate = self.cfg.lookups_per_client;
                let Some(c) = self.clients.get_mut(&from) else {
                    self.stats.not_attached += 1;
                    return;
                };
                if !c.lookups.take(rate, now)
                    || !self.lookups_by_source.allow(SourceKey::of(from.ip()), now)
                {
                    self.stats.lookups_rate_limited += 1;
                    if log_worthy(self.stats.lookups_rate_limited) {
                        tracing::warn!(%from, count = self.stats.lookups_rate_limited, "lookup dropped: client or address over its rate");
                    }
                    return;
                }
                self.stats.lookups += 1;
                self.start_query(now, Origin::Client { addr: from, qid }, username);
            }
            Msg::WatchReq { username } => {
                if !self.clients.contains_key(&from) {
                    self.stats.not_attached += 1;
                    return;
                }
                self.on_watch_req(now, from, username);
            }
            Msg::RelayCredentialsReq { qid } => self.on_relay_request(from, peer, qid),
            Msg::AttachOk { .. }
            | Msg::RelayCredentials { .. }
            | Msg::RelayRefused { .. }
            | Msg::Redirect { .. }
            | Msg::KeepaliveAck { .. }
            | Msg::PublishAck { .. }
            | Msg::PublishRejected { .. }
            | Msg::LookupReply { .. }
            | Msg::PresenceUpdate { .. }
            | Msg::EnvResult { .. }
            | Msg::EnvDeliver { .. } => {
                self.stats.malformed += 1;
            }
        }
    }

    /// Relay credentials go to attached clients only: their certificate
    /// was verified when the link came up, and it names the user.
    fn on_relay_request(&mut self, from: SocketAddr, peer: &Certificate, qid: u32) {
        let reason = if !self.clients.contains_key(&from) {
            self.stats.not_attached += 1;
            "not attached"
        } else if let Some(g) = &self.cfg.relay {
            let c = g.issue(&peer.username, self.unix.secs().get(), peer.not_after);
            let relays = g.relays.clone();
            let realm = g.realm.clone();
            self.stats.relay_credentials_issued += 1;
            self.send(
                from,
                &Msg::RelayCredentials {
                    qid,
                    username: &c.username,
                    password: &c.password,
                    realm: &realm,
                    expires: c.expires,
                    relays,
                },
            );
            return;
        } else {
            "no relay in this supernode group"
        };
        self.send(from, &Msg::RelayRefused { qid, reason });
    }

    fn on_attach(
        &mut self,
        now: Millis,
        from: SocketAddr,
        peer: &Certificate,
        rng: &mut dyn RngCore,
    ) {
        if let Some(c) = self.clients.get_mut(&from) {
            c.last_seen = now;
        } else if self.clients.len() >= self.cfg.max_clients {
            self.stats.clients_refused += 1;
            self.events
                .push_back(SupernodeEvent::ClientRefused { addr: from });
            let others = self.some_supernodes(rng, 8);
            self.send(from, &Msg::Redirect { supernodes: others });
            return;
        } else {
            self.insert_client(
                from,
                Attached {
                    username: peer.username.clone(),
                    device: peer.ed25519,
                    x25519: peer.x25519,
                    record_name: record_name(&peer.username, &peer.ed25519),
                    last_seen: now,
                    record: None,
                    record_seq: 0,
                    online_until: 0,
                    fresh: None,
                    primary: false,
                    record_key: 0,
                    record_expires: UnixSecs::ZERO,
                    owners: Vec::new(),
                    lookups: Bucket::full(self.cfg.lookups_per_client, now),
                    watches: 0,
                    will: None,
                },
            );
            self.stats.peak_clients = self.stats.peak_clients.max(self.clients.len() as u64);
            self.env_client_attached(from, &peer.username);
            self.events.push_back(SupernodeEvent::ClientAttached {
                addr: from,
                username: peer.username.clone(),
            });
        }
        let others = self.some_supernodes(rng, 8);
        self.send(
            from,
            &Msg::AttachOk {
                observed: from,
                supernodes: others,
            },
        );
    }

    /// Other supernodes for the link's BUSY replies (a random few).
    pub fn busy_hint(&self, rng: &mut dyn RngCore) -> Vec<SocketAddr> {
        let me = self.addr();
        let mut v = self.some_supernodes(rng, crate::wire::addr::MAX_ADDRS + 1);
        v.retain(|a| *a != me);
        v.truncate(crate::wire::addr::MAX_ADDRS);
        v
    }

    fn some_supernodes(&self, rng: &mut dyn RngCore, n: usize) -> Vec<SocketAddr> {
        self.members.random_up(rng, n)
    }

    /// Verify a record for storing; `Err` has been counted.
    fn check_record(&mut self, bytes: &[u8]) -> Result<PresenceRecord, ()> {
        let rec = match PresenceRecord::decode(bytes) {
            Ok(r) => r,
            Err(_) => {
                self.stats.malformed += 1;
                return Err(());
            }
        };
        if self.refuses(&rec.cert) {
            self.stats.records_rejected_revoked += 1;
            return Err(());
        }
        let digest = super::record::cert_digest(&rec.cert);
        let cached = self.verified_certs.contains_key(&digest);
        let checked = if cached {
            Ok(())
        } else {
            rec.verify_certificate(&self.authority)
        };
        if checked.is_ok() && !cached && self.verified_certs.len() < 1_000_000 {
            self.verified_certs
                .insert(digest, UnixSecs(rec.cert.not_after));
        }
        match checked.and_then(|_| rec.verify_signed(self.unix.secs())) {
            Ok(()) => Ok(rec),
            Err(super::RecordError::Expired | super::RecordError::CertificateNotValidNow(_)) => {
                self.stats.records_rejected_expired += 1;
                Err(())
            }
            Err(
                e
                @ (super::RecordError::FromTheFuture { .. } | super::RecordError::SeqAhead { .. }),
            ) => {
                self.stats.records_rejected_ahead += 1;
                tracing::info!(user = %rec.cert.username, "record refused: {e}");
                Err(())
            }
            Err(_) => {
                self.stats.records_rejected_forged += 1;
                Err(())
            }
        }
    }

    fn on_publish(&mut self, now: Millis, from: SocketAddr, peer: &Certificate, bytes: &[u8]) {
        let Some(c) = self.clients.get(&from) else {
            self.stats.not_attached += 1;
            return;
        };
        let have = c.latest_seq();
        let Ok(rec) = self.check_record(bytes) else {
            self.send(
                from,
                &Msg::PublishRejected {
                    seq: 0,
                    reason: "invalid record",
                },
            );
            return;
        };
        if rec.cert.ed25519 != peer.ed25519 {
            self.stats.records_rejected_wrong_user += 1;
            self.send(
                from,
                &Msg::PublishRejected {
                    seq: rec.seq,
                    reason: "record is not for this device",
                },
            );
            return;
        }
        if rec.seq <= have {
            self.stats.records_rejected_stale += 1;
            self.send(
                from,
                &Msg::PublishRejected {
                    seq: rec.seq,
                    reason: "stale sequence number",
                },
            );
            return;
        }
        let shared: Rc<[u8]> = Rc::from(bytes);
        self.send(from, &Msg::PublishAck { seq: rec.seq });
        let primary = self.lists_us_first(&rec);
        let secs = self.unix.secs().get();
        let Some(c) = self.clients.get_mut(&from) else {
            return;
        };
        c.last_seen = now;
        c.record_key = user_key(&rec.cert.username);
        if c.will.as_ref().is_some_and(|(_, s)| *s <= rec.seq) {
            c.will = None;
        }
        let delta = match &c.record {
            Some(old) if c.primary && primary => super::record::timing_delta(old, bytes),
            _ => None,
        };
        if delta.is_some() && c.online_until > secs + REFRESH_AHEAD_SECS {
            // The owners' copy still shows the device online for a while:
            // the home round pushes this one before it runs out.
            c.fresh = Some((shared, rec.seq));
            self.stats.refreshes_held += 1;
            return;
        }
        let prev = (
            std::mem::take(&mut c.owners),
            c.record.is_some().then_some(c.record_seq),
        );
        let was_primary = std::mem::replace(&mut c.primary, primary);
        c.record = Some(shared.clone());
        c.record_seq = rec.seq;
        c.record_expires = rec.valid_until();
        c.online_until = rec.online_until;
        c.fresh = None;
        let (name, key) = (c.record_name.clone(), c.record_key);
        if !primary {
            // The backup keeps it and claims nothing: what it claimed as
            // the primary is unclaimed.
            if was_primary && let Some(seq) = prev.1 {
                for id in prev.0 {
                    self.send_unclaim(id, &name, key, seq);
                }
            }
            return;
        }
        // Owners dropped since the last publish (membership moved on
        // while nobody looked) hear it at the next round: the claim stays
        // counted there until a digest repairs it.
        let owners = self.push_to_owners(
            now,
            &name,
            (shared, rec.seq),
            &[],
            Some(Claim {
                before: (&prev.0, prev.1),
                delta: delta.filter(|_| was_primary),
            }),
        );
        if delta.is_some() {
            self.stats.refreshes_sent += 1;
        }
        if let Some(c) = self.clients.get_mut(&from) {
            c.owners = owners;
        }
    }

    /// Whether `rec` lists this supernode first among its device's
    /// supernodes (it is the device's primary), or does not list it at
    /// all (then it pushes, as the only home it knows of).
    fn lists_us_first(&self, rec: &PresenceRecord) -> bool {
        let ours = |a: &SocketAddr| *a == self.my_addr || self.cfg.aliases.contains(a);
        match rec.supernodes.first() {
            Some(first) if ours(first) => true,
            _ => !rec.supernodes.iter().any(ours),
        }
    }

    /// Tell owner `id` that we no longer claim record `name` (at `seq`),
    /// remembering it for a while as a change that may be in flight.
    fn send_unclaim(&mut self, id: u64, name: &str, key: u64, seq: u64) {
        if id == self.me || !self.members.is_up(id) {
            return;
        }
        let Some(addr) = self.members.addr_of(id) else {
            return;
        };
        self.send(addr, &Msg::Unclaim { username: name });
        let (bucket, hash) = (digest_bucket(key), claim_hash(key, seq));
        self.recent_unclaims
            .push_back((self.unix, id, bucket, hash));
        if let Some(d) = self.digests_out.get_mut(&id) {
            d.inflight.push(Inflight {
                bucket,
                before: None,
                after: Some(hash),
            });
        }
    }

    /// Keep an attached client's offline will: verified, its own device's,
    /// saying offline, and newer than its published record.
    fn on_will(&mut self, now: Millis, from: SocketAddr, peer: &Certificate, bytes: &[u8]) {
        let Some(have) = self.clients.get(&from).map(Attached::latest_seq) else {
            self.stats.not_attached += 1;
            return;
        };
        let Ok(rec) = self.check_record(bytes) else {
            return;
        };
        if rec.cert.ed25519 != peer.ed25519 || rec.status != Status::Offline {
            self.stats.records_rejected_wrong_user += 1;
            return;
        }
        if rec.seq <= have {
            self.stats.records_rejected_stale += 1;
            return;
        }
        if let Some(c) = self.clients.get_mut(&from) {
            c.last_seen = now;
            c.will = Some((Rc::from(bytes), rec.seq));
        }
    }

    /// Send `record` (named `name`, see [`record_name`]) to its current
    /// owners, expecting acks; with `claim`, as the record's home
    /// (`HomeStore` or `Refresh`; the owners count it in this home's
    /// digest). Returns the owners' ids.
    fn push_to_owners(
        &mut self,
        now: Millis,
        name: &str,
        (record, seq): (Rc<[u8]>, u64),
        exclude: &[u64],
        claim: Option<Claim<'_>>,
    ) -> Vec<u64> {
        let key = user_key(name_user(name));
        let owners: Vec<(u64, SocketAddr)> = self
            .members
            .ring_from(key)
            .filter(|(id, _)| !exclude.contains(id) && responsive(&self.unresponsive, *id, now))
            .take(self.cfg.replicas)
            .collect();
        let ids = owners.iter().map(|(id, _)| *id).collect();
        for (id, addr) in owners {
            if id == self.me {
                self.store_local(now, &record);
                continue;
            }
            let (push, was) = match &claim {
                None => (Push::Store, ClaimWas::Unknown),
                Some(c) => match c.before {
                    (owners, Some(old)) if owners.contains(&id) => (
                        c.delta.map_or(Push::Home, |(t, sig)| Push::Refresh(t, sig)),
                        ClaimWas::Seq(old),
                    ),
                    _ => (Push::Home, ClaimWas::Absent),
                },
            };
            let out = Outgoing {
                username: name,
                key,
                record: &record,
                seq,
                push,
                was,
            };
            self.send_store(now, id, addr, out, exclude);
        }
        ids
    }

    /// Send one owner a record (whole, as a delta or a `Check` at its
    /// seq), expecting an ack within `store_timeout_ms`.
    fn send_store(
        &mut self,
        now: Millis,
        id: u64,
        addr: SocketAddr,
        o: Outgoing<'_>,
        exclude: &[u64],
    ) {
        let username = o.username;
        match o.push {
            Push::Check => self.send(
                addr,
                &Msg::Check {
                    username,
                    seq: o.seq,
                },
            ),
            Push::Home => self.send(addr, &Msg::HomeStore { record: o.record }),
            Push::Store => self.send(addr, &Msg::Store { record: o.record }),
            Push::Refresh(timing, signature) => self.send(
                addr,
                &Msg::Refresh {
                    username,
                    timing,
                    signature,
                },
            ),
        }
        // A digest to this owner still unanswered counted the claim as it
        // was: the owner may answer with it either way.
        if o.push != Push::Store
            && let Some(d) = self.digests_out.get_mut(&id)
        {
            let before = Some(claim_hash(o.key, o.seq));
            let after = match o.was {
                ClaimWas::Unknown => None,
                ClaimWas::Absent => Some(None),
                ClaimWas::Seq(s) => Some(Some(claim_hash(o.key, s))),
            };
            if let Some(after) = after {
                d.inflight.push(Inflight {
                    bucket: digest_bucket(o.key),
                    before,
                    after,
                });
            }
        }
        let deadline = now + self.cfg.store_timeout_ms;
        self.stores.insert(
            (id, username.to_owned()),
            PendingStore {
                owner: id,
                key: o.key,
                username: username.to_owned(),
                record: o.record.clone(),
                deadline,
                exclude: exclude.to_vec(),
                claim: o.push != Push::Store,
                seq: o.seq,
                was: o.was,
            },
        );
        self.store_deadlines
            .push(Reverse((deadline, id, username.to_owned())));
    }

    /// Store a verified-or-to-verify record as an owner. Returns whether
    /// it was new.
    fn store_local(&mut self, now: Millis, bytes: &Rc<[u8]>) -> bool {
        let Ok(rec) = PresenceRecord::decode(bytes) else {
            self.stats.malformed += 1;
            return false;
        };
        let name = rec.name();
        if let Some(h) = self.records.get(&name) {
            if rec.seq == h.seq {
                return false;
            }
            if rec.seq < h.seq {
                self.stats.records_rejected_stale += 1;
                return false;
            }
        }
        if self.check_record(bytes).is_err() {
            return false;
        }
        if !self.records.contains_key(&name) && !self.make_room(rec.username(), rec.seq) {
            return false;
        }
        let key = user_key(rec.username());
        self.stats.records_stored += 1;
        // Homes' claims name the seq each home holds: they stay.
        let claims = self
            .records
            .get_mut(&name)
            .map(|h| std::mem::take(&mut h.claims))
            .unwrap_or_default();
        self.records.insert(
            name,
            Held {
                bytes: bytes.clone(),
                device: rec.cert.ed25519,
                seq: rec.seq,
                expires_at: rec.valid_until(),
                key,
                pushed_to: Vec::new(),
                not_owner_since: None,
                claims,
            },
        );
        self.env_record_stored(now, rec.username());
        // Tell watching supernodes.
        if let Some(ws) = self.watchers.get(rec.username()) {
            let targets: Vec<SocketAddr> = ws
                .iter()
                .filter(|(_, e)| *e > now)
                .map(|(a, _)| *a)
                .collect();
            for t in targets {
                if t == self.my_addr {
                    self.on_notify(now, bytes);
                } else {
                    self.send(t, &Msg::Notify { record: bytes });
                }
            }
        }
        true
    }

    /// Room for a new device record of `username` numbered `seq`: at
    /// [`MAX_DEVICES`] records the oldest (lowest seq; devices number
    /// records by their clock) is dropped, or the new one refused when it
    /// is the oldest. Counted and logged.
    fn make_room(&mut self, username: &str, seq: u64) -> bool {
        let held: Vec<(String, u64)> = self
            .records
            .range(user_range(username))
            .map(|(n, h)| (n.clone(), h.seq))
            .collect();
        if held.len() < MAX_DEVICES {
            return true;
        }
        self.stats.records_over_device_cap += 1;
        if log_worthy(self.stats.records_over_device_cap) {
            tracing::info!(user = %username, count = self.stats.records_over_device_cap, "device records over the per-user cap: the oldest gives way");
        }
        let Some((oldest, oldest_seq)) = held.into_iter().min_by_key(|(_, s)| *s) else {
            return true;
        };
        if seq <= oldest_seq {
            return false;
        }
        if let Some(h) = self.records.remove(&oldest) {
            for &(home, seq) in &h.claims {
                claim_sum(&mut self.claim_sums, home, h.key, seq, false);
            }
        }
        true
    }

    /// A record pushed to us as an owner; `home`: by the record's home
    /// supernode, which counts it in its digests for us.
    fn on_store(&mut self, now: Millis, from: SocketAddr, home: Option<u64>, bytes: &[u8]) {
        let shared: Rc<[u8]> = Rc::from(bytes);
        let Ok(rec) = PresenceRecord::decode(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        self.store_local(now, &shared);
        let name = rec.name();
        if let Some(home) = home
            && let Some(h) = self.records.get_mut(&name)
        {
            let key = h.key;
            match h.claims.iter_mut().find(|(id, _)| *id == home) {
                Some(c) => {
                    claim_sum(&mut self.claim_sums, home, key, c.1, false);
                    c.1 = rec.seq;
                }
                None => h.claims.push((home, rec.seq)),
            }
            claim_sum(&mut self.claim_sums, home, key, rec.seq, true);
        }
        if let Some(h) = self.records.get(&name) {
            let seq = h.seq;
            self.send(
                from,
                &Msg::StoreAck {
                    username: &name,
                    seq,
                },
            );
        }
    }

    fn on_notify(&mut self, now: Millis, bytes: &[u8]) {
        let Ok(rec) = self.check_record(bytes) else {
            return;
        };
        // A notification names one device: it updates a user's cached
        // lookup answer, but is not one (other devices would be missing).
        if let Some((recs, until)) = self.cache.get_mut(rec.username()) {
            recs.retain(|b| {
                PresenceRecord::decode(b).is_ok_and(|r| r.cert.ed25519 != rec.cert.ed25519)
            });
            if recs.len() < MAX_DEVICES {
                recs.push(Rc::from(bytes));
            }
            *until = now + self.cfg.cache_ttl_ms;
        }
        if let Some(ws) = self.client_watches.get(rec.username()) {
            let targets: Vec<SocketAddr> = ws
                .iter()
                .filter(|(_, e)| *e > now)
                .map(|(a, _)| *a)
                .collect();
            for t in targets {
                self.send(t, &Msg::PresenceUpdate { record: bytes });
            }
        }
    }

    fn on_watch_req(&mut self, now: Millis, from: SocketAddr, username: &str) {
        let exp = now + self.cfg.watch_ttl_ms;
        let cap = self.cfg.max_watches_per_client;
        let source = SourceKey::of(from.ip());
        let by_source = self.watches_by_source.entry(source).or_insert(0);
        let list = self.client_watches.entry(username.to_owned()).or_default();
        if let Some(e) = list.iter_mut().find(|(a, _)| *a == from) {
            e.1 = exp;
        } else if list.len() < 4096
            && *by_source < self.cfg.max_watches_per_address
            && let Some(c) = self.clients.get_mut(&from)
            && c.watches < cap
        {
            c.watches += 1;
            *by_source += 1;
            list.push((from, exp));
        } else {
            if list.is_empty() {
                self.client_watches.remove(username);
            }
            self.stats.watches_refused += 1;
            if log_worthy(self.stats.watches_refused) {
                tracing::warn!(%from, count = self.stats.watches_refused, "watch refused: client or its address watches its share of names");
            }
            return;
        }
        let last = self
            .watch_sent
            .get(username)
            .copied()
            .unwrap_or(Millis::ZERO);
        if now.since(last) < self.cfg.watch_ttl_ms / 3 && last != Millis::ZERO {
            return;
        }
        self.watch_sent.insert(username.to_owned(), now);
        let owners = self.owners(user_key(username), self.cfg.replicas, now);
        for (id, addr) in owners {
            if id == self.me {
                let list = self.watchers.entry(username.to_owned()).or_default();
                list.retain(|(a, _)| *a != self.my_addr);
                list.push((self.my_addr, exp));
            } else {
                self.send(addr, &Msg::Watch { username });
            }
        }
    }

    fn start_query(&mut self, now: Millis, origin: Origin, username: &str) {
        let key = user_key(username);
        if self.is_owner(key, now) {
            let recs = self.user_records(username);
            if !recs.is_empty() {
                self.stats.lookups_found += 1;
                let found = Found::of(recs.iter().map(|b| &b[..]).collect());
                self.answer(now, now, origin, found);
                return;
            }
        }
        if let Some((recs, until)) = self.cache.get(username)
            && *until > now
            && !recs.is_empty()
        {
            let recs = recs.clone();
            self.stats.lookups_cached += 1;
            self.stats.lookups_found += 1;
            let found = Found::of(recs.iter().map(|b| &b[..]).collect());
            self.answer(now, now, origin, found);
            return;
        }
        let candidates: Vec<(u64, SocketAddr)> = self
            .owners(key, self.cfg.replicas + self.cfg.query_extra, now)
            .into_iter()
            .filter(|(id, _)| *id != self.me)
            .collect();
        let qid = self.next_qid;
        self.next_qid = self.next_qid.wrapping_add(1).max(1);
        let mut q = Query {
            origin,
            username: username.to_owned(),
            candidates,
            next: 0,
            outstanding: Vec::new(),
            not_found: 0,
            timeouts: 0,
            started: now,
            best: BTreeMap::new(),
        };
        if self.is_owner(key, now) {
            // We are an owner without the record: one "not found" vote.
            q.not_found = 1;
        }
        self.queries.insert(qid, q);
        self.advance_query(now, qid);
    }

    /// Keep `parallel_queries` owners asked at once; answer once every
    /// asked owner replied or timed out, with the newest record seen, or
    /// "not found" once enough responsive owners said so.
    fn advance_query(&mut self, now: Millis, qid: u32) {
        let replicas = self.cfg.replicas;
        let parallel = self.cfg.parallel_queries.max(1);
        let Some(q) = self.queries.get_mut(&qid) else {
            return;
        };
        if !q.best.is_empty() {
            if q.outstanding.is_empty() {
                let q = self.queries.remove(&qid).expect("present");
                // The newest devices, when owners together know of more.
                let mut recs: Vec<(u64, Rc<[u8]>)> = q.best.into_values().collect();
                recs.sort_by_key(|(seq, _)| Reverse(*seq));
                recs.truncate(MAX_DEVICES);
                let recs: Vec<Rc<[u8]>> = recs.into_iter().map(|(_, b)| b).collect();
                self.cache.insert(
                    q.username.clone(),
                    (recs.clone(), now + self.cfg.cache_ttl_ms),
                );
                self.stats.lookups_found += 1;
                let found = Found::of(recs.iter().map(|b| &b[..]).collect());
                self.answer(now, q.started, q.origin, found);
            }
            return;
        }
        if q.not_found < replicas
            && q.next >= q.candidates.len()
            && q.candidates.len() < self.cfg.query_max_asked
            && now < q.started + self.cfg.query_budget_ms
        {
            // Everyone asked so far timed out (or too few answered): walk
            // on past the last candidate, skipping members now known
            // unresponsive.
            let last = q.candidates.last().map(|(id, _)| *id);
            let key = user_key(&q.username);
            let asked: Vec<u64> = q.candidates.iter().map(|(id, _)| *id).collect();
            let room = self.cfg.query_max_asked - q.candidates.len();
            let more: Vec<(u64, SocketAddr)> = match last {
                Some(last) => self
                    .members
                    .ring_from(last.wrapping_add(1))
                    .take_while(|(id, _)| ring_dist(key, *id) > ring_dist(key, last))
                    .filter(|(id, _)| {
                        *id != self.me
                            && !asked.contains(id)
                            && responsive(&self.unresponsive, *id, now)
                    })
                    .take(room.min(parallel + q.timeouts))
                    .collect(),
                None => Vec::new(),
            };
            q.candidates.extend(more);
        }
        let exhausted = q.not_found >= replicas || q.next >= q.candidates.len();
        if exhausted {
            if q.outstanding.is_empty() {
                let q = self.queries.remove(&qid).expect("present");
                self.answer(now, q.started, q.origin, Found::NotFound);
            }
            return;
        }
        let mut sends = Vec::new();
        let parallel = parallel + q.timeouts.min(parallel);
        while q.outstanding.len() < parallel && q.next < q.candidates.len() {
            let (id, addr) = q.candidates[q.next];
            q.next += 1;
            let deadline = now + self.cfg.query_timeout_ms;
            q.outstanding.push((id, deadline));
            sends.push((id, addr, deadline));
        }
        let username = q.username.clone();
        for (id, addr, deadline) in sends {
            self.query_deadlines.push(Reverse((deadline, qid, id)));
            self.stats.queries_sent += 1;
            self.send(
                addr,
                &Msg::Query {
                    qid,
                    username: &username,
                },
            );
        }
    }

    fn on_query_reply(&mut self, now: Millis, from: u64, qid: u32, found: Found<'_>) {
        let Some(q) = self.queries.get_mut(&qid) else {
            return;
        };
        let Some(pos) = q.outstanding.iter().position(|(id, _)| *id == from) else {
            return;
        };
        q.outstanding.swap_remove(pos);
        let want = q.username.clone();
        match found {
            Found::NotFound => {
                if let Some(q) = self.queries.get_mut(&qid) {
                    q.not_found += 1;
                }
            }
            found => {
                // Each device's newest record among the owners' answers; a
                // bad record counts as not answered.
                for b in found.records() {
                    match self.check_record(b) {
                        Ok(rec) if rec.username() == want => {
                            let name = rec.name();
                            if let Some(q) = self.queries.get_mut(&qid)
                                && q.best.get(&name).is_none_or(|(seq, _)| rec.seq > *seq)
                            {
                                q.best.insert(name, (rec.seq, Rc::from(b)));
                            }
                        }
                        Ok(_) => self.stats.records_rejected_wrong_user += 1,
                        Err(()) => {}
                    }
                }
            }
        }
        self.advance_query(now, qid);
    }

    /// Answer a lookup asked at `started`.
    fn answer(&mut self, now: Millis, started: Millis, origin: Origin, found: Found<'_>) {
        match origin {
            Origin::Client { addr, qid } => {
                self.stats.lookup_latency.record(now.since(started));
                self.send(addr, &Msg::LookupReply { qid, found })
            }
            Origin::Envelope { client, id } => self.env_on_lookup(now, client, id, found),
        }
    }

    fn after_membership(&mut self, now: Millis) {
        let changes = self.members.take_changes();
        if changes.is_empty() {
            return;
        }
        for c in changes {
            match c {
                Change::Up(id) => {
                    self.unresponsive.remove(&id);
                    self.events.push_back(SupernodeEvent::MemberUp { id });
                }
                Change::Down(id) => {
                    if let Some(addr) = self.members.addr_of(id) {
                        self.events
                            .push_back(SupernodeEvent::MemberDown { id, addr });
                    }
                }
            }
        }
        if self.rebalance_at.is_none() {
            self.rebalance_at = Some(now + self.cfg.rebalance_delay_ms);
        }
        if self.home_rebalance_at.is_none() {
            self.home_rebalance_at = Some(now + self.cfg.rebalance_delay_ms);
        }
    }

    /// An owner's list of names it counts as ours in a differing bucket:
    /// unclaim those we do not (each name on its own, so pages and the
    /// `Check`s of the same repair may arrive in any order).
    /// Attach `c` at `addr` (and index it by record name).
    fn insert_client(&mut self, addr: SocketAddr, c: Attached) {
        let addrs = self.by_record.entry(c.record_name.clone()).or_default();
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
        if let Some(old) = self.clients.insert(addr, c) {
            self.unindex(addr, &old.record_name);
        }
    }

    /// Detach the client at `addr`, if any.
    fn remove_client(&mut self, addr: &SocketAddr) -> Option<Attached> {
        let c = self.clients.remove(addr)?;
        self.unindex(*addr, &c.record_name);
        Some(c)
    }

    fn unindex(&mut self, addr: SocketAddr, name: &str) {
        if self
            .clients
            .get(&addr)
            .is_some_and(|c| c.record_name == name)
        {
            return;
        }
        if let Some(addrs) = self.by_record.get_mut(name) {
            addrs.retain(|a| *a != addr);
            if addrs.is_empty() {
                self.by_record.remove(name);
            }
        }
    }

    fn on_claimed(&mut self, _now: Millis, from: SocketAddr, owner: u64, names: &[&str]) {
        let secs = self.unix.secs();
        let ours = |n: &str| {
            self.by_record.get(n).is_some_and(|addrs| {
                addrs.iter().any(|a| {
                    self.clients
                        .get(a)
                        .is_some_and(|c| c.record_expires > secs && c.owners.contains(&owner))
                })
            })
        };
        let stale: Vec<&str> = names.iter().copied().filter(|n| !ours(n)).collect();
        for username in stale {
            self.send(from, &Msg::Unclaim { username });
        }
    }

    /// Tell a departed client's owners that this home no longer claims
    /// its record (the record itself stays until it expires).
    fn unclaim(&mut self, c: &Attached) {
        if c.record.is_none() {
            return;
        }
        for &id in &c.owners {
            self.send_unclaim(id, &c.record_name, c.record_key, c.record_seq);
        }
    }

    /// Home side: recompute every attached client's owners, push its
    /// record to new ones and unclaim it at old ones; with `digest`, then
    /// send each owner the digest of what it should hold for us.
    fn home_round(&mut self, now: Millis, digest: bool) {
        let secs = self.unix.secs();
        let r = self.cfg.replicas;
        let mut sums: BTreeMap<u64, [(u32, u64); DIGEST_BUCKETS as usize]> = BTreeMap::new();
        // (client, new owners) where the owners changed.
        let mut moved: Vec<(SocketAddr, Vec<u64>)> = Vec::new();
        for (addr, c) in &self.clients {
            if !c.primary || c.record.is_none() || c.record_expires <= secs {
                continue;
            }
            let owners: Vec<u64> = self
                .members
                .ring_from(c.record_key)
                .filter(|(id, _)| responsive(&self.unresponsive, *id, now))
                .take(r)
                .map(|(id, _)| id)
                .collect();
            if digest {
                let b = digest_bucket(c.record_key) as usize;
                let h = claim_hash(c.record_key, c.record_seq);
                for &o in &owners {
                    if o != self.me {
                        let e = &mut sums.entry(o).or_insert([(0, 0); DIGEST_BUCKETS as usize])[b];
                        e.0 += 1;
                        e.1 ^= h;
                    }
                }
            }
            if owners != c.owners {
                moved.push((*addr, owners));
            }
        }
        for (addr, owners) in moved {
            let Some(c) = self.clients.get_mut(&addr) else {
                continue;
            };
            let old = std::mem::replace(&mut c.owners, owners.clone());
            let (name, key, seq) = (c.record_name.clone(), c.record_key, c.record_seq);
            let Some(record) = c.record.clone() else {
                continue;
            };
            for &id in owners.iter().filter(|id| !old.contains(id)) {
                if id == self.me {
                    self.store_local(now, &record);
                } else if let Some(a) = self.members.addr_of(id) {
                    let out = Outgoing {
                        username: &name,
                        key,
                        record: &record,
                        seq,
                        push: Push::Home,
                        was: ClaimWas::Absent,
                    };
                    self.send_store(now, id, a, out, &[]);
                }
            }
            for &id in old.iter().filter(|id| !owners.contains(id)) {
                if responsive(&self.unresponsive, id, now) {
                    self.send_unclaim(id, &name, key, seq);
                }
            }
        }
        if !digest {
            return;
        }
        // Claim changes in flight, by owner: its answer may show them or
        // not.
        let window = self.cfg.store_timeout_ms * UNCLAIM_INFLIGHT_TIMEOUTS;
        let unix = self.unix;
        while self
            .recent_unclaims
            .front()
            .is_some_and(|(t, ..)| unix.get().saturating_sub(t.get()) > window)
        {
            self.recent_unclaims.pop_front();
        }
        let mut inflight: HashMap<u64, Vec<Inflight>> = HashMap::new();
        for p in self.stores.values().filter(|p| p.claim) {
            let before = match p.was {
                ClaimWas::Unknown => continue,
                ClaimWas::Absent => None,
                ClaimWas::Seq(s) => Some(claim_hash(p.key, s)),
            };
            inflight.entry(p.owner).or_default().push(Inflight {
                bucket: digest_bucket(p.key),
                before,
                after: Some(claim_hash(p.key, p.seq)),
            });
        }
        for &(_, owner, bucket, hash) in &self.recent_unclaims {
            inflight.entry(owner).or_default().push(Inflight {
                bucket,
                before: Some(hash),
                after: None,
            });
        }
        let deadline = now + self.cfg.store_timeout_ms;
        for (owner, b) in sums {
            let Some(addr) = self.members.addr_of(owner) else {
                continue;
            };
            let parts = digest_parts(b.iter().map(|(n, _)| n).sum());
            let mut coarse = [(0u32, 0u64); DIGEST_BUCKETS as usize];
            for (fine, (n, h)) in b.iter().enumerate() {
                let e = &mut coarse[fine % parts as usize];
                e.0 += n;
                e.1 ^= h;
            }
            let buckets: Vec<DigestBucket> = coarse[..parts as usize]
                .iter()
                .enumerate()
                .filter(|(_, (n, _))| *n > 0)
                .map(|(i, &(count, hash))| DigestBucket {
                    bucket: i as u8,
                    count,
                    hash,
                })
                .collect();
            self.stats.digests_sent += 1;
            self.send(addr, &Msg::Digest { parts, buckets });
            self.digests_out.insert(
                owner,
                DigestOut {
                    deadline,
                    parts,
                    sums: b,
                    inflight: inflight.remove(&owner).unwrap_or_default(),
                },
            );
        }
    }

    /// Push the held refreshes of clients whose owners' copy comes within
    /// [`REFRESH_AHEAD_SECS`] of running out, as deltas.
    fn push_due_refreshes(&mut self, now: Millis) {
        let secs = self.unix.secs().get();
        let due: Vec<SocketAddr> = self
            .clients
            .iter()
            .filter(|(_, c)| c.fresh.is_some() && c.online_until <= secs + REFRESH_AHEAD_SECS)
            .map(|(a, _)| *a)
            .collect();
        for addr in due {
            let Some(c) = self.clients.get_mut(&addr) else {
                continue;
            };
            let Some((fresh, seq)) = c.fresh.take() else {
                continue;
            };
            let Ok(rec) = PresenceRecord::decode(&fresh) else {
                continue;
            };
            let Some(old) = c.record.replace(fresh.clone()) else {
                continue;
            };
            let delta = super::record::timing_delta(&old, &fresh);
            let prev = (std::mem::take(&mut c.owners), Some(c.record_seq));
            c.record_seq = seq;
            c.record_expires = rec.valid_until();
            c.online_until = rec.online_until;
            let name = c.record_name.clone();
            self.stats.refreshes_sent += 1;
            let owners = self.push_to_owners(
                now,
                &name,
                (fresh, seq),
                &[],
                Some(Claim {
                    before: (&prev.0, prev.1),
                    delta,
                }),
            );
            if let Some(c) = self.clients.get_mut(&addr) {
                c.owners = owners;
            }
        }
    }

    /// An owner's answer to our digest (the buckets where its sums differ
    /// from ours). Differences that claims in flight when we sent it
    /// explain are left alone; the rest are repaired with a `Check` per
    /// record of ours there, which claims it again at its seq and sends
    /// it whole where the owner lacks it, and a `ClaimsAsk` for the names
    /// the owner counts there (answered with `Claimed` pages; we unclaim
    /// those we no longer have).
    fn on_digest_ack(
        &mut self,
        now: Millis,
        from: SocketAddr,
        owner: u64,
        parts: u8,
        theirs: &[DigestBucket],
    ) {
        let Some(out) = self.digests_out.remove(&owner) else {
            return;
        };
        if parts != out.parts {
            self.stats.malformed += 1;
            return;
        }
        let mut differ: Vec<u8> = Vec::new();
        for b in theirs {
            let changes: Vec<Inflight> = out
                .inflight
                .iter()
                .filter(|c| c.bucket % parts == b.bucket)
                .copied()
                .collect();
            let ours = out
                .sums
                .iter()
                .enumerate()
                .fold((0u32, 0u64), |acc, (i, s)| {
                    if i as u8 % parts == b.bucket {
                        (acc.0 + s.0, acc.1 ^ s.1)
                    } else {
                        acc
                    }
                });
            if explained(ours, (b.count, b.hash), &changes) {
                self.stats.digest_in_flight += 1;
            } else {
                differ.push(b.bucket);
            }
        }
        differ.sort_unstable();
        differ.dedup();
        if differ.is_empty() {
            return;
        }
        let secs = self.unix.secs();
        self.stats.digest_repairs += differ.len() as u64;
        let checks: Vec<(String, u64, u64, Rc<[u8]>)> = self
            .clients
            .values()
            .filter(|c| {
                c.primary
                    && c.record_expires > secs
                    && c.owners.contains(&owner)
                    && differ.contains(&(digest_bucket(c.record_key) % parts))
            })
            .filter_map(|c| {
                Some((
                    c.record_name.clone(),
                    c.record_key,
                    c.record_seq,
                    c.record.clone()?,
                ))
            })
            .collect();
        tracing::debug!(
            owner = format_args!("{owner:016x}"),
            buckets = differ.len(),
            records = checks.len(),
            "digest differs: repairing"
        );
        for (name, key, seq, record) in checks {
            let out = Outgoing {
                username: &name,
                key,
                record: &record,
                seq,
                push: Push::Check,
                was: ClaimWas::Unknown,
            };
            self.send_store(now, owner, from, out, &[]);
        }
        self.send(
            from,
            &Msg::ClaimsAsk {
                parts,
                buckets: differ,
            },
        );
    }

    /// Push records to owners that do not have them yet after membership
    /// changed; hand off records we no longer own.
    fn rebalance(&mut self, now: Millis) {
        let r = self.cfg.replicas;
        // Claims of homes that went down: nobody will send their digests.
        let members = &self.members;
        let me = self.me;
        let gone = |id: u64| id != me && !members.is_up(id);
        if self.claim_sums.keys().any(|(id, _)| gone(*id)) {
            for h in self.records.values_mut() {
                h.claims.retain(|(id, _)| !gone(*id));
            }
            self.claim_sums.retain(|(id, _), _| !gone(*id));
        }
        let keys: Vec<String> = self.records.keys().cloned().collect();
        for name in keys {
            let Some(h) = self.records.get(&name) else {
                continue;
            };
            let owners = self.owners(h.key, r, now);
            let owner_ids: Vec<u64> = owners.iter().map(|(id, _)| *id).collect();
            let targets: Vec<SocketAddr> = owners
                .iter()
                .filter(|(id, _)| *id != self.me && !h.pushed_to.contains(id))
                .map(|(_, a)| *a)
                .collect();
            let bytes = h.bytes.clone();
            for t in targets {
                self.send(t, &Msg::Store { record: &bytes });
            }
            let mine = owner_ids.contains(&self.me);
            if let Some(h) = self.records.get_mut(&name) {
                h.pushed_to = owner_ids;
                h.not_owner_since = if mine {
                    None
                } else {
                    h.not_owner_since.or(Some(now))
                };
            }
        }
        self.env_rebalance(now);
    }

    /// Leave the overlay for good (a clean shutdown): the other supernodes
    /// learn at once that this one is down and take over its share of the
    /// directory, and every attached client is redirected to other
    /// supernodes, so it re-attaches and republishes now rather than after
    /// its keepalives time out. The caller sends the transmits and stops.
    pub fn leave(&mut self, rng: &mut dyn RngCore) {
        let mut out = std::mem::take(&mut self.out);
        self.members.leave(&mut out);
        self.out = out;
        let me = self.my_addr;
        let mut others = self.some_supernodes(rng, 9);
        others.retain(|a| *a != me);
        others.truncate(8);
        let clients: Vec<SocketAddr> = self.clients.keys().copied().collect();
        for c in clients {
            self.send(
                c,
                &Msg::Redirect {
                    supernodes: others.clone(),
                },
            );
        }
        self.clients.clear();
        self.by_record.clear();
    }

    /// Run the timers due at `now`; held records expire at `unix` (the
    /// wall clock).
    pub fn handle_timeout(&mut self, now: Millis, unix: UnixMillis, rng: &mut dyn RngCore) {
        self.unix = unix;
        // Join the overlay through the bootstrap list until someone answers.
        if !self.joined && now >= self.next_join_at && !self.bootstrap.is_empty() {
            self.next_join_at = now + self.cfg.join_retry_ms;
            let mut out = std::mem::take(&mut self.out);
            for b in self.bootstrap.clone() {
                self.members.join(b, &mut out);
            }
            self.out = out;
        }
        let mut out = std::mem::take(&mut self.out);
        self.members.handle_timeout(now, rng, &mut out);
        self.out = out;
        self.after_membership(now);

        // Owner queries that timed out.
        while let Some(Reverse((at, qid, who))) = self.query_deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.query_deadlines.pop();
            let Some(q) = self.queries.get_mut(&qid) else {
                continue;
            };
            let Some(pos) = q
                .outstanding
                .iter()
                .position(|&(id, d)| id == who && d == at)
            else {
                continue;
            };
            q.outstanding.swap_remove(pos);
            q.timeouts += 1;
            self.stats.query_timeouts += 1;
            self.mark_unresponsive(now, who);
            self.advance_query(now, qid);
        }
        // Stores that were not acknowledged: try the next successor.
        while let Some(Reverse((at, owner, name))) = self.store_deadlines.peek().cloned() {
            if at > now {
                break;
            }
            self.store_deadlines.pop();
            let k = (owner, name);
            let Some(p) = self.stores.get(&k) else {
                continue;
            };
            if p.deadline != at {
                continue;
            }
            let p = self.stores.remove(&k).expect("present");
            self.stats.store_timeouts += 1;
            self.mark_unresponsive(now, p.owner);
            if p.claim {
                // The home's round picks the replacement (and keeps the
                // client's owner list right for its digests).
                self.home_rebalance_at = Some(now);
                continue;
            }
            let mut exclude = p.exclude;
            exclude.push(p.owner);
            if exclude.len() <= self.cfg.replicas + self.cfg.query_extra {
                // Only the replacement: the other owners were sent already.
                let replacement = self
                    .members
                    .ring_from(p.key)
                    .filter(|(id, _)| {
                        !exclude.contains(id) && responsive(&self.unresponsive, *id, now)
                    })
                    .nth(self.cfg.replicas - 1);
                if let Some((id, addr)) = replacement {
                    if id == self.me {
                        self.store_local(now, &p.record);
                    } else {
                        self.send(addr, &Msg::Store { record: &p.record });
                        let deadline = now + self.cfg.store_timeout_ms;
                        self.stores.insert(
                            (id, p.username.clone()),
                            PendingStore {
                                owner: id,
                                key: p.key,
                                username: p.username.clone(),
                                record: p.record,
                                deadline,
                                exclude,
                                claim: false,
                                seq: p.seq,
                                was: ClaimWas::Unknown,
                            },
                        );
                        self.store_deadlines
                            .push(Reverse((deadline, id, p.username)));
                    }
                }
            }
        }
        // Owners that did not answer our digest: skip them, move on.
        if self.digests_out.values().any(|d| d.deadline <= now) {
            let late: Vec<u64> = self
                .digests_out
                .iter()
                .filter(|(_, d)| d.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            for id in late {
                self.digests_out.remove(&id);
                self.stats.digest_timeouts += 1;
                self.mark_unresponsive(now, id);
            }
            self.home_rebalance_at = Some(now);
        }
        // The digest round, and owners recomputed after changes.
        if now >= self.next_digest_at {
            self.next_digest_at = now + self.cfg.check_interval_ms;
            self.home_rebalance_at = None;
            self.home_round(now, true);
        } else if let Some(at) = self.home_rebalance_at
            && at <= now
        {
            self.home_rebalance_at = None;
            self.home_round(now, false);
        }
        if let Some(at) = self.rebalance_at
            && at <= now
        {
            self.rebalance_at = None;
            self.rebalance(now);
        }
        self.env_timeout(now);
        if now >= self.next_sweep_at {
            self.next_sweep_at = now + 1000;
            self.sweep(now);
        }
    }

    fn sweep(&mut self, now: Millis) {
        // Every second, not with the digest round: pushes sent all at
        // once would be in flight together when the digest goes.
        self.push_due_refreshes(now);
        let timeout = self.cfg.client_timeout_ms;
        let gone: Vec<SocketAddr> = self
            .clients
            .iter()
            .filter(|(_, c)| now.since(c.last_seen) > timeout)
            .map(|(a, _)| *a)
            .collect();
        for a in gone {
            if let Some(c) = self.remove_client(&a) {
                self.unclaim(&c);
                if let Some((will, seq)) = c.will.clone()
                    && seq > c.record_seq
                {
                    self.stats.wills_published += 1;
                    tracing::debug!(user = %c.username, seq, "client silent: publishing its offline record");
                    self.push_to_owners(now, &c.record_name, (will, seq), &[], None);
                }
                self.env_client_gone(a, &c.username);
                self.events.push_back(SupernodeEvent::ClientDetached {
                    addr: a,
                    username: c.username,
                });
            }
        }
        let secs = self.unix.secs();
        let sums = &mut self.claim_sums;
        self.records.retain(|_, h| {
            let keep =
                h.expires_at > secs && h.not_owner_since.is_none_or(|t| now.since(t) < 120_000);
            if !keep {
                for &(home, seq) in &h.claims {
                    claim_sum(sums, home, h.key, seq, false);
                }
            }
            keep
        });
        self.cache.retain(|_, (_, until)| *until > now);
        self.unresponsive.retain(|_, until| *until > now);
        // Certificates that can no longer sign fresh records.
        self.verified_certs
            .retain(|_, not_after| *not_after + super::record::MAX_RECORD_AGE_SECS > secs);
        self.watchers.retain(|_, l| {
            l.retain(|(_, e)| *e > now);
            !l.is_empty()
        });
        self.client_watches.retain(|_, l| {
            l.retain(|(_, e)| *e > now);
            !l.is_empty()
        });
        for c in self.clients.values_mut() {
            c.watches = 0;
        }
        self.watches_by_source.clear();
        for l in self.client_watches.values() {
            for (a, _) in l {
                if let Some(c) = self.clients.get_mut(a) {
                    c.watches += 1;
                    *self
                        .watches_by_source
                        .entry(SourceKey::of(a.ip()))
                        .or_insert(0) += 1;
                }
            }
        }
        self.lookups_by_source.prune(now);
        let ttl = self.cfg.watch_ttl_ms;
        self.watch_sent.retain(|_, t| now.since(*t) < ttl);
        self.env_sweep(now);
    }

    /// When [`SupernodeCore::handle_timeout`] is next due (node
    /// timeline); the sweep always runs, so there is always one.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let mut t = self.members.poll_timeout().min(self.next_sweep_at);
        if !self.joined && !self.bootstrap.is_empty() {
            t = t.min(self.next_join_at);
        }
        if let Some(Reverse((at, _, _))) = self.query_deadlines.peek() {
            t = t.min(*at);
        }
        if let Some(Reverse((at, _, _))) = self.store_deadlines.peek() {
            t = t.min(*at);
        }
        t = t.min(self.next_digest_at);
        if let Some(at) = self.home_rebalance_at {
            t = t.min(at);
        }
        if let Some(d) = self.digests_out.values().map(|d| d.deadline).min() {
            t = t.min(d);
        }
        if let Some(at) = self.rebalance_at {
            t = t.min(at);
        }
        Some(t.min(self.env_poll_timeout()))
    }
}

#[cfg(test)]
mod tests;
