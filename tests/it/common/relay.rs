//! An in-process supernode with its TURN relay on a loopback socket (the
//! same driver `natter --supernode` runs: the overlay node hands TURN
//! datagrams on its main socket to the relay), REST credentials for it,
//! UDP peers, and coturn's tools when they are installed.

use natter::clock::{Clock, SystemClock};
use natter::config::{HumanDuration, RelaySection};
use natter::identity::{AuthorityKey, Certificate, DeviceIdentity, Role, Username};
use natter::link::{LinkConfig, LinkEndpoint};
use natter::node::driver::{OverlayNode, SupernodeOptions};
use natter::overlay::{SupernodeConfig, SupernodeCore};
use natter::relay::TurnCredentials;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub const SECRET: &str = "natter test group secret";
pub const T: Duration = Duration::from_secs(10);

pub fn relay_config() -> RelaySection {
    RelaySection {
        secret: SECRET.into(),
        realm: "natter.test".into(),
        ports: (0, 0),
        user_bandwidth: 0,
        allow_loopback_peers: true,
        allocation_lifetime: HumanDuration(Duration::from_secs(600)),
        ..Default::default()
    }
}

pub struct Supernode {
    pub node: OverlayNode,
    pub addr: SocketAddr,
}

/// A supernode on 127.0.0.1 running the relay configured by `rc`.
pub async fn supernode(rc: RelaySection) -> Supernode {
    let mut rng = rand::rngs::OsRng;
    let authority = AuthorityKey::generate(&mut rng);
    let device = DeviceIdentity::generate(&mut rng);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now().get();
    let cert = Certificate::issue(
        &authority,
        1,
        Role::Supernode,
        now / 1000 - 60,
        now / 1000 + 86_400,
        &Username::parse("relaysn").unwrap(),
        device.ed25519_public(),
        device.x25519_public(),
    );
    let (socket, tcp) = natter::node::turn::bind_udp_tcp("127.0.0.1:0".parse().unwrap(), rc.tcp)
        .await
        .unwrap();
    let addr = socket.local_addr().unwrap();
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rng, &mut key);
    let (turn, grant) = natter::node::turn::supernode_setup(
        &rc,
        addr,
        addr,
        vec![],
        tcp,
        key,
        natter::time::Millis(now),
    )
    .await
    .unwrap();
    let cfg = SupernodeConfig {
        relay: grant,
        ..Default::default()
    };
    let core = SupernodeCore::new(
        authority.public(),
        &cert,
        addr,
        vec![],
        cfg,
        1,
        natter::time::Millis(now),
    );
    let link = LinkEndpoint::new(device, cert, authority.public(), LinkConfig::default()).unwrap();
    let node = OverlayNode::supernode(
        socket,
        link,
        core,
        clock,
        SupernodeOptions {
            turn,
            ..Default::default()
        },
    )
    .unwrap();
    Supernode { node, addr }
}

/// Credentials for `user` valid `ttl` seconds (negative: already expired).
pub fn creds(secret: &str, user: &str, ttl: i64) -> TurnCredentials {
    let now = SystemClock.unix_secs().get() as i64;
    let username = natter::relay::rest_username((now + ttl).max(0) as u64, user);
    TurnCredentials {
        password: natter::relay::rest_password(secret.as_bytes(), &username),
        username,
    }
}

pub fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// The path of a coturn tool, or `None` (with a message) when coturn is
/// not installed.
pub fn coturn_tool(name: &str) -> Option<PathBuf> {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = PathBuf::from(dir).join(name);
        if p.exists() {
            return Some(p);
        }
    }
    eprintln!("SKIPPED: coturn's {name} is not installed (apt-get install coturn)");
    None
}

/// A free UDP+TCP port on loopback (bound and released; coturn binds it).
pub fn free_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// coturn's turnserver on 127.0.0.1:`port` with REST credentials
/// (`use-auth-secret`) for `secret`. Killed on drop.
pub struct Coturn {
    pub child: Child,
    pub addr: SocketAddr,
    /// coturn's files, removed on drop.
    _dir: tempfile::TempDir,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn coturn(secret: &str, realm: &str, extra: &[&str]) -> Option<Coturn> {
    let bin = coturn_tool("turnserver")?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("turnserver.log")).unwrap();
    let child = Command::new(bin)
        .args([
            "-n",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            "--allow-loopback-peers",
            "--use-auth-secret",
            &format!("--static-auth-secret={secret}"),
            &format!("--realm={realm}"),
            &format!("--listening-port={port}"),
            "--min-port=40000",
            "--max-port=49999",
            "--log-file=stdout",
            "--simple-log",
            &format!("--pidfile={}", dir.path().join("pid").display()),
            &format!("--userdb={}", dir.path().join("turndb").display()),
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Some(Coturn {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        _dir: dir,
    })
}

/// Wait until something listens on TCP `addr` (coturn opens UDP and TCP
/// together).
pub async fn wait_listening(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + T;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing listens on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A peer: a plain UDP socket on loopback.
pub async fn peer() -> (tokio::net::UdpSocket, SocketAddr) {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}

pub async fn recv_from(s: &tokio::net::UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(T, s.recv_from(&mut buf))
        .await
        .expect("peer received nothing")
        .unwrap();
    buf.truncate(n);
    (buf, from)
}
