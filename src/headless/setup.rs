//! What `natter --headless` runs with: its flags, and the client
//! runtime's settings built from the config and those flags (call devices
//! from `--play`/`--record`/`--echo`, the NAT's STUN servers, the
//! volunteer supernode).

use anyhow::{Context, Result, bail};
use natter::config::{Config, HostPort};
use natter::media::MediaConfig;
use natter::media::audio::DeviceSpec;
use natter::node::DeviceFiles;
use natter::node::calls::CallOptions;
use natter::node::client::{ClientSettings, NatOptions, Volunteer, resolve};
use natter::overlay::Status;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
    pub away_after: Option<Duration>,
    pub calls: CallFlags,
}

/// The call flags of `--headless`.
#[derive(Debug, Default, Clone)]
pub struct CallFlags {
    /// Call this user once online; exit when the call ends.
    pub call: Option<String>,
    /// Play this WAV file into calls (instead of [audio] input).
    pub play: Option<PathBuf>,
    /// Record what we hear to this WAV file (instead of [audio] output).
    pub record: Option<PathBuf>,
    /// Hang up this long after a call becomes active.
    pub hangup_after: Option<Duration>,
    pub auto_answer: bool,
    /// Be an echo test contact: answer every call, play back what we hear.
    pub echo: bool,
}

/// The runtime's settings for a headless client.
pub async fn settings(config: &Config, data_dir: &Path, h: &Headless) -> Result<ClientSettings> {
    let mut s = ClientSettings::from_config(config, data_dir, &h.bootstrap, h.listen)
        .await
        .context("no authority key pinned: set [login] authority_key in the config")?;
    s.user = h.user.clone();
    s.watch = h.watch.clone();
    s.public_presence = h.public_presence;
    s.away_after_ms = h.away_after.map_or(300_000, |d| d.as_millis() as u64);
    s.calls = Some(call_options(config, &h.calls)?);
    s.nat = if config.nat.detect {
        Some(NatOptions {
            servers: stun_servers(config, &h.stun_servers).await?,
            ..Default::default()
        })
    } else {
        None
    };
    if config.overlay.volunteer_supernode {
        s.volunteer = Some(volunteer(config.clone(), data_dir.to_owned()));
    }
    Ok(s)
}

async fn stun_servers(config: &Config, flags: &[HostPort]) -> Result<Vec<SocketAddr>> {
    let list = if flags.is_empty() {
        &config.nat.stun_servers
    } else {
        flags
    };
    let servers = resolve(list).await;
    if !list.is_empty() && servers.is_empty() {
        bail!("none of the STUN servers resolved: {list:?}");
    }
    Ok(servers)
}

/// Starts the volunteer supernode on `[overlay] volunteer_listen`.
fn volunteer(config: Config, data_dir: PathBuf) -> Volunteer {
    Volunteer(Arc::new(move |boot| {
        let (config, data_dir) = (config.clone(), data_dir.clone());
        Box::pin(async move {
            let files = DeviceFiles::new(&data_dir);
            let key = config.login.authority_key.map(|k| k.0);
            let (device, cert) = match (files.identity(), files.certificate()) {
                (Ok((d, _)), Ok(Some(c))) => (d, c),
                _ => return Err("no certificate on this device".to_owned()),
            };
            let key = key.ok_or("no authority key pinned")?;
            let listen = config.overlay.volunteer_listen;
            crate::supernode::start(&config, &device, &cert, key, listen, vec![boot], None)
                .await
                .map(|(node, addr, _)| (node, addr))
                .map_err(|e| e.to_string())
        })
    }))
}

/// What the node runs calls with, from the config and the flags.
pub fn call_options(config: &Config, f: &CallFlags) -> Result<CallOptions> {
    let media = MediaConfig {
        processing: config.audio.processing(),
        ..config.media.media_config()
    };
    let call = config.call.core_config();
    let output = match &f.record {
        Some(p) => DeviceSpec::File(p.clone()),
        None => config.audio.output.clone(),
    };
    // `--play tone:HZ` is a sine; anything else a WAV file.
    let play = match &f.play {
        Some(p)
            if p.to_str()
                .is_some_and(|t| t == "tone" || t.starts_with("tone:")) =>
        {
            let spec: DeviceSpec = p.to_str().unwrap_or_default().parse()?;
            Some(spec)
        }
        Some(p) => {
            // A missing or unreadable file is a startup error, not a
            // failed call.
            natter::media::audio::read_wav(p).with_context(|| format!("--play {}", p.display()))?;
            Some(DeviceSpec::File(p.clone()))
        }
        None => None,
    };
    if f.echo {
        if f.play.is_some() {
            bail!("--echo plays back what it hears: it takes no --play");
        }
        // The echo contact needs no sound card: without --record it plays
        // into nothing.
        let output = match output {
            DeviceSpec::File(_) | DeviceSpec::Null => output,
            _ => DeviceSpec::Null,
        };
        return Ok(CallOptions::echo(output, media, call));
    }
    Ok(CallOptions {
        input: play.unwrap_or_else(|| config.audio.input.clone()),
        output,
        media,
        call,
        auto_answer: f.auto_answer || config.call.auto_answer,
        ringback: config.call.ringback,
        ringtone: config.call.ringtone,
    })
}
