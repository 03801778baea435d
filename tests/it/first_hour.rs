//! What a new user or operator meets before anything works: config values
//! that can never work, a second natter on one data dir, `natter admin`
//! on the wrong data dir, and the systemd units shipped in
//! `config/systemd/`; a crashed contact going offline in seconds.

use crate::common::procs::Network;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn natter() -> Command {
    Command::new(env!("CARGO_BIN_EXE_natter"))
}

fn stderr_of(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unusable_config_values_fail_at_load_with_file_line_and_key() {
    let _turn = scenario!();
    let dir = tempfile::tempdir().unwrap();
    for (text, key, line) in [
        ("[media]\nframe_ms = 25\n", "media.frame_ms", 2),
        (
            "# bitrate in b/s\n[media]\nbitrate = 5\n",
            "media.bitrate",
            3,
        ),
        ("[log]\nlevel = \"verbose\"\n", "log.level", 2),
        ("[keys]\ncall = \"q\"\n", "keys.call", 2),
    ] {
        let cfg = dir.path().join("natter.toml");
        std::fs::write(&cfg, text).unwrap();
        let (ok, err) = stderr_of(natter().arg("--config").arg(&cfg).arg("whoami"));
        assert!(!ok, "{text}");
        let want = format!("{}, line {line}: key `{key}`", cfg.display());
        assert!(err.contains(&want), "{text}: {err}");
    }
    let (ok, err) = stderr_of(natter().args(["--log-level", "loud", "whoami"]));
    assert!(!ok && err.contains("not a log level"), "{err}");
}

/// An authority on `data` (port 0), once it says where it listens.
fn authority(data: &Path, cfg: &Path) -> std::process::Child {
    let mut child = natter()
        .arg("--config")
        .arg(cfg)
        .arg("--data-dir")
        .arg(data)
        .arg("--authority")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let listening = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.starts_with("listening on "));
    assert!(listening, "the authority did not start");
    child
}

#[test]
fn a_second_natter_on_one_data_dir_says_who_holds_it() {
    let _turn = scenario!();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("auth.toml");
    std::fs::write(&cfg, "[authority]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let data = dir.path().join("auth");
    let mut first = authority(&data, &cfg);
    let (ok, err) = stderr_of(
        natter()
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(&data)
            .arg("--authority"),
    );
    assert!(!ok);
    assert!(
        err.contains("in use by another natter") && err.contains(&format!("pid {}", first.id())),
        "{err}"
    );
    // Short commands work beside it.
    let out = natter()
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&data)
        .args(["admin", "list"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    first.kill().unwrap();
    first.wait().unwrap();
    // The kernel dropped the lock with the process.
    let mut again = authority(&data, &cfg);
    again.kill().unwrap();
    again.wait().unwrap();
}

#[test]
fn admin_on_the_wrong_data_dir_creates_nothing() {
    let _turn = scenario!();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("not-the-authority");
    let (ok, err) = stderr_of(natter().arg("--data-dir").arg(&wrong).args([
        "admin",
        "set-role",
        "sn1",
        "supernode",
    ]));
    assert!(!ok);
    assert!(err.contains("nothing was created"), "{err}");
    assert!(!wrong.join("authority.db").exists());
}

/// The units in `config/systemd/`: `systemd-analyze verify` accepts them
/// (with ExecStart pointed at this build), and the flags they start
/// natter with exist (`--help` after them parses).
#[test]
fn systemd_units_verify_and_their_flags_exist() {
    let _turn = scenario!();
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/systemd");
    let dir = tempfile::tempdir().unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(&units).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "service") {
            continue;
        }
        seen += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("an ExecStart line");
        let mut words = exec.split_whitespace();
        assert_eq!(words.next(), Some("/usr/local/bin/natter"), "{exec}");
        let args: Vec<&str> = words.collect();
        let out = natter().args(&args).arg("--help").output().unwrap();
        assert!(
            out.status.success(),
            "{}: {args:?}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("User=natter") && text.contains("StateDirectory="));
        let local = dir.path().join(path.file_name().unwrap());
        std::fs::write(
            &local,
            text.replace("/usr/local/bin/natter", env!("CARGO_BIN_EXE_natter")),
        )
        .unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&local)
            .output()
            .expect("systemd-analyze (Debian's systemd package)");
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(seen, 2, "the supernode and authority units");
}

/// Bug 2: a contact killed with SIGKILL shows offline on the other side
/// within 10 s. Their supernodes stop hearing keepalives (6 s) and publish
/// the offline record the client signed in advance; the owners tell the
/// watchers.
#[test]
fn a_killed_contact_shows_offline_within_ten_seconds() {
    let _turn = scenario!();
    const T: Duration = Duration::from_secs(20);
    let net = Network::start();
    let (_supernodes, all) = net.two_supernodes(&["alice", "bob"]);
    let mut alice = net.headless("alice", &all, &[]);
    let mut bob = net.headless("bob", &all, &[]);
    for p in [&alice, &bob] {
        p.wait_json(T, |v| v["event"] == "published");
    }
    alice.say("add bob hi");
    bob.wait_json(T, |v| v["event"] == "contact_request");
    bob.say("accept alice");
    alice.wait_json(T, |v| {
        v["event"] == "contact_presence" && v["user"] == "bob" && v["status"] == "online"
    });
    bob.kill();
    let killed = Instant::now();
    let p = alice.wait_json(Duration::from_secs(15), |v| {
        v["event"] == "contact_presence" && v["user"] == "bob" && v["status"] == "offline"
    });
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "offline after {took:?}: {p}"
    );
}

/// A headless alice (logged in already) that cannot go online: waits for
/// it to exit and returns its stderr.
fn headless_failure(net: &Network, config: &Path) -> String {
    let mut cmd = natter();
    cmd.arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(net.data("alice"))
        .args(["--headless", "--json", "--bootstrap", "127.0.0.1:9"]);
    let log = net.dir.path().join("alice-fail.log");
    let mut p = crate::common::procs::Proc::spawn("alice", cmd, &log);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "alice did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    std::fs::read_to_string(&log).unwrap()
}

/// Bug 11: a busy UDP port is not a login problem: the error names the
/// address and says what to do.
#[test]
fn a_busy_port_says_which_and_what_to_do() {
    let _turn = scenario!();
    let net = Network::start();
    net.account("alice", false);
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let text = std::fs::read_to_string(&net.client_config).unwrap();
    let cfg = net.dir.path().join("busy.toml");
    std::fs::write(
        &cfg,
        text.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{addr}\"")),
    )
    .unwrap();
    let err = headless_failure(&net, &cfg);
    assert!(err.contains(&format!("UDP {addr} is in use")), "{err}");
    assert!(err.contains("set [overlay] listen"), "{err}");
    assert!(err.contains("not a login problem"), "{err}");
}

/// Bug 13: a damaged contacts.db is named once, left unchanged, with what
/// to do; no cause is repeated.
#[test]
fn a_damaged_contact_list_is_named_once_and_left_alone() {
    let _turn = scenario!();
    let net = Network::start();
    net.account("alice", false);
    let db = net.data("alice").join("contacts.db");
    let junk = vec![0x55u8; 8192];
    std::fs::write(&db, &junk).unwrap();
    let err = headless_failure(&net, &net.client_config);
    let line = err
        .lines()
        .find(|l| l.starts_with("natter: ") && !l.starts_with("natter: warning:"))
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!(line.matches(&db.display().to_string()).count(), 1, "{line}");
    assert_eq!(line.matches("not an SQLite database").count(), 1, "{line}");
    assert!(line.contains("changed nothing"), "{line}");
    assert!(line.contains("Move the file away"), "{line}");
    assert!(!line.contains("password"), "{line}");
    assert_eq!(std::fs::read(&db).unwrap(), junk);
}

/// Bug 12: after the primary supernode restarts, the client's list has
/// one primary again (the backup took over; the restarted one is the
/// backup), not two backups.
#[test]
fn a_restarted_supernode_leaves_one_primary() {
    let _turn = scenario!();
    const T: Duration = Duration::from_secs(30);
    let net = Network::start();
    let ([sn1, sn2], all) = net.two_supernodes(&["alice"]);
    let alice = net.headless("alice", &all, &[]);
    let both = |v: &serde_json::Value| {
        v["event"] == "supernodes" && v["attached"].as_array().is_some_and(|a| a.len() == 2)
    };
    let list = alice.wait_json(T, both);
    let primary = list["attached"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["primary"] == true)
        .unwrap_or_else(|| panic!("{list}"))["supernode"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut dead, name) = if primary == all[0] {
        (sn1, "sn1")
    } else {
        (sn2, "sn2")
    };
    dead.kill();
    // Alone on the backup, which is primary now.
    let list = alice.wait_json(T, |v| {
        v["event"] == "supernodes" && v["attached"].as_array().is_some_and(|a| a.len() == 1)
    });
    assert_eq!(list["attached"][0]["primary"], true, "{list}");
    // The same supernode back on the same address.
    let mut cmd = crate::common::procs::natter();
    cmd.arg("--config")
        .arg(&net.client_config)
        .arg("--data-dir")
        .arg(net.data(name))
        .args(["--supernode", "--listen", &primary]);
    let other = all.iter().find(|a| **a != primary).unwrap();
    cmd.args(["--bootstrap", other]);
    let back = crate::common::procs::Proc::spawn(
        name,
        cmd,
        &net.dir.path().join(format!("{name}-again.log")),
    );
    back.wait_for(T, |l| l.starts_with("listening on "));
    let list = alice.wait_json(Duration::from_secs(60), both);
    let primaries = list["attached"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["primary"] == true)
        .count();
    assert_eq!(primaries, 1, "{list}");
}
