//! Lookup latency on loopback over real UDP and encrypted links: three
//! supernodes and a set of clients in one process; every client looks up
//! the others in turn. The clients are front ends over the node API: each
//! runs the client runtime on its own data dir (device key and
//! certificate), as the TUI and the headless mode do.
//! Run: `cargo bench --bench overlay_loopback -- [clients] [rounds] [supernodes]`.

use natter::clock::{Clock, SystemClock};
use natter::identity::{AuthorityKey, Certificate, DeviceIdentity, Role, Username};
use natter::link::{LinkConfig, LinkEndpoint};
use natter::node::DeviceFiles;
use natter::node::api::{Command, Event, LookupResult, OverlayEvent};
use natter::node::client::{self, ClientHandle, ClientSettings};
use natter::node::driver::{self as ov, OverlayNode, SupernodeOptions};
use natter::overlay::{ClientConfig, SupernodeConfig, SupernodeCore};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn identity(a: &AuthorityKey, name: &str, role: Role, now: u64) -> (DeviceIdentity, Certificate) {
    let d = DeviceIdentity::generate(&mut rand::rngs::OsRng);
    let c = Certificate::issue(
        a,
        1,
        role,
        now - 60,
        now + 86400,
        &Username::parse(name).unwrap(),
        d.ed25519_public(),
        d.x25519_public(),
    );
    (d, c)
}

/// A client runtime for `name` on its own data dir, with a certificate
/// issued for the device key there.
fn client(
    a: &AuthorityKey,
    dir: &Path,
    name: &str,
    supernodes: &[SocketAddr],
    clock: Arc<dyn Clock>,
) -> ClientHandle {
    let files = DeviceFiles::new(dir);
    let (d, _) = files.identity().unwrap();
    let now = clock.unix_secs().get();
    let c = Certificate::issue(
        a,
        1,
        Role::User,
        now - 60,
        now + 86400,
        &Username::parse(name).unwrap(),
        d.ed25519_public(),
        d.x25519_public(),
    );
    files.save_certificate(&c).unwrap();
    let settings = ClientSettings {
        data_dir: dir.to_owned(),
        // Never reached: the certificate is valid for a day.
        authority: "127.0.0.1:9".parse().unwrap(),
        authority_key: a.public(),
        bootstrap: supernodes.to_vec(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        overlay: ClientConfig::default(),
        renew_before_secs: 3600,
        contacts: Vec::new(),
        away_after_ms: 0,
        // Lookups see the status (else records hide it from non-contacts).
        public_presence: true,
        paths: Default::default(),
        calls: None,
        user: None,
        nat: None,
        watch: Vec::new(),
        files: Default::default(),
        volunteer: None,
    };
    client::spawn(settings, clock)
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs benches without `--bench`: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run it with `cargo bench`");
        return;
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let n: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(20);
    let rounds: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let supernodes: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(8);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let a = AuthorityKey::generate(&mut rand::rngs::OsRng);
    let now = clock.unix_secs().get();
    let mut sn_addrs = Vec::new();
    let mut sns = Vec::new();
    for i in 0..supernodes {
        let (d, c) = identity(&a, &format!("sn{i}"), Role::Supernode, now);
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        // No caching: every lookup goes to an owner.
        let cfg = SupernodeConfig {
            cache_ttl_ms: 0,
            ..Default::default()
        };
        let core = SupernodeCore::new(a.public(), &c, addr, sn_addrs.clone(), cfg, 1, clock.now());
        let link = LinkEndpoint::new(d, c, a.public(), LinkConfig::default()).unwrap();
        sns.push(
            OverlayNode::supernode(sock, link, core, clock.clone(), SupernodeOptions::default())
                .unwrap(),
        );
        sn_addrs.push(addr);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dirs = tempfile::tempdir().unwrap();
    let mut clients = Vec::new();
    for i in 0..n {
        let name = format!("user{i}");
        let dir = dirs.path().join(&name);
        let mut c = client(&a, &dir, &name, &sn_addrs, clock.clone());
        loop {
            match c.events.recv().await {
                Some(Event::Overlay(OverlayEvent::Published { .. })) => break,
                Some(Event::Stopped) | None => panic!("{name} stopped"),
                Some(_) => {}
            }
        }
        clients.push(c);
    }
    let mut lat = Vec::new();
    let mut found = 0;
    for r in 0..rounds {
        for (i, client) in clients.iter_mut().enumerate() {
            let target = format!("user{}", (i + 1 + r) % n);
            let t = Instant::now();
            client
                .commands
                .send(Command::SearchUser { username: target })
                .await
                .unwrap();
            loop {
                match client.events.recv().await {
                    Some(Event::Lookup { result, .. }) => {
                        if matches!(result, LookupResult::Online { .. }) {
                            found += 1;
                        }
                        break;
                    }
                    Some(Event::Stopped) | None => panic!("client stopped"),
                    Some(_) => {}
                }
            }
            lat.push(t.elapsed().as_micros() as u64);
        }
    }
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    let hops: u64 = {
        let mut q = 0;
        for s in &sns {
            let (tx, rx) = tokio::sync::oneshot::channel();
            s.commands
                .send(ov::Command::Status { reply: tx })
                .await
                .unwrap();
            q += rx.await.unwrap().queries_sent;
        }
        q
    };
    println!(
        "loopback lookups: {supernodes} supernodes, {n} clients, {} lookups, {found} found online, {:.2} owner queries per lookup",
        lat.len(),
        hops as f64 / lat.len() as f64
    );
    println!(
        "latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (no supernode cache: client -> supernode -> owner -> back)",
        p(0.5),
        p(0.99),
        p(1.0)
    );
}
