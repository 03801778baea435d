//! Group chat, end to end encrypted, with no server in the loop.
//!
//! A group is its log of signed operations ([`wire::Op`]: create, invite,
//! leave, remove, rename, admin), each signed by the device of the user
//! who made it and carrying their certificate. Every member replays the
//! log in one deterministic order (lamport clock, then op id) with the
//! same rules (only members invite, only admins remove, the creator stays),
//! so members holding the same ops hold the same member list. The author
//! of an op sends it to everyone in the group before and after it, and an
//! invite also sends the whole log to the new member. An invitation is
//! taken only from a contact: a stranger's is dropped and counted, a
//! blocked user's dropped silently.
//!
//! Messages are sealed once with the sender's own key (ChaCha20-Poly1305,
//! a "sender key") and the ciphertext goes to each member in a pairwise
//! sealed envelope. Each member makes a fresh sender key whenever the
//! member list changes and sends it to the current members only, so a
//! removed member cannot open what follows. A message that arrives before
//! its sender's key waits for the key.
//!
//! Every item (ops, a key, a message) rides the chat's delivery rules:
//! sent in a sealed envelope (stored up to 72 hours for an offline
//! member), resent until the member acknowledges it, the acknowledgement
//! sent only once it is written; the outbox is in SQLite and gives up
//! after [`GroupConfig::outbox_ms`]. Each message carries the sender's
//! per-group seq and the seq of the sender's previous message to this
//! recipient (`prev`): a receiver shows a message only after that one
//! (hold-back), so each member shows each message once, in per-sender
//! order, even across removal and re-invitation.
//!
//! Anti-entropy: an op goes only to the members its author knew, so two
//! changes made at once (one admin removes X while another invites Y)
//! leave Y without the removal, and a member can miss an op that was
//! given up. So every key and message carries its sender's log digest
//! ([`wire::Digest`]); a member whose own digest differs sends that member
//! the ids of its ops ([`Body::Ids`], a page of [`wire::MAX_IDS`] from
//! the end of the log), who answers with the ops it lacks (at most
//! [`MAX_SYNC_OPS`] per request), asks for the ones it lacks itself
//! ([`Body::Want`]) and, when their logs also differ below the page, asks
//! for the page before ([`Body::Pull`]). Ops are signed, so any member
//! forwards anyone's; the receiver verifies them as usual. Only members
//! are answered, each at most [`GroupConfig::sync_answers`] times per
//! [`GroupConfig::sync_ms`]; one sync is started per member and window
//! (a mismatch seen meanwhile is synced when the window ends).
//!
//! One account on several devices (issue 17). A sender is a device: the
//! verified certificate of each envelope names the user and the device
//! (its x25519 key, [`Dev`]). Each device of a member has its own sender
//! key, seq and `prev` chain, and receivers keep keys, the highest seq and
//! the hold-back per (user, device); `groups.db` schema 2 keys them so
//! (rows from version 1 belong to [`LEGACY`] and pass to the first device
//! of their sender heard from; ours to this device).
//! - Every item to a member goes to all their devices: the overlay seals
//!   one copy per device of a user. What this device sends (messages,
//!   ops it makes, its new keys) also goes, the same way, to our own
//!   username: every other device of ours (never this one). So each of
//!   our devices shows every message once, our own from another device
//!   as outgoing, in per-device order; ops from our own account are taken
//!   as ours (a group made or joined on one device is on the others).
//! - Acknowledgements are per device: an item is done once each device of
//!   the recipient we know of ([`MAX_DEVICES`]; known from what they sent
//!   us) acknowledged it. The overlay reports one outcome per envelope
//!   (delivered if some device had it), so one device's acknowledgement
//!   cannot speak for the others: after the first, the item goes again
//!   device by device ([`EnvelopeSink::send_envelope_to_device`]) to
//!   those that have not; one that fails [`MAX_DEVICE_FAILURES`] times
//!   is taken for gone. A device we never heard from gets what the
//!   overlay copied to it at the first attempt only. Items to our own
//!   other devices, none of which we heard from yet, end with the
//!   overlay's answer (as chat's copies do). Acknowledgements and sync
//!   answers go to the one device that sent the item.
//! - A device new to a member in a group (its first key) gets that
//!   member's current key, sealed to it alone.
//! - A device added later learns our groups: once online
//!   ([`GroupCore::on_online`]) and on first hearing from another device
//!   of ours, it sends `GROUP_ASK` (the groups it knows; not stored for
//!   offline devices) to our other devices, which answer only our own
//!   account, at most once per device and [`GroupConfig::sync_ms`]: the
//!   whole log of each group it lacks and their current key, sealed to
//!   that device. The new device then rotates its own key (to every
//!   member), and the digest sync catches its log up. Messages sent
//!   before it existed never come: in a group learned so, the first
//!   message held from a sending device it has nothing from is shown after
//!   [`GroupConfig::late_gap_ms`] instead of [`GroupConfig::gap_ms`].
//!
//! [`GroupCore`] is sans-IO: envelopes go out through an
//! [`EnvelopeSink`], `now` comes in, and the store is SQLite
//! ([`GroupStore`]).

mod store;
#[cfg(test)]
mod tests;
pub mod wire;

pub use store::{GroupStore, LEGACY, SealedRow};
pub use wire::{Action, Digest, GroupPayload, Op, OpKey, open_message};

use crate::identity::{Certificate, DeviceIdentity};
use crate::overlay::EnvelopeId;
pub use crate::overlay::envelope::{EnvelopeOutcome, EnvelopeSink};
use crate::sqlite::SqliteError;
use crate::time::{Millis, UnixMillis};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use thiserror::Error;
use wire::{Body, kind};

/// A group's id: a hash of its creator's name and a random nonce.
pub type GroupId = [u8; 16];

/// A device: its x25519 key, from its certificate.
pub type Dev = [u8; 32];

/// Most devices of one user we track (whose acknowledgements an item
/// waits for); more are served by the overlay's copy per device alone.
pub const MAX_DEVICES: usize = 8;

/// Failed attempts at one device, after another of the user's devices
/// acknowledged the item, before that device is taken for gone.
pub const MAX_DEVICE_FAILURES: u32 = 6;

/// Most members a group can have (a protocol rule: every member must
/// apply the same limit to reach the same list).
pub const MAX_MEMBERS: usize = 50;
/// Most ops in a group's log; more are refused (and counted).
pub const MAX_OPS: usize = 1024;
/// Most sender keys kept per member of a group: a new one beyond pushes
/// out their oldest (counted in [`GroupStats::keys_dropped`]).
pub const MAX_KEYS_PER_SENDER: usize = 64;
/// Longest message text, in bytes.
pub const MAX_TEXT: usize = 4000;
/// Most ops sent in answer to one sync request (`ids` or `want`); what
/// is left goes at the next sync.
pub const MAX_SYNC_OPS: usize = 4 * wire::MAX_OPS_PER_ITEM;

#[derive(Debug, Error)]
pub enum GroupError {
    #[error(transparent)]
    Store(#[from] SqliteError),
    #[error("no such group: {0}")]
    NoSuchGroup(String),
    #[error("group name {0:?} matches several groups: use the id")]
    Ambiguous(String),
    #[error("you are not a member of this group")]
    NotMember,
    #[error("only the group's admins may do that")]
    NotAdmin,
    #[error("{0} is already a member")]
    AlreadyMember(String),
    #[error("{0} is not a member")]
    NoSuchMember(String),
    #[error("the group's creator cannot be removed")]
    Creator,
    #[error("the group is full ({MAX_MEMBERS} members)")]
    Full,
    #[error("you are in {0} groups, the most allowed")]
    TooManyGroups(usize),
    #[error("the group's log is full ({MAX_OPS} operations)")]
    LogFull,
    #[error("group name of {len} bytes is empty or over the {max}-byte limit")]
    BadName { len: usize, max: usize },
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    TooLong { len: usize, max: usize },
    #[error("empty message")]
    Empty,
}

/// Which group rule refused a command: a [`GroupError`] other than a
/// failure of the store, as front ends tell the cases apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoSuchGroup,
    Ambiguous,
    NotMember,
    NotAdmin,
    AlreadyMember,
    NoSuchMember,
    Creator,
    Full,
    TooManyGroups,
    LogFull,
    BadName,
    TooLong,
    Empty,
}

impl Refusal {
    /// A short code for scripts (headless JSON's `reason`).
    pub fn code(self) -> &'static str {
        match self {
            Refusal::NoSuchGroup => "no_such_group",
            Refusal::Ambiguous => "ambiguous_group",
            Refusal::NotMember => "not_member",
            Refusal::NotAdmin => "not_admin",
            Refusal::AlreadyMember => "already_member",
            Refusal::NoSuchMember => "no_such_member",
            Refusal::Creator => "creator",
            Refusal::Full => "group_full",
            Refusal::TooManyGroups => "too_many_groups",
            Refusal::LogFull => "log_full",
            Refusal::BadName => "bad_name",
            Refusal::TooLong => "too_long",
            Refusal::Empty => "empty",
        }
    }
}

impl GroupError {
    /// The rule that refused, or `None` for a failure of the store.
    pub fn refusal(&self) -> Option<Refusal> {
        Some(match self {
            GroupError::Store(_) => return None,
            GroupError::NoSuchGroup(_) => Refusal::NoSuchGroup,
            GroupError::Ambiguous(_) => Refusal::Ambiguous,
            GroupError::NotMember => Refusal::NotMember,
            GroupError::NotAdmin => Refusal::NotAdmin,
            GroupError::AlreadyMember(_) => Refusal::AlreadyMember,
            GroupError::NoSuchMember(_) => Refusal::NoSuchMember,
            GroupError::Creator => Refusal::Creator,
            GroupError::Full => Refusal::Full,
            GroupError::TooManyGroups(_) => Refusal::TooManyGroups,
            GroupError::LogFull => Refusal::LogFull,
            GroupError::BadName { .. } => Refusal::BadName,
            GroupError::TooLong { .. } => Refusal::TooLong,
            GroupError::Empty => Refusal::Empty,
        })
    }
}

/// Timers and limits.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Resend an item the overlay delivered but nobody acknowledged.
    pub ack_wait_ms: u64,
    /// Resend an item that waits on an offline member's owners.
    pub stored_retry_ms: u64,
    pub retry_base_ms: u64,
    pub max_backoff_ms: u64,
    /// Wait this long for the overlay's answer about an attempt.
    pub attempt_timeout_ms: u64,
    /// Give an item up this long after it was queued (the overlay keeps
    /// an envelope 72 hours).
    pub outbox_ms: u64,
    /// Most messages held back per sender (waiting for an earlier one or
    /// for a key); more are dropped unacknowledged, so they come again.
    pub max_held: usize,
    /// A message held back this long is shown even though the one before
    /// it never came (its sender gave it up).
    pub gap_ms: u64,
    /// Most groups we are in.
    pub max_groups: usize,
    /// Most items parked until their sender's membership or our
    /// invitation arrives, and per sender.
    pub max_early: usize,
    pub max_early_per_sender: usize,
    /// How long a parked item is kept.
    pub early_ms: u64,
    /// The sync window: at most one sync started with each member per
    /// window, and [`GroupConfig::sync_answers`] of their requests
    /// answered.
    pub sync_ms: u64,
    pub sync_answers: u32,
    /// Most (group, member) pairs with sync state; more are refused.
    pub max_sync_peers: usize,
    /// In a group learned from another of our devices, the first message
    /// held from a sending device we have nothing from is shown after this
    /// even though the one before it never came (it was sent before this
    /// device was there).
    pub late_gap_ms: u64,
    /// ... for messages that arrive this long after the group was learned
    /// (or after a restart).
    pub late_window_ms: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            ack_wait_ms: 15_000,
            stored_retry_ms: 3_600_000,
            retry_base_ms: 2_000,
            max_backoff_ms: 120_000,
            attempt_timeout_ms: 30_000,
            outbox_ms: 72 * 3_600_000,
            max_held: 256,
            gap_ms: 74 * 3_600_000,
            max_groups: 200,
            max_early: 1024,
            max_early_per_sender: 128,
            early_ms: 600_000,
            sync_ms: 30_000,
            sync_answers: 16,
            max_sync_peers: 4096,
            late_gap_ms: 60_000,
            late_window_ms: 600_000,
        }
    }
}

/// How the sender of an envelope stands with us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Contact,
    Stranger,
    Blocked,
}

/// A group as the members see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub id: GroupId,
    pub name: String,
    pub creator: String,
    pub admins: Vec<String>,
    pub members: Vec<String>,
    /// Whether we are a member now.
    pub joined: bool,
}

/// A change to a group, from one op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created,
    Added(String),
    Left(String),
    Removed(String),
    Renamed(String),
    Admin(String),
}

/// One group message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMessage {
    pub group: GroupId,
    pub sender: String,
    /// The sender's sequence number in this group (from 1).
    pub seq: u64,
    pub text: String,
    /// When the sender wrote it (sender's clock).
    pub sent_at_ms: u64,
    /// When it entered this history (local clock).
    pub at_ms: u64,
    pub outgoing: bool,
}

/// What the group core reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// We are in a group now (we created it, or were invited).
    Joined(GroupInfo),
    /// An op changed a group; `by` made it.
    Changed {
        info: GroupInfo,
        by: String,
        change: Change,
    },
    /// A message, shown once (ours when sent, others' when in order).
    Message(GroupMessage),
    /// A member wrote our message `seq` to their history.
    Acked {
        group: GroupId,
        seq: u64,
        by: String,
    },
    /// A stranger's invitation was dropped (counted).
    InviteDropped { from: String, group: GroupId },
    /// A history write failed (the item stays unacknowledged).
    StoreFailed { error: String },
}

/// Counters of what was dropped or given up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Invitations from strangers.
    pub invites_dropped: u64,
    /// Items from blocked users.
    pub blocked_dropped: u64,
    /// Items about groups we do not know, or from non-members.
    pub not_member_dropped: u64,
    /// Ops with bad signatures or certificates, or malformed payloads.
    pub bad: u64,
    /// Messages no key of their sender opens.
    pub undecryptable: u64,
    /// Ops refused because the log was full.
    pub log_full: u64,
    /// Messages dropped because the hold-back buffer was full.
    pub held_over_limit: u64,
    /// Messages shown past a gap that never filled.
    pub gaps_skipped: u64,
    /// Items given up after [`GroupConfig::outbox_ms`].
    pub given_up: u64,
    /// Invitations refused because we are in too many groups.
    pub too_many_groups: u64,
    /// Items parked too long, or over the parking limits.
    pub early_dropped: u64,
    /// Old sender keys pushed out by [`MAX_KEYS_PER_SENDER`].
    pub keys_dropped: u64,
    /// Syncs we started because a member's log digest differed from ours.
    pub syncs_started: u64,
    /// Ops we sent in answer to members' sync requests.
    pub ops_synced: u64,
    /// Sync requests refused: over a member's budget, about a group we
    /// are no longer in, or over [`GroupConfig::max_sync_peers`].
    pub sync_refused: u64,
    /// Asks for our groups answered (from our own other devices).
    pub asks_answered: u64,
    /// Asks refused: from another account, or too soon again.
    pub asks_refused: u64,
    /// Devices taken for gone after [`MAX_DEVICE_FAILURES`].
    pub devices_dropped: u64,
}

/// A message waiting for an earlier one or for its key.
#[derive(Debug, Clone)]
struct Held {
    prev: u64,
    key_id: u32,
    ct: Vec<u8>,
    /// The item to acknowledge once it is written.
    item: [u8; 16],
    /// When it arrived.
    since: Millis,
}

/// The state a replay of the log gives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Derived {
    name: String,
    creator: String,
    admins: BTreeSet<String>,
    members: BTreeSet<String>,
}

#[derive(Debug)]
struct Group {
    id: GroupId,
    /// The log, in replay order.
    ops: Vec<Op>,
    /// Each op's place in the replay order (`order[i]` is `ops[i]`'s).
    order: Vec<OpKey>,
    /// The log's digest.
    digest: Digest,
    op_ids: BTreeSet<[u8; 16]>,
    state: Derived,
    /// Our sender key and its id (0: none yet).
    key_id: u32,
    key: [u8; 32],
    /// Our last message's seq.
    seq: u64,
    /// Sender keys by (sender, sending device, key id), ours included.
    keys: BTreeMap<(String, Dev, u32), [u8; 32]>,
    /// Highest seq kept from each sending device.
    last_seq: BTreeMap<(String, Dev), u64>,
    /// Our last seq sent to each member (their `prev`; all their devices
    /// get the same items), and to our own other devices (under our name).
    sent_to: BTreeMap<String, u64>,
    /// Messages held back, per sending device, by seq.
    held: BTreeMap<(String, Dev), BTreeMap<u64, Held>>,
    /// When the group's log came whole from another of our devices (or
    /// this process started, for one that did): messages sent before this
    /// device was there never come (see [`GroupConfig::late_gap_ms`]).
    late: Option<Millis>,
}

impl Group {
    fn info(&self, me: &str) -> GroupInfo {
        GroupInfo {
            id: self.id,
            name: self.state.name.clone(),
            creator: self.state.creator.clone(),
            admins: self.state.admins.iter().cloned().collect(),
            members: self.state.members.iter().cloned().collect(),
            joined: self.state.members.contains(me),
        }
    }

    fn lamport(&self) -> u64 {
        self.ops
            .iter()
            .map(|o| o.lamport)
            .max()
            .unwrap_or(0)
            .saturating_add(1)
    }

    /// A group with an empty log.
    fn empty(id: GroupId) -> Group {
        Group {
            id,
            ops: Vec::new(),
            order: Vec::new(),
            digest: wire::digest([]),
            op_ids: BTreeSet::new(),
            state: Derived::default(),
            key_id: 0,
            key: [0; 32],
            seq: 0,
            keys: BTreeMap::new(),
            last_seq: BTreeMap::new(),
            sent_to: BTreeMap::new(),
            held: BTreeMap::new(),
            late: None,
        }
    }

    /// How long the first held message of `sender`, held since `since`,
    /// waits for the one before it.
    fn gap(&self, cfg: &GroupConfig, sender: &(String, Dev), since: Millis) -> u64 {
        let late = self
            .late
            .is_some_and(|t| since.since(t) < cfg.late_window_ms);
        if late && !self.last_seq.contains_key(sender) {
            cfg.late_gap_ms
        } else {
            cfg.gap_ms
        }
    }

    /// `sender`'s rows from before devices were told apart ([`LEGACY`])
    /// become their device `dev`'s, when it is the first of theirs heard
    /// from. Whether anything moved.
    fn adopt(&mut self, sender: &str, dev: &Dev) -> bool {
        let legacy = (sender.to_owned(), LEGACY);
        let this = (sender.to_owned(), *dev);
        let has = |g: &Group, k: &(String, Dev)| {
            g.last_seq.contains_key(k) || g.keys.keys().any(|(s, d, _)| (s, d) == (&k.0, &k.1))
        };
        if *dev == LEGACY || !has(self, &legacy) || has(self, &this) {
            return false;
        }
        if let Some(l) = self.last_seq.remove(&legacy) {
            self.last_seq.insert(this.clone(), l);
        }
        let old: Vec<(String, Dev, u32)> = self
            .keys
            .keys()
            .filter(|(s, d, _)| s == sender && *d == LEGACY)
            .cloned()
            .collect();
        for k in old {
            if let Some(v) = self.keys.remove(&k) {
                self.keys.insert((k.0, *dev, k.2), v);
            }
        }
        if let Some(h) = self.held.remove(&legacy) {
            self.held.insert(this, h);
        }
        true
    }

    /// Sort the log and bring `order` and `digest` in line with it.
    fn reorder(&mut self) {
        sort_ops(&mut self.ops);
        self.order = self.ops.iter().map(|o| (o.lamport, o.id())).collect();
        self.digest = wire::digest(self.order.iter().map(|(_, id)| id));
    }

    /// How many ops come before `k` in the replay order.
    fn below(&self, k: &OpKey) -> usize {
        self.order.partition_point(|o| o < k)
    }

    /// The digest of the first `n` ops.
    fn prefix_digest(&self, n: usize) -> Digest {
        wire::digest(
            self.order[..n.min(self.order.len())]
                .iter()
                .map(|(_, id)| id),
        )
    }
}

/// Sync state with one member of one group (see the module docs).
#[derive(Debug)]
struct SyncPeer {
    /// When the current window began; it lasts [`GroupConfig::sync_ms`].
    window: Millis,
    /// Whether we started a sync with them in this window.
    started: bool,
    /// Their requests answered in this window.
    answered: u32,
    /// Their digest (and the device that sent it), when it differed from
    /// ours after we had started a sync in this window: sync again when
    /// the window ends.
    due: Option<(Digest, Dev)>,
}

/// Replay `ops` (already in order): the state, and each op's effect.
fn replay(id: &GroupId, ops: &[Op]) -> (Derived, Vec<Option<Change>>) {
    let mut d = Derived::default();
    let mut effects = Vec::with_capacity(ops.len());
    let mut founded = false;
    for op in ops {
        let a = op.author().to_owned();
        let effect = match &op.action {
            Action::Create { nonce, name } if !founded && wire::group_id(&a, nonce) == *id => {
                founded = true;
                d.name = name.clone();
                d.creator = a.clone();
                d.admins.insert(a.clone());
                d.members.insert(a);
                Some(Change::Created)
            }
            _ if !founded => None,
            Action::Create { .. } => None,
            Action::Invite { user }
                if d.members.contains(&a)
                    && !d.members.contains(user)
                    && d.members.len() < MAX_MEMBERS =>
            {
                d.members.insert(user.clone());
                Some(Change::Added(user.clone()))
            }
            Action::Leave if d.members.contains(&a) => {
                d.members.remove(&a);
                d.admins.remove(&a);
                Some(Change::Left(a))
            }
            Action::Remove { user }
                if d.admins.contains(&a)
                    && d.members.contains(user)
                    && *user != a
                    && *user != d.creator =>
            {
                d.members.remove(user);
                d.admins.remove(user);
                Some(Change::Removed(user.clone()))
            }
            Action::Rename { name } if d.members.contains(&a) => {
                d.name = name.clone();
                Some(Change::Renamed(name.clone()))
            }
            Action::Admin { user }
                if d.admins.contains(&a)
                    && d.members.contains(user)
                    && !d.admins.contains(user) =>
            {
                d.admins.insert(user.clone());
                Some(Change::Admin(user.clone()))
            }
            _ => None,
        };
        effects.push(effect);
    }
    (d, effects)
}

fn sort_ops(ops: &mut [Op]) {
    ops.sort_by_cached_key(|o| (o.lamport, o.id()));
}

/// An item in the outbox: (recipient, item id).
type ItemKey = (String, [u8; 16]);

/// A message ready to show: its item, the message, the sending device,
/// key id and ciphertext.
type Ready = ([u8; 16], GroupMessage, Dev, u32, Vec<u8>);

/// An item waiting for its acknowledgements.
#[derive(Debug)]
struct Pending {
    payload: Vec<u8>,
    /// For this device of the recipient only (sync answers, a key for a
    /// new device, what another of our devices asked for).
    only: Option<Dev>,
    /// The recipient's devices that acknowledged it.
    acked: BTreeSet<Dev>,
    /// When it was queued (gives up after `outbox_ms`).
    created: Millis,
    attempts: u32,
    next_try: Millis,
    /// Failed attempts per device, once sent device by device.
    failures: BTreeMap<Dev, u32>,
}

impl Pending {
    fn new(payload: Vec<u8>, only: Option<Dev>, now: Millis) -> Self {
        Pending {
            payload,
            only,
            acked: BTreeSet::new(),
            created: now,
            attempts: 0,
            next_try: now,
            failures: BTreeMap::new(),
        }
    }
}

/// The group chat core; see the module docs.
#[derive(Debug)]
pub struct GroupCore {
    me: String,
    /// This device (our x25519 key).
    dev: Dev,
    device: DeviceIdentity,
    cert: Certificate,
    authority: [u8; 32],
    store: GroupStore,
    cfg: GroupConfig,
    rng: StdRng,
    groups: BTreeMap<GroupId, Group>,
    /// Items not acknowledged, by (recipient, item id).
    pending: BTreeMap<(String, [u8; 16]), Pending>,
    /// Our envelopes of items: the item, and the one device it went to
    /// (none: every device of the recipient).
    by_envelope: BTreeMap<EnvelopeId, (ItemKey, Option<Dev>)>,
    /// The devices of members (and our own other devices, under our
    /// name) that have sent us something: an item to a user is done once
    /// each of theirs acknowledged it. At most [`MAX_DEVICES`] a user.
    devices: BTreeMap<String, BTreeSet<Dev>>,
    /// Our other devices we asked for their groups, and answered, and
    /// when (once per [`GroupConfig::sync_ms`] each).
    asked: BTreeMap<Dev, Millis>,
    answered: BTreeMap<Dev, Millis>,
    /// When we last asked all our other devices ([`GroupCore::on_online`]).
    asked_all: Option<Millis>,
    /// Items that came before what they need (the op that makes their
    /// sender a member, or the invitation): unacknowledged, tried again
    /// after every op that changes a log. Bounded by
    /// [`GroupConfig::max_early`], expired after [`GroupConfig::early_ms`].
    early: VecDeque<Early>,
    /// An op was merged since the early items were last tried.
    logs_changed: bool,
    /// Sync state by (group, member): only members of groups we are in,
    /// at most [`GroupConfig::max_sync_peers`], dropped once their window
    /// ends with nothing due.
    sync: BTreeMap<(GroupId, String), SyncPeer>,
    events: VecDeque<GroupEvent>,
    pub stats: GroupStats,
}

/// An item parked until what it needs arrives.
#[derive(Debug)]
struct Early {
    from: String,
    dev: Dev,
    standing: Standing,
    payload: Vec<u8>,
    since: Millis,
}

/// What became of an item.
enum Fate {
    Done,
    /// Too early: keep it (unacknowledged) and try again later.
    Park,
}

impl GroupCore {
    /// Start on `store` as the device `device` with certificate `cert`;
    /// what its outbox holds goes out at the first
    /// [`GroupCore::handle_timeout`].
    pub fn new(
        store: GroupStore,
        device: DeviceIdentity,
        cert: Certificate,
        authority: [u8; 32],
        cfg: GroupConfig,
        seed: u64,
        now: Millis,
    ) -> Result<Self, GroupError> {
        let me = cert.username.to_ascii_lowercase();
        let dev = cert.x25519;
        let mut store = store;
        let mut groups = BTreeMap::new();
        for s in store.load()? {
            let mut grp = Group {
                ops: s.ops.iter().filter_map(|b| Op::decode(b).ok()).collect(),
                key_id: s.key_id,
                key: s.key,
                seq: s.seq,
                keys: s
                    .keys
                    .into_iter()
                    .map(|(u, d, i, k)| ((u, d, i), k))
                    .collect(),
                last_seq: s
                    .last_seq
                    .into_iter()
                    .map(|(u, d, q)| ((u, d), q))
                    .collect(),
                sent_to: s.sent_to.into_iter().collect(),
                late: s.late.then_some(now),
                ..Group::empty(s.id)
            };
            // Our own rows from before version 2 are this device's.
            if grp.adopt(&me, &dev) {
                store.adopt(&s.id, &me, &dev)?;
            }
            grp.reorder();
            grp.op_ids = grp.order.iter().map(|(_, id)| *id).collect();
            grp.state = replay(&s.id, &grp.ops).0;
            groups.insert(s.id, grp);
        }
        let mut pending = BTreeMap::new();
        for (peer, only, item, payload, created) in store.outbox()? {
            let mut p = Pending::new(payload, only, now);
            p.created = Millis(created);
            pending.insert((peer, item), p);
        }
        Ok(GroupCore {
            me,
            dev,
            device,
            cert,
            authority,
            store,
            cfg,
            rng: StdRng::seed_from_u64(seed),
            groups,
            pending,
            by_envelope: BTreeMap::new(),
            devices: BTreeMap::new(),
            asked: BTreeMap::new(),
            answered: BTreeMap::new(),
            asked_all: None,
            early: VecDeque::new(),
            logs_changed: false,
            sync: BTreeMap::new(),
            events: VecDeque::new(),
            stats: GroupStats::default(),
        })
    }

    /// Our renewed certificate (new ops carry it).
    pub fn set_certificate(&mut self, cert: Certificate) {
        self.cert = cert;
    }

    /// Every group we know, joined or not.
    pub fn groups(&self) -> Vec<GroupInfo> {
        self.groups.values().map(|g| g.info(&self.me)).collect()
    }

    /// One group.
    pub fn info(&self, g: &GroupId) -> Option<GroupInfo> {
        self.groups.get(g).map(|g| g.info(&self.me))
    }

    /// The group named by `s`: its id in hex, or its name (when one group
    /// has it).
    pub fn resolve(&self, s: &str) -> Result<GroupId, GroupError> {
        if let Some(id) = crate::wire::hex_decode::<16>(s)
            && self.groups.contains_key(&id)
        {
            return Ok(id);
        }
        let named: Vec<&GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| g.state.name == s)
            .map(|(id, _)| id)
            .collect();
        match named.as_slice() {
            [id] => Ok(**id),
            [] => Err(GroupError::NoSuchGroup(s.to_owned())),
            _ => Err(GroupError::Ambiguous(s.to_owned())),
        }
    }

    /// Items waiting for an acknowledgement.
    pub fn outbox_len(&self) -> usize {
        self.pending.len()
    }

    /// Found a group named `name` with us as its creator and only member.
    pub fn create(
        &mut self,
        now: Millis,
        wall: UnixMillis,
        name: &str,
        sink: &mut dyn EnvelopeSink,
    ) -> Result<GroupId, GroupError> {
        check_name(name)?;
        let joined = self
            .groups
            .values()
            .filter(|g| g.state.members.contains(&self.me))
            .count();
        if joined >= self.cfg.max_groups {
            return Err(GroupError::TooManyGroups(joined));
        }
        let mut nonce = [0u8; 16];
        self.rng.fill_bytes(&mut nonce);
        let id = wire::group_id(&self.me, &nonce);
        let op = Op::sign(
            &self.device,
            &self.cert,
            id,
            1,
            wall.0 / 1000,
            Action::Create {
                nonce,
                name: name.to_owned(),
            },
        );
        self.groups.insert(id, Group::empty(id));
        self.store.save_key(&id, 0, &[0; 32], 0)?;
        self.apply_ops(now, &id, vec![op], true, sink)?;
        Ok(id)
    }

    /// Invite `user` (any member may): they become a member, get the
    /// whole log, and every member sends them a fresh key.
    pub fn invite(
        &mut self,
        now: Millis,
        wall: UnixMillis,
        g: &GroupId,
        user: &str,
        sink: &mut dyn EnvelopeSink,
    ) -> Result<(), GroupError> {
        let user = user.to_ascii_lowercase();
        let grp = self.member_group(g)?;
        if grp.state.members.contains(&user) {
            return Err(GroupError::AlreadyMember(user));
        }
        if grp.state.members.len() >= MAX_MEMBERS {
            return Err(GroupError::Full);
        }
        self.author(now, wall, g, Action::Invite { user }, sink)
    }

    /// Leave a group: the members are told, and we get nothing more.
    pub fn leave(
        &mut self,
        now: Millis,
        wall: UnixMillis,
        g: &GroupId,
        sink: &mut dyn EnvelopeSink,
    ) -> Result<(), GroupError> {
        self.member_group(g)?;
        self.author(now, wall, g, Action::Leave, sink)
    }

    /// Remove `user` (admins only; not the creator).
    pub fn remove(
        &mut self,
        now: Millis,
        wall: UnixMillis,
        g: &GroupId,
        user: &str,
        sink: &mut dyn EnvelopeSink,
    ) -> Result<(), GroupError> {
        let user = user.to_ascii_lowercase();
        let grp = self.member_group(g)?;
        if !grp.state.admins.contains(&self.me) {
            return Err(GroupError::NotAdmin);
        }
        if !grp.state.members.contains(&user) || user == self.me {
            return Err(GroupError::NoSuchMember(user));
        }
        if user == grp.state.creator {
            return Err(GroupError::Creator);
        }
        self.author(now, wall, g, Action::Remove { user }, sink)
    }

    /// Rename a group (any member).
    pub fn rename(
        &mut self,
        now: Millis,
        wall: UnixMillis,
        g: &GroupId,
        name: &str,
        sink: &mut dyn EnvelopeSink,
    ) -> Result<(), GroupError> {
        check_name(name)?;
        self.member_group(g)?;
        let name = name.to_owned();
        self.author(now, wall, g, Action::Rename { name }, sink)
    }

    /// Make a member an admin (admins only).
    pub fn make_admin(
        &mut self,
        now: Millis,
        wall: UnixMillis,
        g: &GroupId,
        user: &str,
        sink: &mut dyn EnvelopeSink,
    ) -> Result<(), GroupError> {
        let user = user.to_ascii_lowercase();
        let grp = self.member_group(g)?;
        if !grp.state.admins.contains(&self.me) {
            return Err(GroupError::NotAdmin);
        }
        if !grp.state.members.contains(&user) {
            return Err(GroupError::NoSuchMember(user));
        }
        self.author(now, wall, g, Action::Admin { user }, sink)
    }

    fn member_group(&self, g: &GroupId) -> Result<&Group, GroupError> {
        let grp = self
            .groups
            .get(g)
            .ok_or_else(|| GroupError::NoSuchGroup(crate::wire::hex_encode(g)))?;
        if !grp.state.members.contains(&self.me) {
            return Err(GroupError::NotMember);
        }
        if grp.ops.len() >= MAX_OPS {
            return Err(GroupError::LogFull);
        }
        Ok(grp)
    }

    /// Sign an op of ours and apply it (which sends it).
    fn author(
        &mut self,
        now: Millis,
        wall: UnixMillis,
        g: &GroupId,
        action: Action,
        sink: &mut dyn EnvelopeSink,
    ) -> Result<(), GroupError> {
        let lamport = self.groups.get(g).map_or(1, Group::lamport);
        let op = Op::sign(&self.device, &self.cert, *g, lamport, wall.0 / 1000, action);
        self.apply_ops(now, g, vec![op], true, sink)
    }

    /// Merge verified `ops` into group `g`'s log, replay it, persist, and
    /// act on what changed: events, ops forwarded by their author, the
    /// whole log to members we added, a fresh key of ours when the
    /// member list changed. `here`: this device made them.
    fn apply_ops(
        &mut self,
        now: Millis,
        g: &GroupId,
        ops: Vec<Op>,
        here: bool,
        sink: &mut dyn EnvelopeSink,
    ) -> Result<(), GroupError> {
        let me = self.me.clone();
        let Some(grp) = self.groups.get_mut(g) else {
            return Ok(());
        };
        let mut fresh = Vec::new();
        for op in ops {
            let id = op.id();
            if grp.op_ids.contains(&id) {
                continue;
            }
            if grp.ops.len() >= MAX_OPS {
                self.stats.log_full += 1;
                continue;
            }
            grp.op_ids.insert(id);
            fresh.push((id, op.clone()));
            grp.ops.push(op);
        }
        if fresh.is_empty() {
            return Ok(());
        }
        grp.reorder();
        let before = grp.state.clone();
        let (state, effects) = replay(g, &grp.ops);
        grp.state = state;
        let encoded: Vec<([u8; 16], Vec<u8>)> =
            fresh.iter().map(|(id, op)| (*id, op.encode())).collect();
        self.store.add_ops(g, &encoded)?;
        self.logs_changed = true;
        let fresh_ids: BTreeSet<[u8; 16]> = fresh.iter().map(|(id, _)| *id).collect();
        let grp = &self.groups[g];
        let info = grp.info(&me);
        let was_in = before.members.contains(&me);
        let now_in = grp.state.members.contains(&me);
        // Our own create says "created"; a log we are welcomed into, "joined"
        // (its create is history).
        let created_here = fresh
            .iter()
            .any(|(_, op)| matches!(op.action, Action::Create { .. }) && op.author() == me);
        if now_in && !was_in && !created_here {
            self.events.push_back(GroupEvent::Joined(info.clone()));
        }
        let mut added = Vec::new();
        let mut membership = false;
        for (op, eff) in grp.ops.iter().zip(&effects) {
            if let (Some(change), true) = (eff, fresh_ids.contains(&op.id())) {
                if let Change::Added(u) = change {
                    added.push(u.clone());
                }
                membership |= matches!(
                    change,
                    Change::Created | Change::Added(_) | Change::Left(_) | Change::Removed(_)
                );
                if *change != Change::Created || created_here {
                    self.events.push_back(GroupEvent::Changed {
                        info: info.clone(),
                        by: op.author().to_owned(),
                        change: change.clone(),
                    });
                }
            }
        }
        // Ops made here go to everyone in the group before or after them
        // (every device of each) and to our other devices; a member we
        // added gets the whole log.
        if here {
            let mut all: BTreeSet<String> =
                before.members.union(&grp.state.members).cloned().collect();
            all.insert(me.clone());
            let ours: Vec<Vec<u8>> = fresh.iter().map(|(_, op)| op.encode()).collect();
            let log: Vec<Vec<u8>> = grp.ops.iter().map(Op::encode).collect();
            for user in &all {
                let whole = added.contains(user);
                let list = if whole { &log } else { &ours };
                for chunk in list.chunks(wire::MAX_OPS_PER_ITEM) {
                    let body = Body::Ops {
                        group: *g,
                        ops: chunk.iter().map(Vec::as_slice).collect(),
                    };
                    self.queue(now, (user, None), body, sink)?;
                }
            }
        }
        if now_in && (membership || !was_in) {
            self.rotate(now, g, sink)?;
        }
        // A new member list may let held messages through.
        self.deliver_held(now, g, sink);
        Ok(())
    }

    /// A fresh sender key of ours, to every other current member.
    fn rotate(
        &mut self,
        now: Millis,
        g: &GroupId,
        sink: &mut dyn EnvelopeSink,
    ) -> Result<(), GroupError> {
        let me = self.me.clone();
        let mut key = [0u8; 32];
        self.rng.fill_bytes(&mut key);
        let grp = self.groups.get_mut(g).ok_or(GroupError::NotMember)?;
        grp.key_id += 1;
        grp.key = key;
        let key_id = grp.key_id;
        grp.keys.insert((me.clone(), self.dev, key_id), key);
        // Every member (ours included: our other devices).
        let members: Vec<String> = grp.state.members.iter().cloned().collect();
        let seq = grp.seq;
        let digest = Some(grp.digest);
        self.store.save_key(g, key_id, &key, seq)?;
        self.store.add_key(g, (&me, &self.dev), key_id, &key)?;
        for m in members {
            let body = Body::Key {
                group: *g,
                key_id,
                key,
                digest,
            };
            self.queue(now, (&m, None), body, sink)?;
        }
        Ok(())
    }

    /// Our current key in group `g`, to device `dev` of `user` alone (a
    /// device of theirs new to us, or another of ours that asked).
    fn send_key_to(
        &mut self,
        now: Millis,
        g: &GroupId,
        (user, dev): (&str, Dev),
        sink: &mut dyn EnvelopeSink,
    ) -> Result<(), GroupError> {
        let Some(grp) = self.groups.get(g) else {
            return Ok(());
        };
        if grp.key_id == 0 || !grp.state.members.contains(&self.me) {
            return Ok(());
        }
        let body = Body::Key {
            group: *g,
            key_id: grp.key_id,
            key: grp.key,
            digest: Some(grp.digest),
        };
        self.queue(now, (user, Some(dev)), body, sink)
    }

    /// Send `text` to the group's current members.
    pub fn send(
        &mut self,
        now: Millis,
        wall: UnixMillis,
        g: &GroupId,
        text: &str,
        sink: &mut dyn EnvelopeSink,
    ) -> Result<u64, GroupError> {
        if text.is_empty() {
            return Err(GroupError::Empty);
        }
        if text.len() > MAX_TEXT {
            return Err(GroupError::TooLong {
                len: text.len(),
                max: MAX_TEXT,
            });
        }
        let me = self.me.clone();
        let grp = self
            .groups
            .get_mut(g)
            .ok_or_else(|| GroupError::NoSuchGroup(crate::wire::hex_encode(g)))?;
        if !grp.state.members.contains(&me) {
            return Err(GroupError::NotMember);
        }
        let seq = grp.seq + 1;
        let ct = wire::seal_message(&grp.key, g, &me, grp.key_id, seq, wall.0, text);
        let mut items = Vec::new();
        // Every member, every device; ours too (our other devices).
        for m in grp.state.members.iter() {
            let prev = grp.sent_to.get(m).copied().unwrap_or(0);
            let mut item = [0u8; 16];
            self.rng.fill_bytes(&mut item);
            let payload = GroupPayload::Item {
                item,
                body: Body::Msg {
                    group: *g,
                    key_id: grp.key_id,
                    seq,
                    prev,
                    ct: &ct,
                    digest: Some(grp.digest),
                },
            }
            .encode();
            items.push((m.clone(), item, seq, payload));
        }
        let m = GroupMessage {
            group: *g,
            sender: me,
            seq,
            text: text.to_owned(),
            sent_at_ms: wall.0,
            at_ms: wall.0,
            outgoing: true,
        };
        self.store
            .queue_outgoing(&m, &self.dev, grp.key_id, &ct, &items, now.0)?;
        grp.seq = seq;
        grp.last_seq.insert((m.sender.clone(), self.dev), seq);
        for (peer, ..) in &items {
            grp.sent_to.insert(peer.clone(), seq);
        }
        for (peer, item, _, payload) in items {
            self.pending
                .insert((peer.clone(), item), Pending::new(payload, None, now));
            self.attempt(now, &(peer, item), sink);
        }
        self.events.push_back(GroupEvent::Message(m));
        Ok(seq)
    }

    /// Queue one item for `to.0` (every device, or only `to.1`) and send
    /// it.
    fn queue(
        &mut self,
        now: Millis,
        to: (&str, Option<Dev>),
        body: Body<'_>,
        sink: &mut dyn EnvelopeSink,
    ) -> Result<(), GroupError> {
        let mut item = [0u8; 16];
        self.rng.fill_bytes(&mut item);
        let payload = GroupPayload::Item { item, body }.encode();
        self.store
            .queue_item(to.0, to.1.as_ref(), &item, &payload, now.0)?;
        let key = (to.0.to_owned(), item);
        self.pending
            .insert(key.clone(), Pending::new(payload, to.1, now));
        self.attempt(now, &key, sink);
        Ok(())
    }

    /// Whether every device an item waits for acknowledged it: its one
    /// device; else at least one, and each of the user's we know.
    fn complete(&self, key: &(String, [u8; 16])) -> bool {
        let Some(p) = self.pending.get(key) else {
            return true;
        };
        match p.only {
            Some(d) => p.acked.contains(&d),
            None => {
                !p.acked.is_empty()
                    && self
                        .devices
                        .get(&key.0)
                        .is_none_or(|ds| ds.is_subset(&p.acked))
            }
        }
    }

    /// Send an item again: to every device of its recipient until one
    /// acknowledged it, then to each known device that has not.
    fn attempt(&mut self, now: Millis, key: &(String, [u8; 16]), sink: &mut dyn EnvelopeSink) {
        let known = self.devices.get(&key.0).cloned().unwrap_or_default();
        let Some(p) = self.pending.get_mut(key) else {
            return;
        };
        p.attempts += 1;
        p.next_try = now + self.cfg.attempt_timeout_ms;
        let targets: Vec<Dev> = match p.only {
            Some(d) => vec![d],
            None if p.acked.is_empty() => {
                let env = sink.send_envelope(&key.0, kind::GROUP, &p.payload, true);
                self.by_envelope.insert(env, (key.clone(), None));
                return;
            }
            None => known.difference(&p.acked).copied().collect(),
        };
        for d in targets {
            let env = sink.send_envelope_to_device(&key.0, &d, kind::GROUP, &p.payload, true);
            self.by_envelope.insert(env, (key.clone(), Some(d)));
        }
    }

    /// An item done: out of the outbox.
    fn finish(&mut self, key: &(String, [u8; 16])) -> Result<Option<Pending>, GroupError> {
        let p = self.pending.remove(key);
        if p.is_some() {
            self.by_envelope.retain(|_, (k, _)| k != key);
            self.store.remove_item(&key.0, &key.1)?;
        }
        Ok(p)
    }

    /// An envelope of a group kind from `from` (verified by the overlay),
    /// who stands with us as `standing`. Returns false when the kind is
    /// not a group kind.
    pub fn on_envelope(
        &mut self,
        now: Millis,
        from: &Certificate,
        standing: Standing,
        k: u8,
        payload: &[u8],
        sink: &mut dyn EnvelopeSink,
    ) -> bool {
        if ![kind::GROUP, kind::GROUP_ACK, kind::GROUP_ASK].contains(&k) {
            return false;
        }
        let peer = from.username.to_ascii_lowercase();
        let dev = from.x25519;
        let own = peer == self.me;
        if own && dev == self.dev {
            // Our own envelope (the overlay never sends one here).
            return true;
        }
        // Our own account speaks for us.
        let standing = if own { Standing::Contact } else { standing };
        if standing == Standing::Blocked {
            self.stats.blocked_dropped += 1;
            return true;
        }
        let Ok(p) = GroupPayload::decode(k, payload) else {
            self.stats.bad += 1;
            tracing::debug!(%peer, "malformed group payload");
            return true;
        };
        if own
            || self
                .groups
                .values()
                .any(|g| g.state.members.contains(&peer))
        {
            self.note_device(now, &peer, dev, sink);
        }
        let fate = match p {
            GroupPayload::Ack { item } => self.on_ack(&peer, dev, &item).map(|()| Fate::Done),
            GroupPayload::Item { item, body } => {
                self.item(now, (&peer, dev), standing, item, body, sink)
            }
            GroupPayload::Ask { groups } => self.on_ask(now, (&peer, dev), &groups, sink),
        };
        match fate {
            Ok(Fate::Done) => {}
            Ok(Fate::Park) => self.park(now, (&peer, dev), standing, payload),
            Err(e) => self.events.push_back(GroupEvent::StoreFailed {
                error: e.to_string(),
            }),
        }
        self.retry_early(now, sink);
        true
    }

    /// Device `dev` of `user` (a member, or us) sent us something. A new
    /// one of ours is asked for the groups it has that we lack.
    fn note_device(&mut self, now: Millis, user: &str, dev: Dev, sink: &mut dyn EnvelopeSink) {
        let ds = self.devices.entry(user.to_owned()).or_default();
        if ds.contains(&dev) || ds.len() >= MAX_DEVICES {
            return;
        }
        ds.insert(dev);
        if user == self.me {
            self.ask_device(now, dev, sink);
        }
    }

    /// The groups we know, as an ask lists them.
    fn ask_payload(&self) -> Vec<u8> {
        let groups: Vec<GroupId> = self
            .groups
            .keys()
            .take(wire::MAX_ASK_GROUPS)
            .copied()
            .collect();
        GroupPayload::Ask { groups }.encode()
    }

    /// Ask our device `dev` for the groups we lack (once per sync window).
    fn ask_device(&mut self, now: Millis, dev: Dev, sink: &mut dyn EnvelopeSink) {
        if self
            .asked
            .get(&dev)
            .is_some_and(|t| now.since(*t) < self.cfg.sync_ms)
        {
            return;
        }
        if self.asked.len() >= MAX_DEVICES && !self.asked.contains_key(&dev) {
            self.asked.pop_first();
        }
        self.asked.insert(dev, now);
        let p = self.ask_payload();
        let me = self.me.clone();
        sink.send_envelope_to_device(&me, &dev, kind::GROUP_ASK, &p, false);
    }

    /// We are online (our record is published): ask our other devices
    /// that are online for the groups we lack (at most once per sync
    /// window; not stored for those offline, who ask us when they come).
    pub fn on_online(&mut self, now: Millis, sink: &mut dyn EnvelopeSink) {
        if self
            .asked_all
            .is_some_and(|t| now.since(t) < self.cfg.sync_ms)
        {
            return;
        }
        self.asked_all = Some(now);
        let p = self.ask_payload();
        let me = self.me.clone();
        sink.send_envelope(&me, kind::GROUP_ASK, &p, false);
    }

    /// Another device of ours asks for the groups it lacks (it knows
    /// `theirs`): the log of each other group we are in and our key there,
    /// sealed to that device alone. Asks from another account, or again
    /// within a sync window, are refused (counted).
    fn on_ask(
        &mut self,
        now: Millis,
        (peer, dev): (&str, Dev),
        theirs: &[GroupId],
        sink: &mut dyn EnvelopeSink,
    ) -> Result<Fate, GroupError> {
        if peer != self.me
            || self
                .answered
                .get(&dev)
                .is_some_and(|t| now.since(*t) < self.cfg.sync_ms)
        {
            self.stats.asks_refused += 1;
            return Ok(Fate::Done);
        }
        if self.answered.len() >= MAX_DEVICES && !self.answered.contains_key(&dev) {
            self.answered.pop_first();
        }
        self.answered.insert(dev, now);
        self.stats.asks_answered += 1;
        let theirs: BTreeSet<&GroupId> = theirs.iter().collect();
        let lacking: Vec<GroupId> = self
            .groups
            .values()
            .filter(|g| g.state.members.contains(&self.me) && !theirs.contains(&g.id))
            .map(|g| g.id)
            .take(self.cfg.max_groups)
            .collect();
        let me = self.me.clone();
        for g in lacking {
            let log: Vec<Vec<u8>> = self.groups[&g].ops.iter().map(Op::encode).collect();
            for chunk in log.chunks(wire::MAX_OPS_PER_ITEM) {
                let body = Body::Ops {
                    group: g,
                    ops: chunk.iter().map(Vec::as_slice).collect(),
                };
                self.queue(now, (&me, Some(dev)), body, sink)?;
            }
            self.send_key_to(now, &g, (&me, dev), sink)?;
        }
        Ok(Fate::Done)
    }

    fn item(
        &mut self,
        now: Millis,
        from: (&str, Dev),
        standing: Standing,
        item: [u8; 16],
        body: Body<'_>,
        sink: &mut dyn EnvelopeSink,
    ) -> Result<Fate, GroupError> {
        match body {
            Body::Ops { group, ops } => self.on_ops(now, from, standing, item, group, &ops, sink),
            Body::Key {
                group,
                key_id,
                key,
                digest,
            } => {
                let fate = self.on_key(now, from, item, group, key_id, key, sink)?;
                if let (Fate::Done, Some(d)) = (&fate, digest) {
                    self.note_digest(now, &group, from, d, sink)?;
                }
                Ok(fate)
            }
            Body::Msg {
                group,
                key_id,
                seq,
                prev,
                ct,
                digest,
            } => {
                let fate = self.on_msg(now, from, item, group, (key_id, seq, prev), ct, sink)?;
                if let (Fate::Done, Some(d)) = (&fate, digest) {
                    self.note_digest(now, &group, from, d, sink)?;
                }
                Ok(fate)
            }
            Body::Ids { .. } | Body::Want { .. } | Body::Pull { .. } => {
                self.on_sync(now, from, item, body, sink)
            }
        }
    }

    /// `peer` (a member) said their log's digest is `theirs`: when it is
    /// not ours, start a sync with them (one per window; a mismatch seen
    /// after that is synced when the window ends).
    fn note_digest(
        &mut self,
        now: Millis,
        g: &GroupId,
        (peer, dev): (&str, Dev),
        theirs: Digest,
        sink: &mut dyn EnvelopeSink,
    ) -> Result<(), GroupError> {
        let Some(grp) = self.groups.get(g) else {
            return Ok(());
        };
        if grp.digest == theirs
            || !grp.state.members.contains(&self.me)
            || !grp.state.members.contains(peer)
        {
            return Ok(());
        }
        let Some(sp) = self.sync_peer(now, g, peer) else {
            return Ok(());
        };
        if sp.started {
            sp.due = Some((theirs, dev));
            return Ok(());
        }
        sp.started = true;
        sp.due = None;
        self.stats.syncs_started += 1;
        tracing::debug!(%peer, "group logs differ: syncing");
        self.send_ids(now, g, (peer, dev), None, sink)
    }

    /// The sync state with `peer` in group `g`, its window renewed when
    /// over; `None` (counted) when the table is full.
    fn sync_peer(&mut self, now: Millis, g: &GroupId, peer: &str) -> Option<&mut SyncPeer> {
        let key = (*g, peer.to_owned());
        if !self.sync.contains_key(&key) && self.sync.len() >= self.cfg.max_sync_peers {
            self.stats.sync_refused += 1;
            return None;
        }
        let sync_ms = self.cfg.sync_ms;
        let sp = self.sync.entry(key).or_insert(SyncPeer {
            window: now,
            started: false,
            answered: 0,
            due: None,
        });
        if now.since(sp.window) >= sync_ms {
            sp.window = now;
            sp.started = false;
            sp.answered = 0;
        }
        Some(sp)
    }

    /// Send `peer` our page of op ids that ends at `before` (no bound: the
    /// last page of the log).
    fn send_ids(
        &mut self,
        now: Millis,
        g: &GroupId,
        (peer, dev): (&str, Dev),
        before: Option<OpKey>,
        sink: &mut dyn EnvelopeSink,
    ) -> Result<(), GroupError> {
        let Some(grp) = self.groups.get(g) else {
            return Ok(());
        };
        let upto = before.map_or(grp.order.len(), |b| grp.below(&b));
        let from = upto.saturating_sub(wire::MAX_IDS);
        let start = if from == 0 {
            wire::FIRST_KEY
        } else {
            grp.order[from]
        };
        let body = Body::Ids {
            group: *g,
            start,
            end: before,
            below: grp.prefix_digest(from),
            ids: grp.order[from..upto].iter().map(|(_, id)| *id).collect(),
        };
        self.queue(now, (peer, Some(dev)), body, sink)
    }

    /// A sync request (`ids`, `want` or `pull`) from device `dev` of
    /// `peer`; the answers go to that device.
    fn on_sync(
        &mut self,
        now: Millis,
        (peer, dev): (&str, Dev),
        item: [u8; 16],
        body: Body<'_>,
        sink: &mut dyn EnvelopeSink,
    ) -> Result<Fate, GroupError> {
        let g = body.group();
        let Some(grp) = self.groups.get(&g) else {
            return Ok(Fate::Park);
        };
        if !grp.state.members.contains(&self.me) {
            self.stats.sync_refused += 1;
            self.ack((peer, dev), item, sink);
            return Ok(Fate::Done);
        }
        if !grp.state.members.contains(peer) {
            // The op that adds them may still be on its way.
            return Ok(Fate::Park);
        }
        let budget = self.cfg.sync_answers;
        let answer = match self.sync_peer(now, &g, peer) {
            Some(sp) if sp.answered < budget => {
                sp.answered += 1;
                true
            }
            _ => false,
        };
        if !answer {
            self.stats.sync_refused += 1;
            self.ack((peer, dev), item, sink);
            return Ok(Fate::Done);
        }
        let grp = &self.groups[&g];
        let mut give: Vec<Vec<u8>> = Vec::new();
        let mut want: Vec<[u8; 16]> = Vec::new();
        let mut pull = None;
        match &body {
            Body::Ids {
                start,
                end,
                below,
                ids,
                ..
            } => {
                let theirs: BTreeSet<&[u8; 16]> = ids.iter().collect();
                let lo = grp.below(start);
                let hi = end.map_or(grp.order.len(), |e| grp.below(&e));
                give = (lo..hi.max(lo))
                    .filter(|&i| !theirs.contains(&grp.order[i].1))
                    .take(MAX_SYNC_OPS)
                    .map(|i| grp.ops[i].encode())
                    .collect();
                want = ids
                    .iter()
                    .filter(|id| !grp.op_ids.contains(*id))
                    .copied()
                    .collect();
                if *start != wire::FIRST_KEY && grp.prefix_digest(lo) != *below {
                    pull = Some(*start);
                }
            }
            Body::Want { ids, .. } => {
                let wanted: BTreeSet<&[u8; 16]> = ids.iter().collect();
                give = grp
                    .order
                    .iter()
                    .zip(&grp.ops)
                    .filter(|((_, id), _)| wanted.contains(id))
                    .take(MAX_SYNC_OPS)
                    .map(|(_, op)| op.encode())
                    .collect();
            }
            Body::Pull { before, .. } => {
                let before = *before;
                self.ack((peer, dev), item, sink);
                self.send_ids(now, &g, (peer, dev), Some(before), sink)?;
                return Ok(Fate::Done);
            }
            _ => {}
        }
        self.stats.ops_synced += give.len() as u64;
        for chunk in give.chunks(wire::MAX_OPS_PER_ITEM) {
            let body = Body::Ops {
                group: g,
                ops: chunk.iter().map(Vec::as_slice).collect(),
            };
            self.queue(now, (peer, Some(dev)), body, sink)?;
        }
        if !want.is_empty() {
            self.queue(
                now,
                (peer, Some(dev)),
                Body::Want {
                    group: g,
                    ids: want,
                },
                sink,
            )?;
        }
        if let Some(before) = pull {
            self.queue(
                now,
                (peer, Some(dev)),
                Body::Pull { group: g, before },
                sink,
            )?;
        }
        self.ack((peer, dev), item, sink);
        Ok(Fate::Done)
    }

    /// Syncs that came due as their windows ended; sync state whose
    /// window ended with nothing due is dropped.
    fn sync_due(&mut self, now: Millis, sink: &mut dyn EnvelopeSink) {
        let sync_ms = self.cfg.sync_ms;
        let mut due = Vec::new();
        self.sync.retain(|k, sp| {
            if now.since(sp.window) < sync_ms {
                return true;
            }
            if let Some(d) = sp.due.take() {
                due.push((k.clone(), d));
            }
            false
        });
        for ((g, peer), (theirs, dev)) in due {
            if let Err(e) = self.note_digest(now, &g, (&peer, dev), theirs, sink) {
                self.events.push_back(GroupEvent::StoreFailed {
                    error: e.to_string(),
                });
            }
        }
    }

    fn park(&mut self, now: Millis, (from, dev): (&str, Dev), standing: Standing, payload: &[u8]) {
        let theirs = self.early.iter().filter(|e| e.from == from).count();
        if theirs >= self.cfg.max_early_per_sender || self.early.len() >= self.cfg.max_early {
            self.stats.early_dropped += 1;
            return;
        }
        self.early.push_back(Early {
            from: from.to_owned(),
            dev,
            standing,
            payload: payload.to_vec(),
            since: now,
        });
    }

    /// Try the parked items again after a log changed.
    fn retry_early(&mut self, now: Millis, sink: &mut dyn EnvelopeSink) {
        for _ in 0..8 {
            if !std::mem::take(&mut self.logs_changed) || self.early.is_empty() {
                return;
            }
            let parked = std::mem::take(&mut self.early);
            for e in parked {
                let Ok(GroupPayload::Item { item, body }) =
                    GroupPayload::decode(kind::GROUP, &e.payload)
                else {
                    continue;
                };
                match self.item(now, (&e.from, e.dev), e.standing, item, body, sink) {
                    Ok(Fate::Done) => {}
                    Ok(Fate::Park) => self.early.push_back(e),
                    Err(err) => self.events.push_back(GroupEvent::StoreFailed {
                        error: err.to_string(),
                    }),
                }
            }
        }
    }

    /// Acknowledge an item to the device that sent it.
    fn ack(&mut self, (to, dev): (&str, Dev), item: [u8; 16], sink: &mut dyn EnvelopeSink) {
        let ack = GroupPayload::Ack { item }.encode();
        sink.send_envelope_to_device(to, &dev, kind::GROUP_ACK, &ack, true);
    }

    /// Device `dev` of `peer` acknowledged `item`: done once each device
    /// it waits for did (see [`GroupCore::complete`]); a message's first
    /// acknowledgement by a user is reported.
    fn on_ack(&mut self, peer: &str, dev: Dev, item: &[u8; 16]) -> Result<(), GroupError> {
        let key = (peer.to_owned(), *item);
        let Some(p) = self.pending.get_mut(&key) else {
            return Ok(());
        };
        if p.only.is_some_and(|d| d != dev) {
            return Ok(());
        }
        let first = p.acked.is_empty();
        p.acked.insert(dev);
        if first
            && let Ok(GroupPayload::Item {
                body: Body::Msg { group, seq, .. },
                ..
            }) = GroupPayload::decode(kind::GROUP, &p.payload)
            && peer != self.me
        {
            self.events.push_back(GroupEvent::Acked {
                group,
                seq,
                by: peer.to_owned(),
            });
        }
        if self.complete(&key) {
            self.finish(&key)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn on_ops(
        &mut self,
        now: Millis,
        (peer, dev): (&str, Dev),
        standing: Standing,
        item: [u8; 16],
        g: GroupId,
        raw: &[&[u8]],
        sink: &mut dyn EnvelopeSink,
    ) -> Result<Fate, GroupError> {
        let mut ops = Vec::new();
        for b in raw {
            match Op::decode(b) {
                Ok(op) if op.group == g && op.verify(&self.authority) => ops.push(op),
                _ => {
                    self.stats.bad += 1;
                    self.ack((peer, dev), item, sink);
                    return Ok(Fate::Done);
                }
            }
        }
        let known = self.groups.get(&g);
        let own = peer == self.me;
        let sender_member = known.is_some_and(|grp| grp.state.members.contains(peer));
        let me_member = known.is_some_and(|grp| grp.state.members.contains(&self.me));
        let joined = self
            .groups
            .values()
            .filter(|g| g.state.members.contains(&self.me))
            .count();
        // Ops that add us are an invitation: taken from contacts only.
        let invites_me = ops
            .iter()
            .any(|o| matches!(&o.action, Action::Invite { user } if *user == self.me));
        if own {
            // Another device of ours: a group we are in there is ours here.
            if known.is_none() && joined >= self.cfg.max_groups {
                self.stats.too_many_groups += 1;
                self.ack((peer, dev), item, sink);
                return Ok(Fate::Done);
            }
        } else if invites_me && !me_member {
            if standing != Standing::Contact {
                self.stats.invites_dropped += 1;
                self.events.push_back(GroupEvent::InviteDropped {
                    from: peer.to_owned(),
                    group: g,
                });
                self.ack((peer, dev), item, sink);
                return Ok(Fate::Done);
            }
            if known.is_none() && joined >= self.cfg.max_groups {
                self.stats.too_many_groups += 1;
                self.ack((peer, dev), item, sink);
                return Ok(Fate::Done);
            }
        } else if !sender_member {
            // The rest of a log a contact is sending us with our
            // invitation, or ops from a member we do not know of yet (the
            // op that adds them may still be on its way): kept for later.
            let continuation = known.is_some() && !me_member && standing == Standing::Contact;
            if !continuation {
                return Ok(Fate::Park);
            }
        }
        // Several ops at once from another of our devices, about a group
        // new here: a log answering our ask (ops made live come one by
        // one), so what was sent before this device was there will not
        // come.
        let late = own && ops.len() > 1;
        if let std::collections::btree_map::Entry::Vacant(v) = self.groups.entry(g) {
            v.insert(Group {
                late: late.then_some(now),
                ..Group::empty(g)
            });
            self.store.save_key(&g, 0, &[0; 32], 0)?;
            if late {
                self.store.set_late(&g)?;
            }
        }
        self.apply_ops(now, &g, ops, false, sink)?;
        self.ack((peer, dev), item, sink);
        Ok(Fate::Done)
    }

    #[allow(clippy::too_many_arguments)]
    fn on_key(
        &mut self,
        now: Millis,
        (peer, dev): (&str, Dev),
        item: [u8; 16],
        g: GroupId,
        key_id: u32,
        key: [u8; 32],
        sink: &mut dyn EnvelopeSink,
    ) -> Result<Fate, GroupError> {
        let Some(grp) = self.groups.get_mut(&g) else {
            return Ok(Fate::Park);
        };
        if !grp.state.members.contains(peer) {
            return Ok(Fate::Park);
        }
        if grp.adopt(peer, &dev) {
            self.store.adopt(&g, peer, &dev)?;
        }
        let theirs: Vec<u32> = grp
            .keys
            .keys()
            .filter(|(s, d, _)| s == peer && *d == dev)
            .map(|(_, _, i)| *i)
            .collect();
        // A device new to us in this group gets our current key.
        let new_device = theirs.is_empty();
        let new_key = !grp.keys.contains_key(&(peer.to_owned(), dev, key_id));
        if new_key {
            if theirs.len() >= MAX_KEYS_PER_SENDER
                && let Some(&oldest) = theirs.iter().min()
            {
                grp.keys.remove(&(peer.to_owned(), dev, oldest));
                self.stats.keys_dropped += 1;
                self.store.remove_key(&g, (peer, &dev), oldest)?;
            }
            grp.keys.insert((peer.to_owned(), dev, key_id), key);
            self.store.add_key(&g, (peer, &dev), key_id, &key)?;
        }
        self.ack((peer, dev), item, sink);
        if new_device {
            self.send_key_to(now, &g, (peer, dev), sink)?;
        }
        self.deliver_held(now, &g, sink);
        Ok(Fate::Done)
    }

    #[allow(clippy::too_many_arguments)]
    fn on_msg(
        &mut self,
        now: Millis,
        (peer, dev): (&str, Dev),
        item: [u8; 16],
        g: GroupId,
        (key_id, seq, prev): (u32, u64, u64),
        ct: &[u8],
        sink: &mut dyn EnvelopeSink,
    ) -> Result<Fate, GroupError> {
        let Some(grp) = self.groups.get_mut(&g) else {
            return Ok(Fate::Park);
        };
        if grp.adopt(peer, &dev) {
            self.store.adopt(&g, peer, &dev)?;
        }
        let Some(grp) = self.groups.get_mut(&g) else {
            return Ok(Fate::Park);
        };
        let sender = (peer.to_owned(), dev);
        let last = grp.last_seq.get(&sender).copied().unwrap_or(0);
        if seq <= last {
            // A copy of one we kept: acknowledge again.
            self.ack((peer, dev), item, sink);
            return Ok(Fate::Done);
        }
        if !grp.state.members.contains(peer) {
            return Ok(Fate::Park);
        }
        let held = grp.held.entry(sender).or_default();
        if !held.contains_key(&seq) {
            if held.len() >= self.cfg.max_held {
                self.stats.held_over_limit += 1;
                return Ok(Fate::Done);
            }
            held.insert(
                seq,
                Held {
                    prev,
                    key_id,
                    ct: ct.to_vec(),
                    item,
                    since: now,
                },
            );
        }
        self.deliver_held(now, &g, sink);
        Ok(Fate::Done)
    }

    /// Show every held message that is next in its sender's order (or
    /// held past `gap_ms`) and whose key we have.
    fn deliver_held(&mut self, now: Millis, g: &GroupId, sink: &mut dyn EnvelopeSink) {
        let me = self.me.clone();
        let Some(grp) = self.groups.get_mut(g) else {
            return;
        };
        let gaps_ms: BTreeMap<(String, Dev), u64> = grp
            .held
            .iter()
            .filter_map(|(k, h)| {
                let (_, first) = h.first_key_value()?;
                Some((k.clone(), grp.gap(&self.cfg, k, first.since)))
            })
            .collect();
        let mut out: Vec<Ready> = Vec::new();
        let mut acks: Vec<((String, Dev), [u8; 16])> = Vec::new();
        let (mut bad, mut gaps) = (0, 0);
        for (sender_dev, held) in grp.held.iter_mut() {
            let (sender, dev) = sender_dev;
            let gap_ms = gaps_ms.get(sender_dev).copied().unwrap_or(self.cfg.gap_ms);
            loop {
                let last = grp.last_seq.get(sender_dev).copied().unwrap_or(0);
                // Copies of what we kept meanwhile: acknowledged.
                while let Some((&s, _)) = held.first_key_value() {
                    if s > last {
                        break;
                    }
                    if let Some(h) = held.remove(&s) {
                        acks.push((sender_dev.clone(), h.item));
                    }
                }
                let Some((&seq, h)) = held.first_key_value() else {
                    break;
                };
                let in_order = h.prev == last;
                if !in_order && now.since(h.since) < gap_ms {
                    break;
                }
                let Some(key) = grp.keys.get(&(sender.clone(), *dev, h.key_id)) else {
                    break;
                };
                let Some(h) = held.remove(&seq) else { break };
                match wire::open_message(key, g, sender, h.key_id, seq, &h.ct) {
                    Some((sent_at_ms, text)) => {
                        if !in_order {
                            gaps += 1;
                        }
                        grp.last_seq.insert(sender_dev.clone(), seq);
                        let m = GroupMessage {
                            group: *g,
                            sender: sender.clone(),
                            seq,
                            text,
                            sent_at_ms,
                            at_ms: now.0,
                            outgoing: *sender == me,
                        };
                        out.push((h.item, m, *dev, h.key_id, h.ct));
                    }
                    // Not acknowledged: a good copy may follow.
                    None => bad += 1,
                }
            }
        }
        grp.held.retain(|_, h| !h.is_empty());
        self.stats.undecryptable += bad;
        self.stats.gaps_skipped += gaps;
        for ((to, dev), item) in acks {
            self.ack((&to, dev), item, sink);
        }
        for (item, m, dev, key_id, ct) in out {
            match self.store.insert_incoming(&m, &dev, key_id, &ct) {
                Ok(new) => {
                    let sender = m.sender.clone();
                    if new {
                        self.events.push_back(GroupEvent::Message(m));
                    }
                    self.ack((&sender, dev), item, sink);
                }
                Err(e) => self.events.push_back(GroupEvent::StoreFailed {
                    error: e.to_string(),
                }),
            }
        }
    }

    /// `user` was just heard from: what waits for them on their owners'
    /// mailboxes, or in a long backoff, goes again now.
    pub fn peer_online(&mut self, now: Millis, user: &str) {
        let user = user.to_ascii_lowercase();
        let soon = now + self.cfg.ack_wait_ms;
        for ((to, _), p) in self.pending.iter_mut() {
            if *to == user && p.next_try > soon {
                p.next_try = now;
            }
        }
    }

    /// The overlay's outcome for envelope `env`; whether it was ours.
    pub fn on_envelope_outcome(
        &mut self,
        now: Millis,
        env: &EnvelopeId,
        o: EnvelopeOutcome,
    ) -> bool {
        let Some((key, to_dev)) = self.by_envelope.remove(env) else {
            return false;
        };
        let own_alone = key.0 == self.me
            && self.devices.get(&self.me).is_none_or(BTreeSet::is_empty)
            && matches!(o, EnvelopeOutcome::Delivered | EnvelopeOutcome::Stored);
        let Some(p) = self.pending.get_mut(&key) else {
            return true;
        };
        if own_alone && p.only.is_none() {
            // To our other devices, none of which we have heard from: the
            // overlay copied it to each (stored for those offline), or
            // there is none. Done.
            if let Err(e) = self.finish(&key) {
                self.events.push_back(GroupEvent::StoreFailed {
                    error: e.to_string(),
                });
            }
            return true;
        }
        if let (EnvelopeOutcome::Failed(_), Some(d), None) = (&o, to_dev, p.only) {
            // Sent to one device after another acknowledged: after
            // MAX_DEVICE_FAILURES it is taken for gone.
            let n = p.failures.entry(d).or_default();
            *n += 1;
            if *n >= MAX_DEVICE_FAILURES {
                if let Some(ds) = self.devices.get_mut(&key.0) {
                    ds.remove(&d);
                }
                self.stats.devices_dropped += 1;
                if self.complete(&key)
                    && let Err(e) = self.finish(&key)
                {
                    self.events.push_back(GroupEvent::StoreFailed {
                        error: e.to_string(),
                    });
                }
                return true;
            }
        }
        let Some(p) = self.pending.get_mut(&key) else {
            return true;
        };
        p.next_try = match o {
            EnvelopeOutcome::Delivered => now + self.cfg.ack_wait_ms,
            EnvelopeOutcome::Stored => now + self.cfg.stored_retry_ms,
            EnvelopeOutcome::Failed(_) => {
                let exp = self
                    .cfg
                    .retry_base_ms
                    .saturating_mul(1 << p.attempts.min(16));
                now + exp.min(self.cfg.max_backoff_ms)
            }
        };
        true
    }

    pub fn handle_timeout(&mut self, now: Millis, sink: &mut dyn EnvelopeSink) {
        let expired: Vec<(String, [u8; 16])> = self
            .pending
            .iter()
            .filter(|(_, p)| now.since(p.created) >= self.cfg.outbox_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            self.pending.remove(&k);
            self.stats.given_up += 1;
            if let Err(e) = self.store.remove_item(&k.0, &k.1) {
                self.events.push_back(GroupEvent::StoreFailed {
                    error: e.to_string(),
                });
            }
        }
        let due: Vec<(String, [u8; 16])> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next_try <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            self.attempt(now, &k, sink);
        }
        let before = self.early.len();
        let early_ms = self.cfg.early_ms;
        self.early.retain(|e| now.since(e.since) < early_ms);
        self.stats.early_dropped += (before - self.early.len()) as u64;
        let gapped: Vec<GroupId> = self
            .groups
            .values()
            .filter(|g| {
                g.held.iter().any(|(s, h)| {
                    h.first_key_value()
                        .is_some_and(|(_, h)| now.since(h.since) >= g.gap(&self.cfg, s, h.since))
                })
            })
            .map(|g| g.id)
            .collect();
        for g in gapped {
            self.deliver_held(now, &g, sink);
        }
        self.sync_due(now, sink);
        if self.by_envelope.len() > 4 * self.pending.len() + 64 {
            let live: BTreeSet<&(String, [u8; 16])> = self.pending.keys().collect();
            self.by_envelope.retain(|_, (k, _)| live.contains(k));
        }
    }

    /// When [`GroupCore::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let outbox = self
            .pending
            .values()
            .map(|p| p.next_try.min(p.created + self.cfg.outbox_ms))
            .min();
        let held = self
            .groups
            .values()
            .flat_map(|g| {
                g.held.iter().filter_map(|(s, h)| {
                    h.first_key_value()
                        .map(|(_, h)| h.since + g.gap(&self.cfg, s, h.since))
                })
            })
            .min();
        let early = self.early.front().map(|e| e.since + self.cfg.early_ms);
        let sync = self
            .sync
            .values()
            .filter(|sp| sp.due.is_some())
            .map(|sp| sp.window + self.cfg.sync_ms)
            .min();
        [outbox, held, early, sync].into_iter().flatten().min()
    }

    pub fn poll_event(&mut self) -> Option<GroupEvent> {
        self.events.pop_front()
    }

    /// The last `limit` messages of a group, oldest first.
    pub fn history(&self, g: &GroupId, limit: usize) -> Result<Vec<GroupMessage>, GroupError> {
        self.store.history(g, &self.me, limit)
    }

    /// Messages held back (waiting for an earlier one or a key).
    pub fn held_len(&self) -> usize {
        self.groups
            .values()
            .flat_map(|g| g.held.values())
            .map(BTreeMap::len)
            .sum()
    }
}

fn check_name(name: &str) -> Result<(), GroupError> {
    if name.trim().is_empty() || name.len() > wire::MAX_NAME {
        return Err(GroupError::BadName {
            len: name.len(),
            max: wire::MAX_NAME,
        });
    }
    Ok(())
}
