//! A client with a public address whose account holds the supernode role
//! volunteers as a supernode when its config allows it; others do not.

use crate::common::procs::Network;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

#[test]
fn public_supernode_account_volunteers_and_serves() {
    let _turn = scenario!();
    let net = Network::start();
    for (n, sn) in [("sn1", true), ("carol", true), ("dave", false)] {
        net.account(n, sn);
    }
    let (_sn1, a1) = net.supernode("sn1", &[]);
    let cfg = net.config_with_overlay(
        "volunteer.toml",
        "volunteer_supernode = true\nvolunteer_listen = \"127.0.0.1:0\"",
    );

    // dave (user role) declines even when allowed.
    // Public presence, so that a lookup shows dave online.
    let dave = net.headless_with(
        "dave",
        &cfg,
        std::slice::from_ref(&a1),
        &["--public-presence"],
    );
    let v = dave.wait_json(T, |v| v["event"] == "volunteer_declined");
    assert_eq!(v["reason"], "the account does not hold the supernode role");

    // carol volunteers: loopback is a public address (no NAT).
    let carol = net.headless_with("carol", &cfg, std::slice::from_ref(&a1), &[]);
    let v = carol.wait_json(T, |v| v["event"] == "volunteered");
    let carol_sn = v["supernode"].as_str().unwrap().to_owned();
    carol.wait_json(T, |v| v["event"] == "published");

    // A client that knows only carol's supernode attaches to it and finds
    // users through it: it joined the overlay.
    let erin_cfg = net.config_with_overlay("erin.toml", "");
    net.account("erin", false);
    let mut erin = net.headless_with("erin", &erin_cfg, std::slice::from_ref(&carol_sn), &[]);
    let att = erin.wait_json(T, |v| v["event"] == "attached");
    assert_eq!(att["supernode"], carol_sn.as_str());
    erin.wait_json(T, |v| v["event"] == "published");
    erin.say("lookup dave");
    let r = erin.wait_json(T, |v| v["event"] == "lookup");
    assert_eq!(r["result"], "online", "{r}");
}
