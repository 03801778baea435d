//! Async driver for [`LoginClient`]: one TCP connection to the authority.

use crate::authority::client::{Answer, ClientError, LoginClient};
use crate::authority::proto::{AccountOp, DeviceEntry};
use crate::clock::Clock;
use crate::config::{Authorities, HostPort};
use crate::identity::{Certificate, DeviceIdentity};
use crate::wire::{Frame, MAX_FRAME};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Generous: a password check waits behind other argon2 work.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum LoginError {
    #[error("cannot reach the authority at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("the authority at {0} did not answer in time")]
    Timeout(String),
    #[error("connection to the authority failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the authority closed the connection")]
    Closed,
    #[error(transparent)]
    Protocol(#[from] ClientError),
    #[error("unexpected answer from the authority")]
    Unexpected,
}

impl LoginError {
    /// The authority's refusal code, if it refused.
    pub fn reject_code(&self) -> Option<crate::authority::RejectCode> {
        match self {
            LoginError::Protocol(ClientError::Rejected { code, .. }) => Some(*code),
            _ => None,
        }
    }
}

/// How this device names itself in the account's device list: the
/// `NATTER_DEVICE_NAME` environment variable when set (two devices on one
/// host, tests), else the host name (empty if unknown; the authority then
/// names it by its id).
pub fn device_name() -> String {
    let mut n = std::env::var(DEVICE_NAME_ENV)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        });
    while n.len() > 64 {
        n.pop();
    }
    n
}

/// The environment variable that names this device (see [`device_name`]).
pub const DEVICE_NAME_ENV: &str = "NATTER_DEVICE_NAME";

/// This device's name as its account's device list shows it: the name it
/// gives ([`device_name`]), or "device-" and the start of its id
/// (`ed25519`) when it gives none. Calls answered here name it to our
/// other devices, through the caller (issue 17).
pub fn own_device_name(ed25519: &[u8; 32]) -> String {
    crate::authority::core::default_name(&device_name(), ed25519)
}

/// An open, encrypted channel to the authority.
pub struct AuthorityConnection {
    stream: TcpStream,
    client: LoginClient,
    buf: Vec<u8>,
    addr: String,
    clock: std::sync::Arc<dyn Clock>,
    /// Bytes written and read on the wire, for the login-size benchmark.
    pub bytes_sent: usize,
    pub bytes_received: usize,
}

impl AuthorityConnection {
    /// Connect and complete the Noise handshake with the pinned key.
    pub async fn connect(
        server: &HostPort,
        authority_key: [u8; 32],
        device: &DeviceIdentity,
        clock: std::sync::Arc<dyn Clock>,
    ) -> Result<Self, LoginError> {
        let addr = server.to_string();
        let target = (server.host.as_str(), server.port);
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(LoginError::Connect { addr, source }),
            Err(_) => return Err(LoginError::Timeout(addr)),
        };
        Self::from_stream(stream, server, authority_key, device, clock).await
    }

    /// Connect to the first of `servers` that answers, in order: several
    /// authorities on one database are interchangeable, so one that is
    /// down or unreachable costs a client only the time to notice. Only
    /// the last server's error is returned if none answers; each failure
    /// is logged.
    pub async fn connect_any(
        servers: &Authorities,
        authority_key: [u8; 32],
        device: &DeviceIdentity,
        clock: std::sync::Arc<dyn Clock>,
    ) -> Result<Self, LoginError> {
        let mut last = None;
        for (i, server) in servers.0.iter().enumerate() {
            match Self::connect(server, authority_key, device, clock.clone()).await {
                Ok(c) => return Ok(c),
                // Not reachable or not answering: the next may be.
                Err(
                    e @ (LoginError::Connect { .. }
                    | LoginError::Timeout(_)
                    | LoginError::Io(_)
                    | LoginError::Closed),
                ) => {
                    if i + 1 < servers.0.len() {
                        tracing::warn!("authority {server}: {e}; trying the next");
                    }
                    last = Some(e);
                }
                // It answered and refused (wrong key, clock skew): the
                // others share its key and policy.
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(LoginError::Closed))
    }

    /// Complete the Noise handshake over an already connected stream (a
    /// chosen source address, in tests).
    pub async fn from_stream(
        stream: TcpStream,
        server: &HostPort,
        authority_key: [u8; 32],
        device: &DeviceIdentity,
        clock: std::sync::Arc<dyn Clock>,
    ) -> Result<Self, LoginError> {
        let addr = server.to_string();
        let _ = stream.set_nodelay(true);
        let (client, hello) = LoginClient::start(device, authority_key, clock.unix())?;
        let mut conn = AuthorityConnection {
            stream,
            client,
            buf: Vec::new(),
            addr,
            clock,
            bytes_sent: 0,
            bytes_received: 0,
        };
        conn.send(&hello).await?;
        match conn.receive().await? {
            None => Ok(conn),
            Some(_) => Err(LoginError::Unexpected),
        }
    }

    /// The first message, to let tests replay it.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), LoginError> {
        self.send(bytes).await
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), LoginError> {
        self.stream.write_all(bytes).await?;
        self.bytes_sent += bytes.len();
        Ok(())
    }

    async fn receive(&mut self) -> Result<Option<Answer>, LoginError> {
        let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
        loop {
            if let Some((frame, used)) =
                Frame::decode_prefix(&self.buf).map_err(ClientError::from)?
            {
                let r = self.client.on_frame(self.clock.unix(), frame);
                self.buf.drain(..used);
                return Ok(r?);
            }
            let mut chunk = [0u8; 4096];
            let want = (MAX_FRAME + 2 - self.buf.len().min(MAX_FRAME + 2)).clamp(1, chunk.len());
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk[..want]))
                .await
                .map_err(|_| LoginError::Timeout(self.addr.clone()))??;
            if n == 0 {
                return Err(LoginError::Closed);
            }
            self.bytes_received += n;
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn ask(&mut self, frame: Vec<u8>) -> Result<Answer, LoginError> {
        self.send(&frame).await?;
        self.receive().await?.ok_or(LoginError::Unexpected)
    }

    pub async fn register(&mut self, username: &str, password: &str) -> Result<String, LoginError> {
        let f = self.client.register(username, password)?;
        match self.ask(f).await? {
            Answer::Registered(u) => Ok(u),
            _ => Err(LoginError::Unexpected),
        }
    }

    pub async fn login(
        &mut self,
        username: &str,
        password: &str,
    ) -> Result<Certificate, LoginError> {
        let f = self
            .client
            .login_named(username, password, &device_name())?;
        match self.ask(f).await? {
            Answer::Certificate(c) => Ok(c),
            _ => Err(LoginError::Unexpected),
        }
    }

    pub async fn renew(&mut self, cert: &Certificate) -> Result<Certificate, LoginError> {
        let f = self.client.renew(cert)?;
        match self.ask(f).await? {
            Answer::Certificate(c) => Ok(c),
            _ => Err(LoginError::Unexpected),
        }
    }

    /// This account's devices (`cert` is this device's certificate).
    pub async fn devices(&mut self, cert: &Certificate) -> Result<Vec<DeviceEntry>, LoginError> {
        let f = self.client.account(cert, AccountOp::ListDevices)?;
        match self.ask(f).await? {
            Answer::Devices(d) => Ok(d),
            _ => Err(LoginError::Unexpected),
        }
    }

    /// Change the account's password; the authority's confirmation.
    pub async fn change_password(
        &mut self,
        cert: &Certificate,
        old: &str,
        new: &str,
    ) -> Result<String, LoginError> {
        let f = self
            .client
            .account(cert, AccountOp::ChangePassword { old, new })?;
        match self.ask(f).await? {
            Answer::Done(m) => Ok(m),
            _ => Err(LoginError::Unexpected),
        }
    }

    /// Revoke one of the account's devices, by id prefix or name.
    pub async fn revoke_device(
        &mut self,
        cert: &Certificate,
        password: &str,
        device: &str,
    ) -> Result<String, LoginError> {
        let f = self
            .client
            .account(cert, AccountOp::RevokeDevice { password, device })?;
        match self.ask(f).await? {
            Answer::Done(m) => Ok(m),
            _ => Err(LoginError::Unexpected),
        }
    }

    /// The signed revocation list, encoded (a supernode's certificate).
    pub async fn revocations(&mut self, cert: &Certificate) -> Result<Vec<u8>, LoginError> {
        let f = self.client.revocations(cert)?;
        match self.ask(f).await? {
            Answer::Revocations(l) => Ok(l),
            _ => Err(LoginError::Unexpected),
        }
    }

    /// The authority's clock minus ours.
    pub fn clock_offset_ms(&self) -> i64 {
        self.client.clock_offset_ms
    }
}
