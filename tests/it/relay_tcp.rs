//! TURN over TCP (for clients whose UDP is blocked): allocate, permission,
//! channel and data both ways through the supernode's TCP listener on its
//! UDP port number; closing the connection releases the allocation.

use crate::common::relay::*;
use natter::node::turn::TurnConnection;
use std::time::Duration;

#[tokio::test]
async fn turn_over_tcp_relays_both_ways() {
    let _turn = scenario!();
    let sn = supernode(relay_config()).await;
    let mut c = TurnConnection::tcp(sn.addr, creds(SECRET, "alice", 3600), clock())
        .await
        .unwrap();
    let (relayed, mapped) = c.allocate(T).await.unwrap();
    assert_eq!(mapped, c.local_addr);
    let (p, paddr) = peer().await;
    c.create_permission(paddr.ip(), T).await.unwrap();
    c.send_to(paddr, b"indication".to_vec()).await.unwrap();
    assert_eq!(recv_from(&p).await, (b"indication".to_vec(), relayed));
    c.bind_channel(paddr, T).await.unwrap();
    // Odd lengths exercise ChannelData padding on the stream.
    for len in [1usize, 2, 3, 5, 501, 1203] {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        c.send_to(paddr, data.clone()).await.unwrap();
        assert_eq!(recv_from(&p).await.0, data);
        p.send_to(&data, relayed).await.unwrap();
        assert_eq!(c.recv(T).await.unwrap(), (paddr, data));
    }
    let turn = sn.node.turn.clone().unwrap();
    assert_eq!(turn.stats().await.unwrap().allocations, 1);
    drop(c);
    let deadline = tokio::time::Instant::now() + T;
    while turn.stats().await.unwrap().allocations_deleted == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "allocation kept after the connection closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
