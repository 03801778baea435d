//! A throwaway PostgreSQL server from Debian's `postgresql` package: a
//! cluster made by `initdb` in a temporary directory, listening on
//! 127.0.0.1 on a free port with password (scram) authentication, and
//! stopped when dropped (a failing test's too). As root, the server runs
//! as the `postgres` user (PostgreSQL refuses to run as root).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The superuser the tests connect as, and its password.
pub const USER: &str = "natter";
pub const PASSWORD: &str = "natter-test-password";

pub struct Postgres {
    bin: PathBuf,
    /// The cluster's files (data, socket, log), removed on drop.
    dir: tempfile::TempDir,
    /// Run the server's tools as this user (root only).
    run_as: Option<String>,
    pub port: u16,
    /// A file holding [`PASSWORD`], for `database_password_file`.
    pub password_file: PathBuf,
}

/// The newest PostgreSQL's binaries directory, or `None` (with a message
/// saying the test is skipped and why).
fn binaries() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    let bin = found.pop().map(|(_, b)| b);
    if bin.is_none() {
        eprintln!(
            "SKIPPED: PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; apt-get install postgresql)"
        );
    }
    bin
}

impl Postgres {
    /// Make and start a cluster; `None` if PostgreSQL is not installed.
    pub fn start() -> Option<Postgres> {
        let bin = binaries()?;
        let dir = tempfile::tempdir().unwrap();
        let root = unsafe { libc::geteuid() } == 0;
        let run_as = root.then(|| "postgres".to_owned());
        let data = dir.path().join("data");
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
        if let Some(user) = &run_as {
            // The cluster's user owns the directory; others may enter it
            // (root's processes read the password file and the log).
            let out = Command::new("chown")
                .args(["-R", user])
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "chown: {out:?}");
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let port = crate::common::relay::free_port();
        let pg = Postgres {
            bin,
            dir,
            run_as,
            port,
            password_file,
        };
        pg.tool(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                USER,
                "--auth=scram-sha-256",
                "--pwfile",
                pg.password_file.to_str().unwrap(),
                "--no-sync",
                "--no-instructions",
            ],
        );
        let opts = format!(
            "-h 127.0.0.1 -p {port} -k {} -c max_connections=100",
            pg.dir.path().display()
        );
        pg.tool(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                pg.dir.path().join("server.log").to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        Some(pg)
    }

    /// Run one of PostgreSQL's programs (as the cluster's user), which
    /// must succeed.
    fn tool(&self, name: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(name);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name} {args:?}: {}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
        out
    }

    /// The URL an authority uses (the password comes from the file).
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let exe = self.bin.join("pg_ctl");
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let _ = cmd
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}
