//! The client runtime behind the node API ([`crate::node::api`]), serving
//! every front end (the TUI, `--headless`, the demo's bots, tests and
//! benches): one tokio task per logged-in user that owns the login
//! (password, renewal with the device key, the certificate in the data
//! dir), the supernode host cache (`hosts` in the data dir) and the overlay
//! node (attachment, lookups, watches, NAT, peer links, envelopes) with
//! chat and contacts ([`crate::node::messaging`]) and calls
//! ([`crate::node::calls`]) running in it; it may volunteer a supernode
//! beside it ([`Volunteer`]). It takes [`Command`]s and reports [`Event`]s;
//! the node driver's own vocabulary stays inside: `report` turns the cores'
//! events into API events and `calls` keeps what the API shows of calls.
//! Without call options the call commands are answered with
//! [`Event::not_available`].

mod account;
mod calls;
mod report;

use self::calls::ApiCalls;
use crate::chat::ChatConfig;
use crate::clock::Clock;
use crate::config::{Authorities, HostPort};
use crate::contacts::{ContactInfo, ContactsConfig};
use crate::identity::{Certificate, DeviceIdentity};
use crate::link::{LinkConfig, LinkEndpoint, LinkError};
use crate::node::api::{
    AttachedSupernode, AudioFallback, AudioStatus, ChatMessage, Command, EnvelopeOutcome,
    ErrorReason, Event, LoginState, LookupResult, MessageState, NatStatus, OverlayEvent,
    RelayCredentials,
};
use crate::node::calls::CallOptions;
/// How the runtime measures the NAT ([`ClientSettings::nat`]).
pub use crate::node::driver::NatOptions;
use crate::node::driver::{self as ov, ClientOptions, OverlayNode, PeerCommand};
use crate::node::files::FilesCommand;
use crate::node::messaging::MessagingCommand as Msg;
use crate::node::messaging::{Messaging, MessagingError};
use crate::node::{AuthorityConnection, DeviceError, DeviceFiles, LoginError};
use crate::overlay::{ClientConfig, ClientCore, ClientEvent, LookupOutcome, PresenceRecord};
use crate::time::UnixSecs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Login(#[from] LoginError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("{}", bind_text(addr, source))]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no supernode to attach to: set [overlay] bootstrap or pass --bootstrap")]
    NoSupernodes,
    #[error(transparent)]
    Messaging(#[from] MessagingError),
    #[error(transparent)]
    CallHistory(#[from] crate::sqlite::SqliteError),
}

/// Why the overlay socket could not be had, and what to do about it:
/// "address in use" is not a login problem (issue 13.11).
fn bind_text(addr: &SocketAddr, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "UDP {addr} is in use by another program (another natter?): set [overlay] listen in the config to a free port (port 0 picks one), or stop that program ({e})"
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            "UDP {addr} is not an address of this machine: fix [overlay] listen in the config ({e})"
        ),
        _ => format!("cannot bind UDP {addr} ([overlay] listen): {e}"),
    }
}

/// How the runtime reaches the authority and the overlay.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Device keys and the certificate live here.
    pub data_dir: PathBuf,
    /// The authorities to log in at, tried in order.
    pub authority: Authorities,
    pub authority_key: [u8; 32],
    /// Supernodes to attach through (resolved addresses).
    pub bootstrap: Vec<SocketAddr>,
    /// Local UDP address of the overlay socket.
    pub listen: SocketAddr,
    pub overlay: ClientConfig,
    /// Renew the certificate when less validity than this is left.
    pub renew_before_secs: u64,
    /// Users to ask to be contacts once online, unless they are in the
    /// contact list already (the demo's echo123 and bot).
    pub contacts: Vec<String>,
    /// Go away after this long without [`Command::Activity`] (0: never).
    pub away_after_ms: u64,
    /// Publish the real status in the directory record, for everyone (by
    /// default only authorized contacts see it).
    pub public_presence: bool,
    /// Relayed candidates and the TCP fallback.
    pub paths: crate::node::driver::PathOptions,
    /// Make and answer calls with these devices and settings (`None`: the
    /// call commands are answered "not available").
    pub calls: Option<CallOptions>,
    /// Only a certificate for this user counts (`None`: any).
    pub user: Option<String>,
    /// How to measure the NAT (`None`: not at all).
    pub nat: Option<NatOptions>,
    /// Users whose directory records to follow from the start.
    pub watch: Vec<String>,
    /// Volunteer as a supernode when the account may and the address is
    /// public (see [`Volunteer`]).
    pub volunteer: Option<Volunteer>,
    /// Where accepted files go and how fast files are sent (`[files]`).
    pub files: crate::config::FilesSection,
}

/// Starts a supernode beside the client, bootstrapping through the
/// supernode we attached to; answers the node and its address. The runtime
/// calls it once, after the first attachment, when the certificate has the
/// supernode role and the supernode saw our own address and port (no NAT).
/// How a supernode is set up is the caller's business (its config).
#[derive(Clone)]
pub struct Volunteer(pub Arc<dyn Fn(SocketAddr) -> VolunteerFuture + Send + Sync>);

pub type VolunteerFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(OverlayNode, SocketAddr), String>> + Send>,
>;

impl std::fmt::Debug for Volunteer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Volunteer")
    }
}

/// The front end's end of a running client.
pub struct ClientHandle {
    pub commands: mpsc::Sender<Command>,
    pub events: mpsc::Receiver<Event>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Start the runtime. It reports its login state, audio and NAT status
/// first; with a valid certificate in the data dir it logs straight in.
pub fn spawn(settings: ClientSettings, clock: Arc<dyn Clock>) -> ClientHandle {
    let (ctx, crx) = mpsc::channel(64);
    let (etx, erx) = mpsc::channel(1024);
    let task = tokio::spawn(async move {
        let mut rt = Runtime {
            files: DeviceFiles::new(&settings.data_dir),
            settings,
            clock,
            events: etx,
            node: None,
            username: None,
            attached: Vec::new(),
            to_add: Vec::new(),
            reported: Vec::new(),
            calls: ApiCalls::new(),
            call_history: None,
            published: false,
            to_call: Vec::new(),
            cert: None,
            local_port: 0,
            volunteered: None,
            volunteer_checked: false,
            nat: NatStatus {
                note: Some("measuring the NAT after login".into()),
                ..Default::default()
            },
        };
        rt.run(crx).await;
        rt.emit(Event::Stopped).await;
    });
    ClientHandle {
        commands: ctx,
        events: erx,
        task,
    }
}

/// Which audio devices can be used. Without ALSA devices (`/dev/snd`)
/// there is no sound card: calls use the tone generator and null output.
pub fn audio_status() -> AudioStatus {
    use crate::media::audio::DeviceSpec;
    call_devices(&DeviceSpec::Default, &DeviceSpec::Default).2
}

/// Whether this build can use a sound card and the machine has one.
fn have_sound_card() -> bool {
    cfg!(feature = "audio-cpal") && std::path::Path::new("/dev/snd").exists()
}

/// The devices calls use for the configured `input` and `output`, and how
/// the UI shows them: without a sound card, sound card devices become the
/// tone generator (input) and the null device (output), and the note says so.
pub fn call_devices(
    input: &crate::media::audio::DeviceSpec,
    output: &crate::media::audio::DeviceSpec,
) -> (
    crate::media::audio::DeviceSpec,
    crate::media::audio::DeviceSpec,
    AudioStatus,
) {
    use crate::media::audio::DeviceSpec;
    let card = |d: &DeviceSpec| matches!(d, DeviceSpec::Default | DeviceSpec::Named(_));
    let mut fallback = None;
    let (mut input, mut output) = (input.clone(), output.clone());
    if !have_sound_card() && (card(&input) || card(&output)) {
        if card(&input) {
            input = DeviceSpec::Tone { hz: 440.0 };
        }
        if card(&output) {
            output = DeviceSpec::Null;
        }
        fallback = Some(AudioFallback::NoSoundCard);
    }
    let status = AudioStatus {
        input: input.to_string(),
        output: output.to_string(),
        fallback,
    };
    (input, output, status)
}

struct Runtime {
    settings: ClientSettings,
    files: DeviceFiles,
    clock: Arc<dyn Clock>,
    events: mpsc::Sender<Event>,
    node: Option<OverlayNode>,
    username: Option<String>,
    attached: Vec<AttachedSupernode>,
    /// Contact requests to send once our presence is published.
    to_add: Vec<String>,
    nat: NatStatus,
    /// Failures answered to their command that the node also reports as
    /// `CommandFailed`: shown once.
    reported: Vec<String>,
    /// The calls as the API shows them.
    calls: ApiCalls,
    /// The call history (`calls.db`), once logged in. In a mutex (never
    /// held across an await) because the runtime is shared by reference
    /// across awaits and a connection is not `Sync`.
    call_history: Option<std::sync::Mutex<crate::call::history::CallHistory>>,
    /// Our presence record is in the directory: the callee's answers can
    /// find us.
    published: bool,
    /// Calls asked for before that, placed once published.
    to_call: Vec<Command>,
    /// The certificate in use.
    cert: Option<Certificate>,
    /// The overlay socket's port.
    local_port: u16,
    /// The supernode we run as a volunteer.
    volunteered: Option<OverlayNode>,
    volunteer_checked: bool,
}

impl Runtime {
    async fn emit(&self, e: Event) {
        let _ = self.events.send(e).await;
    }

    async fn error(&self, command: &str, message: impl std::fmt::Display) {
        self.failed(command, ErrorReason::Failed, message).await
    }

    async fn failed(&self, command: &str, reason: ErrorReason, message: impl std::fmt::Display) {
        self.emit(Event::Error {
            command: command.to_owned(),
            reason,
            message: message.to_string(),
        })
        .await;
    }

    async fn run(&mut self, mut commands: mpsc::Receiver<Command>) {
        let audio = match &self.settings.calls {
            Some(c) => call_devices(&c.input, &c.output).2,
            None => audio_status(),
        };
        self.emit(Event::Audio(audio)).await;
        self.emit(Event::Nat(self.nat.clone())).await;
        match self.startup_certificate().await {
            Ok(Some(cert)) => self.go_online(cert).await,
            Ok(None) => {
                self.emit(Event::Login(LoginState::NeedCredentials {
                    username: None,
                    error: None,
                }))
                .await
            }
            Err(e) => {
                self.emit(Event::Login(LoginState::NeedCredentials {
                    username: None,
                    error: Some(e.to_string()),
                }))
                .await
            }
        }
        let mut renew = tokio::time::interval(Duration::from_secs(300));
        renew.tick().await;
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    None | Some(Command::Quit) => break,
                    Some(c) => self.command(c).await,
                },
                ev = next_event(&mut self.node) => match ev {
                    Some(e) => self.node_event(e).await,
                    None => {
                        self.node = None;
                        self.error("overlay", "the overlay node stopped").await;
                    }
                },
                _ = renew.tick() => self.renew_if_due().await,
            }
        }
        for node in [self.node.take(), self.volunteered.take()]
            .into_iter()
            .flatten()
        {
            stop_node(node).await;
        }
    }

    async fn node_event(&mut self, e: ov::Event) {
        match e {
            ov::Event::Client(e) => self.overlay_event(e).await,
            ov::Event::Nat(r) => {
                self.nat = nat_status(&r);
                self.emit(Event::Nat(self.nat.clone())).await;
                self.emit(Event::NatDetected(Box::new(r))).await;
            }
            ov::Event::Chat(e) => {
                if let Some(e) = report::chat_event(e) {
                    self.emit(e).await;
                }
            }
            ov::Event::Contacts(e) => self.contacts_event(e).await,
            ov::Event::Group(r) => {
                for e in report::group_report(r) {
                    self.emit(e).await;
                }
            }
            ov::Event::Call(u) => {
                for e in self.calls.update(&u, self.clock.unix()) {
                    let stored = match (&e, &self.call_history) {
                        (Event::CallLogged(r), Some(h)) => {
                            h.lock().unwrap_or_else(|p| p.into_inner()).record(r)
                        }
                        _ => Ok(()),
                    };
                    if let Err(err) = stored {
                        self.error("call history", err).await;
                    }
                    self.emit(e).await;
                }
            }
            ov::Event::Peer(p) => self.emit(Event::Peer(report::peer_event(p))).await,
            ov::Event::File(f) => self.emit(Event::File(f)).await,
            ov::Event::CommandFailed {
                command,
                reason,
                error,
            } => {
                // Reported already, under the command's name.
                if let Some(i) = self.reported.iter().position(|r| *r == error) {
                    self.reported.remove(i);
                } else {
                    self.failed(command, reason, error).await
                }
            }
            ov::Event::Supernode(_) | ov::Event::Stopped => {}
        }
    }

    /// The stored certificate if it is valid, renewed when close to expiry.
    async fn startup_certificate(&self) -> Result<Option<Certificate>, RuntimeError> {
        let now = self.clock.unix_secs();
        let key = self.settings.authority_key;
        let Some(cert) = self.files.certificate()? else {
            return Ok(None);
        };
        let other_user =
            (self.settings.user.as_ref()).is_some_and(|u| !u.eq_ignore_ascii_case(&cert.username));
        if cert.verify(&key, now).is_err() || other_user {
            return Ok(None);
        }
        if cert.not_after > (now + self.settings.renew_before_secs).get() {
            return Ok(Some(cert));
        }
        let (device, _) = self.files.identity()?;
        let mut conn = self.connect(&device).await?;
        let fresh = conn.renew(&cert).await?;
        self.files.save_certificate(&fresh)?;
        Ok(Some(fresh))
    }

    async fn connect(&self, device: &DeviceIdentity) -> Result<AuthorityConnection, LoginError> {
        AuthorityConnection::connect_any(
            &self.settings.authority,
            self.settings.authority_key,
            device,
            self.clock.clone(),
        )
        .await
    }

    async fn password_login(
        &self,
        username: &str,
        password: &str,
        register: bool,
    ) -> Result<Certificate, RuntimeError> {
        let (device, _) = self.files.identity()?;
        let mut conn = self.connect(&device).await?;
        if register {
            conn.register(username, password).await?;
        }
        let cert = conn.login(username, password).await?;
        self.files.save_certificate(&cert)?;
        Ok(cert)
    }

    async fn renew_if_due(&mut self) {
        if self.node.is_none() {
            return;
        }
        let Ok(Some(cert)) = self.files.certificate() else {
            return;
        };
        if cert.not_after > self.clock.unix_secs().get() + self.settings.renew_before_secs {
            return;
        }
        let renewed = async {
            let (device, _) = self.files.identity()?;
            let mut conn = self.connect(&device).await?;
            let fresh = conn.renew(&cert).await?;
            self.files.save_certificate(&fresh)?;
            Ok::<_, RuntimeError>(fresh)
        }
        .await;
        match renewed {
            Ok(fresh) => {
                self.emit(Event::Login(LoginState::LoggedIn {
                    username: fresh.username.clone(),
                    until: fresh.not_after,
                    role: fresh.role,
                }))
                .await;
                self.cert = Some(fresh.clone());
                if let Some(n) = &self.node {
                    let _ = n
                        .commands
                        .send(ov::Command::SetCertificate {
                            cert: Box::new(fresh),
                        })
                        .await;
                }
            }
            Err(e) => tracing::warn!("certificate renewal failed (will retry): {e}"),
        }
    }

    async fn go_online(&mut self, cert: Certificate) {
        let username = cert.username.clone();
        let (until, role) = (cert.not_after, cert.role);
        self.cert = Some(cert.clone());
        match self.start_overlay(cert).await {
            Ok(node) => {
                self.node = Some(node);
                self.calls.set_me(&username);
                self.username = Some(username.clone());
                self.emit(Event::Login(LoginState::LoggedIn {
                    username,
                    until,
                    role,
                }))
                .await;
                let list = self.contact_list().await;
                for c in &list {
                    for e in report::contact_events(c) {
                        self.emit(e).await;
                    }
                }
                self.to_add = self
                    .settings
                    .contacts
                    .iter()
                    .map(|c| c.to_ascii_lowercase())
                    .filter(|c| !list.iter().any(|l| &l.username == c))
                    .collect();
            }
            // Logged in, but not online: say so, so that the login form does
            // not read it as a wrong password.
            Err(e) => {
                self.emit(Event::Login(LoginState::NeedCredentials {
                    username: Some(username.clone()),
                    error: Some(format!(
                        "logged in as {username}, but natter cannot go online (not a login problem): {e}"
                    )),
                }))
                .await
            }
        }
    }

    async fn start_overlay(&mut self, cert: Certificate) -> Result<OverlayNode, RuntimeError> {
        let (device, _) = self.files.identity()?;
        let listen = self.settings.listen;
        let mut socket = crate::socket::NodeSocket::bind(listen)
            .await
            .map_err(|source| RuntimeError::Bind {
                addr: listen,
                source,
            })?;
        self.local_port = socket.local_addr().map_or(0, |a| a.port());
        let hosts = self.supernodes_for(&mut socket)?;
        let key = self.settings.authority_key;
        let mut core = ClientCore::new(
            device.clone(),
            cert.clone(),
            key,
            hosts,
            self.settings.overlay.clone(),
            self.clock.now(),
        );
        for w in &self.settings.watch {
            core.watch(w);
        }
        self.call_history = Some(std::sync::Mutex::new(
            crate::call::history::CallHistory::open(&self.settings.data_dir.join("calls.db"))?,
        ));
        let messaging = self.open_messaging(&device, &cert)?;
        let link = LinkEndpoint::new(device, cert, key, LinkConfig::default())?;
        // Measure the NAT against the attached supernodes.
        let opts = ClientOptions {
            nat: self.settings.nat.clone(),
            messaging: Some(messaging),
            paths: self.settings.paths.clone(),
            calls: self.settings.calls.clone().map(|mut c| {
                (c.input, c.output, _) = call_devices(&c.input, &c.output);
                c
            }),
            files: Some(crate::node::files::FileOptions {
                records: self.settings.data_dir.join("transfers"),
                downloads: (self.settings.files.downloads.clone())
                    .unwrap_or_else(|| self.settings.data_dir.join("downloads")),
                config: crate::transfer::TransferConfig {
                    max_rate: self.settings.files.max_rate,
                    ..Default::default()
                },
            }),
        };
        OverlayNode::client(socket, link, core, self.clock.clone(), opts).map_err(|source| {
            RuntimeError::Bind {
                addr: listen,
                source,
            }
        })
    }

    /// The supernodes to attach to: the host cache, then the configured
    /// bootstrap, keeping those the socket's address family can reach.
    fn supernodes_for(
        &self,
        socket: &mut crate::socket::NodeSocket,
    ) -> Result<Vec<SocketAddr>, RuntimeError> {
        let mut hosts = load_hosts(&self.settings.data_dir);
        for a in &self.settings.bootstrap {
            if !hosts.contains(a) {
                hosts.push(*a);
            }
        }
        nat64_hosts(socket, &mut hosts);
        // A socket bound to one family cannot reach the other's supernodes.
        let families = socket.families();
        hosts.retain(|a| families.reaches(*a));
        if hosts.is_empty() {
            return Err(RuntimeError::NoSupernodes);
        }
        Ok(hosts)
    }

    /// Chat, contacts and groups over their SQLite files in the data dir.
    fn open_messaging(
        &self,
        device: &DeviceIdentity,
        cert: &Certificate,
    ) -> Result<Messaging, RuntimeError> {
        let now = self.clock.now();
        let contacts = ContactsConfig {
            away_after_ms: self.settings.away_after_ms,
            public_presence: self.settings.public_presence,
            ..Default::default()
        };
        let groups = crate::group::GroupStore::open(&self.settings.data_dir.join("groups.db"))
            .and_then(|store| {
                crate::group::GroupCore::new(
                    store,
                    device.clone(),
                    cert.clone(),
                    self.settings.authority_key,
                    crate::group::GroupConfig::default(),
                    rand::random::<u64>(),
                    now,
                )
            })
            .map_err(crate::node::messaging::MessagingError::from)?;
        Ok(Messaging::open(
            &self.settings.data_dir,
            &cert.username,
            ChatConfig::default(),
            contacts,
            now,
        )?
        .with_groups(groups))
    }

    async fn overlay(&self, c: ov::Command) {
        if let Some(n) = &self.node {
            let _ = n.commands.send(c).await;
        }
    }

    /// Ask the node and wait for its answer (`None` when it is gone).
    async fn ask<T>(
        &self,
        make: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> ov::Command,
    ) -> Option<T> {
        let n = self.node.as_ref()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        n.commands.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// The contact list (SQLite, in the contacts core).
    async fn contact_list(&self) -> Vec<ContactInfo> {
        self.ask(|reply| ov::Command::Messaging(Msg::Contacts { reply }))
            .await
            .unwrap_or_default()
    }

    async fn contacts_event(&mut self, e: crate::contacts::ContactsEvent) {
        if let crate::contacts::ContactsEvent::Unblocked { user } = &e {
            if let Some(c) = report::contact_change(&e) {
                self.emit(Event::ContactChange(c)).await;
            }
            let list = self.contact_list().await;
            let row = list.iter().find(|c| &c.username == user);
            let events = match row {
                Some(c) => report::contact_events(c),
                None => vec![Event::ContactRemoved {
                    username: user.clone(),
                }],
            };
            for e in events {
                self.emit(e).await;
            }
            return;
        }
        if let Some(c) = report::contact_change(&e) {
            self.emit(Event::ContactChange(c)).await;
        }
        for e in report::contacts_event(e) {
            self.emit(e).await;
        }
    }

    /// The newest `limit` messages with `with` older than `before`: the
    /// history is read with growing limits until `before` is in it.
    async fn history(
        &self,
        with: &str,
        before: Option<crate::node::api::MessageId>,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, String> {
        let mut want = limit;
        loop {
            let got = self
                .ask(|reply| {
                    ov::Command::Messaging(Msg::History {
                        with: with.to_owned(),
                        limit: want,
                        reply,
                    })
                })
                .await
                .ok_or("the node stopped")??;
            let all: Vec<ChatMessage> = got.iter().map(report::chat_message).collect();
            let Some(before) = before else {
                return Ok(all);
            };
            if let Some(i) = all.iter().position(|m| m.id == before) {
                return Ok(all[i.saturating_sub(limit)..i].to_vec());
            }
            if got.len() < want {
                // `before` is not in the history at all.
                return Ok(Vec::new());
            }
            want = want.saturating_mul(4);
        }
    }

    async fn command(&mut self, c: Command) {
        let logged_in = self.node.is_some();
        match c {
            Command::Register { .. } | Command::Login { .. } if logged_in => {
                self.error(c.name(), "already logged in").await
            }
            Command::Register { username, password } => {
                self.login_command(username, password, true).await
            }
            Command::Login { username, password } => {
                self.login_command(username, password, false).await
            }
            Command::Quit => {}
            // Idle time only counts once logged in.
            Command::Activity if !logged_in => {}
            _ if !logged_in => self.error(c.name(), "log in first").await,
            Command::Call { .. }
            | Command::AcceptCall { .. }
            | Command::DeclineCall { .. }
            | Command::HangUp { .. }
            | Command::Mute { .. }
            | Command::Hold { .. }
            | Command::TakeCall
            | Command::ConferenceStart { .. }
            | Command::ConferenceAdd { .. }
            | Command::ConferenceAccept
            | Command::ConferenceLeave
            | Command::ConferenceMute { .. }
            | Command::ConferenceMuteOther { .. } => self.call_command(c).await,
            Command::SendMessage { to, text } => self.send_message(to, text).await,
            Command::LoadHistory {
                with,
                before,
                limit,
            } => {
                let with = with.trim().to_ascii_lowercase();
                let unread = self
                    .ask(|reply| {
                        ov::Command::Messaging(Msg::Unread {
                            with: with.clone(),
                            reply,
                        })
                    })
                    .await
                    .ok_or_else(|| "the node stopped".to_owned())
                    .and_then(|r| r);
                let got = self.history(&with, before, limit as usize).await;
                match got.and_then(|messages| Ok((messages, unread?))) {
                    Ok((messages, unread)) => {
                        self.emit(Event::History {
                            with,
                            messages,
                            unread,
                        })
                        .await
                    }
                    Err(e) => self.error("load history", e).await,
                }
            }
            Command::MarkRead { with } => {
                let with = with.trim().to_ascii_lowercase();
                let r = self
                    .ask(|reply| {
                        ov::Command::Messaging(Msg::MarkRead {
                            with: with.clone(),
                            reply,
                        })
                    })
                    .await;
                match r {
                    Some(Ok(unread)) => self.emit(Event::ChatRead { with, unread }).await,
                    Some(Err(e)) => self.error("read", e).await,
                    None => self.error("read", "the node stopped").await,
                }
            }
            Command::CallHistory { limit } => self.call_history(limit, None).await,
            Command::MarkCallsSeen { peer } => self.call_history(50, Some(peer)).await,
            Command::Devices | Command::RevokeDevice { .. } => self.account_command(c).await,
            Command::ListContacts => {
                let list = self.contact_list().await;
                let rows = list.iter().map(report::contact_entry).collect();
                self.emit(Event::Contacts(rows)).await
            }
            Command::ListFiles => {
                let files = self
                    .ask(|reply| ov::Command::Files(FilesCommand::List { reply }))
                    .await
                    .unwrap_or_default();
                self.emit(Event::Files(files)).await
            }
            Command::SearchUser { username } => {
                let username = username.trim().to_ascii_lowercase();
                if let Err(e) = crate::identity::Username::parse(&username) {
                    self.error("search", e).await;
                } else {
                    self.overlay(ov::Command::Lookup { username }).await;
                }
            }
            c => {
                if let Some(n) = node_command(c) {
                    self.overlay(n).await
                }
            }
        }
    }

    /// An account command, run against the authority in a task of its own
    /// ([`account`]): its answer comes as an event later.
    async fn account_command(&self, c: Command) {
        let Some(cert) = self.cert.clone() else {
            return self.error(c.name(), "log in first").await;
        };
        let device = match self.files.identity() {
            Ok((d, _)) => d,
            Err(e) => return self.error(c.name(), e).await,
        };
        account::AccountTask {
            authority: self.settings.authority.clone(),
            authority_key: self.settings.authority_key,
            device,
            cert,
            clock: self.clock.clone(),
            events: self.events.clone(),
        }
        .spawn(c);
    }

    /// Answer with the newest `limit` calls, after marking the missed
    /// calls of `seen` (`Some(None)`: everyone's) seen.
    async fn call_history(&mut self, limit: u32, seen: Option<Option<String>>) {
        let name = if seen.is_some() {
            "calls seen"
        } else {
            "call history"
        };
        let r = match &self.call_history {
            None => return self.error(name, "log in first").await,
            Some(h) => {
                let mut h = h.lock().unwrap_or_else(|p| p.into_inner());
                match seen {
                    Some(peer) => h.mark_seen(peer.as_deref()).map(drop),
                    None => Ok(()),
                }
                .and_then(|()| h.recent(limit))
            }
        };
        match r {
            Ok(calls) => self.emit(Event::CallHistory { calls }).await,
            Err(e) => self.error(name, e).await,
        }
    }

    async fn login_command(&mut self, username: String, password: String, register: bool) {
        self.emit(Event::Login(LoginState::LoggingIn {
            username: username.clone(),
        }))
        .await;
        match self.password_login(&username, &password, register).await {
            Ok(cert) => self.go_online(cert).await,
            Err(e) => {
                self.emit(Event::Login(LoginState::NeedCredentials {
                    username: Some(username),
                    error: Some(e.to_string()),
                }))
                .await
            }
        }
    }

    async fn send_message(&mut self, to: String, text: String) {
        let to = to.trim().to_ascii_lowercase();
        let sent = self
            .ask(|reply| {
                ov::Command::Messaging(Msg::SendMessage {
                    to: to.clone(),
                    text: text.clone(),
                    reply: Some(reply),
                })
            })
            .await;
        match sent {
            Some(Ok(id)) => {
                self.emit(Event::Message(ChatMessage {
                    id: report::message_id(&id),
                    peer: to,
                    outgoing: true,
                    text,
                    sent_at: self.clock.unix(),
                    state: MessageState::Sending,
                }))
                .await
            }
            // The node reports the reason as CommandFailed too.
            Some(Err(e)) => {
                self.error("send message", &e).await;
                self.reported.push(e);
            }
            None => self.error("send message", "the node stopped").await,
        }
    }

    async fn call_command(&mut self, c: Command) {
        if self.settings.calls.is_none() {
            return self.emit(Event::not_available(&c, "calls")).await;
        }
        let c = match c {
            Command::Call { username } => Command::Call {
                username: username.trim().to_ascii_lowercase(),
            },
            c => c,
        };
        // The callee answers through the directory: until our record is
        // there its answers would not find us and the call would fail.
        if let Command::Call { username } = &c
            && !self.published
        {
            self.emit(Event::Notice {
                text: format!("calling {username} once you are online"),
            })
            .await;
            self.to_call.push(c);
            return;
        }
        // Mute and hold show once the node applied them (`CallUpdate::Muted`,
        // `CallUpdate::Held`).
        if let Some(node) = self.calls.command(&c) {
            self.overlay(ov::Command::Call(node)).await;
        }
    }

    async fn overlay_event(&mut self, e: ClientEvent) {
        match e {
            ClientEvent::Attached {
                supernode,
                primary,
                observed,
            } => self.attached(supernode, primary, observed).await,
            ClientEvent::Detached {
                supernode,
                reason,
                promoted,
            } => self.detached(supernode, reason, promoted).await,
            ClientEvent::Redirected { from, to } => {
                self.emit(Event::Overlay(OverlayEvent::Redirected { from, to }))
                    .await
            }
            ClientEvent::Published { seq } => self.published(seq).await,
            ClientEvent::PublishRejected { seq, reason } => {
                self.emit(Event::Overlay(OverlayEvent::PublishRejected {
                    seq,
                    reason,
                }))
                .await
            }
            ClientEvent::Lookup {
                username, outcome, ..
            } => self.lookup_answer(username, outcome).await,
            ClientEvent::PresenceChanged { record, online } => self.watched(&record, online).await,
            ClientEvent::RelayCredentials {
                username,
                password,
                realm,
                expires,
                relays,
            } => {
                let c = RelayCredentials {
                    username,
                    password,
                    realm,
                    expires,
                    relays,
                };
                self.emit(Event::RelayCredentials(c)).await
            }
            ClientEvent::RelayRefused { reason } => self.emit(Event::RelayRefused { reason }).await,
            ClientEvent::Envelope {
                from,
                kind,
                id,
                payload,
                ..
            } => {
                self.envelope(from.username.clone(), kind, id, payload)
                    .await
            }
            ClientEvent::EnvelopeDelivered { id } => {
                self.envelope_result(id, EnvelopeOutcome::Delivered).await
            }
            ClientEvent::EnvelopeStored { id } => {
                self.envelope_result(id, EnvelopeOutcome::Stored).await
            }
            ClientEvent::EnvelopeFailed { id, reason } => {
                self.envelope_result(id, EnvelopeOutcome::Failed(reason))
                    .await
            }
            // Chat gives up on what waits for them (its events say so).
            ClientEvent::NoSuchUser { .. } => {}
        }
    }

    /// We lost a supernode; `promoted` took over as primary if it was.
    async fn detached(
        &mut self,
        supernode: SocketAddr,
        reason: &'static str,
        promoted: Option<SocketAddr>,
    ) {
        self.attached.retain(|a| a.addr != supernode);
        if let Some(p) = promoted {
            for a in &mut self.attached {
                a.primary = a.addr == p;
            }
            self.attached.sort_by_key(|a| (!a.primary, a.addr));
        }
        self.emit(Event::Supernodes {
            attached: self.attached.clone(),
        })
        .await;
        let reason = reason.to_owned();
        self.emit(Event::Overlay(OverlayEvent::Detached { supernode, reason }))
            .await;
    }

    /// A watched user's presence changed.
    async fn watched(&mut self, record: &PresenceRecord, online: bool) {
        // When an offline user was last seen, as a lookup says it (never
        // for an online one: that would be "now").
        let last_seen = (!online)
            .then(|| record.last_seen(self.clock.unix_secs()))
            .flatten();
        let record = report::record(record, last_seen);
        self.emit(Event::Watched { record, online }).await
    }

    /// A raw envelope. Chat, contacts and call envelopes (kinds 1 to 15)
    /// are their cores' business.
    async fn envelope(
        &self,
        from: String,
        kind: u8,
        id: crate::overlay::EnvelopeId,
        payload: Vec<u8>,
    ) {
        if (1..=15).contains(&kind) {
            return tracing::debug!(kind, "protocol envelope left to its core");
        }
        let id = u128::from_be_bytes(id);
        self.emit(Event::Envelope {
            from,
            kind,
            id,
            payload,
        })
        .await
    }

    async fn envelope_result(&self, id: crate::overlay::EnvelopeId, result: EnvelopeOutcome) {
        let id = u128::from_be_bytes(id);
        self.emit(Event::EnvelopeResult { id, result }).await
    }

    async fn attached(&mut self, supernode: SocketAddr, primary: bool, observed: SocketAddr) {
        self.attached.retain(|a| a.addr != supernode);
        self.attached.push(AttachedSupernode {
            addr: supernode,
            primary,
            observed,
        });
        self.attached.sort_by_key(|a| (!a.primary, a.addr));
        self.emit(Event::Supernodes {
            attached: self.attached.clone(),
        })
        .await;
        self.emit(Event::Overlay(OverlayEvent::Attached {
            supernode,
            primary,
            observed,
        }))
        .await;
        if self.nat.public_addr != Some(observed) {
            self.nat.public_addr = Some(observed);
            self.emit(Event::Nat(self.nat.clone())).await;
        }
        if let Some(st) = self.ask(|reply| ov::Command::Status { reply }).await {
            save_hosts(&self.settings.data_dir, &st.host_cache);
        }
        if !self.volunteer_checked {
            self.volunteer_checked = true;
            self.volunteer(supernode, observed).await;
        }
    }

    /// Run a supernode beside the client when the account may and nothing
    /// stands between us and the supernode we attached to.
    async fn volunteer(&mut self, supernode: SocketAddr, observed: SocketAddr) {
        let Some(start) = self.settings.volunteer.clone() else {
            return;
        };
        let supernode_role = self
            .cert
            .as_ref()
            .is_some_and(|c| c.role == crate::identity::Role::Supernode);
        let reason = if !supernode_role {
            "the account does not hold the supernode role".to_owned()
        } else if !is_public(observed, self.local_port, supernode).await {
            "behind a NAT".to_owned()
        } else {
            match (start.0)(supernode).await {
                Ok((node, addr)) => {
                    self.volunteered = Some(node);
                    return self.emit(Event::Volunteered { supernode: addr }).await;
                }
                Err(e) => e,
            }
        };
        self.emit(Event::VolunteerDeclined { reason }).await
    }

    async fn published(&mut self, seq: u64) {
        self.published = true;
        self.emit(Event::Overlay(OverlayEvent::Published { seq }))
            .await;
        for c in std::mem::take(&mut self.to_call) {
            self.call_command(c).await;
        }
        // Online: the contact requests can reach their owners now.
        for user in std::mem::take(&mut self.to_add) {
            self.overlay(ov::Command::Messaging(Msg::AddContact {
                user,
                greeting: String::new(),
            }))
            .await;
        }
    }

    async fn lookup_answer(&mut self, username: String, outcome: LookupOutcome) {
        let (result, record) = match outcome {
            LookupOutcome::Online(r) => (
                LookupResult::Online {
                    status: r.status,
                    message: r.message.clone(),
                },
                Some(report::record(&r, None)),
            ),
            // An attached device whose record hides its status.
            LookupOutcome::Offline { record, .. }
                if record.is_reachable(self.clock.unix_secs()) =>
            {
                (LookupResult::Private, Some(report::record(&record, None)))
            }
            LookupOutcome::Offline { record, last_seen } => (
                LookupResult::Offline {
                    last_seen: last_seen.map(UnixSecs::get),
                },
                Some(report::record(&record, last_seen)),
            ),
            LookupOutcome::NotFound => (LookupResult::NotFound, None),
            LookupOutcome::Failed(why) => (LookupResult::Failed(why), None),
        };
        self.emit(Event::Lookup {
            username,
            result,
            record,
        })
        .await;
    }
}

/// The node's command for an API command that maps one to one.
fn node_command(c: Command) -> Option<ov::Command> {
    Some(match c {
        // The contacts core reports the change (Event::OwnStatus) and
        // tells authorized contacts.
        Command::SetStatus { status, message } => ov::Command::SetStatus { status, message },
        Command::Watch { username } => ov::Command::Watch { username },
        Command::SendEnvelope { to, kind, payload } => ov::Command::SendEnvelope {
            to,
            kind,
            payload,
            store_if_offline: true,
            reply: None,
        },
        Command::RelayCredentials => ov::Command::RelayCredentials,
        Command::SendFile { to, path } => ov::Command::Files(FilesCommand::Send {
            to: to.trim().to_ascii_lowercase(),
            path: PathBuf::from(path),
        }),
        Command::AcceptFile { id, path } => ov::Command::Files(FilesCommand::Accept {
            id,
            dest: path.map(PathBuf::from),
        }),
        Command::DeclineFile { id } => ov::Command::Files(FilesCommand::Decline { id }),
        Command::CancelFile { id } => ov::Command::Files(FilesCommand::Cancel { id }),
        Command::Connect { username } => ov::Command::Peer(PeerCommand::Connect { username }),
        Command::IceSignal { from, data, answer } => ov::Command::Peer(PeerCommand::IceSignal {
            from: from.to_ascii_lowercase(),
            bytes: data,
            answer,
        }),
        c => ov::Command::Messaging(messaging_command(c)?),
    })
}

/// The chat and contacts command for an API command, if it is one.
fn messaging_command(c: Command) -> Option<Msg> {
    Some(match c {
        Command::Activity => Msg::Activity,
        Command::AddContact { username, greeting } => Msg::AddContact {
            user: username.trim().to_ascii_lowercase(),
            greeting,
        },
        Command::AcceptContact { username } => Msg::AcceptContact { user: username },
        Command::DeclineContact { username } => Msg::DeclineContact { user: username },
        Command::RemoveContact { username } => Msg::RemoveContact { user: username },
        Command::BlockContact { username } => Msg::BlockContact { user: username },
        Command::UnblockContact { username } => Msg::UnblockContact { user: username },
        Command::Group(g) => Msg::Group(g),
        _ => return None,
    })
}

/// Shut a node down and wait (briefly) for its offline record to leave.
async fn stop_node(mut node: OverlayNode) {
    let _ = node.commands.send(ov::Command::Shutdown).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(e) = node.events.recv().await {
            if e == ov::Event::Stopped {
                break;
            }
        }
    })
    .await;
}

/// Whether `observed` (our address as a supernode saw it) is this host's
/// own address and port, i.e. there is no NAT between us and it.
async fn is_public(observed: SocketAddr, local_port: u16, towards: SocketAddr) -> bool {
    let any = if towards.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let Ok(probe) = tokio::net::UdpSocket::bind(any).await else {
        return false;
    };
    if probe.connect(towards).await.is_err() {
        return false;
    }
    probe.local_addr().is_ok_and(|l| l.ip() == observed.ip()) && observed.port() == local_port
}

/// A NAT detection's report as the UI shows it.
fn nat_status(r: &crate::nat::NatReport) -> NatStatus {
    use crate::nat::{Filtering, Mapping};
    let mapping = match r.mapping {
        Mapping::NoNat => Some("none (public address)".to_owned()),
        Mapping::EndpointIndependent => Some("endpoint-independent (EIM)".to_owned()),
        Mapping::AddressDependent => Some("address-dependent (ADM)".to_owned()),
        Mapping::AddressPortDependent => Some("address and port-dependent (APDM)".to_owned()),
        Mapping::Dependent => Some("destination-dependent (ADM or APDM)".to_owned()),
        Mapping::Unknown => None,
    };
    let filtering = match r.filtering {
        Filtering::EndpointIndependent => Some("endpoint-independent (EIF)".to_owned()),
        Filtering::AddressDependent => Some("address-dependent (ADF)".to_owned()),
        Filtering::AddressPortDependent => Some("address and port-dependent (APDF)".to_owned()),
        Filtering::Unknown => None,
    };
    let mut note = format!("measured in {} ms", r.duration_ms);
    if let Some(s) = r.server {
        note.push_str(&format!(" against {s}"));
    }
    for n in &r.notes {
        note.push_str("; ");
        note.push_str(n);
    }
    NatStatus {
        mapping,
        filtering,
        public_addr: r.public,
        udp_blocked: r.udp_blocked,
        unreachable: r.unreachable,
        note: Some(note),
    }
}

async fn next_event(node: &mut Option<OverlayNode>) -> Option<ov::Event> {
    match node {
        Some(n) => n.events.recv().await,
        None => std::future::pending().await,
    }
}

fn hosts_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("hosts")
}

/// Supernodes learnt earlier (the same `hosts` file `--headless` keeps).
fn load_hosts(data_dir: &std::path::Path) -> Vec<SocketAddr> {
    std::fs::read_to_string(hosts_path(data_dir))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn save_hosts(data_dir: &std::path::Path, hosts: &[SocketAddr]) {
    let text: String = hosts.iter().map(|a| format!("{a}\n")).collect();
    let tmp = hosts_path(data_dir).with_extension("tmp");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, hosts_path(data_dir));
    }
}

/// Bootstrap addresses DNS64 made (in the NAT64 well-known prefix) name
/// IPv4 supernodes: on an IPv6-only host the socket reaches IPv4 through
/// NAT64 ([`crate::socket::NodeSocket::set_nat64`]), and everything above
/// it, supernodes and the relay and peer addresses they hand out alike,
/// is then plain IPv4; so are those bootstrap addresses.
fn nat64_hosts(socket: &mut crate::socket::NodeSocket, hosts: &mut Vec<SocketAddr>) {
    use crate::socket::{NAT64_WKP, nat64_embedded};
    let embedded = |a: &SocketAddr| match a {
        SocketAddr::V6(v6) => {
            nat64_embedded(NAT64_WKP, *v6.ip()).map(|v4| SocketAddr::from((v4, v6.port())))
        }
        SocketAddr::V4(_) => None,
    };
    let Some(probe) = hosts.iter().find_map(embedded) else {
        return;
    };
    if socket.set_nat64(NAT64_WKP, probe) {
        tracing::info!("no IPv4 route: IPv4 through NAT64 (64:ff9b::/96)");
    } else if !socket.families().v4 {
        return;
    }
    for a in hosts.iter_mut() {
        if let Some(v4) = embedded(a) {
            *a = v4;
        }
    }
    let mut seen = std::collections::HashSet::new();
    hosts.retain(|a| seen.insert(*a));
}

/// Resolve `host:port` names to addresses of both families (unresolvable
/// ones are logged and skipped), each name's addresses interleaved IPv6
/// first as RFC 8305 section 4 orders them: with parallel attachment the
/// first family to answer wins and a broken one costs nothing.
pub async fn resolve(list: &[HostPort]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for hp in list {
        match tokio::net::lookup_host((hp.host.as_str(), hp.port)).await {
            Ok(addrs) => {
                for a in interleave(addrs.collect()) {
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
            }
            Err(e) => tracing::warn!("cannot resolve {hp}: {e}"),
        }
    }
    out
}

/// `addrs` alternating by family, IPv6 first, each family in its order.
pub fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let (v6, v4): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|a| a.is_ipv6());
    let (mut v6, mut v4) = (v6.into_iter(), v4.into_iter());
    let mut out = Vec::new();
    loop {
        match (v6.next(), v4.next()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

impl ClientSettings {
    /// Settings from the config file: its authority, overlay section and
    /// bootstrap list (unless `bootstrap` overrides it).
    pub async fn from_config(
        config: &crate::config::Config,
        data_dir: &std::path::Path,
        bootstrap: &[HostPort],
        listen: Option<SocketAddr>,
    ) -> Option<Self> {
        let oc = &config.overlay;
        let boot = if bootstrap.is_empty() {
            &oc.bootstrap
        } else {
            bootstrap
        };
        Some(ClientSettings {
            data_dir: data_dir.to_owned(),
            authority: config.login.server.clone(),
            authority_key: config.login.authority_key?.0,
            bootstrap: resolve(boot).await,
            listen: listen.unwrap_or(oc.listen),
            overlay: ClientConfig {
                keepalive_ms: oc.keepalive.0.as_millis() as u64,
                dead_after_ms: oc.supernode_timeout.0.as_millis() as u64,
                ..Default::default()
            },
            renew_before_secs: config.login.renew_before.0.as_secs(),
            contacts: Vec::new(),
            away_after_ms: ContactsConfig::default().away_after_ms,
            public_presence: false,
            paths: crate::node::driver::PathOptions {
                tcp_fallback_ms: Some(oc.tcp_fallback.0.as_millis() as u64).filter(|&ms| ms > 0),
                force_tcp: oc.force_tcp,
                relay_only: config.nat.relay_only,
                ..Default::default()
            },
            calls: Some(CallOptions {
                input: config.audio.input.clone(),
                output: config.audio.output.clone(),
                media: crate::media::MediaConfig {
                    processing: config.audio.processing(),
                    ..config.media.media_config()
                },
                call: config.call.core_config(),
                auto_answer: config.call.auto_answer,
                ringback: config.call.ringback,
                ringtone: config.call.ringtone,
            }),
            user: None,
            nat: Some(NatOptions::default()),
            watch: Vec::new(),
            volunteer: None,
            files: config.files.clone(),
        })
    }
}
