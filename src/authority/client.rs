//! The client side of the login protocol, sans-IO: builds the frames a
//! client sends and interprets the authority's answers.

use super::proto::*;
use crate::crypto::noise::{Handshake, IK, NoiseError, Transport};
use crate::identity::{CertError, Certificate, DeviceIdentity, authority_x25519_public};
use crate::time::{UnixMillis, UnixSecs};
use crate::wire::{Frame, WireError};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("the pinned authority key is not a valid ed25519 public key")]
    BadAuthorityKey,
    #[error("secure channel to the authority failed: {0}")]
    Noise(#[from] NoiseError),
    #[error("bad message from the authority: {0}")]
    Wire(#[from] WireError),
    #[error("{message}")]
    Rejected {
        code: RejectCode,
        retry_after_secs: u32,
        message: String,
    },
    #[error("the authority sent an invalid certificate: {0}")]
    BadCertificate(#[from] CertError),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

/// A decoded answer, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Registered(String),
    Certificate(Certificate),
    /// The account's devices.
    Devices(Vec<DeviceEntry>),
    /// An account operation was done; what to tell the user.
    Done(String),
    /// The signed revocation list, encoded (supernodes verify it).
    Revocations(Vec<u8>),
}

#[derive(Debug)]
enum State {
    SentHello(Box<Handshake>),
    Open {
        transport: Box<Transport>,
        hash: Vec<u8>,
    },
    Closed,
}

#[derive(Debug)]
pub struct LoginClient {
    state: State,
    device: DeviceIdentity,
    authority: [u8; 32],
    /// The authority's clock minus ours, learnt from its hello.
    pub clock_offset_ms: i64,
}

impl LoginClient {
    /// Begin the handshake at `now` (the wall clock: the authority judges
    /// the hello's freshness against its own); returns the HELLO frame.
    pub fn start(
        device: &DeviceIdentity,
        authority: [u8; 32],
        now: UnixMillis,
    ) -> Result<(Self, Vec<u8>), ClientError> {
        let remote = authority_x25519_public(&authority).ok_or(ClientError::BadAuthorityKey)?;
        let mut hs = Handshake::initiator(IK, PROLOGUE, &device.x25519_secret(), Some(&remote))?;
        let hello = ClientHello {
            protocol: PROTOCOL,
            time_ms: now.get(),
        };
        let msg = hs.write(&hello.encode())?;
        let frame = Frame::encode(KIND_HELLO, &msg)?;
        Ok((
            LoginClient {
                state: State::SentHello(Box::new(hs)),
                device: device.clone(),
                authority,
                clock_offset_ms: 0,
            },
            frame,
        ))
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// Feed a frame from the authority. Returns `None` when the channel
    /// just opened, `Some(answer)` for an answer to a request.
    pub fn on_frame(
        &mut self,
        now: UnixMillis,
        frame: Frame<'_>,
    ) -> Result<Option<Answer>, ClientError> {
        match (&mut self.state, frame.kind) {
            (_, KIND_REJECT) => {
                self.state = State::Closed;
                Err(Self::answer(
                    Response::decode(frame.payload)?,
                    &self.device,
                    &self.authority,
                    now,
                )
                .err()
                .unwrap_or(ClientError::Protocol("plaintext reject without an error")))
            }
            (State::SentHello(hs), KIND_WELCOME) => {
                let payload = hs.read(frame.payload)?;
                let hello = ServerHello::decode(&payload)?;
                self.clock_offset_ms = hello.time_ms as i64 - now.get() as i64;
                let State::SentHello(hs) = std::mem::replace(&mut self.state, State::Closed) else {
                    return Err(ClientError::Protocol("state changed"));
                };
                let hash = hs.hash();
                self.state = State::Open {
                    transport: Box::new(hs.into_transport()?),
                    hash,
                };
                Ok(None)
            }
            (State::Open { transport, .. }, KIND_SEALED) => {
                let plain = transport.decrypt(frame.payload)?;
                let resp = Response::decode(&plain)?;
                Self::answer(resp, &self.device, &self.authority, now).map(Some)
            }
            _ => Err(ClientError::Protocol("unexpected frame from the authority")),
        }
    }

    fn answer(
        resp: Response<'_>,
        device: &DeviceIdentity,
        authority: &[u8; 32],
        now: UnixMillis,
    ) -> Result<Answer, ClientError> {
        match resp {
            Response::Registered { username } => Ok(Answer::Registered(username.to_owned())),
            Response::Certificate { cert } => {
                let cert = Certificate::decode(cert).map_err(CertError::from)?;
                // Allow for the authority's back-dating and our clock skew.
                cert.verify(authority, now.secs().max(UnixSecs(cert.not_before)))?;
                if cert.ed25519 != device.ed25519_public() || cert.x25519 != device.x25519_public()
                {
                    return Err(CertError::KeyMismatch.into());
                }
                Ok(Answer::Certificate(cert))
            }
            Response::Devices { devices } => Ok(Answer::Devices(devices)),
            Response::Done { message } => Ok(Answer::Done(message.to_owned())),
            Response::Revocations { list } => Ok(Answer::Revocations(list.to_vec())),
            Response::Error {
                code,
                retry_after_secs,
                message,
            } => Err(ClientError::Rejected {
                code,
                retry_after_secs,
                message: message.to_owned(),
            }),
        }
    }

    fn seal(&mut self, req: &Request<'_>) -> Result<Vec<u8>, ClientError> {
        let State::Open { transport, .. } = &mut self.state else {
            return Err(ClientError::Protocol("channel not open"));
        };
        let ct = transport.encrypt(&req.encode())?;
        Ok(Frame::encode(KIND_SEALED, &ct)?)
    }

    /// Seal arbitrary bytes as a request, for fuzzing the authority.
    #[doc(hidden)]
    pub fn seal_raw(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, ClientError> {
        let State::Open { transport, .. } = &mut self.state else {
            return Err(ClientError::Protocol("channel not open"));
        };
        let ct = transport.encrypt(plaintext)?;
        Ok(Frame::encode(KIND_SEALED, &ct)?)
    }

    fn proof(&self) -> Result<[u8; 64], ClientError> {
        let State::Open { hash, .. } = &self.state else {
            return Err(ClientError::Protocol("channel not open"));
        };
        Ok(self.device.sign(DEVICE_PROOF, hash))
    }

    pub fn register(&mut self, username: &str, password: &str) -> Result<Vec<u8>, ClientError> {
        self.seal(&Request::Register { username, password })
    }

    pub fn login(&mut self, username: &str, password: &str) -> Result<Vec<u8>, ClientError> {
        self.login_named(username, password, "")
    }

    /// Log in, naming this device in the account's device list (if it
    /// is new there).
    pub fn login_named(
        &mut self,
        username: &str,
        password: &str,
        device_name: &str,
    ) -> Result<Vec<u8>, ClientError> {
        let proof = self.proof()?;
        let ed25519 = self.device.ed25519_public();
        self.seal(&Request::Login {
            username,
            password,
            ed25519,
            proof,
            device_name,
        })
    }

    /// An account operation from this logged-in device.
    pub fn account(
        &mut self,
        cert: &Certificate,
        op: AccountOp<'_>,
    ) -> Result<Vec<u8>, ClientError> {
        let proof = self.proof()?;
        let bytes = cert.encode();
        self.seal(&Request::Account {
            cert: &bytes,
            proof,
            op,
        })
    }

    /// Ask for the revocation list (a supernode's certificate).
    pub fn revocations(&mut self, cert: &Certificate) -> Result<Vec<u8>, ClientError> {
        let proof = self.proof()?;
        let bytes = cert.encode();
        self.seal(&Request::Revocations {
            cert: &bytes,
            proof,
        })
    }

    pub fn renew(&mut self, cert: &Certificate) -> Result<Vec<u8>, ClientError> {
        let proof = self.proof()?;
        let bytes = cert.encode();
        self.seal(&Request::Renew {
            cert: &bytes,
            proof,
        })
    }
}
