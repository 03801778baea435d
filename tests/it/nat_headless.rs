//! Real processes on loopback: a supernode with a second address
//! (127.0.0.2) serves STUN with RFC 5780 behaviour discovery on its four
//! sockets next to the overlay on its main socket, and a headless client
//! measures its NAT at login and prints the `nat` JSON event. A client
//! whose supernodes do not answer says they are unreachable (not "UDP
//! blocked": they may just be down) within a few seconds.

use crate::common::procs::{Network, Proc, natter};
use natter::nat::stun::{binding_request, parse_binding_response};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// A port free on both 127.0.0.1 and 127.0.0.2 right now.
fn free_port_pair() -> u16 {
    loop {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.2", p)).is_ok() {
            return p;
        }
    }
}

fn ask(sock: &UdpSocket, to: SocketAddr, tid: u8, ci: bool, cp: bool) -> (SocketAddr, Vec<u8>) {
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let req = binding_request([tid; 12], ci, cp);
    let mut buf = [0u8; 1500];
    for _ in 0..10 {
        sock.send_to(&req, to).unwrap();
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            return (from, buf[..n].to_vec());
        }
    }
    panic!("no STUN answer from {to}");
}

#[test]
fn supernode_serves_rfc5780_and_client_reports_its_nat() {
    let _turn = scenario!();
    let net = Network::start();
    net.account("sn1", true);
    net.account("alice", false);
    let alt_port = free_port_pair();
    let mut cmd = natter();
    cmd.arg("--config")
        .arg(&net.client_config)
        .arg("--data-dir")
        .arg(net.data("sn1"))
        .args(["--log-level", "natter=debug", "--supernode"])
        .args(["--listen", "127.0.0.1:0", "--alt-address", "127.0.0.2"])
        .args(["--alt-port", &alt_port.to_string()]);
    let sn = Proc::spawn("sn1", cmd, &net.dir.path().join("sn1.log"));
    let addr = sn.wait_for(Duration::from_secs(20), |l| l.starts_with("listening on "));
    let addr: SocketAddr = addr.trim_start_matches("listening on ").parse().unwrap();
    let line = sn.wait_for(Duration::from_secs(5), |l| l.starts_with("STUN"));
    assert!(line.contains("RFC 5780"), "{line}");

    // A plain STUN client: each CHANGE-REQUEST is answered from the right
    // socket, and every answer carries our address.
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = c.local_addr().unwrap();
    let other: SocketAddr = format!("127.0.0.2:{alt_port}").parse().unwrap();
    for (tid, ci, cp, from) in [
        (1, false, false, addr),
        (2, true, true, other),
        (3, false, true, SocketAddr::new(addr.ip(), alt_port)),
        (4, true, false, SocketAddr::new(other.ip(), addr.port())),
    ] {
        let (src, bytes) = ask(&c, addr, tid, ci, cp);
        let r = parse_binding_response(&bytes).unwrap();
        assert_eq!(src, from, "change ip {ci} port {cp}");
        assert_eq!(r.origin, Some(from));
        assert_eq!(r.mapped, Some(me));
        assert_eq!(r.other, Some(other));
        assert_eq!(r.transaction, [tid; 12]);
    }
    // The alternate sockets answer plain Binding too.
    let (src, _) = ask(&c, other, 5, false, false);
    assert_eq!(src, other);

    // A client attaches and measures: no NAT on loopback, open filtering.
    let started = Instant::now();
    let alice = net.headless("alice", &[addr.to_string()], &[]);
    let nat = alice.wait_json(Duration::from_secs(20), |v| v["event"] == "nat");
    let took = started.elapsed();
    assert_eq!(nat["mapping"], "none", "{nat}");
    assert_eq!(nat["filtering"], "endpoint_independent", "{nat}");
    assert_eq!(nat["udp_blocked"], false);
    assert_eq!(nat["server"], addr.to_string());
    assert_eq!(nat["other"], other.to_string());
    assert_eq!(nat["reason"], "login");
    let public: SocketAddr = nat["public"].as_str().unwrap().parse().unwrap();
    assert_eq!(public.ip(), addr.ip());
    assert!(nat["duration_ms"].as_u64().unwrap() < 2_000, "{nat}");
    println!("nat event after {took:?}: {nat}");
}

#[test]
fn unanswered_client_reports_supernode_unreachable() {
    let _turn = scenario!();
    let net = Network::start();
    net.account("bob", false);
    // Nothing listens here: no attach, no STUN answer.
    let dead = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let started = Instant::now();
    let bob = net.headless("bob", &[dead.to_string()], &[]);
    let nat = bob.wait_json(Duration::from_secs(20), |v| v["event"] == "nat");
    let took = started.elapsed();
    // Nothing answered, over UDP or TCP: the supernode may just be down,
    // so not "UDP blocked" (issue 13.12).
    assert_eq!(nat["udp_blocked"], false, "{nat}");
    assert_eq!(nat["unreachable"], true, "{nat}");
    assert_eq!(nat["mapping"], "unknown");
    assert!(nat["public"].is_null());
    // 1.5 s waiting for an attachment, then 2 s of retransmissions.
    let d = nat["duration_ms"].as_u64().unwrap();
    assert!((2_000..3_000).contains(&d), "{nat}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    println!("unreachable reported after {took:?}: {nat}");
}
