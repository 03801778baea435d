//! Certificates: the authority's signed statement that a username owns a
//! device's ed25519 and x25519 keys for a time window.
//!
//! Layout (all integers big-endian):
//! `version u8 | issuer_id [8] | serial u64 | role u8 | not_before u64 |
//!  not_after u64 | username str8 | ed25519 [32] | x25519 [32] | sig [64]`.
//! The signature covers every byte before it, under the context
//! `CERT_CONTEXT`. `issuer_id` names the signing key, so a certificate
//! from another authority is told apart from a tampered one.

use super::{AuthorityKey, Username, verify_signature};
use crate::time::UnixSecs;
use crate::wire::{Reader, WireError, Writer};
use blake2::{Blake2s256, Digest};
use thiserror::Error;

const CERT_VERSION: u8 = 1;
const CERT_CONTEXT: &[u8] = b"natter certificate v1";

/// What a certificate lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    User,
    Supernode,
}

impl Role {
    pub fn to_u8(self) -> u8 {
        match self {
            Role::User => 1,
            Role::Supernode => 2,
        }
    }

    pub fn from_u8(v: u8) -> Result<Self, WireError> {
        match v {
            1 => Ok(Role::User),
            2 => Ok(Role::Supernode),
            got => Err(WireError::UnknownType { what: "role", got }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Supernode => "supernode",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "user" => Ok(Role::User),
            "supernode" => Ok(Role::Supernode),
            _ => Err(format!(
                "unknown role {s:?}: expected \"user\" or \"supernode\""
            )),
        }
    }
}

/// Why a certificate was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CertError {
    #[error("malformed certificate: {0}")]
    Malformed(#[from] WireError),
    #[error("certificate was issued by an unknown authority (issuer {issuer})")]
    UnknownIssuer { issuer: String },
    #[error("certificate signature is invalid: it was altered after signing")]
    BadSignature,
    #[error("certificate expired at {at}")]
    Expired { at: String },
    #[error("certificate is not valid until {at}")]
    NotYetValid { at: String },
    #[error("certificate names an invalid username")]
    BadUsername,
    #[error("certificate keys do not match the peer's keys")]
    KeyMismatch,
}

/// Short identifier of an authority key: BLAKE2s of the key, first 8 bytes.
pub fn issuer_id(authority_public: &[u8; 32]) -> [u8; 8] {
    let h = Blake2s256::digest(authority_public);
    let mut id = [0u8; 8];
    id.copy_from_slice(&h[..8]);
    id
}

/// A decoded certificate. Holding one says nothing about its validity:
/// call [`Certificate::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub issuer: [u8; 8],
    pub serial: u64,
    pub role: Role,
    pub not_before: u64,
    pub not_after: u64,
    pub username: String,
    pub ed25519: [u8; 32],
    pub x25519: [u8; 32],
    pub signature: [u8; 64],
}

impl Certificate {
    /// Build and sign a certificate.
    #[allow(clippy::too_many_arguments)]
    pub fn issue(
        authority: &AuthorityKey,
        serial: u64,
        role: Role,
        not_before: u64,
        not_after: u64,
        username: &Username,
        ed25519: [u8; 32],
        x25519: [u8; 32],
    ) -> Self {
        let mut c = Certificate {
            issuer: issuer_id(&authority.public()),
            serial,
            role,
            not_before,
            not_after,
            username: username.as_str().to_owned(),
            ed25519,
            x25519,
            signature: [0; 64],
        };
        c.signature = authority.sign(CERT_CONTEXT, &c.body());
        c
    }

    fn body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(CERT_VERSION)
            .raw(&self.issuer)
            .u64(self.serial)
            .u8(self.role.to_u8())
            .u64(self.not_before)
            .u64(self.not_after)
            .bytes8(self.username.as_bytes())
            .raw(&self.ed25519)
            .raw(&self.x25519);
        w.into_vec()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.body();
        v.extend_from_slice(&self.signature);
        v
    }

    /// Decode exactly one certificate from `buf`.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf);
        let c = Self::read(&mut r)?;
        r.finish()?;
        Ok(c)
    }

    /// Read a certificate from the front of a reader.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let version = r.u8()?;
        if version != CERT_VERSION {
            return Err(WireError::UnknownVersion { got: version });
        }
        Ok(Certificate {
            issuer: r.array()?,
            serial: r.u64()?,
            role: Role::from_u8(r.u8()?)?,
            not_before: r.u64()?,
            not_after: r.u64()?,
            username: r.str8("username")?.to_owned(),
            ed25519: r.array()?,
            x25519: r.array()?,
            signature: r.array()?,
        })
    }

    /// Check issuer, signature, username and validity window at `now`
    /// (the wall clock). Issuer and signature are checked before time, so a
    /// forged certificate is reported as forged even when also expired.
    pub fn verify(&self, authority_public: &[u8; 32], now: UnixSecs) -> Result<(), CertError> {
        if self.issuer != issuer_id(authority_public) {
            return Err(CertError::UnknownIssuer {
                issuer: crate::wire::hex_encode(&self.issuer),
            });
        }
        if !verify_signature(
            authority_public,
            CERT_CONTEXT,
            &self.body(),
            &self.signature,
        ) {
            return Err(CertError::BadSignature);
        }
        match Username::parse(&self.username) {
            Ok(u) if u.as_str() == self.username => {}
            _ => return Err(CertError::BadUsername),
        }
        if now.get() >= self.not_after {
            return Err(CertError::Expired {
                at: fmt_time(self.not_after),
            });
        }
        if now.get() < self.not_before {
            return Err(CertError::NotYetValid {
                at: fmt_time(self.not_before),
            });
        }
        Ok(())
    }
}

/// RFC 3339 UTC rendering of unix seconds, for messages.
pub fn fmt_time(unix: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.min(253_402_300_799));
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceIdentity;
    use rand::SeedableRng;

    fn setup() -> (AuthorityKey, Certificate) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let a = AuthorityKey::generate(&mut rng);
        let d = DeviceIdentity::generate(&mut rng);
        let c = Certificate::issue(
            &a,
            42,
            Role::User,
            1000,
            2000,
            &Username::parse("alice").unwrap(),
            d.ed25519_public(),
            d.x25519_public(),
        );
        (a, c)
    }

    #[test]
    fn round_trip_and_verify() {
        let (a, c) = setup();
        let d = Certificate::decode(&c.encode()).unwrap();
        assert_eq!(d, c);
        d.verify(&a.public(), UnixSecs(1500)).unwrap();
    }

    #[test]
    fn each_failure_has_its_own_error() {
        let (a, c) = setup();
        assert!(matches!(
            c.verify(&a.public(), UnixSecs(2000)),
            Err(CertError::Expired { .. })
        ));
        assert!(matches!(
            c.verify(&a.public(), UnixSecs(999)),
            Err(CertError::NotYetValid { .. })
        ));
        let other = AuthorityKey::generate(&mut rand::rngs::StdRng::seed_from_u64(8));
        assert!(matches!(
            c.verify(&other.public(), UnixSecs(1500)),
            Err(CertError::UnknownIssuer { .. })
        ));
        let mut bytes = c.encode();
        // Flip a byte of the username: the signature no longer holds.
        let pos = 1 + 8 + 8 + 1 + 8 + 8 + 1;
        bytes[pos] ^= 1;
        let t = Certificate::decode(&bytes).unwrap();
        assert_eq!(
            t.verify(&a.public(), UnixSecs(1500)),
            Err(CertError::BadSignature)
        );
    }

    #[test]
    fn truncations_are_errors() {
        let (_, c) = setup();
        let bytes = c.encode();
        for cut in 0..bytes.len() {
            assert!(Certificate::decode(&bytes[..cut]).is_err());
        }
    }
}
