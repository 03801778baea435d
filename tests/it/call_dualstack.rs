//! Calls over each address family on loopback, end to end with real
//! processes: an IPv6-only network (authority, supernode and clients on
//! `[::1]`), a dual-stack one (everything on "any", clients attached to
//! one supernode over IPv6 and another over IPv4, so they hold host
//! candidates of both families) and an IPv4-only one. Each call carries
//! a tone both ways, checked in both recordings, over a direct path of
//! the family RFC 8421 prefers: IPv6 whenever both sides have it.

use crate::common::calls::*;
use crate::common::media::heard;
use crate::common::procs::Network;
use std::sync::{Mutex, PoisonError};

/// One test of this module at a time: a real-time call beside another
/// test's calls or argon2 logins on two cores conceals late audio ticks
/// and fails the tone check.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Alice calls bob with a 1 kHz tone, bob answers with 600 Hz; both
/// record; `toml` goes to both configs, `alice_args` to alice's command
/// line. Returns alice's first stats with an RTT (path, remote address).
fn call(net: &CallNet, toml: &str, alice_args: &[&str]) -> serde_json::Value {
    let tone = net.path("1khz.wav");
    tone_wav(&tone, 1000.0, 20.0);
    let (alice_wav, bob_wav) = (net.path("alice.wav"), net.path("bob.wav"));
    let bob = net.client(
        "bob",
        &format!("{toml}[audio]\ninput = \"tone:600\"\n"),
        &["--auto-answer", "--record", bob_wav.to_str().unwrap()],
    );
    let mut alice = net.client(
        "alice",
        toml,
        &[
            alice_args,
            &[
                "--call",
                "bob",
                "--play",
                tone.to_str().unwrap(),
                "--record",
                alice_wav.to_str().unwrap(),
                "--hangup-after",
                "4",
            ],
        ]
        .concat(),
    );
    let t0 = std::time::Instant::now();
    state(&alice, "active");
    state(&bob, "active");
    eprintln!("dial to active: {} ms", t0.elapsed().as_millis());
    let s = alice.wait_json(T, |v| v["event"] == "call_stats" && !v["rtt_ms"].is_null());
    assert_eq!(ended(&alice)["reason"], "hung_up");
    assert_eq!(ended(&bob)["reason"], "hung_up");
    let f = bob.wait_json(T, |v| v["event"] == "call_stats" && v["final"] == true);
    assert!(f["packets_received"].as_u64().unwrap() > 100, "{f}");
    assert_eq!(net.exit_code(&mut alice, T), 0);
    assert_tone("bob.wav", &heard(&bob_wav), 1000.0, 1.5);
    assert_tone("alice.wav", &heard(&alice_wav), 600.0, 1.5);
    s
}

/// [`call`] with nothing added; the call must be direct. Returns the
/// remote address.
fn tone_call(net: &CallNet, alice_args: &[&str]) -> String {
    let s = call(net, "", alice_args);
    assert_eq!(s["path"], "direct", "{s}");
    s["remote"].as_str().unwrap().to_owned()
}

#[test]
fn ipv6_only_pair_calls_over_ipv6() {
    let _turn = scenario!();
    let _one = one_at_a_time();
    let net = Network::start_listening("[::1]:0", "[::1]:0", "[::1]:0", "");
    let (net, _rest) = CallNet::start_in(net, &["sn1"], &["alice", "bob"], |a| a.to_vec());
    assert!(net.boot[0].starts_with("[::1]:"), "{:?}", net.boot);
    let remote = tone_call(&net, &[]);
    assert!(remote.starts_with("[::1]:"), "{remote}");
}

#[test]
fn dual_stack_pair_prefers_ipv6() {
    let _turn = scenario!();
    let _one = one_at_a_time();
    let net = Network::start_listening("[::]:0", "[::]:0", "[::]:0", "");
    // sn1 reached over IPv6, sn2 over IPv4: the same sockets take both.
    let (net, _rest) = CallNet::start_in(net, &["sn1", "sn2"], &["alice", "bob"], |a| {
        vec![
            a[0].replace("127.0.0.1", "[::1]"),
            a[1].replace("[::1]", "127.0.0.1"),
        ]
    });
    let remote = tone_call(&net, &[]);
    assert!(remote.starts_with("[::1]:"), "{remote}");
}

/// A dual-stack supernode advertised at its IPv4 address and reached by
/// both clients over IPv6: their records name it by its IPv6 address, and
/// it must know that address for its own (else it forwards the call's
/// envelopes to itself, they time out and are stored, and bob never
/// rings).
#[test]
fn a_supernode_knows_its_ipv6_address_from_the_clients_records() {
    let _turn = scenario!();
    let _one = one_at_a_time();
    let net = Network::start_listening("[::]:0", "[::]:0", "[::]:0", "");
    let (net, _rest) = CallNet::start_in(net, &["sn1"], &["alice", "bob"], |a| {
        vec![a[0].replace("127.0.0.1", "[::1]")]
    });
    assert!(net.boot[0].starts_with("[::1]:"), "{:?}", net.boot);
    let remote = tone_call(&net, &[]);
    assert!(remote.starts_with("[::1]:"), "{remote}");
}

/// A dual-stack callee and an IPv4-only caller meet over IPv4.
#[test]
fn ipv4_only_caller_reaches_a_dual_stack_callee() {
    let _turn = scenario!();
    let _one = one_at_a_time();
    let net = Network::start_listening("[::]:0", "[::]:0", "[::]:0", "");
    let (net, _rest) = CallNet::start_in(net, &["sn1", "sn2"], &["alice", "bob"], |a| {
        vec![
            a[0].replace("[::1]", "127.0.0.1"),
            a[1].replace("[::1]", "127.0.0.1"),
        ]
    });
    let remote = tone_call(&net, &["--listen", "127.0.0.1:0"]);
    assert!(remote.starts_with("127.0.0.1:"), "{remote}");
}

#[test]
fn ipv4_only_pair_still_calls() {
    let _turn = scenario!();
    let _one = one_at_a_time();
    let net = Network::start();
    let (net, _rest) = CallNet::start_in(net, &["sn1"], &["alice", "bob"], |a| a.to_vec());
    let remote = tone_call(&net, &[]);
    assert!(remote.starts_with("127.0.0.1:"), "{remote}");
}

/// IPv6 only and relayed: the supernode's TURN relay hands out IPv6
/// relayed addresses (REQUESTED-ADDRESS-FAMILY), and the call's media
/// go through them.
#[test]
fn ipv6_only_pair_calls_through_an_ipv6_relay() {
    let _turn = scenario!();
    let _one = one_at_a_time();
    let net = Network::start_listening("[::1]:0", "[::1]:0", "[::1]:0", "");
    net.accounts(&[("sn1", true), ("alice", false), ("bob", false)]);
    let cfg = net.config_with_overlay(
        "sn1.toml",
        "[relay]\nsecret = \"v6-secret\"\nports = \"0\"\nallow_loopback_peers = true\n",
    );
    let (sn, addr) = net.supernode_with("sn1", &cfg, &[]);
    let net = CallNet {
        net,
        sn,
        boot: vec![addr],
    };
    let s = call(&net, "[nat]\nrelay_only = true\n", &[]);
    assert_eq!(s["path"], "relayed", "{s}");
    assert!(s["remote"].as_str().unwrap().starts_with("[::1]:"), "{s}");
}
