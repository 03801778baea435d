//! `[metrics] listen` on a supernode and on the authority serves the
//! Prometheus text format: after a login, an attach and a lookup, the
//! scrapes count them, and Prometheus's own `promtool check metrics`
//! accepts both (Debian's prometheus package; scripts/test.sh installs it).

use crate::common::calls::{CallNet, NULL_AUDIO, T, state};
use crate::common::procs::Network;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const METRICS: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// GET /metrics from the address a process printed; the body.
fn scrape(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_owned()
}

/// `promtool check metrics` must pass with nothing to say.
fn promtool(what: &str, body: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "{what}: promtool: {said}\n{body}"
    );
}

/// The value of the sample line that starts with `series` (name and labels).
fn value(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{body}"))
}

fn metrics_addr(line: String) -> String {
    line.trim_start_matches("metrics on http://")
        .trim_end_matches("/metrics")
        .to_owned()
}

#[test]
fn supernode_and_authority_metrics_count_what_happened_and_pass_promtool() {
    let _turn = scenario!();
    let net = Network::start_with(METRICS);
    let wait = Duration::from_secs(20);
    let auth = metrics_addr(
        net.authority
            .wait_for(wait, |l| l.starts_with("metrics on ")),
    );
    net.accounts(&[("sn1", true), ("alice", false)]);
    let config = net.config_with_overlay(
        "sn1.toml",
        &format!("{METRICS}[relay]\nsecret = \"relay-secret\"\n"),
    );
    let (sn1, boot) = net.supernode_with("sn1", &config, &[]);
    let sn = metrics_addr(sn1.wait_for(wait, |l| l.starts_with("metrics on ")));

    let mut alice = net.headless("alice", std::slice::from_ref(&boot), &[]);
    alice.wait_for(wait, |l| l.contains("\"published\""));
    alice.say("lookup sn1");
    alice.wait_for(wait, |l| l.contains("\"lookup\"") && l.contains("\"sn1\""));
    alice.say("lookup nobody");
    alice.wait_for(wait, |l| {
        l.contains("\"lookup\"") && l.contains("\"nobody\"")
    });

    let body = scrape(&sn);
    promtool("supernode", &body);
    assert_eq!(value(&body, "natter_supernode_clients"), 1.0);
    assert!(value(&body, "natter_supernode_records") >= 1.0);
    // Our two lookups, neither finding a user record (sn1 is a
    // supernode, not a user), and perhaps alice's own-device lookup of
    // the history ask (3 s after she is online), which finds her.
    let all = value(&body, "natter_supernode_lookups_total{result=\"all\"}");
    let found = value(&body, "natter_supernode_lookups_total{result=\"found\"}");
    assert!((2.0..=3.0).contains(&all), "{all} lookups");
    assert_eq!(all - found, 2.0, "two lookups find nobody");
    assert_eq!(
        value(&body, "natter_supernode_lookup_duration_seconds_count"),
        all
    );
    assert!(value(&body, "natter_link_handshakes_total{outcome=\"completed\"}") >= 1.0);
    assert!(value(&body, "natter_link_sessions") >= 1.0);
    assert_eq!(
        value(
            &body,
            "natter_dropped_total{component=\"link\",reason=\"decrypt_failed\"}"
        ),
        0.0
    );
    assert_eq!(value(&body, "natter_relay_allocations"), 0.0);
    assert_eq!(
        value(
            &body,
            "natter_dropped_total{component=\"relay\",reason=\"forbidden_peer\"}"
        ),
        0.0
    );

    let body = scrape(&auth);
    promtool("authority", &body);
    // sn1 and alice each logged in once after registering.
    assert_eq!(
        value(&body, "natter_authority_logins_total{outcome=\"ok\"}"),
        2.0
    );
    assert_eq!(
        value(
            &body,
            "natter_authority_registrations_total{outcome=\"ok\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &body,
            "natter_authority_logins_total{outcome=\"wrong_password\"}"
        ),
        0.0
    );
    assert_eq!(value(&body, "natter_metrics_scrapes_total"), 1.0);
}

/// The address a headless client logged (its stdout is the JSON stream).
fn logged_metrics_addr(log: &std::path::Path) -> String {
    let deadline = std::time::Instant::now() + T;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(i) = text.find("metrics on http://") {
            let rest = &text[i + "metrics on http://".len()..];
            return rest[..rest.find("/metrics").unwrap()].to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no metrics address in {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_headless_client_counts_its_calls_by_path_and_end() {
    let _turn = scenario!();
    let net = CallNet::start(&["alice", "bob"]);
    let _bob = net.client("bob", NULL_AUDIO, &["--auto-answer"]);
    let mut alice = net.client(
        "alice",
        &format!("{NULL_AUDIO}{METRICS}[call]\nringback = false\n"),
        &["--call", "bob"],
    );
    let addr = logged_metrics_addr(&net.path("alice.log"));
    state(&alice, "active");
    alice.wait_json(T, |v| v["event"] == "call_stats" && v["path"] == "direct");
    alice.say("hangup");
    state(&alice, "ended");

    let body = scrape(&addr);
    promtool("client", &body);
    assert_eq!(
        value(&body, "natter_client_calls_total{path=\"direct\"}"),
        1.0
    );
    assert_eq!(
        value(&body, "natter_client_calls_total{path=\"relayed\"}"),
        0.0
    );
    assert_eq!(
        value(&body, "natter_client_calls_ended_total{reason=\"hung_up\"}"),
        1.0
    );
    assert!(
        value(&body, "natter_client_nat_detections_total") >= 1.0,
        "{body}"
    );
}
