//! Group chat between five real headless clients on loopback (issue 16):
//! alice founds a group with four contacts; dave goes offline while 20
//! messages are sent, and is removed after the first 8 and re-added
//! after 16. Every member shows every message meant for them exactly
//! once and in per-sender order (dave: the 8 before his removal and the
//! 4 after his return, caught up when he comes back); every member ends
//! with the same member list; and dave's sender keys, read from his
//! `groups.db`, open none of the messages sent while he was out.

use crate::common::procs::{Network, Proc};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
const NAMES: [&str; 5] = ["alice", "bob", "carol", "dave", "erin"];

/// Read `p`'s JSON events into `log` until `done(log)` holds.
fn pump(p: &Proc, log: &mut Vec<Value>, within: Duration, done: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + within;
    while !done(log) {
        let left = deadline.saturating_duration_since(Instant::now());
        match p.lines.recv_timeout(left) {
            Ok(l) => {
                if let Ok(v) = serde_json::from_str::<Value>(&l) {
                    log.push(v);
                }
            }
            Err(_) => panic!(
                "{}: not there within {within:?}; events:\n{}\nlog tail:\n{}",
                p.name,
                log.iter()
                    .rev()
                    .take(40)
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join("\n"),
                log_tail(p)
            ),
        }
    }
}

/// Read `p`'s events for `quiet` more.
fn linger(p: &Proc, log: &mut Vec<Value>, quiet: Duration) {
    let until = Instant::now() + quiet;
    while let Ok(l) = p
        .lines
        .recv_timeout(until.saturating_duration_since(Instant::now()))
    {
        if let Ok(v) = serde_json::from_str::<Value>(&l) {
            log.push(v);
        }
    }
}

fn group_messages(log: &[Value]) -> Vec<Value> {
    log.iter()
        .filter(|v| v["event"] == "group_message")
        .cloned()
        .collect()
}

/// Whether a `change` event from `log[from..]` shows exactly `members`.
fn has_members(log: &[Value], from: usize, members: &[&str], change: &str) -> bool {
    log[from.min(log.len())..].iter().any(|v| {
        v["event"] == "group_change"
            && v["change"] == change
            && v["members"].as_array().is_some_and(|m| {
                m.iter()
                    .map(|x| x.as_str().unwrap_or(""))
                    .eq(members.iter().copied())
            })
    })
}

fn log_tail(p: &Proc) -> String {
    let log = std::fs::read_to_string(&p.log).unwrap_or_default();
    let v: Vec<&str> = log.lines().rev().take(30).collect();
    v.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Each message once, and per sender in increasing seq.
fn exactly_once_in_order(who: &str, msgs: &[Value]) -> BTreeMap<String, Vec<u64>> {
    let mut per: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in msgs {
        per.entry(m["from"].as_str().unwrap().to_owned())
            .or_default()
            .push(m["seq"].as_u64().unwrap());
    }
    for (from, seqs) in &per {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{who}: messages from {from} out of order or twice: {seqs:?}"
        );
    }
    per
}

#[test]
fn five_members_one_offline_removed_and_readded() {
    let _turn = scenario!();
    let net = Network::start();
    let (_supernodes, all) = net.two_supernodes(&NAMES);
    let mut p: Vec<Proc> = NAMES.iter().map(|n| net.headless(n, &all, &[])).collect();
    for x in &p {
        x.wait_json(T, |v| v["event"] == "published");
    }
    // alice's contacts: the invitations come from her.
    for i in 1..5 {
        p[0].say(&format!("add {} hi", NAMES[i]));
        p[i].wait_json(T, |v| v["event"] == "contact_request");
        p[i].say("accept alice");
        p[i].wait_json(T, |v| v["event"] == "contact_added" && v["user"] == "alice");
    }
    for name in &NAMES[1..] {
        p[0].wait_json(T, |v| v["event"] == "contact_added" && v["user"] == *name);
    }

    let mut logs: Vec<Vec<Value>> = vec![Vec::new(); 5];
    p[0].say("group create five bob carol dave erin");
    pump(&p[0], &mut logs[0], T, |l| {
        l.iter()
            .any(|v| v["event"] == "group_change" && v["change"] == "created")
    });
    let gid = logs[0].iter().find(|v| v["change"] == "created").unwrap()["group"]
        .as_str()
        .unwrap()
        .to_owned();
    for (i, x) in p.iter().enumerate() {
        pump(x, &mut logs[i], T, |l| {
            l.iter().any(|v| {
                v["event"] == "group_change"
                    && v["group"] == gid.as_str()
                    && v["name"] == "five"
                    && v["members"].as_array().is_some_and(|m| m.len() == 5)
            })
        });
    }

    // dave goes offline; 20 messages, 4 senders, 5 rounds.
    p[3].quit(T);
    logs[3].clear();
    let senders = [0usize, 1, 2, 4];
    let without_dave = ["alice", "bob", "carol", "erin"];
    // Each sender has sent its message (shown as outgoing) before the
    // next membership change: a command still unread on its stdin when
    // the change arrives over the network would go to the new member list.
    let send_round = |p: &mut [Proc], logs: &mut [Vec<Value>], round: usize| {
        for &s in &senders {
            p[s].say(&format!("group msg five {} says {round}", NAMES[s]));
        }
        for &s in &senders {
            let text = format!("{} says {round}", NAMES[s]);
            pump(&p[s], &mut logs[s], T, |l| {
                l.iter().any(|v| {
                    v["event"] == "group_message" && v["outgoing"] == true && v["text"] == *text
                })
            });
        }
    };
    send_round(&mut p, &mut logs, 0);
    send_round(&mut p, &mut logs, 1);
    let marks: Vec<usize> = logs.iter().map(Vec::len).collect();
    p[0].say("group remove five dave");
    for &i in &senders {
        let m = marks[i];
        pump(&p[i], &mut logs[i], T, |l| {
            has_members(l, m, &without_dave, "removed")
        });
    }
    send_round(&mut p, &mut logs, 2);
    send_round(&mut p, &mut logs, 3);
    let marks: Vec<usize> = logs.iter().map(Vec::len).collect();
    p[0].say(&format!("group invite {gid} dave"));
    for &i in &senders {
        let m = marks[i];
        pump(&p[i], &mut logs[i], T, |l| {
            has_members(l, m, &NAMES, "added")
        });
    }
    send_round(&mut p, &mut logs, 4);

    // Everyone but dave: all 20, their own 5 included.
    for &i in &senders {
        let within = Duration::from_secs(60);
        pump(&p[i], &mut logs[i], within, |l| {
            group_messages(l).len() >= 20
        });
        linger(&p[i], &mut logs[i], Duration::from_secs(2));
        let got = group_messages(&logs[i]);
        let per = exactly_once_in_order(NAMES[i], &got);
        assert_eq!(got.len(), 20, "{}: {got:?}", NAMES[i]);
        for s in senders {
            assert_eq!(
                per[NAMES[s]],
                [1, 2, 3, 4, 5],
                "{} from {}",
                NAMES[i],
                NAMES[s]
            );
        }
    }

    // dave comes back and catches up: rounds 0, 1 and 4 only.
    let started = Instant::now();
    p[3] = net.headless("dave", &all, &[]);
    pump(&p[3], &mut logs[3], Duration::from_secs(90), |l| {
        group_messages(l).len() >= 12
    });
    let caught_up = started.elapsed();
    linger(&p[3], &mut logs[3], Duration::from_secs(3));
    let got = group_messages(&logs[3]);
    let per = exactly_once_in_order("dave", &got);
    assert_eq!(got.len(), 12, "dave: {got:?}");
    for s in senders {
        assert_eq!(per[NAMES[s]], [1, 2, 5], "dave from {}", NAMES[s]);
    }
    assert!(
        got.iter().all(|m| {
            let t = m["text"].as_str().unwrap();
            !t.ends_with(" 2") && !t.ends_with(" 3")
        }),
        "{got:?}"
    );
    eprintln!("dave caught up 12 messages in {caught_up:?} after his restart");

    // The same member list everywhere, and the histories agree.
    for (i, x) in p.iter_mut().enumerate() {
        x.say("groups");
        let g = x.wait_json(T, |v| v["event"] == "groups");
        let list = &g["groups"][0];
        assert_eq!(list["id"], gid.as_str(), "{g}");
        let members: Vec<&str> = list["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        assert_eq!(members, NAMES, "{}", NAMES[i]);
        x.say("group history five 100");
        let h = x.wait_json(T, |v| v["event"] == "group_history");
        let n = h["messages"].as_array().unwrap().len();
        assert_eq!(n, if i == 3 { 12 } else { 20 }, "{}: {h}", NAMES[i]);
    }
    for x in &mut p {
        x.quit(T);
    }

    // dave's keys (everything his groups.db holds) against the sealed
    // messages in the senders' own histories.
    let g: [u8; 16] = natter::wire::hex_decode(&gid).unwrap();
    let dave = natter::group::GroupStore::open(&net.data("dave").join("groups.db")).unwrap();
    let keys = dave.keys(&g).unwrap();
    assert!(!keys.is_empty());
    let (mut opened, mut refused) = (0, 0);
    for s in senders {
        let store = natter::group::GroupStore::open(&net.data(NAMES[s]).join("groups.db")).unwrap();
        let rows = store.sealed(&g, Some(NAMES[s])).unwrap();
        assert_eq!(rows.len(), 5, "{}", NAMES[s]);
        for row in rows {
            let opens = keys.iter().any(|(_, _, k)| {
                natter::group::open_message(k, &g, NAMES[s], row.key_id, row.seq, &row.ct).is_some()
            });
            if (3..=4).contains(&row.seq) {
                assert!(!opens, "dave's keys open {} #{}", NAMES[s], row.seq);
                refused += 1;
            } else {
                assert!(opens, "dave's keys should open {} #{}", NAMES[s], row.seq);
                opened += 1;
            }
        }
    }
    assert_eq!((opened, refused), (12, 8));
}
