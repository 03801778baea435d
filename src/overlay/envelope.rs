//! Sealed envelopes: how a client reaches a user it has no direct link to.
//!
//! An envelope is sealed to the recipient's x25519 key (from the
//! certificate in their verified presence record) and signed by the
//! sender's device ed25519 key, with the sender's certificate inside, so
//! the supernodes that carry and store it can neither read it, forge it,
//! nor redirect it to someone else. The clear header holds only what the
//! overlay needs to route, store and expire it.
//!
//! Layout (integers big-endian):
//!
//! ```text
//! header:  version u8 (1) | flags u8 (bit 0: store if offline) | id [16]
//!          | created_ms u64 | expires_ms u64 | to str8
//!          | recipient x25519 [32] | ephemeral x25519 [32]
//! sealed:  ciphertext bytes16 = ChaCha20-Poly1305(key, nonce 0, aad = header,
//!            kind u8 | sender certificate bytes16 | payload bytes16 | signature [64])
//! ```
//!
//! The key is BLAKE2s(context | DH(ephemeral, recipient) | ephemeral |
//! recipient); the ephemeral key is fresh per envelope, so nonce 0 is never
//! reused under one key. The signature (context [`SIG_CONTEXT`]) covers the
//! whole header, the kind, the certificate and the payload: a recipient
//! cannot re-seal a signed envelope to a third party, and a supernode that
//! flips the store flag, the expiry or the recipient is caught. The
//! recipient checks the certificate against the pinned authority key (valid
//! now, give or take [`MAX_SKEW_MS`], and when the envelope was created:
//! an envelope that waited longer than its sender's certificate is
//! dropped), the signature, the expiry and that it is the addressee.
//!
//! Replays: an envelope is only valid until its signed expiry (at most
//! [`MAX_TTL_MS`] after creation), and receivers drop ids they have already
//! seen (see `ClientCore`); protocols that must survive a restart of the
//! receiver dedupe on their own ids too (chat does, in SQLite).

use crate::identity::{CertError, Certificate, DeviceIdentity, verify_signature};
use crate::time::{UnixMillis, UnixSecs};
use crate::wire::{Reader, WireError, Writer};
use blake2::{Blake2s256, Digest};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use thiserror::Error;

pub const VERSION: u8 = 1;
const KEY_CONTEXT: &[u8] = b"natter envelope v1 key";
/// Signature context of envelopes.
pub const SIG_CONTEXT: &[u8] = b"natter envelope v1";
/// Longest an envelope may live (it waits this long for an offline user).
pub const MAX_TTL_MS: u64 = 72 * 3600 * 1000;
/// Clock difference tolerated between sender and receiver or supernode.
pub const MAX_SKEW_MS: u64 = 5 * 60 * 1000;
/// Largest payload an envelope carries.
pub const MAX_PAYLOAD: usize = 8 * 1024;
/// Largest encoded envelope (the payload plus a certificate, signature and
/// header, with room to spare); well under a link message.
pub const MAX_ENVELOPE: usize = MAX_PAYLOAD + 1024;
const FLAG_STORE: u8 = 1;
const TAG: usize = 16;

/// An envelope's id: random, chosen by the sender.
pub type EnvelopeId = [u8; 16];

/// Kinds of envelope content, by the protocol that owns them. Each range
/// belongs to one module; add kinds within yours.
pub mod kind {
    /// 1-15: chat and contacts (`chat`, `contacts`).
    pub const CHAT: u8 = 1;
    pub const CHAT_ACK: u8 = 2;
    pub const CONTACT: u8 = 3;
    pub const PRESENCE: u8 = 4;
    /// A message we sent, copied to our other devices (`chat`).
    pub const CHAT_SENT: u8 = 5;
    /// A conversation read on one of our devices (`chat`).
    pub const CHAT_READ: u8 = 6;
    /// A contact's row changed on one of our devices (`contacts`).
    pub const CONTACT_SYNC: u8 = 7;
    /// A new device of ours asks for the last 30 days of history (`chat`).
    pub const CHAT_HISTORY_ASK: u8 = 8;
    /// A batch of history, to the one device that asked (`chat`).
    pub const CHAT_HISTORY: u8 = 9;
    /// 16-31: call signalling. 32-47: ICE / NAT traversal. 48-63: media.
    pub const CALL_FIRST: u8 = 16;
    pub const ICE_FIRST: u8 = 32;
    pub const MEDIA_FIRST: u8 = 48;
    /// 80-95: conference calls (`conference`).
    pub const CONFERENCE: u8 = 80;
    /// 96-111: file transfer signalling (`transfer`).
    pub const FILES_FIRST: u8 = 96;
    /// 112-127: group chat (`group`).
    pub const GROUP_FIRST: u8 = 112;
    /// 240-255: tests and experiments.
    pub const TEST: u8 = 250;
}

/// Where protocols above the overlay (chat, contacts, calls) hand their
/// envelopes: the node implements it over its [`crate::overlay::ClientCore`]
/// (see `ClientCore::send_envelope`), tests with a recorder.
pub trait EnvelopeSink {
    fn send_envelope(&mut self, to: &str, kind: u8, payload: &[u8], store: bool) -> EnvelopeId;
    /// To `to`'s one device whose x25519 key is `device` (the envelope
    /// fails when `to` has no such device).
    fn send_envelope_to_device(
        &mut self,
        to: &str,
        device: &[u8; 32],
        kind: u8,
        payload: &[u8],
        store: bool,
    ) -> EnvelopeId;
}

/// What became of one envelope, from the overlay's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeOutcome {
    Delivered,
    Stored,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EnvelopeError {
    #[error("malformed envelope: {0}")]
    Malformed(#[from] WireError),
    #[error("envelope payload of {len} bytes exceeds {max}")]
    TooLarge { len: usize, max: usize },
    #[error("envelope is for {to}, not for us")]
    NotForUs { to: String },
    #[error("envelope is sealed to another key")]
    WrongKey,
    #[error("envelope cannot be opened (tampered with)")]
    Decrypt,
    #[error("sender certificate rejected: {0}")]
    Certificate(CertError),
    #[error("envelope signature is invalid (forged)")]
    BadSignature,
    #[error("envelope expired")]
    Expired,
    #[error("envelope lifetime is invalid")]
    BadLifetime,
    #[error("recipient key is not usable")]
    BadKey,
}

/// The clear part of an envelope, borrowed from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub store: bool,
    pub id: EnvelopeId,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub to: &'a str,
    pub recipient: [u8; 32],
    pub ephemeral: [u8; 32],
}

impl Header<'_> {
    fn write(&self, w: &mut Writer) {
        w.u8(VERSION)
            .u8(if self.store { FLAG_STORE } else { 0 })
            .raw(&self.id)
            .u64(self.created_ms)
            .u64(self.expires_ms)
            .bytes8(self.to.as_bytes())
            .raw(&self.recipient)
            .raw(&self.ephemeral);
    }

    /// Whether the lifetime is acceptable at `now` (the wall clock): not
    /// expired, not longer than [`MAX_TTL_MS`], not created in the future.
    pub fn check_lifetime(&self, now: UnixMillis) -> Result<(), EnvelopeError> {
        let now_ms = now.get();
        if self.expires_ms <= self.created_ms
            || self.expires_ms - self.created_ms > MAX_TTL_MS
            || self.created_ms > now_ms.saturating_add(MAX_SKEW_MS)
        {
            return Err(EnvelopeError::BadLifetime);
        }
        if now_ms >= self.expires_ms {
            return Err(EnvelopeError::Expired);
        }
        Ok(())
    }
}

/// A sealed envelope as the overlay sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed<'a> {
    pub header: Header<'a>,
    header_bytes: &'a [u8],
    pub ciphertext: &'a [u8],
}

impl<'a> Sealed<'a> {
    /// Decode an envelope; borrows, checks lengths, never panics.
    pub fn decode(buf: &'a [u8]) -> Result<Self, WireError> {
        if buf.len() > MAX_ENVELOPE {
            return Err(WireError::TooLarge {
                len: buf.len(),
                max: MAX_ENVELOPE,
            });
        }
        let mut r = Reader::new(buf);
        let version = r.u8()?;
        if version != VERSION {
            return Err(WireError::UnknownVersion { got: version });
        }
        let flags = r.u8()?;
        if flags & !FLAG_STORE != 0 {
            return Err(WireError::Invalid {
                field: "envelope flags",
            });
        }
        let header = Header {
            store: flags & FLAG_STORE != 0,
            id: r.array()?,
            created_ms: r.u64()?,
            expires_ms: r.u64()?,
            to: r.str8("recipient")?,
            recipient: r.array()?,
            ephemeral: r.array()?,
        };
        let header_len = buf.len() - r.remaining();
        let ciphertext = r.bytes16()?;
        if ciphertext.len() < TAG {
            return Err(WireError::Invalid {
                field: "envelope ciphertext",
            });
        }
        r.finish()?;
        Ok(Sealed {
            header,
            header_bytes: &buf[..header_len],
            ciphertext,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.header.write(&mut w);
        w.bytes16(self.ciphertext);
        w.into_vec()
    }
}

/// What the recipient gets out of an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub id: EnvelopeId,
    /// The sender, verified against the pinned authority key.
    pub from: Certificate,
    pub kind: u8,
    pub payload: Vec<u8>,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// Whether the sender asked for it to be stored while we were offline.
    pub store: bool,
}

/// What to seal.
#[derive(Debug, Clone, Copy)]
pub struct SealArgs<'a> {
    pub id: EnvelopeId,
    pub kind: u8,
    pub payload: &'a [u8],
    pub created_ms: u64,
    pub ttl_ms: u64,
    pub store: bool,
}

fn derive_key(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    h.update(KEY_CONTEXT);
    h.update(shared);
    h.update(ephemeral);
    h.update(recipient);
    h.finalize().into()
}

fn signed_bytes(header: &[u8], kind: u8, cert: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.raw(header).u8(kind).bytes16(cert).bytes16(payload);
    w.into_vec()
}

/// Seal `args.payload` from `sender` to `recipient`.
pub fn seal(
    rng: &mut dyn RngCore,
    sender: &DeviceIdentity,
    sender_cert: &Certificate,
    recipient: &Certificate,
    args: SealArgs<'_>,
) -> Result<Vec<u8>, EnvelopeError> {
    if args.payload.len() > MAX_PAYLOAD {
        return Err(EnvelopeError::TooLarge {
            len: args.payload.len(),
            max: MAX_PAYLOAD,
        });
    }
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let eph = x25519_dalek::StaticSecret::from(secret);
    let ephemeral = x25519_dalek::PublicKey::from(&eph).to_bytes();
    let shared = eph.diffie_hellman(&x25519_dalek::PublicKey::from(recipient.x25519));
    if !shared.was_contributory() {
        return Err(EnvelopeError::BadKey);
    }
    let header = Header {
        store: args.store,
        id: args.id,
        created_ms: args.created_ms,
        expires_ms: args.created_ms + args.ttl_ms.clamp(1, MAX_TTL_MS),
        to: &recipient.username,
        recipient: recipient.x25519,
        ephemeral,
    };
    let mut hw = Writer::new();
    header.write(&mut hw);
    let header_bytes = hw.into_vec();
    let cert = sender_cert.encode();
    let sig = sender.sign(
        SIG_CONTEXT,
        &signed_bytes(&header_bytes, args.kind, &cert, args.payload),
    );
    let mut pw = Writer::new();
    pw.u8(args.kind)
        .bytes16(&cert)
        .bytes16(args.payload)
        .raw(&sig);
    let plain = pw.into_vec();
    let key = derive_key(shared.as_bytes(), &ephemeral, &recipient.x25519);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&[0; 12]),
            Payload {
                msg: &plain,
                aad: &header_bytes,
            },
        )
        .map_err(|_| EnvelopeError::Decrypt)?;
    let mut w = Writer { buf: header_bytes };
    w.bytes16(&ct);
    Ok(w.into_vec())
}

/// Open an envelope addressed to `me` (username `my_name`) at `now` (the
/// wall clock),
/// checking the sender's certificate against `authority`.
pub fn open(
    bytes: &[u8],
    me: &DeviceIdentity,
    my_name: &str,
    authority: &[u8; 32],
    now: UnixMillis,
) -> Result<Opened, EnvelopeError> {
    let s = Sealed::decode(bytes)?;
    let h = s.header;
    if !h.to.eq_ignore_ascii_case(my_name) {
        return Err(EnvelopeError::NotForUs {
            to: h.to.to_owned(),
        });
    }
    if h.recipient != me.x25519_public() {
        return Err(EnvelopeError::WrongKey);
    }
    h.check_lifetime(now)?;
    let secret = x25519_dalek::StaticSecret::from(me.x25519_secret());
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(h.ephemeral));
    if !shared.was_contributory() {
        return Err(EnvelopeError::Decrypt);
    }
    let key = derive_key(shared.as_bytes(), &h.ephemeral, &h.recipient);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
    let plain = cipher
        .decrypt(
            Nonce::from_slice(&[0; 12]),
            Payload {
                msg: s.ciphertext,
                aad: s.header_bytes,
            },
        )
        .map_err(|_| EnvelopeError::Decrypt)?;
    let mut r = Reader::new(&plain);
    let kind = r.u8()?;
    let cert_bytes = r.bytes16()?;
    let payload = r.bytes16()?;
    let sig: [u8; 64] = r.array()?;
    r.finish()?;
    let cert = Certificate::decode(cert_bytes)?;
    // Judged now, not when the envelope was made (issue 14.9): the
    // certificate must be valid at receipt, give or take the skew, so a
    // revoked device's or disabled account's envelopes stop being
    // accepted when its last certificate runs out.
    let now = now.secs().get();
    let skew = MAX_SKEW_MS / 1000;
    if now >= cert.not_after.saturating_add(skew) {
        return Err(EnvelopeError::Certificate(CertError::Expired {
            at: crate::identity::cert::fmt_time(cert.not_after),
        }));
    }
    if now.saturating_add(skew) < cert.not_before {
        return Err(EnvelopeError::Certificate(CertError::NotYetValid {
            at: crate::identity::cert::fmt_time(cert.not_before),
        }));
    }
    let at = now.clamp(cert.not_before, cert.not_after.saturating_sub(1));
    cert.verify(authority, UnixSecs(at))
        .map_err(EnvelopeError::Certificate)?;
    let created = h.created_ms / 1000;
    if created >= cert.not_after || created + MAX_SKEW_MS / 1000 < cert.not_before {
        return Err(EnvelopeError::Certificate(CertError::Expired {
            at: crate::identity::cert::fmt_time(cert.not_after),
        }));
    }
    if !verify_signature(
        &cert.ed25519,
        SIG_CONTEXT,
        &signed_bytes(s.header_bytes, kind, cert_bytes, payload),
        &sig,
    ) {
        return Err(EnvelopeError::BadSignature);
    }
    Ok(Opened {
        id: h.id,
        from: cert,
        kind,
        payload: payload.to_vec(),
        created_ms: h.created_ms,
        expires_ms: h.expires_ms,
        store: h.store,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{AuthorityKey, Role, Username};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const NOW: u64 = 1_800_000_000_000;

    fn user(a: &AuthorityKey, rng: &mut StdRng, name: &str) -> (DeviceIdentity, Certificate) {
        let d = DeviceIdentity::generate(rng);
        let c = Certificate::issue(
            a,
            1,
            Role::User,
            NOW / 1000 - 60,
            NOW / 1000 + 86400,
            &Username::parse(name).unwrap(),
            d.ed25519_public(),
            d.x25519_public(),
        );
        (d, c)
    }

    struct Fx {
        rng: StdRng,
        auth: AuthorityKey,
        alice: (DeviceIdentity, Certificate),
        bob: (DeviceIdentity, Certificate),
        carol: (DeviceIdentity, Certificate),
    }

    fn fx() -> Fx {
        let mut rng = StdRng::seed_from_u64(11);
        let auth = AuthorityKey::generate(&mut rng);
        let alice = user(&auth, &mut rng, "alice");
        let bob = user(&auth, &mut rng, "bob");
        let carol = user(&auth, &mut rng, "carol");
        Fx {
            rng,
            auth,
            alice,
            bob,
            carol,
        }
    }

    fn args(payload: &[u8]) -> SealArgs<'_> {
        SealArgs {
            id: [7; 16],
            kind: kind::CHAT,
            payload,
            created_ms: NOW,
            ttl_ms: 3_600_000,
            store: true,
        }
    }

    #[test]
    fn seal_open_round_trip() {
        let mut f = fx();
        let env = seal(&mut f.rng, &f.alice.0, &f.alice.1, &f.bob.1, args(b"hello")).unwrap();
        let s = Sealed::decode(&env).unwrap();
        assert_eq!(s.encode(), env);
        assert_eq!(s.header.to, "bob");
        assert!(s.header.store);
        // Supernodes see no content.
        assert!(!env.windows(5).any(|w| w == b"hello"));
        assert!(!env.windows(5).any(|w| w == b"alice"));
        let o = open(&env, &f.bob.0, "bob", &f.auth.public(), UnixMillis(NOW + 1)).unwrap();
        assert_eq!(o.payload, b"hello");
        assert_eq!(o.from, f.alice.1);
        assert_eq!(o.kind, kind::CHAT);
        assert_eq!(o.id, [7; 16]);
    }

    #[test]
    fn tampering_is_detected_everywhere() {
        let mut f = fx();
        let env = seal(&mut f.rng, &f.alice.0, &f.alice.1, &f.bob.1, args(b"hello")).unwrap();
        for i in 0..env.len() {
            let mut t = env.clone();
            t[i] ^= 0x01;
            assert!(
                open(&t, &f.bob.0, "bob", &f.auth.public(), UnixMillis(NOW + 1)).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn wrong_recipient_cannot_open() {
        let mut f = fx();
        let env = seal(&mut f.rng, &f.alice.0, &f.alice.1, &f.bob.1, args(b"x")).unwrap();
        assert!(matches!(
            open(&env, &f.carol.0, "carol", &f.auth.public(), UnixMillis(NOW)),
            Err(EnvelopeError::NotForUs { .. })
        ));
        // Carol pretending to be bob by name still lacks bob's key.
        assert_eq!(
            open(&env, &f.carol.0, "bob", &f.auth.public(), UnixMillis(NOW)),
            Err(EnvelopeError::WrongKey)
        );
        // Re-addressed to carol's key and name: the AEAD and the signature
        // both cover the header.
        let s = Sealed::decode(&env).unwrap();
        let mut h = s.header;
        h.to = "carol";
        h.recipient = f.carol.0.x25519_public();
        let forged = Sealed {
            header: h,
            header_bytes: &[],
            ciphertext: s.ciphertext,
        }
        .encode();
        assert_eq!(
            open(
                &forged,
                &f.carol.0,
                "carol",
                &f.auth.public(),
                UnixMillis(NOW)
            ),
            Err(EnvelopeError::Decrypt)
        );
    }

    #[test]
    fn forged_sender_rejected() {
        let mut f = fx();
        // Carol signs with her key but puts alice's certificate inside.
        let env = seal(&mut f.rng, &f.carol.0, &f.alice.1, &f.bob.1, args(b"x")).unwrap();
        assert_eq!(
            open(&env, &f.bob.0, "bob", &f.auth.public(), UnixMillis(NOW)),
            Err(EnvelopeError::BadSignature)
        );
        // A certificate from another authority.
        let mut rng = StdRng::seed_from_u64(12);
        let other = AuthorityKey::generate(&mut rng);
        let mallory = user(&other, &mut rng, "alice");
        let env = seal(&mut f.rng, &mallory.0, &mallory.1, &f.bob.1, args(b"x")).unwrap();
        assert!(matches!(
            open(&env, &f.bob.0, "bob", &f.auth.public(), UnixMillis(NOW)),
            Err(EnvelopeError::Certificate(CertError::UnknownIssuer { .. }))
        ));
    }

    #[test]
    fn expiry_and_lifetime() {
        let mut f = fx();
        let env = seal(&mut f.rng, &f.alice.0, &f.alice.1, &f.bob.1, args(b"x")).unwrap();
        assert_eq!(
            open(
                &env,
                &f.bob.0,
                "bob",
                &f.auth.public(),
                UnixMillis(NOW + 3_600_000)
            ),
            Err(EnvelopeError::Expired)
        );
        // Issue 14.9: judged at receipt. Within the sender certificate's
        // life (plus the skew) it opens; after it, it is refused even
        // though the envelope itself still lives (no 72 h grace).
        let mut a = args(b"x");
        a.ttl_ms = MAX_TTL_MS;
        let env = seal(&mut f.rng, &f.alice.0, &f.alice.1, &f.bob.1, a).unwrap();
        let cert_end_ms = f.alice.1.not_after * 1000;
        let last = cert_end_ms + MAX_SKEW_MS - 1000;
        assert!(open(&env, &f.bob.0, "bob", &f.auth.public(), UnixMillis(last)).is_ok());
        assert!(matches!(
            open(
                &env,
                &f.bob.0,
                "bob",
                &f.auth.public(),
                UnixMillis(cert_end_ms + MAX_SKEW_MS)
            ),
            Err(EnvelopeError::Certificate(CertError::Expired { .. }))
        ));
        let later = NOW + 2 * 86_400_000;
        assert!(matches!(
            open(&env, &f.bob.0, "bob", &f.auth.public(), UnixMillis(later)),
            Err(EnvelopeError::Certificate(CertError::Expired { .. }))
        ));
        // Created after the sender's certificate expired.
        let mut a = args(b"x");
        a.created_ms = NOW + 2 * 86_400_000;
        let env = seal(&mut f.rng, &f.alice.0, &f.alice.1, &f.bob.1, a).unwrap();
        assert!(matches!(
            open(
                &env,
                &f.bob.0,
                "bob",
                &f.auth.public(),
                UnixMillis(a.created_ms)
            ),
            Err(EnvelopeError::Certificate(_))
        ));
        // Created in the future.
        let mut a = args(b"x");
        a.created_ms = NOW + MAX_SKEW_MS + 60_000;
        let env = seal(&mut f.rng, &f.alice.0, &f.alice.1, &f.bob.1, a).unwrap();
        assert_eq!(
            open(&env, &f.bob.0, "bob", &f.auth.public(), UnixMillis(NOW)),
            Err(EnvelopeError::BadLifetime)
        );
    }

    #[test]
    fn oversized_and_truncated() {
        let mut f = fx();
        let big = vec![0u8; MAX_PAYLOAD + 1];
        assert!(matches!(
            seal(&mut f.rng, &f.alice.0, &f.alice.1, &f.bob.1, args(&big)),
            Err(EnvelopeError::TooLarge { .. })
        ));
        let max = vec![0u8; MAX_PAYLOAD];
        let env = seal(&mut f.rng, &f.alice.0, &f.alice.1, &f.bob.1, args(&max)).unwrap();
        assert!(env.len() <= MAX_ENVELOPE);
        assert!(env.len() + 64 <= crate::link::MAX_PAYLOAD);
        let env = seal(&mut f.rng, &f.alice.0, &f.alice.1, &f.bob.1, args(b"x")).unwrap();
        for cut in 0..env.len() {
            assert!(Sealed::decode(&env[..cut]).is_err());
        }
    }
}
