//! Whole-call voice benchmark: `cargo bench --bench call -- [CONDITION]...`
//! (every condition by default; names below).
//!
//! A real call between two `natter --headless` processes over loopback UDP
//! (an authority and a supernode set it up; ICE opens the direct path):
//! alice plays assets/speech.wav (16 kHz, converted on reading) with
//! `--play`, bob auto-answers and records with `--record`. The impairment
//! is applied on the wire by alice's own media driver (`[media.impair]`,
//! seeded), since ICE picks the path and no proxy can sit on it. The whole
//! recording, moved by the one lag that aligns it with the reference, is
//! scored with PESQ-WB against the original 16 kHz file
//! (scripts/pesq_mos.py --align; `pip install pesq numpy scipy`).
//!
//! Each condition runs twice with the same seed: with natter's full loss
//! repair (`[media] dred = true`) and LBRR only (`dred = false`).
//!
//! Conditions: `clean`, `loss10`, `loss20`, `loss30` (independent loss),
//! `bursty` (Gilbert-Elliott, 10 % average, mean burst 3 packets),
//! `jitter30` (0-30 ms uniform extra delay per packet: reordering),
//! `clean10ms` (10 ms frames), `dev44k1` (alice's input is a 44.1 kHz WAV
//! and bob's recording goes through the playback resampler to 44.1 kHz,
//! as a 44.1 kHz sound card would hear both), `file` (clean, with alice
//! sending bob a file over the same peer link for the whole call: the
//! transfer's delay-based congestion control must leave the call's
//! quality; compare with `clean` in the same run).

#[path = "../tests/it/common/procs.rs"]
#[allow(dead_code)]
mod procs;

use natter::media::audio;
use procs::{Network, Proc};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SPEECH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/speech.wav");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pesq_mos.py");
const T: Duration = Duration::from_secs(30);

struct Condition {
    name: &'static str,
    /// `[media.impair]` keys, or none.
    impair: &'static str,
    frame_ms: u32,
    /// Simulated device rate (None: 48 kHz).
    device_rate: Option<u32>,
    /// alice sends bob a large file all through the call.
    file: bool,
}

const CONDITIONS: &[Condition] = &[
    Condition {
        name: "clean",
        impair: "",
        frame_ms: 20,
        device_rate: None,
        file: false,
    },
    Condition {
        name: "loss10",
        impair: "loss = 0.1\nseed = 10\n",
        frame_ms: 20,
        device_rate: None,
        file: false,
    },
    Condition {
        name: "loss20",
        impair: "loss = 0.2\nseed = 20\n",
        frame_ms: 20,
        device_rate: None,
        file: false,
    },
    Condition {
        name: "loss30",
        impair: "loss = 0.3\nseed = 30\n",
        frame_ms: 20,
        device_rate: None,
        file: false,
    },
    Condition {
        name: "bursty",
        impair: "loss = 0.1\nburst = 3.0\nseed = 40\n",
        frame_ms: 20,
        device_rate: None,
        file: false,
    },
    Condition {
        name: "jitter30",
        impair: "jitter_ms = 30\nseed = 50\n",
        frame_ms: 20,
        device_rate: None,
        file: false,
    },
    Condition {
        name: "clean10ms",
        impair: "",
        frame_ms: 10,
        device_rate: None,
        file: false,
    },
    Condition {
        name: "dev44k1",
        impair: "",
        frame_ms: 20,
        device_rate: Some(44_100),
        file: false,
    },
    Condition {
        name: "file",
        impair: "",
        frame_ms: 20,
        device_rate: None,
        file: true,
    },
];

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("call bench: skipped (run with `cargo bench --bench call`)");
        return;
    }
    let what: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    // Only the LBRR-only variant (before DRED existed, or to save time).
    let lbrr_only = std::env::var_os("CALL_BENCH_LBRR_ONLY").is_some();
    let net = Network::start();
    net.account("sn1", true);
    net.account("alice", false);
    net.account("bob", false);
    let (_sn, sn_addr) = net.supernode("sn1", &[]);
    // alice and bob become contacts at the first `file` run (a stranger's
    // file is dropped), and stay so in their data dirs.
    let mut contacts = false;
    println!(
        "call: PESQ-WB of the whole recording of a {} s speech call between two headless processes (impairment on alice's wire)",
        audio::read_wav(Path::new(SPEECH)).unwrap().len() / 48_000
    );
    for c in CONDITIONS {
        if !what.is_empty() && !what.iter().any(|w| w == c.name) {
            continue;
        }
        let variants: &[Option<bool>] = if lbrr_only {
            &[None]
        } else {
            &[Some(true), Some(false)]
        };
        let mut line = format!("  {:<10}", c.name);
        for &dred in variants {
            let r = run(&net, &sn_addr, c, dred, &mut contacts);
            line += &format!(
                "  {}: MOS {}{} (lag {} ms; bob lost {}%, fec {}, dred {}, concealed {}, stretched {}, accelerated {} ms, expanded {} ms, final delay {} ms)",
                if dred == Some(true) {
                    "full"
                } else {
                    "LBRR-only"
                },
                r.mos,
                r.file,
                r.lag_ms,
                r.stats["loss_percent"],
                r.stats["fec_recovered"],
                r.stats["dred_recovered"],
                r.stats["concealed"],
                r.stats["stretched"],
                r.stats["accelerated_ms"],
                r.stats["expanded_ms"],
                r.stats["delay_ms"],
            );
        }
        println!("{line}");
    }
}

struct Outcome {
    mos: String,
    /// What the concurrent transfer moved during the call, if one ran.
    file: String,
    lag_ms: String,
    stats: serde_json::Value,
}

/// `dred`: None leaves the key out (a build without it). `contacts`:
/// whether alice and bob are contacts already.
fn run(net: &Network, sn: &str, c: &Condition, dred: Option<bool>, contacts: &mut bool) -> Outcome {
    let dir = net.dir.path();
    let tag = format!(
        "{}-{}",
        c.name,
        if dred == Some(true) { "full" } else { "lbrr" }
    );
    let dred_key = dred.map_or(String::new(), |d| format!("dred = {d}\n"));
    let rec = dir.join(format!("{tag}-bob.wav"));
    let media = format!(
        "[media]\nframe_ms = {}\n{dred_key}{}",
        c.frame_ms,
        if c.impair.is_empty() {
            String::new()
        } else {
            format!("[media.impair]\n{}", c.impair)
        }
    );
    let play = match c.device_rate {
        Some(rate) => {
            let p = dir.join(format!("speech-{rate}.wav"));
            resample_wav(Path::new(SPEECH), &p, rate);
            p
        }
        None => PathBuf::from(SPEECH),
    };
    let bob_cfg = net.config_with_overlay(
        &format!("{tag}-bob.toml"),
        &format!(
            "\n[audio]\ninput = \"null\"\noutput = \"null\"\n[media]\nframe_ms = {}\n{dred_key}",
            c.frame_ms
        ),
    );
    let alice_cfg = net.config_with_overlay(
        &format!("{tag}-alice.toml"),
        &format!("\n[audio]\ninput = \"null\"\noutput = \"null\"\n{media}"),
    );
    let secs = audio::read_wav(Path::new(SPEECH)).unwrap().len() / 48_000 + 2;
    let mut bob = client(
        net,
        "bob",
        &bob_cfg,
        sn,
        &["--auto-answer", "--record", rec.to_str().unwrap()],
    );
    bob.wait_json(T, |v| v["event"] == "published");
    let secs_arg = secs.to_string();
    let mut args = vec![
        "--play",
        play.to_str().unwrap(),
        "--hangup-after",
        &secs_arg,
    ];
    if !c.file {
        args.extend(["--call", "bob"]);
    }
    let mut alice = client(net, "alice", &alice_cfg, sn, &args);
    let transfer = c.file.then(|| {
        alice.wait_json(T, |v| v["event"] == "published");
        start_transfer(net, &tag, &mut alice, &mut bob, contacts)
    });
    let stats = bob.wait_json(T + Duration::from_secs(secs as u64), |v| {
        v["event"] == "call_stats" && v["final"] == true
    });
    let file = match transfer {
        Some((id, t0)) => {
            let p = bob.wait_json(T, |v| v["event"] == "file_progress");
            let bytes = p["bytes"].as_u64().unwrap_or(0);
            // Cancelled, so that no later run resumes it.
            alice.say(&format!("file cancel {id}"));
            for p in [&alice, &bob] {
                p.wait_json(T, |v| v["event"] == "file_failed" && v["id"] == id.as_str());
            }
            format!(
                " with a file alongside ({} MB in {:.0} s)",
                bytes >> 20,
                t0.elapsed().as_secs_f64()
            )
        }
        None => String::new(),
    };
    bob.say("quit");
    alice.say("quit");
    wait_exit(&mut bob);
    wait_exit(&mut alice);
    if let Some(rate) = c.device_rate {
        // What a sound card at `rate` would play: the recording through
        // the playback callback's resampler.
        let s = audio::read_wav(&rec).unwrap();
        let mut r = audio::PullResampler::new(audio::SAMPLE_RATE, rate);
        let mut it = s.iter();
        let n = s.len() as u64 * rate as u64 / audio::SAMPLE_RATE as u64;
        let out: Vec<i16> = (0..n)
            .map(|_| audio::to_i16(r.pull(|| it.next().map_or(0.0, |&x| audio::to_f32(x)))))
            .collect();
        write_wav_at(&rec, &out, rate);
    }
    let o = std::process::Command::new("python3")
        .args([SCRIPT, "--align", SPEECH, rec.to_str().unwrap()])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    if !o.status.success() {
        panic!("pesq: {}", String::from_utf8_lossy(&o.stderr));
    }
    let mut it = text.split_whitespace();
    Outcome {
        mos: it.next().unwrap_or("?").to_owned(),
        file,
        lag_ms: it.next().unwrap_or("?").to_owned(),
        stats,
    }
}

/// alice offers bob a 4 GB file (sparse: the bytes do not matter, the
/// load on the path does), bob accepts, and once it flows alice calls bob.
/// Returns the transfer's id and when it started.
fn start_transfer(
    net: &Network,
    tag: &str,
    alice: &mut Proc,
    bob: &mut Proc,
    contacts: &mut bool,
) -> (String, Instant) {
    if !*contacts {
        alice.say("add bob a file and a call");
        bob.wait_json(T, |v| v["event"] == "contact_request");
        bob.say("accept alice");
        alice.wait_json(T, |v| v["event"] == "contact_added" && v["user"] == "bob");
        *contacts = true;
    }
    let src = net.data(&format!("{tag}-big.bin"));
    std::fs::File::create(&src)
        .and_then(|f| f.set_len(4 << 30))
        .unwrap();
    alice.say(&format!("send-file bob {}", src.display()));
    let o = bob.wait_json(T, |v| v["event"] == "file_offered");
    let id = o["id"].as_str().unwrap().to_owned();
    let dest = net.data(&format!("{tag}-in.bin"));
    bob.say(&format!("file accept {id} {}", dest.display()));
    bob.wait_json(T, |v| v["event"] == "file_started");
    let t0 = Instant::now();
    alice.say("call bob");
    (id, t0)
}

/// A headless client at raised priority (`nice -n -10`, as a real-time
/// audio application would run; without it other load on a 2-core
/// machine makes the paced devices and the driver miss their ticks).
fn client(net: &Network, name: &str, config: &Path, sn: &str, args: &[&str]) -> Proc {
    let mut cmd = std::process::Command::new("nice");
    cmd.args(["-n", "-10", env!("CARGO_BIN_EXE_natter")])
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(net.data(name))
        .args(["--log-level", "natter=debug", "--headless", "--json"])
        .args(["--bootstrap", sn])
        .args(args);
    Proc::spawn(name, cmd, &net.dir.path().join(format!("{name}.log")))
}

fn wait_exit(p: &mut Proc) {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        if p.child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    p.kill();
}

/// `from` (any rate) converted to `rate` with a band-limited polyphase
/// filter (scipy, independent of natter's resampler), as a capture device
/// at `rate` would have sampled the speech.
fn resample_wav(from: &Path, to: &Path, rate: u32) {
    let code = format!(
        "import sys,wave,numpy as np\nfrom scipy.signal import resample_poly\nw=wave.open(sys.argv[1]);r=w.getframerate();x=np.frombuffer(w.readframes(w.getnframes()),dtype=np.int16).astype(float)\nfrom math import gcd\ng=gcd({rate},r);y=np.clip(np.round(resample_poly(x,{rate}//g,r//g)),-32768,32767).astype(np.int16)\no=wave.open(sys.argv[2],'wb');o.setnchannels(1);o.setsampwidth(2);o.setframerate({rate});o.writeframes(y.tobytes());o.close()\n"
    );
    let st = std::process::Command::new("python3")
        .args(["-c", &code, from.to_str().unwrap(), to.to_str().unwrap()])
        .status()
        .expect("python3");
    assert!(st.success());
}

fn write_wav_at(path: &Path, samples: &[i16], rate: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}
