//! Issue 14.9 end to end, over real processes on loopback: a device
//! revoked from another device of the account can no longer renew and a
//! supernode drops it within a minute; `natter passwd` changes the
//! password (the old one fails, the new one works); a disabled account is
//! dropped by a supernode within a minute.

use crate::common::procs::{Network, natter};
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);
/// The bound: refused within a minute.
const MINUTE: Duration = Duration::from_secs(60);

/// Run `natter` with the client config as device `name`; success and
/// what it printed (stdout then stderr).
fn cli(net: &Network, name: &str, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = natter()
        .arg("--config")
        .arg(&net.client_config)
        .arg("--data-dir")
        .arg(net.data(name))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Wait (polling, bounded) until the supernode's log says it detached
/// `user` as revoked or disabled; how long that took from `since`.
fn detached_within(log: &std::path::Path, user: &str, since: Instant) -> Duration {
    let needle = format!("user={user}");
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.contains("client detached: revoked device") && l.contains(&needle))
        {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < MINUTE,
            "{user} was not detached within a minute; log tail:\n{}",
            text.lines().rev().take(30).collect::<Vec<_>>().join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn revoked_device_and_disabled_account_are_refused_within_a_minute_and_passwd_works() {
    let _turn = scenario!();
    let net = Network::start();
    net.accounts(&[("sn1", true), ("alice", false), ("bob", false)]);
    // Alice's second device.
    let (ok, out) = cli(
        &net,
        "phone",
        &["login", "alice", "--password-stdin"],
        "alice-password\n",
    );
    assert!(ok, "{out}");
    let (sn1, a1) = net.supernode("sn1", &[]);
    let sn1_log = sn1.log.clone();
    let alice = net.headless("alice", std::slice::from_ref(&a1), &[]);
    let bob = net.headless("bob", std::slice::from_ref(&a1), &[]);
    alice.wait_json(T, |v| v["event"] == "attached");
    bob.wait_json(T, |v| v["event"] == "attached");

    // The list, from the phone: both devices, the phone marked.
    let (ok, whoami) = cli(&net, "alice", &["whoami"], "");
    assert!(ok, "{whoami}");
    let laptop_key = whoami
        .lines()
        .find_map(|l| l.strip_prefix("device ed25519 key: "))
        .unwrap()
        .trim()
        .to_owned();
    let laptop_id = &laptop_key[..16];
    let (ok, list) = cli(&net, "phone", &["devices"], "");
    assert!(ok, "{list}");
    assert!(list.contains(laptop_id), "{list}");
    assert_eq!(list.matches("(this device)").count(), 1, "{list}");
    assert!(!list.contains("revoked "), "{list}");

    // A wrong password revokes nothing.
    let (ok, out) = cli(
        &net,
        "phone",
        &["devices", "revoke", laptop_id, "--password-stdin"],
        "wrong-password\n",
    );
    assert!(!ok && out.contains("invalid username or password"), "{out}");
    // The right one revokes the laptop.
    let (ok, out) = cli(
        &net,
        "phone",
        &["devices", "revoke", laptop_id, "--password-stdin"],
        "alice-password\n",
    );
    assert!(ok && out.contains("revoked"), "{out}");
    let revoked_at = Instant::now();
    // Its renewal and its password login are refused.
    let (ok, out) = cli(&net, "alice", &["renew"], "");
    assert!(!ok && out.contains("device was revoked"), "{out}");
    let (ok, out) = cli(
        &net,
        "alice",
        &["login", "alice", "--password-stdin"],
        "alice-password\n",
    );
    assert!(!ok && out.contains("device was revoked"), "{out}");
    let (ok, list) = cli(&net, "phone", &["devices"], "");
    assert!(ok && list.contains("revoked "), "{list}");

    // Bob's account is disabled on the authority host.
    let out = natter()
        .arg("--config")
        .arg(&net.authority_config)
        .arg("--data-dir")
        .arg(net.data("authority"))
        .args(["admin", "disable", "bob"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let disabled_at = Instant::now();

    let alice_took = detached_within(&sn1_log, "alice", revoked_at);
    let bob_took = detached_within(&sn1_log, "bob", disabled_at);
    println!(
        "revoked device dropped by the supernode after {:.1} s, disabled account after {:.1} s (bound 60 s)",
        alice_took.as_secs_f64(),
        bob_took.as_secs_f64()
    );
    // And they stay out: the revoked client does not attach again.
    alice.wait_json(T, |v| v["event"] == "detached");

    // passwd from the phone: the old password fails, the new one works.
    let (ok, out) = cli(
        &net,
        "phone",
        &["passwd", "--password-stdin"],
        "alice-password\nalice-new-password\n",
    );
    assert!(ok && out.contains("password changed"), "{out}");
    let (ok, out) = cli(
        &net,
        "tablet",
        &["login", "alice", "--password-stdin"],
        "alice-password\n",
    );
    assert!(!ok && out.contains("invalid username or password"), "{out}");
    let (ok, out) = cli(
        &net,
        "tablet",
        &["login", "alice", "--password-stdin"],
        "alice-new-password\n",
    );
    assert!(ok && out.contains("logged in as alice"), "{out}");
    // A wrong old password changes nothing.
    let (ok, out) = cli(
        &net,
        "phone",
        &["passwd", "--password-stdin"],
        "nope-nope-nope\nthird-password-1\n",
    );
    assert!(!ok, "{out}");
    drop((alice, bob, sn1));
}
