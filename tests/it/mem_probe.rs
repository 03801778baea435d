//! Scratch: RSS of a client over repeated calls and messages.
use crate::common::calls::*;
use std::time::Duration;

#[test]
#[ignore = "scratch memory probe"]
fn mem_probe() {
    let _turn = scenario!();
    let net = CallNet::start(&["alice", "bob"]);
    let mut bob = net.client("bob", NULL_AUDIO, &["--auto-answer"]);
    let mut alice = net.client("alice", NULL_AUDIO, &[]);
    let n: usize = std::env::var("PROBE_CALLS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let calls = std::env::var("PROBE_NOCALL").is_err();
    for i in 0..n {
        if calls {
            alice.say("call bob");
            state(&alice, "active");
            std::thread::sleep(Duration::from_secs(2));
            alice.say("hangup");
            ended(&alice);
            ended(&bob);
        }
        for k in 0..20 {
            alice.say(&format!("msg bob hello {i} {k} some text to store"));
            bob.say(&format!("msg alice hi {i} {k} some text back"));
        }
        std::thread::sleep(Duration::from_millis(500));
        eprintln!(
            "probe {i}: alice {} KiB {}, bob {} KiB {}",
            cpu_and_rss(&alice).1,
            anon(&alice),
            cpu_and_rss(&bob).1,
            anon(&bob)
        );
    }
}

fn dump(p: &crate::common::procs::Proc) {
    let pid = p.child.id();
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut head = String::new();
    for l in s.lines() {
        if l.contains('-') && !l.starts_with(|c: char| c.is_ascii_uppercase()) {
            head = l.to_owned();
        } else if let Some(r) = l.strip_prefix("Rss:") {
            let kb: u64 = r.split_whitespace().next().unwrap().parse().unwrap();
            if kb >= 256 {
                eprintln!("  {kb:6} KiB  {head}");
            }
        }
    }
}

fn anon(p: &crate::common::procs::Proc) -> String {
    let pid = p.child.id();
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .filter(|l| l.starts_with("RssAnon") || l.starts_with("RssFile"))
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(" ")
}
