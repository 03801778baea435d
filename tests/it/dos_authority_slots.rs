//! Issue 14.1: the authority's connection slots against slowloris. One
//! host, then eight, open every slot and dribble a frame's length prefix;
//! an honest client must keep logging in while they do.

use crate::common::authority::{self, TestAuthority};
use crate::common::dos::{Honest, connect_from, report};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Slots in the test authority (`common::authority` binds 64).
const SLOTS: usize = 64;
const LOGINS: usize = 8;

/// One slowloris connection after another from `from`, each sending one
/// byte of a length prefix and then waiting, until `stop`; reconnects at
/// most every 50 ms. Counts connection attempts in `attempts`.
async fn holder(server: SocketAddr, from: IpAddr, stop: Arc<AtomicBool>, attempts: Arc<AtomicU64>) {
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    while !stop.load(Ordering::Relaxed) {
        pace.tick().await;
        attempts.fetch_add(1, Ordering::Relaxed);
        let Some(mut s) = connect_from(from, server).await else {
            continue;
        };
        if s.write_all(&[0]).await.is_err() {
            continue;
        }
        let mut b = [0u8; 64];
        // Held until the authority closes it (or the test ends).
        loop {
            tokio::select! {
                r = s.read(&mut b) => if !matches!(r, Ok(n) if n > 0) { break },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if stop.load(Ordering::Relaxed) { return }
                }
            }
        }
    }
}

async fn honest_logins(auth: &TestAuthority, n: usize) -> Honest {
    let d = authority::device();
    Honest::run(n, Duration::from_secs(10), |_| async {
        let mut c = auth.connect_checked(&d).await?;
        c.login("alice", "correct horse").await
    })
    .await
}

async fn attack(hosts: u8, evict_after_ms: u64, what: &str) {
    let mut policy = authority::policy();
    policy.admission.evict_after_ms = evict_after_ms;
    let auth = authority::start(policy).await;
    let d = authority::device();
    let mut c = auth.connect(&d).await;
    c.register("alice", "correct horse").await.unwrap();
    drop(c);
    let base = honest_logins(&auth, LOGINS).await;
    assert_eq!(base.ok, LOGINS);

    let server = SocketAddr::from(([127, 0, 0, 1], auth.handle.local_addr.port()));
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..SLOTS + 32 {
        let from = IpAddr::from([127, 0, 0, 2 + (i % hosts as usize) as u8]);
        tasks.push(tokio::spawn(holder(
            server,
            from,
            stop.clone(),
            attempts.clone(),
        )));
    }
    // Bounded wait for the attack to take every slot it can.
    let mut filled = false;
    for _ in 0..200 {
        let s = auth.handle.stats().admission;
        if auth.handle.open_connections() >= SLOTS.min(16 * hosts as usize)
            && s.refused_address_cap + s.refused_full + s.evicted > 0
        {
            filled = true;
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(filled, "the attack never filled the table");
    let held = auth.handle.open_connections();
    let started = Instant::now();
    let a0 = attempts.load(Ordering::Relaxed);
    let under = honest_logins(&auth, LOGINS).await;
    let rate = (attempts.load(Ordering::Relaxed) - a0) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let s = auth.handle.stats();
    report(
        what,
        &format!(
            "{hosts} host(s), {held}/{SLOTS} slots held, {rate:.0} connects/s, refused cap={} full={} evicted={}",
            s.admission.refused_address_cap, s.admission.refused_full, s.admission.evicted
        ),
        &base,
        &under,
    );
    assert_eq!(
        under.ok, LOGINS,
        "honest logins failed under attack: {under:?}"
    );
    auth.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_cannot_hold_every_slot() {
    let _turn = scenario!();
    attack(1, 1_000, "authority slowloris, one host").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_hosts_are_evicted_for_honest_clients() {
    let _turn = scenario!();
    // Eight hosts of eight: under the per-address cap, so only eviction
    // of the slowest makes room.
    attack(8, 0, "authority slowloris, eight hosts").await;
}

#[tokio::test]
async fn a_trickled_frame_is_cut_at_its_deadline() {
    let _turn = scenario!();
    let mut policy = authority::policy();
    policy.admission.frame_deadline_ms = 300;
    let auth = authority::start(policy).await;
    let mut s = tokio::net::TcpStream::connect(auth.handle.local_addr)
        .await
        .unwrap();
    let t = Instant::now();
    let mut b = [0u8; 16];
    // A byte every 100 ms (a 4112-byte length prefix, then its body), well
    // inside any per-read idle timer; bounded.
    let mut closed = false;
    for _ in 0..50 {
        if s.write_all(&[0x10]).await.is_err() {
            closed = true;
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed, "a trickling connection kept its slot for 5 s");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(auth.handle.stats().admission.frame_deadline, 1);
    auth.stop().await;
}
