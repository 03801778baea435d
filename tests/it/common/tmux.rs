//! The softphone in a real terminal: a tmux server of its own per test,
//! driven with send-keys (and paste-buffer) and read with capture-pane.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A tmux server with one session, `natter`; killed when dropped.
pub struct Tmux {
    pub socket: String,
}

impl Tmux {
    /// A server named for this process and `tag`, running `command` (a
    /// shell line) in a `w`x`h` terminal. `None` without tmux.
    pub fn start(tag: &str, w: u16, h: u16, command: &str) -> Option<Tmux> {
        if !has_tmux() {
            eprintln!("SKIPPED: tmux is not installed (apt-get install -y tmux)");
            return None;
        }
        let t = Tmux {
            socket: format!("natter-test-{}-{tag}", std::process::id()),
        };
        let (w, h) = (w.to_string(), h.to_string());
        let out = t.cmd(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "natter",
            "-x",
            &w,
            "-y",
            &h,
            command,
        ]);
        assert!(out.status.success(), "tmux new-session: {out:?}");
        Some(t)
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("running tmux")
    }

    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "natter"];
        args.extend_from_slice(keys);
        let out = self.cmd(&args);
        assert!(out.status.success(), "send-keys {keys:?}: {out:?}");
    }

    /// Type text literally (no key names).
    pub fn text(&self, s: &str) {
        let out = self.cmd(&["send-keys", "-t", "natter", "-l", s]);
        assert!(out.status.success(), "send-keys -l {s:?}: {out:?}");
    }

    /// Paste `s` as a terminal does: bracketed when the program asked for
    /// it (tmux's `paste-buffer -p`), line breaks as carriage returns.
    pub fn paste(&self, s: &str) {
        let out = self.cmd(&["set-buffer", "-b", "natter-paste", "--", s]);
        assert!(out.status.success(), "set-buffer: {out:?}");
        let out = self.cmd(&[
            "paste-buffer",
            "-p",
            "-d",
            "-b",
            "natter-paste",
            "-t",
            "natter",
        ]);
        assert!(out.status.success(), "paste-buffer: {out:?}");
    }

    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "natter"]).stdout)
            .into_owned()
    }

    pub fn format(&self, f: &str) -> String {
        String::from_utf8_lossy(
            &self
                .cmd(&["display-message", "-p", "-t", "natter", f])
                .stdout,
        )
        .trim()
        .to_owned()
    }

    /// The process running in the pane.
    pub fn pid(&self) -> u32 {
        self.format("#{pane_pid}").parse().expect("pane pid")
    }

    /// Poll the screen until `pred` holds; panic with the screen if it
    /// does not within `timeout`.
    pub fn wait(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        self.wait_every(what, timeout, Duration::from_millis(100), pred)
    }

    /// [`Tmux::wait`], polling every `every`.
    pub fn wait_every(
        &self,
        what: &str,
        timeout: Duration,
        every: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("waited {timeout:?} for {what}; the screen:\n{s}");
            }
            std::thread::sleep(every);
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

pub fn has_tmux() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// CPU time (user + system) of a process so far, in ms, from /proc.
pub fn cpu_ms(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    // USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) * 10
}

/// Share of one core `pid` used over `span`, percent.
pub fn cpu_percent(pid: u32, span: Duration) -> f64 {
    let c0 = cpu_ms(pid);
    let t0 = Instant::now();
    std::thread::sleep(span);
    let c1 = cpu_ms(pid);
    100.0 * (c1 - c0) as f64 / t0.elapsed().as_millis() as f64
}

/// The line of the buddy list for `name`, if shown.
pub fn contact_line<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|l| l.starts_with('│') && l.contains(&format!(" {name}")))
}

pub fn online(screen: &str, name: &str) -> bool {
    contact_line(screen, name).is_some_and(|l| l.contains(&format!("● {name}")))
}

/// `natter demo` in a `w`x`h` terminal, its temporary files in `dir`,
/// once the three demo contacts are online. The shell stays after natter
/// (the pane and its last screen with it) and prints the exit status, for
/// [`Tmux::quit_demo`]. `None` without tmux.
pub fn demo(tag: &str, w: u16, h: u16, dir: &Path) -> Option<Tmux> {
    let line = format!(
        "env TMPDIR='{}' {} demo; echo \"natter exited: $?\"; exec sleep 600",
        dir.display(),
        env!("CARGO_BIN_EXE_natter")
    );
    let t = Tmux::start(tag, w, h, &line)?;
    t.wait("the three demo contacts online", DEMO_WAIT, |s| {
        online(s, "carol") && online(s, "echo123") && online(s, "bot")
    });
    Some(t)
}

const DEMO_WAIT: Duration = Duration::from_secs(30);

impl Tmux {
    /// In the demo's list (bot, carol, echo123): mark carol and echo123.
    pub fn mark_carol_and_echo(&self) {
        self.keys(&["Home", "Down"]);
        self.text(" ");
        self.keys(&["End"]);
        self.text(" ");
        self.wait("both marked", DEMO_WAIT, |s| {
            s.contains("2 marked (carol, echo123)") && s.contains("carol ✚")
        });
    }

    /// Quit the demo started by [`demo`]: it says it stopped and exits 0.
    pub fn quit_demo(&self) {
        self.text("q");
        let s = self.wait("natter to exit", DEMO_WAIT, |s| {
            s.contains("natter exited: ")
        });
        assert!(s.contains("natter demo stopped"), "{s}");
        assert!(s.contains("natter exited: 0"), "{s}");
    }
}

/// The shell line that runs the TUI of `user` of `net` (logged in
/// already) on the supernodes `bootstrap`, its stderr to a log.
pub fn tui_command(net: &super::procs::Network, user: &str, bootstrap: &[String]) -> String {
    let mut line = format!(
        "exec {} --config '{}' --data-dir '{}'",
        env!("CARGO_BIN_EXE_natter"),
        net.client_config.display(),
        net.data(user).display()
    );
    for b in bootstrap {
        line.push_str(&format!(" --bootstrap {b}"));
    }
    let log: &Path = &net.dir.path().join(format!("{user}-tui.log"));
    line.push_str(&format!(" 2>>'{}'", log.display()));
    line
}
