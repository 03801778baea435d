//! `natter demo`: the embedded default network, needing no config.
//!
//! Today it runs a login authority on loopback with a throw-away data dir,
//! registers a local user, logs in, renews, and stays up so that other
//! terminals can register and log in against it. Supernodes, the echo
//! contact and the softphone UI join it as they land.

use anyhow::{Context, Result};
use natter::authority::{AuthorityServer, Policy, Store};
use natter::clock::{Clock, SystemClock};
use natter::config::HostPort;
use natter::identity::{AuthorityKey, cert::fmt_time};
use natter::node::{AuthorityConnection, DeviceFiles};
use natter::wire::hex_encode;
use std::sync::Arc;
use std::time::Instant;

pub async fn run(once: bool) -> Result<()> {
    let dir = tempfile_dir()?;
    let key = AuthorityKey::generate(&mut rand::rngs::OsRng);
    let store = Store::open(&dir.join("authority/authority.db"))?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let server = AuthorityServer::bind(
        "127.0.0.1:0".parse()?,
        key.clone(),
        store,
        Policy::default(),
        clock.clone(),
        256,
    )
    .await?;
    let port = server.local_addr().port();
    let addr = HostPort {
        host: "127.0.0.1".into(),
        port,
    };
    let public = key.public();
    tokio::spawn(server.run(std::future::pending()));
    println!(
        "natter demo: a local network on 127.0.0.1 (data in {})",
        dir.display()
    );
    println!(
        "  authority     127.0.0.1:{port}  key {}",
        hex_encode(&public)
    );

    let files = DeviceFiles::new(&dir.join("you"));
    let (device, _) = files.identity()?;
    let t = Instant::now();
    let mut c = AuthorityConnection::connect(&addr, public, &device, clock.clone()).await?;
    c.register("you", "demo-password").await?;
    let cert = c.login("you", "demo-password").await?;
    files.save_certificate(&cert)?;
    println!(
        "  logged in as  {} until {} ({:.0} ms, {} bytes on the wire)",
        cert.username,
        fmt_time(cert.not_after),
        t.elapsed().as_secs_f64() * 1000.0,
        c.bytes_sent + c.bytes_received
    );
    let t = Instant::now();
    let mut c = AuthorityConnection::connect(&addr, public, &device, clock.clone()).await?;
    let renewed = c.renew(&cert).await?;
    files.save_certificate(&renewed)?;
    println!(
        "  renewed       without the password in {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    if once {
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }
    println!();
    println!("Try it from another terminal:");
    println!(
        "  natter --data-dir /tmp/natter-bob register bob --server 127.0.0.1:{port} --authority-key {}",
        hex_encode(&public)
    );
    println!(
        "  natter --data-dir /tmp/natter-bob login bob --server 127.0.0.1:{port} --authority-key {}",
        hex_encode(&public)
    );
    println!("Ctrl-C stops the demo.");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("natter-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
