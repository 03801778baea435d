//! The node API: the [`Command`]s a user interface (the TUI, a script, a
//! demo bot) sends to the client runtime ([`super::client`]) and the
//! [`Event`]s it reports back. Front ends hold no protocol state: they
//! render what the events say and ask for everything through commands.
//!
//! The types here are plain data (strings, addresses, Unix times in
//! milliseconds) so that front ends need nothing from the cores below.
//! A few result types of the cores are re-exported as they are
//! ([`NatReport`], [`Mapping`], [`Filtering`], [`CandidateKind`],
//! [`EndReason`], [`CallRecord`], [`MediaStats`], [`Role`], [`Status`], the
//! file transfer's [`FileEvent`] and [`FileInfo`]): they are plain
//! data with no handles or behaviour a front end could misuse, and a copy
//! field by field would be a second definition to keep in step.
//!
//! Some things come twice on purpose: state events say what is now (the
//! contact list, a call, a message), for front ends that show state (the
//! TUI); change events say what happened ([`Event::ContactChange`],
//! [`Event::CallRemote`], [`Event::Overlay`]), for front ends that report
//! events (the headless mode). Each front end renders the kind it needs.
//! Features whose backend is not built yet still have their commands and
//! events; the runtime answers those commands with [`Event::Error`] saying
//! the feature is not available yet, never with a pretend success.

pub use crate::call::history::CallRecord;
pub use crate::call::{DeviceName, EndReason};
pub use crate::ice::CandidateKind;
pub use crate::identity::Role;
pub use crate::media::MediaStats;
pub use crate::nat::{Filtering, Mapping, NatReport};
pub use crate::overlay::Status;
use crate::time::{UnixMillis, UnixSecs};
pub use crate::transfer::{FileEvent, FileFailure, FileInfo, FileProgress, FileState, TransferId};
use std::net::SocketAddr;

/// A call, as numbered by the runtime.
pub type CallId = u64;
/// A chat message: the chat's random 16-byte message id, big-endian.
pub type MessageId = u128;
/// A sealed envelope's random 16-byte id, big-endian.
pub type EnvelopeId = u128;
/// The envelope kind for tests and scripts ([`Command::SendEnvelope`]).
pub const TEST_ENVELOPE_KIND: u8 = crate::overlay::envelope::kind::TEST;

/// The longest chat message text, in bytes ([`Command::SendMessage`]
/// refuses longer ones): front ends split or refuse before sending.
pub const MAX_MESSAGE_BYTES: usize = crate::chat::MAX_TEXT;

/// The longest group name, in bytes ([`GroupCommand::Create`] and
/// [`GroupCommand::Rename`] refuse longer or empty ones).
pub const MAX_GROUP_NAME_BYTES: usize = crate::group::wire::MAX_NAME;

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
    /// The conversation with `with` is read (up to its newest incoming
    /// message), here and on our other devices; answered by
    /// [`Event::ChatRead`].
    MarkRead {
        with: String,
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
    /// Take over the call up on another of our devices
    /// ([`Event::CallElsewhere`]): it moves here, as a new call
    /// ([`Event::Call`], outgoing) that replaces it; the other device's
    /// ends as moved.
    TakeCall,
    /// The newest `limit` calls of the call history (kept in `calls.db`),
    /// answered by [`Event::CallHistory`].
    CallHistory {
        limit: u32,
    },
    /// Missed calls (from `peer`, or from anyone) have been seen; answered
    /// by [`Event::CallHistory`].
    MarkCallsSeen {
        peer: Option<String>,
    },
    /// Follow a user's directory record: [`Event::Watched`] on changes.
    Watch {
        username: String,
    },
    /// The contact list, answered by [`Event::Contacts`].
    ListContacts,
    /// Send a raw sealed envelope of `kind` (stored for the recipient if
    /// offline); [`Event::EnvelopeResult`] tells what became of it.
    SendEnvelope {
        to: String,
        kind: u8,
        payload: Vec<u8>,
    },
    /// Ask the primary supernode for relay (TURN) credentials; answered by
    /// [`Event::RelayCredentials`] or [`Event::RelayRefused`].
    RelayCredentials,
    /// Open a peer link to a user (ICE, then Noise): [`PeerEvent::Connected`]
    /// or [`PeerEvent::Failed`].
    Connect {
        username: String,
    },
    /// An ICE offer or answer from `from`, as their [`PeerEvent::IceSignal`]
    /// carried it (delivered by hand instead of through the supernodes).
    IceSignal {
        from: String,
        data: Vec<u8>,
        answer: bool,
    },
    /// Publish an offline record, leave the overlay and stop; the runtime
    /// answers with [`Event::Stopped`].
    Quit,
    /// Offer the file at `path` to `to`: [`FileEvent::Offering`], then
    /// its progress and end.
    SendFile {
        to: String,
        path: String,
    },
    /// Accept an offered file ([`FileEvent::Offered`]) into `path` (a
    /// file, or a directory for the offered name; the data dir's
    /// `downloads/` when `None`).
    AcceptFile {
        id: TransferId,
        path: Option<String>,
    },
    DeclineFile {
        id: TransferId,
    },
    /// Stop a transfer in either direction.
    CancelFile {
        id: TransferId,
    },
    /// The transfers under way, answered by [`Event::Files`].
    ListFiles,
    /// Start a conference with these users; [`Event::Conference`] reports
    /// it (a front end starting one from a group passes its members).
    ConferenceStart {
        users: Vec<String>,
    },
    /// Invite a user into the running conference, or make the 1:1 call in
    /// progress a conference with them.
    ConferenceAdd {
        username: String,
    },
    /// Join the conference we are invited to.
    ConferenceAccept,
    /// Leave the conference (or decline the invitation).
    ConferenceLeave,
    /// Mute ourselves in the conference (`None`: toggle).
    ConferenceMute {
        muted: Option<bool>,
    },
    /// Mute another participant (the conference's starter only).
    ConferenceMuteOther {
        username: String,
        muted: bool,
    },
    /// Group chat; [`Event::Group`] reports what follows.
    Group(GroupCommand),
    /// This account's devices, asked of the authority; answered by
    /// [`Event::Devices`] (or an [`Event::Error`] with an
    /// [`ErrorReason::Account`]).
    Devices,
    /// Revoke one of this account's devices (named by an id prefix or its
    /// name) at the authority, with the account's password; answered by
    /// [`Event::DeviceRevoked`] or an [`Event::Error`] with an
    /// [`ErrorReason::Account`]. Supernodes refuse the device once their
    /// revocation list has it.
    RevokeDevice {
        /// An id prefix (hex digits of its key) or the device's name.
        device: String,
        /// The account's password.
        password: String,
    },
}

/// Group chat commands. `group` names a group by its id (hex) or its
/// name, when only one of our groups has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupCommand {
    /// Found a group named `name` and invite `members` (contacts) to it.
    Create {
        name: String,
        members: Vec<String>,
    },
    /// Invite a user (any member may; they take it only from a contact).
    Invite {
        group: String,
        user: String,
    },
    /// Leave a group.
    Leave {
        group: String,
    },
    /// Remove a member (the creator and admins only).
    Remove {
        group: String,
        user: String,
    },
    Rename {
        group: String,
        name: String,
    },
    /// Send a message to the group's current members.
    Send {
        group: String,
        text: String,
    },
    /// The newest `limit` messages, answered by [`GroupUpdate::History`].
    History {
        group: String,
        limit: u32,
    },
    /// Our groups, answered by [`GroupUpdate::List`].
    List,
}

impl GroupCommand {
    /// A short name for logs and error events.
    pub fn name(&self) -> &'static str {
        match self {
            GroupCommand::Create { .. } => "group create",
            GroupCommand::Invite { .. } => "group invite",
            GroupCommand::Leave { .. } => "group leave",
            GroupCommand::Remove { .. } => "group remove",
            GroupCommand::Rename { .. } => "group rename",
            GroupCommand::Send { .. } => "group msg",
            GroupCommand::History { .. } => "group history",
            GroupCommand::List => "groups",
        }
    }
}

/// A group as its members see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupEntry {
    /// The group's id, 32 hex digits.
    pub id: String,
    pub name: String,
    pub creator: String,
    pub admins: Vec<String>,
    /// The current members, sorted.
    pub members: Vec<String>,
    /// Whether we are a member now.
    pub joined: bool,
}

/// One message of a group chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupChatMessage {
    /// The group's id.
    pub group: String,
    pub from: String,
    /// The sender's sequence number in the group (from 1).
    pub seq: u64,
    pub text: String,
    /// When sent (by the sender's clock).
    pub sent_at: UnixMillis,
    pub outgoing: bool,
}

/// A change to a group's membership or name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupChange {
    Created,
    /// We are in the group now (created or invited).
    Joined,
    Added(String),
    Left(String),
    Removed(String),
    Renamed(String),
    Admin(String),
}

/// What group chat reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupUpdate {
    /// A change, with the group as it is now; `by` made it.
    Change {
        group: GroupEntry,
        by: String,
        change: GroupChange,
    },
    /// A message, shown once: ours when sent, others' in their order.
    Message(GroupChatMessage),
    /// A member has our message `seq` in their history.
    Acked {
        group: String,
        seq: u64,
        by: String,
    },
    /// A stranger's invitation, dropped.
    InviteDropped {
        from: String,
        group: String,
    },
    History {
        group: GroupEntry,
        messages: Vec<GroupChatMessage>,
    },
    List(Vec<GroupEntry>),
}

/// Whether `name` can be a username, and why not: front ends check what
/// the user typed before asking the directory.
pub fn check_username(name: &str) -> Result<(), String> {
    crate::identity::Username::parse(name)
        .map(drop)
        .map_err(|e| e.to_string())
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
            Command::MarkRead { .. } => "read",
            Command::Call { .. } => "call",
            Command::AcceptCall { .. } => "accept call",
            Command::DeclineCall { .. } => "decline call",
            Command::HangUp { .. } => "hang up",
            Command::Mute { .. } => "mute",
            Command::Hold { .. } => "hold",
            Command::TakeCall => "take call",
            Command::CallHistory { .. } => "call history",
            Command::MarkCallsSeen { .. } => "calls seen",
            Command::Watch { .. } => "watch",
            Command::ListContacts => "contacts",
            Command::SendEnvelope { .. } => "envelope",
            Command::RelayCredentials => "relay",
            Command::Connect { .. } => "connect",
            Command::IceSignal { answer: false, .. } => "ice-offer",
            Command::IceSignal { answer: true, .. } => "ice-answer",
            Command::Quit => "quit",
            Command::SendFile { .. } => "send file",
            Command::AcceptFile { .. } => "accept file",
            Command::DeclineFile { .. } => "decline file",
            Command::CancelFile { .. } => "cancel file",
            Command::ListFiles => "files",
            Command::ConferenceStart { .. } => "conference start",
            Command::ConferenceAdd { .. } => "conference add",
            Command::ConferenceAccept => "conference accept",
            Command::ConferenceLeave => "conference leave",
            Command::ConferenceMute { .. } => "conference mute",
            Command::ConferenceMuteOther { .. } => "conference mute other",
            Command::Group(g) => g.name(),
            Command::Devices => "devices",
            Command::RevokeDevice { .. } => "revoke device",
        }
    }
}

/// What the client runtime reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Login(LoginState),
    /// Our own status as published (after [`Command::SetStatus`]);
    /// `auto` when idleness set it.
    OwnStatus {
        status: Status,
        message: String,
        auto: bool,
    },
    /// The overlay's view of us: attachments and our presence record.
    Overlay(OverlayEvent),
    /// A NAT detection finished: its whole report.
    NatDetected(Box<NatReport>),
    /// The supernodes we are attached to now (the whole list each time).
    Supernodes {
        attached: Vec<AttachedSupernode>,
    },
    Nat(NatStatus),
    Audio(AudioStatus),
    /// A contact's presence changed (or was first learnt).
    Presence(Presence),
    /// The answer to [`Command::SearchUser`], with the directory record
    /// when one was found.
    Lookup {
        username: String,
        result: LookupResult,
        record: Option<DirectoryRecord>,
    },
    /// A watched user's record changed ([`Command::Watch`]).
    Watched {
        record: DirectoryRecord,
        online: bool,
    },
    /// What happened to a contact (the state events above say where that
    /// left the list).
    ContactChange(ContactChange),
    /// The answer to [`Command::ListContacts`].
    Contacts(Vec<ContactEntry>),
    /// A raw envelope arrived (kinds no built-in protocol takes).
    Envelope {
        from: String,
        kind: u8,
        id: EnvelopeId,
        payload: Vec<u8>,
    },
    /// What became of an envelope we sent.
    EnvelopeResult {
        id: EnvelopeId,
        result: EnvelopeOutcome,
    },
    RelayCredentials(RelayCredentials),
    RelayRefused {
        reason: String,
    },
    /// Peer links ([`Command::Connect`]).
    Peer(PeerEvent),
    /// The other side of a call muted or held it (or stopped).
    CallRemote {
        call: CallId,
        change: RemoteChange,
    },
    /// The node volunteered as a supernode on `supernode` (an account with
    /// the supernode role on a public address).
    Volunteered {
        supernode: SocketAddr,
    },
    VolunteerDeclined {
        reason: String,
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
    /// A message we sent from another of our devices, now in this
    /// device's history too (outgoing, each once).
    MessageSynced(ChatMessage),
    /// The conversation with `with` was read (here, or on another of our
    /// devices): `unread` incoming messages are left.
    ChatRead {
        with: String,
        unread: u64,
    },
    /// History taken from another of our devices (this device is new)
    /// added `added` messages to the conversation with `with`, or moved
    /// its read mark: load it again ([`Command::LoadHistory`]).
    HistorySynced {
        with: String,
        added: u64,
        unread: u64,
    },
    /// A sent message changed state (delivered, failed).
    MessageState {
        peer: String,
        id: MessageId,
        state: MessageState,
    },
    History {
        with: String,
        messages: Vec<ChatMessage>,
        /// Incoming messages with `with` not read yet (all of them, not
        /// only those listed).
        unread: u64,
    },
    /// A call appeared or changed state.
    Call(CallInfo),
    /// Another device of ours (named `device`) has call `call` with `peer`
    /// up (`on`), or no longer: [`Command::TakeCall`] moves it here.
    CallElsewhere {
        call: CallId,
        peer: String,
        device: String,
        on: bool,
    },
    /// An ended call, as the call history now keeps it (a missed one
    /// unseen).
    CallLogged(CallRecord),
    /// The newest calls, newest first ([`Command::CallHistory`]).
    CallHistory {
        calls: Vec<CallRecord>,
    },
    /// Live quality of a call in progress, about once a second.
    CallStats {
        call: CallId,
        stats: CallStats,
    },
    /// Something the user should know that is not an error.
    Notice {
        text: String,
    },
    /// A command failed or is not available; `command` names it,
    /// `reason` says which case it is and `message` says it in words.
    Error {
        command: String,
        reason: ErrorReason,
        message: String,
    },
    /// The runtime ended (after [`Command::Quit`] or a fatal error).
    Stopped,
    /// A file transfer's offer, progress or end.
    File(FileEvent),
    /// The answer to [`Command::ListFiles`].
    Files(Vec<FileInfo>),
    /// A conference changed, or its per-participant stats.
    Conference(ConferenceUpdate),
    /// Group chat: changes, messages, answers.
    Group(GroupUpdate),
    /// The answer to [`Command::Devices`]: the account's devices, oldest
    /// first.
    Devices(Vec<DeviceInfo>),
    /// [`Command::RevokeDevice`] succeeded: `message` is the authority's
    /// confirmation (it names the device).
    DeviceRevoked {
        /// The device as the command named it.
        device: String,
        message: String,
    },
}

/// One device of our account, as the authority lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The first 16 hex digits of the device's ed25519 key (what
    /// [`Command::RevokeDevice`] and `natter devices revoke` take).
    pub id: String,
    /// The name it gave at its first login.
    pub name: String,
    /// Its first login, and its last login or renewal.
    pub first_seen: UnixSecs,
    pub last_seen: UnixSecs,
    /// When it was revoked, if it was.
    pub revoked_at: Option<UnixSecs>,
    /// It is the device the node runs on.
    pub this_device: bool,
}

/// Why the authority did not do an account command ([`Command::Devices`],
/// [`Command::RevokeDevice`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountRefusal {
    /// The password is not the account's.
    WrongPassword,
    /// No device of the account has that id or name (or several do).
    NoSuchDevice,
    /// Too many password attempts: wait and try again.
    Throttled,
    /// No authority answered.
    Unreachable,
    /// This device is revoked, or the account disabled.
    NotAllowed,
    /// Anything else the authority said (the message tells).
    Refused,
}

impl AccountRefusal {
    /// A short code for scripts.
    pub fn code(self) -> &'static str {
        match self {
            AccountRefusal::WrongPassword => "wrong_password",
            AccountRefusal::NoSuchDevice => "no_such_device",
            AccountRefusal::Throttled => "throttled",
            AccountRefusal::Unreachable => "authority_unreachable",
            AccountRefusal::NotAllowed => "not_allowed",
            AccountRefusal::Refused => "refused",
        }
    }
}

/// Why a command failed, so that a front end can tell the cases apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorReason {
    /// The node could not do it: the network, a database, a device, or
    /// a command not available in this mode.
    Failed,
    /// Group chat refused it: what was asked breaks a rule of the group.
    Group(crate::group::Refusal),
    /// The authority did not do an account command.
    Account(AccountRefusal),
}

impl ErrorReason {
    /// A short code for scripts (headless JSON's `reason`).
    pub fn code(self) -> &'static str {
        match self {
            ErrorReason::Failed => "failed",
            ErrorReason::Group(r) => r.code(),
            ErrorReason::Account(r) => r.code(),
        }
    }
}

/// What the node reports about a conference.
#[derive(Debug, Clone, PartialEq)]
pub enum ConferenceUpdate {
    /// Invitations, joins and leaves, the mixer, mutes, levels, the end.
    Changed(crate::conference::ConfEvent),
    /// One leg's quality (at the mixer: one per participant; elsewhere
    /// the leg to the mixer), about once a second.
    Stats {
        conference: crate::conference::ConfId,
        peer: String,
        stats: Box<CallStats>,
    },
    /// The conference's audio stopped: what its media did in total.
    MediaEnded {
        conference: crate::conference::ConfId,
        stats: Option<crate::media::mixer::MixStats>,
    },
}

impl CallState {
    /// Why an ended call ended, in words (with the detail when known).
    pub fn end_text(reason: &EndReason, detail: &Option<String>) -> String {
        match detail {
            Some(d) => format!("{reason} ({d})"),
            None => reason.to_string(),
        }
    }
}

impl Event {
    /// The answer to a command whose backend does not exist yet.
    pub fn not_available(command: &Command, feature: &str) -> Event {
        Event::Error {
            command: command.name().to_owned(),
            reason: ErrorReason::Failed,
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
    LoggedIn {
        username: String,
        until: u64,
        role: Role,
    },
}

/// Attachment and publication, as the overlay client reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayEvent {
    Attached {
        supernode: SocketAddr,
        primary: bool,
        /// Our address as the supernode sees it.
        observed: SocketAddr,
    },
    Detached {
        supernode: SocketAddr,
        reason: String,
    },
    /// A full supernode sent us to others.
    Redirected {
        from: SocketAddr,
        to: Vec<SocketAddr>,
    },
    /// Our presence record was accepted.
    Published {
        seq: u64,
    },
    PublishRejected {
        seq: u64,
        reason: String,
    },
}

/// A user's signed presence record, as the directory holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryRecord {
    pub username: String,
    pub status: Status,
    pub message: String,
    pub seq: u64,
    /// The supernodes the user is attached to.
    pub supernodes: Vec<SocketAddr>,
    /// Addresses the user may be reached at directly.
    pub candidates: Vec<SocketAddr>,
    /// Unix seconds, for a record that says offline.
    pub last_seen: Option<u64>,
}

/// What happened to a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactChange {
    Request {
        from: String,
        greeting: String,
    },
    RequestSent {
        to: String,
    },
    /// Authorized both ways.
    Added {
        user: String,
    },
    Declined {
        user: String,
        by_us: bool,
    },
    Removed {
        user: String,
        by_them: bool,
    },
    Blocked {
        user: String,
    },
    Unblocked {
        user: String,
    },
    /// An authorized contact's status changed.
    Presence {
        user: String,
        status: Status,
        message: String,
    },
    /// A request could not be delivered.
    Failed {
        user: String,
        error: String,
    },
}

/// A row of the contact list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactEntry {
    pub username: String,
    /// `None`: no contact (only blocked, or a request we declined).
    pub state: Option<ContactState>,
    pub blocked: bool,
    pub status: Status,
    pub message: String,
    pub greeting: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeOutcome {
    /// On the recipient's device.
    Delivered,
    /// Stored on the recipient's directory owners (they are offline).
    Stored,
    Failed(String),
}

/// Short-lived TURN credentials for the group's relays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayCredentials {
    pub username: String,
    pub password: String,
    pub realm: String,
    /// Unix seconds.
    pub expires: u64,
    pub relays: Vec<SocketAddr>,
}

/// The pair of candidates a peer link runs over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPath {
    /// The TURN relay, for a relayed path.
    pub relay: Option<SocketAddr>,
    pub local: SocketAddr,
    pub local_kind: CandidateKind,
    pub remote: SocketAddr,
    pub remote_kind: CandidateKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// Our ICE offer (or answer) for `to`, sent through the supernodes.
    IceSignal {
        to: String,
        data: Vec<u8>,
        answer: bool,
    },
    /// The link is up, `setup_ms` after the connect (caller) or the offer
    /// (callee).
    Connected {
        user: String,
        path: PeerPath,
        setup_ms: u64,
    },
    PathChanged {
        user: String,
        from: PeerPath,
        to: PeerPath,
    },
    Failed {
        user: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteChange {
    Muted(bool),
    Held(bool),
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
    /// No supernode answered at all (down, or unreachable from here): UDP
    /// is not known to be blocked.
    pub unreachable: bool,
    /// How the result was obtained, or why it is missing.
    pub note: Option<String>,
}

/// The audio devices in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioStatus {
    pub input: String,
    pub output: String,
    /// Why these are not the configured devices (a warning for the user).
    pub fallback: Option<AudioFallback>,
}

/// Why calls do not use the configured audio devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFallback {
    /// No sound card (or a build without sound card support): sound card
    /// devices became the tone generator (input) and the null device
    /// (output).
    NoSoundCard,
}

impl AudioFallback {
    /// A short stable name, for JSON events.
    pub fn code(self) -> &'static str {
        match self {
            AudioFallback::NoSoundCard => "no_sound_card",
        }
    }
}

impl std::fmt::Display for AudioFallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AudioFallback::NoSoundCard => {
                "no sound card found: using the tone generator and the null device"
            }
        })
    }
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
        /// Unix seconds; `None` when the record does not tell.
        last_seen: Option<u64>,
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
    /// When sent (by the sender's clock).
    pub sent_at: UnixMillis,
    pub state: MessageState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageState {
    /// Outgoing, not acknowledged yet (retried until it is).
    Sending,
    /// Outgoing: on the recipient's device; the acknowledgement (that it
    /// is in their history) follows.
    Arrived,
    /// Outgoing: the recipient is offline; it waits, encrypted to them, on
    /// their directory owners and reaches them at their next login.
    Stored,
    /// Outgoing: the last attempt failed for this reason; it is sent again.
    Retrying(String),
    /// Outgoing, acknowledged by the recipient.
    Delivered,
    /// Outgoing, given up.
    Failed(String),
    /// Incoming, not read yet.
    Received,
    /// Incoming, read (here or on another of our devices).
    Read,
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
    /// When the call was answered.
    pub answered_at: Option<UnixMillis>,
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
    /// `detail` says more when the node knows it (e.g. the overlay's
    /// answer for a user who is offline).
    Ended {
        reason: EndReason,
        detail: Option<String>,
    },
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallStats {
    pub rtt_ms: Option<u32>,
    /// Packets lost, percent, as the receiver reports.
    pub loss_pct: f32,
    pub jitter_ms: f32,
    /// Microphone level, 0.0 (silence) to 1.0 (full scale).
    pub mic_level: f32,
    pub path: MediaPath,
    pub codec: String,
    /// Media packets sent and received so far in this call.
    pub packets_sent: u64,
    pub packets_received: u64,
    /// The other side.
    pub peer: String,
    /// The media session's counters as they are.
    pub media: Box<MediaStats>,
    /// Media bitrate since the previous report (over the whole call in
    /// the final one), kbit/s, packet headers included.
    pub sent_kbps: f64,
    pub received_kbps: f64,
    /// The peer link's candidate pair (`None` once the media stopped).
    pub peer_path: Option<PeerPath>,
    /// The last report of the call: its media stopped (a recording is
    /// complete).
    pub last: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MediaPath {
    #[default]
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
