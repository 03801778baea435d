//! `natter --supernode`: load this device's identity and certificate
//! (renewed while it runs), start the supernode driver (overlay,
//! directory, STUN, TURN relay) and log what it reports. A supernode is no
//! front end: it drives the node directly. Headless clients that
//! volunteer start one beside them through [`start`].

use anyhow::{Context, Result, bail};
use natter::clock::{Clock, SystemClock};
use natter::config::{Config, HostPort};
use natter::identity::revocation::FETCH_INTERVAL_MS;
use natter::identity::{Certificate, DeviceIdentity, Role, cert::fmt_time};
use natter::link::{LinkConfig, LinkEndpoint};
use natter::metrics::supernode::RelayCounters;
use natter::nat::{StunServer, StunServerConfig};
use natter::node::client::resolve;
use natter::node::driver::{Command, Event, OverlayNode, SupernodeOptions};
use natter::node::{AuthorityConnection, DeviceFiles};
use natter::overlay::{SupernodeConfig, SupernodeCore, SupernodeEvent};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// The device's identity and a certificate valid for a while, renewed
/// with the device key when close to expiry.
async fn credentials(
    config: &Config,
    data_dir: &Path,
) -> Result<(DeviceIdentity, Certificate, [u8; 32])> {
    let files = DeviceFiles::new(data_dir);
    let (device, _) = files.identity()?;
    let key = config
        .login
        .authority_key
        .context("no authority key pinned: set [login] authority_key in the config")?
        .0;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.unix_secs();
    let renew_before = config.login.renew_before.0.as_secs();
    let usable = files.certificate()?.filter(|c| c.verify(&key, now).is_ok());
    let cert = match usable {
        Some(c) if c.not_after > (now + renew_before).get() => c,
        Some(c) => {
            let mut conn =
                AuthorityConnection::connect_any(&config.login.server, key, &device, clock.clone())
                    .await?;
            let fresh = conn.renew(&c).await.context("renewing the certificate")?;
            files.save_certificate(&fresh)?;
            fresh
        }
        None => bail!("no valid certificate on this device: run `natter login USER` first"),
    };
    Ok((device, cert, key))
}

/// Keep the certificate fresh while a node runs.
fn spawn_renewal(
    config: Config,
    data_dir: std::path::PathBuf,
    device: DeviceIdentity,
    key: [u8; 32],
    commands: tokio::sync::mpsc::Sender<Command>,
) {
    tokio::spawn(async move {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let files = DeviceFiles::new(&data_dir);
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(300)).await;
            let Ok(Some(cert)) = files.certificate() else {
                continue;
            };
            if cert.not_after > clock.unix_secs().get() + config.login.renew_before.0.as_secs() {
                continue;
            }
            let renewed = async {
                let mut c = AuthorityConnection::connect_any(
                    &config.login.server,
                    key,
                    &device,
                    clock.clone(),
                )
                .await?;
                c.renew(&cert).await
            }
            .await;
            match renewed {
                Ok(fresh) => {
                    let _ = files.save_certificate(&fresh);
                    tracing::info!(until = %fmt_time(fresh.not_after), "certificate renewed");
                    if commands
                        .send(Command::SetCertificate {
                            cert: Box::new(fresh),
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => tracing::warn!("certificate renewal failed (will retry): {e}"),
            }
        }
    });
}

/// Fetch the authority's signed revocation list at start and every
/// [`FETCH_INTERVAL_MS`] and hand it to the node, which refuses the
/// devices and accounts it names and closes their sessions: a revoked
/// device or a disabled account is refused within a minute. A failed
/// fetch is logged and tried again at the next interval (the node keeps
/// the last list it took).
fn spawn_revocations(
    config: Config,
    data_dir: std::path::PathBuf,
    device: DeviceIdentity,
    key: [u8; 32],
    commands: tokio::sync::mpsc::Sender<Command>,
) {
    tokio::spawn(async move {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let files = DeviceFiles::new(&data_dir);
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(FETCH_INTERVAL_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Ok(Some(cert)) = files.certificate() else {
                continue;
            };
            let fetched = async {
                let mut c = AuthorityConnection::connect_any(
                    &config.login.server,
                    key,
                    &device,
                    clock.clone(),
                )
                .await?;
                c.revocations(&cert).await
            }
            .await;
            match fetched {
                Ok(list) => {
                    if commands
                        .send(Command::SetRevocations { list })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => tracing::warn!("revocation list fetch failed (will retry): {e}"),
            }
        }
    });
}

/// The extra sockets of RFC 5780 behaviour discovery, when the config
/// gives the supernode a second address.
async fn alt_sockets(
    stun: StunServerConfig,
    local: SocketAddr,
) -> Result<Vec<tokio::net::UdpSocket>> {
    let Some(alt) = stun.alt else {
        return Ok(Vec::new());
    };
    if local.ip().is_unspecified() {
        bail!(
            "[supernode] alt_address needs a listen address on a specific IP (not {local}): RFC 5780 answers name the address they come from"
        );
    }
    if alt.ip() == local.ip() || alt.port() == local.port() {
        bail!(
            "[supernode] alt_address/alt_port ({alt}) must differ from the listen address ({local}) in both IP and port"
        );
    }
    let mut sockets = Vec::new();
    for a in StunServer::new(stun).extra_sockets() {
        let s = tokio::net::UdpSocket::bind(a)
            .await
            .with_context(|| format!("binding the RFC 5780 STUN socket {a}"))?;
        sockets.push(s);
    }
    Ok(sockets)
}

/// Start a supernode node on `listen`; returns it, its advertised address
/// and its ring id.
pub(crate) async fn start(
    config: &Config,
    device: &DeviceIdentity,
    cert: &Certificate,
    key: [u8; 32],
    listen: SocketAddr,
    boot: Vec<SocketAddr>,
    mailbox: Option<&Path>,
) -> Result<(OverlayNode, SocketAddr, u64)> {
    let sc = &config.supernode;
    let want_tcp = config.relay.tcp && !config.relay.secret.is_empty();
    let (socket, tcp) = natter::node::turn::bind_udp_tcp(listen, want_tcp).await?;
    let local = socket.local_addr()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now();
    let cfg = SupernodeConfig {
        max_clients: sc.max_clients,
        replicas: sc.replicas.max(1),
        ..Default::default()
    };
    // The advertised address: the bound one, unless bound to any.
    let advertised = if local.ip().is_unspecified() {
        let ip = sc.advertise.unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
        SocketAddr::new(ip, local.port())
    } else {
        local
    };
    let incarnation = clock.unix_secs().get() as u32;
    let extra_relays = resolve(&config.relay.servers).await;
    let mut nonce_key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce_key);
    let (turn, relay) = natter::node::turn::supernode_setup(
        &config.relay,
        local,
        advertised,
        extra_relays,
        tcp,
        nonce_key,
        now,
    )
    .await?;
    match &turn {
        Some(t) => tracing::info!(
            realm = %config.relay.realm,
            tcp = t.tcp.is_some(),
            "TURN relay on {advertised}"
        ),
        None => tracing::warn!("no TURN relay: [relay] secret is not set"),
    }
    let cfg = SupernodeConfig {
        relay,
        aliases: aliases(local, advertised, &config.relay),
        ..cfg
    };
    let link_config = cfg.link_config(LinkConfig::default());
    let core = SupernodeCore::new(key, cert, advertised, boot, cfg, incarnation, now);
    let id = core.me;
    let link = LinkEndpoint::new(device.clone(), cert.clone(), key, link_config)?;
    let stun = StunServerConfig {
        primary: local,
        alt: sc.alt(local),
    };
    let stun_sockets = alt_sockets(stun, local).await?;
    let opts = SupernodeOptions {
        stun: Some(stun),
        stun_sockets,
        turn,
        mailbox: mailbox.map(|d| d.join(natter_mailbox_file())),
    };
    let node = OverlayNode::supernode(socket, link, core, clock, opts)?;
    Ok((node, advertised, id))
}

/// Serve the node's counters at `addr`/metrics while it runs.
async fn serve_metrics(addr: SocketAddr, node: &OverlayNode) -> Result<()> {
    let listener = natter::metrics::bind(addr).await?;
    println!("metrics on http://{}/metrics", listener.local_addr()?);
    let commands = node.commands.clone();
    let turn = node.turn.clone();
    let collect = move || {
        let (commands, turn) = (commands.clone(), turn.clone());
        async move {
            let (reply, rx) = tokio::sync::oneshot::channel();
            let counters = match commands.send(Command::Status { reply }).await {
                Ok(()) => rx.await.ok().and_then(|s| s.counters),
                Err(_) => None,
            };
            let relay = match &turn {
                Some(t) => t.stats().await.map(|turn| RelayCounters {
                    turn,
                    queue_drops: t.queue_drops(),
                    tcp: t.tcp_stats(),
                }),
                None => None,
            };
            let counters = counters.unwrap_or_default();
            natter::metrics::supernode::exposition(&counters, relay.as_ref())
        }
    };
    tokio::spawn(natter::metrics::serve(
        listener,
        collect,
        std::future::pending(),
    ));
    Ok(())
}

pub async fn run(
    config: &Config,
    data_dir: &Path,
    listen: Option<SocketAddr>,
    bootstrap: Vec<HostPort>,
) -> Result<()> {
    let (device, cert, key) = credentials(config, data_dir).await?;
    if cert.role != Role::Supernode {
        bail!(
            "the certificate of {} has the {} role; a supernode needs the supernode role (on the authority: `natter admin set-role {} supernode`, then `natter login {}` here)",
            cert.username,
            cert.role.as_str(),
            cert.username,
            cert.username
        );
    }
    let sc = &config.supernode;
    let listen = listen.unwrap_or(sc.listen);
    let boot_list = if bootstrap.is_empty() {
        sc.bootstrap.clone()
    } else {
        bootstrap
    };
    let boot = resolve(&boot_list).await;
    let (mut node, advertised, id) =
        start(config, &device, &cert, key, listen, boot, Some(data_dir)).await?;
    println!("supernode {} ({id:016x})", cert.username);
    println!("listening on {advertised}");
    match config.supernode.alt(advertised) {
        Some(alt) => println!(
            "STUN with RFC 5780 behaviour discovery on {advertised}, {}:{}, {}:{}, {alt}",
            advertised.ip(),
            alt.port(),
            alt.ip(),
            advertised.port()
        ),
        None => println!("STUN on {advertised} (no second address: no RFC 5780 tests)"),
    }
    if let Some(addr) = config.metrics.listen {
        serve_metrics(addr, &node).await?;
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    spawn_renewal(
        config.clone(),
        data_dir.to_owned(),
        device.clone(),
        key,
        node.commands.clone(),
    );
    spawn_revocations(
        config.clone(),
        data_dir.to_owned(),
        device,
        key,
        node.commands.clone(),
    );
    // A finished future must not be polled again: once the signal came,
    // only the node's events are awaited until it has stopped.
    let mut stop = Box::pin(crate::shutdown_signal());
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = &mut stop, if !stopping => {
                stopping = true;
                let _ = node.commands.send(Command::Shutdown).await;
            }
            ev = node.events.recv() => match ev {
                None | Some(Event::Stopped) => break,
                Some(Event::Supernode(e)) => match e {
                    SupernodeEvent::Joined => tracing::info!("joined the overlay"),
                    SupernodeEvent::MemberUp { id } => tracing::info!("supernode {id:016x} up"),
                    SupernodeEvent::MemberDown { id, addr } => tracing::info!("supernode {id:016x} at {addr} down"),
                    SupernodeEvent::ClientAttached { addr, username } => tracing::info!(%addr, "client {username} attached"),
                    SupernodeEvent::ClientDetached { addr, username } => tracing::info!(%addr, "client {username} detached"),
                    SupernodeEvent::ClientRefused { addr } => tracing::info!(%addr, "client refused: full"),
                },
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// The durable mailbox's file name in the data directory.
fn natter_mailbox_file() -> &'static str {
    natter::node::mailbox::FILE
}

/// The addresses other than `advertised` that clients may reach us at:
/// every interface address (when bound to "any") and the relay's public
/// ones, at our port.
fn aliases(
    local: SocketAddr,
    advertised: SocketAddr,
    relay: &natter::config::RelaySection,
) -> Vec<SocketAddr> {
    let mut ips = if local.ip().is_unspecified() {
        natter::socket::interface_addrs()
    } else {
        Vec::new()
    };
    ips.extend(relay.public_ip);
    ips.extend(relay.public_ipv6.map(std::net::IpAddr::V6));
    let mut out: Vec<SocketAddr> = Vec::new();
    for ip in ips {
        let a = SocketAddr::new(ip, local.port());
        if a != advertised && !out.contains(&a) {
            out.push(a);
        }
    }
    out
}
