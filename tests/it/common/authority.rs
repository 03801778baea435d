//! An authority on a real loopback socket with a real SQLite file in a
//! temporary directory.

use natter::authority::server::AuthorityHandle;
use natter::authority::{AuthorityServer, Policy, Store};
use natter::clock::OffsetClock;
use natter::config::HostPort;
use natter::identity::{AuthorityKey, DeviceIdentity};
use natter::node::AuthorityConnection;
use std::sync::Arc;

pub struct TestAuthority {
    pub handle: AuthorityHandle,
    pub key: AuthorityKey,
    pub server: HostPort,
    pub clock: Arc<OffsetClock>,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A policy without registration limits, so tests can register freely.
pub fn policy() -> Policy {
    let mut p = Policy::default();
    p.throttle.registrations_per_hour = 0;
    p
}

pub async fn start(policy: Policy) -> TestAuthority {
    let dir = tempfile::tempdir().unwrap();
    start_in(dir, policy).await
}

pub async fn start_in(dir: tempfile::TempDir, policy: Policy) -> TestAuthority {
    let (key, _) = AuthorityKey::load_or_create(&dir.path().join("authority.key")).unwrap();
    let store = Store::open(&dir.path().join("authority.db")).unwrap();
    let clock = OffsetClock::new();
    let server = AuthorityServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        key.clone(),
        store,
        policy,
        clock.clone(),
        64,
    )
    .await
    .unwrap();
    let handle = server.handle();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    TestAuthority {
        server: HostPort {
            host: "127.0.0.1".into(),
            port: handle.local_addr.port(),
        },
        handle,
        key,
        clock,
        dir,
        stop: Some(tx),
        task: Some(task),
    }
}

impl TestAuthority {
    pub fn public(&self) -> [u8; 32] {
        self.key.public()
    }

    pub async fn connect(&self, device: &DeviceIdentity) -> AuthorityConnection {
        AuthorityConnection::connect(&self.server, self.public(), device, self.clock.clone())
            .await
            .unwrap()
    }

    /// Like `connect`, but a refusal is an error rather than a panic.
    pub async fn connect_checked(
        &self,
        device: &DeviceIdentity,
    ) -> Result<AuthorityConnection, natter::node::LoginError> {
        AuthorityConnection::connect(&self.server, self.public(), device, self.clock.clone()).await
    }

    /// Stop serving and hand back the data dir.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        let TestAuthority { dir, handle, .. } = self;
        drop(handle);
        dir
    }
}

pub fn device() -> DeviceIdentity {
    DeviceIdentity::generate(&mut rand::rngs::OsRng)
}
