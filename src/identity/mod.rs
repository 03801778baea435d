//! Device identities, usernames and the certificates that bind them.
//!
//! A device holds an ed25519 signing key and an x25519 static key, made on
//! first run and kept in the data dir with mode 0600. The authority signs a
//! [`Certificate`] binding a username to both keys; peers trust identities
//! only through certificates verified against the pinned authority key.

pub mod cert;
mod keyfile;
pub mod revocation;
mod username;

pub use cert::{CertError, Certificate, Role, issuer_id};
pub use keyfile::{KeyFileError, load_or_create_device, read_device, write_device};
pub use username::{Username, UsernameError, validate_password};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rand::{CryptoRng, RngCore};
use x25519_dalek::StaticSecret;

/// A device's two key pairs. Debug never prints secrets.
#[derive(Clone)]
pub struct DeviceIdentity {
    signing: SigningKey,
    dh: StaticSecret,
}

impl std::fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceIdentity")
            .field("ed25519", &crate::wire::hex_encode(&self.ed25519_public()))
            .field("x25519", &crate::wire::hex_encode(&self.x25519_public()))
            .finish_non_exhaustive()
    }
}

impl DeviceIdentity {
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut dh = [0u8; 32];
        rng.fill_bytes(&mut dh);
        DeviceIdentity {
            signing: SigningKey::generate(rng),
            dh: StaticSecret::from(dh),
        }
    }

    pub fn from_secrets(ed25519: [u8; 32], x25519: [u8; 32]) -> Self {
        DeviceIdentity {
            signing: SigningKey::from_bytes(&ed25519),
            dh: StaticSecret::from(x25519),
        }
    }

    pub fn ed25519_public(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    pub fn x25519_public(&self) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&self.dh).to_bytes()
    }

    /// The x25519 secret, for the Noise handshake only.
    pub fn x25519_secret(&self) -> [u8; 32] {
        self.dh.to_bytes()
    }

    pub(crate) fn ed25519_secret(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// Sign `msg` under a domain-separation `context`.
    pub fn sign(&self, context: &[u8], msg: &[u8]) -> [u8; 64] {
        self.signing.sign(&domain(context, msg)).to_bytes()
    }
}

/// Verify an ed25519 signature made by [`DeviceIdentity::sign`] or
/// [`AuthorityKey::sign`].
pub fn verify_signature(public: &[u8; 32], context: &[u8], msg: &[u8], sig: &[u8; 64]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(public) else {
        return false;
    };
    key.verify(&domain(context, msg), &Signature::from_bytes(sig))
        .is_ok()
}

fn domain(context: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(context.len() + 1 + msg.len());
    v.extend_from_slice(context);
    v.push(0);
    v.extend_from_slice(msg);
    v
}

/// The authority's ed25519 key. Its public half is what clients pin; the
/// Noise static key of the login channel is derived from it (the
/// birationally equivalent X25519 key), so one pinned value covers both.
#[derive(Clone)]
pub struct AuthorityKey {
    signing: SigningKey,
}

impl std::fmt::Debug for AuthorityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityKey")
            .field("public", &crate::wire::hex_encode(&self.public()))
            .finish_non_exhaustive()
    }
}

impl AuthorityKey {
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        AuthorityKey {
            signing: SigningKey::generate(rng),
        }
    }

    pub fn from_secret(secret: [u8; 32]) -> Self {
        AuthorityKey {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    pub fn secret(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    pub fn public(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    pub fn sign(&self, context: &[u8], msg: &[u8]) -> [u8; 64] {
        self.signing.sign(&domain(context, msg)).to_bytes()
    }

    /// X25519 secret for the login channel's Noise handshake.
    pub fn x25519_secret(&self) -> [u8; 32] {
        self.signing.to_scalar_bytes()
    }
}

/// The X25519 public key a client uses to reach the authority pinned by its
/// ed25519 public key; `None` for bytes that are not a curve point.
pub fn authority_x25519_public(ed25519_public: &[u8; 32]) -> Option<[u8; 32]> {
    VerifyingKey::from_bytes(ed25519_public)
        .ok()
        .map(|k| k.to_montgomery().to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn derived_authority_dh_key_matches() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let a = AuthorityKey::generate(&mut rng);
        let secret = StaticSecret::from(a.x25519_secret());
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        assert_eq!(authority_x25519_public(&a.public()), Some(public));
    }

    #[test]
    fn signatures_are_domain_separated() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let d = DeviceIdentity::generate(&mut rng);
        let sig = d.sign(b"a", b"msg");
        assert!(verify_signature(&d.ed25519_public(), b"a", b"msg", &sig));
        assert!(!verify_signature(&d.ed25519_public(), b"b", b"msg", &sig));
        assert!(!verify_signature(&d.ed25519_public(), b"a", b"msg2", &sig));
    }

    #[test]
    fn debug_hides_secrets() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let d = DeviceIdentity::generate(&mut rng);
        let dbg = format!("{d:?}");
        assert!(!dbg.contains(&crate::wire::hex_encode(&d.ed25519_secret())));
        assert!(!dbg.contains(&crate::wire::hex_encode(&d.x25519_secret())));
    }
}
