//! Issue 17 from inside a running node, over real processes on loopback:
//! alice runs on two devices; the headless one asks `devices` and sees
//! both (itself marked), is refused a revocation with a wrong password and
//! for a device she does not have, then revokes the other with
//! `revoke-device` (the password on the next line), and the supernode
//! drops that device within a minute (its revocation list poll, as in
//! `revocation.rs`) while the revoking device stays attached.

use crate::common::procs::Network;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);
/// The bound: refused within a minute.
const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn a_headless_device_lists_the_account_devices_and_revokes_one() {
    let _turn = scenario!();
    let net = Network::start();
    net.accounts(&[("sn1", true), ("alice", false)]);
    net.login_device("alice", "phone");
    let (sn1, a1) = net.supernode("sn1", &[]);
    let mut laptop = net.headless("alice", std::slice::from_ref(&a1), &[]);
    let phone = net.headless("phone", std::slice::from_ref(&a1), &[]);
    laptop.wait_json(T, |v| v["event"] == "attached");
    phone.wait_json(T, |v| v["event"] == "attached");

    // Both devices, this one marked.
    laptop.say("devices");
    let list = laptop.wait_json(T, |v| v["event"] == "devices");
    let devices = list["devices"].as_array().unwrap().clone();
    assert_eq!(devices.len(), 2, "{list}");
    assert_eq!(
        devices.iter().filter(|d| d["this_device"] == true).count(),
        1,
        "{list}"
    );
    assert!(devices.iter().all(|d| d["revoked_at"].is_null()), "{list}");
    let other = devices.iter().find(|d| d["this_device"] == false).unwrap();
    let phone_id = other["id"].as_str().unwrap().to_owned();
    assert_eq!(phone_id.len(), 16, "{list}");

    // The password is read from the next line; a wrong one revokes nothing.
    laptop.say(&format!("revoke-device {phone_id}"));
    laptop.wait_json(T, |v| v["event"] == "password_wanted");
    laptop.say("wrong-password");
    let e = laptop.wait_json(T, |v| v["event"] == "error");
    assert_eq!(e["command"], "revoke-device", "{e}");
    assert_eq!(e["reason"], "wrong_password", "{e}");
    // A device the account does not have.
    laptop.say("revoke-device 00000000deadbeef");
    laptop.say("alice-password");
    let e = laptop.wait_json(T, |v| v["event"] == "error");
    assert_eq!(e["reason"], "no_such_device", "{e}");

    // The right one revokes the phone.
    laptop.say(&format!("revoke-device {phone_id}"));
    laptop.say("alice-password");
    let done = laptop.wait_json(T, |v| v["event"] == "device_revoked");
    assert_eq!(done["device"], phone_id.as_str(), "{done}");
    let revoked_at = Instant::now();
    laptop.say("devices");
    let list = laptop.wait_json(T, |v| v["event"] == "devices");
    let phone_row = (list["devices"].as_array().unwrap().iter())
        .find(|d| d["id"] == phone_id.as_str())
        .unwrap()
        .clone();
    assert!(phone_row["revoked_at"].is_string(), "{list}");

    // The supernode drops the phone within a minute.
    phone.wait_json(MINUTE, |v| v["event"] == "detached");
    let took = revoked_at.elapsed();
    assert!(took < MINUTE, "{took:?}");
    let log = std::fs::read_to_string(&sn1.log).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("client detached: revoked device") && l.contains("user=alice")),
        "{log}"
    );
    println!(
        "revoked device dropped by the supernode after {:.1} s (bound 60 s)",
        took.as_secs_f64()
    );
    // The revoking device is still in: it can still ask.
    laptop.say("devices");
    laptop.wait_json(T, |v| v["event"] == "devices");
    laptop.quit(T);
    drop((phone, sn1));
}
