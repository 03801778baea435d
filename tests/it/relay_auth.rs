//! The relay refuses allocations without credentials (401 with REALM and
//! NONCE), with a wrong password, with expired REST credentials and with
//! usernames that are not REST-style; none of them leaves an allocation.
//! Valid credentials from the same secret are accepted.

use crate::common::relay::*;
use natter::node::turn::{TurnConnection, TurnConnectionError};
use natter::relay::TurnCredentials;
use stun_rs::attributes::stun::{ErrorCode, Nonce, Realm};
use stun_rs::attributes::turn::RequestedTrasport;
use stun_rs::{MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, StunMessageBuilder};

async fn allocate(addr: std::net::SocketAddr, c: TurnCredentials) -> Result<(), u16> {
    let mut t = TurnConnection::udp(addr, "127.0.0.1:0".parse().unwrap(), c, clock())
        .await
        .unwrap();
    match t.allocate(T).await {
        Ok(_) => Ok(()),
        Err(TurnConnectionError::Refused { code, .. }) => Err(code),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn unauthenticated_wrong_and_expired_credentials_are_refused() {
    let _turn = scenario!();
    let sn = supernode(relay_config()).await;

    // No credentials at all: a bare Allocate is challenged.
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let req = StunMessageBuilder::new(stun_rs::methods::ALLOCATE, MessageClass::Request)
        .with_transaction_id([7u8; 12].into())
        .with_attribute(RequestedTrasport::new(stun_rs::protocols::UDP))
        .build();
    let mut buf = [0u8; 512];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, &req)
        .unwrap();
    s.send_to(&buf[..n], sn.addr).await.unwrap();
    let (resp, _) = recv_from(&s).await;
    let (m, _) = MessageDecoderBuilder::default()
        .build()
        .decode(&resp)
        .unwrap();
    assert_eq!(m.class(), MessageClass::ErrorResponse);
    let code = m.get::<ErrorCode>().unwrap().as_error_code().unwrap();
    assert_eq!(code.error_code().error_code(), 401);
    assert_eq!(
        m.get::<Realm>().unwrap().as_realm().unwrap().as_str(),
        "natter.test"
    );
    assert!(m.get::<Nonce>().is_some());

    // A password made with another secret.
    assert_eq!(
        allocate(sn.addr, creds("not the secret", "mallory", 3600)).await,
        Err(401)
    );
    // Expired ten seconds ago.
    assert_eq!(
        allocate(sn.addr, creds(SECRET, "alice", -10)).await,
        Err(401)
    );
    // A right password for a username that is not "<expiry>:<user>".
    let plain = TurnCredentials {
        username: "alice".into(),
        password: natter::relay::rest_password(SECRET.as_bytes(), "alice"),
    };
    assert_eq!(allocate(sn.addr, plain).await, Err(401));
    // A valid username whose expiry was edited: the password no longer fits.
    let mut forged = creds(SECRET, "alice", -10);
    let later = creds(SECRET, "alice", 3600);
    forged.username = later.username;
    assert_eq!(allocate(sn.addr, forged).await, Err(401));

    let st = sn.node.turn.as_ref().unwrap().stats().await.unwrap();
    assert_eq!(st.allocations, 0, "{st:?}");
    assert_eq!(st.expired_credentials, 1, "{st:?}");
    assert_eq!(st.bad_credentials, 3, "{st:?}");
    assert_eq!(st.unauthenticated, 5, "{st:?}");

    // The same secret's fresh credentials work.
    assert_eq!(allocate(sn.addr, creds(SECRET, "alice", 60)).await, Ok(()));
}
