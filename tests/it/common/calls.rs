//! Helpers for the call tests: a network of real processes (authority,
//! a supernode, named clients), per-client audio configs, and tone WAVs.

use crate::common::procs::{self, Network, Proc};
use std::path::PathBuf;
use std::time::Duration;

pub const T: Duration = Duration::from_secs(30);

/// An authority, one supernode and accounts for `users`.
pub struct CallNet {
    pub net: Network,
    /// The supernode, stopped when this is dropped (held, not read).
    #[allow(dead_code)]
    pub sn: Proc,
    pub boot: Vec<String>,
}

impl CallNet {
    pub fn start(users: &[&str]) -> CallNet {
        let net = Network::start();
        net.account("sn1", true);
        for u in users {
            net.account(u, false);
        }
        let (sn, addr) = net.supernode("sn1", &[]);
        CallNet {
            net,
            sn,
            boot: vec![addr],
        }
    }

    /// Like [`CallNet::start`], with a TURN relay on the supernode that
    /// relays between loopback addresses.
    pub fn start_with_relay(users: &[&str]) -> CallNet {
        let net = Network::start();
        net.account("sn1", true);
        for u in users {
            net.account(u, false);
        }
        let cfg = net.config_with_overlay(
            "sn1.toml",
            "[relay]\nsecret = \"call-test-secret\"\nports = \"0\"\nallow_loopback_peers = true\n",
        );
        let mut cmd = procs::natter();
        cmd.arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(net.data("sn1"))
            .args([
                "--log-level",
                "natter=debug",
                "--supernode",
                "--listen",
                "127.0.0.1:0",
            ]);
        let sn = Proc::spawn("sn1", cmd, &net.dir.path().join("sn1.log"));
        let addr = sn.wait_for(T, |l| l.starts_with("listening on "));
        let addr = addr.trim_start_matches("listening on ").to_owned();
        CallNet {
            net,
            sn,
            boot: vec![addr],
        }
    }

    /// A network from [`Network::start_listening`] with supernodes `sns`
    /// (the first bootstraps the others) and accounts for `users`;
    /// clients bootstrap from `boot(advertised addresses)`.
    pub fn start_in(
        net: Network,
        sns: &[&str],
        users: &[&str],
        boot: impl Fn(&[String]) -> Vec<String>,
    ) -> (CallNet, Vec<Proc>) {
        for s in sns {
            net.account(s, true);
        }
        for u in users {
            net.account(u, false);
        }
        let (mut procs, mut addrs) = (Vec::new(), Vec::new());
        for s in sns {
            let (p, a) = net.supernode(s, &addrs[..addrs.len().min(1)]);
            procs.push(p);
            addrs.push(a);
        }
        let first = procs.remove(0);
        let boot = boot(&addrs);
        (
            CallNet {
                net,
                sn: first,
                boot,
            },
            procs,
        )
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.net.dir.path().join(file)
    }

    /// A headless client whose config adds `toml` (e.g. an [audio] or
    /// [call] table), started with `args`, waited for until published.
    pub fn client(&self, name: &str, toml: &str, args: &[&str]) -> Proc {
        let cfg = self
            .net
            .config_with_overlay(&format!("{name}.toml"), &format!("\n{toml}"));
        let p = self.net.headless_with(name, &cfg, &self.boot, args);
        p.wait_json(T, |v| v["event"] == "published");
        p
    }
}

/// Write `secs` of a `hz` sine at 48 kHz to a WAV file.
pub fn tone_wav(path: &std::path::Path, hz: f32, secs: f32) {
    let mut t = natter::media::audio::Tone::new(hz, 0.3);
    let mut v = vec![0i16; (48_000.0 * secs) as usize];
    t.fill(&mut v);
    natter::media::audio::write_wav(path, &v).unwrap();
}

/// Wait for the call state `state` (skipping others); returns the event.
pub fn state(p: &Proc, state: &str) -> serde_json::Value {
    p.wait_json(T, |v| v["event"] == "call_state" && v["state"] == state)
}

/// Wait for the end of a call; returns the event.
pub fn ended(p: &Proc) -> serde_json::Value {
    state(p, "ended")
}

impl CallNet {
    /// The last lines of a process's log (stderr), for failure messages.
    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Wait for the process to exit; returns its status code.
    pub fn exit_code(&self, p: &mut Proc, within: Duration) -> i32 {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(s) = p.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not exit; its log ends:\n{}",
                p.name,
                self.log_tail(&p.name)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Audio devices that need no sound card and carry nothing.
pub const NULL_AUDIO: &str = "[audio]\ninput = \"null\"\noutput = \"null\"\n";

/// Check that `s` (a recording from its first sound on) carries a steady
/// `hz` tone: in at least 90% of its 100 ms windows (after the codec's
/// first 200 ms), or all but two side by side, the zero crossings give
/// `hz` within 15 Hz. Windows, not
/// the whole: on a loaded machine a late audio tick may be concealed,
/// which shifts a whole-file count but leaves the tone intact.
pub fn assert_tone(what: &str, s: &[i16], hz: f64, secs: f64) {
    let n = (48_000.0 * secs) as usize;
    assert!(s.len() >= 9_600 + n, "{what}: only {} samples", s.len());
    let windows: Vec<f64> = s[9_600..9_600 + n]
        .chunks_exact(4_800)
        .map(|w| {
            let c = w.windows(2).filter(|p| p[0] < 0 && p[1] >= 0).count();
            c as f64 * 10.0
        })
        .collect();
    let at_hz = |f: &f64| (f - hz).abs() <= 15.0;
    let good = windows.iter().filter(|f| at_hz(f)).count();
    // One concealed tick that straddles a window boundary spoils two
    // windows side by side: a glitch, not a missing tone.
    let bad: Vec<usize> = (0..windows.len())
        .filter(|&i| !at_hz(&windows[i]))
        .collect();
    let one_glitch = bad.len() <= 2 && bad.windows(2).all(|p| p[1] == p[0] + 1);
    assert!(
        good * 10 >= windows.len() * 9 || one_glitch,
        "{what}: {good} of {} windows at {hz} Hz: {windows:?}",
        windows.len()
    );
}

/// CPU time (user + system, ms) and resident memory (KiB) of a process,
/// from /proc: the per-call cost figures the call tests print.
pub fn cpu_and_rss(p: &Proc) -> (u64, u64) {
    let pid = p.child.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th of them.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    // Linux reports in clock ticks of 10 ms (USER_HZ 100).
    let cpu_ms = (ticks(11) + ticks(12)) * 10;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (cpu_ms, rss)
}
