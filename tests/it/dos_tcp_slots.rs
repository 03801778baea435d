//! Issue 14.5: a supernode's TCP listener (TURN over TCP, and links of
//! clients whose UDP is blocked) against many hosts holding connections
//! open: eleven sources trickle bytes that never make a whole message or
//! send one request and fall silent. An honest client must keep getting
//! relay allocations over TCP while they do, and an honest allocation that
//! is merely quiet keeps its stream.

use crate::common::dos::{Honest, connect_from, report};
use crate::common::relay::*;
use natter::config::HumanDuration;
use natter::node::turn::TurnConnection;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CAP: usize = 48;
const PER_ADDRESS: usize = 6;
const TRICKLERS: u8 = 10;
const HONEST: usize = 6;

/// How an attacking connection behaves once open.
#[derive(Clone, Copy)]
enum Style {
    /// One byte every 100 ms: a STUN header never completes in time.
    Trickle,
    /// A whole Binding request, then silence.
    Silent,
}

/// Connections from `from`, one after another per task, until `stop`.
async fn attacker(
    server: SocketAddr,
    from: IpAddr,
    style: Style,
    stop: Arc<AtomicBool>,
    attempts: Arc<AtomicU64>,
) {
    let binding: [u8; 20] = [
        0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];
    while !stop.load(Ordering::Relaxed) {
        attempts.fetch_add(1, Ordering::Relaxed);
        let Some(mut s) = connect_from(from, server).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if let Style::Silent = style {
            let _ = s.write_all(&binding).await;
        }
        let mut b = [0u8; 256];
        let mut sent = 0;
        // Held until the supernode closes it (or the test ends).
        loop {
            tokio::select! {
                r = s.read(&mut b) => if !matches!(r, Ok(n) if n > 0) { break },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if stop.load(Ordering::Relaxed) { return }
                    if let Style::Trickle = style {
                        // The first 19 bytes of a Binding request, slowly.
                        if sent < 19 && s.write_all(&binding[sent..sent + 1]).await.is_err() {
                            break;
                        }
                        sent += 1;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn honest_allocations(addr: SocketAddr, n: usize) -> Honest {
    Honest::run(n, T, |i| async move {
        let user = format!("honest{i}");
        let mut c = TurnConnection::tcp(addr, creds(SECRET, &user, 3600), clock()).await?;
        c.allocate(T).await.map(|_| ())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_turn_over_tcp_while_many_hosts_hold_the_listener() {
    let _turn = scenario!();
    let mut rc = relay_config();
    rc.tcp_connections = CAP;
    rc.tcp_connections_per_address = PER_ADDRESS;
    rc.tcp_idle = HumanDuration(Duration::from_millis(400));
    rc.tcp_frame_deadline = HumanDuration(Duration::from_millis(300));
    let sn = supernode(rc).await;
    let turn = sn.node.turn.clone().unwrap();

    let base = honest_allocations(sn.addr, HONEST).await;
    assert_eq!(base.ok, HONEST, "baseline: {:?}", base.errors);

    // An honest allocation that goes quiet past the idle time keeps its
    // stream: the allocation's lifetime rules it.
    let mut quiet = TurnConnection::tcp(sn.addr, creds(SECRET, "quiet", 3600), clock())
        .await
        .unwrap();
    quiet.allocate(T).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    // Ten sources trickling (each tries twice its share), one silent.
    for k in 0..=TRICKLERS {
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + k));
        let style = if k == TRICKLERS {
            Style::Silent
        } else {
            Style::Trickle
        };
        for _ in 0..2 * PER_ADDRESS {
            tasks.push(tokio::spawn(attacker(
                sn.addr,
                from,
                style,
                stop.clone(),
                attempts.clone(),
            )));
        }
    }
    // Until the listener is full and the deadlines have cut some.
    let started = Instant::now();
    loop {
        let s = turn.tcp_stats();
        if s.open as usize >= CAP && s.slow_closed > 0 && s.idle_closed > 0 {
            break;
        }
        assert!(
            started.elapsed() < T,
            "attack never filled the listener: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let under = honest_allocations(sn.addr, HONEST).await;
    let quiet_ok = quiet.create_permission(Ipv4Addr::LOCALHOST.into(), T).await;
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let s = turn.tcp_stats();
    report(
        "supernode TCP listener",
        &format!(
            "{} sources x {} connections, {:.0} connects/s; {} refused (share), {} refused (full), \
             {} evicted, {} cut (slow message), {} cut (idle)",
            TRICKLERS + 1,
            2 * PER_ADDRESS,
            attempts.load(Ordering::Relaxed) as f64 / secs,
            s.refused_per_address,
            s.refused_full,
            s.evicted,
            s.slow_closed,
            s.idle_closed
        ),
        &base,
        &under,
    );
    assert_eq!(under.ok, HONEST, "under attack: {:?}", under.errors);
    assert!(
        quiet_ok.is_ok(),
        "a quiet allocation lost its stream: {quiet_ok:?}"
    );
    assert!(s.refused_per_address > 0, "{s:?}");
    assert!(
        s.evicted > 0,
        "honest newcomers took attackers' places: {s:?}"
    );
    assert!(s.open as usize <= CAP + 1, "{s:?}");
}
