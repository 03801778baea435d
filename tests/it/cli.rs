//! The binary as a user runs it: help, version, config errors, register and
//! login against a real authority process, and the demo.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

fn natter() -> Command {
    Command::new(env!("CARGO_BIN_EXE_natter"))
}

#[test]
fn help_lists_every_mode() {
    let _turn = scenario!();
    let out = natter().arg("--help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for word in [
        "--authority",
        "--supernode",
        "--headless",
        "--config",
        "--data-dir",
        "register",
        "login",
        "demo",
    ] {
        assert!(text.contains(word), "help lacks {word}:\n{text}");
    }
    let v = natter().arg("--version").output().unwrap();
    assert!(String::from_utf8(v.stdout).unwrap().starts_with("natter "));
}

#[test]
fn bad_config_is_a_clear_error() {
    let _turn = scenario!();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[authority]\nlisten = \"nowhere\"\n").unwrap();
    let out = natter()
        .arg("--config")
        .arg(&cfg)
        .arg("whoami")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains(&cfg.display().to_string()), "{err}");
    assert!(
        err.contains("authority.listen") && err.contains("ip:port"),
        "{err}"
    );
}

#[test]
fn register_and_login_from_the_command_line() {
    let _turn = scenario!();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("auth.toml");
    std::fs::write(&cfg, "[authority]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let mut auth = natter()
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("auth"))
        .arg("--authority")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(auth.stdout.take().unwrap()).lines();
    let (mut key, mut addr) = (String::new(), String::new());
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(k) = line.strip_prefix("authority public key: ") {
            key = k.to_owned();
        }
        if let Some(a) = line.strip_prefix("listening on ") {
            addr = a.to_owned();
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    // The public key file matches what was printed.
    let pubfile = std::fs::read_to_string(dir.path().join("auth/authority.pub")).unwrap();
    assert_eq!(pubfile.trim(), key);

    // A client config pinning the key; the address comes from the flag.
    let client_cfg = dir.path().join("client.toml");
    std::fs::write(&client_cfg, format!("[login]\nauthority_key = \"{key}\"\n")).unwrap();
    let run = |args: &[&str], stdin: &str| {
        let mut child = natter()
            .arg("--config")
            .arg(&client_cfg)
            .arg("--data-dir")
            .arg(dir.path().join("alice"))
            .args(args)
            .args(["--server", &addr])
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
        child.wait_with_output().unwrap()
    };
    let out = run(
        &["register", "alice", "--password-stdin"],
        "sesame-sesame\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "registered alice"
    );

    let out = run(&["login", "alice", "--password-stdin"], "wrong-wrong\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid username or password"));

    let out = run(&["login", "alice", "--password-stdin"], "sesame-sesame\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("logged in as alice until "), "{text}");

    let out = run(&["renew"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("renewed alice until "));

    // The device key is private to its owner.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("alice/device.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    auth.kill().unwrap();
    auth.wait().unwrap();
}

#[test]
fn demo_runs_once() {
    let _turn = scenario!();
    let out = natter().args(["demo", "--once"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("logged in as you"), "{text}");
    assert!(text.contains("attached to"), "{text}");
    assert!(text.contains("echo123 is online"), "{text}");
    assert!(text.contains("bot is online"), "{text}");
    // Real chat with both: answers and end-to-end acknowledgements.
    assert!(
        text.contains("bot answered \"Hello! I am the demo chat bot.\""),
        "{text}"
    );
    assert!(text.contains("echo123 answered \"ping\""), "{text}");
    // A real call: echo123 answers and its echo comes back.
    assert!(text.contains("echo123 answered the call"), "{text}");
    // No sound card on the test machines: the demo says what it uses.
    if !std::path::Path::new("/dev/snd").exists() {
        assert!(text.contains("no sound card"), "{text}");
    }
}

/// Issue 13 (command line): modes are subcommands with their own help;
/// misplaced or conflicting flags are errors; the old mode flags still
/// work, with a warning.
#[test]
fn modes_are_subcommands_and_misplaced_flags_are_errors() {
    let _turn = scenario!();
    let run = |args: &[&str]| {
        let out = natter().args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, help, _) = run(&["supernode", "--help"]);
    assert!(
        ok && help.contains("--alt-address") && help.contains("--bootstrap"),
        "{help}"
    );
    assert!(!help.contains("--lookup"), "{help}");
    let (ok, help, _) = run(&["headless", "--help"]);
    assert!(
        ok && help.contains("--lookup") && help.contains("--password-stdin"),
        "{help}"
    );
    assert!(help.contains("--user (needed)"), "{help}");
    let (ok, help, _) = run(&["authority", "--help"]);
    assert!(
        ok && help.contains("--listen") && !help.contains("--bootstrap"),
        "{help}"
    );
    let (ok, help, _) = run(&["--help"]);
    assert!(ok && !help.contains("--lookup"), "{help}");

    // Conflicting and misplaced flags.
    let (ok, _, err) = run(&["--authority", "--supernode"]);
    assert!(!ok && err.contains("cannot be combined"), "{err}");
    let (ok, _, err) = run(&["--lookup", "bob"]);
    assert!(
        !ok && err.contains("--lookup is a flag of `natter headless`"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let (ok, _, err) = run(&["--data-dir", data.to_str().unwrap(), "demo", "--once"]);
    assert!(!ok && err.contains("--data-dir does not apply"), "{err}");
    assert!(!data.exists());
    let (ok, _, err) = run(&["--listen", "127.0.0.1:0", "supernode", "--help"]);
    // --help wins in clap; without it the misplaced flag is refused.
    assert!(ok, "{err}");
    let (ok, _, err) = run(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "whoami",
    ]);
    assert!(
        !ok && err.contains("put them after the subcommand"),
        "{err}"
    );

    // The old flags: same mode, a warning on stderr.
    let (ok, help, err) = run(&["--supernode", "--help"]);
    assert!(ok && help.contains("--alt-address"), "{help}");
    assert!(
        err.contains("--supernode is deprecated") && err.contains("natter supernode"),
        "{err}"
    );
}
