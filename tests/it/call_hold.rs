//! Hold silences the call both ways and resume brings the audio back.
//! alice (1 kHz) calls bob (600 Hz, auto-answer), both recording. After
//! two stats reports alice says `hold`: bob is told (`call_remote`
//! on_hold), both recordings go silent and alice's sent packet count
//! stops growing. After two more reports she says `resume`, bob is told,
//! and each side hears the other's tone again.

use crate::common::calls::*;
use crate::common::media::{dominant_hz, sound_runs};
use crate::common::procs::Proc;

const MS: usize = 48;

fn stats(p: &Proc) -> serde_json::Value {
    p.wait_json(T, |v| v["event"] == "call_stats")
}

/// Packets sent as counted by two consecutive reports, after skipping the
/// report that may straddle the last command.
fn packets_sent_over_a_report(p: &Proc) -> (u64, u64) {
    stats(p);
    let sent = |v: serde_json::Value| v["packets_sent"].as_u64().unwrap();
    (sent(stats(p)), sent(stats(p)))
}

/// The recording's runs, with short dropouts (a concealed packet on a
/// loaded machine) merged into the sound around them and a trailing
/// silence dropped.
fn long_runs(path: &std::path::Path) -> Vec<usize> {
    let r = sound_runs(&natter::media::audio::read_wav(path).unwrap(), 1001);
    let mut out: Vec<usize> = Vec::new();
    let mut join = false;
    for (k, len) in r.iter().copied().enumerate() {
        let silent = k % 2 == 1;
        if silent && k + 1 == r.len() {
            break;
        }
        if join || (silent && len < 300) {
            *out.last_mut().expect("starts with sound") += len;
            join = silent;
        } else {
            out.push(len);
        }
    }
    out
}

#[test]
fn hold_silences_both_ways_and_resume_restores_audio() {
    let _turn = scenario!();
    let net = CallNet::start(&["alice", "bob"]);
    let (alice_wav, bob_wav) = (net.path("alice.wav"), net.path("bob.wav"));
    let bob = net.client(
        "bob",
        "[audio]\ninput = \"tone:600\"\n",
        &["--auto-answer", "--record", bob_wav.to_str().unwrap()],
    );
    let mut alice = net.client(
        "alice",
        "[call]\nringback = false\n",
        &[
            "--call",
            "bob",
            "--play",
            "tone:1000",
            "--record",
            alice_wav.to_str().unwrap(),
        ],
    );
    state(&alice, "active");
    state(&bob, "active");
    stats(&alice);
    stats(&alice);

    alice.say("hold");
    let r = bob.wait_json(T, |v| v["event"] == "call_remote");
    assert_eq!(r["on_hold"], true, "{r}");
    let (sa, sb) = packets_sent_over_a_report(&alice);
    assert!(sb - sa <= 5, "held: {sa} then {sb} packets sent");

    alice.say("resume");
    let r = bob.wait_json(T, |v| v["event"] == "call_remote");
    assert_eq!(r["on_hold"], false, "{r}");
    let (sc, sd) = packets_sent_over_a_report(&alice);
    assert!(sd - sc >= 30, "resumed: {sc} then {sd} packets sent");
    alice.say("hangup");
    ended(&alice);
    ended(&bob);
    assert_eq!(
        net.exit_code(&mut alice, std::time::Duration::from_secs(10)),
        0
    );

    for (path, hz) in [(&bob_wav, 1000), (&alice_wav, 600)] {
        let r = long_runs(path);
        eprintln!("{}: runs {r:?}", path.display());
        assert_eq!(r.len(), 3, "tone, held silence, tone: {r:?}");
        assert!(r[0] >= 1_500 && r[2] >= 1_500, "{r:?}");
        assert!(r[1] >= 1_500, "silent while held: {r:?}");
        let s = natter::media::audio::read_wav(path).unwrap();
        let start = s.iter().position(|x| x.unsigned_abs() > 1_000).unwrap();
        let before = &s[start + 200 * MS..start + 1_200 * MS];
        let after_at = start + (r[0] + r[1] + 200) * MS;
        let after = &s[after_at..after_at + 1_000 * MS];
        assert_eq!(dominant_hz(before, hz - 100, hz + 100), hz);
        assert_eq!(dominant_hz(after, hz - 100, hz + 100), hz);
    }
}
