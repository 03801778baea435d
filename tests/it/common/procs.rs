//! Real `natter` processes for end-to-end tests: an authority, accounts,
//! supernodes and headless clients on loopback, with their output lines
//! collected by threads so tests can wait for them with timeouts.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// Every device of the tests names itself by its data dir ("alice",
/// "alice-laptop"), at login and when it runs, though they share a host.
const DEVICE_NAME_ENV: &str = natter::node::login::DEVICE_NAME_ENV;

pub fn natter() -> Command {
    Command::new(env!("CARGO_BIN_EXE_natter"))
}

/// A child process whose stdout lines arrive on a channel.
pub struct Proc {
    pub child: Child,
    pub lines: Receiver<String>,
    pub stdin: Option<ChildStdin>,
    pub name: String,
    /// Where its stderr (the log) goes; a failed wait shows its tail.
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let err = std::fs::File::create(log).unwrap();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Proc {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            name: name.to_owned(),
            log: log.to_owned(),
        }
    }

    /// Wait for a line matching `pred`, skipping others.
    pub fn wait_for(&self, timeout: Duration, mut pred: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        // The lines skipped, so that a failure shows what came instead.
        let mut skipped = std::collections::VecDeque::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if pred(&l) => return l,
                Ok(l) => {
                    if skipped.len() == 30 {
                        skipped.pop_front();
                    }
                    skipped.push_back(l);
                }
                Err(_) => {
                    let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    panic!(
                        "{}: no matching line within {timeout:?}; last lines seen:\n{}\nlog tail:\n{}",
                        self.name,
                        Vec::from(skipped).join("\n"),
                        tail.join("\n")
                    )
                }
            }
        }
    }

    /// Wait for a JSON event line satisfying `pred`.
    pub fn wait_json(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let l = self.wait_for(timeout, |l| {
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| pred(&v))
        });
        serde_json::from_str(&l).unwrap()
    }

    pub fn say(&mut self, line: &str) {
        let s = self.stdin.as_mut().unwrap();
        writeln!(s, "{line}").unwrap();
        s.flush().unwrap();
    }

    /// Ask the process to quit (`quit`, then end of input) and wait for
    /// it to exit within `within`.
    pub fn quit(&mut self, within: Duration) {
        self.say("quit");
        self.stdin.take();
        let deadline = Instant::now() + within;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{} did not quit", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An authority process and the config clients use to reach it.
pub struct Network {
    pub dir: tempfile::TempDir,
    /// The authority, stopped when this is dropped (held, not read).
    #[allow(dead_code)]
    pub authority: Proc,
    pub client_config: PathBuf,
    pub authority_config: PathBuf,
    /// Where supernodes listen (`127.0.0.1:0` unless started with
    /// [`Network::start_listening`]).
    pub listen: String,
}

impl Network {
    pub fn start() -> Network {
        Self::start_with("")
    }

    /// [`Network::start`] with `extra` TOML appended to the authority's
    /// config.
    pub fn start_with(extra: &str) -> Network {
        Self::start_listening("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", extra)
    }

    /// A network whose authority listens on `authority`, supernodes on
    /// `supernodes` and clients on `clients` (e.g. `[::1]:0` for IPv6
    /// only, `[::]:0` for dual-stack); `extra` as in [`Network::start_with`].
    pub fn start_listening(
        authority: &str,
        supernodes: &str,
        clients: &str,
        extra: &str,
    ) -> Network {
        // NATTER_KEEP_TEST_DIRS=1 keeps every process's data and log
        // (under TMPDIR) for a look after a failure.
        let keep = std::env::var_os("NATTER_KEEP_TEST_DIRS").is_some();
        let dir = tempfile::Builder::new()
            .disable_cleanup(keep)
            .tempdir()
            .unwrap();
        let authority_config = dir.path().join("authority.toml");
        std::fs::write(
            &authority_config,
            format!("[authority]\nlisten = \"{authority}\"\nregistrations_per_hour_per_address = 0\n{extra}"),
        )
        .unwrap();
        let mut cmd = natter();
        cmd.arg("--config")
            .arg(&authority_config)
            .arg("--data-dir")
            .arg(dir.path().join("authority"))
            .arg("--authority");
        let authority = Proc::spawn("authority", cmd, &dir.path().join("authority.log"));
        let key = authority.wait_for(Duration::from_secs(20), |l| {
            l.starts_with("authority public key: ")
        });
        let key = key.trim_start_matches("authority public key: ").to_owned();
        let addr = authority.wait_for(Duration::from_secs(20), |l| l.starts_with("listening on "));
        let addr = addr.trim_start_matches("listening on ").to_owned();
        // An authority on "any" is reached over loopback of its family.
        let addr = addr
            .replace("[::]", "[::1]")
            .replace("0.0.0.0", "127.0.0.1");
        let client_config = dir.path().join("client.toml");
        std::fs::write(
            &client_config,
            format!("[login]\nserver = \"{addr}\"\nauthority_key = \"{key}\"\n[overlay]\nlisten = \"{clients}\"\nbootstrap = []\n"),
        )
        .unwrap();
        Network {
            dir,
            authority,
            client_config,
            authority_config,
            listen: supernodes.to_owned(),
        }
    }

    pub fn data(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, name: &str, args: &[&str], stdin: &str) {
        let mut child = natter()
            .env(DEVICE_NAME_ENV, name)
            .arg("--config")
            .arg(&self.client_config)
            .arg("--data-dir")
            .arg(self.data(name))
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
        assert!(
            out.status.success(),
            "{name} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Register `name` and log its device in, as a supernode if asked.
    pub fn account(&self, name: &str, supernode: bool) {
        let pw = format!("{name}-password\n");
        self.run(name, &["register", name, "--password-stdin"], &pw);
        if supernode {
            let out = natter()
                .arg("--config")
                .arg(&self.authority_config)
                .arg("--data-dir")
                .arg(self.data("authority"))
                .args(["admin", "set-role", name, "supernode"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.run(name, &["login", name, "--password-stdin"], &pw);
    }

    /// Log account `name` in on another device, whose data directory is
    /// `device` (a new device key and its own certificate).
    pub fn login_device(&self, name: &str, device: &str) {
        let pw = format!("{name}-password\n");
        self.run(device, &["login", name, "--password-stdin"], &pw);
    }

    /// Register and log in each (name, as a supernode?) in turn.
    pub fn accounts(&self, accounts: &[(&str, bool)]) {
        for &(name, supernode) in accounts {
            self.account(name, supernode);
        }
    }

    /// The usual loopback overlay: accounts for supernodes sn1 and sn2 and
    /// for `users`, then both supernodes started (sn2 joining through
    /// sn1). Returns the supernodes and their addresses.
    pub fn two_supernodes(&self, users: &[&str]) -> ([Proc; 2], Vec<String>) {
        self.accounts(&[("sn1", true), ("sn2", true)]);
        for u in users {
            self.account(u, false);
        }
        let (sn1, a1) = self.supernode("sn1", &[]);
        let (sn2, a2) = self.supernode("sn2", std::slice::from_ref(&a1));
        ([sn1, sn2], vec![a1, a2])
    }

    /// Start a supernode; returns it and its address.
    pub fn supernode(&self, name: &str, bootstrap: &[String]) -> (Proc, String) {
        self.supernode_with(name, &self.client_config, bootstrap)
    }

    /// Start a supernode with its own config (e.g. from
    /// [`Network::config_with_overlay`]); returns it and its address.
    pub fn supernode_with(
        &self,
        name: &str,
        config: &Path,
        bootstrap: &[String],
    ) -> (Proc, String) {
        let mut cmd = natter();
        cmd.arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(self.data(name));
        cmd.args([
            "--log-level",
            "natter=debug",
            "--supernode",
            "--listen",
            &self.listen,
        ]);
        for b in bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        let p = Proc::spawn(name, cmd, &self.dir.path().join(format!("{name}.log")));
        let addr = p.wait_for(Duration::from_secs(20), |l| l.starts_with("listening on "));
        let addr = addr.trim_start_matches("listening on ").to_owned();
        (p, addr)
    }

    /// Start a headless client printing JSON.
    pub fn headless(&self, name: &str, bootstrap: &[String], extra: &[&str]) -> Proc {
        self.headless_with(name, &self.client_config, bootstrap, extra)
    }

    /// The client config with `extra` TOML appended to its [overlay] table.
    pub fn config_with_overlay(&self, file: &str, extra: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.client_config).unwrap();
        let p = self.dir.path().join(file);
        std::fs::write(&p, format!("{text}{extra}\n")).unwrap();
        p
    }

    pub fn headless_with(
        &self,
        name: &str,
        config: &Path,
        bootstrap: &[String],
        extra: &[&str],
    ) -> Proc {
        let mut cmd = natter();
        cmd.env(DEVICE_NAME_ENV, name)
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(self.data(name));
        cmd.args(["--log-level", "natter=debug", "--headless", "--json"]);
        for b in bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        cmd.args(extra);
        Proc::spawn(name, cmd, &self.dir.path().join(format!("{name}.log")))
    }
}
