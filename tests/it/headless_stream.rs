//! The `--headless --json` event stream, as README.md documents it, stays
//! the same: a scripted session of real processes on loopback (an
//! authority, a supernode with a TURN relay, alice, bob and carol) that
//! exercises login, attachment, lookups (online, offline, not found),
//! presence, the NAT report, relay credentials, contacts, chat, history,
//! raw envelopes, a peer link, a short tone call with mute and hold (and
//! their confirmations), `help`, errors for a bad line and a call verb
//! with no call, and the stop. Every stream starts with `hello` (schema
//! 2), and every time in it is RFC 3339. Each client's stream is normalised
//! (addresses, ids, times, numbers and booleans become placeholders of
//! their type; stable words stay) and compared with the fixture recorded
//! from the headless mode before it moved onto the node API
//! (`tests/it/fixtures/headless/*.jsonl`): the same event kinds, each event
//! with a field set and field values the fixture has for its kind.
//! `NATTER_RECORD_FIXTURES=1` rewrites the fixtures from a run.

use crate::common::calls::{CallNet, T};
use crate::common::procs::{self, Proc};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

/// A client whose every JSON line is kept while the script waits.
struct Rec {
    p: Proc,
    seen: Vec<Value>,
}

impl Rec {
    fn wait(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(l) = self.p.lines.recv_timeout(left) else {
                let log = std::fs::read_to_string(&self.p.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!(
                    "{}: no matching event; seen:\n{}\nlog tail:\n{}",
                    self.p.name,
                    self.seen
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join("\n"),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            };
            let v: Value = serde_json::from_str(&l)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {l}", self.p.name));
            self.seen.push(v.clone());
            if pred(&v) {
                return v;
            }
        }
    }

    fn event(&mut self, kind: &str) -> Value {
        self.wait(|v| v["event"] == kind)
    }

    /// Keep the lines until the process exits (it was told to quit).
    fn finish(&mut self) {
        let deadline = Instant::now() + T;
        while let Ok(l) = self
            .p
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(serde_json::from_str(&l).unwrap());
        }
        let status = self.p.child.wait().unwrap();
        assert!(status.success(), "{} exited with {status}", self.p.name);
    }
}

fn client(net: &CallNet, name: &str, toml: &str, args: &[&str]) -> Rec {
    let cfg = net
        .net
        .config_with_overlay(&format!("{name}.toml"), &format!("\n{toml}"));
    let mut r = Rec {
        p: net.net.headless_with(name, &cfg, &net.boot, args),
        seen: Vec::new(),
    };
    r.event("published");
    r
}

#[test]
fn headless_json_stream_matches_the_recorded_fixture() {
    let _turn = scenario!();
    let net = CallNet::start_with_relay(&["alice", "bob", "carol"]);
    let audio = "[audio]\ninput = \"tone:600\"\noutput = \"null\"\n";

    // carol comes online and leaves: her record says offline.
    let mut carol = client(&net, "carol", audio, &[]);
    carol.p.say("quit");
    carol.finish();

    // bob shows his status in the directory: lookups see him online.
    let mut bob = client(&net, "bob", audio, &["--auto-answer", "--public-presence"]);
    let mut alice = client(&net, "alice", audio, &["--watch", "bob"]);

    for (user, result) in [
        ("bob", "online"),
        ("nobody", "not_found"),
        ("carol", "offline"),
    ] {
        alice.p.say(&format!("lookup {user}"));
        let v = alice.wait(|v| v["event"] == "lookup" && v["user"] == user);
        assert_eq!(v["result"], result, "{v}");
        // Bug 9: an online user has no last seen (it was "now"); carol's
        // is when she left, RFC 3339, not after the lookup.
        match result {
            "online" => assert!(v.get("last_seen").is_none(), "{v}"),
            "offline" => {
                let t = humantime::parse_rfc3339(v["last_seen"].as_str().unwrap()).unwrap();
                assert!(t <= std::time::SystemTime::now(), "{v}");
            }
            _ => {}
        }
    }
    alice.p.say("bogus words");
    let e = alice.event("error");
    assert_eq!(e["command"], "bogus", "{e}");
    assert_eq!(e["reason"], "unknown_command", "{e}");
    alice.p.say("hangup");
    let e = alice.event("error");
    assert_eq!(e["command"], "hangup", "{e}");
    assert_eq!(e["reason"], "no_call", "{e}");
    // A command the node could not carry out names the verb typed.
    alice.p.say("file cancel 0123456789abcdef0123456789abcdef");
    let e = alice.wait(|v| v["event"] == "error" && v["command"] == "file");
    assert_eq!(e["reason"], "failed", "{e}");
    alice.p.say("help");
    let h = alice.event("help");
    let verbs: Vec<&str> = (h["commands"].as_array().unwrap().iter())
        .filter_map(|c| c["command"].as_str())
        .collect();
    for v in [
        "lookup",
        "refuse",
        "decline",
        "mute",
        "send-file",
        "conf",
        "help",
    ] {
        assert!(verbs.contains(&v), "{v}: {h}");
    }
    alice.p.say("status away gone fishing");
    alice.wait(|v| v["event"] == "status" && v["status"] == "away");
    // bob's record changes: alice watches it.
    bob.p.say("status dnd");
    bob.event("status");
    alice.wait(|v| v["event"] == "presence" && v["status"] == "dnd");

    alice.p.say("add bob hello bob");
    alice.event("contact_request_sent");
    bob.event("contact_request");
    bob.p.say("accept alice");
    bob.event("contact_added");
    alice.event("contact_added");
    alice.wait(|v| v["event"] == "contact_presence" && v["user"] == "bob");

    alice.p.say("msg bob hi there");
    alice.event("message_queued");
    bob.wait(|v| v["event"] == "message" && v["text"] == "hi there");
    alice.event("message_acked");
    alice.p.say("history bob");
    let h = alice.event("history");
    assert_eq!(h["messages"].as_array().map(Vec::len), Some(1), "{h}");
    alice.p.say("contacts");
    alice.event("contacts");

    alice.p.say("envelope bob ping");
    bob.wait(|v| v["event"] == "envelope" && v["payload"] == "ping");
    alice.wait(|v| v["event"] == "envelope_result" && v["result"] == "delivered");

    alice.p.say("relay");
    alice.event("relay_credentials");
    alice.p.say("connect bob");
    alice.wait(|v| v["event"] == "peer_connected" && v["user"] == "bob");
    bob.wait(|v| v["event"] == "peer_connected" && v["user"] == "alice");

    alice.p.say("call bob");
    alice.wait(|v| v["event"] == "call_state" && v["state"] == "dialing");
    bob.wait(|v| v["event"] == "call_state" && v["state"] == "incoming");
    alice.wait(|v| v["event"] == "call_state" && v["state"] == "active");
    alice.wait(|v| v["event"] == "call_stats" && !v["rtt_ms"].is_null());
    alice.p.say("mute on");
    // Confirmed once the node applied it, and told to the other side.
    alice.wait(|v| v["event"] == "call_muted" && v["muted"] == true);
    bob.wait(|v| v["event"] == "call_remote" && v["muted"] == true);
    alice.p.say("hold on");
    alice.wait(|v| v["event"] == "call_held" && v["held"] == true);
    bob.wait(|v| v["event"] == "call_remote" && v["on_hold"] == true);
    alice.p.say("hangup");
    alice.wait(|v| v["event"] == "call_state" && v["state"] == "ended");
    let logged = alice.event("call_logged");
    assert!(logged["duration_ms"].as_u64().is_some(), "{logged}");
    alice.wait(|v| v["event"] == "call_stats" && v["final"] == true);
    bob.wait(|v| v["event"] == "call_stats" && v["final"] == true);

    // bob leaves: alice, who watches him, sees when he was last seen.
    bob.p.say("quit");
    bob.finish();
    let p = alice.wait(|v| v["event"] == "presence" && v["online"] == false);
    let t = humantime::parse_rfc3339(p["last_seen"].as_str().unwrap_or_default());
    assert!(t.is_ok_and(|t| t <= std::time::SystemTime::now()), "{p}");
    alice.p.say("quit");
    alice.finish();

    for (name, rec) in [("alice", &alice), ("bob", &bob), ("carol", &carol)] {
        let hello = &rec.seen[0];
        assert_eq!(hello["event"], "hello", "{name}: {hello}");
        assert_eq!(hello["schema"], 2, "{name}: {hello}");
        assert_eq!(hello["version"], env!("CARGO_PKG_VERSION"), "{name}");
        for v in &rec.seen {
            assert_times(v, &|t| humantime::parse_rfc3339(t).is_ok());
        }
        check(name, &rec.seen);
    }
}

/// Whether a field holds a time (its name says so).
fn time_key(k: &str) -> bool {
    k.ends_with("_at") || ["time", "until", "expires", "last_seen"].contains(&k)
}

/// Every time in `v` is a string `ok` takes (RFC 3339; `<time>` in a
/// fixture) or null, never a number; durations are in milliseconds
/// (`_ms`), never seconds.
fn assert_times(v: &Value, ok: &dyn Fn(&str) -> bool) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                assert!(!k.ends_with("_s"), "{k} is not in ms: {v}");
                if time_key(k) {
                    assert!(
                        x.is_null() || x.as_str().is_some_and(ok),
                        "{k} is not an RFC 3339 time: {v}"
                    );
                }
                assert_times(x, ok);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| assert_times(x, ok)),
        _ => {}
    }
}

#[test]
fn every_recorded_time_is_rfc3339() {
    let _turn = scenario!();
    let mut n = 0;
    for name in ["alice", "bob", "carol"] {
        let text = std::fs::read_to_string(fixture(name)).unwrap();
        for l in text.lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            // The normalised fixture says `<time>` for what parsed as one.
            assert_times(&v, &|t| t == "<time>");
            n += l.matches("<time>").count();
        }
    }
    assert!(n >= 10, "{n} times in the fixtures");
    // The check fails on a number or a non-RFC 3339 text.
    for bad in [
        json!({"expires": 1700000000}),
        json!({"x": [{"sent_at": "yesterday"}]}),
        json!({"duration_s": 3}),
    ] {
        let r = std::panic::catch_unwind(|| {
            assert_times(&bad, &|t| humantime::parse_rfc3339(t).is_ok())
        });
        assert!(r.is_err(), "{bad}");
    }
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures/headless")
        .join(format!("{name}.jsonl"))
}

/// Events that may or may not happen in a run (timing), so a fixture
/// kind that is not required.
const OPTIONAL: &[&str] = &[
    "detached",
    "redirected",
    "path_changed",
    "peer_failed",
    "message_status",
    "ice_offer",
    "ice_answer",
    "contact_presence",
    "presence",
    "relay_credentials",
    "nat",
];

fn check(name: &str, seen: &[Value]) {
    let got: BTreeSet<String> = seen.iter().map(|v| normalise(v).to_string()).collect();
    if std::env::var_os("NATTER_RECORD_FIXTURES").is_some() {
        let path = fixture(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let text: String = got.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, text).unwrap();
        return;
    }
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let want: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Per kind: the field sets, and per field the values, the fixture has.
    let mut keys: BTreeMap<String, BTreeSet<Vec<String>>> = BTreeMap::new();
    let mut values: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for v in &want {
        let kind = v["event"].as_str().unwrap().to_owned();
        let o = v.as_object().unwrap();
        keys.entry(kind.clone())
            .or_default()
            .insert(o.keys().cloned().collect());
        for (k, x) in o {
            values
                .entry((kind.clone(), k.clone()))
                .or_default()
                .insert(x.to_string());
        }
    }
    let mut kinds = BTreeSet::new();
    for l in &got {
        let v: Value = serde_json::from_str(l).unwrap();
        let kind = v["event"].as_str().unwrap_or_default().to_owned();
        kinds.insert(kind.clone());
        let Some(sets) = keys.get(&kind) else {
            panic!("{name}: event kind {kind:?} is not in the fixture: {l}");
        };
        let o = v.as_object().unwrap();
        let ks: Vec<String> = o.keys().cloned().collect();
        assert!(
            sets.contains(&ks),
            "{name}: {kind} with fields {ks:?}; the fixture has {sets:?}"
        );
        for (k, x) in o {
            let allowed = &values[&(kind.clone(), k.clone())];
            assert!(
                allowed.contains(&x.to_string()),
                "{name}: {kind}.{k} = {x}; the fixture has {allowed:?}"
            );
        }
    }
    for kind in keys.keys() {
        assert!(
            kinds.contains(kind) || OPTIONAL.contains(&kind.as_str()),
            "{name}: no {kind} event; the fixture has one"
        );
    }
}

/// Fields whose text varies from run to run (credentials, free text with
/// numbers in it, error wording, the help text).
const FREE_TEXT: &[&str] = &[
    "password", "username", "error", "notes", "detail", "usage", "does",
];

/// Replace what varies between runs by a placeholder of its type.
fn normalise(v: &Value) -> Value {
    fn text(s: &str) -> Value {
        let hex = s.len() >= 8 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if s.parse::<std::net::SocketAddr>().is_ok() {
            json!("<addr>")
        } else if hex {
            json!("<hex>")
        } else if humantime::parse_rfc3339(s).is_ok() {
            json!("<time>")
        } else if s.bytes().any(|b| b.is_ascii_digit()) {
            json!("<text>")
        } else {
            json!(s)
        }
    }
    fn walk(k: Option<&str>, v: &Value) -> Value {
        match v {
            Value::String(_) if k.is_some_and(|k| FREE_TEXT.contains(&k)) => json!("<text>"),
            Value::String(s) => text(s),
            Value::Bool(_) => json!("<bool>"),
            Value::Number(n) if n.is_f64() => json!("<float>"),
            Value::Number(_) => json!("<int>"),
            Value::Null => Value::Null,
            // The distinct shapes of the elements, in order.
            Value::Array(a) => {
                let mut shapes: Vec<Value> = Vec::new();
                for x in a {
                    let x = walk(k, x);
                    if !shapes.contains(&x) {
                        shapes.push(x);
                    }
                }
                Value::Array(shapes)
            }
            Value::Object(o) => {
                let m: Map<String, Value> = o
                    .iter()
                    .map(|(k, x)| (k.clone(), walk(Some(k), x)))
                    .collect();
                Value::Object(m)
            }
        }
    }
    walk(None, v)
}

#[test]
fn normalising_keeps_words_and_types() {
    let _turn = scenario!();
    let v = json!({"event": "attached", "supernode": "127.0.0.1:4000", "primary": true,
        "id": "00ff00ff00ff00ff", "until": "2026-12-02T10:00:00Z", "seq": 3, "loss": 0.5,
        "relays": ["127.0.0.1:1", "127.0.0.1:2"], "error": "no such user", "rtt_ms": null});
    assert_eq!(
        normalise(&v),
        json!({"event": "attached", "supernode": "<addr>", "primary": "<bool>", "id": "<hex>",
            "until": "<time>", "seq": "<int>", "loss": "<float>", "relays": ["<addr>"],
            "error": "<text>", "rtt_ms": null})
    );
}

/// Logging in through the runtime: without a certificate the headless
/// mode says how to get one; with `--password-stdin` it logs in (a new
/// device of an existing account); without `--json` it prints lines, and
/// `--lookup` exits after the answer.
#[test]
fn headless_logs_in_and_prints_lines() {
    let _turn = scenario!();
    let net = procs::Network::start();
    net.accounts(&[("sn1", true), ("dave", false)]);
    let (_sn, addr) = net.supernode("sn1", &[]);
    let run = |dir: &str, args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = procs::natter()
            .arg("--config")
            .arg(&net.client_config)
            .arg("--data-dir")
            .arg(net.data(dir))
            .args(["--headless", "--bootstrap", &addr])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        // A run refused at its arguments may exit before reading.
        if let Err(e) = input.write_all(stdin.as_bytes()) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
        drop(input);
        child.wait_with_output().unwrap()
    };

    let out = run("nobody", &["--json"], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no valid certificate on this device: run `natter login USER` first"),
        "{err}"
    );

    let out = run(
        "dave-phone",
        &["--json", "--user", "dave", "--password-stdin"],
        "wrong-password\n",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid username or password"), "{err}");

    let out = run(
        "dave-phone",
        &[
            "--json",
            "--user",
            "dave",
            "--password-stdin",
            "--lookup",
            "nobody",
        ],
        "dave-password\n",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // The first event is the hello, then the login (after the audio
    // warning of a machine with no sound card).
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect();
    assert_eq!(events[0]["event"], "hello", "{text}");
    assert_eq!(events[0]["schema"], 2, "{text}");
    let first = (events.iter().skip(1))
        .find(|v| v["event"] != "warning")
        .unwrap();
    assert_eq!(first["event"], "login", "{text}");
    assert_eq!(first["user"], "dave");
    assert!(text.contains(r#""result":"not_found""#), "{text}");

    // The lines after the password are commands, as without it (typed
    // before login has finished, they wait for it).
    let mut cmd = procs::natter();
    cmd.arg("--config")
        .arg(&net.client_config)
        .arg("--data-dir")
        .arg(net.data("dave-laptop"))
        .args(["--headless", "--json", "--bootstrap", &addr])
        .args(["--user", "dave", "--password-stdin"]);
    let log = net.dir.path().join("dave-laptop.log");
    let mut laptop = procs::Proc::spawn("dave-laptop", cmd, &log);
    laptop.say("dave-password");
    laptop.say("lookup nobody");
    laptop.wait_for(T, |l| l.contains(r#""result":"not_found""#));
    laptop.say("quit");
    let deadline = std::time::Instant::now() + T;
    let status = loop {
        if let Some(status) = laptop.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "quit was not read");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success());

    // --password-stdin says it needs --user.
    let out = run("dave-tablet", &["--password-stdin"], "dave-password\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--user"), "{err}");

    // The certificate is kept: the next run needs no password. Text
    // mode says the schema first too.
    let out = run("dave-phone", &["--lookup", "nobody"], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let hello = stdout.lines().next().unwrap_or_default();
    assert!(
        hello.starts_with("natter ") && hello.contains("(event schema 2)"),
        "{stdout}"
    );
    // (Without a sound card a warning comes first; the supernode list may
    // change at any point, the backup attaching after the lookup.)
    let text = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("warning: no sound card") && !l.starts_with("supernodes: "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("logged in as dave until "), "{text}");
    assert!(text.contains("attached to "), "{text}");
    assert!(text.trim_end().ends_with("nobody was not found"), "{text}");
}
