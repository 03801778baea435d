//! Two authority processes (the real binary) on one PostgreSQL server and
//! one key file: a name registered through one is taken at the other, a
//! lockout earned through one holds at the other, and when one is killed
//! with SIGKILL in the middle of a burst of registrations and logins every
//! registration it confirmed is still there and clients carry on through
//! the other.

use crate::common::authority::device;
use crate::common::postgres::Postgres;
use crate::common::procs::{Proc, natter};
use natter::authority::RejectCode;
use natter::config::{Authorities, HostPort};
use natter::node::{AuthorityConnection, LoginError};
use natter::time::UnixSecs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

struct Authority {
    proc: Proc,
    addr: HostPort,
    key: [u8; 32],
}

/// An authority on `pg`, with its own data dir and the shared key file.
fn authority(dir: &Path, name: &str, pg: &Postgres, key_file: &Path) -> Authority {
    let db = format!(
        "database = \"{}\"\ndatabase_password_file = \"{}\"\n",
        pg.url(),
        pg.password_file.display()
    );
    authority_on(dir, name, &db, key_file)
}

/// An authority with `db` (the `database` keys) in its config.
fn authority_on(dir: &Path, name: &str, db: &str, key_file: &Path) -> Authority {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[authority]\nlisten = \"127.0.0.1:0\"\n{db}key_file = \"{}\"\nregistrations_per_hour_per_address = 0\n",
            key_file.display()
        ),
    )
    .unwrap();
    let mut cmd = natter();
    cmd.arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join(name))
        .arg("--authority");
    let proc = Proc::spawn(name, cmd, &dir.join(format!("{name}.log")));
    let key = proc.wait_for(Duration::from_secs(30), |l| {
        l.starts_with("authority public key: ")
    });
    let key =
        natter::wire::hex_decode::<32>(key.trim_start_matches("authority public key: ")).unwrap();
    let addr = proc.wait_for(Duration::from_secs(30), |l| l.starts_with("listening on "));
    let addr = addr.trim_start_matches("listening on ").parse().unwrap();
    Authority { proc, addr, key }
}

fn clock() -> Arc<dyn natter::clock::Clock> {
    Arc::new(natter::clock::SystemClock)
}

/// The connection failed, not the request: worth another try elsewhere.
fn lost(e: &LoginError) -> bool {
    matches!(
        e,
        LoginError::Connect { .. }
            | LoginError::Io(_)
            | LoginError::Closed
            | LoginError::Timeout(_)
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Registration {
    /// The authority answered "registered".
    Confirmed,
    /// A connection broke during the first try and the retry found the name
    /// taken: the first try committed without its answer arriving.
    Unconfirmed,
}

/// Register `user` and log it in, through `servers` in order, retrying on
/// the next when a connection breaks (as a client does).
async fn register_and_login(
    servers: &Authorities,
    key: [u8; 32],
    user: &str,
    confirmed: &AtomicUsize,
    tenth: &tokio::sync::Notify,
) -> Registration {
    let d = device();
    let mut outcome = None;
    for _ in 0..3 {
        let r = async {
            let mut c = AuthorityConnection::connect_any(servers, key, &d, clock()).await?;
            c.register(user, "password123").await
        }
        .await;
        match r {
            Ok(_) => {
                if confirmed.fetch_add(1, Ordering::SeqCst) + 1 == 10 {
                    tenth.notify_one();
                }
                outcome = Some(Registration::Confirmed);
                break;
            }
            Err(e) if e.reject_code() == Some(RejectCode::UsernameTaken) => {
                outcome = Some(Registration::Unconfirmed);
                break;
            }
            Err(e) if lost(&e) => continue,
            Err(e) => panic!("{user}: registration refused: {e}"),
        }
    }
    let outcome = outcome.unwrap_or_else(|| panic!("{user}: no registration after 3 tries"));
    for attempt in 0.. {
        let r = async {
            let mut c = AuthorityConnection::connect_any(servers, key, &d, clock()).await?;
            c.login(user, "password123").await
        }
        .await;
        match r {
            Ok(cert) => {
                assert_eq!(cert.username, user);
                return outcome;
            }
            Err(e) if lost(&e) && attempt < 3 => continue,
            Err(e) => panic!("{user}: login failed: {e}"),
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_authorities_share_accounts_and_survive_a_sigkill() {
    let _turn = scenario!();
    let Some(pg) = Postgres::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("authority.key");
    let mut a = authority(dir.path(), "authority-ha-a", &pg, &key_file);
    let mut b = authority(dir.path(), "authority-ha-b", &pg, &key_file);
    assert_eq!(a.key, b.key, "one key file, one authority key");
    let key = a.key;
    let only_a = Authorities(vec![a.addr.clone()]);
    let only_b = Authorities(vec![b.addr.clone()]);

    // A name registered through one authority is taken at the other, and
    // logs in there.
    let d = device();
    let mut c = AuthorityConnection::connect_any(&only_a, key, &d, clock())
        .await
        .unwrap();
    c.register("shared", "password123").await.unwrap();
    let mut c = AuthorityConnection::connect_any(&only_b, key, &d, clock())
        .await
        .unwrap();
    let e = c.register("shared", "password456").await.unwrap_err();
    assert_eq!(e.reject_code(), Some(RejectCode::UsernameTaken), "{e}");
    let mut c = AuthorityConnection::connect_any(&only_b, key, &d, clock())
        .await
        .unwrap();
    assert_eq!(
        c.login("shared", "password123").await.unwrap().username,
        "shared"
    );

    // The same new name through both at once: exactly one wins.
    let race = |servers: Authorities| async move {
        let mut c = AuthorityConnection::connect_any(&servers, key, &device(), clock())
            .await
            .unwrap();
        c.register("raced", "password123").await
    };
    let (ra, rb) = tokio::join!(race(only_a.clone()), race(only_b.clone()));
    let wins = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "{ra:?} {rb:?}");
    let lost_race = if ra.is_err() { ra } else { rb }.unwrap_err();
    assert_eq!(lost_race.reject_code(), Some(RejectCode::UsernameTaken));

    // Five wrong passwords through A lock the account at B too.
    for _ in 0..5 {
        let mut c = AuthorityConnection::connect_any(&only_a, key, &device(), clock())
            .await
            .unwrap();
        let e = c.login("shared", "wrong-password").await.unwrap_err();
        assert_eq!(e.reject_code(), Some(RejectCode::InvalidCredentials), "{e}");
    }
    let mut c = AuthorityConnection::connect_any(&only_b, key, &device(), clock())
        .await
        .unwrap();
    let e = c.login("shared", "password123").await.unwrap_err();
    assert_eq!(e.reject_code(), Some(RejectCode::Throttled), "{e}");
    // The owner's device, known from its login through B, is not held back
    // at A (known devices are shared too).
    let mut c = AuthorityConnection::connect_any(&only_a, key, &d, clock())
        .await
        .unwrap();
    assert_eq!(
        c.login("shared", "password123").await.unwrap().username,
        "shared"
    );

    // The burst: 40 clients, half listing A first and half B first; A is
    // killed with SIGKILL once 10 registrations are confirmed.
    let ab = Authorities(vec![a.addr.clone(), b.addr.clone()]);
    let ba = Authorities(vec![b.addr.clone(), a.addr.clone()]);
    let confirmed = Arc::new(AtomicUsize::new(0));
    let tenth = Arc::new(tokio::sync::Notify::new());
    let limit = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let servers = if i % 2 == 0 { ab.clone() } else { ba.clone() };
        let (confirmed, limit, tenth) = (confirmed.clone(), limit.clone(), tenth.clone());
        tasks.push(tokio::spawn(async move {
            let _slot = limit.acquire().await.unwrap();
            let user = format!("user{i:02}");
            let r = register_and_login(&servers, key, &user, &confirmed, &tenth).await;
            (user, r)
        }));
    }
    tenth.notified().await;
    a.proc.kill();
    let at_kill = confirmed.load(Ordering::SeqCst);
    assert!(at_kill < 40, "the kill came after the burst");
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let done = results
        .iter()
        .filter(|(_, r)| *r == Registration::Confirmed)
        .count();
    eprintln!(
        "authority-ha: A killed after {at_kill} confirmed registrations; {done} confirmed, {} unconfirmed but present",
        results.len() - done
    );

    // Every registration is there: each user logs in through B alone.
    for (user, _) in &results {
        let mut c = AuthorityConnection::connect_any(&only_b, key, &device(), clock())
            .await
            .unwrap();
        let cert = c
            .login(user, "password123")
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        assert_eq!(&cert.username, user);
    }

    // The real client, configured with the dead authority first, logs in
    // through the other.
    let client_config = dir.path().join("client.toml");
    std::fs::write(
        &client_config,
        format!(
            "[login]\nserver = [\"{}\", \"{}\"]\nauthority_key = \"{}\"\n",
            a.addr,
            b.addr,
            natter::wire::hex_encode(&key)
        ),
    )
    .unwrap();
    let out = run(
        &client_config,
        &dir.path().join("cli"),
        &["login", "user07", "--password-stdin"],
        "password123\n",
    );
    assert!(out.contains("logged in as user07"), "{out}");

    // `natter admin` works on the shared database.
    let admin_config = dir.path().join("authority-ha-b.toml");
    let out = run(
        &admin_config,
        &dir.path().join("authority-ha-b"),
        &["admin", "list"],
        "",
    );
    let listed: Vec<&str> = out.lines().collect();
    assert_eq!(listed.len(), 42, "shared, raced and 40 users: {out}");
    assert!(listed.contains(&"user39") && listed.contains(&"raced"));
    b.proc.kill();
    drop(pg);
}

/// Run `natter` with a config and data dir; its stdout (it must succeed).
fn run(config: &PathBuf, data_dir: &Path, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = natter()
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
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
        "natter {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Password logins and renewals per second (each on a new connection) by
/// `clients` concurrent clients spread over `servers`.
async fn rates(
    servers: &[HostPort],
    key: [u8; 32],
    prefix: &str,
    clients: usize,
    secs: u64,
) -> (f64, f64) {
    let mut devices = Vec::new();
    for i in 0..clients {
        let d = device();
        let list = Authorities(vec![servers[i % servers.len()].clone()]);
        let mut c = AuthorityConnection::connect_any(&list, key, &d, clock())
            .await
            .unwrap();
        c.register(&format!("{prefix}{i}"), "benchmark-password")
            .await
            .unwrap();
        let mut c = AuthorityConnection::connect_any(&list, key, &d, clock())
            .await
            .unwrap();
        let cert = c
            .login(&format!("{prefix}{i}"), "benchmark-password")
            .await
            .unwrap();
        devices.push((list, d, cert));
    }
    let mut out = [0.0; 2];
    for (phase, rate) in out.iter_mut().enumerate() {
        let done = Arc::new(AtomicUsize::new(0));
        let start = std::time::Instant::now();
        let deadline = start + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for (i, (list, d, cert)) in devices.iter().cloned().enumerate() {
            let (done, prefix) = (done.clone(), prefix.to_owned());
            tasks.push(tokio::spawn(async move {
                while std::time::Instant::now() < deadline {
                    let mut c = AuthorityConnection::connect_any(&list, key, &d, clock())
                        .await
                        .unwrap();
                    if phase == 0 {
                        c.login(&format!("{prefix}{i}"), "benchmark-password")
                            .await
                            .unwrap();
                    } else {
                        c.renew(&cert).await.unwrap();
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        *rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    }
    (out[0], out[1])
}

/// The figures for the HA setup: one and two authority processes on
/// PostgreSQL, one on SQLite for reference. Run:
/// `cargo test --test it authority_ha::bench -- --ignored --nocapture`
/// (`NATTER_BENCH_SECS`, default 5 s per phase; 8 clients).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: NATTER_BENCH_SECS=5 cargo test --test it authority_ha::bench -- --ignored --nocapture"]
async fn bench_logins_and_renewals() {
    let _turn = scenario!();
    let Some(pg) = Postgres::start() else { return };
    let secs = std::env::var("NATTER_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let clients = 8;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("authority.key");
    let mut lines = Vec::new();

    let sqlite = authority_on(dir.path(), "authority-ha-sqlite", "", &key_file);
    let (l, r) = rates(
        std::slice::from_ref(&sqlite.addr),
        sqlite.key,
        "sqlite",
        clients,
        secs,
    )
    .await;
    lines.push(format!(
        "SQLite, 1 authority:     {l:7.1} logins/s {r:8.1} renewals/s"
    ));
    drop(sqlite);

    let a = authority(dir.path(), "authority-ha-a", &pg, &key_file);
    let (l, r) = rates(std::slice::from_ref(&a.addr), a.key, "one", clients, secs).await;
    lines.push(format!(
        "PostgreSQL, 1 authority: {l:7.1} logins/s {r:8.1} renewals/s"
    ));
    let b = authority(dir.path(), "authority-ha-b", &pg, &key_file);
    let servers = [a.addr.clone(), b.addr.clone()];
    let (l, r) = rates(&servers, a.key, "two", clients, secs).await;
    lines.push(format!(
        "PostgreSQL, 2 authorities: {l:5.1} logins/s {r:8.1} renewals/s"
    ));
    println!(
        "authority_ha benchmark: {clients} clients, {secs} s per phase, {} cores, debug build (deps at opt-level 2)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for l in lines {
        println!("  {l}");
    }
    drop((a, b, pg));
}

/// Issue 14.9 on PostgreSQL: the device table, revocation, the
/// revocation list's queries and a password change behave as on SQLite.
#[test]
fn devices_and_revocation_on_postgres() {
    use natter::authority::store::{DeviceState, RevokeOutcome, hash_password};
    let _turn = scenario!();
    let Some(pg) = Postgres::start() else { return };
    let db: natter::authority::Database = pg.url().parse().unwrap();
    let s = natter::authority::Store::open_database(&db, Some(&pg.password_file)).unwrap();
    let alice: natter::identity::Username = "alice".parse().unwrap();
    assert!(
        s.insert_account(&alice, &hash_password("password1").unwrap(), UnixSecs(1))
            .unwrap()
    );
    assert_eq!(
        s.device_seen(&alice, &[1; 32], "laptop", UnixSecs(10))
            .unwrap(),
        DeviceState::Active
    );
    assert_eq!(
        s.device_seen(&alice, &[2; 32], "", UnixSecs(20)).unwrap(),
        DeviceState::Active
    );
    s.device_seen(&alice, &[1; 32], "", UnixSecs(30)).unwrap();
    let ds = s.devices(&alice).unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(
        (ds[0].name.as_str(), ds[0].last_seen),
        ("laptop", UnixSecs(30))
    );
    assert_eq!(ds[1].name, "device-02020202");
    assert_eq!(
        s.revoke_device(&alice, "nope", UnixSecs(40)).unwrap(),
        RevokeOutcome::NoSuchDevice
    );
    let RevokeOutcome::Revoked(d) = s.revoke_device(&alice, "0202", UnixSecs(40)).unwrap() else {
        panic!("not revoked")
    };
    assert_eq!((d.ed25519, d.revoked_at), ([2; 32], Some(UnixSecs(40))));
    assert_eq!(
        s.device_seen(&alice, &[2; 32], "", UnixSecs(50)).unwrap(),
        DeviceState::Revoked
    );
    assert_eq!(
        s.revocations(UnixSecs(0), 100).unwrap().0,
        vec![("alice".to_owned(), [2; 32])]
    );
    s.set_disabled(&alice, true, UnixSecs(70)).unwrap();
    assert_eq!(
        s.revocations(UnixSecs(65), 100).unwrap().1,
        vec!["alice".to_owned()]
    );
    assert!(s.revocations(UnixSecs(75), 100).unwrap().1.is_empty());
    assert!(
        s.set_password_hash(&alice, &hash_password("password2").unwrap())
            .unwrap()
    );
    assert_eq!(s.check_password(&alice, "password1").unwrap(), Err(true));
    assert!(s.check_password(&alice, "password2").unwrap().is_ok());
    for i in 0..40u8 {
        s.device_seen(&alice, &[100 + i; 32], "", UnixSecs(100 + i as u64))
            .unwrap();
    }
    let ds = s.devices(&alice).unwrap();
    assert_eq!(ds.len(), natter::authority::store::MAX_DEVICES);
    assert_eq!(ds.iter().filter(|d| d.revoked_at.is_some()).count(), 1);
}
