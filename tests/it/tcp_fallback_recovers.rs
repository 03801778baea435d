//! A client that hears nothing on UDP for `tcp_fallback` tries TCP; when
//! nothing answers there either (here: the supernode is not up yet, and it
//! runs no relay, so it never takes TCP), the client goes back to UDP
//! instead of staying on TCP for good, and attaches once the supernode
//! comes up.

use crate::common::procs::{Network, Proc, natter};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

#[test]
fn client_returns_to_udp_when_tcp_reaches_nobody() {
    let _turn = scenario!();
    let net = Network::start();
    net.account("sn1", true);
    net.account("alice", false);
    // A free port for the supernode that starts later.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sn = format!("127.0.0.1:{port}");
    let cfg = net.config_with_overlay("alice.toml", "tcp_fallback = \"1s\"\n");
    let alice = net.headless_with("alice", &cfg, std::slice::from_ref(&sn), &[]);
    // Give the fallback (1 s) and the refused TCP connect time to happen.
    let log = net.dir.path().join("alice.log");
    let deadline = std::time::Instant::now() + T;
    loop {
        let l = std::fs::read_to_string(&log).unwrap_or_default();
        if l.contains("back to UDP") {
            assert!(l.contains("over TCP"), "{l}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alice never left TCP mode:\n{l}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut cmd = natter();
    cmd.arg("--config")
        .arg(&net.client_config)
        .arg("--data-dir")
        .arg(net.data("sn1"))
        .args([
            "--log-level",
            "natter=debug",
            "--supernode",
            "--listen",
            &sn,
        ]);
    let _sn1 = Proc::spawn("sn1", cmd, &net.dir.path().join("sn1.log"));
    let a = alice.wait_json(T, |v| v["event"] == "attached");
    assert_eq!(a["supernode"], sn.as_str(), "{a}");
}
