//! `natter --supernode` and `natter --headless`: load this device's
//! identity and certificate, start the overlay node, and (headless) turn
//! its events into lines or JSON for scripts and its stdin into commands.

use anyhow::{Context, Result, bail};
use natter::clock::{Clock, SystemClock};
use natter::config::{Config, HostPort};
use natter::identity::{Certificate, DeviceIdentity, Role, cert::fmt_time};
use natter::link::{LinkConfig, LinkEndpoint};
use natter::nat::{NatReport, StunServer, StunServerConfig};
use natter::node::overlay::{
    Command, Core, Event, NatOptions, NodeOptions, OverlayNode, PathOptions,
};
use natter::node::{AuthorityConnection, DeviceFiles};
use natter::overlay::{
    ClientConfig, ClientCore, ClientEvent, LookupOutcome, PresenceRecord, Status, SupernodeConfig,
    SupernodeCore, SupernodeEvent,
};
use natter::wire::hex_encode;
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::io::AsyncBufReadExt;

/// Options of the headless client.
#[derive(Debug, Default)]
pub struct Headless {
    pub user: Option<String>,
    pub lookup: Option<String>,
    pub watch: Vec<String>,
    /// Connect to this user peer to peer once online.
    pub connect: Option<String>,
    pub status: Option<Status>,
    pub json: bool,
    pub password_stdin: bool,
    pub bootstrap: Vec<HostPort>,
    pub listen: Option<SocketAddr>,
    /// STUN servers to measure the NAT against (else [nat] stun_servers,
    /// else the supernodes).
    pub stun_servers: Vec<HostPort>,
    /// Contact requests to send once online.
    pub add: Vec<String>,
    /// (user, text) messages to send once online.
    pub msg: Vec<(String, String)>,
    /// Show the real status in the directory record (to everyone).
    pub public_presence: bool,
    /// Idle time before the status becomes away (0: never).
    pub away_after: Option<std::time::Duration>,
    /// `--call`, `--play`, `--record`, `--hangup-after`, `--auto-answer`,
    /// `--echo`.
    pub calls: crate::call_cli::CallFlags,
}

async fn resolve(list: &[HostPort]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for hp in list {
        match tokio::net::lookup_host((hp.host.as_str(), hp.port)).await {
            Ok(addrs) => out.extend(addrs.filter(|a| a.is_ipv4())),
            Err(e) => tracing::warn!("cannot resolve {hp}: {e}"),
        }
    }
    out
}

/// The device's identity and a certificate valid for a while: renewed with
/// the device key when close to expiry, or (with a password) logged in.
async fn credentials(
    config: &Config,
    data_dir: &Path,
    user: Option<&str>,
    password_stdin: bool,
) -> Result<(DeviceIdentity, Certificate, [u8; 32])> {
    let files = DeviceFiles::new(data_dir);
    let (device, _) = files.identity()?;
    let key = config
        .login
        .authority_key
        .context("no authority key pinned: set [login] authority_key in the config")?
        .0;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now_secs();
    let renew_before = config.login.renew_before.0.as_secs();
    let cert = files.certificate()?;
    let usable = cert.as_ref().filter(|c| {
        c.verify(&key, now).is_ok() && user.is_none_or(|u| u.eq_ignore_ascii_case(&c.username))
    });
    let cert = match usable {
        Some(c) if c.not_after > now + renew_before => c.clone(),
        Some(c) => {
            let mut conn =
                AuthorityConnection::connect(&config.login.server, key, &device, clock.clone())
                    .await?;
            let fresh = conn.renew(c).await.context("renewing the certificate")?;
            files.save_certificate(&fresh)?;
            fresh
        }
        None if password_stdin => {
            let user = user.context("--user NAME is needed to log in")?;
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password")?;
            let mut conn =
                AuthorityConnection::connect(&config.login.server, key, &device, clock.clone())
                    .await?;
            let fresh = conn
                .login(user, line.trim_end_matches(['\r', '\n']))
                .await?;
            files.save_certificate(&fresh)?;
            fresh
        }
        None => bail!(
            "no valid certificate{} on this device: run `natter login USER` first (or pass --password-stdin)",
            user.map(|u| format!(" for {u}")).unwrap_or_default()
        ),
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
            if cert.not_after > clock.now_secs() + config.login.renew_before.0.as_secs() {
                continue;
            }
            let renewed = async {
                let mut c =
                    AuthorityConnection::connect(&config.login.server, key, &device, clock.clone())
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

/// Start a supernode node on `listen`; returns it, its advertised address
/// and its ring id.
pub(crate) async fn start_supernode(
    config: &Config,
    device: &DeviceIdentity,
    cert: &Certificate,
    key: [u8; 32],
    listen: SocketAddr,
    boot: Vec<SocketAddr>,
) -> Result<(OverlayNode, SocketAddr, u64)> {
    let sc = &config.supernode;
    let want_tcp = config.relay.tcp && !config.relay.secret.is_empty();
    let (socket, tcp) = natter::node::turn::bind_udp_tcp(listen, want_tcp).await?;
    let local = socket.local_addr()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now_ms();
    let cfg = SupernodeConfig {
        max_clients: sc.max_clients,
        replicas: sc.replicas.max(1),
        ..Default::default()
    };
    // The advertised address: the bound one, unless bound to any.
    let advertised = if local.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], local.port()))
    } else {
        local
    };
    let incarnation = (now / 1000) as u32;
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
    let cfg = SupernodeConfig { relay, ..cfg };
    let core = SupernodeCore::new(key, cert, advertised, boot, cfg, incarnation, now);
    let id = core.me;
    let link = LinkEndpoint::new(device.clone(), cert.clone(), key, LinkConfig::default())?;
    let stun = StunServerConfig {
        primary: local,
        alt: sc.alt(local),
    };
    let mut stun_sockets = Vec::new();
    if let Some(alt) = stun.alt {
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
        for a in StunServer::new(stun).extra_sockets() {
            let s = tokio::net::UdpSocket::bind(a)
                .await
                .with_context(|| format!("binding the RFC 5780 STUN socket {a}"))?;
            stun_sockets.push(s);
        }
    }
    let opts = NodeOptions {
        stun: Some(stun),
        stun_sockets,
        turn,
        ..Default::default()
    };
    let node = OverlayNode::spawn_with(socket, link, Core::Supernode(Box::new(core)), clock, opts)?;
    Ok((node, advertised, id))
}

/// Whether `observed` (our address as a supernode saw it) is this host's
/// own address and port, i.e. there is no NAT between us and it.
async fn is_public(observed: SocketAddr, local_port: u16, towards: SocketAddr) -> bool {
    let Ok(probe) = tokio::net::UdpSocket::bind("0.0.0.0:0").await else {
        return false;
    };
    if probe.connect(towards).await.is_err() {
        return false;
    }
    probe.local_addr().is_ok_and(|l| l.ip() == observed.ip()) && observed.port() == local_port
}

pub async fn supernode(
    config: &Config,
    data_dir: &Path,
    listen: Option<SocketAddr>,
    bootstrap: Vec<HostPort>,
) -> Result<()> {
    let (device, cert, key) = credentials(config, data_dir, None, false).await?;
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
        start_supernode(config, &device, &cert, key, listen, boot).await?;
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
    use std::io::Write;
    let _ = std::io::stdout().flush();
    spawn_renewal(
        config.clone(),
        data_dir.to_owned(),
        device,
        key,
        node.commands.clone(),
    );
    let mut stop = Box::pin(crate::shutdown_signal());
    loop {
        tokio::select! {
            _ = &mut stop => {
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

fn hosts_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("hosts")
}

fn load_hosts(data_dir: &Path) -> Vec<SocketAddr> {
    std::fs::read_to_string(hosts_path(data_dir))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn save_hosts(data_dir: &Path, hosts: &[SocketAddr]) {
    let text: String = hosts.iter().map(|a| format!("{a}\n")).collect();
    let tmp = hosts_path(data_dir).with_extension("tmp");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, hosts_path(data_dir));
    }
}

fn record_json(r: &PresenceRecord) -> serde_json::Value {
    json!({
        "user": r.username(),
        "status": r.status.as_str(),
        "message": r.message,
        "seq": r.seq,
        "supernodes": r.supernodes.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "candidates": r.candidates.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    })
}

/// One event as a JSON object, or `None` for events scripts do not see.
pub fn event_json(e: &ClientEvent) -> Option<serde_json::Value> {
    Some(match e {
        ClientEvent::Attached {
            supernode,
            primary,
            observed,
        } => {
            json!({"event": "attached", "supernode": supernode.to_string(), "primary": primary, "observed": observed.to_string()})
        }
        ClientEvent::Detached { supernode, reason } => {
            json!({"event": "detached", "supernode": supernode.to_string(), "reason": reason})
        }
        ClientEvent::Redirected { from, to } => {
            json!({"event": "redirected", "from": from.to_string(), "to": to.iter().map(|a| a.to_string()).collect::<Vec<_>>()})
        }
        ClientEvent::Published { seq } => json!({"event": "published", "seq": seq}),
        ClientEvent::PublishRejected { seq, reason } => {
            json!({"event": "publish_rejected", "seq": seq, "reason": reason})
        }
        ClientEvent::Lookup {
            username, outcome, ..
        } => {
            let mut v = match outcome {
                LookupOutcome::Online(r) => {
                    let mut v = record_json(r);
                    v["result"] = json!("online");
                    v
                }
                LookupOutcome::Offline { record, last_seen } => {
                    let mut v = record_json(record);
                    v["result"] = json!("offline");
                    v["last_seen"] = json!(fmt_time(*last_seen));
                    v
                }
                LookupOutcome::NotFound => json!({"result": "not_found"}),
                LookupOutcome::Failed(why) => json!({"result": "failed", "error": why}),
            };
            v["event"] = json!("lookup");
            v["user"] = json!(username);
            v
        }
        ClientEvent::PresenceChanged { record, online } => {
            let mut v = record_json(record);
            v["event"] = json!("presence");
            v["online"] = json!(online);
            v
        }
        ClientEvent::RelayCredentials {
            username,
            password,
            realm,
            expires,
            relays,
        } => json!({
            "event": "relay_credentials",
            "username": username,
            "password": password,
            "realm": realm,
            "expires": expires,
            "relays": relays.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        }),
        ClientEvent::RelayRefused { reason } => {
            json!({"event": "relay_refused", "reason": reason})
        }
        ClientEvent::Envelope {
            from,
            kind,
            id,
            payload,
        } => {
            // Chat and contacts (kinds 1-15) report their own events.
            if (1..=15).contains(kind) {
                return None;
            }
            json!({"event": "envelope", "from": from.username, "kind": kind, "id": hex_encode(id), "payload": String::from_utf8_lossy(payload)})
        }
        ClientEvent::EnvelopeDelivered { id } => {
            json!({"event": "envelope_result", "id": hex_encode(id), "result": "delivered"})
        }
        ClientEvent::EnvelopeStored { id } => {
            json!({"event": "envelope_result", "id": hex_encode(id), "result": "stored"})
        }
        ClientEvent::EnvelopeFailed { id, reason } => {
            json!({"event": "envelope_result", "id": hex_encode(id), "result": "failed", "error": reason})
        }
    })
}

/// The `nat` event: what a NAT detection found.
pub fn nat_json(r: &NatReport) -> serde_json::Value {
    let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string());
    json!({
        "event": "nat",
        "mapping": r.mapping.as_str(),
        "filtering": r.filtering.as_str(),
        "udp_blocked": r.udp_blocked,
        "public": addr(r.public),
        "local": addr(r.local),
        "server": addr(r.server),
        "other": addr(r.other),
        "duration_ms": r.duration_ms,
        "requests": r.requests,
        "reason": r.reason,
        "notes": r.notes,
    })
}

fn event_line(e: &ClientEvent) -> String {
    match e {
        ClientEvent::Attached {
            supernode,
            primary,
            observed,
        } => {
            format!(
                "attached to {supernode} ({}), seen as {observed}",
                if *primary { "primary" } else { "backup" }
            )
        }
        ClientEvent::Detached { supernode, reason } => {
            format!("detached from {supernode}: {reason}")
        }
        ClientEvent::Redirected { from, to } => {
            format!("{from} is full; redirected to {} others", to.len())
        }
        ClientEvent::Published { seq } => format!("presence published (seq {seq})"),
        ClientEvent::PublishRejected { reason, .. } => format!("presence rejected: {reason}"),
        ClientEvent::Lookup {
            username, outcome, ..
        } => match outcome {
            LookupOutcome::Online(r) => {
                format!("{username} is {} via {:?}", r.status.as_str(), r.supernodes)
            }
            LookupOutcome::Offline { last_seen, .. } => {
                format!("{username} is offline, last seen {}", fmt_time(*last_seen))
            }
            LookupOutcome::NotFound => format!("{username} was not found"),
            LookupOutcome::Failed(why) => format!("looking up {username} failed: {why}"),
        },
        ClientEvent::RelayCredentials {
            username,
            expires,
            relays,
            ..
        } => format!(
            "relay credentials {username} until {} for {relays:?}",
            fmt_time(*expires)
        ),
        ClientEvent::RelayRefused { reason } => format!("no relay credentials: {reason}"),
        ClientEvent::PresenceChanged { record, online } => format!(
            "{} is now {}{}",
            record.username(),
            if *online {
                record.status.as_str()
            } else {
                "offline"
            },
            if record.message.is_empty() {
                String::new()
            } else {
                format!(" ({})", record.message)
            }
        ),
        ClientEvent::Envelope {
            from,
            kind,
            payload,
            ..
        } => format!(
            "envelope from {} (kind {kind}): {}",
            from.username,
            String::from_utf8_lossy(payload)
        ),
        ClientEvent::EnvelopeDelivered { id } => format!("envelope {} delivered", hex_encode(id)),
        ClientEvent::EnvelopeStored { id } => {
            format!(
                "envelope {} stored for the offline recipient",
                hex_encode(id)
            )
        }
        ClientEvent::EnvelopeFailed { id, reason } => {
            format!("envelope {} failed: {reason}", hex_encode(id))
        }
    }
}

fn emit(json: bool, v: serde_json::Value, line: String) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = if json {
        writeln!(out, "{v}")
    } else {
        writeln!(out, "{line}")
    };
    let _ = out.flush();
}

pub async fn headless(config: &Config, data_dir: &Path, h: Headless) -> Result<()> {
    let (device, cert, key) =
        credentials(config, data_dir, h.user.as_deref(), h.password_stdin).await?;
    emit(
        h.json,
        json!({"event": "login", "user": cert.username, "until": fmt_time(cert.not_after), "role": cert.role.as_str()}),
        format!(
            "logged in as {} until {}",
            cert.username,
            fmt_time(cert.not_after)
        ),
    );
    let oc = &config.overlay;
    let listen = h.listen.unwrap_or(oc.listen);
    let socket = tokio::net::UdpSocket::bind(listen)
        .await
        .with_context(|| format!("binding UDP {listen}"))?;
    let boot_list = if h.bootstrap.is_empty() {
        oc.bootstrap.clone()
    } else {
        h.bootstrap.clone()
    };
    let mut hosts = load_hosts(data_dir);
    for a in resolve(&boot_list).await {
        if !hosts.contains(&a) {
            hosts.push(a);
        }
    }
    if hosts.is_empty() {
        bail!("no supernode to attach to: set [overlay] bootstrap or pass --bootstrap");
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let cfg = ClientConfig {
        keepalive_ms: oc.keepalive.0.as_millis() as u64,
        dead_after_ms: oc.supernode_timeout.0.as_millis() as u64,
        ..Default::default()
    };
    let mut core = ClientCore::new(
        device.clone(),
        cert.clone(),
        key,
        hosts,
        cfg,
        clock.now_ms(),
    );
    for w in &h.watch {
        core.watch(w);
    }
    let local_port = socket.local_addr()?.port();
    let link = LinkEndpoint::new(device.clone(), cert.clone(), key, LinkConfig::default())?;
    let stun_list = if h.stun_servers.is_empty() {
        config.nat.stun_servers.clone()
    } else {
        h.stun_servers.clone()
    };
    let stun_servers = resolve(&stun_list).await;
    if !stun_list.is_empty() && stun_servers.is_empty() {
        bail!("none of the STUN servers resolved: {stun_list:?}");
    }
    let contacts_cfg = natter::contacts::ContactsConfig {
        away_after_ms: h.away_after.map_or(300_000, |d| d.as_millis() as u64),
        public_presence: h.public_presence,
        ..Default::default()
    };
    let messaging = natter::node::messaging::Messaging::open(
        data_dir,
        &cert.username,
        natter::chat::ChatConfig::default(),
        contacts_cfg,
        clock.now_ms(),
    )?;
    let opts = NodeOptions {
        nat: config.nat.detect.then(|| NatOptions {
            servers: stun_servers,
            ..Default::default()
        }),
        messaging: Some(messaging),
        calls: Some(crate::call_cli::options(config, &h.calls)?),
        paths: PathOptions {
            tcp_fallback_ms: Some(oc.tcp_fallback.0.as_millis() as u64).filter(|&ms| ms > 0),
            force_tcp: oc.force_tcp,
            relay_only: config.nat.relay_only,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut script = crate::call_cli::Script::new(&h.calls);
    let mut node =
        OverlayNode::spawn_with(socket, link, Core::Client(Box::new(core)), clock, opts)?;
    if let Some(status) = h.status {
        let _ = node
            .commands
            .send(Command::SetStatus {
                status,
                message: String::new(),
            })
            .await;
    }
    let mut startup: Vec<Command> = h
        .add
        .iter()
        .map(|u| Command::AddContact {
            user: u.clone(),
            greeting: String::new(),
        })
        .chain(h.msg.iter().map(|(to, text)| Command::SendMessage {
            to: to.clone(),
            text: text.clone(),
            reply: None,
        }))
        .collect();
    spawn_renewal(
        config.clone(),
        data_dir.to_owned(),
        device.clone(),
        key,
        node.commands.clone(),
    );
    let mut volunteered: Option<OverlayNode> = None;
    let mut volunteer_checked = !oc.volunteer_supernode;

    // Commands from stdin, one per line (not when it carried a password).
    let (line_tx, mut lines) = tokio::sync::mpsc::channel::<String>(64);
    if !h.password_stdin {
        tokio::spawn(async move {
            let mut r = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(l)) = r.next_line().await {
                if line_tx.send(l).await.is_err() {
                    break;
                }
            }
        });
    }
    let mut stop = Box::pin(crate::shutdown_signal());
    let mut lookup_pending = h.lookup.clone();
    let mut connect_pending = h.connect.clone();
    loop {
        tokio::select! {
            _ = &mut stop => {
                let _ = node.commands.send(Command::Shutdown).await;
            }
            _ = tokio::time::sleep_until(script.hangup_at.map_or_else(tokio::time::Instant::now, |(t, _)| t)), if script.hangup_at.is_some() => {
                if let Some((_, id)) = script.hangup_at.take() {
                    let _ = node.commands.send(Command::HangUp { call: Some(id) }).await;
                }
            }
            Some(line) = lines.recv() => {
                let _ = node.commands.send(Command::Activity).await;
                match crate::call_cli::parse(&line) {
                    Some(Ok(c)) => {
                        let _ = node.commands.send(c).await;
                        continue;
                    }
                    Some(Err(e)) => {
                        emit(h.json, json!({"event": "error", "error": e}), e.clone());
                        continue;
                    }
                    None => {}
                }
                match crate::chat_cli::parse(&line) {
                    Some(Ok((c, query))) => {
                        let _ = node.commands.send(c).await;
                        if let Some(q) = query {
                            let (v, l) = crate::chat_cli::answer(q).await;
                            emit(h.json, v, l);
                        }
                        continue;
                    }
                    Some(Err(e)) => {
                        emit(h.json, json!({"event": "error", "error": e}), e.clone());
                        continue;
                    }
                    None => {}
                }
                let mut words = line.split_whitespace();
                let cmd = match (words.next(), words.next()) {
                    (Some("lookup"), Some(u)) => Some(Command::Lookup { username: u.to_owned() }),
                    (Some("watch"), Some(u)) => Some(Command::Watch { username: u.to_owned() }),
                    (Some("status"), Some(s)) => match s.parse::<Status>() {
                        Ok(status) => Some(Command::SetStatus { status, message: words.collect::<Vec<_>>().join(" ") }),
                        Err(e) => {
                            emit(h.json, json!({"event": "error", "error": e}), e.clone());
                            None
                        }
                    },
                    (Some("envelope"), Some(u)) => Some(Command::SendEnvelope {
                        to: u.to_owned(),
                        kind: natter::overlay::envelope::kind::TEST,
                        payload: words.collect::<Vec<_>>().join(" ").into_bytes(),
                        store_if_offline: true,
                        reply: None,
                    }),
                    (Some("quit"), _) => Some(Command::Shutdown),
                    (Some("connect"), Some(u)) => Some(Command::Connect { username: u.to_owned() }),
                    (Some(w @ ("ice-offer" | "ice-answer")), Some(u)) => {
                        match words.next().and_then(natter::node::peer::hex_decode_vec) {
                            Some(bytes) => Some(Command::IceSignal { from: u.to_ascii_lowercase(), bytes, answer: w == "ice-answer" }),
                            None => {
                                let e = format!("{w} {u} needs the hex data of the peer's ice_offer/ice_answer event");
                                emit(h.json, json!({"event": "error", "error": e}), e.clone());
                                None
                            }
                        }
                    }
                    (Some("relay"), _) => Some(Command::RelayCredentials),
                    (None, _) => None,
                    _ => {
                        let e = format!("unknown command {line:?}: lookup USER | watch USER | status online|away|dnd|invisible|offline [MESSAGE] | relay | connect USER | ice-offer USER HEX | ice-answer USER HEX | {} | {} | quit", crate::chat_cli::HELP, crate::call_cli::HELP);
                        emit(h.json, json!({"event": "error", "error": e}), e.clone());
                        None
                    }
                };
                if let Some(c) = cmd {
                    let _ = node.commands.send(c).await;
                }
            }
            ev = node.events.recv() => {
                let Some(ev) = ev else { break };
                let e = match ev {
                    Event::Stopped => break,
                    Event::Client(e) => e,
                    Event::Peer(p) => {
                        emit(h.json, natter::node::peer::event_json(&p), natter::node::peer::event_line(&p));
                        continue;
                    }
                    Event::Call(u) => {
                        emit(h.json, natter::node::calls::update_json(&u), natter::node::calls::update_line(&u));
                        if script.on_update(&u) == crate::call_cli::Action::Stop {
                            let _ = node.commands.send(Command::Shutdown).await;
                        }
                        continue;
                    }
                    Event::Nat(r) => {
                        emit(h.json, nat_json(&r), format!("NAT: {}", r.summary()));
                        continue;
                    }
                    Event::Supernode(_) => continue,
                    Event::Chat(e) => {
                        let (v, l) = crate::chat_cli::chat_event(&e);
                        emit(h.json, v, l);
                        continue;
                    }
                    Event::Contacts(e) => {
                        let (v, l) = crate::chat_cli::contacts_event(&e);
                        emit(h.json, v, l);
                        continue;
                    }
                    Event::CommandFailed { error } => {
                        emit(h.json, json!({"event": "error", "error": error}), error.clone());
                        continue;
                    }
                };
                if matches!(e, ClientEvent::Published { .. }) {
                    for c in startup.drain(..) {
                        let _ = node.commands.send(c).await;
                    }
                }
                if let ClientEvent::Attached { supernode, observed, .. } = &e
                    && !volunteer_checked
                {
                    volunteer_checked = true;
                    let declined = |why: &str| {
                        emit(
                            h.json,
                            json!({"event": "volunteer_declined", "reason": why}),
                            format!("not volunteering as a supernode: {why}"),
                        )
                    };
                    if cert.role != Role::Supernode {
                        declined("the account does not hold the supernode role");
                    } else if !is_public(*observed, local_port, *supernode).await {
                        declined("behind a NAT");
                    } else {
                        match start_supernode(config, &device, &cert, key, oc.volunteer_listen, vec![*supernode]).await {
                            Ok((n, addr, _)) => {
                                emit(
                                    h.json,
                                    json!({"event": "volunteered", "supernode": addr.to_string()}),
                                    format!("volunteering as a supernode on {addr}"),
                                );
                                volunteered = Some(n);
                            }
                            Err(e) => declined(&e.to_string()),
                        }
                    }
                }
                if matches!(e, ClientEvent::Attached { .. }) {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let _ = node.commands.send(Command::Status { reply: tx }).await;
                    if let Ok(st) = rx.await {
                        save_hosts(data_dir, &st.host_cache);
                    }
                }
                let done = matches!(&e, ClientEvent::Lookup { username, .. } if h.lookup.as_deref().is_some_and(|l| l.eq_ignore_ascii_case(username)));
                if let Some(v) = event_json(&e) {
                    emit(h.json, v, event_line(&e));
                }
                if matches!(e, ClientEvent::Published { .. })
                    && let Some(u) = lookup_pending.take()
                {
                    let _ = node.commands.send(Command::Lookup { username: u }).await;
                }
                if matches!(e, ClientEvent::Published { .. })
                    && let Some(u) = connect_pending.take()
                {
                    let _ = node.commands.send(Command::Connect { username: u }).await;
                }
                if matches!(e, ClientEvent::Published { .. })
                    && let Some(u) = script.pending.take()
                {
                    let _ = node.commands.send(Command::Call { username: u, reply: None }).await;
                }
                if done {
                    let _ = node.commands.send(Command::Shutdown).await;
                }
            }
        }
    }
    let _ = node.task.await;
    if let Some(v) = volunteered {
        let _ = v.commands.send(Command::Shutdown).await;
        let _ = v.task.await;
    }
    if let Some(peer) = &h.calls.call
        && !script.connected
    {
        bail!(
            "the call to {peer} did not connect: {}",
            script.ended.as_deref().unwrap_or("natter stopped first")
        );
    }
    Ok(())
}
