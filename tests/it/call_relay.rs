//! A call through the supernode's TURN relay: alice and bob run with
//! `[nat] relay_only` (they offer relayed candidates only, as if no direct
//! path could work), so the peer link and then the media go through the
//! relay. alice plays a 1 kHz tone; bob records it at its frequency, and
//! the stats say the path is relayed, through the supernode's relay.

use crate::common::calls::*;
use crate::common::media::{dominant_hz, goertzel_share, heard};
use std::time::Duration;

#[test]
fn a_call_through_the_supernode_relay() {
    let _turn = scenario!();
    let net = CallNet::start_with_relay(&["alice", "bob"]);
    let relay_only = "[nat]\nrelay_only = true\n";
    let bob_wav = net.path("bob.wav");
    let bob = net.client(
        "bob",
        &format!("{relay_only}[audio]\ninput = \"null\"\n"),
        &["--auto-answer", "--record", bob_wav.to_str().unwrap()],
    );
    let mut alice = net.client(
        "alice",
        &format!("{relay_only}[audio]\noutput = \"null\"\n"),
        &[
            "--call",
            "bob",
            "--play",
            "tone:1000",
            "--hangup-after",
            "4",
        ],
    );
    state(&alice, "active");
    state(&bob, "active");
    for p in [&alice, &bob] {
        let s = p.wait_json(T, |v| v["event"] == "call_stats" && !v["rtt_ms"].is_null());
        assert_eq!(s["path"], "relayed", "{s}");
        // Relayed through the supernode (its TURN port is its overlay port).
        assert!(s["relay"].is_string(), "{s}");
        assert!(s["packets_received"].as_u64().unwrap() > 0, "{s}");
    }
    assert_eq!(ended(&bob)["reason"], "hung_up");
    bob.wait_json(T, |v| v["event"] == "call_stats" && v["final"] == true);
    assert_eq!(net.exit_code(&mut alice, Duration::from_secs(10)), 0);

    let s = heard(&bob_wav);
    assert!(s.len() >= 48_000 * 2, "{} samples", s.len());
    assert_tone("bob.wav", &s, 1000.0, 1.0);
    let steady = &s[9_600..9_600 + 48_000];
    assert!(goertzel_share(steady, 1000.0) > 0.8);
    assert_eq!(dominant_hz(steady, 900, 1100), 1000);
}
