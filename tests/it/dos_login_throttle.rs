//! Issue 14.4: password guessing in parallel. Guesses sent at once on many
//! connections meet the lockout as serial ones do, and the owner's known
//! device keeps logging in, ahead of the strangers' hashing queue.

use crate::common::authority;
use crate::common::dos::{Honest, report};
use natter::authority::RejectCode;
use natter::node::AuthorityConnection;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_are_counted_before_hashing() {
    let _turn = scenario!();
    let auth = authority::start(authority::policy()).await;
    let d = authority::device();
    let mut c = auth.connect(&d).await;
    c.register("alice", "correct horse").await.unwrap();
    drop(c);
    // 12 connections open their channels, then all guess at once.
    let x = authority::device();
    let mut conns = Vec::new();
    for _ in 0..12 {
        conns.push(auth.connect(&x).await);
    }
    let guesses = conns.into_iter().map(|mut c| {
        tokio::spawn(async move { c.login("alice", "guess guess").await.map(|_| ()) })
    });
    let mut codes = Vec::new();
    for g in guesses {
        codes.push(g.await.unwrap().unwrap_err().reject_code());
    }
    let hashed = auth.handle.stats().wrong_password;
    assert_eq!(hashed, 5, "guesses hashed: {codes:?}");
    let throttled = codes
        .iter()
        .filter(|c| **c == Some(RejectCode::Throttled))
        .count();
    assert_eq!(throttled, 7);
    auth.stop().await;
}

/// Guesses from `from` at `user` (or made-up names), one connection after
/// another, until `stop`.
async fn guesser(
    server: natter::config::HostPort,
    key: [u8; 32],
    from: IpAddr,
    user: Option<&'static str>,
    stop: Arc<AtomicBool>,
    attempts: Arc<AtomicU64>,
) {
    let dev = authority::device();
    let clock = natter::clock::OffsetClock::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) && i < 10_000 {
        i += 1;
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(from, 0)).unwrap();
        let target = SocketAddr::from(([127, 0, 0, 1], server.port));
        let Ok(stream) = sock.connect(target).await else {
            continue;
        };
        let Ok(mut c) =
            AuthorityConnection::from_stream(stream, &server, key, &dev, clock.clone()).await
        else {
            continue;
        };
        for j in 0..8 {
            attempts.fetch_add(1, Ordering::Relaxed);
            let name = user.map_or_else(|| format!("nobody{i}x{j}"), str::to_owned);
            if c.login(&name, "guess guess")
                .await
                .is_err_and(|e| e.reject_code().is_none())
            {
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_logs_in_while_strangers_guess() {
    let _turn = scenario!();
    // Strangers from many addresses: no address lockout stops them here.
    let mut policy = authority::policy();
    policy.throttle.address_failures = 1_000_000;
    let auth = authority::start(policy).await;
    let d = authority::device();
    let mut c = auth.connect(&d).await;
    c.register("alice", "correct horse").await.unwrap();
    drop(c);
    let login = |_| async {
        let mut c = auth.connect_checked(&d).await?;
        let cert = c.login("alice", "correct horse").await?;
        // A renewal on a fresh connection: no password, no queue.
        let mut c = auth.connect_checked(&d).await?;
        c.renew(&cert).await
    };
    let base = Honest::run(6, Duration::from_secs(10), login).await;
    assert_eq!(base.ok, 6);

    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..24u8 {
        let from = IpAddr::from([127, 0, 0, 2 + i % 8]);
        // Half guess at alice, half at made-up names (hashed all the same).
        let user = (i % 2 == 0).then_some("alice");
        tasks.push(tokio::spawn(guesser(
            auth.server.clone(),
            auth.public(),
            from,
            user,
            stop.clone(),
            attempts.clone(),
        )));
    }
    // Bounded wait until the hashing queue is busy.
    for _ in 0..500 {
        if auth.handle.stats().unknown_user >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s0 = auth.handle.stats();
    let (a0, t0) = (attempts.load(Ordering::Relaxed), Instant::now());
    let under = Honest::run(6, Duration::from_secs(10), login).await;
    let secs = t0.elapsed().as_secs_f64();
    let rate = (attempts.load(Ordering::Relaxed) - a0) as f64 / secs;
    let s = auth.handle.stats();
    let hashed = (s.unknown_user + s.wrong_password) - (s0.unknown_user + s0.wrong_password);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    report(
        "login guessing, 24 connections from 8 hosts",
        &format!(
            "{rate:.0} guesses/s, {:.0} hashed/s, throttled={} queue_full={}",
            hashed as f64 / secs,
            s.throttled,
            s.hash_queue_full
        ),
        &base,
        &under,
    );
    assert_eq!(under.ok, 6, "{under:?}");
    assert!(s.throttled > 0, "alice's account never locked");
    auth.stop().await;
}
