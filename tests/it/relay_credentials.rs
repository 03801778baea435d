//! Relay credentials come from the user's certificate: a logged-in
//! headless client asks its supernode over the encrypted overlay link
//! (`relay` on stdin), gets a short-lived REST username and password for
//! the group's relays, and allocates with them on the supernode's TURN
//! relay. A supernode without a relay secret refuses.

use crate::common::procs::{Network, Proc};
use crate::common::relay;
use natter::node::turn::TurnConnection;
use natter::relay::TurnCredentials;
use std::time::Duration;

const W: Duration = Duration::from_secs(20);

/// A supernode with `extra` TOML appended to its config.
fn supernode(net: &Network, name: &str, extra: &str) -> (Proc, String) {
    let cfg = net.config_with_overlay(&format!("{name}.toml"), extra);
    net.supernode_with(name, &cfg, &[])
}

#[test]
fn certificate_holders_get_relay_credentials_that_allocate() {
    let _turn = scenario!();
    let net = Network::start();
    net.accounts(&[
        ("sn1", true),
        ("sn2", true),
        ("alice", false),
        ("bob", false),
    ]);
    let secret = "group-secret-for-test";
    let (_sn1, a1) = supernode(
        &net,
        "sn1",
        &format!(
            "[relay]\nsecret = \"{secret}\"\nrealm = \"natter.test\"\nports = \"0\"\nallow_loopback_peers = true\ncredential_lifetime = \"10m\"\n"
        ),
    );
    let mut alice = net.headless("alice", std::slice::from_ref(&a1), &[]);
    alice.wait_json(W, |v| v["event"] == "attached");
    alice.say("relay");
    let c = alice.wait_json(W, |v| v["event"] == "relay_credentials");
    let username = c["username"].as_str().unwrap().to_owned();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "alice", "{c}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry: u64 = expiry.parse().unwrap();
    assert!(expiry > now && expiry <= now + 600 + 5, "{c}");
    assert_eq!(c["realm"], "natter.test");
    assert_eq!(
        c["relays"][0],
        a1.as_str(),
        "the supernode's own relay first"
    );
    // Exactly coturn's use-auth-secret password.
    assert_eq!(
        c["password"].as_str().unwrap(),
        natter::relay::rest_password(secret.as_bytes(), &username)
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let creds = TurnCredentials {
            username: username.clone(),
            password: c["password"].as_str().unwrap().to_owned(),
        };
        let relay_addr = a1.parse().unwrap();
        let mut t = TurnConnection::udp(
            relay_addr,
            "127.0.0.1:0".parse().unwrap(),
            creds.clone(),
            relay::clock(),
        )
        .await
        .unwrap();
        let (relayed, _) = t.allocate(relay::T).await.unwrap();
        let (p, paddr) = relay::peer().await;
        t.bind_channel(paddr, relay::T).await.unwrap();
        t.send_to(paddr, b"hi".to_vec()).await.unwrap();
        assert_eq!(relay::recv_from(&p).await, (b"hi".to_vec(), relayed));
        // And over TCP on the same port number.
        let mut t = TurnConnection::tcp(relay_addr, creds, relay::clock())
            .await
            .unwrap();
        t.allocate(relay::T).await.unwrap();
    });

    // A supernode group without a relay secret has no relay to offer.
    let (_sn2, a2) = supernode(&net, "sn2", "");
    alice.say("quit");
    let mut bob = net.headless("bob", std::slice::from_ref(&a2), &[]);
    bob.wait_json(W, |v| v["event"] == "attached");
    bob.say("relay");
    let r = bob.wait_json(W, |v| v["event"] == "relay_refused");
    assert!(r["reason"].as_str().unwrap().contains("no relay"), "{r}");
    bob.say("quit");
}
