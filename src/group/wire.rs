//! Group chat wire formats: the signed membership operations, and the
//! payloads of the two group envelope kinds. Decoders borrow, check every
//! length and never panic.
//!
//! Layouts (integers big-endian):
//!
//! ```text
//! op:       group [16] | lamport u64 | at_secs u64 | cert bytes16
//!           | action u8 | action fields | signature [64]
//!   action: 1 create (nonce [16], name str8) | 2 invite (user str8)
//!           | 3 leave | 4 remove (user str8) | 5 rename (name str8)
//!           | 6 admin (user str8)
//! GROUP:    item [16] | body u8 | body fields
//!   body:   1 ops (group [16], count u8, count x op bytes16)
//!           | 2 key (group [16], key_id u32, key [32], [digest])
//!           | 3 msg (group [16], key_id u32, seq u64, prev u64, ct bytes16,
//!             [digest])
//!           | 4 ids (group [16], start opkey, end u8 (0 | 1 opkey),
//!             below digest, count u16, count x op id [16])
//!           | 5 want (group [16], count u16, count x op id [16])
//!           | 6 pull (group [16], before opkey)
//!   digest: count u16 | hash [16]   ([digest]: present or absent, last)
//!   opkey:  lamport u64 | op id [16]
//! GROUP_ACK: item [16]
//! GROUP_ASK: count u16 | count x group id [16]   (at most MAX_ASK_GROUPS)
//! ```
//!
//! `GROUP_ASK` goes from one device of an account to its others: "send me
//! the groups I lack"; it lists the groups the asking device knows.
//!
//! A digest ([`digest`]) sums up a log: its op count and a hash of its op
//! ids in replay order. Keys and messages carry their sender's, so a
//! member whose log differs notices and syncs: `ids` lists the sender's op
//! ids in the replay-order range `[start, end)` with the digest of its ops
//! below `start`; `want` asks for ops by id; `pull` asks for the `ids` page
//! that ends at `before`.
//!
//! The op signature (context [`OP_CONTEXT`]) is by the certificate's
//! device key over everything before it. A message's ciphertext is
//! ChaCha20-Poly1305 under the sender's key `key_id`, nonce `0u32 | seq`,
//! aad `group | sender str8 | key_id | seq`, of `sent_at_ms u64 | text
//! str16`.

use super::GroupId;
use crate::identity::{Certificate, DeviceIdentity, verify_signature};
use crate::wire::{Reader, WireError, Writer};
use blake2::{Blake2s256, Digest as _};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

/// Signature context of group operations.
pub const OP_CONTEXT: &[u8] = b"natter group op v1";
/// Longest group name, in bytes.
pub const MAX_NAME: usize = 64;
/// Most ops in one `ops` body.
pub const MAX_OPS_PER_ITEM: usize = 24;
/// Most op ids in one `ids` or `want` body (a page: 4 KiB of ids).
pub const MAX_IDS: usize = 256;
/// Most group ids in one `GROUP_ASK` (4 KiB of ids).
pub const MAX_ASK_GROUPS: usize = 256;

/// A summary of a group's log: its op count and a hash of its op ids in
/// replay order. Equal digests, equal logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Digest {
    pub count: u16,
    pub hash: [u8; 16],
}

/// An op's place in the replay order: its lamport clock, then its id.
pub type OpKey = (u64, [u8; 16]);

/// The least [`OpKey`]: a range that starts here has nothing below it.
pub const FIRST_KEY: OpKey = (0, [0; 16]);

/// The digest of a log whose op ids, in replay order, are `ids`.
pub fn digest<'i>(ids: impl IntoIterator<Item = &'i [u8; 16]>) -> Digest {
    let mut h = Blake2s256::new();
    h.update(b"natter group digest v1");
    let mut count = 0usize;
    for id in ids {
        h.update(id);
        count += 1;
    }
    let d = h.finalize();
    let mut hash = [0u8; 16];
    hash.copy_from_slice(&d[..16]);
    Digest {
        count: u16::try_from(count).unwrap_or(u16::MAX),
        hash,
    }
}

fn read_digest(r: &mut Reader<'_>) -> Result<Digest, WireError> {
    Ok(Digest {
        count: r.u16()?,
        hash: r.array()?,
    })
}

fn write_digest(w: &mut Writer, d: &Digest) {
    w.u16(d.count).raw(&d.hash);
}

/// The optional digest that ends a key or a message.
fn trailing_digest(r: &mut Reader<'_>) -> Result<Option<Digest>, WireError> {
    if r.remaining() == 0 {
        return Ok(None);
    }
    read_digest(r).map(Some)
}

fn read_key(r: &mut Reader<'_>) -> Result<OpKey, WireError> {
    Ok((r.u64()?, r.array()?))
}

/// A u16 count of ids (at most `max`), then the ids.
fn read_ids(r: &mut Reader<'_>, max: usize) -> Result<Vec<[u8; 16]>, WireError> {
    let n = r.u16()? as usize;
    if n > max {
        return Err(WireError::TooLarge { len: n, max });
    }
    if r.remaining() < n * 16 {
        return Err(WireError::Truncated {
            need: n * 16,
            have: r.remaining(),
        });
    }
    (0..n).map(|_| r.array()).collect()
}

fn write_ids(w: &mut Writer, ids: &[[u8; 16]]) {
    w.u16(ids.len() as u16);
    for id in ids {
        w.raw(id);
    }
}

/// Envelope kinds of group chat (the 112-127 range).
pub mod kind {
    /// An item: ops, a sender key or a message; acknowledged.
    pub const GROUP: u8 = crate::overlay::envelope::kind::GROUP_FIRST;
    /// The acknowledgement of an item.
    pub const GROUP_ACK: u8 = crate::overlay::envelope::kind::GROUP_FIRST + 1;
    /// One of our devices asks our others for the groups it lacks.
    pub const GROUP_ASK: u8 = crate::overlay::envelope::kind::GROUP_FIRST + 2;
}

/// What an operation does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Found the group; `nonce` proves the creator chose the id
    /// ([`group_id`]).
    Create {
        nonce: [u8; 16],
        name: String,
    },
    Invite {
        user: String,
    },
    Leave,
    Remove {
        user: String,
    },
    Rename {
        name: String,
    },
    /// Make a member an admin (admins only).
    Admin {
        user: String,
    },
}

/// A signed membership operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub group: GroupId,
    /// Replay order: one more than the highest op its author had seen.
    pub lamport: u64,
    /// When it was made (Unix seconds): its certificate must be valid then.
    pub at_secs: u64,
    /// The author's certificate.
    pub cert: Certificate,
    pub action: Action,
    pub signature: [u8; 64],
}

/// The id of a group founded by `creator` with `nonce`.
pub fn group_id(creator: &str, nonce: &[u8; 16]) -> GroupId {
    let mut h = Blake2s256::new();
    h.update(b"natter group id v1");
    h.update([creator.len() as u8]);
    h.update(creator.as_bytes());
    h.update(nonce);
    let d = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    id
}

fn user_field(r: &mut Reader<'_>) -> Result<String, WireError> {
    let u = r.str8("user")?;
    if u.is_empty() || u.len() > 64 || u.bytes().any(|c| c.is_ascii_uppercase()) {
        return Err(WireError::Invalid { field: "user" });
    }
    Ok(u.to_owned())
}

fn name_field(r: &mut Reader<'_>) -> Result<String, WireError> {
    let n = r.str8("group name")?;
    if n.len() > MAX_NAME {
        return Err(WireError::TooLarge {
            len: n.len(),
            max: MAX_NAME,
        });
    }
    Ok(n.to_owned())
}

impl Op {
    /// Make and sign an op.
    pub fn sign(
        device: &DeviceIdentity,
        cert: &Certificate,
        group: GroupId,
        lamport: u64,
        at_secs: u64,
        action: Action,
    ) -> Op {
        let mut op = Op {
            group,
            lamport,
            at_secs,
            cert: cert.clone(),
            action,
            signature: [0; 64],
        };
        op.signature = device.sign(OP_CONTEXT, &op.body());
        op
    }

    fn body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(&self.group)
            .u64(self.lamport)
            .u64(self.at_secs)
            .bytes16(&self.cert.encode());
        match &self.action {
            Action::Create { nonce, name } => {
                w.u8(1).raw(nonce).bytes8(name.as_bytes());
            }
            Action::Invite { user } => {
                w.u8(2).bytes8(user.as_bytes());
            }
            Action::Leave => {
                w.u8(3);
            }
            Action::Remove { user } => {
                w.u8(4).bytes8(user.as_bytes());
            }
            Action::Rename { name } => {
                w.u8(5).bytes8(name.as_bytes());
            }
            Action::Admin { user } => {
                w.u8(6).bytes8(user.as_bytes());
            }
        }
        w.into_vec()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.body();
        v.extend_from_slice(&self.signature);
        v
    }

    /// Decode one op; checks nothing but the form ([`Op::verify`] checks
    /// the signature and certificate).
    pub fn decode(b: &[u8]) -> Result<Op, WireError> {
        let mut r = Reader::new(b);
        let group = r.array()?;
        let lamport = r.u64()?;
        let at_secs = r.u64()?;
        let cert = Certificate::decode(r.bytes16()?)?;
        let action = match r.u8()? {
            1 => Action::Create {
                nonce: r.array()?,
                name: name_field(&mut r)?,
            },
            2 => Action::Invite {
                user: user_field(&mut r)?,
            },
            3 => Action::Leave,
            4 => Action::Remove {
                user: user_field(&mut r)?,
            },
            5 => Action::Rename {
                name: name_field(&mut r)?,
            },
            6 => Action::Admin {
                user: user_field(&mut r)?,
            },
            got => {
                return Err(WireError::UnknownType {
                    what: "group action",
                    got,
                });
            }
        };
        let signature = r.array()?;
        r.finish()?;
        Ok(Op {
            group,
            lamport,
            at_secs,
            cert,
            action,
            signature,
        })
    }

    /// The author's username.
    pub fn author(&self) -> &str {
        &self.cert.username
    }

    /// The op's id: a hash of its encoding (also its tie-breaker in the
    /// replay order).
    pub fn id(&self) -> [u8; 16] {
        let d = Blake2s256::digest(self.encode());
        let mut id = [0u8; 16];
        id.copy_from_slice(&d[..16]);
        id
    }

    /// Check the certificate (pinned authority, valid when the op was
    /// made) and the signature.
    pub fn verify(&self, authority: &[u8; 32]) -> bool {
        self.cert
            .verify(authority, crate::time::UnixSecs(self.at_secs))
            .is_ok()
            && verify_signature(
                &self.cert.ed25519,
                OP_CONTEXT,
                &self.body(),
                &self.signature,
            )
    }
}

/// What a group item carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body<'a> {
    /// Encoded ops ([`Op::decode`] each).
    Ops { group: GroupId, ops: Vec<&'a [u8]> },
    /// The sender's new sender key, and their log's digest then.
    Key {
        group: GroupId,
        key_id: u32,
        key: [u8; 32],
        digest: Option<Digest>,
    },
    /// A message under the sender's key `key_id`. `prev` is the seq of the
    /// sender's last message to this recipient (0: none), for hold-back;
    /// `digest`, the sender's log's when they sent it.
    Msg {
        group: GroupId,
        key_id: u32,
        seq: u64,
        prev: u64,
        ct: &'a [u8],
        digest: Option<Digest>,
    },
    /// The sender's op ids in the replay-order range `[start, end)` (no
    /// end: to the last), and the digest of their ops below `start`.
    Ids {
        group: GroupId,
        start: OpKey,
        end: Option<OpKey>,
        below: Digest,
        ids: Vec<[u8; 16]>,
    },
    /// Send me these ops.
    Want { group: GroupId, ids: Vec<[u8; 16]> },
    /// Send me your `ids` page that ends at `before`.
    Pull { group: GroupId, before: OpKey },
}

impl Body<'_> {
    fn group_mut(&mut self) -> &mut GroupId {
        match self {
            Body::Ops { group, .. }
            | Body::Key { group, .. }
            | Body::Msg { group, .. }
            | Body::Ids { group, .. }
            | Body::Want { group, .. }
            | Body::Pull { group, .. } => group,
        }
    }

    /// The group the item is about.
    pub fn group(&self) -> GroupId {
        match self {
            Body::Ops { group, .. }
            | Body::Key { group, .. }
            | Body::Msg { group, .. }
            | Body::Ids { group, .. }
            | Body::Want { group, .. }
            | Body::Pull { group, .. } => *group,
        }
    }

    /// Make the item about group `g` (the ops of an `ops` body keep their
    /// own group).
    pub fn set_group(&mut self, g: GroupId) {
        *self.group_mut() = g;
    }
}

/// A group envelope's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupPayload<'a> {
    Item {
        item: [u8; 16],
        body: Body<'a>,
    },
    Ack {
        item: [u8; 16],
    },
    /// From another device of our account: the groups it knows (it
    /// wants the others).
    Ask {
        groups: Vec<GroupId>,
    },
}

impl<'a> GroupPayload<'a> {
    pub fn kind(&self) -> u8 {
        match self {
            GroupPayload::Item { .. } => kind::GROUP,
            GroupPayload::Ack { .. } => kind::GROUP_ACK,
            GroupPayload::Ask { .. } => kind::GROUP_ASK,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            GroupPayload::Ack { item } => {
                w.raw(item);
            }
            GroupPayload::Ask { groups } => {
                write_ids(&mut w, groups);
            }
            GroupPayload::Item { item, body } => {
                w.raw(item);
                match body {
                    Body::Ops { group, ops } => {
                        w.u8(1).raw(group).u8(ops.len() as u8);
                        for o in ops {
                            w.bytes16(o);
                        }
                    }
                    Body::Key {
                        group,
                        key_id,
                        key,
                        digest,
                    } => {
                        w.u8(2).raw(group).u32(*key_id).raw(key);
                        if let Some(d) = digest {
                            write_digest(&mut w, d);
                        }
                    }
                    Body::Msg {
                        group,
                        key_id,
                        seq,
                        prev,
                        ct,
                        digest,
                    } => {
                        w.u8(3)
                            .raw(group)
                            .u32(*key_id)
                            .u64(*seq)
                            .u64(*prev)
                            .bytes16(ct);
                        if let Some(d) = digest {
                            write_digest(&mut w, d);
                        }
                    }
                    Body::Ids {
                        group,
                        start,
                        end,
                        below,
                        ids,
                    } => {
                        w.u8(4).raw(group).u64(start.0).raw(&start.1);
                        match end {
                            None => {
                                w.u8(0);
                            }
                            Some(e) => {
                                w.u8(1).u64(e.0).raw(&e.1);
                            }
                        }
                        write_digest(&mut w, below);
                        write_ids(&mut w, ids);
                    }
                    Body::Want { group, ids } => {
                        w.u8(5).raw(group);
                        write_ids(&mut w, ids);
                    }
                    Body::Pull { group, before } => {
                        w.u8(6).raw(group).u64(before.0).raw(&before.1);
                    }
                }
            }
        }
        w.into_vec()
    }

    /// Decode a payload of envelope kind `k`; borrows, never panics.
    pub fn decode(k: u8, b: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(b);
        if k == kind::GROUP_ASK {
            let groups = read_ids(&mut r, MAX_ASK_GROUPS)?;
            r.finish()?;
            return Ok(GroupPayload::Ask { groups });
        }
        let item = r.array()?;
        let p = match k {
            kind::GROUP_ACK => GroupPayload::Ack { item },
            kind::GROUP => {
                let body = match r.u8()? {
                    1 => {
                        let group = r.array()?;
                        let n = r.u8()? as usize;
                        if n > MAX_OPS_PER_ITEM {
                            return Err(WireError::TooLarge {
                                len: n,
                                max: MAX_OPS_PER_ITEM,
                            });
                        }
                        let mut ops = Vec::with_capacity(n);
                        for _ in 0..n {
                            ops.push(r.bytes16()?);
                        }
                        Body::Ops { group, ops }
                    }
                    2 => Body::Key {
                        group: r.array()?,
                        key_id: r.u32()?,
                        key: r.array()?,
                        digest: trailing_digest(&mut r)?,
                    },
                    3 => Body::Msg {
                        group: r.array()?,
                        key_id: r.u32()?,
                        seq: r.u64()?,
                        prev: r.u64()?,
                        ct: r.bytes16()?,
                        digest: trailing_digest(&mut r)?,
                    },
                    4 => {
                        let group = r.array()?;
                        let start = read_key(&mut r)?;
                        let end = match r.u8()? {
                            0 => None,
                            1 => Some(read_key(&mut r)?),
                            _ => return Err(WireError::Invalid { field: "ids end" }),
                        };
                        if end.is_some_and(|e| e <= start) {
                            return Err(WireError::Invalid { field: "ids range" });
                        }
                        Body::Ids {
                            group,
                            start,
                            end,
                            below: read_digest(&mut r)?,
                            ids: read_ids(&mut r, MAX_IDS)?,
                        }
                    }
                    5 => Body::Want {
                        group: r.array()?,
                        ids: read_ids(&mut r, MAX_IDS)?,
                    },
                    6 => Body::Pull {
                        group: r.array()?,
                        before: read_key(&mut r)?,
                    },
                    got => {
                        return Err(WireError::UnknownType {
                            what: "group item",
                            got,
                        });
                    }
                };
                if let Body::Msg { seq, prev, .. } = body
                    && (seq == 0 || prev >= seq)
                {
                    return Err(WireError::Invalid { field: "group seq" });
                }
                GroupPayload::Item { item, body }
            }
            got => {
                return Err(WireError::UnknownType {
                    what: "group payload",
                    got,
                });
            }
        };
        r.finish()?;
        Ok(p)
    }
}

fn nonce(seq: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    n
}

fn aad(group: &GroupId, sender: &str, key_id: u32, seq: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.raw(group).bytes8(sender.as_bytes()).u32(key_id).u64(seq);
    w.into_vec()
}

/// Encrypt a message under a sender key.
pub fn seal_message(
    key: &[u8; 32],
    group: &GroupId,
    sender: &str,
    key_id: u32,
    seq: u64,
    sent_at_ms: u64,
    text: &str,
) -> Vec<u8> {
    let mut w = Writer::new();
    w.u64(sent_at_ms).bytes16(text.as_bytes());
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let aad = aad(group, sender, key_id, seq);
    cipher
        .encrypt(
            Nonce::from_slice(&nonce(seq)),
            Payload {
                msg: &w.into_vec(),
                aad: &aad,
            },
        )
        .unwrap_or_default()
}

/// Decrypt a message: `(sent_at_ms, text)`, or `None` when `key` is not
/// the key it was sealed with (or it was tampered with).
pub fn open_message(
    key: &[u8; 32],
    group: &GroupId,
    sender: &str,
    key_id: u32,
    seq: u64,
    ct: &[u8],
) -> Option<(u64, String)> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let aad = aad(group, sender, key_id, seq);
    let pt = cipher
        .decrypt(
            Nonce::from_slice(&nonce(seq)),
            Payload { msg: ct, aad: &aad },
        )
        .ok()?;
    let mut r = Reader::new(&pt);
    let at = r.u64().ok()?;
    let text = r.str16("message text").ok()?.to_owned();
    r.finish().ok()?;
    Some((at, text))
}
