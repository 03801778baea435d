//! Lookup latency on loopback over real UDP and encrypted links: three
//! supernodes and a set of clients in one process; every client looks up
//! the others in turn.
//! Run: `cargo bench --bench overlay_loopback -- [clients] [rounds] [supernodes]`.

use natter::clock::{Clock, SystemClock};
use natter::identity::{AuthorityKey, Certificate, DeviceIdentity, Role, Username};
use natter::link::{LinkConfig, LinkEndpoint};
use natter::node::overlay::{Command, Core, Event, OverlayNode};
use natter::overlay::{
    ClientConfig, ClientCore, ClientEvent, LookupOutcome, SupernodeConfig, SupernodeCore,
};
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
    let now = clock.now_secs();
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
        let core = SupernodeCore::new(
            a.public(),
            &c,
            addr,
            sn_addrs.clone(),
            cfg,
            1,
            clock.now_ms(),
        );
        let link = LinkEndpoint::new(d, c, a.public(), LinkConfig::default()).unwrap();
        sns.push(
            OverlayNode::spawn(sock, link, Core::Supernode(Box::new(core)), clock.clone()).unwrap(),
        );
        sn_addrs.push(addr);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut clients = Vec::new();
    for i in 0..n {
        let (d, c) = identity(&a, &format!("user{i}"), Role::User, now);
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let core = ClientCore::new(
            d.clone(),
            c.clone(),
            a.public(),
            sn_addrs.clone(),
            ClientConfig::default(),
            clock.now_ms(),
        );
        let link = LinkEndpoint::new(d, c, a.public(), LinkConfig::default()).unwrap();
        let mut node =
            OverlayNode::spawn(sock, link, Core::Client(Box::new(core)), clock.clone()).unwrap();
        loop {
            if let Some(Event::Client(ClientEvent::Published { .. })) = node.events.recv().await {
                break;
            }
        }
        clients.push(node);
    }
    let mut lat = Vec::new();
    let mut found = 0;
    for r in 0..rounds {
        for (i, client) in clients.iter_mut().enumerate() {
            let target = format!("user{}", (i + 1 + r) % n);
            let t = Instant::now();
            client
                .commands
                .send(Command::Lookup { username: target })
                .await
                .unwrap();
            loop {
                match client.events.recv().await {
                    Some(Event::Client(ClientEvent::Lookup { outcome, .. })) => {
                        if matches!(outcome, LookupOutcome::Online(_)) {
                            found += 1;
                        }
                        break;
                    }
                    Some(_) => {}
                    None => panic!("client stopped"),
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
                .send(Command::Status { reply: tx })
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
