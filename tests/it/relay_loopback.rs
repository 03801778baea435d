//! Our TURN client against a supernode's relay through real loopback
//! sockets: allocate (with the 401/nonce dance), install a permission,
//! send and receive with Send/Data indications, bind a channel and send
//! and receive ChannelData, then release the allocation.

use crate::common::relay::*;
use natter::node::turn::TurnConnection;

#[tokio::test]
async fn allocate_permission_channel_and_data_both_ways() {
    let _turn = scenario!();
    let sn = supernode(relay_config()).await;
    let mut c = TurnConnection::udp(
        sn.addr,
        "127.0.0.1:0".parse().unwrap(),
        creds(SECRET, "alice", 3600),
        clock(),
    )
    .await
    .unwrap();
    let (relayed, mapped) = c.allocate(T).await.unwrap();
    assert_eq!(mapped, c.local_addr, "the server-reflexive address");
    assert_eq!(relayed.ip(), sn.addr.ip());
    assert_ne!(relayed.port(), sn.addr.port());

    let (p, paddr) = peer().await;
    // No permission yet: the peer's datagram is dropped at the relay.
    p.send_to(b"too early", relayed).await.unwrap();

    c.create_permission(paddr.ip(), T).await.unwrap();
    c.send_to(paddr, b"hello via send".to_vec()).await.unwrap();
    let (got, from) = recv_from(&p).await;
    assert_eq!(got, b"hello via send");
    assert_eq!(from, relayed, "data leaves from the relayed address");
    p.send_to(b"hello via data", relayed).await.unwrap();
    assert_eq!(
        c.recv(T).await.unwrap(),
        (paddr, b"hello via data".to_vec())
    );

    let ch = c.bind_channel(paddr, T).await.unwrap();
    assert!((0x4000..=0x4FFF).contains(&ch));
    for i in 0..50u8 {
        c.send_to(paddr, vec![i; 100 + i as usize]).await.unwrap();
        let (got, _) = recv_from(&p).await;
        assert_eq!(got, vec![i; 100 + i as usize]);
        p.send_to(&[i; 3], relayed).await.unwrap();
        assert_eq!(c.recv(T).await.unwrap(), (paddr, vec![i; 3]));
    }

    let st = sn.node.turn.as_ref().unwrap().stats().await.unwrap();
    assert_eq!(st.allocations, 1);
    assert_eq!(st.unauthenticated, 1, "the first Allocate is challenged");
    assert!(st.no_permission >= 1, "the early datagram was dropped");
    assert_eq!(st.to_peer_packets, 51);
    assert_eq!(st.to_client_packets, 51);

    c.close(T).await.unwrap();
    let st = sn.node.turn.as_ref().unwrap().stats().await.unwrap();
    assert_eq!(st.allocations_deleted, 1);
    // The relay socket is closed with the allocation.
    p.send_to(b"gone", relayed).await.unwrap();
}
