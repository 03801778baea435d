//! The authority's protocol core, sans-IO.
//!
//! [`AuthorityCore`] holds what all connections share (signing key,
//! throttles, the handshake replay cache, counters); a [`Session`] holds
//! one connection's Noise state. The driver feeds frames and `now` (the
//! wall clock, [`UnixMillis`]: a hello's freshness, the certificates
//! issued and the throttle are all judged against other machines), and
//! gets back bytes to send and [`Job`]s (password hashing and database
//! access) to run off the core, whose results it feeds back with
//! [`AuthorityCore::on_job_done`].
//!
//! Requests: register, log in with the password, renew with the device
//! key; from a logged-in device (certificate and device proof), list the
//! account's devices, change the password or revoke a device (both with
//! the password, throttled as logins are); and, for supernodes, the
//! signed revocation list. A revoked device or a disabled account is
//! refused at login, renewal and every account request.

use super::admission::{Admission, AdmissionPolicy, AdmissionStats};
use super::proto::*;
use super::throttle::{Throttle, ThrottlePolicy};
use crate::crypto::noise::{Handshake, IK, Transport};
use crate::identity::revocation::RevocationList;
use crate::identity::{
    AuthorityKey, CertError, Certificate, Role, Username, validate_password, verify_signature,
};
use crate::time::{UnixMillis, UnixSecs};
use crate::wire::{Frame, hex_encode};
use blake2::{Blake2s256, Digest};
use std::collections::HashMap;
use std::net::IpAddr;

/// Issuance policy; see `[authority]` in config/natter.toml.
#[derive(Debug, Clone)]
pub struct Policy {
    pub certificate_lifetime_secs: u64,
    pub max_clock_skew_ms: u64,
    pub open_registration: bool,
    pub max_requests_per_connection: u32,
    pub throttle: ThrottlePolicy,
    pub admission: AdmissionPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            certificate_lifetime_secs: 24 * 3600,
            max_clock_skew_ms: 120_000,
            open_registration: true,
            max_requests_per_connection: 8,
            throttle: ThrottlePolicy::default(),
            admission: AdmissionPolicy::default(),
        }
    }
}

/// Bound on [`AuthorityCore`]'s memory of known-good devices.
const KNOWN_DEVICES: usize = 100_000;

/// Certificates are back-dated this much so that a client whose clock is a
/// little behind can use one at once.
const BACKDATE_SECS: u64 = 300;

/// Counters of everything the authority did and refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorityStats {
    pub handshakes: u64,
    pub registrations: u64,
    pub logins: u64,
    pub renewals: u64,
    pub username_taken: u64,
    pub bad_registrations: u64,
    pub wrong_password: u64,
    pub unknown_user: u64,
    pub disabled_account: u64,
    pub throttled: u64,
    /// Password attempts refused because the hashing queue was full.
    pub hash_queue_full: u64,
    pub replayed_handshakes: u64,
    pub clock_skew: u64,
    pub bad_handshakes: u64,
    pub malformed: u64,
    pub bad_proof: u64,
    pub cert_expired: u64,
    pub cert_unknown_issuer: u64,
    pub cert_bad_signature: u64,
    pub cert_key_mismatch: u64,
    /// Logins, renewals and account requests refused: device revoked.
    pub revoked_device: u64,
    /// Devices revoked by their owners (`natter devices revoke`).
    pub devices_revoked: u64,
    pub password_changes: u64,
    /// Device lists sent (`natter devices`).
    pub device_lists: u64,
    /// Revocation lists signed for supernodes.
    pub revocation_lists: u64,
    /// Revocation lists asked for by a certificate that is not a
    /// supernode's.
    pub not_a_supernode: u64,
    pub internal_errors: u64,
    /// Connection slots: admissions, refusals, evictions, deadlines.
    pub admission: AdmissionStats,
}

impl std::fmt::Display for AuthorityStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "registrations={} logins={} renewals={} wrong_password={} unknown_user={} throttled={} \
             hash_queue_full={} \
             replayed={} clock_skew={} bad_handshakes={} malformed={} bad_proof={} cert_expired={} \
             cert_unknown_issuer={} cert_bad_signature={} cert_key_mismatch={} \
             revoked_device={} devices_revoked={} password_changes={} revocation_lists={} \
             conn_refused_address_cap={} conn_refused_full={} conn_evicted={} conn_frame_deadline={} \
             conn_idle={}",
            self.registrations,
            self.logins,
            self.renewals,
            self.wrong_password,
            self.unknown_user,
            self.throttled,
            self.hash_queue_full,
            self.replayed_handshakes,
            self.clock_skew,
            self.bad_handshakes,
            self.malformed,
            self.bad_proof,
            self.cert_expired,
            self.cert_unknown_issuer,
            self.cert_bad_signature,
            self.cert_key_mismatch,
            self.revoked_device,
            self.devices_revoked,
            self.password_changes,
            self.revocation_lists,
            self.admission.refused_address_cap,
            self.admission.refused_full,
            self.admission.evicted,
            self.admission.frame_deadline,
            self.admission.idle
        )
    }
}

/// Work the driver runs outside the core (slow or I/O).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// Hash the password with argon2id and insert the account.
    Register {
        username: Username,
        password: String,
        /// Counted against the shared registration limit (PostgreSQL).
        source: IpAddr,
    },
    /// Look the account up and check the password (argon2id verify; a
    /// dummy hash is checked for unknown users, so timing tells nothing).
    CheckPassword {
        username: Username,
        password: String,
        /// The device logged in to this account before: its hash goes
        /// ahead of strangers' guesses.
        known_device: bool,
        /// Counted against in the shared throttle (PostgreSQL).
        source: IpAddr,
        /// The device asking: known devices are shared too (PostgreSQL).
        ed25519: [u8; 32],
        /// How the device names itself, for the account's device list.
        device_name: String,
    },
    /// Look the account up (renewal: is it still there, which role) and
    /// mark the device seen, unless it is revoked.
    LoadAccount {
        username: Username,
        ed25519: [u8; 32],
    },
    /// An operation on the account from one of its devices (holding a
    /// valid certificate): the account must be enabled and the device
    /// not revoked.
    Account {
        username: Username,
        ed25519: [u8; 32],
        op: AccountJob,
        /// Counted against in the shared throttle (PostgreSQL), for the
        /// operations that check a password.
        source: IpAddr,
    },
    /// What the revocation list holds: devices revoked and accounts
    /// disabled at or after `since` (wall clock).
    Revocations { since: UnixSecs },
}

/// The account operations, as run by the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountJob {
    ListDevices,
    /// Check `old`, then store the argon2id hash of `new`.
    ChangePassword {
        old: String,
        new: String,
    },
    /// Check the password, then revoke the device `device` names.
    RevokeDevice {
        password: String,
        device: String,
    },
}

impl AccountJob {
    /// Whether it checks a password (and so takes a hashing slot and
    /// counts against the login throttle).
    pub fn checks_password(&self) -> bool {
        !matches!(self, AccountJob::ListDevices)
    }
}

/// What the store knows of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountInfo {
    pub role: Role,
    pub disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobResult {
    Registered,
    UsernameTaken,
    PasswordOk(AccountInfo),
    WrongPassword,
    UnknownUser,
    Account(Option<AccountInfo>),
    /// The driver's queue of password work from unknown devices is full.
    Busy,
    /// Locked out by the throttle shared with other authorities: this
    /// many milliseconds to wait.
    Throttled(u64),
    /// The asking device is revoked.
    DeviceRevoked,
    /// The account's devices (oldest first).
    Devices(Vec<Device>),
    PasswordChanged,
    /// This device was revoked by the request.
    Revoked(Device),
    /// No device has that id or name (`ambiguous`: several do).
    NoSuchDevice {
        ambiguous: bool,
    },
    /// Revoked device keys and disabled accounts, newest first.
    Revocations {
        devices: Vec<[u8; 32]>,
        accounts: Vec<String>,
    },
    Failed(String),
}

#[derive(Debug)]
pub enum Output {
    Send(Vec<u8>),
    Job(Job),
    Close,
}

#[derive(Debug)]
enum Pending {
    Register(Username),
    Login {
        username: Username,
        ed25519: [u8; 32],
    },
    Renew(Certificate),
    Account {
        username: Username,
        ed25519: [u8; 32],
        op: PendingOp,
    },
    Revocations,
}

/// Which account operation is pending (its secrets stay with the job).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingOp {
    ListDevices,
    ChangePassword,
    RevokeDevice,
}

#[derive(Debug)]
enum State {
    AwaitHello,
    Open {
        transport: Box<Transport>,
        hash: Vec<u8>,
        x25519: [u8; 32],
    },
    Closed,
}

/// One client connection.
#[derive(Debug)]
pub struct Session {
    peer: IpAddr,
    state: State,
    pending: Option<Pending>,
    requests: u32,
}

impl Session {
    pub fn new(peer: IpAddr) -> Self {
        Session {
            peer,
            state: State::AwaitHello,
            pending: None,
            requests: 0,
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }
}

pub struct AuthorityCore {
    key: AuthorityKey,
    public: [u8; 32],
    policy: Policy,
    throttle: Throttle,
    /// Hash of each accepted first handshake message -> when it may be
    /// forgotten (wall clock: its timestamp is then outside the skew
    /// window anyway).
    seen_hellos: HashMap<[u8; 32], UnixMillis>,
    /// Connection slots: who holds one and until when.
    admission: Admission,
    /// Device ed25519 key -> the account it last logged in to with the
    /// right password; at most [`KNOWN_DEVICES`] (an arbitrary one is
    /// forgotten when full). Such devices skip the account's lockout and
    /// the queue of strangers' guesses.
    known_devices: HashMap<[u8; 32], Username>,
    /// Password attempts and registrations are throttled by the store,
    /// shared with other authorities (PostgreSQL), not by [`Throttle`]
    /// here: one count, where every authority sees it.
    shared_throttle: bool,
    stats: AuthorityStats,
}

impl std::fmt::Debug for AuthorityCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityCore")
            .field("public", &hex_encode(&self.public))
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl AuthorityCore {
    pub fn new(key: AuthorityKey, policy: Policy) -> Self {
        AuthorityCore {
            public: key.public(),
            key,
            throttle: Throttle::new(policy.throttle.clone()),
            admission: Admission::new(policy.admission.clone()),
            known_devices: HashMap::new(),
            shared_throttle: false,
            policy,
            seen_hellos: HashMap::new(),
            stats: AuthorityStats::default(),
        }
    }

    /// Leave login and registration throttling to the store's shared
    /// throttle (its answer comes back as [`JobResult::Throttled`]).
    pub fn set_shared_throttle(&mut self, shared: bool) {
        self.shared_throttle = shared;
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    pub fn stats(&mut self) -> &AuthorityStats {
        self.stats.admission = self.admission.stats();
        &self.stats
    }

    /// The connection-slot table the driver reports to.
    pub fn admission(&mut self) -> &mut Admission {
        &mut self.admission
    }

    /// How often the driver should call [`AuthorityCore::on_tick`].
    pub const TICK_MS: u64 = 60_000;

    /// Forget expired replay entries and idle throttle records.
    pub fn on_tick(&mut self, now: UnixMillis) {
        self.seen_hellos.retain(|_, &mut until| until > now);
        self.throttle.prune(now);
    }

    /// The driver could not even split the stream into frames.
    pub fn on_malformed(&mut self, s: &mut Session) -> Vec<Output> {
        self.stats.malformed += 1;
        self.reject(s, RejectCode::Malformed, 0, "malformed frame", true)
    }

    /// Handle one frame from the client.
    pub fn on_frame(&mut self, s: &mut Session, now: UnixMillis, frame: Frame<'_>) -> Vec<Output> {
        match (&s.state, frame.kind) {
            (State::AwaitHello, KIND_HELLO) => self.on_hello(s, now, frame.payload),
            (State::Open { .. }, KIND_SEALED) if s.pending.is_none() => {
                self.on_sealed(s, now, frame.payload)
            }
            (State::Closed, _) => vec![Output::Close],
            _ => {
                self.stats.malformed += 1;
                self.reject(s, RejectCode::Malformed, 0, "unexpected message", true)
            }
        }
    }

    fn on_hello(&mut self, s: &mut Session, now: UnixMillis, msg: &[u8]) -> Vec<Output> {
        let secret = self.key.x25519_secret();
        let mut hs = match Handshake::responder(IK, PROLOGUE, &secret) {
            Ok(hs) => hs,
            Err(e) => return self.internal(s, &e.to_string()),
        };
        let hello = match hs.read(msg).map(|p| ClientHello::decode(&p)) {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                self.stats.bad_handshakes += 1;
                let m = format!("bad handshake payload: {e}");
                return self.reject(s, RejectCode::Malformed, 0, &m, true);
            }
            Err(_) => {
                self.stats.bad_handshakes += 1;
                let m =
                    "handshake failed: is the authority key pinned in your config the right one?";
                return self.reject(s, RejectCode::Malformed, 0, m, true);
            }
        };
        let skew = now.get().abs_diff(hello.time_ms);
        if skew > self.policy.max_clock_skew_ms {
            self.stats.clock_skew += 1;
            let m = format!(
                "your clock differs from the authority's by {} s (at most {} s allowed); fix the system clock",
                skew / 1000,
                self.policy.max_clock_skew_ms / 1000
            );
            return self.reject(s, RejectCode::ClockSkew, 0, &m, true);
        }
        let digest: [u8; 32] = Blake2s256::digest(msg).into();
        if self.seen_hellos.contains_key(&digest) {
            self.stats.replayed_handshakes += 1;
            tracing::warn!(peer = %s.peer, "replayed login handshake refused");
            return self.reject(s, RejectCode::Replayed, 0, "handshake replayed", true);
        }
        self.seen_hellos
            .insert(digest, now + (2 * self.policy.max_clock_skew_ms + 1));
        let reply = ServerHello { time_ms: now.get() }.encode();
        let (out, x25519) = match (hs.write(&reply), hs.remote_static()) {
            (Ok(out), Some(x)) => (out, x),
            (Err(e), _) => return self.internal(s, &e.to_string()),
            (_, None) => return self.internal(s, "no remote static key"),
        };
        let hash = hs.hash();
        let transport = match hs.into_transport() {
            Ok(t) => t,
            Err(e) => return self.internal(s, &e.to_string()),
        };
        self.stats.handshakes += 1;
        s.state = State::Open {
            transport: Box::new(transport),
            hash,
            x25519,
        };
        match Frame::encode(KIND_WELCOME, &out) {
            Ok(f) => vec![Output::Send(f)],
            Err(e) => self.internal(s, &e.to_string()),
        }
    }

    fn on_sealed(&mut self, s: &mut Session, now: UnixMillis, ct: &[u8]) -> Vec<Output> {
        let State::Open {
            transport,
            hash,
            x25519,
        } = &mut s.state
        else {
            return vec![Output::Close];
        };
        let Ok(plain) = transport.decrypt(ct) else {
            self.stats.malformed += 1;
            s.state = State::Closed;
            return vec![Output::Close];
        };
        let (hash, x25519) = (hash.clone(), *x25519);
        s.requests += 1;
        let req = match Request::decode(&plain) {
            Ok(r) => r,
            Err(e) => {
                self.stats.malformed += 1;
                return self.reject(
                    s,
                    RejectCode::Malformed,
                    0,
                    &format!("bad request: {e}"),
                    true,
                );
            }
        };
        match req {
            Request::Register { username, password } => {
                self.on_register(s, now, username, password)
            }
            Request::Login {
                username,
                password,
                ed25519,
                proof,
                device_name,
            } => {
                let Ok(user) = Username::parse(username) else {
                    // Same answer as a wrong password: no hint either way.
                    self.stats.unknown_user += 1;
                    return self.invalid_credentials(s);
                };
                let known_device = self.known_devices.get(&ed25519) == Some(&user);
                let local = !self.shared_throttle;
                if let Some(wait) = self
                    .throttle
                    .login_blocked(now, user.as_str(), s.peer, known_device)
                    .filter(|_| local)
                {
                    return self.throttled(s, wait, "too many failed logins");
                }
                if !verify_signature(&ed25519, DEVICE_PROOF, &hash, &proof) {
                    self.stats.bad_proof += 1;
                    let m = "device key proof does not verify";
                    return self.reject(s, RejectCode::BadProof, 0, m, true);
                }
                // Counted before the hash, refunded on success.
                if let Err(wait) = if local {
                    self.throttle
                        .login_attempt(now, user.as_str(), s.peer, known_device)
                } else {
                    Ok(())
                } {
                    return self.throttled(s, wait, "too many failed logins");
                }
                s.pending = Some(Pending::Login {
                    username: user.clone(),
                    ed25519,
                });
                vec![Output::Job(Job::CheckPassword {
                    username: user,
                    password: password.to_owned(),
                    known_device,
                    source: s.peer,
                    ed25519,
                    device_name: device_name.to_owned(),
                })]
            }
            Request::Renew { cert, proof } => {
                let cert = match self.device_cert(s, now, cert, &proof, &hash, &x25519) {
                    Ok(c) => c,
                    Err(out) => return out,
                };
                let Ok(username) = Username::parse(&cert.username) else {
                    return self.internal(s, "verified certificate with invalid username");
                };
                let ed25519 = cert.ed25519;
                s.pending = Some(Pending::Renew(cert));
                vec![Output::Job(Job::LoadAccount { username, ed25519 })]
            }
            Request::Account { cert, proof, op } => {
                let cert = match self.device_cert(s, now, cert, &proof, &hash, &x25519) {
                    Ok(c) => c,
                    Err(out) => return out,
                };
                let Ok(username) = Username::parse(&cert.username) else {
                    return self.internal(s, "verified certificate with invalid username");
                };
                let (pending, job) = match op {
                    AccountOp::ListDevices => (PendingOp::ListDevices, AccountJob::ListDevices),
                    AccountOp::ChangePassword { old, new } => {
                        if let Err(e) = validate_password(new) {
                            return self.reject(
                                s,
                                RejectCode::WeakPassword,
                                0,
                                &e.to_string(),
                                false,
                            );
                        }
                        (
                            PendingOp::ChangePassword,
                            AccountJob::ChangePassword {
                                old: old.to_owned(),
                                new: new.to_owned(),
                            },
                        )
                    }
                    AccountOp::RevokeDevice { password, device } => (
                        PendingOp::RevokeDevice,
                        AccountJob::RevokeDevice {
                            password: password.to_owned(),
                            device: device.to_owned(),
                        },
                    ),
                };
                // A stolen device guessing the password here is throttled
                // as a stranger would be.
                if job.checks_password()
                    && !self.shared_throttle
                    && let Err(wait) =
                        self.throttle
                            .login_attempt(now, username.as_str(), s.peer, false)
                {
                    return self.throttled(s, wait, "too many failed password attempts");
                }
                s.pending = Some(Pending::Account {
                    username: username.clone(),
                    ed25519: cert.ed25519,
                    op: pending,
                });
                vec![Output::Job(Job::Account {
                    username,
                    ed25519: cert.ed25519,
                    op: job,
                    source: s.peer,
                })]
            }
            Request::Revocations { cert, proof } => {
                let cert = match self.device_cert(s, now, cert, &proof, &hash, &x25519) {
                    Ok(c) => c,
                    Err(out) => return out,
                };
                if cert.role != Role::Supernode {
                    self.stats.not_a_supernode += 1;
                    let m = "only supernodes fetch the revocation list";
                    return self.reject(s, RejectCode::NotASupernode, 0, m, true);
                }
                s.pending = Some(Pending::Revocations);
                // Entries stay while a certificate issued before them may
                // still be valid.
                let keep = self.policy.certificate_lifetime_secs
                    + BACKDATE_SECS
                    + self.policy.max_clock_skew_ms / 1000;
                vec![Output::Job(Job::Revocations {
                    since: now.secs() - keep,
                })]
            }
        }
    }

    /// Check a device's certificate and its proof on this channel (the
    /// requests a logged-in device makes without its password).
    fn device_cert(
        &mut self,
        s: &mut Session,
        now: UnixMillis,
        cert: &[u8],
        proof: &[u8; 64],
        hash: &[u8],
        x25519: &[u8; 32],
    ) -> Result<Certificate, Vec<Output>> {
        let cert = match Certificate::decode(cert) {
            Ok(c) => c,
            Err(e) => {
                self.stats.malformed += 1;
                let m = format!("malformed certificate: {e}");
                return Err(self.reject(s, RejectCode::Malformed, 0, &m, true));
            }
        };
        if let Err(e) = cert.verify(&self.public, now.secs()) {
            let code = match e {
                CertError::Expired { .. } => {
                    self.stats.cert_expired += 1;
                    RejectCode::CertExpired
                }
                CertError::UnknownIssuer { .. } => {
                    self.stats.cert_unknown_issuer += 1;
                    RejectCode::CertUnknownIssuer
                }
                CertError::KeyMismatch => {
                    self.stats.cert_key_mismatch += 1;
                    RejectCode::CertKeyMismatch
                }
                CertError::BadSignature
                | CertError::BadUsername
                | CertError::NotYetValid { .. }
                | CertError::Malformed(_) => {
                    self.stats.cert_bad_signature += 1;
                    RejectCode::CertBadSignature
                }
            };
            let m = if code == RejectCode::CertExpired {
                format!("{e}; log in with your password")
            } else {
                e.to_string()
            };
            return Err(self.reject(s, code, 0, &m, false));
        }
        if cert.x25519 != *x25519 {
            self.stats.cert_key_mismatch += 1;
            let m = "certificate belongs to another device";
            return Err(self.reject(s, RejectCode::CertKeyMismatch, 0, m, true));
        }
        if !verify_signature(&cert.ed25519, DEVICE_PROOF, hash, proof) {
            self.stats.bad_proof += 1;
            let m = "device key proof does not verify";
            return Err(self.reject(s, RejectCode::BadProof, 0, m, true));
        }
        Ok(cert)
    }

    fn on_register(
        &mut self,
        s: &mut Session,
        now: UnixMillis,
        username: &str,
        password: &str,
    ) -> Vec<Output> {
        if !self.policy.open_registration {
            self.stats.bad_registrations += 1;
            let m = "this authority does not accept registrations; ask its operator for an account";
            return self.reject(s, RejectCode::RegistrationClosed, 0, m, false);
        }
        let user = match Username::parse(username) {
            Ok(u) => u,
            Err(e) => {
                self.stats.bad_registrations += 1;
                return self.reject(s, RejectCode::InvalidUsername, 0, &e.to_string(), false);
            }
        };
        if let Err(e) = validate_password(password) {
            self.stats.bad_registrations += 1;
            return self.reject(s, RejectCode::WeakPassword, 0, &e.to_string(), false);
        }
        let wait = if self.shared_throttle {
            None
        } else {
            self.throttle.registration(now, s.peer)
        };
        if let Some(wait) = wait {
            return self.throttled(s, wait, "too many registrations from your address");
        }
        s.pending = Some(Pending::Register(user.clone()));
        vec![Output::Job(Job::Register {
            username: user,
            password: password.to_owned(),
            source: s.peer,
        })]
    }

    /// Feed back the result of the session's job. `serial` is a fresh
    /// random value from the driver, used if a certificate is issued.
    pub fn on_job_done(
        &mut self,
        s: &mut Session,
        now: UnixMillis,
        result: JobResult,
        serial: u64,
    ) -> Vec<Output> {
        let Some(pending) = s.pending.take() else {
            return self.internal(s, "job result without a pending request");
        };
        match (pending, result) {
            (_, JobResult::Failed(e)) => self.internal(s, &e),
            (_, JobResult::Busy) => {
                self.stats.hash_queue_full += 1;
                tracing::warn!(peer = %s.peer, "password attempt refused: hashing queue full");
                let m = "the authority is busy; try again in 5 s";
                self.reject(s, RejectCode::Throttled, 5, m, false)
            }
            (Pending::Register(_), JobResult::Throttled(wait)) => {
                self.throttled(s, wait, "too many registrations from your address")
            }
            (Pending::Login { .. }, JobResult::Throttled(wait)) => {
                self.throttled(s, wait, "too many failed logins")
            }
            (Pending::Register(user), JobResult::Registered) => {
                self.stats.registrations += 1;
                tracing::info!(user = %user, "account registered");
                let r = Response::Registered {
                    username: user.as_str(),
                };
                self.respond(s, &r.encode(), false)
            }
            (Pending::Register(user), JobResult::UsernameTaken) => {
                self.stats.username_taken += 1;
                let m = format!("username {user} is taken");
                self.reject(s, RejectCode::UsernameTaken, 0, &m, false)
            }
            (Pending::Login { username, ed25519 }, JobResult::PasswordOk(info)) => {
                if info.disabled {
                    self.stats.disabled_account += 1;
                    let m = "this account is disabled";
                    return self.reject(s, RejectCode::AccountDisabled, 0, m, false);
                }
                self.throttle.login_succeeded(username.as_str(), s.peer);
                if self.known_devices.len() >= KNOWN_DEVICES
                    && !self.known_devices.contains_key(&ed25519)
                    && let Some(k) = self.known_devices.keys().next().copied()
                {
                    self.known_devices.remove(&k);
                }
                self.known_devices.insert(ed25519, username.clone());
                self.stats.logins += 1;
                tracing::info!(user = %username, "password login");
                self.issue(s, now, serial, info.role, &username, ed25519)
            }
            (
                Pending::Login { username, .. },
                r @ (JobResult::WrongPassword | JobResult::UnknownUser),
            ) => {
                // Already counted against the throttle when it was asked.
                if r == JobResult::WrongPassword {
                    self.stats.wrong_password += 1;
                } else {
                    self.stats.unknown_user += 1;
                }
                tracing::debug!(peer = %s.peer, user = %username, "wrong password");
                self.invalid_credentials(s)
            }
            (Pending::Renew(cert), JobResult::Account(Some(info))) if !info.disabled => {
                let Ok(user) = Username::parse(&cert.username) else {
                    return self.internal(s, "bad username in verified certificate");
                };
                self.stats.renewals += 1;
                self.issue(s, now, serial, info.role, &user, cert.ed25519)
            }
            (Pending::Renew(_), JobResult::Account(Some(_))) => {
                self.stats.disabled_account += 1;
                self.reject(
                    s,
                    RejectCode::AccountDisabled,
                    0,
                    "this account is disabled",
                    false,
                )
            }
            (
                Pending::Login { .. } | Pending::Renew(_) | Pending::Account { .. },
                JobResult::DeviceRevoked,
            ) => {
                self.stats.revoked_device += 1;
                tracing::info!(peer = %s.peer, "request from a revoked device refused");
                let m = "this device was revoked; log in from another device";
                self.reject(s, RejectCode::DeviceRevoked, 0, m, false)
            }
            (Pending::Account { .. }, JobResult::Account(Some(info))) if info.disabled => {
                self.stats.disabled_account += 1;
                self.reject(
                    s,
                    RejectCode::AccountDisabled,
                    0,
                    "this account is disabled",
                    false,
                )
            }
            (Pending::Account { .. }, JobResult::Account(None)) => {
                self.stats.unknown_user += 1;
                let m = "this account no longer exists";
                self.reject(s, RejectCode::InvalidCredentials, 0, m, false)
            }
            (Pending::Account { username, .. }, JobResult::Throttled(wait)) => {
                tracing::debug!(user = %username, "account request throttled");
                self.throttled(s, wait, "too many failed password attempts")
            }
            (Pending::Account { username, .. }, JobResult::WrongPassword) => {
                // Counted against the throttle when it was asked.
                self.stats.wrong_password += 1;
                tracing::info!(user = %username, "account request: wrong password");
                self.invalid_credentials(s)
            }
            (
                Pending::Account {
                    op: PendingOp::ListDevices,
                    ..
                },
                JobResult::Devices(list),
            ) => {
                self.stats.device_lists += 1;
                let devices = list
                    .into_iter()
                    .map(|d| DeviceEntry {
                        ed25519: d.ed25519,
                        name: d.name,
                        first_seen: d.first_seen.get(),
                        last_seen: d.last_seen.get(),
                        revoked_at: d.revoked_at.map_or(0, UnixSecs::get),
                    })
                    .collect();
                self.respond(s, &Response::Devices { devices }.encode(), false)
            }
            (
                Pending::Account {
                    op: PendingOp::ChangePassword,
                    username,
                    ..
                },
                JobResult::PasswordChanged,
            ) => {
                self.stats.password_changes += 1;
                self.throttle.login_succeeded(username.as_str(), s.peer);
                tracing::info!(user = %username, "password changed");
                let m = "password changed: log in with the new one from now on";
                self.respond(s, &Response::Done { message: m }.encode(), false)
            }
            (
                Pending::Account {
                    op: PendingOp::RevokeDevice,
                    username,
                    ed25519,
                },
                JobResult::Revoked(d),
            ) => {
                self.stats.devices_revoked += 1;
                self.throttle.login_succeeded(username.as_str(), s.peer);
                let id = hex_encode(&d.ed25519[..8]);
                tracing::info!(user = %username, device = %id, "device revoked");
                let own = if d.ed25519 == ed25519 {
                    " (this device)"
                } else {
                    ""
                };
                let m = format!(
                    "device {id} ({}){own} revoked: it can no longer log in or renew, and supernodes refuse it within a minute",
                    d.name
                );
                self.respond(s, &Response::Done { message: &m }.encode(), false)
            }
            (
                Pending::Account {
                    op: PendingOp::RevokeDevice,
                    username,
                    ..
                },
                JobResult::NoSuchDevice { ambiguous },
            ) => {
                self.throttle.login_succeeded(username.as_str(), s.peer);
                let m = if ambiguous {
                    "that names several devices; give more of the id (`natter devices` lists them)"
                } else {
                    "no such device (`natter devices` lists them)"
                };
                self.reject(s, RejectCode::NoSuchDevice, 0, m, false)
            }
            (Pending::Revocations, JobResult::Revocations { devices, accounts }) => {
                self.stats.revocation_lists += 1;
                let list = RevocationList::sign(&self.key, now, devices, accounts).encode();
                self.respond(s, &Response::Revocations { list: &list }.encode(), false)
            }
            (Pending::Renew(_), JobResult::Account(None)) => {
                self.stats.unknown_user += 1;
                self.reject(
                    s,
                    RejectCode::InvalidCredentials,
                    0,
                    "this account no longer exists",
                    false,
                )
            }
            (p, r) => self.internal(s, &format!("job result {r:?} does not answer {p:?}")),
        }
    }

    fn issue(
        &mut self,
        s: &mut Session,
        now: UnixMillis,
        serial: u64,
        role: Role,
        user: &Username,
        ed25519: [u8; 32],
    ) -> Vec<Output> {
        let State::Open { x25519, .. } = &s.state else {
            return vec![Output::Close];
        };
        let now = now.secs();
        let cert = Certificate::issue(
            &self.key,
            serial,
            role,
            (now - BACKDATE_SECS).get(),
            (now + self.policy.certificate_lifetime_secs).get(),
            user,
            ed25519,
            *x25519,
        );
        let bytes = cert.encode();
        self.respond(s, &Response::Certificate { cert: &bytes }.encode(), false)
    }

    fn invalid_credentials(&mut self, s: &mut Session) -> Vec<Output> {
        let m = "invalid username or password";
        self.reject(s, RejectCode::InvalidCredentials, 0, m, false)
    }

    fn throttled(&mut self, s: &mut Session, wait_ms: u64, why: &str) -> Vec<Output> {
        self.stats.throttled += 1;
        let secs = wait_ms.div_ceil(1000).min(u32::MAX as u64) as u32;
        tracing::info!(peer = %s.peer, wait_secs = secs, "throttled: {why}");
        let m = format!("{why}; try again in {secs} s");
        self.reject(s, RejectCode::Throttled, secs, &m, false)
    }

    fn internal(&mut self, s: &mut Session, what: &str) -> Vec<Output> {
        self.stats.internal_errors += 1;
        tracing::error!(peer = %s.peer, "internal error: {what}");
        self.reject(
            s,
            RejectCode::Internal,
            0,
            "internal error at the authority",
            true,
        )
    }

    fn reject(
        &mut self,
        s: &mut Session,
        code: RejectCode,
        retry_after_secs: u32,
        message: &str,
        close: bool,
    ) -> Vec<Output> {
        let r = Response::Error {
            code,
            retry_after_secs,
            message,
        };
        tracing::debug!(peer = %s.peer, ?code, "request refused: {message}");
        self.respond(s, &r.encode(), close)
    }

    /// Send a response: sealed on an open channel, plain before one exists.
    fn respond(&mut self, s: &mut Session, body: &[u8], close: bool) -> Vec<Output> {
        let frame = match &mut s.state {
            State::Open { transport, .. } => transport
                .encrypt(body)
                .ok()
                .and_then(|c| Frame::encode(KIND_SEALED, &c).ok()),
            State::AwaitHello => Frame::encode(KIND_REJECT, body).ok(),
            State::Closed => None,
        };
        let mut out: Vec<Output> = frame.into_iter().map(Output::Send).collect();
        if close || s.requests >= self.policy.max_requests_per_connection {
            s.state = State::Closed;
            out.push(Output::Close);
        }
        out
    }
}

/// An account as stored (SQLite or PostgreSQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub username: String,
    pub password_hash: String,
    pub info: AccountInfo,
    /// When it was registered and last logged in to (wall clock).
    pub created_at: UnixSecs,
    pub last_login: Option<UnixSecs>,
}

/// Devices remembered per account; a new one beyond this forgets the
/// least recently seen device that is not revoked.
pub const MAX_DEVICES: usize = 32;

/// What `Store::device_seen` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// Known (or now added) and not revoked.
    Active,
    /// Revoked: no login or renewal for it.
    Revoked,
}

/// The name a new device is listed under: the one it gave, else
/// "device-" and the start of its id.
pub fn default_name(name: &str, ed25519: &[u8; 32]) -> String {
    if name.is_empty() {
        format!("device-{}", crate::wire::hex_encode(&ed25519[..4]))
    } else {
        name.to_owned()
    }
}

/// What the revocation list is made of, newest first: revoked devices as
/// (username, ed25519 key), and disabled accounts' usernames.
pub type RevokedEntries = (Vec<(String, [u8; 32])>, Vec<String>);

/// One device of an account, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its ed25519 key; the hex of it is the device's id.
    pub ed25519: [u8; 32],
    /// The name it gave at its first login (or "device-" and its id).
    pub name: String,
    /// First login and last login or renewal (wall clock).
    pub first_seen: UnixSecs,
    pub last_seen: UnixSecs,
    /// When it was revoked (wall clock), if it was.
    pub revoked_at: Option<UnixSecs>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::client::LoginClient;
    use crate::identity::DeviceIdentity;
    use rand::SeedableRng;

    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    /// A session past its handshake, and the client's login frame.
    fn login_frame(core: &mut AuthorityCore, d: &DeviceIdentity, pw: &str) -> (Session, Vec<u8>) {
        let mut s = Session::new([10, 0, 0, 1].into());
        let (mut client, hello) = LoginClient::start(d, core.public_key(), NOW).unwrap();
        let out = core.on_frame(&mut s, NOW, Frame::decode(&hello).unwrap());
        let Some(Output::Send(w)) = out.into_iter().next() else {
            panic!("no welcome")
        };
        client.on_frame(NOW, Frame::decode(&w).unwrap()).unwrap();
        (s, client.login("alice", pw).unwrap())
    }

    #[test]
    fn parallel_guesses_are_counted_before_any_is_hashed() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let mut core = AuthorityCore::new(AuthorityKey::generate(&mut rng), Policy::default());
        let mut jobs = 0;
        // 50 connections send their guess before any hash comes back.
        for _ in 0..50 {
            let d = DeviceIdentity::generate(&mut rng);
            let (mut s, f) = login_frame(&mut core, &d, "guess");
            let out = core.on_frame(&mut s, NOW, Frame::decode(&f).unwrap());
            jobs += out.iter().filter(|o| matches!(o, Output::Job(_))).count();
        }
        assert_eq!(jobs, 5, "only the free attempts reach the hasher");
        assert_eq!(core.stats().throttled, 45);
    }

    #[test]
    fn a_known_device_is_not_locked_out_and_goes_first() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut core = AuthorityCore::new(AuthorityKey::generate(&mut rng), Policy::default());
        let owner = DeviceIdentity::generate(&mut rng);
        let (mut s, f) = login_frame(&mut core, &owner, "right");
        core.on_frame(&mut s, NOW, Frame::decode(&f).unwrap());
        let info = AccountInfo {
            role: Role::User,
            disabled: false,
        };
        core.on_job_done(&mut s, NOW, JobResult::PasswordOk(info), 1);
        for _ in 0..20 {
            let d = DeviceIdentity::generate(&mut rng);
            let (mut s, f) = login_frame(&mut core, &d, "guess");
            core.on_frame(&mut s, NOW, Frame::decode(&f).unwrap());
        }
        let (mut s, f) = login_frame(&mut core, &owner, "right");
        let out = core.on_frame(&mut s, NOW, Frame::decode(&f).unwrap());
        assert!(
            matches!(
                out.as_slice(),
                [Output::Job(Job::CheckPassword {
                    known_device: true,
                    ..
                })]
            ),
            "{out:?}"
        );
    }

    /// A session past its handshake for device `d`, and its client.
    fn open(core: &mut AuthorityCore, d: &DeviceIdentity) -> (Session, LoginClient) {
        let mut s = Session::new([10, 0, 0, 2].into());
        let (mut client, hello) = LoginClient::start(d, core.public_key(), NOW).unwrap();
        let out = core.on_frame(&mut s, NOW, Frame::decode(&hello).unwrap());
        let Some(Output::Send(w)) = out.into_iter().next() else {
            panic!("no welcome")
        };
        client.on_frame(NOW, Frame::decode(&w).unwrap()).unwrap();
        (s, client)
    }

    /// The client's reading of the core's one answer.
    fn answer(
        client: &mut LoginClient,
        out: Vec<Output>,
    ) -> Result<crate::authority::Answer, crate::authority::ClientError> {
        let Some(Output::Send(f)) = out.into_iter().next() else {
            panic!("no answer")
        };
        client
            .on_frame(NOW, Frame::decode(&f).unwrap())
            .map(|a| a.expect("an answer"))
    }

    fn code(r: Result<crate::authority::Answer, crate::authority::ClientError>) -> RejectCode {
        match r {
            Err(crate::authority::ClientError::Rejected { code, .. }) => code,
            other => panic!("not refused: {other:?}"),
        }
    }

    /// Issue 14.9: a revoked device is refused at renewal, account
    /// requests carry the device and check the password, and only a
    /// supernode gets the signed revocation list.
    #[test]
    fn revocation_at_renewal_account_requests_and_the_list() {
        let seed = || rand::rngs::StdRng::seed_from_u64(21);
        let mut core = AuthorityCore::new(AuthorityKey::generate(&mut seed()), Policy::default());
        let key = AuthorityKey::generate(&mut seed());
        let mut rng = rand::rngs::StdRng::seed_from_u64(22);
        let d = DeviceIdentity::generate(&mut rng);
        let user = Username::parse("alice").unwrap();
        let issue = |role| {
            Certificate::issue(
                &key,
                1,
                role,
                NOW.secs().get() - 10,
                NOW.secs().get() + 3600,
                &user,
                d.ed25519_public(),
                d.x25519_public(),
            )
        };
        let cert = issue(Role::User);

        // Renewal carries the device; the store says it is revoked.
        let (mut s, mut c) = open(&mut core, &d);
        let out = core.on_frame(
            &mut s,
            NOW,
            Frame::decode(&c.renew(&cert).unwrap()).unwrap(),
        );
        assert!(
            matches!(out.as_slice(), [Output::Job(Job::LoadAccount { ed25519, .. })] if *ed25519 == d.ed25519_public()),
            "{out:?}"
        );
        let out = core.on_job_done(&mut s, NOW, JobResult::DeviceRevoked, 2);
        assert_eq!(code(answer(&mut c, out)), RejectCode::DeviceRevoked);
        assert_eq!(core.stats().revoked_device, 1);

        // A weak new password is refused before any job.
        let (mut s, mut c) = open(&mut core, &d);
        let op = AccountOp::ChangePassword {
            old: "old password",
            new: "short",
        };
        let f = c.account(&cert, op).unwrap();
        let out = core.on_frame(&mut s, NOW, Frame::decode(&f).unwrap());
        assert_eq!(code(answer(&mut c, out)), RejectCode::WeakPassword);
        // A good one goes to the store; its answer is passed on.
        let (mut s, mut c) = open(&mut core, &d);
        let op = AccountOp::ChangePassword {
            old: "old password",
            new: "new password 2",
        };
        let f = c.account(&cert, op).unwrap();
        let out = core.on_frame(&mut s, NOW, Frame::decode(&f).unwrap());
        assert!(
            matches!(
                out.as_slice(),
                [Output::Job(Job::Account {
                    op: AccountJob::ChangePassword { .. },
                    ..
                })]
            ),
            "{out:?}"
        );
        let out = core.on_job_done(&mut s, NOW, JobResult::PasswordChanged, 3);
        assert!(matches!(
            answer(&mut c, out),
            Ok(crate::authority::Answer::Done(_))
        ));
        assert_eq!(core.stats().password_changes, 1);
        // Wrong password for a revocation: refused, and counted against
        // the login throttle (a stolen device cannot guess freely).
        for i in 0..8 {
            let (mut s, mut c) = open(&mut core, &d);
            let op = AccountOp::RevokeDevice {
                password: "guess",
                device: "laptop",
            };
            let f = c.account(&cert, op).unwrap();
            let out = core.on_frame(&mut s, NOW, Frame::decode(&f).unwrap());
            if i < 5 {
                let out = core.on_job_done(&mut s, NOW, JobResult::WrongPassword, 4);
                assert_eq!(code(answer(&mut c, out)), RejectCode::InvalidCredentials);
            } else {
                assert_eq!(
                    code(answer(&mut c, out)),
                    RejectCode::Throttled,
                    "guess {i}"
                );
            }
        }

        // The revocation list: not for a user's certificate.
        let (mut s, mut c) = open(&mut core, &d);
        let f = c.revocations(&cert).unwrap();
        let out = core.on_frame(&mut s, NOW, Frame::decode(&f).unwrap());
        assert_eq!(code(answer(&mut c, out)), RejectCode::NotASupernode);
        // A supernode's: signed, verifiable, naming what the store said.
        let sn = issue(Role::Supernode);
        let (mut s, mut c) = open(&mut core, &d);
        let f = c.revocations(&sn).unwrap();
        let out = core.on_frame(&mut s, NOW, Frame::decode(&f).unwrap());
        let since = NOW.secs() - 24 * 3600 - BACKDATE_SECS - 120;
        assert!(
            matches!(out.as_slice(), [Output::Job(Job::Revocations { since: got })] if *got == since),
            "{out:?}"
        );
        let result = JobResult::Revocations {
            devices: vec![[5; 32]],
            accounts: vec!["bob".into()],
        };
        let out = core.on_job_done(&mut s, NOW, result, 5);
        let Ok(crate::authority::Answer::Revocations(bytes)) = answer(&mut c, out) else {
            panic!("no list")
        };
        let list = RevocationList::decode(&bytes).unwrap();
        list.verify(&core.public_key(), NOW.secs()).unwrap();
        let mut r = crate::identity::revocation::Revoked::default();
        r.update(&list).unwrap();
        assert!(r.refuses("bob", &[1; 32]) && r.refuses("carol", &[5; 32]));
        assert!(!r.refuses("alice", &d.ed25519_public()));
    }
}
