//! Thin, typed wrappers over snow's handshake and transport states.
//!
//! Handshakes can take their ephemeral-key randomness from a caller-given
//! seed instead of the OS, so sans-IO cores stay deterministic under test
//! and in the simulator. [`StatelessTransport`] is the datagram mode: the
//! nonce travels in the packet, so loss and reordering do not desync it.

use rand::{RngCore, SeedableRng};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use thiserror::Error;

/// Login channel: the client knows the authority's static key.
pub const IK: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// Peer channels: both sides send their static keys (inside certificates).
pub const XX: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";

/// Largest Noise message; also bounded by the frame limit.
pub const MAX_MESSAGE: usize = 65535;
const TAG: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NoiseError {
    #[error("noise handshake failed: {0}")]
    Handshake(String),
    #[error("decryption failed: the message was altered or not meant for this channel")]
    Decrypt,
    #[error("message too large for one noise message")]
    TooLarge,
    #[error("noise state error: {0}")]
    State(String),
}

fn map(e: snow::Error) -> NoiseError {
    match e {
        snow::Error::Decrypt => NoiseError::Decrypt,
        snow::Error::Input => NoiseError::Handshake("malformed handshake message".into()),
        e => NoiseError::Handshake(e.to_string()),
    }
}

/// One side of a Noise handshake in progress.
pub struct Handshake {
    state: snow::HandshakeState,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("initiator", &self.state.is_initiator())
            .finish_non_exhaustive()
    }
}

/// snow's default primitives, but ephemeral keys drawn from a seeded
/// ChaCha stream rather than the OS.
struct SeededResolver {
    seed: [u8; 32],
}

struct SeededRandom(rand::rngs::StdRng);

impl snow::types::Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        Some(Box::new(SeededRandom(rand::rngs::StdRng::from_seed(
            self.seed,
        ))))
    }

    fn resolve_dh(&self, choice: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(
        &self,
        choice: &snow::params::HashChoice,
    ) -> Option<Box<dyn snow::types::Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(
        &self,
        choice: &snow::params::CipherChoice,
    ) -> Option<Box<dyn snow::types::Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

fn builder<'a>(pattern: &str, seed: Option<[u8; 32]>) -> Result<snow::Builder<'a>, NoiseError> {
    let params: snow::params::NoiseParams = pattern.parse().map_err(map)?;
    let b = match seed {
        Some(seed) => snow::Builder::with_resolver(params, Box::new(SeededResolver { seed })),
        None => snow::Builder::new(params),
    };
    Ok(b)
}

impl Handshake {
    pub fn initiator(
        pattern: &str,
        prologue: &[u8],
        local_secret: &[u8; 32],
        remote_public: Option<&[u8; 32]>,
    ) -> Result<Self, NoiseError> {
        Self::initiator_seeded(pattern, prologue, local_secret, remote_public, None)
    }

    pub fn responder(
        pattern: &str,
        prologue: &[u8],
        local_secret: &[u8; 32],
    ) -> Result<Self, NoiseError> {
        Self::responder_seeded(pattern, prologue, local_secret, None)
    }

    /// As [`Handshake::initiator`]; with `Some(seed)` the ephemeral key
    /// comes from the seed (which must be fresh and secret), not the OS.
    pub fn initiator_seeded(
        pattern: &str,
        prologue: &[u8],
        local_secret: &[u8; 32],
        remote_public: Option<&[u8; 32]>,
        seed: Option<[u8; 32]>,
    ) -> Result<Self, NoiseError> {
        let mut b = builder(pattern, seed)?
            .prologue(prologue)
            .map_err(map)?
            .local_private_key(local_secret)
            .map_err(map)?;
        if let Some(r) = remote_public {
            b = b.remote_public_key(r).map_err(map)?;
        }
        Ok(Handshake {
            state: b.build_initiator().map_err(map)?,
        })
    }

    /// As [`Handshake::responder`], with the ephemeral key from `seed`.
    pub fn responder_seeded(
        pattern: &str,
        prologue: &[u8],
        local_secret: &[u8; 32],
        seed: Option<[u8; 32]>,
    ) -> Result<Self, NoiseError> {
        let state = builder(pattern, seed)?
            .prologue(prologue)
            .map_err(map)?
            .local_private_key(local_secret)
            .map_err(map)?
            .build_responder()
            .map_err(map)?;
        Ok(Handshake { state })
    }

    pub fn write(&mut self, payload: &[u8]) -> Result<Vec<u8>, NoiseError> {
        if payload.len() > MAX_MESSAGE - 256 {
            return Err(NoiseError::TooLarge);
        }
        let mut out = vec![0u8; payload.len() + 256];
        let n = self.state.write_message(payload, &mut out).map_err(map)?;
        out.truncate(n);
        Ok(out)
    }

    pub fn read(&mut self, message: &[u8]) -> Result<Vec<u8>, NoiseError> {
        if message.len() > MAX_MESSAGE {
            return Err(NoiseError::TooLarge);
        }
        let mut out = vec![0u8; message.len()];
        let n = self.state.read_message(message, &mut out).map_err(map)?;
        out.truncate(n);
        Ok(out)
    }

    pub fn remote_static(&self) -> Option<[u8; 32]> {
        self.state
            .get_remote_static()
            .and_then(|s| s.try_into().ok())
    }

    /// Transcript hash: unique to this handshake, so signing it proves
    /// liveness and binds a signature to this channel.
    pub fn hash(&self) -> Vec<u8> {
        self.state.get_handshake_hash().to_vec()
    }

    /// A secret only the two parties of this (finished) handshake know,
    /// the same on both sides, for keying other protocols (media), as TLS
    /// exporters do. Derived one-way from the transport keys and the
    /// transcript, so it reveals neither. (The handshake hash alone is no
    /// secret: an observer can compute it.)
    pub fn exporter_secret(&mut self) -> [u8; 32] {
        use blake2::Digest;
        let (k1, k2) = self.state.dangerously_get_raw_split();
        let mut h = blake2::Blake2s256::new();
        h.update(b"natter exporter v1");
        h.update(k1);
        h.update(k2);
        h.update(self.state.get_handshake_hash());
        h.finalize().into()
    }

    pub fn is_finished(&self) -> bool {
        self.state.is_handshake_finished()
    }

    pub fn into_transport(self) -> Result<Transport, NoiseError> {
        Ok(Transport {
            state: self.state.into_transport_mode().map_err(map)?,
        })
    }

    /// Finish into datagram mode, where each message names its nonce.
    pub fn into_stateless_transport(self) -> Result<StatelessTransport, NoiseError> {
        Ok(StatelessTransport {
            state: self.state.into_stateless_transport_mode().map_err(map)?,
        })
    }
}

/// An established channel over datagrams (UDP): the caller picks each
/// message's nonce, sends it alongside, and rejects replays itself.
pub struct StatelessTransport {
    state: snow::StatelessTransportState,
}

impl std::fmt::Debug for StatelessTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatelessTransport").finish_non_exhaustive()
    }
}

impl StatelessTransport {
    /// Encrypt `plaintext` under `nonce`, appending the ciphertext to `out`.
    /// A nonce must never be used twice for sending.
    pub fn encrypt_into(
        &self,
        nonce: u64,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), NoiseError> {
        if plaintext.len() + TAG > MAX_MESSAGE {
            return Err(NoiseError::TooLarge);
        }
        let start = out.len();
        out.resize(start + plaintext.len() + TAG, 0);
        match self
            .state
            .write_message(nonce, plaintext, &mut out[start..])
        {
            Ok(n) => {
                out.truncate(start + n);
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(NoiseError::State(e.to_string()))
            }
        }
    }

    pub fn encrypt(&self, nonce: u64, plaintext: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let mut out = Vec::with_capacity(plaintext.len() + TAG);
        self.encrypt_into(nonce, plaintext, &mut out)?;
        Ok(out)
    }

    pub fn decrypt(&self, nonce: u64, ciphertext: &[u8]) -> Result<Vec<u8>, NoiseError> {
        if ciphertext.len() > MAX_MESSAGE || ciphertext.len() < TAG {
            return Err(NoiseError::Decrypt);
        }
        let mut out = vec![0u8; ciphertext.len()];
        let n = self
            .state
            .read_message(nonce, ciphertext, &mut out)
            .map_err(|_| NoiseError::Decrypt)?;
        out.truncate(n);
        Ok(out)
    }

    pub fn remote_static(&self) -> Option<[u8; 32]> {
        self.state
            .get_remote_static()
            .and_then(|s| s.try_into().ok())
    }
}

/// An established channel over an ordered, reliable stream (TCP).
pub struct Transport {
    state: snow::TransportState,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").finish_non_exhaustive()
    }
}

impl Transport {
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, NoiseError> {
        if plaintext.len() + TAG > MAX_MESSAGE {
            return Err(NoiseError::TooLarge);
        }
        let mut out = vec![0u8; plaintext.len() + TAG];
        let n = self
            .state
            .write_message(plaintext, &mut out)
            .map_err(|e| NoiseError::State(e.to_string()))?;
        out.truncate(n);
        Ok(out)
    }

    pub fn decrypt(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, NoiseError> {
        if ciphertext.len() > MAX_MESSAGE {
            return Err(NoiseError::TooLarge);
        }
        let mut out = vec![0u8; ciphertext.len()];
        let n = self
            .state
            .read_message(ciphertext, &mut out)
            .map_err(|_| NoiseError::Decrypt)?;
        out.truncate(n);
        Ok(out)
    }

    pub fn remote_static(&self) -> Option<[u8; 32]> {
        self.state
            .get_remote_static()
            .and_then(|s| s.try_into().ok())
    }
}
