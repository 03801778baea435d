//! The node API: the [`Command`]s a user interface (the TUI, a script, a
//! demo bot) sends to the client runtime ([`super::client`]) and the
//! [`Event`]s it reports back. Front ends hold no protocol state: they
//! render what the events say and ask for everything through commands.
//!
//! The types here are plain data (strings, addresses, Unix times in
//! milliseconds) so that front ends need nothing from the cores below.
//! Features whose backend is not built yet still have their commands and
//! events; the runtime answers those commands with [`Event::Error`] saying
//! the feature is not available yet, never with a pretend success.

use crate::overlay::Status;
use std::net::SocketAddr;

/// A call, as numbered by the runtime.
pub type CallId = u64;
/// A chat message: the first 8 bytes (big-endian) of the chat's random
/// 16-byte message id, unique within a conversation for all practical
/// purposes.
pub type MessageId = u64;

/// What a front end asks of the client runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Create an account at the authority, then log in with it.
    Register {
        username: String,
        password: String,
    },
    /// Log in with a password; the certificate is kept in the data dir.
    Login {
        username: String,
        password: String,
    },
    /// Our own status and status message, as contacts see them.
    SetStatus {
        status: Status,
        message: String,
    },
    /// Look a user up in the directory; answered by [`Event::Lookup`].
    SearchUser {
        username: String,
    },
    /// Add a contact: sends them an authorization request.
    AddContact {
        username: String,
        greeting: String,
    },
    /// Accept a contact request ([`Event::ContactRequest`]).
    AcceptContact {
        username: String,
    },
    /// Decline a contact request.
    DeclineContact {
        username: String,
    },
    RemoveContact {
        username: String,
    },
    /// Remove and refuse anything more from this user.
    BlockContact {
        username: String,
    },
    /// Take messages and requests from a blocked user again.
    UnblockContact {
        username: String,
    },
    /// The user did something (a key press): resets the idle timer that
    /// sets the status to away, and ends an automatic away.
    Activity,
    /// Send a chat message; [`Event::Message`] reports it with its id,
    /// [`Event::MessageState`] when it is delivered.
    SendMessage {
        to: String,
        text: String,
    },
    /// Messages with `with` older than `before` (all when `None`), newest
    /// `limit` of them; answered by [`Event::History`].
    LoadHistory {
        with: String,
        before: Option<MessageId>,
        limit: u32,
    },
    /// Call a user; [`Event::Call`] reports the call and its states.
    Call {
        username: String,
    },
    AcceptCall {
        call: CallId,
    },
    DeclineCall {
        call: CallId,
    },
    HangUp {
        call: CallId,
    },
    Mute {
        call: CallId,
        muted: bool,
    },
    Hold {
        call: CallId,
        held: bool,
    },
    /// Publish an offline record, leave the overlay and stop; the runtime
    /// answers with [`Event::Stopped`].
    Quit,
}

impl Command {
    /// A short name for logs and error events.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Register { .. } => "register",
            Command::Login { .. } => "login",
            Command::SetStatus { .. } => "set status",
            Command::SearchUser { .. } => "search",
            Command::AddContact { .. } => "add contact",
            Command::AcceptContact { .. } => "accept contact",
            Command::DeclineContact { .. } => "decline contact",
            Command::RemoveContact { .. } => "remove contact",
            Command::BlockContact { .. } => "block contact",
            Command::UnblockContact { .. } => "unblock contact",
            Command::Activity => "activity",
            Command::SendMessage { .. } => "send message",
            Command::LoadHistory { .. } => "load history",
            Command::Call { .. } => "call",
            Command::AcceptCall { .. } => "accept call",
            Command::DeclineCall { .. } => "decline call",
            Command::HangUp { .. } => "hang up",
            Command::Mute { .. } => "mute",
            Command::Hold { .. } => "hold",
            Command::Quit => "quit",
        }
    }
}

/// What the client runtime reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Login(LoginState),
    /// Our own status as published (after [`Command::SetStatus`]).
    OwnStatus {
        status: Status,
        message: String,
    },
    /// The supernodes we are attached to now (the whole list each time).
    Supernodes {
        attached: Vec<AttachedSupernode>,
    },
    Nat(NatStatus),
    Audio(AudioStatus),
    /// A contact's presence changed (or was first learnt).
    Presence(Presence),
    /// The answer to [`Command::SearchUser`].
    Lookup {
        username: String,
        result: LookupResult,
    },
    /// A contact was added or changed state.
    Contact {
        username: String,
        state: ContactState,
    },
    ContactRemoved {
        username: String,
    },
    /// Someone asks to add us.
    ContactRequest {
        from: String,
        greeting: String,
    },
    /// A chat message sent or received (history loads use [`Event::History`]).
    Message(ChatMessage),
    /// A sent message changed state (delivered, failed).
    MessageState {
        peer: String,
        id: MessageId,
        state: MessageState,
    },
    History {
        with: String,
        messages: Vec<ChatMessage>,
    },
    /// A call appeared or changed state.
    Call(CallInfo),
    /// Live quality of a call in progress, about once a second.
    CallStats {
        call: CallId,
        stats: CallStats,
    },
    /// Something the user should know that is not an error.
    Notice {
        text: String,
    },
    /// A command failed or is not available; `command` names it.
    Error {
        command: String,
        message: String,
    },
    /// The runtime ended (after [`Command::Quit`] or a fatal error).
    Stopped,
}

impl Event {
    /// The answer to a command whose backend does not exist yet.
    pub fn not_available(command: &Command, feature: &str) -> Event {
        Event::Error {
            command: command.name().to_owned(),
            message: format!("{feature} not available yet"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginState {
    /// No usable certificate: ask for a username and password. `error`
    /// says why the last attempt failed.
    NeedCredentials {
        username: Option<String>,
        error: Option<String>,
    },
    /// Talking to the authority.
    LoggingIn { username: String },
    /// Logged in with a certificate valid until `until` (Unix seconds).
    LoggedIn { username: String, until: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedSupernode {
    pub addr: SocketAddr,
    pub primary: bool,
    /// Our address as this supernode sees it.
    pub observed: SocketAddr,
}

/// Our NAT as measured at login (RFC 4787 terms).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatStatus {
    /// e.g. "endpoint-independent (EIM)"; `None` until measured.
    pub mapping: Option<String>,
    /// e.g. "address and port-dependent (APDF)"; `None` until measured.
    pub filtering: Option<String>,
    /// Our public (server-reflexive) address.
    pub public_addr: Option<SocketAddr>,
    pub udp_blocked: bool,
    /// How the result was obtained, or why it is missing.
    pub note: Option<String>,
}

/// The audio devices in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioStatus {
    pub input: String,
    pub output: String,
    /// e.g. that no sound card exists and the tone and null devices are used.
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub username: String,
    /// `Offline` when the user is not online (or hides as invisible).
    pub status: Status,
    pub message: String,
    /// Unix seconds, for offline users when known.
    pub last_seen: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupResult {
    Online {
        status: Status,
        message: String,
    },
    Offline {
        last_seen: u64,
    },
    /// The user exists and is reachable, but shows their status to their
    /// contacts only.
    Private,
    NotFound,
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactState {
    /// We asked them; no answer yet.
    Requested,
    /// They asked us; we have not answered.
    Pending,
    Authorized,
    /// They declined our request.
    Declined,
    Blocked,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub id: MessageId,
    /// The other side of the conversation.
    pub peer: String,
    pub outgoing: bool,
    pub text: String,
    /// Unix milliseconds when sent (by the sender's clock).
    pub sent_at: u64,
    pub state: MessageState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageState {
    /// Outgoing, not acknowledged yet (retried until it is).
    Sending,
    /// Outgoing: the recipient is offline; it waits, encrypted to them, on
    /// their directory owners and reaches them at their next login.
    Stored,
    /// Outgoing: the last attempt failed for this reason; it is sent again.
    Retrying(String),
    /// Outgoing, acknowledged by the recipient.
    Delivered,
    /// Outgoing, given up.
    Failed(String),
    /// Incoming.
    Received,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    pub id: CallId,
    pub peer: String,
    pub outgoing: bool,
    pub state: CallState,
    pub muted: bool,
    /// We put the call on hold.
    pub held: bool,
    /// The other side put the call on hold.
    pub remote_held: bool,
    /// Unix milliseconds when the call was answered.
    pub answered_at: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallState {
    /// Outgoing: finding the callee and sending the invite.
    Dialing,
    /// Outgoing: the callee's device is ringing.
    Ringing,
    /// Incoming: waiting for us to accept or decline.
    Incoming,
    /// Answered; connectivity checks and media keys in progress.
    Connecting,
    Active,
    Ended {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallStats {
    pub rtt_ms: Option<u32>,
    /// Packets lost, percent, as the receiver reports.
    pub loss_pct: f32,
    pub jitter_ms: f32,
    /// Microphone level, 0.0 (silence) to 1.0 (full scale).
    pub mic_level: f32,
    pub path: MediaPath,
    pub codec: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaPath {
    Unknown,
    Direct {
        remote: SocketAddr,
    },
    /// Through the TURN relay of this supernode.
    Relayed {
        supernode: SocketAddr,
    },
    /// Through a relay over TCP (UDP blocked).
    RelayedTcp {
        supernode: SocketAddr,
    },
}
