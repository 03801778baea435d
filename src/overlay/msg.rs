//! Overlay messages: membership gossip and directory traffic between
//! supernodes, and attachment, presence and lookups between clients and
//! supernodes. They travel inside authenticated link payloads; decoders
//! borrow and never panic.

use super::envelope::EnvelopeId;
use super::record::{read_addr, read_addrs, write_addr, write_addrs};
use crate::wire::{Reader, WireError, Writer};
use std::net::SocketAddr;

/// Membership states as gossiped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberState {
    Alive,
    Suspect,
    Down,
}

impl MemberState {
    fn to_u8(self) -> u8 {
        match self {
            MemberState::Alive => 1,
            MemberState::Suspect => 2,
            MemberState::Down => 3,
        }
    }

    fn from_u8(v: u8) -> Result<Self, WireError> {
        Ok(match v {
            1 => MemberState::Alive,
            2 => MemberState::Suspect,
            3 => MemberState::Down,
            got => {
                return Err(WireError::UnknownType {
                    what: "member state",
                    got,
                });
            }
        })
    }
}

/// One membership fact: node `id` at `addr` is in `state` at `incarnation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    pub id: u64,
    pub addr: SocketAddr,
    pub incarnation: u32,
    pub state: MemberState,
}

/// Most updates carried by one message.
pub const MAX_UPDATES: usize = 64;

fn write_updates(w: &mut Writer, ups: &[Update]) {
    let n = ups.len().min(MAX_UPDATES);
    w.u8(n as u8);
    for u in &ups[..n] {
        w.u64(u.id);
        write_addr(w, &u.addr);
        w.u32(u.incarnation).u8(u.state.to_u8());
    }
}

fn read_updates(r: &mut Reader<'_>) -> Result<Vec<Update>, WireError> {
    let n = r.u8()? as usize;
    if n > MAX_UPDATES {
        return Err(WireError::Invalid {
            field: "update count",
        });
    }
    (0..n)
        .map(|_| {
            Ok(Update {
                id: r.u64()?,
                addr: read_addr(r)?,
                incarnation: r.u32()?,
                state: MemberState::from_u8(r.u8()?)?,
            })
        })
        .collect()
}

/// The finest split of a home supernode's digest for one owner (by the
/// low bits of the user key), so a difference is repaired one bucket at a
/// time. A digest may use fewer parts (a power of two dividing this: a
/// key's part is its bucket modulo the parts), so a home with few records
/// at an owner sends a few bytes.
pub const DIGEST_BUCKETS: u8 = 64;

/// Whether `parts` is a digest split: a power of two up to
/// [`DIGEST_BUCKETS`].
pub fn valid_parts(parts: u8) -> bool {
    parts.is_power_of_two() && parts <= DIGEST_BUCKETS
}

/// One bucket of a directory digest: how many records a home supernode
/// says an owner holds for it there, and the XOR of their
/// [`claim_hash`]es.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestBucket {
    pub bucket: u8,
    pub count: u32,
    pub hash: u64,
}

/// The bucket of user key `key`.
pub fn digest_bucket(key: u64) -> u8 {
    (key % DIGEST_BUCKETS as u64) as u8
}

/// One (user key, seq) pair's share of a digest hash (splitmix64 of both).
pub fn claim_hash(key: u64, seq: u64) -> u64 {
    let mut z = key ^ seq.rotate_left(29) ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Most names in one `Claimed` page (each at most 256 bytes on the wire).
pub const MAX_CLAIMED: usize = 64;

fn write_digest(w: &mut Writer, parts: u8, buckets: &[DigestBucket]) {
    let n = buckets.len().min(DIGEST_BUCKETS as usize);
    w.u8(parts).u8(n as u8);
    for b in &buckets[..n] {
        w.u8(b.bucket).u32(b.count).u64(b.hash);
    }
}

/// A digest's split and how many buckets follow (at most one per part).
fn read_parts(r: &mut Reader<'_>) -> Result<(u8, usize), WireError> {
    let parts = r.u8()?;
    if !valid_parts(parts) {
        return Err(WireError::Invalid {
            field: "digest parts",
        });
    }
    let n = r.u8()? as usize;
    if n > parts as usize {
        return Err(WireError::Invalid {
            field: "digest bucket count",
        });
    }
    Ok((parts, n))
}

fn read_digest(r: &mut Reader<'_>) -> Result<(u8, Vec<DigestBucket>), WireError> {
    let (parts, n) = read_parts(r)?;
    (0..n)
        .map(|_| {
            let bucket = r.u8()?;
            if bucket >= parts {
                return Err(WireError::Invalid {
                    field: "digest bucket",
                });
            }
            Ok(DigestBucket {
                bucket,
                count: r.u32()?,
                hash: r.u64()?,
            })
        })
        .collect::<Result<_, _>>()
        .map(|b| (parts, b))
}

/// Most device records of one user the directory keeps and a lookup
/// answers (the newest win).
pub const MAX_DEVICES: usize = 8;

/// Answer to a directory query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found<'a> {
    Record(&'a [u8]),
    /// Every valid device record of the user (1 to [`MAX_DEVICES`]).
    Records(Vec<&'a [u8]>),
    NotFound,
}

impl<'a> Found<'a> {
    /// The records answered (none for `NotFound`).
    pub fn records(&self) -> Vec<&'a [u8]> {
        match self {
            Found::Record(b) => vec![*b],
            Found::Records(v) => v.clone(),
            Found::NotFound => Vec::new(),
        }
    }

    /// `Records` of `v` (at most [`MAX_DEVICES`]), or `NotFound` when empty.
    pub fn of(v: Vec<&'a [u8]>) -> Self {
        if v.is_empty() {
            Found::NotFound
        } else {
            Found::Records(v)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg<'a> {
    // Supernode <-> supernode: membership.
    Ping {
        seq: u32,
        updates: Vec<Update>,
    },
    Ack {
        seq: u32,
        updates: Vec<Update>,
    },
    PingReq {
        seq: u32,
        target: u64,
        target_addr: SocketAddr,
    },
    Join,
    SyncReq {
        page: u16,
    },
    SyncPage {
        page: u16,
        pages: u16,
        updates: Vec<Update>,
    },
    // Supernode <-> supernode: directory.
    Store {
        record: &'a [u8],
    },
    Query {
        qid: u32,
        username: &'a str,
    },
    QueryReply {
        qid: u32,
        found: Found<'a>,
    },
    Watch {
        username: &'a str,
    },
    Notify {
        record: &'a [u8],
    },
    /// `username` here and in `Check`, `Claimed` and `Unclaim` is a
    /// record's name: the user and the device (see
    /// [`record_name`](super::record::record_name)), one record per
    /// device.
    StoreAck {
        username: &'a str,
        seq: u64,
    },
    /// "Do you hold `username` at `seq`?": answered with a StoreAck giving
    /// the seq held (0 for none), so periodic checks cost a few bytes.
    Check {
        username: &'a str,
        seq: u64,
    },
    /// Home supernode to owner, every check interval: the records of its
    /// attached clients it expects the owner to hold, per bucket (empty
    /// buckets left out). Answered with a `DigestAck` of what the owner
    /// holds as claimed by this home.
    Digest {
        /// The split ([`valid_parts`]).
        parts: u8,
        buckets: Vec<DigestBucket>,
    },
    DigestAck {
        parts: u8,
        buckets: Vec<DigestBucket>,
    },
    /// Owner to home, after a `DigestAck` naming differing buckets: the
    /// users it counts as claimed by this home there (one page of them;
    /// the home unclaims those it no longer has, and `Check`s its own).
    Claimed {
        names: Vec<&'a str>,
    },
    /// Home to owner: `username` is no longer attached here (or the owner
    /// no longer owns it in the home's view); its record stays.
    Unclaim {
        username: &'a str,
    },
    /// Home to owner, after a `DigestAck` whose differences the home's
    /// claims in flight do not explain: name the records you count as
    /// claimed by me in these buckets (answered with `Claimed` pages).
    ClaimsAsk {
        parts: u8,
        buckets: Vec<u8>,
    },
    /// Home to owner: the record `username` the owner holds, refreshed:
    /// the same record with new timing fields (seq, signed_at_ms,
    /// online_until, expires_at, as on the wire) and signature. The owner
    /// rebuilds and verifies it, and counts it in this home's digest as a
    /// `HomeStore`; it answers with a `StoreAck` of the seq it holds (the
    /// home sends the whole record when that is older).
    Refresh {
        username: &'a str,
        timing: [u8; super::record::TIMING_LEN],
        signature: [u8; 64],
    },
    /// A `Store` from the record's home supernode: the owner keeps it and
    /// counts it in that home's digest.
    HomeStore {
        record: &'a [u8],
    },
    // Client <-> supernode.
    Attach {
        primary: bool,
    },
    AttachOk {
        observed: SocketAddr,
        supernodes: Vec<SocketAddr>,
    },
    Redirect {
        supernodes: Vec<SocketAddr>,
    },
    Detach,
    Keepalive {
        seq: u32,
    },
    KeepaliveAck {
        seq: u32,
    },
    Publish {
        record: &'a [u8],
    },
    /// Client to its supernodes: the signed offline record to publish for
    /// it if it falls silent (a crash, a lost network) before it detaches
    /// cleanly. Its seq is one above the last `Publish`; the supernode
    /// can only publish what the user signed.
    PublishWill {
        record: &'a [u8],
    },
    PublishAck {
        seq: u64,
    },
    PublishRejected {
        seq: u64,
        reason: &'a str,
    },
    Lookup {
        qid: u32,
        username: &'a str,
    },
    LookupReply {
        qid: u32,
        found: Found<'a>,
    },
    WatchReq {
        username: &'a str,
    },
    PresenceUpdate {
        record: &'a [u8],
    },
    // Client <-> supernode: relay (TURN) credentials.
    RelayCredentialsReq {
        qid: u32,
    },
    /// REST-style credentials for the group's relays (see
    /// [`crate::relay::creds`]), valid until `expires` (Unix seconds).
    RelayCredentials {
        qid: u32,
        username: &'a str,
        password: &'a str,
        realm: &'a str,
        expires: u64,
        relays: Vec<SocketAddr>,
    },
    RelayRefused {
        qid: u32,
        reason: &'a str,
    },
    // Sealed envelopes (see `envelope`): client -> its supernode.
    EnvSend {
        envelope: &'a [u8],
    },
    /// Supernode -> the sending client: what became of an envelope.
    EnvResult {
        id: EnvelopeId,
        result: EnvResult,
    },
    /// Supernode -> a supernode the recipient is attached to.
    EnvForward {
        envelope: &'a [u8],
    },
    /// Answer to `EnvForward`.
    EnvForwardResult {
        id: EnvelopeId,
        result: EnvResult,
    },
    /// Supernode -> the recipient client.
    EnvDeliver {
        envelope: &'a [u8],
    },
    /// Recipient client -> supernode: received (`ok`) or refused.
    EnvAck {
        id: EnvelopeId,
        ok: bool,
    },
    /// Supernode -> an owner of the recipient's record: keep it for them.
    /// `sender` is the username of the client that sent it, as the
    /// sending supernode authenticated it (empty: not known), for the
    /// mailbox's per-sender share.
    EnvStore {
        envelope: &'a [u8],
        sender: &'a str,
    },
    EnvStoreAck {
        id: EnvelopeId,
        ok: bool,
    },
}

/// What became of an envelope, as the overlay reports it. These answers
/// come from supernodes and are not end-to-end proof: protocols that need
/// proof of receipt send their own signed acknowledgement back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnvResult {
    /// Handed to the recipient, who acknowledged it.
    Delivered,
    /// The recipient is offline; kept on their directory owners.
    Stored,
    /// No such user in the directory.
    NotFound,
    /// The recipient is offline and the envelope did not ask to be stored.
    Offline,
    /// The owners could not keep it (full or unreachable).
    StoreFailed,
    /// The recipient could not open it.
    Rejected,
    /// Malformed, expired or too large.
    Invalid,
    /// The recipient's current key differs from the one it was sealed to.
    KeyChanged,
    /// Too many envelopes in flight from this client.
    Busy,
    /// Not attached to the recipient (between supernodes only).
    NotAttached,
}

impl EnvResult {
    pub fn to_u8(self) -> u8 {
        match self {
            EnvResult::Delivered => 1,
            EnvResult::Stored => 2,
            EnvResult::NotFound => 3,
            EnvResult::Offline => 4,
            EnvResult::StoreFailed => 5,
            EnvResult::Rejected => 6,
            EnvResult::Invalid => 7,
            EnvResult::KeyChanged => 8,
            EnvResult::Busy => 9,
            EnvResult::NotAttached => 10,
        }
    }

    pub fn from_u8(v: u8) -> Result<Self, WireError> {
        Ok(match v {
            1 => EnvResult::Delivered,
            2 => EnvResult::Stored,
            3 => EnvResult::NotFound,
            4 => EnvResult::Offline,
            5 => EnvResult::StoreFailed,
            6 => EnvResult::Rejected,
            7 => EnvResult::Invalid,
            8 => EnvResult::KeyChanged,
            9 => EnvResult::Busy,
            10 => EnvResult::NotAttached,
            got => {
                return Err(WireError::UnknownType {
                    what: "envelope result",
                    got,
                });
            }
        })
    }

    /// For people: why an envelope did not arrive.
    pub fn describe(self) -> &'static str {
        match self {
            EnvResult::Delivered => "delivered",
            EnvResult::Stored => "stored for the offline recipient",
            EnvResult::NotFound => "no such user",
            EnvResult::Offline => "the recipient is offline",
            EnvResult::StoreFailed => {
                "the recipient is offline and their mailbox is full or unreachable"
            }
            EnvResult::Rejected => "the recipient could not open it",
            EnvResult::Invalid => "the supernode refused it (malformed, expired or too large)",
            EnvResult::KeyChanged => "the recipient's key changed",
            EnvResult::Busy => "too many messages in flight",
            EnvResult::NotAttached => "the recipient is not attached there",
        }
    }
}

fn read_bool(r: &mut Reader<'_>, field: &'static str) -> Result<bool, WireError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(WireError::Invalid { field }),
    }
}

impl<'a> Msg<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Msg::Ping { seq, updates } => {
                w.u8(1).u32(*seq);
                write_updates(&mut w, updates);
            }
            Msg::Ack { seq, updates } => {
                w.u8(2).u32(*seq);
                write_updates(&mut w, updates);
            }
            Msg::PingReq {
                seq,
                target,
                target_addr,
            } => {
                w.u8(3).u32(*seq).u64(*target);
                write_addr(&mut w, target_addr);
            }
            Msg::Join => {
                w.u8(4);
            }
            Msg::SyncReq { page } => {
                w.u8(5).u16(*page);
            }
            Msg::SyncPage {
                page,
                pages,
                updates,
            } => {
                w.u8(6).u16(*page).u16(*pages);
                write_updates(&mut w, updates);
            }
            Msg::Store { record } => {
                w.u8(10).bytes16(record);
            }
            Msg::Query { qid, username } => {
                w.u8(11).u32(*qid).bytes8(username.as_bytes());
            }
            Msg::QueryReply { qid, found } => {
                w.u8(12).u32(*qid);
                write_found(&mut w, found);
            }
            Msg::Watch { username } => {
                w.u8(13).bytes8(username.as_bytes());
            }
            Msg::Notify { record } => {
                w.u8(14).bytes16(record);
            }
            Msg::StoreAck { username, seq } => {
                w.u8(15).bytes8(username.as_bytes()).u64(*seq);
            }
            Msg::Check { username, seq } => {
                w.u8(16).bytes8(username.as_bytes()).u64(*seq);
            }
            Msg::Digest { parts, buckets } => {
                w.u8(17);
                write_digest(&mut w, *parts, buckets);
            }
            Msg::DigestAck { parts, buckets } => {
                w.u8(18);
                write_digest(&mut w, *parts, buckets);
            }
            Msg::Claimed { names } => {
                let n = names.len().min(MAX_CLAIMED);
                w.u8(19).u8(n as u8);
                for name in &names[..n] {
                    w.bytes8(name.as_bytes());
                }
            }
            Msg::Unclaim { username } => {
                w.u8(33).bytes8(username.as_bytes());
            }
            Msg::ClaimsAsk { parts, buckets } => {
                let n = buckets.len().min(DIGEST_BUCKETS as usize);
                w.u8(35).u8(*parts).u8(n as u8).raw(&buckets[..n]);
            }
            Msg::Refresh {
                username,
                timing,
                signature,
            } => {
                w.u8(36)
                    .bytes8(username.as_bytes())
                    .raw(timing)
                    .raw(signature);
            }
            Msg::HomeStore { record } => {
                w.u8(34).bytes16(record);
            }
            Msg::Attach { primary } => {
                w.u8(20).u8(*primary as u8);
            }
            Msg::AttachOk {
                observed,
                supernodes,
            } => {
                w.u8(21);
                write_addr(&mut w, observed);
                write_addrs(&mut w, supernodes);
            }
            Msg::Redirect { supernodes } => {
                w.u8(22);
                write_addrs(&mut w, supernodes);
            }
            Msg::Detach => {
                w.u8(23);
            }
            Msg::Keepalive { seq } => {
                w.u8(24).u32(*seq);
            }
            Msg::KeepaliveAck { seq } => {
                w.u8(25).u32(*seq);
            }
            Msg::Publish { record } => {
                w.u8(26).bytes16(record);
            }
            Msg::PublishAck { seq } => {
                w.u8(27).u64(*seq);
            }
            Msg::PublishWill { record } => {
                w.u8(144).bytes16(record);
            }
            Msg::PublishRejected { seq, reason } => {
                w.u8(28).u64(*seq).bytes8(reason.as_bytes());
            }
            Msg::Lookup { qid, username } => {
                w.u8(29).u32(*qid).bytes8(username.as_bytes());
            }
            Msg::LookupReply { qid, found } => {
                w.u8(30).u32(*qid);
                write_found(&mut w, found);
            }
            Msg::WatchReq { username } => {
                w.u8(31).bytes8(username.as_bytes());
            }
            Msg::PresenceUpdate { record } => {
                w.u8(32).bytes16(record);
            }
            Msg::RelayCredentialsReq { qid } => {
                w.u8(50).u32(*qid);
            }
            Msg::RelayCredentials {
                qid,
                username,
                password,
                realm,
                expires,
                relays,
            } => {
                w.u8(51)
                    .u32(*qid)
                    .bytes8(username.as_bytes())
                    .bytes8(password.as_bytes())
                    .bytes8(realm.as_bytes())
                    .u64(*expires);
                write_addrs(&mut w, relays);
            }
            Msg::RelayRefused { qid, reason } => {
                w.u8(52).u32(*qid).bytes8(reason.as_bytes());
            }
            Msg::EnvSend { envelope } => {
                w.u8(40).bytes16(envelope);
            }
            Msg::EnvResult { id, result } => {
                w.u8(41).raw(id).u8(result.to_u8());
            }
            Msg::EnvForward { envelope } => {
                w.u8(42).bytes16(envelope);
            }
            Msg::EnvForwardResult { id, result } => {
                w.u8(43).raw(id).u8(result.to_u8());
            }
            Msg::EnvDeliver { envelope } => {
                w.u8(44).bytes16(envelope);
            }
            Msg::EnvAck { id, ok } => {
                w.u8(45).raw(id).u8(*ok as u8);
            }
            Msg::EnvStore { envelope, sender } => {
                w.u8(46).bytes16(envelope).bytes8(sender.as_bytes());
            }
            Msg::EnvStoreAck { id, ok } => {
                w.u8(47).raw(id).u8(*ok as u8);
            }
        }
        w.into_vec()
    }

    pub fn decode(buf: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let m = match r.u8()? {
            1 => Msg::Ping {
                seq: r.u32()?,
                updates: read_updates(&mut r)?,
            },
            2 => Msg::Ack {
                seq: r.u32()?,
                updates: read_updates(&mut r)?,
            },
            3 => Msg::PingReq {
                seq: r.u32()?,
                target: r.u64()?,
                target_addr: read_addr(&mut r)?,
            },
            4 => Msg::Join,
            5 => Msg::SyncReq { page: r.u16()? },
            6 => Msg::SyncPage {
                page: r.u16()?,
                pages: r.u16()?,
                updates: read_updates(&mut r)?,
            },
            10 => Msg::Store {
                record: r.bytes16()?,
            },
            11 => Msg::Query {
                qid: r.u32()?,
                username: r.str8("username")?,
            },
            12 => Msg::QueryReply {
                qid: r.u32()?,
                found: read_found(&mut r)?,
            },
            13 => Msg::Watch {
                username: r.str8("username")?,
            },
            14 => Msg::Notify {
                record: r.bytes16()?,
            },
            15 => Msg::StoreAck {
                username: r.str8("username")?,
                seq: r.u64()?,
            },
            16 => Msg::Check {
                username: r.str8("username")?,
                seq: r.u64()?,
            },
            17 => {
                let (parts, buckets) = read_digest(&mut r)?;
                Msg::Digest { parts, buckets }
            }
            18 => {
                let (parts, buckets) = read_digest(&mut r)?;
                Msg::DigestAck { parts, buckets }
            }
            19 => {
                let n = r.u8()? as usize;
                if n > MAX_CLAIMED {
                    return Err(WireError::Invalid {
                        field: "claimed count",
                    });
                }
                Msg::Claimed {
                    names: (0..n)
                        .map(|_| r.str8("username"))
                        .collect::<Result<_, _>>()?,
                }
            }
            33 => Msg::Unclaim {
                username: r.str8("username")?,
            },
            35 => {
                let (parts, n) = read_parts(&mut r)?;
                let buckets = r.bytes(n)?.to_vec();
                if buckets.iter().any(|b| *b >= parts) {
                    return Err(WireError::Invalid {
                        field: "digest bucket",
                    });
                }
                Msg::ClaimsAsk { parts, buckets }
            }
            36 => Msg::Refresh {
                username: r.str8("username")?,
                timing: r.array()?,
                signature: r.array()?,
            },
            34 => Msg::HomeStore {
                record: r.bytes16()?,
            },
            20 => Msg::Attach {
                primary: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => {
                        return Err(WireError::Invalid {
                            field: "primary flag",
                        });
                    }
                },
            },
            21 => Msg::AttachOk {
                observed: read_addr(&mut r)?,
                supernodes: read_addrs(&mut r)?,
            },
            22 => Msg::Redirect {
                supernodes: read_addrs(&mut r)?,
            },
            23 => Msg::Detach,
            24 => Msg::Keepalive { seq: r.u32()? },
            25 => Msg::KeepaliveAck { seq: r.u32()? },
            26 => Msg::Publish {
                record: r.bytes16()?,
            },
            27 => Msg::PublishAck { seq: r.u64()? },
            144 => Msg::PublishWill {
                record: r.bytes16()?,
            },
            28 => Msg::PublishRejected {
                seq: r.u64()?,
                reason: r.str8("reason")?,
            },
            29 => Msg::Lookup {
                qid: r.u32()?,
                username: r.str8("username")?,
            },
            30 => Msg::LookupReply {
                qid: r.u32()?,
                found: read_found(&mut r)?,
            },
            31 => Msg::WatchReq {
                username: r.str8("username")?,
            },
            32 => Msg::PresenceUpdate {
                record: r.bytes16()?,
            },
            50 => Msg::RelayCredentialsReq { qid: r.u32()? },
            51 => Msg::RelayCredentials {
                qid: r.u32()?,
                username: r.str8("username")?,
                password: r.str8("password")?,
                realm: r.str8("realm")?,
                expires: r.u64()?,
                relays: read_addrs(&mut r)?,
            },
            52 => Msg::RelayRefused {
                qid: r.u32()?,
                reason: r.str8("reason")?,
            },
            40 => Msg::EnvSend {
                envelope: r.bytes16()?,
            },
            41 => Msg::EnvResult {
                id: r.array()?,
                result: EnvResult::from_u8(r.u8()?)?,
            },
            42 => Msg::EnvForward {
                envelope: r.bytes16()?,
            },
            43 => Msg::EnvForwardResult {
                id: r.array()?,
                result: EnvResult::from_u8(r.u8()?)?,
            },
            44 => Msg::EnvDeliver {
                envelope: r.bytes16()?,
            },
            45 => Msg::EnvAck {
                id: r.array()?,
                ok: read_bool(&mut r, "ack flag")?,
            },
            46 => Msg::EnvStore {
                envelope: r.bytes16()?,
                sender: r.str8("envelope sender")?,
            },
            47 => Msg::EnvStoreAck {
                id: r.array()?,
                ok: read_bool(&mut r, "store flag")?,
            },
            got => {
                return Err(WireError::UnknownType {
                    what: "overlay message",
                    got,
                });
            }
        };
        r.finish()?;
        Ok(m)
    }
}

fn write_found(w: &mut Writer, f: &Found<'_>) {
    match f {
        Found::Record(r) => {
            w.u8(1).bytes16(r);
        }
        Found::Records(v) => {
            let n = v.len().min(MAX_DEVICES);
            w.u8(2).u8(n as u8);
            for r in &v[..n] {
                w.bytes16(r);
            }
        }
        Found::NotFound => {
            w.u8(0);
        }
    }
}

fn read_found<'a>(r: &mut Reader<'a>) -> Result<Found<'a>, WireError> {
    match r.u8()? {
        0 => Ok(Found::NotFound),
        1 => Ok(Found::Record(r.bytes16()?)),
        2 => {
            let n = r.u8()? as usize;
            if n == 0 || n > MAX_DEVICES {
                return Err(WireError::Invalid {
                    field: "device record count",
                });
            }
            Ok(Found::Records(
                (0..n).map(|_| r.bytes16()).collect::<Result<_, _>>()?,
            ))
        }
        got => Err(WireError::UnknownType {
            what: "lookup result",
            got,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_record_counts_are_bounded() {
        let ok = Msg::LookupReply {
            qid: 1,
            found: Found::Records(vec![b"a"; MAX_DEVICES]),
        }
        .encode();
        assert!(Msg::decode(&ok).is_ok());
        // Count byte after type (1) and qid (4) and found tag (1).
        for bad in [0u8, MAX_DEVICES as u8 + 1, 255] {
            let mut b = ok.clone();
            b[6] = bad;
            assert!(Msg::decode(&b).is_err());
        }
        // More than the cap is cut on encode.
        let many = Msg::LookupReply {
            qid: 1,
            found: Found::Records(vec![b"a"; MAX_DEVICES + 3]),
        }
        .encode();
        assert_eq!(many, ok);
    }

    #[test]
    fn digest_splits_are_checked() {
        let d = |parts: u8, bucket: u8| {
            Msg::Digest {
                parts,
                buckets: vec![DigestBucket {
                    bucket,
                    count: 1,
                    hash: 2,
                }],
            }
            .encode()
        };
        assert!(Msg::decode(&d(8, 7)).is_ok());
        assert!(Msg::decode(&d(8, 8)).is_err(), "bucket beyond the split");
        assert!(Msg::decode(&d(3, 0)).is_err(), "not a power of two");
        assert!(Msg::decode(&d(128, 0)).is_err(), "finer than the buckets");
        assert!(Msg::decode(&d(0, 0)).is_err());
        let ask = |parts: u8, buckets: Vec<u8>| Msg::ClaimsAsk { parts, buckets }.encode();
        assert!(Msg::decode(&ask(4, vec![0, 3])).is_ok());
        assert!(Msg::decode(&ask(4, vec![4])).is_err());
        assert!(
            Msg::decode(&ask(2, vec![0, 1, 1])).is_err(),
            "more buckets than parts"
        );
    }

    #[test]
    fn every_message_round_trips() {
        let a: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        let b: SocketAddr = "[2001:db8::1]:5".parse().unwrap();
        let up = Update {
            id: 9,
            addr: b,
            incarnation: 3,
            state: MemberState::Suspect,
        };
        let msgs = vec![
            Msg::Ping {
                seq: 1,
                updates: vec![up],
            },
            Msg::Ack {
                seq: 2,
                updates: vec![],
            },
            Msg::PingReq {
                seq: 3,
                target: 4,
                target_addr: a,
            },
            Msg::Join,
            Msg::SyncReq { page: 2 },
            Msg::SyncPage {
                page: 1,
                pages: 3,
                updates: vec![up, up],
            },
            Msg::Store { record: b"rec" },
            Msg::Query {
                qid: 5,
                username: "alice",
            },
            Msg::QueryReply {
                qid: 5,
                found: Found::Record(b"r"),
            },
            Msg::QueryReply {
                qid: 6,
                found: Found::NotFound,
            },
            Msg::QueryReply {
                qid: 7,
                found: Found::Records(vec![b"r1", b"", b"r3"]),
            },
            Msg::LookupReply {
                qid: 8,
                found: Found::Records(vec![b"one"]),
            },
            Msg::Watch { username: "bob" },
            Msg::Notify { record: b"x" },
            Msg::StoreAck {
                username: "eve",
                seq: 3,
            },
            Msg::Check {
                username: "eve",
                seq: 4,
            },
            Msg::Digest {
                parts: 16,
                buckets: vec![
                    DigestBucket {
                        bucket: 0,
                        count: 3,
                        hash: 9,
                    },
                    DigestBucket {
                        bucket: 15,
                        count: 1,
                        hash: u64::MAX,
                    },
                ],
            },
            Msg::DigestAck {
                parts: 1,
                buckets: vec![],
            },
            Msg::Claimed {
                names: vec!["ann", "bob"],
            },
            Msg::Unclaim { username: "eve" },
            Msg::ClaimsAsk {
                parts: 64,
                buckets: vec![0, 7, 63],
            },
            Msg::Refresh {
                username: "eve/00",
                timing: [3; 32],
                signature: [9; 64],
            },
            Msg::HomeStore { record: b"h" },
            Msg::Attach { primary: true },
            Msg::AttachOk {
                observed: a,
                supernodes: vec![a, b],
            },
            Msg::Redirect {
                supernodes: vec![b],
            },
            Msg::Detach,
            Msg::Keepalive { seq: 7 },
            Msg::KeepaliveAck { seq: 7 },
            Msg::Publish { record: b"p" },
            Msg::PublishAck { seq: 8 },
            Msg::PublishWill { record: b"w" },
            Msg::PublishRejected {
                seq: 8,
                reason: "stale",
            },
            Msg::Lookup {
                qid: 9,
                username: "carol",
            },
            Msg::LookupReply {
                qid: 9,
                found: Found::NotFound,
            },
            Msg::WatchReq { username: "dave" },
            Msg::PresenceUpdate { record: b"u" },
            Msg::RelayCredentialsReq { qid: 10 },
            Msg::RelayCredentials {
                qid: 10,
                username: "1700000000:alice",
                password: "Cd/49soE35ICqcJF/bCTn8Z4OyE=",
                realm: "natter",
                expires: 1_700_000_000,
                relays: vec![a],
            },
            Msg::RelayRefused {
                qid: 11,
                reason: "no relay",
            },
            Msg::EnvSend { envelope: b"e" },
            Msg::EnvResult {
                id: [1; 16],
                result: EnvResult::Stored,
            },
            Msg::EnvForward { envelope: b"f" },
            Msg::EnvForwardResult {
                id: [2; 16],
                result: EnvResult::NotAttached,
            },
            Msg::EnvDeliver { envelope: b"d" },
            Msg::EnvAck {
                id: [3; 16],
                ok: true,
            },
            Msg::EnvStore {
                envelope: b"s",
                sender: "alice",
            },
            Msg::EnvStoreAck {
                id: [4; 16],
                ok: false,
            },
        ];
        for m in msgs {
            let bytes = m.encode();
            assert_eq!(Msg::decode(&bytes).unwrap(), m);
            for cut in 0..bytes.len() {
                assert!(Msg::decode(&bytes[..cut]).is_err());
            }
        }
    }
}
