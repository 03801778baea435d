//! Authority throughput: password logins per second, renewals per second,
//! and the bytes one login puts on the wire. Real TCP on loopback and a real
//! SQLite file. Run: `cargo bench --bench authority` (release build).
//! Optional args: `<seconds per phase> <concurrent clients>`.

use natter::authority::{AuthorityServer, Policy, Store};
use natter::clock::{Clock, SystemClock};
use natter::config::HostPort;
use natter::identity::{AuthorityKey, DeviceIdentity};
use natter::node::AuthorityConnection;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs benches without `--bench`: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run it with `cargo bench`");
        return;
    }
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let clients: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(8);

    let dir = tempfile::tempdir().unwrap();
    let key = AuthorityKey::generate(&mut rand::rngs::OsRng);
    let store = Store::open(&dir.path().join("authority.db")).unwrap();
    let mut policy = Policy::default();
    policy.throttle.registrations_per_hour = 0;
    policy.max_requests_per_connection = u32::MAX;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let server = AuthorityServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        key.clone(),
        store,
        policy,
        clock.clone(),
        4096,
    )
    .await
    .unwrap();
    let addr = HostPort {
        host: "127.0.0.1".into(),
        port: server.local_addr().port(),
    };
    tokio::spawn(server.run(std::future::pending()));
    let public = key.public();

    // Accounts and one device per client.
    let mut devices = Vec::new();
    for i in 0..clients {
        let d = DeviceIdentity::generate(&mut rand::rngs::OsRng);
        let mut c = AuthorityConnection::connect(&addr, public, &d, clock.clone())
            .await
            .unwrap();
        c.register(&format!("bench{i}"), "benchmark-password")
            .await
            .unwrap();
        devices.push(d);
    }

    // Bytes on the wire for one complete login (handshake + request + answer).
    let d = &devices[0];
    let t = Instant::now();
    let mut c = AuthorityConnection::connect(&addr, public, d, clock.clone())
        .await
        .unwrap();
    let cert = c.login("bench0", "benchmark-password").await.unwrap();
    let one_login = t.elapsed();
    let login_bytes = (c.bytes_sent, c.bytes_received);
    let t = Instant::now();
    let mut c = AuthorityConnection::connect(&addr, public, d, clock.clone())
        .await
        .unwrap();
    c.renew(&cert).await.unwrap();
    let one_renewal = t.elapsed();
    let renew_bytes = (c.bytes_sent, c.bytes_received);

    let logins = phase(secs, &devices, &addr, public, &clock, false).await;
    let renewals = phase(secs, &devices, &addr, public, &clock, true).await;

    println!(
        "authority benchmark: {clients} concurrent clients, {secs} s per phase, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("password logins/s (new connection each): {:.1}", logins);
    println!("renewals/s (new connection each):        {:.1}", renewals);
    println!(
        "ratio renewals/logins:                   {:.1}x",
        renewals / logins.max(0.001)
    );
    println!(
        "one login:   {} bytes up + {} bytes down = {} bytes, {:.1} ms",
        login_bytes.0,
        login_bytes.1,
        login_bytes.0 + login_bytes.1,
        one_login.as_secs_f64() * 1000.0
    );
    println!(
        "one renewal: {} bytes up + {} bytes down = {} bytes, {:.1} ms",
        renew_bytes.0,
        renew_bytes.1,
        renew_bytes.0 + renew_bytes.1,
        one_renewal.as_secs_f64() * 1000.0
    );
}

async fn phase(
    secs: u64,
    devices: &[DeviceIdentity],
    addr: &HostPort,
    public: [u8; 32],
    clock: &Arc<dyn Clock>,
    renew: bool,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let (d, addr, clock, done) = (d.clone(), addr.clone(), clock.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let name = format!("bench{i}");
            let mut c = AuthorityConnection::connect(&addr, public, &d, clock.clone())
                .await
                .unwrap();
            let cert = c.login(&name, "benchmark-password").await.unwrap();
            while Instant::now() < deadline {
                let mut c = AuthorityConnection::connect(&addr, public, &d, clock.clone())
                    .await
                    .unwrap();
                if renew {
                    c.renew(&cert).await.unwrap();
                } else {
                    c.login(&name, "benchmark-password").await.unwrap();
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}
