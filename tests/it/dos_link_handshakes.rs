//! Issue 14.2: a flood of unauthenticated link INITs from many loopback
//! hosts (127.0.0.2 and up) against a hub on real UDP. Honest clients must
//! keep attaching (through a cookie round trip) and the hub must keep
//! opening its own links.

use crate::common::dos::{Honest, report};
use natter::clock::{Clock, SystemClock};
use natter::identity::{AuthorityKey, Certificate, DeviceIdentity, Role, Username};
use natter::link::packet::Packet;
use natter::link::{LinkConfig, LinkEndpoint, LinkEvent};
use natter::node::UdpLink;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn endpoint(rng: &mut StdRng, issuer: &AuthorityKey, name: &str) -> LinkEndpoint {
    let now = SystemClock.unix_secs().get();
    let d = DeviceIdentity::generate(rng);
    let c = Certificate::issue(
        issuer,
        1,
        Role::User,
        now - 60,
        now + 3600,
        &Username::parse(name).unwrap(),
        d.ed25519_public(),
        d.x25519_public(),
    );
    let config = LinkConfig {
        handshake_retry_ms: 100,
        handshake_attempts: 6,
        ..LinkConfig::default()
    };
    LinkEndpoint::new(d, c, issuer.public(), config).unwrap()
}

async fn bind(ep: LinkEndpoint) -> UdpLink {
    UdpLink::bind("127.0.0.1:0".parse().unwrap(), ep, Arc::new(SystemClock))
        .await
        .unwrap()
}

/// Binds a fresh client and waits (bounded) for its session to `hub`.
async fn attach(seed: u64, issuer: &AuthorityKey, hub: SocketAddr) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    // One user per attach: an account holds at most 16 sessions.
    let mut c = bind(endpoint(&mut rng, issuer, &format!("honest{seed}"))).await;
    c.handle().connect(hub).await.map_err(|e| e.to_string())?;
    loop {
        match c.next_event().await {
            Some(LinkEvent::Established { .. }) => return Ok(()),
            Some(LinkEvent::Closed { reason, .. }) => return Err(format!("{reason:?}")),
            Some(_) => {}
            None => return Err("link task stopped".into()),
        }
    }
}

/// Forged INITs from `from` (a fresh index and key each), one every
/// `every`, until `stop`. Never answers a COOKIE.
async fn flood(
    from: IpAddr,
    hub: SocketAddr,
    every: Duration,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) {
    let sock = tokio::net::UdpSocket::bind(SocketAddr::new(from, 0))
        .await
        .unwrap();
    let mut rng = StdRng::seed_from_u64(u64::from(u32::from(match from {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => unreachable!(),
    })));
    let mut pace = tokio::time::interval(every);
    for _ in 0..100_000 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        pace.tick().await;
        let init = Packet::Init {
            sender: rng.r#gen(),
            ephemeral: rng.r#gen(),
            cookie: None,
        }
        .encode()
        .unwrap();
        if sock.send_to(&init, hub).await.is_ok() {
            sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_attach_while_sixty_four_hosts_flood_inits() {
    let _turn = scenario!();
    let mut rng = StdRng::seed_from_u64(14);
    let issuer = AuthorityKey::generate(&mut rng);
    let hub = bind(endpoint(&mut rng, &issuer, "hub")).await;
    let hub_addr = hub.local_addr();
    let hub_h = hub.handle();
    let mut far = bind(endpoint(&mut rng, &issuer, "far")).await;

    let base = Honest::run(5, Duration::from_secs(10), |i| {
        attach(100 + i as u64, &issuer, hub_addr)
    })
    .await;
    assert_eq!(base.ok, 5, "{base:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let t_attack = Instant::now();
    // 64 hosts, 8 ports each: 512 half-opens would fill the old table
    // (256) twice over; each port re-sends every 500 ms (1000 INITs/s,
    // sixty times the 17/s that held the old table).
    for i in 0..512u16 {
        let from = IpAddr::from([127, 0, 1, (i % 64) as u8 + 1]);
        tasks.push(tokio::spawn(flood(
            from,
            hub_addr,
            Duration::from_millis(500),
            stop.clone(),
            sent.clone(),
        )));
    }
    // Bounded wait until the hub is answering with cookies.
    for _ in 0..500 {
        if hub_h.stats().await.unwrap().cookies_sent > 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let under = Honest::run(20, Duration::from_secs(10), |i| {
        attach(200 + i as u64, &issuer, hub_addr)
    })
    .await;
    // The hub's own outgoing handshake is not starved.
    hub_h.connect(far.local_addr()).await.unwrap();
    let outgoing = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(LinkEvent::Established { .. }) = far.next_event().await {
                return;
            }
        }
    })
    .await;
    let rate = sent.load(Ordering::Relaxed) as f64 / t_attack.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let s = hub_h.stats().await.unwrap();
    report(
        "link INIT flood, 64 hosts x 8 ports",
        &format!(
            "{rate:.0} INITs/s, cookies_sent={} half_open_per_address={} too_many_handshakes={}",
            s.cookies_sent, s.half_open_per_address, s.too_many_handshakes
        ),
        &base,
        &under,
    );
    assert_eq!(under.ok, 20, "{under:?}");
    assert!(outgoing.is_ok(), "the hub's own handshake starved");
    assert!(s.cookies_sent > 0);
    drop(hub);
}
