//! Voice processing switched on in `[audio]` for a call between two
//! headless processes (tone and file devices, which leave it off by
//! default): each side's `call_stats` says echo cancellation, noise
//! suppression and auto gain are on, the echo canceller reports its
//! measures, the tone still gets through, and the CPU each process spends
//! during the call is printed (the per-call cost with everything on).

use crate::common::calls::*;
use std::time::Duration;

#[test]
fn processing_switched_on_runs_in_a_call_and_says_so() {
    let _turn = scenario!();
    let net = CallNet::start(&["alice", "bob"]);
    let on = "[audio]\ninput = \"tone:600\"\noutput = \"null\"\necho_cancellation = true\nnoise_suppression = true\nauto_gain = true\n";
    let off = "[audio]\ninput = \"tone:1000\"\n";
    let bob_wav = net.path("bob.wav");
    let bob = net.client(
        "bob",
        off,
        &["--auto-answer", "--record", bob_wav.to_str().unwrap()],
    );
    let mut alice = net.client("alice", on, &["--call", "bob", "--hangup-after", "6"]);
    state(&alice, "active");
    let (t0, cpu0) = (std::time::Instant::now(), cpu_and_rss(&alice).0);
    let s = alice.wait_json(T, |v| {
        v["event"] == "call_stats" && v["packets_sent"].as_u64() > Some(100)
    });
    let p = &s["audio_processing"];
    for k in ["echo_cancellation", "noise_suppression", "auto_gain"] {
        assert_eq!(p[k], true, "{s}");
    }
    assert!(p["erle_db"].is_number(), "the canceller measures: {s}");
    assert!(s["mos"].as_f64().unwrap() > 4.0, "{s}");
    assert_eq!(s["quality_bars"], 5, "{s}");
    // Bob's side keeps the default: off with a tone generator.
    let b = bob.wait_json(T, |v| v["event"] == "call_stats");
    assert_eq!(b["audio_processing"]["echo_cancellation"], false, "{b}");
    let cpu1 = cpu_and_rss(&alice).0;
    eprintln!(
        "alice (everything on) during the call: {:.1}% of a core",
        (cpu1 - cpu0) as f64 / 10.0 / t0.elapsed().as_secs_f64()
    );
    assert_eq!(ended(&alice)["reason"], "hung_up");
    bob.wait_json(T, |v| v["event"] == "call_stats" && v["final"] == true);
    assert_eq!(net.exit_code(&mut alice, Duration::from_secs(10)), 0);
    // The 600 Hz tone came through noise suppression and gain control.
    let heard = crate::common::media::heard(&bob_wav);
    assert_tone("bob.wav", &heard, 600.0, 3.0);
}
