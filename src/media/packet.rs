//! Media packets on the wire and their encryption.
//!
//! ```text
//! 0      1      2    4          8      12           20
//! +------+------+----+----------+------+------------+------------------------+
//! | 0x80 | M|PT | seq| timestamp| SSRC | counter u64| ChaCha20-Poly1305(body) |
//! +------+------+----+----------+------+------------+------------------------+
//! ```
//!
//! An RTP-shaped header (RFC 3550: version 2, no padding, extension or
//! CSRCs; sequence, 48 kHz timestamp, SSRC), so the first byte is 0x80 and
//! [`crate::wire::stun::classify`] files the datagram as media, followed by
//! the 64-bit packet counter that is the AEAD nonce, then the encrypted
//! body with its 16-byte tag. The whole 20-byte header is authenticated as associated data.
//! Payload type 111 is an Opus frame; 201 (RTCP's RR, here carried in the
//! same header) a receiver report.
//!
//! Keys: each call has two keys, one per direction, derived from a secret
//! exported from the callers' peer link session
//! ([`crate::link::LinkEndpoint::export`] with [`EXPORT_LABEL`] and the
//! call's identity as context): both sides hold it, nobody else (relays
//! included) does, and every call gets fresh keys, so a counter never
//! repeats under one key. A sliding window (the link layer's) rejects
//! replayed and too-old counters; every rejected packet is counted by the
//! session.

use crate::link::ReplayWindow;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use thiserror::Error;

pub const HEADER_LEN: usize = 20;
pub const TAG_LEN: usize = 16;
/// Opus audio.
pub const PT_AUDIO: u8 = 111;
/// A receiver report (the second byte is the whole PT field, as in RTCP).
pub const PT_REPORT: u8 = 201;
/// Label for [`crate::link::LinkEndpoint::export`].
pub const EXPORT_LABEL: &[u8] = b"natter media v1";
/// A sender stops before its counter could ever wrap.
const MAX_COUNTER: u64 = 1 << 62;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PacketError {
    #[error("media packet too short or not RTP-shaped")]
    Malformed,
    #[error("media packet failed authentication (tampered or another key)")]
    AuthFailed,
    #[error("media packet replayed or too old")]
    Replayed,
    #[error("media send counter exhausted")]
    Exhausted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Audio,
    Report,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    /// RTP marker: first packet after a silence or a restart.
    pub marker: bool,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub counter: u64,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0] = 0x80;
        h[1] = match self.kind {
            Kind::Audio => PT_AUDIO | if self.marker { 0x80 } else { 0 },
            Kind::Report => PT_REPORT,
        };
        h[2..4].copy_from_slice(&self.seq.to_be_bytes());
        h[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        h[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        h[12..20].copy_from_slice(&self.counter.to_be_bytes());
        h
    }

    /// Split a datagram into its header and encrypted body. Borrows,
    /// checks lengths first, never panics.
    pub fn parse(d: &[u8]) -> Result<(Header, &[u8]), PacketError> {
        if d.len() < HEADER_LEN + TAG_LEN || d[0] != 0x80 {
            return Err(PacketError::Malformed);
        }
        let (kind, marker) = match d[1] {
            PT_REPORT => (Kind::Report, false),
            b if b & 0x7F == PT_AUDIO => (Kind::Audio, b & 0x80 != 0),
            _ => return Err(PacketError::Malformed),
        };
        let u32_at = |i: usize| u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
        let mut c = [0u8; 8];
        c.copy_from_slice(&d[12..20]);
        Ok((
            Header {
                kind,
                marker,
                seq: u16::from_be_bytes([d[2], d[3]]),
                timestamp: u32_at(4),
                ssrc: u32_at(8),
                counter: u64::from_be_bytes(c),
            },
            &d[HEADER_LEN..],
        ))
    }
}

/// Which side of the call we are: picks the key direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Caller,
    Callee,
}

/// The two directional keys of one call.
#[derive(Clone)]
pub struct MediaKeys {
    pub send: [u8; 32],
    pub recv: [u8; 32],
}

impl std::fmt::Debug for MediaKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MediaKeys(..)")
    }
}

impl MediaKeys {
    /// Split the call secret (exported from the peer link session) into
    /// one key per direction.
    pub fn derive(call_secret: &[u8; 32], side: Side) -> Self {
        use blake2::digest::Mac;
        let key = |label: &[u8]| -> [u8; 32] {
            let mut m =
                <blake2::Blake2sMac256 as blake2::digest::KeyInit>::new_from_slice(call_secret)
                    .expect("32-byte key is valid for BLAKE2s");
            m.update(label);
            m.finalize().into_bytes().into()
        };
        let c2e = key(b"natter media caller->callee");
        let e2c = key(b"natter media callee->caller");
        match side {
            Side::Caller => MediaKeys {
                send: c2e,
                recv: e2c,
            },
            Side::Callee => MediaKeys {
                send: e2c,
                recv: c2e,
            },
        }
    }

    /// The call's context for [`crate::link::LinkEndpoint::export`]: the
    /// call id and both sides' nonces.
    pub fn export_context(
        call_id: u64,
        caller_nonce: &[u8; 16],
        callee_nonce: &[u8; 16],
    ) -> [u8; 40] {
        let mut c = [0u8; 40];
        c[..8].copy_from_slice(&call_id.to_be_bytes());
        c[8..24].copy_from_slice(caller_nonce);
        c[24..].copy_from_slice(callee_nonce);
        c
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n.into()
}

/// Encrypts our outgoing packets.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    ssrc: u32,
    next_counter: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("ssrc", &self.ssrc)
            .field("next_counter", &self.next_counter)
            .finish()
    }
}

impl Sealer {
    pub fn new(key: &[u8; 32], ssrc: u32) -> Self {
        Sealer {
            cipher: ChaCha20Poly1305::new(key.into()),
            ssrc,
            next_counter: 0,
        }
    }

    /// A sealer whose next counter is `counter` (for tests that need a
    /// fresh counter under another key).
    pub fn starting_at(key: &[u8; 32], ssrc: u32, counter: u64) -> Self {
        Sealer {
            next_counter: counter,
            ..Sealer::new(key, ssrc)
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Packets sealed so far.
    pub fn sent(&self) -> u64 {
        self.next_counter
    }

    pub fn seal(
        &mut self,
        kind: Kind,
        marker: bool,
        seq: u16,
        timestamp: u32,
        body: &[u8],
    ) -> Result<Vec<u8>, PacketError> {
        if self.next_counter >= MAX_COUNTER {
            return Err(PacketError::Exhausted);
        }
        let h = Header {
            kind,
            marker,
            seq,
            timestamp,
            ssrc: self.ssrc,
            counter: self.next_counter,
        };
        self.next_counter += 1;
        let aad = h.encode();
        let ct = self
            .cipher
            .encrypt(
                &nonce(h.counter),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .map_err(|_| PacketError::Exhausted)?;
        let mut out = Vec::with_capacity(HEADER_LEN + ct.len());
        out.extend_from_slice(&aad);
        out.extend_from_slice(&ct);
        Ok(out)
    }
}

/// Authenticates, decrypts and de-duplicates incoming packets.
pub struct Opener {
    cipher: ChaCha20Poly1305,
    replay: ReplayWindow,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Opener(..)")
    }
}

impl Opener {
    pub fn new(key: &[u8; 32]) -> Self {
        Opener {
            cipher: ChaCha20Poly1305::new(key.into()),
            replay: ReplayWindow::default(),
        }
    }

    /// The header and plaintext body of an authentic, fresh packet.
    pub fn open(&mut self, d: &[u8]) -> Result<(Header, Vec<u8>), PacketError> {
        let (h, ct) = Header::parse(d)?;
        if h.counter >= MAX_COUNTER || !self.replay.check(h.counter) {
            return Err(PacketError::Replayed);
        }
        let body = self
            .cipher
            .decrypt(
                &nonce(h.counter),
                Payload {
                    msg: ct,
                    aad: &d[..HEADER_LEN],
                },
            )
            .map_err(|_| PacketError::AuthFailed)?;
        if !self.replay.accept(h.counter).0 {
            return Err(PacketError::Replayed);
        }
        Ok((h, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Sealer, Opener, Opener) {
        let secret = [7u8; 32];
        let a = MediaKeys::derive(&secret, Side::Caller);
        let b = MediaKeys::derive(&secret, Side::Callee);
        assert_eq!(a.send, b.recv);
        assert_eq!(a.recv, b.send);
        assert_ne!(a.send, a.recv);
        let wrong = MediaKeys::derive(&[8u8; 32], Side::Callee);
        (
            Sealer::new(&a.send, 0x1234_5678),
            Opener::new(&b.recv),
            Opener::new(&wrong.recv),
        )
    }

    #[test]
    fn round_trip_and_header_fields() {
        let (mut s, mut o, _) = pair();
        let p = s.seal(Kind::Audio, true, 65535, 960, b"opus").unwrap();
        assert_eq!(p[0], 0x80);
        assert_eq!(
            crate::wire::stun::classify(&p),
            crate::wire::stun::Datagram::Media
        );
        let (h, body) = o.open(&p).unwrap();
        assert_eq!(body, b"opus");
        assert_eq!(
            h,
            Header {
                kind: Kind::Audio,
                marker: true,
                seq: 65535,
                timestamp: 960,
                ssrc: 0x1234_5678,
                counter: 0
            }
        );
        let r = s.seal(Kind::Report, false, 0, 0, b"rr").unwrap();
        assert_eq!(o.open(&r).unwrap().0.kind, Kind::Report);
        assert_eq!(s.sent(), 2);
    }

    #[test]
    fn tampered_replayed_wrong_key_and_malformed_are_refused() {
        let (mut s, mut o, mut wrong) = pair();
        let p = s.seal(Kind::Audio, false, 1, 960, b"frame").unwrap();
        assert_eq!(wrong.open(&p), Err(PacketError::AuthFailed));
        for i in 0..p.len() {
            let mut t = p.clone();
            t[i] ^= 0x01;
            let r = o.open(&t);
            assert!(
                matches!(
                    r,
                    Err(PacketError::AuthFailed | PacketError::Malformed | PacketError::Replayed)
                ),
                "byte {i}: {r:?}"
            );
        }
        assert!(o.open(&p).is_ok(), "tampering did not burn the counter");
        assert_eq!(o.open(&p), Err(PacketError::Replayed));
        assert_eq!(o.open(&p[..30]), Err(PacketError::Malformed));
        assert_eq!(o.open(&[]), Err(PacketError::Malformed));
    }

    #[test]
    fn parse_never_panics() {
        for len in 0..64 {
            for first in [0x80u8, 0x81, 0x00, 0xBF] {
                let mut d = vec![0u8; len];
                if len > 0 {
                    d[0] = first;
                }
                if len > 1 {
                    d[1] = PT_AUDIO;
                }
                let _ = Header::parse(&d);
            }
        }
    }
}
