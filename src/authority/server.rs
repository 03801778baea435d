//! Tokio driver for the authority: accepts TCP connections, splits the
//! stream into frames, feeds them to [`AuthorityCore`] and runs its jobs
//! (argon2id and SQLite) on the blocking pool, bounded by the core count.
//! Which connections may hold a slot, and for how long, is decided by the
//! core's [`Admission`](super::admission::Admission) table.

use super::AuthorityStats;
use super::admission::{Admit, ConnId};
use super::core::{AccountJob, AuthorityCore, Job, JobResult, Output, Policy, Session};
use super::store::{DeviceState, RevokeOutcome, Store, StoreError, hash_password};
use super::throttle::ThrottlePolicy;
use crate::clock::Clock;
use crate::identity::revocation::MAX_DEVICES as MAX_REVOKED_DEVICES;
use crate::identity::{AuthorityKey, Username};
use crate::limits::SourceKey;
use crate::time::UnixSecs;
use crate::wire::{Frame, MAX_FRAME};
use rand::RngCore;
use std::collections::HashMap;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tracing::Instrument;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Shared {
    core: Mutex<AuthorityCore>,
    store: Arc<Store>,
    /// The throttle's knobs, for the store's shared throttle (PostgreSQL).
    throttle: ThrottlePolicy,
    clock: Arc<dyn Clock>,
    /// Bounds concurrent argon2 work (each hash takes ~19 MiB and a core)
    /// and orders it: known devices before strangers.
    hashing: HashGate,
    /// How to close each admitted connection early (eviction).
    kills: Mutex<HashMap<ConnId, Arc<Notify>>>,
}

impl Shared {
    fn core(&self) -> std::sync::MutexGuard<'_, AuthorityCore> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn kills(&self) -> std::sync::MutexGuard<'_, HashMap<ConnId, Arc<Notify>>> {
        self.kills.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A bound, ready authority.
pub struct AuthorityServer {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// Read access to a running authority, for tests and status output.
#[derive(Clone)]
pub struct AuthorityHandle {
    shared: Arc<Shared>,
    pub local_addr: SocketAddr,
}

impl AuthorityHandle {
    pub fn stats(&self) -> AuthorityStats {
        self.shared.core().stats().clone()
    }

    /// Connections holding a slot now.
    pub fn open_connections(&self) -> usize {
        self.shared.core().admission().open()
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }
}

impl AuthorityServer {
    pub async fn bind(
        listen: SocketAddr,
        key: AuthorityKey,
        store: Store,
        mut policy: Policy,
        clock: Arc<dyn Clock>,
        max_connections: usize,
    ) -> Result<Self, ServerError> {
        policy.admission.max_connections = max_connections.max(1);
        // "Any" listens on IPv4 and IPv6 alike.
        let listener =
            crate::socket::bind_tcp(listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: listen,
                    source,
                })?;
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(AuthorityServer {
            listener,
            shared: Arc::new(Shared {
                throttle: policy.throttle.clone(),
                core: Mutex::new({
                    let mut core = AuthorityCore::new(key, policy);
                    core.set_shared_throttle(store.is_shared());
                    core
                }),
                store: Arc::new(store),
                clock,
                hashing: HashGate::new(cpus, policy_queue(cpus)),
                kills: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn handle(&self) -> AuthorityHandle {
        AuthorityHandle {
            shared: self.shared.clone(),
            local_addr: self.local_addr(),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has a local address")
    }

    /// Serve until `shutdown` completes.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(Duration::from_millis(AuthorityCore::TICK_MS));
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {
                    let now = self.shared.clock.unix();
                    {
                        let mut core = self.shared.core();
                        core.on_tick(now);
                        tracing::info!(stats = %core.stats(), "authority counters");
                    }
                    if self.shared.store.is_shared() {
                        let (store, policy) = (self.shared.store.clone(), self.shared.throttle.clone());
                        tokio::task::spawn_blocking(move || {
                            if let Err(e) = store.shared_prune(now, &policy) {
                                tracing::warn!("pruning the shared throttle: {e}");
                            }
                        });
                    }
                }
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok((s, peer)) => (s, crate::socket::canonical(peer)),
                        Err(e) => {
                            // Out of descriptors and the like: back off briefly.
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // Connection slots time out on the monotonic clock.
                    let now = self.shared.clock.now();
                    let admit = self.shared.core().admission().on_accept(now, peer.ip());
                    let id = match admit {
                        Admit::Accept(id) => id,
                        Admit::AcceptEvicting { id, evict } => {
                            if let Some(kill) = self.shared.kills().remove(&evict) {
                                kill.notify_one();
                            }
                            id
                        }
                        // Counted and logged by the admission table.
                        Admit::Refuse(_) => continue,
                    };
                    let kill = Arc::new(Notify::new());
                    self.shared.kills().insert(id, kill.clone());
                    let shared = self.shared.clone();
                    let span = tracing::info_span!("conn", %peer);
                    tokio::spawn(async move {
                        if let Err(e) = serve(stream, peer, &shared, id, &kill).await {
                            tracing::debug!("connection ended: {e}");
                        }
                        shared.kills().remove(&id);
                        shared.core().admission().on_closed(id);
                    }.instrument(span));
                }
            }
        }
    }
}

async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    id: ConnId,
    kill: &Notify,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut session = Session::new(peer.ip());
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let outputs = match Frame::decode_prefix(&buf) {
            Err(_) => shared.core().on_malformed(&mut session),
            Ok(Some((frame, used))) => {
                let now = shared.clock.unix();
                let mut core = shared.core();
                core.admission().on_frame(id);
                let out = core.on_frame(&mut session, now, frame);
                buf.drain(..used);
                out
            }
            Ok(None) => {
                let now = shared.clock.now();
                let due = {
                    let mut core = shared.core();
                    core.admission().on_waiting(id, now, !buf.is_empty());
                    core.admission().deadline(id)
                };
                // Gone from the table: evicted.
                let Some(due) = due else { return Ok(()) };
                let mut chunk = [0u8; 4096];
                let want = (MAX_FRAME + 2).saturating_sub(buf.len()).min(chunk.len());
                let n = tokio::select! {
                    _ = kill.notified() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(due.since(now))) => {
                        let now = shared.clock.now();
                        if shared.core().admission().on_expired(id, now).is_some() {
                            return Ok(());
                        }
                        continue;
                    }
                    r = stream.read(&mut chunk[..want.max(1)]) => r?,
                };
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
                continue;
            }
        };
        let deadline = Duration::from_millis(shared.core().admission().policy.frame_deadline_ms);
        if !execute(&mut stream, &mut session, shared, outputs, deadline).await? {
            let _ = stream.shutdown().await;
            return Ok(());
        }
    }
}

/// Carry out outputs (running jobs and feeding their results back);
/// returns false once the connection should close.
async fn execute(
    stream: &mut TcpStream,
    session: &mut Session,
    shared: &Arc<Shared>,
    mut outputs: Vec<Output>,
    write_deadline: Duration,
) -> std::io::Result<bool> {
    loop {
        let mut next = Vec::new();
        for out in outputs {
            match out {
                // A peer that does not read its answers holds no slot.
                Output::Send(bytes) => {
                    tokio::time::timeout(write_deadline, stream.write_all(&bytes))
                        .await
                        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??
                }
                Output::Close => {
                    stream.flush().await?;
                    return Ok(false);
                }
                Output::Job(job) => {
                    let result = run_job(shared, job).await;
                    let serial = rand::rngs::OsRng.next_u64();
                    let now = shared.clock.unix();
                    next.extend(shared.core().on_job_done(session, now, result, serial));
                }
            }
        }
        if next.is_empty() {
            return Ok(true);
        }
        outputs = next;
    }
}

/// Password work from unknown devices that may wait for a core; more is
/// refused as busy at once (a queue an attacker fills only delays).
fn policy_queue(cpus: usize) -> usize {
    16 * cpus
}

/// A counting semaphore with two queues: waiters of the first class are
/// always served before any of the second, and the second is bounded.
struct HashGate {
    state: Mutex<GateState>,
}

struct GateState {
    free: usize,
    first: VecDeque<oneshot::Sender<()>>,
    second: VecDeque<oneshot::Sender<()>>,
    max_second: usize,
}

/// One slot of the gate, given back on drop.
struct GatePermit<'a>(&'a HashGate);

impl Drop for GatePermit<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl HashGate {
    fn new(slots: usize, max_second: usize) -> Self {
        HashGate {
            state: Mutex::new(GateState {
                free: slots.max(1),
                first: VecDeque::new(),
                second: VecDeque::new(),
                max_second,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot, waiting if need be; `None` if `first` is false and the
    /// second queue is full.
    async fn acquire(&self, first: bool) -> Option<GatePermit<'_>> {
        let rx = {
            let mut st = self.state();
            if st.free > 0 {
                st.free -= 1;
                return Some(GatePermit(self));
            }
            if !first && st.second.len() >= st.max_second {
                return None;
            }
            let (tx, rx) = oneshot::channel();
            if first {
                st.first.push_back(tx);
            } else {
                st.second.push_back(tx);
            }
            rx
        };
        rx.await.ok().map(|()| GatePermit(self))
    }

    /// Hands the slot to the next live waiter, first class first.
    fn release(&self) {
        let mut st = self.state();
        loop {
            let next = match st.first.pop_front() {
                Some(tx) => tx,
                None => match st.second.pop_front() {
                    Some(tx) => tx,
                    None => break,
                },
            };
            if next.send(()).is_ok() {
                return;
            }
        }
        st.free += 1;
    }
}

/// Run `f` on the blocking pool (argon2 and the database block).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("job panicked: {e}")),
    }
}

/// One account operation on the store, for an enabled account and a
/// device that is not revoked.
fn account_op(
    store: &Store,
    user: &Username,
    op: AccountJob,
    now: UnixSecs,
) -> Result<JobResult, StoreError> {
    Ok(match op {
        AccountJob::ListDevices => JobResult::Devices(store.devices(user)?),
        AccountJob::ChangePassword { old, new } => match store.check_password(user, &old)? {
            Ok(_) => {
                let hash = hash_password(&new)?;
                if store.set_password_hash(user, &hash)? {
                    JobResult::PasswordChanged
                } else {
                    JobResult::Account(None)
                }
            }
            Err(_) => JobResult::WrongPassword,
        },
        AccountJob::RevokeDevice { password, device } => {
            match store.check_password(user, &password)? {
                Ok(_) => match store.revoke_device(user, &device, now)? {
                    RevokeOutcome::Revoked(d) => JobResult::Revoked(d),
                    RevokeOutcome::NoSuchDevice => JobResult::NoSuchDevice { ambiguous: false },
                    RevokeOutcome::Ambiguous => JobResult::NoSuchDevice { ambiguous: true },
                },
                Err(_) => JobResult::WrongPassword,
            }
        }
    })
}

async fn run_job(shared: &Arc<Shared>, job: Job) -> JobResult {
    let store = shared.store.clone();
    let policy = shared.throttle.clone();
    let now_ms = shared.clock.unix();
    let now = now_ms.secs();
    // The shared throttle (PostgreSQL) is asked first, so an attempt it
    // refuses never waits for a hashing slot; it also knows devices that
    // logged in through another authority.
    let mut first = false;
    if store.is_shared() {
        let (store, policy) = (store.clone(), policy.clone());
        let check = match &job {
            Job::LoadAccount { .. } | Job::Revocations { .. } => None,
            Job::Account {
                username,
                ed25519,
                op,
                source,
            } if op.checks_password() => {
                let (user, src, key) = (username.clone(), SourceKey::of(*source), *ed25519);
                Some(
                    blocking(move || {
                        store.shared_login_attempt(now_ms, &user, src, &key, false, &policy)
                    })
                    .await,
                )
            }
            Job::Account { .. } => None,
            Job::CheckPassword {
                username,
                known_device,
                source,
                ed25519,
                ..
            } => {
                let (user, src, key, known) = (
                    username.clone(),
                    SourceKey::of(*source),
                    *ed25519,
                    *known_device,
                );
                Some(
                    blocking(move || {
                        store.shared_login_attempt(now_ms, &user, src, &key, known, &policy)
                    })
                    .await,
                )
            }
            Job::Register { source, .. } => {
                let src = SourceKey::of(*source);
                Some(
                    blocking(move || {
                        Ok(match store.shared_registration(now_ms, src, &policy)? {
                            Some(wait) => Err(wait),
                            None => Ok(false),
                        })
                    })
                    .await,
                )
            }
        };
        match check {
            Some(Err(e)) => return JobResult::Failed(e),
            Some(Ok(Err(wait))) => return JobResult::Throttled(wait),
            Some(Ok(Ok(known))) => first = known,
            None => {}
        }
    }
    // Renewals and account lookups hash nothing: they never queue.
    let _permit = match &job {
        Job::LoadAccount { .. } | Job::Revocations { .. } => None,
        // A device holding a valid certificate: ahead of strangers.
        Job::Account { op, .. } if op.checks_password() => match shared.hashing.acquire(true).await
        {
            Some(p) => Some(p),
            None => return JobResult::Busy,
        },
        Job::Account { .. } => None,
        Job::CheckPassword { known_device, .. } => {
            match shared.hashing.acquire(*known_device || first).await {
                Some(p) => Some(p),
                None => return JobResult::Busy,
            }
        }
        Job::Register { .. } => match shared.hashing.acquire(false).await {
            Some(p) => Some(p),
            None => return JobResult::Busy,
        },
    };
    let r = blocking(move || -> Result<JobResult, StoreError> {
        Ok(match job {
            Job::Register {
                username, password, ..
            } => {
                let hash = hash_password(&password)?;
                if store.insert_account(&username, &hash, now)? {
                    JobResult::Registered
                } else {
                    JobResult::UsernameTaken
                }
            }
            Job::CheckPassword {
                username,
                password,
                source,
                ed25519,
                device_name,
                ..
            } => match store.check_password(&username, &password)? {
                Ok(info) => {
                    store.touch_login(&username, now)?;
                    if !info.disabled {
                        let src = SourceKey::of(source);
                        store.shared_login_succeeded(now_ms, &username, src, &ed25519, &policy)?;
                    }
                    if !info.disabled
                        && store.device_seen(&username, &ed25519, &device_name, now)?
                            == DeviceState::Revoked
                    {
                        JobResult::DeviceRevoked
                    } else {
                        JobResult::PasswordOk(info)
                    }
                }
                Err(true) => JobResult::WrongPassword,
                Err(false) => JobResult::UnknownUser,
            },
            Job::LoadAccount { username, ed25519 } => match store.account(&username)? {
                Some(a) if !a.info.disabled => {
                    if store.device_seen(&username, &ed25519, "", now)? == DeviceState::Revoked {
                        JobResult::DeviceRevoked
                    } else {
                        JobResult::Account(Some(a.info))
                    }
                }
                a => JobResult::Account(a.map(|a| a.info)),
            },
            Job::Account {
                username,
                ed25519,
                op,
                source,
            } => match store.account(&username)? {
                Some(a) if !a.info.disabled => {
                    let r = if store.device_seen(&username, &ed25519, "", now)?
                        == DeviceState::Revoked
                    {
                        JobResult::DeviceRevoked
                    } else {
                        account_op(&store, &username, op, now)?
                    };
                    // The right password refunds the shared attempt.
                    if matches!(
                        r,
                        JobResult::PasswordChanged
                            | JobResult::Revoked(_)
                            | JobResult::NoSuchDevice { .. }
                    ) {
                        let src = SourceKey::of(source);
                        store.shared_login_succeeded(now_ms, &username, src, &ed25519, &policy)?;
                    }
                    r
                }
                a => JobResult::Account(a.map(|a| a.info)),
            },
            Job::Revocations { since } => {
                let (d, accounts) = store.revocations(since, MAX_REVOKED_DEVICES)?;
                JobResult::Revocations {
                    devices: d.into_iter().map(|(_, k)| k).collect(),
                    accounts,
                }
            }
        })
    })
    .await;
    r.unwrap_or_else(JobResult::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn known_devices_jump_the_queue_and_strangers_queue_is_bounded() {
        let gate = Arc::new(HashGate::new(1, 2));
        let held = gate.acquire(false).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, first) in [("s1", false), ("s2", false), ("k1", true)] {
            let (gate, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _p = gate.acquire(first).await.unwrap();
                order.lock().unwrap().push(name);
            }));
            tokio::task::yield_now().await;
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            gate.acquire(false).await.is_none(),
            "third stranger refused"
        );
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["k1", "s1", "s2"]);
    }
}
