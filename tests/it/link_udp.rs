//! Secure links on real loopback UDP sockets through the tokio driver:
//! two endpoints talk both ways, a third with a certificate from another
//! authority is refused.

use natter::clock::{Clock, SystemClock};
use natter::identity::{AuthorityKey, Certificate, DeviceIdentity, Role, Username};
use natter::link::{CloseReason, LinkConfig, LinkEndpoint, LinkEvent};
use natter::node::UdpLink;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::sync::Arc;
use std::time::Duration;

fn config() -> LinkConfig {
    LinkConfig {
        handshake_retry_ms: 50,
        handshake_attempts: 4,
        ..LinkConfig::default()
    }
}

fn endpoint(rng: &mut StdRng, issuer: &AuthorityKey, pinned: [u8; 32], name: &str) -> LinkEndpoint {
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
    LinkEndpoint::new(d, c, pinned, config()).unwrap()
}

async fn bind(ep: LinkEndpoint) -> UdpLink {
    UdpLink::bind("127.0.0.1:0".parse().unwrap(), ep, Arc::new(SystemClock))
        .await
        .unwrap()
}

async fn next(link: &mut UdpLink) -> LinkEvent {
    tokio::time::timeout(Duration::from_secs(10), link.next_event())
        .await
        .expect("no link event within 10 s")
        .expect("link task stopped")
}

#[tokio::test]
async fn two_endpoints_talk_and_a_foreign_certificate_is_refused() {
    let _turn = scenario!();
    let mut rng = StdRng::seed_from_u64(1);
    let authority = AuthorityKey::generate(&mut rng);
    let other = AuthorityKey::generate(&mut rng);
    let pin = authority.public();
    let mut alice = bind(endpoint(&mut rng, &authority, pin, "alice")).await;
    let mut bob = bind(endpoint(&mut rng, &authority, pin, "bob")).await;
    let mut mallory = bind(endpoint(&mut rng, &other, pin, "mallory")).await;
    let (a, b, m) = (alice.local_addr(), bob.local_addr(), mallory.local_addr());

    alice.send(b, b"hello bob".to_vec()).await.unwrap();
    match next(&mut bob).await {
        LinkEvent::Established { addr, peer } => {
            assert_eq!((addr, peer.username.as_str()), (a, "alice"));
        }
        e => panic!("bob expected Established, got {e:?}"),
    }
    match next(&mut bob).await {
        LinkEvent::Message {
            addr,
            peer,
            payload,
        } => {
            assert_eq!(addr, a);
            assert_eq!(peer.username, "alice");
            assert_eq!(payload, b"hello bob");
        }
        e => panic!("bob expected the message, got {e:?}"),
    }
    match next(&mut alice).await {
        LinkEvent::Established { addr, peer } => {
            assert_eq!((addr, peer.username.as_str()), (b, "bob"));
        }
        e => panic!("alice expected Established, got {e:?}"),
    }

    for i in 0..20u8 {
        bob.send(a, vec![i; 100]).await.unwrap();
    }
    for i in 0..20u8 {
        match next(&mut alice).await {
            LinkEvent::Message { addr, payload, .. } => {
                assert_eq!(addr, b);
                assert_eq!(payload, vec![i; 100]);
            }
            e => panic!("alice expected message {i}, got {e:?}"),
        }
    }
    assert_eq!(alice.peer(b).await.unwrap().unwrap().username, "bob");
    assert_eq!(bob.peer(a).await.unwrap().unwrap().username, "alice");

    // Mallory's certificate is from another authority. She accepts
    // alice's certificate, but alice refuses hers: no ack ever comes.
    mallory.send(a, b"let me in".to_vec()).await.unwrap();
    match next(&mut mallory).await {
        LinkEvent::Closed { addr, reason } => {
            assert_eq!((addr, reason), (a, CloseReason::Timeout));
        }
        e => panic!("mallory expected Closed, got {e:?}"),
    }
    let s = alice.stats().await.unwrap();
    assert_eq!(s.cert_rejected_unknown_issuer, 1);
    assert_eq!(s.handshakes_completed, 1);
    assert!(alice.peer(m).await.unwrap().is_none());
    let stray = alice.try_next_event();
    assert!(stray.is_none(), "alice reported on mallory: {stray:?}");

    // The good session is unaffected.
    alice.send(b, b"still here".to_vec()).await.unwrap();
    match next(&mut bob).await {
        LinkEvent::Message { payload, .. } => assert_eq!(payload, b"still here"),
        e => panic!("bob expected the message, got {e:?}"),
    }
    let s = bob.stats().await.unwrap();
    assert_eq!((s.malformed, s.decrypt_failed, s.replayed), (0, 0, 0));
}
