//! The authority keeps every account across a restart, and an authority
//! killed with SIGKILL in the middle of a burst of registrations loses none
//! it had confirmed.

use crate::common::authority;

use natter::config::HostPort;
use natter::node::AuthorityConnection;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn restart_keeps_accounts_and_key() {
    let _turn = scenario!();
    let auth = authority::start(authority::policy()).await;
    let d = authority::device();
    let mut c = auth.connect(&d).await;
    for name in ["alice", "bob", "carol"] {
        c = auth.connect(&d).await;
        c.register(name, "password123").await.unwrap();
    }
    drop(c);
    let public = auth.public();
    let dir = auth.stop().await;

    let auth = authority::start_in(dir, authority::policy()).await;
    assert_eq!(auth.public(), public, "the authority key survives restarts");
    for name in ["alice", "bob", "carol"] {
        let mut c = auth.connect(&d).await;
        let cert = c.login(name, "password123").await.unwrap();
        assert_eq!(cert.username, name);
    }
    assert_eq!(auth.handle.store().count_accounts().unwrap(), 3);
    auth.stop().await;
}

struct Authority {
    child: Child,
    server: HostPort,
    key: [u8; 32],
}

fn spawn_authority(dir: &std::path::Path) -> Authority {
    let config = dir.join("natter.toml");
    std::fs::write(
        &config,
        "[authority]\nlisten = \"127.0.0.1:0\"\nregistrations_per_hour_per_address = 0\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_natter"))
        .args(["--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir)
        .args(["--log-level", "warn", "--authority"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut key = None;
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(k) = line.strip_prefix("authority public key: ") {
            key = natter::wire::hex_decode::<32>(k);
        }
        if let Some(a) = line.strip_prefix("listening on ") {
            addr = Some(a.parse::<HostPort>().unwrap());
            break;
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Authority {
        child,
        server: addr.expect("authority printed its address"),
        key: key.expect("authority printed its key"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_registration_burst_loses_nothing_confirmed() {
    let _turn = scenario!();
    let dir = tempfile::tempdir().unwrap();
    let mut auth = spawn_authority(dir.path());
    let confirmed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let clock: Arc<dyn natter::clock::Clock> = Arc::new(natter::clock::SystemClock);

    let mut workers = Vec::new();
    for w in 0..6 {
        let (server, key, confirmed, clock) = (
            auth.server.clone(),
            auth.key,
            confirmed.clone(),
            clock.clone(),
        );
        workers.push(tokio::spawn(async move {
            let d = authority::device();
            for i in 0.. {
                let name = format!("w{w}u{i}");
                let Ok(mut c) = AuthorityConnection::connect(&server, key, &d, clock.clone()).await
                else {
                    return;
                };
                match c.register(&name, "password123").await {
                    Ok(n) => confirmed.lock().unwrap().push(n),
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill once a good number of registrations were confirmed, mid-burst.
    for _ in 0..600 {
        if confirmed.lock().unwrap().len() >= 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    auth.child.kill().unwrap(); // SIGKILL
    auth.child.wait().unwrap();
    for w in workers {
        w.await.unwrap();
    }
    let confirmed = confirmed.lock().unwrap().clone();
    assert!(
        confirmed.len() >= 40,
        "only {} confirmed before the kill",
        confirmed.len()
    );

    // The database after the crash holds every confirmed account.
    let store = natter::authority::Store::open(&dir.path().join("authority.db")).unwrap();
    let present: std::collections::HashSet<String> =
        store.usernames().unwrap().into_iter().collect();
    let lost: Vec<_> = confirmed.iter().filter(|n| !present.contains(*n)).collect();
    assert!(lost.is_empty(), "lost confirmed registrations: {lost:?}");
    drop(store);

    // And a restarted authority serves them: log in as one of them.
    let mut auth = spawn_authority(dir.path());
    let d = authority::device();
    let mut c = AuthorityConnection::connect(&auth.server, auth.key, &d, clock.clone())
        .await
        .unwrap();
    let cert = c
        .login(&confirmed[confirmed.len() - 1], "password123")
        .await
        .unwrap();
    assert_eq!(cert.username, confirmed[confirmed.len() - 1]);
    auth.child.kill().unwrap();
    auth.child.wait().unwrap();
}
