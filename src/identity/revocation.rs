//! The authority's signed revocation list: device keys revoked and
//! accounts disabled while a certificate issued to them may still be
//! valid. Supernodes fetch it every [`FETCH_INTERVAL_MS`] and refuse
//! links, attaches, records and envelopes from what it names, so a
//! revoked device or a disabled account is refused within a minute
//! rather than when its certificate runs out.
//!
//! Layout (integers big-endian):
//! `version u8 | issuer_id [8] | seq u64 | issued_at u64 | valid_until u64 |
//!  devices u16 n, (ed25519 [32])* | accounts u16 n, (username str8)* |
//!  sig [64]`, the signature over every byte before it under
//! `REVOCATION_CONTEXT`. `seq` grows with each list the authority signs
//! (it is the signing time in milliseconds), so an older list replayed by
//! anyone is ignored. A list is short-lived (`valid_until`); an entry
//! stays on it until the last certificate issued before the revocation
//! would have expired.

use super::{AuthorityKey, issuer_id, verify_signature};
use crate::time::{UnixMillis, UnixSecs};
use crate::wire::{Reader, WireError, Writer};
use std::collections::HashSet;
use thiserror::Error;

const VERSION: u8 = 1;
const REVOCATION_CONTEXT: &[u8] = b"natter revocation list v1";
/// Most revoked devices one list carries (the newest; the list must fit
/// one authority frame).
pub const MAX_DEVICES: usize = 256;
/// Most disabled accounts one list carries (the newest).
pub const MAX_ACCOUNTS: usize = 128;
/// How long a list is good for after it is signed.
pub const LIFETIME_SECS: u64 = 120;
/// How often a supernode fetches the list.
pub const FETCH_INTERVAL_MS: u64 = 30_000;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RevocationError {
    #[error("malformed revocation list: {0}")]
    Malformed(#[from] WireError),
    #[error("revocation list from another authority")]
    UnknownIssuer,
    #[error("revocation list signature is invalid")]
    BadSignature,
    #[error("revocation list expired")]
    Expired,
    #[error("revocation list seq {got} is not newer than {have}")]
    Stale { got: u64, have: u64 },
}

/// A decoded revocation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationList {
    pub seq: u64,
    /// Unix seconds.
    pub issued_at: u64,
    pub valid_until: u64,
    /// Revoked device ed25519 keys.
    pub devices: Vec<[u8; 32]>,
    /// Disabled accounts' usernames.
    pub accounts: Vec<String>,
    pub signature: [u8; 64],
    issuer: [u8; 8],
}

impl RevocationList {
    /// Sign a list at `now` (the wall clock, whose milliseconds number
    /// the list); entries beyond the bounds are dropped
    /// (the caller passes the newest first).
    pub fn sign(
        key: &AuthorityKey,
        now: UnixMillis,
        mut devices: Vec<[u8; 32]>,
        mut accounts: Vec<String>,
    ) -> Self {
        devices.truncate(MAX_DEVICES);
        accounts.retain(|a| a.len() <= 255);
        accounts.truncate(MAX_ACCOUNTS);
        let mut l = RevocationList {
            seq: now.get(),
            issued_at: now.secs().get(),
            valid_until: (now.secs() + LIFETIME_SECS).get(),
            devices,
            accounts,
            signature: [0; 64],
            issuer: issuer_id(&key.public()),
        };
        l.signature = key.sign(REVOCATION_CONTEXT, &l.body());
        l
    }

    fn body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION)
            .raw(&self.issuer)
            .u64(self.seq)
            .u64(self.issued_at)
            .u64(self.valid_until)
            .u16(self.devices.len() as u16);
        for d in &self.devices {
            w.raw(d);
        }
        w.u16(self.accounts.len() as u16);
        for a in &self.accounts {
            w.bytes8(a.as_bytes());
        }
        w.into_vec()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.body();
        v.extend_from_slice(&self.signature);
        v
    }

    /// Decode; counts are checked against the bounds before anything is
    /// read, and it never panics.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let version = r.u8()?;
        if version != VERSION {
            return Err(WireError::UnknownVersion { got: version });
        }
        let issuer = r.array()?;
        let seq = r.u64()?;
        let issued_at = r.u64()?;
        let valid_until = r.u64()?;
        let n = r.u16()? as usize;
        if n > MAX_DEVICES {
            return Err(WireError::Invalid {
                field: "revoked device count",
            });
        }
        let devices = (0..n).map(|_| r.array()).collect::<Result<Vec<_>, _>>()?;
        let n = r.u16()? as usize;
        if n > MAX_ACCOUNTS {
            return Err(WireError::Invalid {
                field: "disabled account count",
            });
        }
        let accounts = (0..n)
            .map(|_| r.str8("username").map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()?;
        let signature = r.array()?;
        r.finish()?;
        Ok(RevocationList {
            seq,
            issued_at,
            valid_until,
            devices,
            accounts,
            signature,
            issuer,
        })
    }

    /// Check issuer, signature and that the list is still good at `now`
    /// (the wall clock).
    pub fn verify(&self, authority: &[u8; 32], now: UnixSecs) -> Result<(), RevocationError> {
        if self.issuer != issuer_id(authority) {
            return Err(RevocationError::UnknownIssuer);
        }
        if !verify_signature(authority, REVOCATION_CONTEXT, &self.body(), &self.signature) {
            return Err(RevocationError::BadSignature);
        }
        if now.get() >= self.valid_until {
            return Err(RevocationError::Expired);
        }
        Ok(())
    }
}

/// What a supernode refuses: the newest verified list, as sets.
#[derive(Debug, Clone, Default)]
pub struct Revoked {
    /// Seq of the list held (0: none yet).
    pub seq: u64,
    devices: HashSet<[u8; 32]>,
    /// Lowercase usernames.
    accounts: HashSet<String>,
}

impl Revoked {
    /// Take a verified list if it is newer than the one held.
    pub fn update(&mut self, list: &RevocationList) -> Result<(), RevocationError> {
        if list.seq <= self.seq {
            return Err(RevocationError::Stale {
                got: list.seq,
                have: self.seq,
            });
        }
        self.seq = list.seq;
        self.devices = list.devices.iter().copied().collect();
        self.accounts = list
            .accounts
            .iter()
            .map(|a| a.to_ascii_lowercase())
            .collect();
        Ok(())
    }

    /// Whether a certificate for `username` on device `ed25519` is to be
    /// refused.
    pub fn refuses(&self, username: &str, ed25519: &[u8; 32]) -> bool {
        self.devices.contains(ed25519)
            || (!self.accounts.is_empty() && self.accounts.contains(&username.to_ascii_lowercase()))
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty() && self.accounts.is_empty()
    }

    pub fn len(&self) -> usize {
        self.devices.len() + self.accounts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sign_verify_update_and_refuse() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let key = AuthorityKey::generate(&mut rng);
        let now = UnixMillis(1_800_000_000_000);
        let l = RevocationList::sign(&key, now, vec![[1; 32]], vec!["Bob".into()]);
        let back = RevocationList::decode(&l.encode()).unwrap();
        assert_eq!(back, l);
        back.verify(&key.public(), now.secs()).unwrap();
        assert_eq!(
            back.verify(&key.public(), now.secs() + LIFETIME_SECS),
            Err(RevocationError::Expired)
        );
        let other = AuthorityKey::generate(&mut rng);
        assert_eq!(
            back.verify(&other.public(), now.secs()),
            Err(RevocationError::UnknownIssuer)
        );
        let mut forged = back.clone();
        forged.devices.clear();
        assert_eq!(
            forged.verify(&key.public(), now.secs()),
            Err(RevocationError::BadSignature)
        );
        let mut r = Revoked::default();
        r.update(&back).unwrap();
        assert!(r.refuses("alice", &[1; 32]));
        assert!(r.refuses("bob", &[2; 32]));
        assert!(!r.refuses("alice", &[2; 32]));
        // A replayed older list changes nothing.
        let old = RevocationList::sign(&key, now - 1, vec![], vec![]);
        assert!(matches!(r.update(&old), Err(RevocationError::Stale { .. })));
        assert!(r.refuses("bob", &[2; 32]));
        // A newer, empty list lifts them.
        r.update(&RevocationList::sign(&key, now + 1, vec![], vec![]))
            .unwrap();
        assert!(r.is_empty());
    }

    #[test]
    fn bounded_and_fits_a_frame() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let key = AuthorityKey::generate(&mut rng);
        let l = RevocationList::sign(
            &key,
            UnixMillis(1),
            vec![[7; 32]; 1000],
            vec!["a".repeat(32); 1000],
        );
        assert_eq!(
            (l.devices.len(), l.accounts.len()),
            (MAX_DEVICES, MAX_ACCOUNTS)
        );
        let bytes = l.encode();
        // With the response header and the channel's tag.
        assert!(bytes.len() + 64 < crate::wire::MAX_FRAME);
        for cut in 0..bytes.len() {
            assert!(RevocationList::decode(&bytes[..cut]).is_err());
        }
        // A count beyond the bound is refused before anything is read.
        let mut big = bytes.clone();
        big[33] = 0xff;
        assert!(RevocationList::decode(&big).is_err());
    }
}
