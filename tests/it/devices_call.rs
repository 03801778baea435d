//! One account on two devices, calls (issue 17): bob calls alice, whose
//! desk and laptop (each attached through its own supernode) both ring;
//! the laptop answers, the desk stops ringing within a second and says
//! where the call went ("answered on alice-laptop"), audio flows between
//! bob and the laptop alone (each sends its own tone; bob hears the
//! laptop's, never the desk's), and bob's hang-up ends it on the laptop.

use crate::common::calls::{T, assert_tone, ended, state};
use crate::common::media::{dominant_hz, heard};
use crate::common::procs::{Network, Proc};
use std::time::{Duration, Instant};

/// The events `p` prints within `window`.
fn events(p: &Proc, window: Duration) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + window;
    let mut got = Vec::new();
    while let Ok(l) = p
        .lines
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&l) {
            got.push(v);
        }
    }
    got
}

/// Once all three are published, bob asks alice and both of her devices
/// accept.
fn contacts(desk: &mut Proc, laptop: &mut Proc, bob: &mut Proc) {
    for p in [&*desk, &*laptop, &*bob] {
        p.wait_json(T, |v| v["event"] == "published");
    }
    bob.say("add alice hi, it's bob");
    for p in [desk, laptop] {
        p.wait_json(T, |v| v["event"] == "contact_request");
        p.say("accept bob");
        p.wait_json(T, |v| v["event"] == "contact_added" && v["user"] == "bob");
    }
    bob.wait_json(T, |v| v["event"] == "contact_added" && v["user"] == "alice");
}

#[test]
fn a_call_rings_every_device_and_the_first_answer_takes_it() {
    let _turn = scenario!();
    let net = Network::start();
    let (_supernodes, all) = net.two_supernodes(&["alice", "bob"]);
    net.login_device("alice", "alice-laptop");
    // Tones tell the devices apart; no ring tones in the recordings.
    let config = |name: &str, hz: u32| {
        let toml = format!(
            "\n[audio]\ninput = \"tone:{hz}\"\noutput = \"null\"\n[call]\nringback = false\nringtone = false\n"
        );
        net.config_with_overlay(&format!("{name}.toml"), &toml)
    };
    let (laptop_wav, bob_wav) = (
        net.dir.path().join("laptop.wav"),
        net.dir.path().join("bob.wav"),
    );
    let mut desk = net.headless_with("alice", &config("alice", 400), &all[..1], &[]);
    let mut laptop = net.headless_with(
        "alice-laptop",
        &config("alice-laptop", 600),
        &all[1..],
        &["--record", laptop_wav.to_str().unwrap()],
    );
    let mut bob = net.headless_with(
        "bob",
        &config("bob", 1000),
        &all,
        &["--record", bob_wav.to_str().unwrap()],
    );
    // Contacts, as people who call each other are.
    contacts(&mut desk, &mut laptop, &mut bob);

    bob.say("call alice");
    let d = state(&bob, "dialing");
    // Both devices ring, for the one call.
    for p in [&desk, &laptop] {
        let inc = state(p, "incoming");
        assert_eq!(inc["peer"], "bob", "{}", p.name);
        assert_eq!(inc["call"], d["call"], "{}", p.name);
    }
    state(&bob, "ringing");

    // The laptop answers: the desk stops ringing within a second.
    let answered = Instant::now();
    laptop.say("answer");
    let e = ended(&desk);
    let took = answered.elapsed();
    assert_eq!(e["reason"], "answered_elsewhere", "{e}");
    assert_eq!(e["device"], "alice-laptop", "{e}");
    assert_eq!(e["message"], "answered on alice-laptop", "{e}");
    assert!(
        took < Duration::from_secs(1),
        "the desk rang on for {took:?}"
    );
    eprintln!(
        "the desk stopped ringing {} ms after the answer",
        took.as_millis()
    );
    let c = state(&bob, "connecting");
    assert_eq!(c["role"], "caller");
    state(&bob, "active");
    state(&laptop, "active");
    // Media flows between bob and the laptop.
    let s = bob.wait_json(T, |v| {
        v["event"] == "call_stats" && v["packets_received"].as_u64().unwrap_or(0) > 50
    });
    assert_eq!(s["path"], "direct", "{s}");
    // The desk is not in the call: no media, no state after its end.
    for v in events(&desk, Duration::from_secs(4)) {
        assert!(
            v["event"] != "call_stats" && v["event"] != "call_state",
            "the desk: {v}"
        );
    }

    bob.say("hangup");
    let e = ended(&laptop);
    assert_eq!(e["reason"], "hung_up", "{e}");
    assert_eq!(e["message"], "the other side hung up");
    assert_eq!(ended(&bob)["reason"], "hung_up");
    // The recordings are complete with the final stats.
    let f = bob.wait_json(T, |v| v["event"] == "call_stats" && v["final"] == true);
    assert!(f["packets_received"].as_u64().unwrap() > 150, "{f}");
    laptop.wait_json(T, |v| v["event"] == "call_stats" && v["final"] == true);
    // The call history of the desk does not count a missed call.
    desk.say("calls");
    let h = desk.wait_json(T, |v| v["event"] == "call_history");
    let first = &h["calls"][0];
    assert_eq!(first["reason"], "answered on alice-laptop", "{h}");
    assert_eq!(first["missed"], false, "{h}");

    // bob heard the laptop's 600 Hz (not the desk's 400), the laptop
    // bob's 1 kHz.
    let b = heard(&bob_wav);
    assert_tone("bob", &b, 600.0, 1.5);
    assert_eq!(dominant_hz(&b[9_600..9_600 + 72_000], 300, 700), 600);
    assert_tone("alice-laptop", &heard(&laptop_wav), 1000.0, 1.5);

    for p in [&mut desk, &mut laptop, &mut bob] {
        p.quit(T);
    }
}

/// The same between strangers whose devices bob has never looked up: the
/// connectivity checks start with the invitation, to one of alice's
/// devices (which holds bob's offer unanswered: he is no contact); the
/// desk answers, and the link is made again to it.
#[test]
fn a_stranger_calls_and_the_other_device_answers() {
    let _turn = scenario!();
    let net = Network::start();
    let (_supernodes, all) = net.two_supernodes(&["alice", "bob"]);
    net.login_device("alice", "alice-laptop");
    let config = |name: &str, hz: u32| {
        let toml = format!(
            "\n[audio]\ninput = \"tone:{hz}\"\noutput = \"null\"\n[call]\nringback = false\nringtone = false\n"
        );
        net.config_with_overlay(&format!("{name}.toml"), &toml)
    };
    let mut desk = net.headless_with("alice", &config("alice", 400), &all[..1], &[]);
    let mut laptop =
        net.headless_with("alice-laptop", &config("alice-laptop", 600), &all[1..], &[]);
    let mut bob = net.headless_with("bob", &config("bob", 1000), &all, &[]);
    for p in [&desk, &laptop, &bob] {
        p.wait_json(T, |v| v["event"] == "published");
    }
    // Both devices' records at every directory owner (the owners repair
    // each other every 5 s): bob's lookup for the invitation finds both.
    std::thread::sleep(Duration::from_secs(6));
    bob.say("call alice");
    for p in [&desk, &laptop] {
        state(p, "incoming");
    }
    // Let the checks to the device bob guessed get under way.
    std::thread::sleep(Duration::from_millis(500));
    let answered = Instant::now();
    desk.say("answer");
    let e = ended(&laptop);
    assert!(
        answered.elapsed() < Duration::from_secs(1),
        "{:?}",
        answered.elapsed()
    );
    assert_eq!(e["reason"], "answered_elsewhere", "{e}");
    assert_eq!(e["message"], "answered on alice", "{e}");
    state(&bob, "active");
    state(&desk, "active");
    let s = bob.wait_json(T, |v| {
        v["event"] == "call_stats" && v["packets_received"].as_u64().unwrap_or(0) > 50
    });
    assert_eq!(s["path"], "direct", "{s}");
    for v in events(&laptop, Duration::from_secs(2)) {
        assert!(
            v["event"] != "call_stats" && v["event"] != "call_state",
            "the laptop: {v}"
        );
    }
    let log = std::fs::read_to_string(&bob.log).unwrap_or_default();
    eprintln!(
        "bob connected again after the answer: {}",
        log.contains("connecting again")
    );
    desk.say("hangup");
    assert_eq!(ended(&bob)["message"], "the other side hung up");
    for p in [&mut desk, &mut laptop, &mut bob] {
        p.quit(T);
    }
}

/// Declining on one device leaves the other ringing; the caller hanging
/// up stops it.
#[test]
fn one_device_declines_the_other_rings_on_until_the_caller_gives_up() {
    let _turn = scenario!();
    let net = Network::start();
    let (_supernodes, all) = net.two_supernodes(&["alice", "bob"]);
    net.login_device("alice", "alice-laptop");
    let audio = "\n[audio]\ninput = \"null\"\noutput = \"null\"\n";
    let cfg = |name: &str| net.config_with_overlay(&format!("{name}.toml"), audio);
    let mut desk = net.headless_with("alice", &cfg("alice"), &all[..1], &[]);
    let mut laptop = net.headless_with("alice-laptop", &cfg("alice-laptop"), &all[1..], &[]);
    let mut bob = net.headless_with("bob", &cfg("bob"), &all, &[]);
    for p in [&desk, &laptop, &bob] {
        p.wait_json(T, |v| v["event"] == "published");
    }
    // bob knows both devices (he looked alice up), as a contact would.
    std::thread::sleep(Duration::from_secs(6));
    bob.say("lookup alice");
    bob.wait_json(T, |v| v["event"] == "lookup");
    bob.say("call alice");
    for p in [&desk, &laptop] {
        state(p, "incoming");
    }
    state(&bob, "ringing");
    desk.say("decline");
    assert_eq!(ended(&desk)["reason"], "declined");
    // The laptop and bob ring on.
    for p in [&laptop, &bob] {
        for v in events(p, Duration::from_millis(1500)) {
            assert!(v["state"] != "ended", "{}: {v}", p.name);
        }
    }
    bob.say("hangup");
    let e = ended(&laptop);
    assert_eq!(e["reason"], "cancelled", "{e}");
    assert_eq!(ended(&bob)["reason"], "cancelled");
    for p in [&mut desk, &mut laptop, &mut bob] {
        p.quit(T);
    }
}

/// A call moves between one's devices (issue 17): alice on her desk calls
/// bob; her laptop hears of the call and takes it (`take`); bob's node
/// takes the new leg (it is alice's, from another of her devices), moves
/// the media to it as soon as it has audio and ends the desk's leg, which
/// says where the call went ("moved to alice-laptop"). Bob's recording of
/// alice (the desk's 400 Hz, then the laptop's 600 Hz) is one file with
/// no silence over 1 s.
#[test]
fn a_call_moves_from_the_desk_to_the_laptop() {
    let _turn = scenario!();
    let net = Network::start();
    let (_supernodes, all) = net.two_supernodes(&["alice", "bob"]);
    net.login_device("alice", "alice-laptop");
    let config = |name: &str, hz: u32| {
        let toml = format!(
            "\n[audio]\ninput = \"tone:{hz}\"\noutput = \"null\"\n[call]\nringback = false\nringtone = false\n"
        );
        net.config_with_overlay(&format!("{name}.toml"), &toml)
    };
    let bob_wav = net.dir.path().join("bob.wav");
    let mut desk = net.headless_with("alice", &config("alice", 400), &all[..1], &[]);
    let mut laptop =
        net.headless_with("alice-laptop", &config("alice-laptop", 600), &all[1..], &[]);
    let mut bob = net.headless_with(
        "bob",
        &config("bob", 1000),
        &all,
        &["--record", bob_wav.to_str().unwrap()],
    );
    // Contacts, as people who call each other are.
    contacts(&mut desk, &mut laptop, &mut bob);

    // Nothing to take yet.
    laptop.say("take");
    // (The desk's accept may have reached the laptop first, which then
    // had no request left to accept: that error is not the one.)
    let e = laptop.wait_json(T, |v| v["event"] == "error" && v["command"] == "take");
    assert_eq!(e["error"], "no call on your other devices to take", "{e}");

    desk.say("call bob");
    let first = state(&desk, "dialing")["call"].clone();
    state(&bob, "incoming");
    bob.say("answer");
    state(&desk, "active");
    state(&bob, "active");
    // The laptop hears of the desk's call.
    let el = laptop.wait_json(T, |v| v["event"] == "call_elsewhere");
    assert_eq!(el["on"], true, "{el}");
    assert_eq!(el["peer"], "bob", "{el}");
    assert_eq!(el["device"], "alice", "{el}");
    assert_eq!(el["call"], first, "{el}");
    bob.wait_json(T, |v| {
        v["event"] == "call_stats" && v["packets_received"].as_u64().unwrap_or(0) > 100
    });

    // The laptop takes the call.
    let took = Instant::now();
    laptop.say("take");
    let d = state(&laptop, "dialing");
    assert_eq!(d["peer"], "bob", "{d}");
    let second = d["call"].clone();
    assert_ne!(second, first);
    // The desk's leg ends; the laptop's word that the call is there now
    // may come first.
    let (mut e, mut el) = (None, None);
    let mut moved = Duration::ZERO;
    while e.is_none() || el.is_none() {
        let v = desk.wait_json(T, |v| {
            (v["event"] == "call_state" && v["state"] == "ended")
                || (v["event"] == "call_elsewhere" && v["on"] == true)
        });
        if v["event"] == "call_state" {
            moved = took.elapsed();
            e = Some(v);
        } else {
            el = Some(v);
        }
    }
    let (e, el) = (e.unwrap(), el.unwrap());
    assert_eq!(el["call"], second, "{el}");
    assert_eq!(el["device"], "alice-laptop", "{el}");
    assert_eq!(e["reason"], "moved", "{e}");
    assert_eq!(e["device"], "alice-laptop", "{e}");
    assert_eq!(e["message"], "moved to alice-laptop", "{e}");
    assert_eq!(e["call"], first, "{e}");
    state(&laptop, "active");
    // Bob: the new leg, then the old one's end (moved to the laptop).
    let c = state(&bob, "connecting");
    assert_eq!(c["call"], second, "{c}");
    assert_eq!(c["peer"], "alice", "{c}");
    let e = ended(&bob);
    assert_eq!(e["call"], first, "{e}");
    assert_eq!(e["reason"], "moved", "{e}");
    eprintln!("the desk's leg ended {} ms after `take`", moved.as_millis());
    let s = bob.wait_json(T, |v| {
        v["event"] == "call_stats"
            && v["call"] == second
            && v["packets_received"].as_u64().unwrap_or(0) > 150
    });
    assert_eq!(s["path"], "direct", "{s}");

    bob.say("hangup");
    let e = ended(&laptop);
    assert_eq!(e["reason"], "hung_up", "{e}");
    assert_eq!(e["call"], second, "{e}");
    bob.wait_json(T, |v| {
        v["event"] == "call_stats" && v["final"] == true && v["call"] == second
    });

    // One recording: the desk's tone, then the laptop's, with no
    // silence over 1 s between them (the trailing one, after the
    // hang-up, aside).
    let b = heard(&bob_wav);
    let runs = crate::common::media::sound_runs(&b, 500);
    let inner = &runs[..runs.len() - usize::from(runs.len().is_multiple_of(2))];
    let longest = inner.iter().skip(1).step_by(2).max().copied().unwrap_or(0);
    eprintln!(
        "bob's recording: sound and silence runs (ms) {runs:?}; longest silence {longest} ms"
    );
    assert!(longest <= 1_000, "a silence of {longest} ms: {runs:?}");
    assert_eq!(dominant_hz(&b[9_600..9_600 + 48_000], 300, 700), 400);
    let tail = b.len() - 48_000 * 2;
    assert_eq!(dominant_hz(&b[tail..tail + 48_000], 300, 700), 600);

    for p in [&mut desk, &mut laptop, &mut bob] {
        p.quit(T);
    }
}
