//! File transfer messages on the wire.
//!
//! Signalling travels in sealed envelopes through the supernodes (kinds
//! [`kind::OFFER`] .. [`kind::DONE`], the files range 96-111), so the
//! receiver needs no peer link to hear of an offer. Data and its
//! acknowledgements travel as messages on the peer link session (the
//! encrypted, replay-checked Noise session over the path ICE chose:
//! direct, relayed or TCP); their first byte is [`LINK_TAG`].
//!
//! ```text
//! OFFER   id:16 size:u64 hash:32 name:str8
//! ANSWER  id:16 accept:u8 incarnation:u64 n:u16 (start:u64 end:u64)*n   accept or resume, with the bytes held
//! CANCEL  id:16 reason:u8
//! DONE    id:16 ok:u8
//! DATA    0xF7 1 id:16 pn:u64 ts:u32 offset:u64 bytes...
//! ACK     0xF7 2 id:16 delay:u32 n:u8 (start:u64 end:u64)*n             packet-number ranges, newest first
//! ```
//!
//! Decoders borrow their input, check every length first and never panic.

use crate::wire::{Reader, WireError, Writer};

/// Envelope kinds of file signalling (the files range 96-111).
pub mod kind {
    pub const OFFER: u8 = crate::overlay::envelope::kind::FILES_FIRST;
    pub const ANSWER: u8 = OFFER + 1;
    pub const CANCEL: u8 = OFFER + 2;
    pub const DONE: u8 = OFFER + 3;
    pub const ALL: [u8; 4] = [OFFER, ANSWER, CANCEL, DONE];
}

/// First byte of a file message on a peer link.
pub const LINK_TAG: u8 = 0xF7;
const LINK_DATA: u8 = 1;
const LINK_ACK: u8 = 2;
/// Bytes of a DATA message before the file bytes.
pub const DATA_HEADER: usize = 2 + 16 + 8 + 4 + 8;
/// Ranges one ANSWER carries at most (the rest are sent again).
pub const MAX_ANSWER_RANGES: usize = 512;
/// Packet-number ranges one ACK carries at most.
pub const MAX_ACK_RANGES: usize = 32;
/// Longest file name, bytes.
pub const MAX_NAME: usize = 255;

/// A transfer's id: random, chosen by the sender.
pub type TransferId = u128;

/// Why a side ended a transfer (CANCEL's reason byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The user declined (before accepting) or cancelled.
    User = 1,
    /// The file could not be read or written.
    Io = 2,
    /// The sender's file changed since it was offered.
    Changed = 3,
    /// The id is unknown here (the other side forgot it).
    Unknown = 4,
}

impl CancelReason {
    fn from_u8(v: u8) -> Result<Self, WireError> {
        Ok(match v {
            1 => CancelReason::User,
            2 => CancelReason::Io,
            3 => CancelReason::Changed,
            4 => CancelReason::Unknown,
            got => {
                return Err(WireError::UnknownType {
                    what: "cancel reason",
                    got,
                });
            }
        })
    }
}

/// A signalling message (an envelope payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal<'a> {
    Offer {
        id: TransferId,
        size: u64,
        hash: [u8; 32],
        name: &'a str,
    },
    /// Accept (or resume, or decline when `accept` is false); `have` are
    /// the byte ranges the receiver holds already; `incarnation` changes
    /// each time the receiver's process starts.
    Answer {
        id: TransferId,
        accept: bool,
        incarnation: u64,
        have: Vec<(u64, u64)>,
    },
    Cancel {
        id: TransferId,
        reason: CancelReason,
    },
    /// The receiver checked the whole file: `ok` when its hash matched.
    Done { id: TransferId, ok: bool },
}

impl<'a> Signal<'a> {
    /// The envelope kind this message goes in.
    pub fn kind(&self) -> u8 {
        match self {
            Signal::Offer { .. } => kind::OFFER,
            Signal::Answer { .. } => kind::ANSWER,
            Signal::Cancel { .. } => kind::CANCEL,
            Signal::Done { .. } => kind::DONE,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Signal::Offer {
                id,
                size,
                hash,
                name,
            } => {
                let name = truncate(name, MAX_NAME);
                w.raw(&id.to_be_bytes())
                    .u64(*size)
                    .raw(hash)
                    .bytes8(name.as_bytes());
            }
            Signal::Answer {
                id,
                accept,
                incarnation,
                have,
            } => {
                let have = &have[..have.len().min(MAX_ANSWER_RANGES)];
                w.raw(&id.to_be_bytes())
                    .u8(u8::from(*accept))
                    .u64(*incarnation)
                    .u16(have.len() as u16);
                for &(s, e) in have {
                    w.u64(s).u64(e);
                }
            }
            Signal::Cancel { id, reason } => {
                w.raw(&id.to_be_bytes()).u8(*reason as u8);
            }
            Signal::Done { id, ok } => {
                w.raw(&id.to_be_bytes()).u8(u8::from(*ok));
            }
        }
        w.into_vec()
    }

    pub fn decode(kind: u8, buf: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let id = u128::from_be_bytes(r.array()?);
        let s = match kind {
            kind::OFFER => {
                let size = r.u64()?;
                let hash = r.array()?;
                let name = r.str8("file name")?;
                Signal::Offer {
                    id,
                    size,
                    hash,
                    name,
                }
            }
            kind::ANSWER => {
                let accept = flag(r.u8()?)?;
                let incarnation = r.u64()?;
                let n = usize::from(r.u16()?);
                if n > MAX_ANSWER_RANGES || r.remaining() != n * 16 {
                    return Err(WireError::Invalid { field: "ranges" });
                }
                let mut have = Vec::with_capacity(n);
                for _ in 0..n {
                    let (s, e) = (r.u64()?, r.u64()?);
                    if s >= e {
                        return Err(WireError::Invalid { field: "range" });
                    }
                    have.push((s, e));
                }
                Signal::Answer {
                    id,
                    accept,
                    incarnation,
                    have,
                }
            }
            kind::CANCEL => Signal::Cancel {
                id,
                reason: CancelReason::from_u8(r.u8()?)?,
            },
            kind::DONE => Signal::Done {
                id,
                ok: flag(r.u8()?)?,
            },
            got => {
                return Err(WireError::UnknownType {
                    what: "file signal",
                    got,
                });
            }
        };
        r.finish()?;
        Ok(s)
    }
}

fn flag(v: u8) -> Result<bool, WireError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(WireError::Invalid { field: "flag" }),
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A file message on a peer link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkMsg<'a> {
    Data {
        id: TransferId,
        /// Packet number: new for every packet, retransmissions included.
        pn: u64,
        /// Sender's clock, ms (wrapping): the receiver echoes the delay.
        ts: u32,
        offset: u64,
        bytes: &'a [u8],
    },
    Ack {
        id: TransferId,
        /// Receiver's clock minus the newest packet's `ts`, wrapping ms.
        delay: u32,
        /// Packet numbers received, newest range first.
        ranges: Vec<(u64, u64)>,
    },
}

impl<'a> LinkMsg<'a> {
    /// The header of a DATA message; the file bytes follow it.
    pub fn data_header(id: TransferId, pn: u64, ts: u32, offset: u64) -> [u8; DATA_HEADER] {
        let mut h = [0u8; DATA_HEADER];
        h[0] = LINK_TAG;
        h[1] = LINK_DATA;
        h[2..18].copy_from_slice(&id.to_be_bytes());
        h[18..26].copy_from_slice(&pn.to_be_bytes());
        h[26..30].copy_from_slice(&ts.to_be_bytes());
        h[30..38].copy_from_slice(&offset.to_be_bytes());
        h
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            LinkMsg::Data {
                id,
                pn,
                ts,
                offset,
                bytes,
            } => {
                let mut v = Vec::with_capacity(DATA_HEADER + bytes.len());
                v.extend_from_slice(&Self::data_header(*id, *pn, *ts, *offset));
                v.extend_from_slice(bytes);
                v
            }
            LinkMsg::Ack { id, delay, ranges } => {
                let ranges = &ranges[..ranges.len().min(MAX_ACK_RANGES)];
                let mut w = Writer::new();
                w.u8(LINK_TAG)
                    .u8(LINK_ACK)
                    .raw(&id.to_be_bytes())
                    .u32(*delay)
                    .u8(ranges.len() as u8);
                for &(s, e) in ranges {
                    w.u64(s).u64(e);
                }
                w.into_vec()
            }
        }
    }

    pub fn decode(buf: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        if r.u8()? != LINK_TAG {
            return Err(WireError::Invalid { field: "file tag" });
        }
        let t = r.u8()?;
        let id = u128::from_be_bytes(r.array()?);
        match t {
            LINK_DATA => {
                let pn = r.u64()?;
                let ts = r.u32()?;
                let offset = r.u64()?;
                let bytes = r.rest();
                if bytes.is_empty() || offset.checked_add(bytes.len() as u64).is_none() {
                    return Err(WireError::Invalid { field: "data" });
                }
                Ok(LinkMsg::Data {
                    id,
                    pn,
                    ts,
                    offset,
                    bytes,
                })
            }
            LINK_ACK => {
                let delay = r.u32()?;
                let n = usize::from(r.u8()?);
                if n == 0 || n > MAX_ACK_RANGES || r.remaining() != n * 16 {
                    return Err(WireError::Invalid {
                        field: "ack ranges",
                    });
                }
                let mut ranges = Vec::with_capacity(n);
                for _ in 0..n {
                    let (s, e) = (r.u64()?, r.u64()?);
                    if s >= e {
                        return Err(WireError::Invalid { field: "ack range" });
                    }
                    ranges.push((s, e));
                }
                Ok(LinkMsg::Ack { id, delay, ranges })
            }
            got => Err(WireError::UnknownType {
                what: "file link message",
                got,
            }),
        }
    }
}

/// Encodings of each message, for fuzz seeds and tests.
pub fn samples() -> Vec<(u8, Vec<u8>)> {
    let id = 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10;
    vec![
        (
            kind::OFFER,
            Signal::Offer {
                id,
                size: 1 << 20,
                hash: [7; 32],
                name: "report.pdf",
            }
            .encode(),
        ),
        (
            kind::ANSWER,
            Signal::Answer {
                id,
                accept: true,
                incarnation: 9,
                have: vec![(0, 100), (200, 300)],
            }
            .encode(),
        ),
        (
            kind::CANCEL,
            Signal::Cancel {
                id,
                reason: CancelReason::User,
            }
            .encode(),
        ),
        (kind::DONE, Signal::Done { id, ok: true }.encode()),
        (
            0,
            LinkMsg::Data {
                id,
                pn: 5,
                ts: 77,
                offset: 1200,
                bytes: b"hello",
            }
            .encode(),
        ),
        (
            0,
            LinkMsg::Ack {
                id,
                delay: 3,
                ranges: vec![(10, 20), (0, 5)],
            }
            .encode(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips_and_truncations_fail() {
        for (k, bytes) in samples() {
            if k == 0 {
                let m = LinkMsg::decode(&bytes).unwrap();
                assert_eq!(m.encode(), bytes);
            } else {
                let m = Signal::decode(k, &bytes).unwrap();
                assert_eq!(m.kind(), k);
                assert_eq!(m.encode(), bytes);
            }
            for n in 0..bytes.len() {
                let cut = &bytes[..n];
                if k == 0 {
                    // A DATA cut after a byte of payload is still DATA.
                    if n <= DATA_HEADER || bytes[1] != LINK_DATA {
                        assert!(LinkMsg::decode(cut).is_err(), "{n}");
                    }
                } else {
                    assert!(Signal::decode(k, cut).is_err(), "{k} {n}");
                }
            }
        }
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        let name = "é".repeat(200);
        let b = Signal::Offer {
            id: 1,
            size: 1,
            hash: [0; 32],
            name: &name,
        }
        .encode();
        match Signal::decode(kind::OFFER, &b).unwrap() {
            Signal::Offer { name, .. } => assert_eq!(name.len(), 254),
            other => panic!("{other:?}"),
        }
    }
}
