//! Conferences between real headless processes on loopback: each
//! participant's microphone is a tone device at its own frequency and its
//! loudspeaker a WAV recording. The starter runs `conf start ...`; the
//! others auto-join. Each recording must hold every other participant's
//! tone, within 3 dB of each other, and not its own. Then the mixer is
//! killed with SIGKILL: the recordings of the others show them hearing
//! each other again within 3 s of the silence.

use crate::common::calls::*;
use crate::common::procs::Proc;
use natter::media::audio;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const USERS: [&str; 5] = ["ann", "bob", "cat", "dan", "eve"];
const TONES: [f64; 5] = [440.0, 620.0, 830.0, 1070.0, 1330.0];

/// Power of `hz` in `s` (Goertzel), dB relative to a full-scale sine.
fn power_db(s: &[i16], hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / 48_000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in s {
        let s0 = x as f64 / 32768.0 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let p = (s1 * s1 + s2 * s2 - coeff * s1 * s2).max(1e-12);
    // A full-scale sine over N samples gives p = N^2 / 4.
    10.0 * (p / (s.len() as f64 * s.len() as f64 / 4.0)).log10()
}

struct Party {
    net: CallNet,
    procs: Vec<Proc>,
    wavs: Vec<PathBuf>,
    /// When each one's recording started (its own `joined` event).
    joined_at: Vec<Instant>,
    /// When the starter was told `conf start`.
    started: Instant,
}

/// `n` participants in a conference started by the first.
fn party(n: usize) -> Party {
    let users = &USERS[..n];
    let net = CallNet::start(users);
    let mut procs = Vec::new();
    let mut wavs = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let wav = net.path(&format!("{u}.wav"));
        let toml = format!("[audio]\ninput = \"tone:{}\"\n", TONES[i]);
        let p = net.client(
            u,
            &toml,
            &["--auto-answer", "--record", wav.to_str().unwrap()],
        );
        procs.push(p);
        wavs.push(wav);
    }
    let t0 = Instant::now();
    let others: Vec<&str> = users[1..].to_vec();
    procs[0].say(&format!("conf start {}", others.join(" ")));
    // Each sees itself join (its recording starts), then everyone else.
    let mut joined_at = Vec::new();
    for (i, p) in procs.iter().enumerate() {
        let mut seen = std::collections::BTreeSet::new();
        let mut own = None;
        p.wait_json(T, |v| {
            if v["event"] == "conference" && v["type"] == "joined" {
                let u = v["user"].as_str().unwrap_or_default().to_owned();
                if u == users[i] {
                    own = Some(Instant::now());
                }
                seen.insert(u);
            }
            seen.len() == n
        });
        joined_at.push(own.expect("its own join"));
    }
    eprintln!("{n} participants joined in {} ms", t0.elapsed().as_millis());
    Party {
        net,
        procs,
        wavs,
        joined_at,
        started: t0,
    }
}

impl Party {
    /// Quit everyone (recordings complete) and read the recordings.
    fn finish(mut self, alive: &[usize]) -> Vec<Option<Vec<i16>>> {
        for &i in alive {
            self.procs[i].say("quit");
        }
        for &i in alive {
            let code = self
                .net
                .exit_code(&mut self.procs[i], Duration::from_secs(15));
            assert_eq!(code, 0, "{}", self.net.log_tail(USERS[i]));
        }
        (0..self.procs.len())
            .map(|i| {
                alive
                    .contains(&i)
                    .then(|| audio::read_wav(&self.wavs[i]).unwrap())
            })
            .collect()
    }
}

/// The levels of every tone in `s[from..from + 2 s]`: the mean power of
/// its 100 ms windows (each tone has a whole number of cycles in one), as
/// a listener hears it. One Goertzel over the whole 2 s would also count
/// phase: a single 20 ms frame concealed or dropped by a jitter buffer
/// shifts a tone's phase and took up to 4 dB off its level.
fn levels(s: &[i16], from: usize, n: usize) -> Vec<f64> {
    let w = &s[from..(from + 96_000).min(s.len())];
    TONES[..n]
        .iter()
        .map(|&hz| {
            let p: Vec<f64> = w
                .chunks_exact(4_800)
                .map(|c| 10f64.powf(power_db(c, hz) / 10.0))
                .collect();
            10.0 * (p.iter().sum::<f64>() / p.len().max(1) as f64).log10()
        })
        .collect()
}

/// Each one hears every other within 3 dB of each other, and not itself.
fn check_mix(n: usize, recs: &[Option<Vec<i16>>], from_secs: &[f64]) {
    for (i, rec) in recs.iter().enumerate() {
        let Some(rec) = rec else { continue };
        let from = (from_secs[i] * 48_000.0) as usize;
        assert!(rec.len() > from + 96_000, "{}: short recording", USERS[i]);
        let l = levels(rec, from, n);
        let others: Vec<f64> = (0..n).filter(|&j| j != i).map(|j| l[j]).collect();
        let (lo, hi) = others
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        eprintln!("{} hears (dB) {l:.1?}", USERS[i]);
        if hi - lo > 3.0 || lo <= -30.0 {
            // Where it went wrong: the levels in each 100 ms.
            for k in (from..from + 96_000).step_by(4_800) {
                let w = &rec[k..k + 4_800];
                let l: Vec<f64> = TONES[..n].iter().map(|&hz| power_db(w, hz)).collect();
                eprintln!("  {:5.2} s {l:.1?}", k as f64 / 48_000.0);
            }
        }
        assert!(lo > -30.0, "{}: someone is missing: {l:?}", USERS[i]);
        assert!(
            hi - lo <= 3.0,
            "{}: levels differ by {:.1} dB: {l:?}",
            USERS[i],
            hi - lo
        );
        assert!(
            l[i] < lo - 25.0,
            "{} hears itself at {:.1} dB: {l:?}",
            USERS[i],
            l[i]
        );
    }
}

fn run_mix(n: usize) {
    let p = party(n);
    let all_in = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    let from: Vec<f64> = p
        .joined_at
        .iter()
        .map(|t| (all_in - *t).as_secs_f64() + 1.0)
        .collect();
    let alive: Vec<usize> = (0..n).collect();
    let recs = p.finish(&alive);
    check_mix(n, &recs, &from);
}

#[test]
fn three_party_conference_mix_minus() {
    let _turn = scenario!();
    run_mix(3);
}

#[test]
fn five_party_conference_mix_minus() {
    let _turn = scenario!();
    run_mix(5);
}

/// The first 100 ms window from `from` on in which every tone in `want`
/// is present (within 12 dB of its level before the kill).
fn recovered_at(rec: &[i16], from: usize, want: &[usize], steady: &[f64]) -> Option<usize> {
    (from..rec.len().saturating_sub(4_800))
        .step_by(480)
        .find(|&k| {
            let w = &rec[k..k + 4_800];
            want.iter()
                .all(|&j| power_db(w, TONES[j]) > steady[j] - 12.0)
        })
}

#[test]
fn conference_survives_its_mixer_killed() {
    let _turn = scenario!();
    let n = 4;
    let mut p = party(n);
    let all_in = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    // ann started it and mixes: SIGKILL.
    let killed = Instant::now();
    p.procs[0].kill();
    // The next in the ranking: by measured uplink, then by name.
    let mut next = None;
    for (i, user) in USERS.iter().enumerate().take(n).skip(1) {
        let e = p.procs[i].wait_json(T, |v| {
            v["event"] == "conference" && v["type"] == "mixer" && v["failover"] == true
        });
        eprintln!(
            "{user}: {} mixes after {} ms",
            e["mixer"],
            killed.elapsed().as_millis()
        );
        let m = e["mixer"].as_str().unwrap_or_default().to_owned();
        assert_ne!(m, "ann");
        assert_eq!(
            next.get_or_insert_with(|| m.clone()),
            &m,
            "everyone picks the same next mixer"
        );
    }
    std::thread::sleep(Duration::from_secs(4));
    let alive: Vec<usize> = (1..n).collect();
    let joined_at = p.joined_at.clone();
    let recs = p.finish(&alive);
    let mut worst = 0.0f64;
    for &i in &alive {
        let rec = recs[i].as_ref().unwrap();
        let t_join = joined_at[i];
        let steady_from = ((all_in - t_join).as_secs_f64() + 0.5) * 48_000.0;
        let steady = levels(rec, steady_from as usize, n);
        let kill_at = ((killed - t_join).as_secs_f64() * 48_000.0) as usize;
        let want: Vec<usize> = alive.iter().copied().filter(|&j| j != i).collect();
        // Ann is gone for good from the start of the last stretch without
        // her tone. The silence begins at the first window from there that
        // misses a survivor. (A survivor missing from one window before
        // that is not it: under load a frame is sometimes concealed.)
        let missing =
            |k: usize, j: usize| power_db(&rec[k..k + 4_800], TONES[j]) <= steady[j] - 12.0;
        let windows: Vec<usize> = (kill_at.saturating_sub(24_000)..rec.len() - 4_800)
            .step_by(480)
            .collect();
        let ann_gone = windows
            .iter()
            .rposition(|&k| !missing(k, 0))
            .map_or(Some(0), |last| {
                (last + 1 < windows.len()).then_some(last + 1)
            })
            .unwrap_or_else(|| panic!("{}: still hears ann at the end", USERS[i]));
        let gap = windows[ann_gone..]
            .iter()
            .copied()
            .find(|&k| want.iter().any(|&j| missing(k, j)))
            .unwrap_or(windows[ann_gone]);
        let back = recovered_at(rec, gap, &want, &steady)
            .unwrap_or_else(|| panic!("{}: never heard the others again", USERS[i]));
        let secs = (back - gap) as f64 / 48_000.0;
        eprintln!(
            "{}: heard the others again {secs:.2} s after the silence began",
            USERS[i]
        );
        worst = worst.max(secs);
        // After the recovery: both others, not itself, and not ann.
        let l = levels(rec, back + 9_600, n);
        assert!(l[i] < l[want[0]] - 25.0, "{}: {l:?}", USERS[i]);
        assert!(
            l[0] < l[want[0]] - 25.0,
            "{} still hears ann: {l:?}",
            USERS[i]
        );
    }
    assert!(worst <= 3.0, "recovery took {worst:.2} s");
    eprintln!("mixer failover: others hear each other again within {worst:.2} s");
}

/// An invitation to one already in a conference gets a busy answer: the
/// inviter shows that member busy at once (not after the invitation's
/// minute), and its conference, with nobody else, ends. The conference
/// that ran is in its participants' call history.
#[test]
fn a_busy_member_is_shown_busy_and_conferences_are_logged() {
    let _turn = scenario!();
    let users = ["ann", "bob", "cat"];
    let net = CallNet::start(&users);
    let procs: Vec<Proc> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let toml = format!("[audio]\ninput = \"tone:{}\"\n", TONES[i]);
            net.client(u, &toml, &["--auto-answer"])
        })
        .collect();
    let [mut ann, bob, mut cat] = procs.try_into().ok().unwrap();
    ann.say("conf start bob");
    for p in [&ann, &bob] {
        p.wait_json(T, |v| {
            v["event"] == "conference" && v["type"] == "joined" && v["user"] == "bob"
        });
    }
    let t0 = Instant::now();
    cat.say("conf start bob");
    let busy = cat.wait_json(T, |v| {
        v["event"] == "conference" && v["type"] == "left" && v["user"] == "bob"
    });
    assert_eq!(busy["reason"], "busy", "{busy}");
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    let end = cat.wait_json(T, |v| v["event"] == "conference" && v["type"] == "ended");
    assert_eq!(end["reason"], "alone", "{end}");
    // bob stayed in ann's conference; ann leaves, and it is logged.
    ann.say("conf leave");
    let logged = ann.wait_json(T, |v| v["event"] == "call_logged");
    assert_eq!(logged["conference"], serde_json::json!(["bob"]), "{logged}");
    assert_eq!(logged["direction"], "outgoing", "{logged}");
    let logged = bob.wait_json(T, |v| v["event"] == "call_logged");
    assert_eq!(logged["conference"], serde_json::json!(["ann"]), "{logged}");
    assert_eq!(logged["direction"], "incoming", "{logged}");
    assert!(logged["answered_at"].is_string(), "{logged}");
    ann.say("calls");
    let h = ann.wait_json(T, |v| v["event"] == "call_history");
    assert_eq!(
        h["calls"][0]["conference"],
        serde_json::json!(["bob"]),
        "{h}"
    );
    ann.say("quit");
    cat.say("quit");
}

/// A third person added to a running 1:1 call: the call's peer is in that
/// call, yet the conference replacing it is no busy invitation; all three
/// join.
#[test]
fn a_call_becomes_a_conference_of_three() {
    let _turn = scenario!();
    let users = ["ann", "bob", "cat"];
    let net = CallNet::start(&users);
    let procs: Vec<Proc> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let toml = format!("[audio]\ninput = \"tone:{}\"\n", TONES[i]);
            net.client(u, &toml, &["--auto-answer"])
        })
        .collect();
    let [mut ann, mut bob, mut cat] = procs.try_into().ok().unwrap();
    ann.say("call bob");
    state(&ann, "active");
    ann.say("conf add cat");
    for p in [&ann, &bob, &cat] {
        let mut seen = std::collections::BTreeSet::new();
        p.wait_json(T, |v| {
            assert!(v["reason"] != "busy", "{v}");
            if v["event"] == "conference" && v["type"] == "joined" {
                seen.insert(v["user"].as_str().unwrap_or_default().to_owned());
            }
            seen.len() == 3
        });
    }
    for p in [&mut ann, &mut bob, &mut cat] {
        p.say("quit");
    }
}

/// The first 100 ms window of `rec` in which every tone in `want` is
/// present (above -40 dB), as seconds into the recording.
fn first_heard(rec: &[i16], want: &[usize]) -> Option<f64> {
    (0..rec.len().saturating_sub(4_800))
        .step_by(480)
        .find(|&k| {
            let w = &rec[k..k + 4_800];
            want.iter().all(|&j| power_db(w, TONES[j]) > -40.0)
        })
        .map(|k| (k + 4_800) as f64 / 48_000.0)
}

/// Join time and recovery after the mixer's death, real processes on
/// loopback (not a timed test: `NATTER_CONF_RUNS=5 cargo test --test it
/// conference_join_and_recovery_bench -- --ignored --nocapture`): each run
/// starts a conference of three (`conf start`, the others auto-join),
/// measures from the command until every participant's recording holds
/// both others (the end of the first 100 ms window with them), then
/// SIGKILLs the mixer and measures, in each survivor's recording, from the
/// start of the silence to hearing the other again.
#[test]
#[ignore = "a benchmark: NATTER_CONF_RUNS=5 cargo test --test it conference_join_and_recovery_bench -- --ignored --nocapture"]
fn conference_join_and_recovery_bench() {
    let _turn = scenario!();
    let runs: usize = std::env::var("NATTER_CONF_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let n = 3;
    let (mut joins, mut recoveries) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let mut p = party(n);
        let all_in = Instant::now();
        std::thread::sleep(Duration::from_secs(3));
        let killed = Instant::now();
        p.procs[0].kill();
        for i in 1..n {
            p.procs[i].wait_json(T, |v| {
                v["event"] == "conference" && v["type"] == "mixer" && v["failover"] == true
            });
        }
        std::thread::sleep(Duration::from_secs(3));
        let alive: Vec<usize> = (1..n).collect();
        let (joined_at, started) = (p.joined_at.clone(), p.started);
        let recs = p.finish(&alive);
        // Join: the survivors' recordings (ann's died with her).
        let mut join = 0.0f64;
        for &i in &alive {
            let rec = recs[i].as_ref().unwrap();
            let want: Vec<usize> = (0..n).filter(|&j| j != i).collect();
            let heard = first_heard(rec, &want)
                .unwrap_or_else(|| panic!("{}: never heard both others", USERS[i]));
            join = join.max((joined_at[i] - started).as_secs_f64() + heard);
        }
        // Recovery: as conference_survives_its_mixer_killed measures it.
        let mut worst = 0.0f64;
        for &i in &alive {
            let rec = recs[i].as_ref().unwrap();
            let t_join = joined_at[i];
            let steady_from = ((all_in - t_join).as_secs_f64() + 0.5) * 48_000.0;
            let steady = levels(rec, steady_from as usize, n);
            let kill_at = ((killed - t_join).as_secs_f64() * 48_000.0) as usize;
            let want: Vec<usize> = alive.iter().copied().filter(|&j| j != i).collect();
            let gap = (kill_at.saturating_sub(24_000)..rec.len() - 4_800)
                .step_by(480)
                .find(|&k| {
                    let w = &rec[k..k + 4_800];
                    want.iter()
                        .any(|&j| power_db(w, TONES[j]) <= steady[j] - 12.0)
                })
                .expect("a gap at the mixer's death");
            let back = recovered_at(rec, gap, &want, &steady).expect("heard again");
            worst = worst.max((back - gap) as f64 / 48_000.0);
        }
        eprintln!("run {run}: join {join:.2} s, recovery {worst:.2} s");
        joins.push(join);
        recoveries.push(worst);
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[v.len() - 1])
    };
    let (jm, jx) = stats(&mut joins);
    let (rm, rx) = stats(&mut recoveries);
    eprintln!(
        "conference of {n}, {runs} runs: join (conf start to every survivor hearing both \
         others) median {jm:.2} s, max {jx:.2} s; recovery after SIGKILL of the mixer \
         median {rm:.2} s, max {rx:.2} s"
    );
}
