//! A headless call with the default config (`[audio] input` and `output`
//! are `default`) on a machine with no sound card: as the TUI does, each
//! side falls back to the tone generator and the null device, says so with
//! a `warning` event (`reason: no_sound_card`), and the call connects,
//! carries audio both ways and ends as hung up, not as a media failure.

use crate::common::calls::*;
use std::time::Duration;

#[test]
fn headless_call_with_default_devices_connects_without_a_sound_card() {
    let _turn = scenario!();
    let no_card = !std::path::Path::new("/dev/snd").exists();
    let net = CallNet::start(&["alice", "bob"]);
    // The warning comes at startup, before the client is online.
    let start = |name: &str, args: &[&str]| {
        let cfg = net.net.config_with_overlay(&format!("{name}.toml"), "");
        let p = net.net.headless_with(name, &cfg, &net.boot, args);
        if no_card {
            let w = p.wait_json(T, |v| v["event"] == "warning");
            assert_eq!(w["reason"], "no_sound_card", "{w}");
            assert_eq!(w["input"], "tone:440", "{w}");
            assert_eq!(w["output"], "null", "{w}");
            assert!(
                w["message"].as_str().unwrap().contains("no sound card"),
                "{w}"
            );
        }
        p.wait_json(T, |v| v["event"] == "published");
        p
    };
    let bob = start("bob", &["--auto-answer"]);
    let mut alice = start("alice", &["--call", "bob", "--hangup-after", "2"]);
    state(&alice, "active");
    state(&bob, "active");
    // Audio both ways: the tone generator is heard by the other side.
    let s = alice.wait_json(T, |v| {
        v["event"] == "call_stats" && v["packets_received"].as_u64() > Some(20)
    });
    assert!(s["packets_sent"].as_u64().unwrap() > 20, "{s}");
    let e = ended(&alice);
    assert_eq!(e["reason"], "hung_up", "{e}");
    let e = ended(&bob);
    assert_eq!(e["reason"], "hung_up", "{e}");
    assert_eq!(net.exit_code(&mut alice, Duration::from_secs(10)), 0);
}
