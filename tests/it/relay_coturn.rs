//! Our TURN client against coturn's turnserver configured with
//! `use-auth-secret`: credentials computed as natter's supernodes issue
//! them allocate, relay through permissions and channels both ways, and
//! wrong or expired ones are refused. Skipped (with a message) when coturn
//! is not installed; scripts/test.sh installs it.

use crate::common::relay::*;
use natter::node::turn::{TurnConnection, TurnConnectionError};

#[tokio::test]
async fn our_client_through_coturn() {
    let _turn = scenario!();
    let Some(ct) = coturn(SECRET, "natter.test", &[]) else {
        return;
    };
    wait_listening(ct.addr).await;
    let local = "127.0.0.1:0".parse().unwrap();
    let mut c = TurnConnection::udp(ct.addr, local, creds(SECRET, "alice", 3600), clock())
        .await
        .unwrap();
    let (relayed, mapped) = c.allocate(T).await.unwrap();
    assert_eq!(mapped, c.local_addr);
    let (p, paddr) = peer().await;
    c.create_permission(paddr.ip(), T).await.unwrap();
    c.send_to(paddr, b"via send".to_vec()).await.unwrap();
    assert_eq!(recv_from(&p).await, (b"via send".to_vec(), relayed));
    p.send_to(b"via data", relayed).await.unwrap();
    assert_eq!(c.recv(T).await.unwrap(), (paddr, b"via data".to_vec()));
    c.bind_channel(paddr, T).await.unwrap();
    for i in 0..20u8 {
        c.send_to(paddr, vec![i; 33]).await.unwrap();
        assert_eq!(recv_from(&p).await.0, vec![i; 33]);
        p.send_to(&[i; 7], relayed).await.unwrap();
        assert_eq!(c.recv(T).await.unwrap(), (paddr, vec![i; 7]));
    }
    c.close(T).await.unwrap();

    // Over TCP too.
    let mut t = TurnConnection::tcp(ct.addr, creds(SECRET, "bob", 3600), clock())
        .await
        .unwrap();
    let (relayed, _) = t.allocate(T).await.unwrap();
    t.bind_channel(paddr, T).await.unwrap();
    t.send_to(paddr, b"tcp".to_vec()).await.unwrap();
    assert_eq!(recv_from(&p).await, (b"tcp".to_vec(), relayed));
    p.send_to(b"back", relayed).await.unwrap();
    assert_eq!(t.recv(T).await.unwrap(), (paddr, b"back".to_vec()));

    for bad in [creds("wrong", "mallory", 3600), creds(SECRET, "alice", -10)] {
        let mut c = TurnConnection::udp(ct.addr, local, bad, clock())
            .await
            .unwrap();
        match c.allocate(T).await {
            Err(TurnConnectionError::Refused { code: 401, .. }) => {}
            r => panic!("coturn accepted bad credentials: {r:?}"),
        }
    }
}
