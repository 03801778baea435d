//! Relay quotas hold over real sockets: a user's allocation count (486
//! Allocation Quota Reached), the relay's global allocation cap (508
//! Insufficient Capacity), and a user's relayed bandwidth (a token bucket:
//! what reaches the peer stays within rate x time + burst).

use crate::common::relay::*;
use natter::config::RelaySection;
use natter::node::turn::{TurnConnection, TurnConnectionError};
use std::time::{Duration, Instant};

async fn connect(addr: std::net::SocketAddr, user: &str) -> TurnConnection {
    TurnConnection::udp(
        addr,
        "127.0.0.1:0".parse().unwrap(),
        creds(SECRET, user, 3600),
        clock(),
    )
    .await
    .unwrap()
}

fn code(
    r: Result<(std::net::SocketAddr, std::net::SocketAddr), TurnConnectionError>,
) -> Option<u16> {
    match r {
        Ok(_) => None,
        Err(TurnConnectionError::Refused { code, .. }) => Some(code),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn allocation_quotas_hold() {
    let _turn = scenario!();
    let sn = supernode(RelaySection {
        user_allocations: 2,
        max_allocations: 3,
        ..relay_config()
    })
    .await;
    let mut conns = Vec::new();
    let mut codes = Vec::new();
    for user in ["alice", "alice", "alice", "bob", "carol"] {
        let mut c = connect(sn.addr, user).await;
        codes.push(code(c.allocate(T).await));
        conns.push(c);
    }
    assert_eq!(codes, vec![None, None, Some(486), None, Some(508)]);
    let st = sn.node.turn.as_ref().unwrap().stats().await.unwrap();
    assert_eq!((st.quota_refused, st.capacity_refused), (1, 1));
    // alice frees one; she (and only she fits) may allocate again.
    conns[0].close(T).await.unwrap();
    let mut again = connect(sn.addr, "alice").await;
    assert_eq!(code(again.allocate(T).await), None);
    let mut dave = connect(sn.addr, "dave").await;
    assert_eq!(code(dave.allocate(T).await), Some(508));
}

#[tokio::test]
async fn bandwidth_quota_holds() {
    let _turn = scenario!();
    const RATE: u64 = 100_000;
    let sn = supernode(RelaySection {
        user_bandwidth: RATE,
        ..relay_config()
    })
    .await;
    let mut c = connect(sn.addr, "alice").await;
    c.allocate(T).await.unwrap();
    let (p, paddr) = peer().await;
    c.bind_channel(paddr, T).await.unwrap();

    // Offer 1000-byte packets at ~500 kB/s for 1.5 s.
    let counter = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        let mut bytes = 0u64;
        while let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(500), p.recv_from(&mut buf)).await
        {
            bytes += n as u64;
        }
        bytes
    });
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    let mut offered = 0u64;
    while start.elapsed() < Duration::from_millis(1500) {
        tick.tick().await;
        c.send_to(paddr, vec![9; 1000]).await.unwrap();
        offered += 1000;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let passed = counter.await.unwrap();
    let bound = (RATE as f64 * elapsed) as u64 + RATE + 1000;
    eprintln!("offered {offered} B, passed {passed} B in {elapsed:.2} s (bound {bound})");
    assert!(
        offered > bound,
        "the sender could not outrun the quota: {offered}"
    );
    assert!(passed <= bound, "{passed} > {bound}");
    assert!(
        passed >= RATE,
        "the relay must still pass traffic: {passed}"
    );
    let st = sn.node.turn.as_ref().unwrap().stats().await.unwrap();
    assert!(st.bandwidth_dropped > 0);
    assert_eq!(
        st.to_peer_bytes, passed,
        "dropped at the relay, not lost elsewhere"
    );
}
