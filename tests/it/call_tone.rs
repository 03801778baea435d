//! A call between two headless clients on loopback, end to end: alice
//! runs `--call bob --play 1khz.wav --record alice.wav --hangup-after 4`;
//! bob auto-answers with a 600 Hz tone device and records. The invitation
//! travels in sealed envelopes through the supernode, ICE opens a direct
//! peer link, the media keys come from it, and each side hears the other's
//! tone at its frequency. Stats report an RTT and the direct path; alice
//! hangs up, bob hears why, and alice exits with status 0.

use crate::common::calls::*;
use crate::common::media::{dominant_hz, goertzel_share, heard};
use std::time::Duration;

fn check_tone(path: &std::path::Path, hz: u32) {
    let s = heard(path);
    assert_tone(&path.display().to_string(), &s, hz as f64, 1.5);
    let steady = &s[9_600..9_600 + 72_000];
    assert!(
        goertzel_share(steady, hz as f64) > 0.8,
        "{}",
        path.display()
    );
    assert_eq!(dominant_hz(steady, hz - 100, hz + 100), hz);
}

#[test]
fn tone_call_between_two_headless_clients() {
    let _turn = scenario!();
    let net = CallNet::start(&["alice", "bob"]);
    let tone = net.path("1khz.wav");
    tone_wav(&tone, 1000.0, 20.0);
    let (alice_wav, bob_wav) = (net.path("alice.wav"), net.path("bob.wav"));
    let bob = net.client(
        "bob",
        "[audio]\ninput = \"tone:600\"\n",
        &["--auto-answer", "--record", bob_wav.to_str().unwrap()],
    );
    let mut alice = net.client(
        "alice",
        "",
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
    );

    let t0 = std::time::Instant::now();
    let d = state(&alice, "dialing");
    assert_eq!(d["peer"], "bob");
    let inc = state(&bob, "incoming");
    assert_eq!(inc["peer"], "alice");
    assert_eq!(inc["call"], d["call"], "one call id on both sides");
    let c = state(&alice, "connecting");
    assert_eq!(c["role"], "caller");
    state(&alice, "active");
    // From alice's first line about the call to audio both ways.
    eprintln!("call set up in {} ms", t0.elapsed().as_millis());
    state(&bob, "active");
    let (t_active, cpu0) = (std::time::Instant::now(), cpu_and_rss(&alice).0);

    // Stats every second: an RTT, no loss on loopback, the direct path.
    let s = alice.wait_json(T, |v| v["event"] == "call_stats" && !v["rtt_ms"].is_null());
    assert_eq!(s["path"], "direct", "{s}");
    assert!(s["rtt_ms"].as_u64().unwrap() < 100, "{s}");
    assert_eq!(s["dropped"]["auth_failed"], 0, "{s}");
    // Opus at the configured 32 kbit/s plus packet headers, both ways.
    for k in ["sent_kbps", "received_kbps"] {
        let r = s[k].as_f64().unwrap();
        assert!((20.0..80.0).contains(&r), "{k} {r}: {s}");
    }

    let (cpu1, rss) = cpu_and_rss(&alice);
    let secs = t_active.elapsed().as_secs_f64();
    eprintln!(
        "alice during the call: {:.1}% of a core, {} MiB resident",
        (cpu1 - cpu0) as f64 / 10.0 / secs,
        rss / 1024
    );
    let e = ended(&alice);
    assert_eq!(e["reason"], "hung_up", "{e}");
    assert_eq!(e["message"], "you hung up");
    let e = ended(&bob);
    assert_eq!(e["reason"], "hung_up", "{e}");
    assert_eq!(e["message"], "the other side hung up");
    // Final stats: the recording is complete.
    let f = bob.wait_json(T, |v| v["event"] == "call_stats" && v["final"] == true);
    assert!(f["packets_received"].as_u64().unwrap() > 150, "{f}");
    assert_eq!(net.exit_code(&mut alice, Duration::from_secs(10)), 0);

    check_tone(&bob_wav, 1000);
    check_tone(&alice_wav, 600);
}
