//! Presence records: who a user is, where to reach them and their status,
//! signed by the user's device key.
//!
//! Layout: `cert bytes16 | seq u64 | signed_at_ms u64 | online_until u64 |
//! expires_at u64 | status u8 | message str8 | supernodes (u8 n, addr*) |
//! candidates (u8 n, addr*) | signature [64]`. The signature covers every
//! byte before it under `RECORD_CONTEXT`. A record is valid when the
//! certificate is the pinned authority's and is valid now (give or take
//! [`MAX_SKEW_SECS`]), the record was signed within the certificate's
//! validity and not ahead of now, the signature is the certificate's
//! device key's, and it has not expired. A record lives no longer than
//! its certificate: a revoked device or a disabled account, whose
//! certificate is not renewed, drops out of the directory when it runs
//! out. Readers verify again: a supernode can hide a record but not
//! forge or redirect one.

use crate::identity::{CertError, Certificate, verify_signature};
use crate::time::UnixSecs;
use crate::wire::{Reader, WireError, Writer};
use std::net::SocketAddr;
use thiserror::Error;

const RECORD_CONTEXT: &[u8] = b"natter presence v1";
/// A record is kept (and its user found, offline) at most this long after
/// signing, and never past its certificate.
pub const MAX_RECORD_AGE_SECS: u64 = 72 * 3600;
pub use crate::wire::addr::MAX_ADDRS;
/// Clock difference tolerated between a record's signer and its readers
/// (the envelopes' allowance, in seconds).
pub const MAX_SKEW_SECS: u64 = super::envelope::MAX_SKEW_MS / 1000;

/// What a user shows to others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Online,
    Away,
    DoNotDisturb,
    /// Online but shown as offline to others.
    Invisible,
    Offline,
}

impl Status {
    pub fn to_u8(self) -> u8 {
        match self {
            Status::Online => 1,
            Status::Away => 2,
            Status::DoNotDisturb => 3,
            Status::Invisible => 4,
            Status::Offline => 5,
        }
    }

    pub fn from_u8(v: u8) -> Result<Self, WireError> {
        Ok(match v {
            1 => Status::Online,
            2 => Status::Away,
            3 => Status::DoNotDisturb,
            4 => Status::Invisible,
            5 => Status::Offline,
            got => {
                return Err(WireError::UnknownType {
                    what: "status",
                    got,
                });
            }
        })
    }

    /// The status in words, the one name the TUI, headless text and the
    /// README use ("do not disturb"); [`Status::as_str`] is the token of
    /// commands and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Away => "away",
            Status::DoNotDisturb => "do not disturb",
            Status::Invisible => "invisible",
            Status::Offline => "offline",
        }
    }

    /// The token of commands and JSON events (`dnd`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Away => "away",
            Status::DoNotDisturb => "dnd",
            Status::Invisible => "invisible",
            Status::Offline => "offline",
        }
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "online" => Status::Online,
            "away" => Status::Away,
            "dnd" | "do-not-disturb" => Status::DoNotDisturb,
            "invisible" => Status::Invisible,
            "offline" => Status::Offline,
            _ => {
                return Err(format!(
                    "unknown status {s:?}: expected online, away, dnd (do not disturb), invisible or offline"
                ));
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    #[error("malformed record: {0}")]
    Malformed(#[from] WireError),
    #[error("record certificate rejected: {0}")]
    Certificate(CertError),
    #[error("record signature is invalid (forged or altered)")]
    BadSignature,
    #[error("record was signed outside its certificate's validity")]
    OutsideCertificate,
    #[error("record expired")]
    Expired,
    /// Its certificate is not valid now (expired beyond the skew, or not
    /// yet valid): judged when the record is received, not when signed.
    #[error("record certificate is not valid now: {0}")]
    CertificateNotValidNow(CertError),
    /// Signed in the future (beyond the allowed clock skew): a device with
    /// its clock far ahead could otherwise pin the user's entry.
    #[error("record was signed {ahead_secs} s in the future")]
    FromTheFuture { ahead_secs: u64 },
    /// A sequence number beyond now plus the allowed skew (counted in
    /// milliseconds, as devices number records by their clock): one
    /// record with `u64::MAX` would freeze the user's entry until it
    /// expired, as every later record would be stale.
    #[error("record sequence number {seq} is ahead of the clock")]
    SeqAhead { seq: u64 },
    #[error("record is older than one already held (seq {got} <= {have})")]
    Stale { got: u64, have: u64 },
    #[error("record is for {got}, not {want}")]
    WrongUser { got: String, want: String },
}

/// Key for caching that a certificate was verified: a digest of all of
/// it. The signature alone will not do, since a forged certificate can
/// carry a copy of a verified one's signature.
pub fn cert_digest(cert: &Certificate) -> [u8; 32] {
    use blake2::{Blake2s256, Digest};
    Blake2s256::digest(cert.encode()).into()
}

pub use crate::wire::addr::{read_addr, read_addrs, write_addr, write_addrs};

/// The directory's name for one device's record: the username, `/` (never
/// in a username), and the first 16 bytes of the device's ed25519 key in
/// hex. All of a user's records sort together and live on the same
/// owners (placed by [`super::user_key`] of the username).
pub fn record_name(username: &str, device: &[u8; 32]) -> String {
    let mut s = String::with_capacity(username.len() + 33);
    s.push_str(username);
    s.push('/');
    for b in &device[..16] {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The username a record name (or a bare username) is for.
pub fn name_user(name: &str) -> &str {
    name.split_once('/').map_or(name, |(u, _)| u)
}

/// The range of record names of `username`'s devices.
pub fn user_range(username: &str) -> std::ops::Range<String> {
    format!("{username}/")..format!("{username}0")
}

/// Bytes of a record's timing fields: `seq`, `signed_at_ms`,
/// `online_until` and `expires_at`, as they appear on the wire.
pub const TIMING_LEN: usize = 32;

/// An encoded record split around its timing fields.
struct Parts<'a> {
    /// Everything before them (the certificate).
    head: &'a [u8],
    timing: &'a [u8],
    /// Everything after them up to the signature.
    tail: &'a [u8],
    signature: &'a [u8],
}

/// `bytes` split into [`Parts`]; `None` when too short to be a record.
fn split_timing(bytes: &[u8]) -> Option<Parts<'_>> {
    let cert_len = u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?) as usize;
    let t = 2usize.checked_add(cert_len)?;
    let sig = bytes.len().checked_sub(64)?;
    if t.checked_add(TIMING_LEN)? > sig {
        return None;
    }
    Some(Parts {
        head: &bytes[..t],
        timing: &bytes[t..t + TIMING_LEN],
        tail: &bytes[t + TIMING_LEN..sig],
        signature: &bytes[sig..],
    })
}

/// If `new` differs from `old` only in its timing fields (a refresh that
/// extends how long the device shows online) and signature: those
/// timing bytes and the signature, which rebuild `new` from `old`
/// ([`with_timing`]).
pub fn timing_delta(old: &[u8], new: &[u8]) -> Option<([u8; TIMING_LEN], [u8; 64])> {
    let (o, n) = (split_timing(old)?, split_timing(new)?);
    if o.head != n.head || o.tail != n.tail {
        return None;
    }
    Some((n.timing.try_into().ok()?, n.signature.try_into().ok()?))
}

/// `old` with its timing fields and signature replaced: the record a
/// [`timing_delta`] was taken from, for the reader to verify as any
/// other. `None` when `old` is too short to be a record.
pub fn with_timing(old: &[u8], timing: &[u8; TIMING_LEN], signature: &[u8; 64]) -> Option<Vec<u8>> {
    let p = split_timing(old)?;
    let mut v = Vec::with_capacity(old.len());
    v.extend_from_slice(p.head);
    v.extend_from_slice(timing);
    v.extend_from_slice(p.tail);
    v.extend_from_slice(signature);
    Some(v)
}

/// A decoded presence record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRecord {
    pub cert: Certificate,
    pub seq: u64,
    pub signed_at_ms: u64,
    /// Shown online until then (unix seconds); a refresh extends it.
    pub online_until: u64,
    /// Dropped after this (unix seconds).
    pub expires_at: u64,
    pub status: Status,
    pub message: String,
    /// Supernodes the user is attached to.
    pub supernodes: Vec<SocketAddr>,
    /// Addresses the user may be reached at directly.
    pub candidates: Vec<SocketAddr>,
    pub signature: [u8; 64],
}

/// Everything a user chooses when signing a record.
#[derive(Debug, Clone)]
pub struct RecordContent {
    pub seq: u64,
    pub signed_at_ms: u64,
    pub online_secs: u64,
    pub status: Status,
    pub message: String,
    pub supernodes: Vec<SocketAddr>,
    pub candidates: Vec<SocketAddr>,
}

impl PresenceRecord {
    pub fn sign(
        device: &crate::identity::DeviceIdentity,
        cert: &Certificate,
        c: RecordContent,
    ) -> Self {
        let signed = c.signed_at_ms / 1000;
        let mut message = c.message;
        while message.len() > 255 {
            message.pop();
        }
        let mut r = PresenceRecord {
            cert: cert.clone(),
            seq: c.seq,
            signed_at_ms: c.signed_at_ms,
            online_until: if c.status == Status::Offline {
                signed
            } else {
                signed + c.online_secs
            },
            expires_at: signed + MAX_RECORD_AGE_SECS,
            status: c.status,
            message,
            supernodes: c.supernodes.into_iter().take(MAX_ADDRS).collect(),
            candidates: c.candidates.into_iter().take(MAX_ADDRS).collect(),
            signature: [0; 64],
        };
        r.signature = device.sign(RECORD_CONTEXT, &r.body());
        r
    }

    fn body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes16(&self.cert.encode())
            .u64(self.seq)
            .u64(self.signed_at_ms)
            .u64(self.online_until)
            .u64(self.expires_at)
            .u8(self.status.to_u8())
            .bytes8(self.message.as_bytes());
        write_addrs(&mut w, &self.supernodes);
        write_addrs(&mut w, &self.candidates);
        w.into_vec()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.body();
        v.extend_from_slice(&self.signature);
        v
    }

    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let cert = Certificate::decode(r.bytes16()?)?;
        let rec = PresenceRecord {
            cert,
            seq: r.u64()?,
            signed_at_ms: r.u64()?,
            online_until: r.u64()?,
            expires_at: r.u64()?,
            status: Status::from_u8(r.u8()?)?,
            message: r.str8("status message")?.to_owned(),
            supernodes: read_addrs(&mut r)?,
            candidates: read_addrs(&mut r)?,
            signature: r.array()?,
        };
        r.finish()?;
        Ok(rec)
    }

    pub fn username(&self) -> &str {
        &self.cert.username
    }

    /// The directory's name for this record ([`record_name`]).
    pub fn name(&self) -> String {
        record_name(&self.cert.username, &self.cert.ed25519)
    }

    /// How available the device shows its user at `now`, best first:
    /// online, away, do not disturb, then offline (invisible and records
    /// run out count as offline to others).
    pub fn availability(&self, now: UnixSecs) -> u8 {
        if !self.is_online(now) {
            return 3;
        }
        match self.status {
            Status::Online => 0,
            Status::Away => 1,
            Status::DoNotDisturb => 2,
            Status::Invisible | Status::Offline => 3,
        }
    }

    /// Full check at `now` (the wall clock); see the module doc.
    pub fn verify(&self, authority: &[u8; 32], now: UnixSecs) -> Result<(), RecordError> {
        self.verify_certificate(authority)?;
        self.verify_signed(now)
    }

    /// The certificate's issuer and signature (cacheable per certificate).
    pub fn verify_certificate(&self, authority: &[u8; 32]) -> Result<(), RecordError> {
        // Issuer, signature and username; time is judged against `now` in
        // `verify_signed`, so this result may be cached per certificate.
        let signed = self.signed_at_ms / 1000;
        // Within the certificate's validity; a certificate that has none
        // (not_before past not_after, as a stranger may send) is judged at
        // not_before, where it fails, rather than panicking the clamp.
        let last = self
            .cert
            .not_after
            .saturating_sub(1)
            .max(self.cert.not_before);
        self.cert
            .verify(
                authority,
                UnixSecs(signed.clamp(self.cert.not_before, last)),
            )
            .map_err(RecordError::Certificate)
    }

    /// When a holder must drop the record (wall clock): its own expiry or
    /// its certificate's (plus the skew), whichever is first.
    pub fn valid_until(&self) -> UnixSecs {
        UnixSecs(
            self.expires_at
                .min(self.cert.not_after.saturating_add(MAX_SKEW_SECS)),
        )
    }

    /// Everything but the certificate's own signature. `signed_at` and
    /// `seq` are judged against `now` (a reader's clock, give or take
    /// [`MAX_SKEW_SECS`]): neither may lie ahead of it. Devices number
    /// records with their clock in milliseconds, so the bound on `seq` is
    /// the same for every device of the user.
    pub fn verify_signed(&self, now: UnixSecs) -> Result<(), RecordError> {
        let now = now.get();
        if now >= self.cert.not_after.saturating_add(MAX_SKEW_SECS) {
            return Err(RecordError::CertificateNotValidNow(CertError::Expired {
                at: crate::identity::cert::fmt_time(self.cert.not_after),
            }));
        }
        if now.saturating_add(MAX_SKEW_SECS) < self.cert.not_before {
            return Err(RecordError::CertificateNotValidNow(
                CertError::NotYetValid {
                    at: crate::identity::cert::fmt_time(self.cert.not_before),
                },
            ));
        }
        let signed = self.signed_at_ms / 1000;
        if signed >= self.cert.not_after || signed + MAX_SKEW_SECS < self.cert.not_before {
            return Err(RecordError::OutsideCertificate);
        }
        let horizon = now.saturating_add(MAX_SKEW_SECS);
        if signed > horizon {
            return Err(RecordError::FromTheFuture {
                ahead_secs: signed - now,
            });
        }
        if self.seq > horizon.saturating_add(1).saturating_mul(1000) {
            return Err(RecordError::SeqAhead { seq: self.seq });
        }
        if !verify_signature(
            &self.cert.ed25519,
            RECORD_CONTEXT,
            &self.body(),
            &self.signature,
        ) {
            return Err(RecordError::BadSignature);
        }
        if self.expires_at > signed + MAX_RECORD_AGE_SECS || self.online_until > self.expires_at {
            return Err(RecordError::BadSignature);
        }
        if now >= self.expires_at {
            return Err(RecordError::Expired);
        }
        Ok(())
    }

    /// Whether the user is to be shown online at `now`.
    pub fn is_online(&self, now: UnixSecs) -> bool {
        !matches!(self.status, Status::Offline | Status::Invisible) && now.get() < self.online_until
    }

    /// Whether the user's device is attached and can be reached at `now`,
    /// whatever status it shows: an invisible user hides their status from
    /// strangers, but their contacts still reach them.
    pub fn is_reachable(&self, now: UnixSecs) -> bool {
        self.status != Status::Offline
            && now.get() < self.online_until
            && !self.supernodes.is_empty()
    }

    /// When the user was last online (wall clock): `None` while they are,
    /// and for a record that hides its status (invisible: when it was
    /// signed says only that the device is up, not when the user was
    /// last seen).
    pub fn last_seen(&self, now: UnixSecs) -> Option<UnixSecs> {
        if self.status == Status::Invisible || self.is_online(now) {
            return None;
        }
        Some(UnixSecs(
            self.online_until
                .min(now.get())
                .max(self.signed_at_ms / 1000),
        ))
    }
}

/// The record that speaks for a user with several devices at `now`: the
/// most available device's ([`PresenceRecord::availability`]), then one
/// that can be reached (an invisible device still takes calls from
/// contacts), then the newest.
pub fn most_available(recs: &[PresenceRecord], now: UnixSecs) -> Option<&PresenceRecord> {
    recs.iter().min_by_key(|r| {
        (
            r.availability(now),
            !r.is_reachable(now),
            std::cmp::Reverse(r.seq),
        )
    })
}

/// When a user of several devices was last seen at `now`: `None` while
/// any device shows them online or when every device hides it, else the
/// newest of the devices' [`PresenceRecord::last_seen`].
pub fn merged_last_seen(recs: &[PresenceRecord], now: UnixSecs) -> Option<UnixSecs> {
    if recs.iter().any(|r| r.is_online(now)) {
        return None;
    }
    recs.iter().filter_map(|r| r.last_seen(now)).max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{AuthorityKey, DeviceIdentity, Role, Username};
    use rand::SeedableRng;

    pub fn fixture(now: UnixSecs) -> (AuthorityKey, DeviceIdentity, Certificate) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let a = AuthorityKey::generate(&mut rng);
        let d = DeviceIdentity::generate(&mut rng);
        let c = Certificate::issue(
            &a,
            1,
            Role::User,
            (now - 10).get(),
            (now + 86400).get(),
            &Username::parse("alice").unwrap(),
            d.ed25519_public(),
            d.x25519_public(),
        );
        (a, d, c)
    }

    fn content(now: UnixSecs, seq: u64) -> RecordContent {
        RecordContent {
            seq,
            signed_at_ms: now.millis().get(),
            online_secs: 300,
            status: Status::Online,
            message: "hi".into(),
            supernodes: vec!["10.0.0.1:7000".parse().unwrap()],
            candidates: vec!["[::1]:5".parse().unwrap()],
        }
    }

    #[test]
    fn a_refresh_is_rebuilt_from_its_delta_and_nothing_else_is() {
        let now = UnixSecs(1_800_000_000);
        let (a, d, c) = fixture(now);
        let old = PresenceRecord::sign(&d, &c, content(now, 1)).encode();
        let new = PresenceRecord::sign(&d, &c, content(now + 120, 2)).encode();
        let (timing, sig) = timing_delta(&old, &new).expect("only timing changed");
        let rebuilt = with_timing(&old, &timing, &sig).unwrap();
        assert_eq!(rebuilt, new);
        PresenceRecord::decode(&rebuilt)
            .unwrap()
            .verify(&a.public(), now + 120)
            .unwrap();
        // A new status message is not a refresh.
        let moved = PresenceRecord::sign(
            &d,
            &c,
            RecordContent {
                message: "at lunch".into(),
                ..content(now + 120, 3)
            },
        )
        .encode();
        assert_eq!(timing_delta(&old, &moved), None);
        // Applied to another version, the delta does not verify.
        let other = with_timing(&moved, &timing, &sig).unwrap();
        assert!(
            PresenceRecord::decode(&other)
                .unwrap()
                .verify(&a.public(), now + 120)
                .is_err()
        );
        // Bytes too short to be a record.
        assert_eq!(with_timing(&[0, 200, 1], &timing, &sig), None);
        assert_eq!(timing_delta(&[], &new), None);
    }

    #[test]
    fn round_trip_verify_and_lifecycle() {
        let now = UnixSecs(1_800_000_000);
        let (a, d, c) = fixture(now);
        let r = PresenceRecord::sign(&d, &c, content(now, 1));
        let back = PresenceRecord::decode(&r.encode()).unwrap();
        assert_eq!(back, r);
        back.verify(&a.public(), now).unwrap();
        assert!(r.is_online(now));
        assert!(!r.is_online(now + 300));
        // Last seen: not while online; then when the record ran out.
        assert_eq!(r.last_seen(now), None);
        assert_eq!(r.last_seen(now + 400), Some(now + 300));
        // A record hiding its status never tells when it was signed.
        let hidden = PresenceRecord::sign(
            &d,
            &c,
            RecordContent {
                status: Status::Invisible,
                ..content(now, 2)
            },
        );
        assert_eq!(hidden.last_seen(now), None);
        assert_eq!(hidden.last_seen(now + 400), None);
        // Offline: when it was signed, not when it is read.
        let gone = PresenceRecord::sign(
            &d,
            &c,
            RecordContent {
                status: Status::Offline,
                ..content(now, 3)
            },
        );
        assert_eq!(gone.last_seen(now + 1000), Some(now));
        // Issue 14.9: found until its certificate expires (give or take
        // the skew), not 72 h after signing.
        let cert_end = c.not_after;
        assert_eq!(r.valid_until(), UnixSecs(cert_end + MAX_SKEW_SECS));
        r.verify(&a.public(), UnixSecs(cert_end + MAX_SKEW_SECS - 1))
            .unwrap();
        assert!(matches!(
            r.verify(&a.public(), UnixSecs(cert_end + MAX_SKEW_SECS)),
            Err(RecordError::CertificateNotValidNow(
                CertError::Expired { .. }
            ))
        ));
        assert!(matches!(
            r.verify(&a.public(), now + 2 * 86400),
            Err(RecordError::CertificateNotValidNow(_))
        ));
        // A reader whose clock is far behind the certificate refuses it.
        assert!(matches!(
            r.verify(&a.public(), UnixSecs(c.not_before - MAX_SKEW_SECS - 1)),
            Err(RecordError::CertificateNotValidNow(
                CertError::NotYetValid { .. }
            ))
        ));
    }

    #[test]
    fn forgeries_rejected() {
        let now = UnixSecs(1_800_000_000);
        let (a, d, c) = fixture(now);
        let r = PresenceRecord::sign(&d, &c, content(now, 1));
        let mut redirected = r.clone();
        redirected.supernodes = vec!["6.6.6.6:1".parse().unwrap()];
        assert_eq!(
            redirected.verify(&a.public(), now),
            Err(RecordError::BadSignature)
        );
        // Signed by another device with alice's certificate.
        let mallory = DeviceIdentity::generate(&mut rand::rngs::StdRng::seed_from_u64(6));
        let forged = PresenceRecord::sign(&mallory, &c, content(now, 2));
        assert_eq!(
            forged.verify(&a.public(), now),
            Err(RecordError::BadSignature)
        );
        let mut unsigned = r.clone();
        unsigned.signature = [0; 64];
        assert_eq!(
            unsigned.verify(&a.public(), now),
            Err(RecordError::BadSignature)
        );
        let other = AuthorityKey::generate(&mut rand::rngs::StdRng::seed_from_u64(7));
        assert!(matches!(
            r.verify(&other.public(), now),
            Err(RecordError::Certificate(_))
        ));
        // Signed after its certificate expired.
        let late = PresenceRecord::sign(&d, &c, content(now + 86400, 3));
        assert_eq!(
            late.verify(&a.public(), now + 86400),
            Err(RecordError::OutsideCertificate)
        );
    }

    /// Issue 14.12: a device publishing `seq = u64::MAX` (or signing with
    /// its clock far ahead) is refused; a record from a clock a little
    /// ahead is not.
    #[test]
    fn seq_and_signing_time_are_bounded_by_now_plus_skew() {
        let now = UnixSecs(1_800_000_000);
        let (a, d, c) = fixture(now);
        let max = PresenceRecord::sign(&d, &c, content(now, u64::MAX));
        assert_eq!(
            max.verify(&a.public(), now),
            Err(RecordError::SeqAhead { seq: u64::MAX })
        );
        let ahead = PresenceRecord::sign(&d, &c, content(now, (now + 3600).millis().get()));
        assert!(matches!(
            ahead.verify(&a.public(), now),
            Err(RecordError::SeqAhead { .. })
        ));
        let mut future = content(now + 3600, now.millis().get());
        future.signed_at_ms = (now + 3600).millis().get();
        let future = PresenceRecord::sign(&d, &c, future);
        assert_eq!(
            future.verify(&a.public(), now),
            Err(RecordError::FromTheFuture { ahead_secs: 3600 })
        );
        // Within the skew: fine, and so is the usual clock-numbered seq.
        let skewed = PresenceRecord::sign(&d, &c, content(now + 200, (now + 200).millis().get()));
        skewed.verify(&a.public(), now).unwrap();
        let usual = PresenceRecord::sign(&d, &c, content(now, now.millis().get() + 7));
        usual.verify(&a.public(), now).unwrap();
    }
}
