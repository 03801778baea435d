//! Configuration: TOML loaded from `--config` or the user's config dir,
//! with command-line flags applied on top by `main`. Every key has a
//! default, so natter runs with no file at all; an unknown key, a wrong
//! type or a bad address is an error naming the file, the key and what
//! was expected. `config/natter.toml` documents every key.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}{}: key `{key}`: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        message: String,
    },
    #[error("no data directory: pass --data-dir or set `data_dir` in the config")]
    NoDataDir,
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where keys, certificates and databases live.
    pub data_dir: Option<PathBuf>,
    pub log: LogConfig,
    pub login: LoginConfig,
    pub authority: AuthorityConfig,
    pub supernode: SupernodeSection,
    pub overlay: OverlaySection,
    pub nat: NatSection,
    pub audio: AudioSection,
    pub media: MediaSection,
    pub call: CallSection,
    pub files: FilesSection,
    pub keys: KeysSection,
    pub relay: RelaySection,
    pub metrics: MetricsSection,
}

/// File transfers of a client.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesSection {
    /// Where accepted files go when no place is named; default: the
    /// `downloads` directory in the data dir.
    pub downloads: Option<PathBuf>,
    /// File bytes per second sent, all transfers together; 0: no limit
    /// (the congestion control already yields to a call's traffic).
    pub max_rate: u64,
}

/// The Prometheus scrape endpoint of a supernode, authority or client.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Where `GET /metrics` is served (e.g. "127.0.0.1:9464"); off when
    /// unset. The endpoint has no authentication: keep it on loopback or
    /// a management network.
    pub listen: Option<SocketAddr>,
}

/// Sound devices for calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioSection {
    /// Capture device: `default`, a name from `--list-audio-devices`,
    /// `file:PATH.wav`, `tone[:HZ]` or `null`.
    pub input: crate::media::audio::DeviceSpec,
    /// Playback device: `default`, a name, `file:PATH.wav` or `null`.
    pub output: crate::media::audio::DeviceSpec,
    /// Echo cancellation (AEC3) of what the output plays: `true`, `false`
    /// or `"auto"` (on when the input is a sound card).
    pub echo_cancellation: crate::media::processing::Switch,
    /// Noise suppression of the microphone: as `echo_cancellation`.
    pub noise_suppression: crate::media::processing::Switch,
    /// Automatic gain (AGC2) of the microphone: as `echo_cancellation`.
    pub auto_gain: crate::media::processing::Switch,
}

impl Default for AudioSection {
    fn default() -> Self {
        AudioSection {
            input: crate::media::audio::DeviceSpec::Default,
            output: crate::media::audio::DeviceSpec::Default,
            echo_cancellation: Default::default(),
            noise_suppression: Default::default(),
            auto_gain: Default::default(),
        }
    }
}

impl AudioSection {
    /// The processing stages as configured.
    pub fn processing(&self) -> crate::media::processing::ProcessingConfig {
        crate::media::processing::ProcessingConfig {
            echo_cancellation: self.echo_cancellation,
            noise_suppression: self.noise_suppression,
            auto_gain: self.auto_gain,
        }
    }
}

/// Voice coding and the jitter buffer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSection {
    /// Opus frame duration in ms: 10, 20 or 40.
    pub frame_ms: u32,
    /// Opus bitrate in bits per second.
    pub bitrate: u32,
    /// In-band forward error correction.
    pub fec: bool,
    /// Loss percentage FEC is planned for at least (Opus adds none at 0).
    pub fec_min_loss_percent: u8,
    /// Deep REDundancy (DRED): from 10 % reported loss, packets carry a
    /// neural coding of up to a second of the past instead of LBRR. Off by
    /// default: it scored below LBRR on whole-call PESQ in our runs. A
    /// receiver always uses the DRED it gets.
    pub dred: bool,
    /// Largest delay the jitter buffer may add, in ms.
    pub jitter_max_ms: u32,
    /// Interval between receiver reports (RTT, loss, jitter).
    pub report_interval: HumanDuration,
    /// For benchmarks: impair our own sending (`[media.impair]`).
    pub impair: Option<ImpairSection>,
}

/// Seeded impairment of the datagrams a call sends, as a bad network
/// would do: for benchmarks of real calls (see `media::impair`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImpairSection {
    /// Average share of datagrams lost, 0 to 1.
    pub loss: f64,
    /// Mean loss burst in packets (Gilbert-Elliott); 0: independent loss.
    pub burst: f64,
    /// Fixed extra delay, ms.
    pub delay_ms: u64,
    /// Extra delay drawn uniformly from 0 to this, ms (reorders packets).
    pub jitter_ms: u64,
    pub seed: u64,
}

impl Default for MediaSection {
    fn default() -> Self {
        MediaSection {
            frame_ms: 20,
            bitrate: 32_000,
            fec: true,
            fec_min_loss_percent: 5,
            dred: false,
            jitter_max_ms: 400,
            report_interval: HumanDuration(Duration::from_secs(1)),
            impair: None,
        }
    }
}

/// Call signalling: how long each step may take, and answering.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallSection {
    /// No ringing from the callee within this long: "could not be reached".
    pub invite_timeout: HumanDuration,
    /// Unanswered this long: "no answer".
    pub ring_timeout: HumanDuration,
    /// Answered, but no audio from the other side within this long.
    pub connect_timeout: HumanDuration,
    /// Answer every incoming call at once.
    pub auto_answer: bool,
    /// Play the ring-back tone (425 Hz, 1 s in 5) while the callee rings.
    pub ringback: bool,
    /// Play a ringtone on the output device for an incoming call, and a
    /// conference's join and leave chimes.
    pub ringtone: bool,
}

impl Default for CallSection {
    fn default() -> Self {
        CallSection {
            invite_timeout: HumanDuration(Duration::from_secs(10)),
            ring_timeout: HumanDuration(Duration::from_secs(60)),
            connect_timeout: HumanDuration(Duration::from_secs(10)),
            auto_answer: false,
            ringback: true,
            ringtone: true,
        }
    }
}

impl MediaSection {
    /// The media session's settings (the config imports the cores, never
    /// the other way round).
    pub fn media_config(&self) -> crate::media::MediaConfig {
        crate::media::MediaConfig {
            codec: crate::media::codec::CodecConfig {
                frame_ms: self.frame_ms,
                bitrate: self.bitrate,
                fec: self.fec,
                min_loss_percent: self.fec_min_loss_percent,
                dred: self.dred,
                ..Default::default()
            },
            jitter: crate::media::jitter::JitterConfig {
                max_ms: self.jitter_max_ms as f64,
                ..Default::default()
            },
            report_interval_ms: (self.report_interval.0.as_millis() as u64).max(100),
            impair: self
                .impair
                .as_ref()
                .map(|i| crate::media::impair::ImpairConfig {
                    loss: i.loss,
                    burst: i.burst,
                    delay_ms: i.delay_ms,
                    jitter_ms: i.jitter_ms,
                    seed: i.seed,
                    corrupt_every: 0,
                }),
            ..Default::default()
        }
    }
}

impl CallSection {
    pub fn core_config(&self) -> crate::call::CallConfig {
        let ms = |d: &HumanDuration| (d.0.as_millis() as u64).max(100);
        crate::call::CallConfig {
            invite_timeout_ms: ms(&self.invite_timeout),
            ring_timeout_ms: ms(&self.ring_timeout),
            connect_timeout_ms: ms(&self.connect_timeout),
            ..Default::default()
        }
    }
}

/// The TURN relay every supernode runs and the credentials it hands to
/// its clients (REST-style, as coturn's `use-auth-secret`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySection {
    /// Shared by every supernode of the group (and any coturn relaying
    /// for it with `static-auth-secret`). Empty: no relay on this node.
    pub secret: String,
    pub realm: String,
    /// How long the credentials a supernode issues stay valid.
    pub credential_lifetime: HumanDuration,
    /// Allocation lifetime when the client asks for less, and the most
    /// it may ask for.
    pub allocation_lifetime: HumanDuration,
    pub max_allocation_lifetime: HumanDuration,
    /// Allocations on this supernode, all users together.
    pub max_allocations: usize,
    /// Allocations one user may hold at once.
    pub user_allocations: usize,
    /// Relayed bytes per second per user (both directions); 0: no limit.
    pub user_bandwidth: u64,
    /// UDP ports for relayed addresses, `"lo-hi"`; `"0"` lets the system
    /// pick.
    #[serde(deserialize_with = "port_range")]
    pub ports: (u16, u16),
    /// The address advertised for relayed transports; default: the
    /// supernode's own.
    pub public_ip: Option<std::net::IpAddr>,
    /// A dual-stack host's public IPv6 address, next to an IPv4
    /// `public_ip` (or advertised address): the relay then hands out
    /// relayed addresses of both families and is listed at both.
    pub public_ipv6: Option<std::net::Ipv6Addr>,
    /// Also accept TURN over TCP on the supernode's port number (clients
    /// whose UDP is blocked also attach over it).
    pub tcp: bool,
    /// TCP streams the listener holds at once, all sources together.
    pub tcp_connections: usize,
    /// TCP streams one source (IPv4 address, IPv6 /64) may hold.
    pub tcp_connections_per_address: usize,
    /// A TCP stream that holds no allocation is closed when silent this
    /// long (one with an allocation lives as long as the allocation).
    pub tcp_idle: HumanDuration,
    /// A message a stream started must arrive whole within this long.
    pub tcp_frame_deadline: HumanDuration,
    /// Relay to peers on loopback (only for tests on one machine: it
    /// exposes the host's loopback services to anyone with credentials).
    pub allow_loopback_peers: bool,
    /// Peers the relay refuses, as IP prefixes (coturn's
    /// `denied-peer-ip`); default: the special-purpose ranges (private
    /// networks, CGNAT 100.64/10, link-local 169.254/16, 0/8, ...).
    pub denied_peers: Vec<crate::wire::IpPrefix>,
    /// Exceptions to `denied_peers` (coturn's `allowed-peer-ip`).
    pub allowed_peers: Vec<crate::wire::IpPrefix>,
    /// Other relays of the group to hand out, `host:port` (e.g. coturn).
    pub servers: Vec<HostPort>,
}

impl Default for RelaySection {
    fn default() -> Self {
        RelaySection {
            secret: String::new(),
            realm: "natter".into(),
            credential_lifetime: HumanDuration(Duration::from_secs(3600)),
            allocation_lifetime: HumanDuration(Duration::from_secs(600)),
            max_allocation_lifetime: HumanDuration(Duration::from_secs(3600)),
            max_allocations: 10_000,
            user_allocations: 10,
            user_bandwidth: 1_000_000,
            ports: (49_152, 65_535),
            public_ip: None,
            public_ipv6: None,
            tcp: true,
            tcp_connections: 4096,
            tcp_connections_per_address: 32,
            tcp_idle: HumanDuration(Duration::from_secs(120)),
            tcp_frame_deadline: HumanDuration(Duration::from_secs(10)),
            allow_loopback_peers: false,
            denied_peers: crate::wire::prefix::special_purpose(),
            allowed_peers: Vec::new(),
            servers: Vec::new(),
        }
    }
}

impl RelaySection {
    /// The TCP listener's limits from this section.
    pub fn tcp_limits(&self) -> crate::tcp_limits::TcpLimits {
        crate::tcp_limits::TcpLimits {
            max_connections: self.tcp_connections.max(1),
            per_address: self.tcp_connections_per_address.max(1),
            turn_idle: self.tcp_idle.0,
            frame_deadline: self.tcp_frame_deadline.0,
            ..Default::default()
        }
    }
}

/// `"lo-hi"` (inclusive) or `"0"` for system-chosen ports.
fn port_range<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(u16, u16), D::Error> {
    let s = String::deserialize(d)?;
    let bad = || {
        serde::de::Error::custom(format!(
            "{s:?} is not a port range: expected \"lo-hi\" such as \"49152-65535\", or \"0\""
        ))
    };
    if s.trim() == "0" {
        return Ok((0, 0));
    }
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || hi < lo {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// Settings of `natter --supernode`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupernodeSection {
    #[serde(deserialize_with = "listen_addr")]
    pub listen: SocketAddr,
    /// Other supernodes to join through, `host:port`.
    pub bootstrap: Vec<HostPort>,
    /// Clients accepted before new ones are redirected elsewhere.
    pub max_clients: usize,
    /// Supernodes holding each user's record.
    pub replicas: usize,
    /// A second IP address of this host: with it the supernode serves RFC
    /// 5780 NAT behaviour discovery (STUN on both addresses and ports).
    /// Needs `listen` on a specific IP.
    pub alt_address: Option<std::net::IpAddr>,
    /// The second port, used on both addresses; default: listen port + 1.
    pub alt_port: Option<u16>,
    /// The address other nodes reach this one at, when `listen` is on
    /// "any" (dual-stack); default 127.0.0.1 (tests on one machine).
    pub advertise: Option<std::net::IpAddr>,
}

impl SupernodeSection {
    /// The second address for RFC 5780, if configured.
    pub fn alt(&self, listen: SocketAddr) -> Option<SocketAddr> {
        let ip = self.alt_address?;
        Some(SocketAddr::new(
            ip,
            self.alt_port.unwrap_or(listen.port().wrapping_add(1)),
        ))
    }
}

/// How a client measures its NAT.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatSection {
    /// Measure the NAT at login and when the network changes.
    pub detect: bool,
    /// STUN servers (`host:port`) to measure against instead of the
    /// supernodes; an RFC 5780 server (e.g. coturn with two addresses)
    /// gives the whole picture.
    pub stun_servers: Vec<HostPort>,
    /// Peer connections through relays only: our addresses are never
    /// offered to peers.
    pub relay_only: bool,
}

impl Default for NatSection {
    fn default() -> Self {
        NatSection {
            detect: true,
            stun_servers: Vec::new(),
            relay_only: false,
        }
    }
}

impl Default for SupernodeSection {
    fn default() -> Self {
        SupernodeSection {
            listen: SocketAddr::from(([0, 0, 0, 0], 7710)),
            bootstrap: Vec::new(),
            max_clients: 100_000,
            replicas: 3,
            alt_address: None,
            alt_port: None,
            advertise: None,
        }
    }
}

/// How a client joins the overlay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverlaySection {
    /// Local UDP address; port 0 picks a free one.
    #[serde(deserialize_with = "listen_addr")]
    pub listen: SocketAddr,
    /// Supernodes to try first, `host:port`; those learned later are saved
    /// in the data dir and tried before these.
    pub bootstrap: Vec<HostPort>,
    /// Seconds between keepalives to the attached supernodes.
    pub keepalive: HumanDuration,
    /// A supernode silent this long is replaced.
    pub supernode_timeout: HumanDuration,
    /// Also serve as a supernode when this machine has a public address
    /// and the account holds the supernode role.
    pub volunteer_supernode: bool,
    /// Where the volunteered supernode listens.
    #[serde(deserialize_with = "listen_addr")]
    pub volunteer_listen: SocketAddr,
    /// No UDP datagram this long after the start: attach to supernodes
    /// (and relays) over TCP; 0 never does.
    pub tcp_fallback: HumanDuration,
    /// Attach over TCP from the start (a network that blocks UDP).
    pub force_tcp: bool,
}

impl Default for OverlaySection {
    fn default() -> Self {
        OverlaySection {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            bootstrap: vec![HostPort {
                host: "127.0.0.1".into(),
                port: 7710,
            }],
            keepalive: HumanDuration(Duration::from_secs(1)),
            supernode_timeout: HumanDuration(Duration::from_secs(3)),
            volunteer_supernode: false,
            volunteer_listen: SocketAddr::from(([0, 0, 0, 0], 7710)),
            tcp_fallback: HumanDuration(Duration::from_secs(3)),
            force_tcp: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `natter=debug`.
    pub level: String,
    /// Log file; stderr when unset (the TUI always logs to a file).
    pub file: Option<PathBuf>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            file: None,
        }
    }
}

/// How a client reaches and trusts the login authority.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// The authority's address, `host:port`, or a list of the addresses
    /// of several authorities sharing one database: tried in order, the
    /// next when one cannot be reached.
    pub server: Authorities,
    /// The authority's ed25519 public key, 64 hex digits, as it printed
    /// at its first start. Required to log in.
    pub authority_key: Option<PublicKey>,
    /// Renew the certificate when less than this much validity is left.
    pub renew_before: HumanDuration,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            server: Authorities(vec![HostPort {
                host: "127.0.0.1".into(),
                port: 7700,
            }]),
            authority_key: None,
            renew_before: HumanDuration(Duration::from_secs(4 * 3600)),
        }
    }
}

/// Settings of `natter --authority`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorityConfig {
    #[serde(deserialize_with = "listen_addr")]
    pub listen: SocketAddr,
    /// Account database: an SQLite file (`PATH` or `sqlite:PATH`; relative
    /// paths are under the data dir), or `postgres://USER@HOST/DB` shared
    /// by several authorities.
    pub database: crate::authority::Database,
    /// The PostgreSQL password, read from this file (first line) instead
    /// of the URL. Relative paths are under the data dir.
    pub database_password_file: Option<PathBuf>,
    /// Signing key file; relative paths are under the data dir.
    pub key_file: PathBuf,
    pub open_registration: bool,
    pub certificate_lifetime: HumanDuration,
    pub max_clock_skew: HumanDuration,
    pub failed_logins_per_account: u32,
    pub failed_logins_per_address: u32,
    pub failure_window: HumanDuration,
    pub max_lockout: HumanDuration,
    /// 0 means no limit.
    pub registrations_per_hour_per_address: u32,
    pub max_connections: usize,
    /// Connection slots one source (IPv4 address, IPv6 /64) may hold.
    pub connections_per_address: usize,
    /// A request frame must arrive whole within this long.
    pub frame_deadline: HumanDuration,
}

impl Default for AuthorityConfig {
    fn default() -> Self {
        AuthorityConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 7700)),
            database: crate::authority::Database::Sqlite("authority.db".into()),
            database_password_file: None,
            key_file: "authority.key".into(),
            open_registration: true,
            certificate_lifetime: HumanDuration(Duration::from_secs(24 * 3600)),
            max_clock_skew: HumanDuration(Duration::from_secs(120)),
            failed_logins_per_account: 5,
            failed_logins_per_address: 20,
            failure_window: HumanDuration(Duration::from_secs(15 * 60)),
            max_lockout: HumanDuration(Duration::from_secs(15 * 60)),
            registrations_per_hour_per_address: 20,
            max_connections: 1024,
            connections_per_address: 16,
            frame_deadline: HumanDuration(Duration::from_secs(10)),
        }
    }
}

impl AuthorityConfig {
    pub fn policy(&self) -> crate::authority::Policy {
        crate::authority::Policy {
            certificate_lifetime_secs: self.certificate_lifetime.0.as_secs(),
            max_clock_skew_ms: self.max_clock_skew.0.as_millis() as u64,
            open_registration: self.open_registration,
            max_requests_per_connection: 8,
            throttle: crate::authority::ThrottlePolicy {
                account_failures: self.failed_logins_per_account,
                address_failures: self.failed_logins_per_address,
                window_ms: self.failure_window.0.as_millis() as u64,
                max_lockout_ms: self.max_lockout.0.as_millis() as u64,
                registrations_per_hour: self.registrations_per_hour_per_address,
            },
            admission: crate::authority::AdmissionPolicy {
                max_connections: self.max_connections,
                per_address: self.connections_per_address,
                frame_deadline_ms: self.frame_deadline.0.as_millis() as u64,
                ..Default::default()
            },
        }
    }
}

/// Keybindings of the softphone UI. Each action takes one key or a list
/// of keys, written like `"q"`, `"ctrl+c"`, `"alt+enter"`, `"f1"`, `"esc"`,
/// `"tab"`, `"space"`. Plain keys (no ctrl or alt) act only while no text
/// field has the focus; keys with ctrl or alt, f-keys and esc act anywhere.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysSection {
    pub quit: KeyList,
    pub help: KeyList,
    pub search: KeyList,
    pub next_pane: KeyList,
    pub open_chat: KeyList,
    pub back: KeyList,
    pub call: KeyList,
    pub accept_call: KeyList,
    pub decline_call: KeyList,
    pub hang_up: KeyList,
    pub mute: KeyList,
    pub hold: KeyList,
    /// Take the call up on another of our devices: it moves here.
    pub take_call: KeyList,
    /// Add the selected contact to the call or conference.
    pub conference_add: KeyList,
    /// Mark the selected contact for a conference (or unmark).
    pub mark: KeyList,
    /// Start a conference with the marked contacts.
    pub conference: KeyList,
    /// Mute the selected contact in the conference (its starter only).
    pub mute_other: KeyList,
    pub cycle_status: KeyList,
    /// Open the mood message (status text) dialog.
    pub status_message: KeyList,
    pub accept_contact: KeyList,
    pub remove_contact: KeyList,
    pub block_contact: KeyList,
    /// Send a file to the selected contact (or the open chat's).
    pub send_file: KeyList,
    /// Open the file transfers window.
    pub files: KeyList,
    /// Found a group: asks for its name; the marked contacts are invited.
    pub new_group: KeyList,
    /// Invite a contact into the selected group (or the open one).
    pub group_invite: KeyList,
    /// Remove a member from the group (admins; asks first).
    pub group_remove: KeyList,
    /// Rename the group.
    pub group_rename: KeyList,
    /// Leave the group (asks first).
    pub group_leave: KeyList,
    /// Open the account's devices window (see and revoke devices).
    pub devices: KeyList,
}

impl Default for KeysSection {
    fn default() -> Self {
        let k = |keys: &[&str]| {
            KeyList(
                keys.iter()
                    .map(|s| s.parse().expect("default key"))
                    .collect(),
            )
        };
        KeysSection {
            quit: k(&["q", "ctrl+c"]),
            help: k(&["?", "f1"]),
            search: k(&["/"]),
            next_pane: k(&["tab"]),
            open_chat: k(&["enter"]),
            back: k(&["esc"]),
            call: k(&["c"]),
            // The ctrl keys work while typing in the chat.
            accept_call: k(&["y", "ctrl+y"]),
            decline_call: k(&["n", "ctrl+n"]),
            hang_up: k(&["x", "ctrl+x"]),
            mute: k(&["m", "ctrl+t"]),
            hold: k(&["o", "ctrl+o"]),
            take_call: k(&["T"]),
            conference_add: k(&["+"]),
            mark: k(&["space"]),
            conference: k(&["C"]),
            mute_other: k(&["M"]),
            cycle_status: k(&["s"]),
            status_message: k(&["S"]),
            accept_contact: k(&["a"]),
            remove_contact: k(&["d"]),
            block_contact: k(&["b"]),
            // ctrl+f works while typing in the chat.
            send_file: k(&["f", "ctrl+f"]),
            files: k(&["F"]),
            new_group: k(&["g"]),
            group_invite: k(&["i"]),
            group_remove: k(&["r"]),
            group_rename: k(&["R"]),
            group_leave: k(&["L"]),
            devices: k(&["D"]),
        }
    }
}

impl KeysSection {
    /// Every action with its keys, in the order the config documents them.
    pub fn actions(&self) -> [(&'static str, &KeyList); 30] {
        [
            ("quit", &self.quit),
            ("help", &self.help),
            ("search", &self.search),
            ("next_pane", &self.next_pane),
            ("open_chat", &self.open_chat),
            ("back", &self.back),
            ("call", &self.call),
            ("accept_call", &self.accept_call),
            ("decline_call", &self.decline_call),
            ("hang_up", &self.hang_up),
            ("mute", &self.mute),
            ("hold", &self.hold),
            ("take_call", &self.take_call),
            ("conference_add", &self.conference_add),
            ("mark", &self.mark),
            ("conference", &self.conference),
            ("mute_other", &self.mute_other),
            ("cycle_status", &self.cycle_status),
            ("status_message", &self.status_message),
            ("accept_contact", &self.accept_contact),
            ("remove_contact", &self.remove_contact),
            ("block_contact", &self.block_contact),
            ("send_file", &self.send_file),
            ("files", &self.files),
            ("new_group", &self.new_group),
            ("group_invite", &self.group_invite),
            ("group_remove", &self.group_remove),
            ("group_rename", &self.group_rename),
            ("group_leave", &self.group_leave),
            ("devices", &self.devices),
        ]
    }

    /// One key does one thing: a key bound to two actions is an error,
    /// reported at the action the user changed from its default.
    fn check(&self) -> Result<(), Unusable> {
        let defaults = KeysSection::default();
        let actions = self.actions();
        let changed = |i: usize| actions[i].1 != defaults.actions()[i].1;
        for (i, (name, keys)) in actions.iter().enumerate() {
            if keys.0.is_empty() {
                return Unusable::at(&format!("keys.{name}"), "no key: give at least one".into());
            }
            for (j, (other, other_keys)) in actions.iter().enumerate().skip(i + 1) {
                if let Some(k) = keys.0.iter().find(|k| other_keys.0.contains(k)) {
                    let (at, also) = if changed(i) && !changed(j) {
                        (name, other)
                    } else {
                        (other, name)
                    };
                    return Unusable::at(
                        &format!("keys.{at}"),
                        format!("\"{k}\" is also the key for {also}; a key can do one thing"),
                    );
                }
            }
        }
        Ok(())
    }
}

/// A key as the config writes it: a key name and its modifiers. The UI
/// matches these against terminal events; the config only checks syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyChord {
    pub key: KeyName,
    pub ctrl: bool,
    pub alt: bool,
    pub shift: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyName {
    Char(char),
    F(u8),
    Enter,
    Esc,
    Tab,
    BackTab,
    Backspace,
    Delete,
    Up,
    Down,
    Left,
    Right,
    Home,
    End,
    PageUp,
    PageDown,
}

const NAMED_KEYS: &[(&str, KeyName)] = &[
    ("enter", KeyName::Enter),
    ("esc", KeyName::Esc),
    ("tab", KeyName::Tab),
    ("backtab", KeyName::BackTab),
    ("backspace", KeyName::Backspace),
    ("delete", KeyName::Delete),
    ("up", KeyName::Up),
    ("down", KeyName::Down),
    ("left", KeyName::Left),
    ("right", KeyName::Right),
    ("home", KeyName::Home),
    ("end", KeyName::End),
    ("pageup", KeyName::PageUp),
    ("pagedown", KeyName::PageDown),
    ("space", KeyName::Char(' ')),
];

impl std::str::FromStr for KeyChord {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let expected = "expected a key such as \"q\", \"ctrl+c\", \"alt+x\", \"f1\", \"esc\", \"enter\", \"tab\" or \"space\"";
        let mut chord = KeyChord {
            key: KeyName::Esc,
            ctrl: false,
            alt: false,
            shift: false,
        };
        // "+" alone, or a chord ending in "+", names the plus key.
        let (mods, last) = match s.strip_suffix("++") {
            Some(m) => (m, "+"),
            None if s == "+" => ("", "+"),
            None => match s.rsplit_once('+') {
                Some((m, l)) => (m, l),
                None => ("", s),
            },
        };
        for m in mods.split('+').filter(|m| !m.is_empty()) {
            match m.to_ascii_lowercase().as_str() {
                "ctrl" | "control" => chord.ctrl = true,
                "alt" | "meta" => chord.alt = true,
                "shift" => chord.shift = true,
                other => return Err(format!("{s:?}: unknown modifier {other:?}; {expected}")),
            }
        }
        let lower = last.to_ascii_lowercase();
        chord.key = if let Some((_, k)) = NAMED_KEYS.iter().find(|(n, _)| *n == lower) {
            *k
        } else if let Some(n) = lower.strip_prefix('f').and_then(|n| n.parse::<u8>().ok()) {
            if !(1..=12).contains(&n) {
                return Err(format!("{s:?}: function keys are f1 to f12"));
            }
            KeyName::F(n)
        } else {
            let mut chars = last.chars();
            match (chars.next(), chars.next()) {
                // A terminal sends ctrl+Y as ctrl+y: one key, one name.
                (Some(c), None) if !c.is_control() && chord.ctrl => {
                    KeyName::Char(c.to_ascii_lowercase())
                }
                (Some(c), None) if !c.is_control() => KeyName::Char(c),
                _ => return Err(format!("{s:?} is not a key; {expected}")),
            }
        };
        Ok(chord)
    }
}

impl std::fmt::Display for KeyChord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ctrl {
            f.write_str("ctrl+")?;
        }
        if self.alt {
            f.write_str("alt+")?;
        }
        if self.shift {
            f.write_str("shift+")?;
        }
        match self.key {
            KeyName::Char(' ') => f.write_str("space"),
            KeyName::Char(c) => write!(f, "{c}"),
            KeyName::F(n) => write!(f, "f{n}"),
            k => {
                let name = NAMED_KEYS.iter().find(|(_, v)| *v == k).map(|(n, _)| *n);
                f.write_str(name.unwrap_or("?"))
            }
        }
    }
}

/// One key or a list of keys for one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyList(pub Vec<KeyChord>);

impl<'de> Deserialize<'de> for KeyList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let list = match OneOrMany::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a key such as \"ctrl+c\" or a list of keys")
        })? {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        list.iter()
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .collect::<Result<Vec<_>, _>>()
            .map(KeyList)
    }
}

/// `host:port` where host is an IP address or a DNS name; resolved when
/// used, so a config can name a host that is not up yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let expected =
            "expected an address `host:port`, e.g. `127.0.0.1:7700` or `auth.example.org:7700`";
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(HostPort {
                host: a.ip().to_string(),
                port: a.port(),
            });
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?}: {expected}"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?}: port {port:?} is not a number 0-65535; {expected}"))?;
        let valid = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !l.starts_with('-')
            });
        if !valid {
            return Err(format!(
                "{s:?}: {host:?} is not a host name or IP address; {expected}"
            ));
        }
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One or more authority addresses (never none), in the order tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorities(pub Vec<HostPort>);

impl Authorities {
    pub fn first(&self) -> &HostPort {
        &self.0[0]
    }
}

impl From<HostPort> for Authorities {
    fn from(h: HostPort) -> Self {
        Authorities(vec![h])
    }
}

impl std::fmt::Display for Authorities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, h) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{h}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Authorities {
    type Err = String;
    /// One `host:port`, or several separated by commas.
    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(|h| h.trim().parse())
            .collect::<Result<Vec<HostPort>, _>>()
            .map(Authorities)
    }
}

impl<'de> Deserialize<'de> for Authorities {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let list = match OneOrMany::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected an address \"host:port\" or a list of them, e.g. [\"auth1.example.org:7700\", \"auth2.example.org:7700\"]",
            )
        })? {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        if list.is_empty() {
            return Err(serde::de::Error::custom(
                "an empty list: give at least one authority address",
            ));
        }
        list.iter()
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .collect::<Result<Vec<HostPort>, _>>()
            .map(Authorities)
    }
}

/// A socket address to bind: an IP address and a port.
pub fn listen_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "{s:?} is not a socket address: expected `ip:port`, e.g. `0.0.0.0:7700` or `[::]:7700`"
        ))
    })
}

/// An ed25519 public key written as 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

impl std::str::FromStr for PublicKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let k = crate::wire::hex_decode::<32>(s)
            .ok_or_else(|| format!("{s:?} is not a public key: expected 64 hex digits"))?;
        if crate::identity::authority_x25519_public(&k).is_none() {
            return Err(format!("{s:?} is not a valid ed25519 public key"));
        }
        Ok(PublicKey(k))
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A duration written for people: `90s`, `15m`, `24h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "{s:?} is not a duration ({e}): expected e.g. \"90s\", \"15m\" or \"24h\""
                ))
            })
    }
}

impl Config {
    /// Parse TOML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |key: String, e: toml::de::Error| ConfigError::Invalid {
            path: path.to_owned(),
            line: e
                .span()
                .map(|r| text[..r.start.min(text.len())].matches('\n').count() + 1),
            key,
            message: e.message().trim().to_owned(),
        };
        let de = toml::Deserializer::parse(text).map_err(|e| invalid("(syntax)".into(), e))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            invalid(key, e.into_inner())
        })?;
        match config.check() {
            Ok(()) => Ok(config),
            Err(Unusable { key, message }) => Err(ConfigError::Invalid {
                path: path.to_owned(),
                line: line_of(text, &key),
                message,
                key,
            }),
        }
    }

    /// Values of the right type that can never work: caught at load, not
    /// at the first call.
    fn check(&self) -> Result<(), Unusable> {
        let m = &self.media;
        if ![10, 20, 40].contains(&m.frame_ms) {
            return Unusable::at(
                "media.frame_ms",
                format!("{} ms: Opus frames here are 10, 20 or 40 ms", m.frame_ms),
            );
        }
        if !(6_000..=510_000).contains(&m.bitrate) {
            return Unusable::at(
                "media.bitrate",
                format!(
                    "{} b/s: Opus takes 6000 to 510000 bits per second",
                    m.bitrate
                ),
            );
        }
        if m.fec_min_loss_percent > 100 {
            return Unusable::at(
                "media.fec_min_loss_percent",
                format!("{}: a percentage, 0 to 100", m.fec_min_loss_percent),
            );
        }
        if m.jitter_max_ms < m.frame_ms || m.jitter_max_ms > 5_000 {
            return Unusable::at(
                "media.jitter_max_ms",
                format!(
                    "{} ms: from one frame ({} ms) to 5000 ms",
                    m.jitter_max_ms, m.frame_ms
                ),
            );
        }
        if m.report_interval.0 < Duration::from_millis(100) {
            return Unusable::at("media.report_interval", "at least 100ms".into());
        }
        // The echo test device plays back what the output played: an echo
        // canceller would remove exactly what it is for.
        if self.audio.input == crate::media::audio::DeviceSpec::Echo
            && self.audio.echo_cancellation == crate::media::processing::Switch::On
        {
            return Unusable::at(
                "audio.echo_cancellation",
                "the \"echo\" input plays back the output on purpose: cancelling it leaves silence; use \"auto\" or false".into(),
            );
        }
        let c = &self.call;
        for (key, d) in [
            ("call.invite_timeout", &c.invite_timeout),
            ("call.ring_timeout", &c.ring_timeout),
            ("call.connect_timeout", &c.connect_timeout),
            ("overlay.keepalive", &self.overlay.keepalive),
            ("overlay.supernode_timeout", &self.overlay.supernode_timeout),
        ] {
            if d.0 < Duration::from_millis(100) {
                return Unusable::at(key, "at least 100ms".into());
            }
        }
        if self.overlay.supernode_timeout.0 <= self.overlay.keepalive.0 {
            return Unusable::at(
                "overlay.supernode_timeout",
                "must be longer than overlay.keepalive, or every supernode looks dead between keepalives".into(),
            );
        }
        if self.authority.database_password_file.is_some()
            && !matches!(
                self.authority.database,
                crate::authority::Database::Postgres(_)
            )
        {
            return Unusable::at(
                "authority.database_password_file",
                "a password file is for a PostgreSQL database; `database` names an SQLite file"
                    .into(),
            );
        }
        check_log_filter(&self.log.level).or_else(|e| Unusable::at("log.level", e))?;
        self.keys.check()
    }

    /// Load `path`; with no path, the user's config file if it exists,
    /// else defaults. Returns the config and the file it came from.
    pub fn load(path: Option<&Path>) -> Result<(Self, Option<PathBuf>), ConfigError> {
        let path = match path {
            Some(p) => p.to_owned(),
            None => match default_config_path() {
                Some(p) if p.exists() => p,
                _ => return Ok((Config::default(), None)),
            },
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Ok((Self::parse(&text, &path)?, Some(path)))
    }

    /// The data dir: the flag, else the file's `data_dir`, else the
    /// platform's (`~/.local/share/natter`).
    pub fn data_dir(&self, flag: Option<&Path>) -> Result<PathBuf, ConfigError> {
        if let Some(p) = flag.or(self.data_dir.as_deref()) {
            return Ok(p.to_owned());
        }
        project_dirs()
            .map(|d| d.data_dir().to_owned())
            .ok_or(ConfigError::NoDataDir)
    }
}

/// A value that parses but cannot work, and the key it is under.
#[derive(Debug)]
struct Unusable {
    key: String,
    message: String,
}

impl Unusable {
    fn at<T>(key: &str, message: String) -> Result<T, Unusable> {
        Err(Unusable {
            key: key.to_owned(),
            message,
        })
    }
}

/// The line of `key` ("table.name") in the TOML text: the first line in
/// its `[table]` that assigns it. `None` when not written in the file
/// (e.g. a default that conflicts with a key that is).
fn line_of(text: &str, key: &str) -> Option<usize> {
    let (table, name) = key.rsplit_once('.').unwrap_or(("", key));
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            current = h.trim().to_owned();
        } else if current == table
            && let Some(rest) = t.strip_prefix(name)
            && rest.trim_start().starts_with('=')
        {
            return Some(i + 1);
        }
    }
    None
}

const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// A log filter as `[log] level` and `--log-level` take it: comma-separated
/// directives, each a level (`debug`) or `target=level`
/// (`natter::overlay=trace`). A bare word that is no level is refused,
/// though tracing would read it as a target with every level: it is
/// almost always a misspelt level (`verbose`).
pub fn check_log_filter(filter: &str) -> Result<(), String> {
    let expected = "expected a level (off, error, warn, info, debug, trace) or per module such as \"natter::overlay=debug\"";
    let directives: Vec<&str> = filter
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Err(format!("empty; {expected}"));
    }
    for d in directives {
        let level = d.rsplit_once('=').map_or(d, |(_, l)| l).trim();
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
            return Err(format!("{level:?} is not a log level; {expected}"));
        }
    }
    Ok(())
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("org", "natter", "natter")
}

pub fn default_config_path() -> Option<PathBuf> {
    project_dirs().map(|d| d.config_dir().join("natter.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("/etc/natter.toml"))
    }

    #[test]
    fn empty_is_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.authority.listen.port(), 7700);
        assert_eq!(c.login.server.to_string(), "127.0.0.1:7700");
    }

    #[test]
    fn unusable_values_name_file_line_and_key() {
        let cases = [
            (
                "[media]\nframe_ms = 25\n",
                "media.frame_ms",
                2,
                "10, 20 or 40",
            ),
            ("[media]\n\nbitrate = 5\n", "media.bitrate", 3, "6000"),
            (
                "[log]\nlevel = \"verbose\"\n",
                "log.level",
                2,
                "not a log level",
            ),
            (
                "[log]\nlevel = \"natter=loud\"\n",
                "log.level",
                2,
                "\"loud\"",
            ),
            (
                "[keys]\ncall = \"q\"\n",
                "keys.call",
                2,
                "also the key for quit",
            ),
            ("[keys]\nhelp = []\n", "keys.help", 2, "no key"),
            // The call keys that work while typing are checked too, in
            // either case.
            (
                "[keys]\nmute = \"ctrl+y\"\n",
                "keys.mute",
                2,
                "\"ctrl+y\" is also the key for accept_call",
            ),
            (
                "[keys]\nstatus_message = \"ctrl+X\"\n",
                "keys.status_message",
                2,
                "also the key for hang_up",
            ),
            (
                "[call]\nring_timeout = \"0s\"\n",
                "call.ring_timeout",
                2,
                "100ms",
            ),
            (
                "[overlay]\nkeepalive = \"5s\"\n",
                "overlay.supernode_timeout",
                0,
                "longer than overlay.keepalive",
            ),
        ];
        for (text, key, line, words) in cases {
            match parse(text) {
                Err(ConfigError::Invalid {
                    key: k,
                    line: l,
                    message,
                    ..
                }) => {
                    assert_eq!(k, key, "{text}");
                    assert_eq!(l, (line > 0).then_some(line), "{text}");
                    assert!(message.contains(words), "{text}: {message}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        let e = parse("[media]\nframe_ms = 25\n").unwrap_err().to_string();
        assert!(
            e.contains("/etc/natter.toml, line 2: key `media.frame_ms`"),
            "{e}"
        );
    }

    #[test]
    fn usable_values_pass() {
        let ok = "[media]\nframe_ms = 10\nbitrate = 6000\n[log]\nlevel = \"WARN,natter::overlay=debug\"\n[keys]\nquit = \"ctrl+q\"\ncall = \"q\"\n";
        parse(ok).unwrap();
        assert!(check_log_filter("off").is_ok());
        assert!(check_log_filter("").is_err());
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../config/natter.toml");
        let c = parse(text).unwrap();
        // No placeholder key is pinned: a client must be given the real one.
        assert!(c.login.authority_key.is_none());
        assert_eq!(c.authority.listen.port(), 7700);
        assert_eq!(c.files.max_rate, 0);
        // The file shows the relay's real default deny list.
        assert_eq!(c.relay.denied_peers, RelaySection::default().denied_peers);
    }

    #[test]
    fn authority_database_kinds_and_errors() {
        use crate::authority::Database;
        let db = |t: &str| parse(&format!("[authority]\n{t}\n")).map(|c| c.authority.database);
        assert_eq!(db("").unwrap(), Database::Sqlite("authority.db".into()));
        assert_eq!(
            db("database = \"sqlite:/var/lib/a.db\"").unwrap(),
            Database::Sqlite("/var/lib/a.db".into())
        );
        let url = "postgresql://natter:pw@db.example.org:5433/natter";
        assert_eq!(
            db(&format!("database = \"{url}\"")).unwrap(),
            Database::Postgres(url.into())
        );
        for (text, key, line, words) in [
            (
                "\ndatabase = \"postgres://a@b/c?sslmode=bogus\"",
                "authority.database",
                3,
                "not a PostgreSQL URL",
            ),
            (
                "database = \"mysql://x/y\"",
                "authority.database",
                2,
                "unknown database kind",
            ),
            (
                "database_password_file = \"/etc/pw\"",
                "authority.database_password_file",
                2,
                "PostgreSQL",
            ),
        ] {
            match db(text) {
                Err(ConfigError::Invalid {
                    key: k,
                    line: l,
                    message,
                    ..
                }) => {
                    assert_eq!(k, key, "{text}");
                    assert_eq!(l, Some(line), "{text}");
                    assert!(message.contains(words), "{text}: {message}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        let c = parse(&format!(
            "[authority]\ndatabase = \"{url}\"\ndatabase_password_file = \"pw\"\n"
        ))
        .unwrap();
        assert_eq!(c.authority.database_password_file, Some("pw".into()));
    }

    #[test]
    fn login_server_takes_one_address_or_a_list() {
        let c = parse("[login]\nserver = [\"a.example.org:7700\", \"127.0.0.2:7701\"]\n").unwrap();
        assert_eq!(c.login.server.0.len(), 2);
        assert_eq!(
            c.login.server.to_string(),
            "a.example.org:7700, 127.0.0.2:7701"
        );
        let e = parse("[login]\nserver = []\n").unwrap_err().to_string();
        assert!(
            e.contains("login.server") && e.contains("at least one"),
            "{e}"
        );
        let e = parse("[login]\nserver = [\"a:7700\", \"b\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("login.server") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let e = parse("[authority]\nlisen = \"0.0.0.0:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/natter.toml"), "{e}");
        assert!(e.contains("authority"), "{e}");
        assert!(e.contains("lisen"), "{e}");
        assert!(e.contains("expected one of"), "{e}");
    }

    #[test]
    fn wrong_type_names_key_and_expectation() {
        let e = parse("[authority]\nopen_registration = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("authority.open_registration"), "{e}");
        assert!(e.contains("expected a boolean"), "{e}");
    }

    #[test]
    fn bad_addresses_rejected() {
        let e = parse("[authority]\nlisten = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("authority.listen"), "{e}");
        assert!(e.contains("ip:port"), "{e}");
        let e = parse("[login]\nserver = \"auth.example.org\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("login.server"), "{e}");
        assert!(e.contains("host:port"), "{e}");
        let e = parse("[login]\nserver = \"bad host:80\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a host name"), "{e}");
        let ok = parse("[login]\nserver = \"auth.example.org:7700\"\n").unwrap();
        assert_eq!(ok.login.server.first().host, "auth.example.org");
        let v6 = parse("[login]\nserver = \"[::1]:7700\"\n").unwrap();
        assert_eq!(v6.login.server.to_string(), "[::1]:7700");
    }

    #[test]
    fn bad_key_and_duration_rejected() {
        let e = parse("[login]\nauthority_key = \"abcd\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("login.authority_key") && e.contains("64 hex digits"),
            "{e}"
        );
        let e = parse("[authority]\ncertificate_lifetime = \"a day\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("certificate_lifetime") && e.contains("duration"),
            "{e}"
        );
    }

    #[test]
    fn relay_section() {
        let c = parse("[relay]\nsecret = \"s\"\nports = \"50000-50100\"\nuser_bandwidth = 0\n")
            .unwrap();
        assert_eq!(c.relay.ports, (50_000, 50_100));
        assert_eq!(c.relay.secret, "s");
        assert_eq!(
            parse("[relay]\nports = \"0\"\n").unwrap().relay.ports,
            (0, 0)
        );
        let e = parse("[relay]\nports = \"9-3\"\n").unwrap_err().to_string();
        assert!(e.contains("relay.ports") && e.contains("port range"), "{e}");
    }

    #[test]
    fn nat_keys() {
        let c = parse(
            "[supernode]\nlisten = \"198.51.100.1:7710\"\nalt_address = \"198.51.100.2\"\n[nat]\nstun_servers = [\"198.51.100.1:3478\"]\n",
        )
        .unwrap();
        let l = c.supernode.listen;
        assert_eq!(
            c.supernode.alt(l),
            Some("198.51.100.2:7711".parse().unwrap())
        );
        assert!(c.nat.detect);
        assert_eq!(c.nat.stun_servers[0].to_string(), "198.51.100.1:3478");
        let e = parse("[supernode]\nalt_address = \"nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("supernode.alt_address"), "{e}");
        assert_eq!(parse("").unwrap().supernode.alt(l), None);
    }

    #[test]
    fn audio_devices_and_media_settings() {
        let c = parse("[audio]\ninput = \"tone:1000\"\noutput = \"file:/tmp/o.wav\"\n[media]\nframe_ms = 10\n").unwrap();
        assert_eq!(
            c.audio.input,
            crate::media::audio::DeviceSpec::Tone { hz: 1000.0 }
        );
        assert_eq!(c.media.frame_ms, 10);
        let e = parse("[audio]\ninput = \"tone:x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("audio.input") && e.contains("not an audio device"),
            "{e}"
        );
    }

    #[test]
    fn audio_processing_switches() {
        use crate::media::processing::Switch;
        let c = parse("").unwrap();
        assert_eq!(c.audio.echo_cancellation, Switch::Auto);
        assert!(c.audio.processing().stages(true).echo_cancellation);
        assert!(!c.audio.processing().stages(false).any());
        let c = parse(
            "[audio]\necho_cancellation = false\nnoise_suppression = true\nauto_gain = \"auto\"\n",
        )
        .unwrap();
        assert_eq!(c.audio.echo_cancellation, Switch::Off);
        assert_eq!(c.audio.noise_suppression, Switch::On);
        assert_eq!(c.audio.auto_gain, Switch::Auto);
        for bad in ["\"yes\"", "1"] {
            let e = parse(&format!("[audio]\nauto_gain = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("audio.auto_gain") && e.contains("true, false or \"auto\""),
                "{e}"
            );
        }
        let e = parse("[audio]\ninput = \"echo\"\noutput = \"null\"\necho_cancellation = true\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("audio.echo_cancellation") && e.contains("line 4"),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_is_reported() {
        let e = parse("[authority\n").unwrap_err().to_string();
        assert!(e.contains("/etc/natter.toml"), "{e}");
    }

    #[test]
    fn keys_parse_and_reject() {
        let c = parse("[keys]\nquit = \"ctrl+q\"\nhelp = [\"?\", \"F2\"]\n").unwrap();
        assert_eq!(c.keys.quit.0.len(), 1);
        assert!(c.keys.quit.0[0].ctrl);
        assert_eq!(c.keys.quit.0[0].to_string(), "ctrl+q");
        assert_eq!(c.keys.help.0[1].key, KeyName::F(2));
        // Unset actions keep their defaults.
        assert_eq!(c.keys.search.0[0].to_string(), "/");
        let e = parse("[keys]\nmute = \"hyper+m\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("keys.mute") && e.contains("modifier"), "{e}");
        let e = parse("[keys]\nmute = \"mm\"\n").unwrap_err().to_string();
        assert!(e.contains("keys.mute") && e.contains("not a key"), "{e}");
        let e = parse("[keys]\nmute = 3\n").unwrap_err().to_string();
        assert!(e.contains("keys.mute"), "{e}");
        assert_eq!(
            "ctrl++".parse::<KeyChord>().unwrap().key,
            KeyName::Char('+')
        );
        assert_eq!("space".parse::<KeyChord>().unwrap().to_string(), "space");
    }
}
