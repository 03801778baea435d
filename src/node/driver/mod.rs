//! The tokio drivers of a running node: one task per node owns its UDP
//! socket, its link endpoint (encrypted, certificate-checked sessions) and
//! the role's sans-IO cores, and moves bytes, commands and events between
//! them. The task sleeps until the earliest deadline of any core.
//!
//! The shape, bottom up (imports point down only):
//!
//! - `base`: the socket-and-link base both roles stand on: the main UDP
//!   socket, TCP link streams, the [`LinkEndpoint`], the clock, the RNG,
//!   the event queue and the drop counters.
//! - `client`: the client driver. Its main loop reads one input (a
//!   datagram, a TCP frame, a media task's message, a timer, a command),
//!   then pumps: link events, overlay transmits, overlay events routed to
//!   their consumer, NAT, ICE, delivery, flush. It owns the sub-drivers:
//!   - ICE and paths (`peers`, with its `paths`: relayed candidates
//!     and the TCP fallback): [`PeerCommand`] in, [`PeerEvent`] out;
//!   - NAT detection (`nat`): no commands, [`NatReport`] out;
//!   - chat and contacts ([`crate::node::messaging`]): `MessagingCommand`
//!     in, `MessagingEvent` out;
//!   - calls ([`crate::node::calls`]): `CallCommand` in, `CallsEvent` out;
//!   - file transfers ([`crate::node::files`]): `FilesCommand` in,
//!     `FilesEvent` out; file messages from peer links go there.
//! - `dispatch`: the one table that says which sub-driver consumes an
//!   envelope kind; outcomes go back to the sub-driver that sent it.
//! - `supernode`: the supernode driver: the overlay's supernode core,
//!   the STUN server (with the extra RFC 5780 sockets) and the TURN relay
//!   ([`crate::node::turn`], its own task) on the same socket.
//!
//! The main socket carries more than link frames
//! ([`crate::wire::stun::classify`]); each driver's `datagram` step says
//! which core each kind goes to.
//!
//! [`Command`] and [`Event`] are what the node's owner (the client runtime
//! `node::client`, `natter --supernode`, tests and benches) sends and
//! receives; sub-driver commands nest in [`Command`], and the driver
//! flattens sub-driver events into [`Event`] (their failures into
//! [`Event::CommandFailed`]).

mod base;
mod client;
mod dispatch;
mod nat;
mod peers;
mod supernode;

pub use dispatch::{Consumer, ROUTES, consumer};
pub use nat::NatOptions;
pub use peers::{PathOptions, PeerCommand};

use crate::clock::Clock;
use crate::link::LinkEndpoint;
use crate::nat::{NatReport, StunServerConfig, StunStats};
use crate::node::calls::{CallCommand, CallOptions, CallUpdate};
use crate::node::files::{FileOptions, FilesCommand};
use crate::node::messaging::{Messaging, MessagingCommand};
use crate::node::peer::PeerEvent;
use crate::node::turn::{TurnHandle, TurnSetup};
use crate::overlay::{ClientCore, ClientEvent, Status, SupernodeCore, SupernodeEvent};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// What the node's owner asks of it. The overlay commands and the
/// sub-drivers' are for clients; a supernode takes `Status`,
/// `SetCertificate`, `SetRevocations` and `Shutdown` and ignores the rest.
#[derive(Debug)]
pub enum Command {
    Lookup {
        username: String,
    },
    /// Our status: through the contacts core when the node runs chat and
    /// contacts, else straight into the directory record.
    SetStatus {
        status: Status,
        message: String,
    },
    Watch {
        username: String,
    },
    /// Ask the primary supernode for relay (TURN) credentials.
    RelayCredentials,
    /// Send a sealed envelope to a user (see `overlay::envelope`); its id
    /// comes back on `reply`, its outcome as an `Envelope*` client event.
    SendEnvelope {
        to: String,
        kind: u8,
        payload: Vec<u8>,
        store_if_offline: bool,
        reply: Option<oneshot::Sender<crate::overlay::EnvelopeId>>,
    },
    /// Snapshot of counters and attachments, for status output and tests.
    Status {
        reply: oneshot::Sender<NodeStatus>,
    },
    /// A renewed certificate for this device.
    SetCertificate {
        cert: Box<crate::identity::Certificate>,
    },
    /// The authority's signed revocation list, encoded (supernodes): its
    /// devices and accounts are refused and their sessions closed.
    SetRevocations {
        list: Vec<u8>,
    },
    /// Hang up, publish an offline record, detach and stop.
    Shutdown,
    /// Peer-to-peer connections (the ICE-and-paths sub-driver).
    Peer(PeerCommand),
    /// Chat and contacts (nodes started with [`ClientOptions::messaging`]).
    Messaging(MessagingCommand),
    /// Calls (nodes started with [`ClientOptions::calls`]).
    Call(CallCommand),
    /// File transfers (nodes started with [`ClientOptions::files`]).
    Files(FilesCommand),
}

/// What the node reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Client(ClientEvent),
    Supernode(SupernodeEvent),
    /// A NAT detection finished (clients).
    Nat(NatReport),
    Chat(crate::chat::ChatEvent),
    Contacts(crate::contacts::ContactsEvent),
    /// A command could not be carried out; `command` names it as
    /// [`crate::node::api::Command::name`] does.
    CommandFailed {
        command: &'static str,
        reason: crate::node::api::ErrorReason,
        error: String,
    },
    /// Peer-to-peer connections (clients).
    Peer(PeerEvent),
    /// Calls: state changes and media statistics (clients with calls).
    Call(CallUpdate),
    /// The node task ended.
    Stopped,
    /// File transfers (clients with files).
    File(crate::transfer::FileEvent),
    /// Group chat (clients with messaging and groups).
    Group(crate::node::messaging::GroupReport),
}

#[derive(Debug, Clone, Default)]
pub struct NodeStatus {
    pub local_addr: Option<SocketAddr>,
    pub attached: Vec<SocketAddr>,
    pub members: usize,
    pub clients: usize,
    pub records: usize,
    pub queries_sent: u64,
    pub host_cache: Vec<SocketAddr>,
    pub link_sessions: usize,
    pub dropped_not_supernode: u64,
    /// The last NAT detection (clients).
    pub nat: Option<NatReport>,
    /// STUN server counters (supernodes).
    pub stun: Option<StunStats>,
    /// Datagrams of no protocol this node speaks, dropped.
    pub dropped_datagrams: u64,
    /// STUN messages no core here took (e.g. TURN methods before the
    /// relay is built), dropped.
    pub stun_unhandled: u64,
    /// Supernodes: every core's counters, for the metrics endpoint.
    pub counters: Option<Box<crate::metrics::supernode::SupernodeCounters>>,
}

/// What a client runs besides the overlay client on its socket.
#[derive(Debug, Default)]
pub struct ClientOptions {
    /// Chat and contacts.
    pub messaging: Option<Messaging>,
    /// Measure the NAT.
    pub nat: Option<NatOptions>,
    /// Make and answer calls.
    pub calls: Option<CallOptions>,
    /// Relayed candidates and the TCP fallback (`paths`).
    pub paths: PathOptions,
    /// Send and receive files.
    pub files: Option<FileOptions>,
}

/// What a supernode runs besides the overlay supernode on its socket.
#[derive(Debug, Default)]
pub struct SupernodeOptions {
    /// The STUN server, with the main socket as its primary.
    pub stun: Option<StunServerConfig>,
    /// The extra RFC 5780 sockets, already bound (see
    /// [`crate::nat::StunServer::extra_sockets`]).
    pub stun_sockets: Vec<UdpSocket>,
    /// The TURN relay sharing the main socket.
    pub turn: Option<TurnSetup>,
    /// Where the offline mailbox is kept across restarts (`None`: in
    /// memory only).
    pub mailbox: Option<std::path::PathBuf>,
}

/// A running node.
pub struct OverlayNode {
    pub local_addr: SocketAddr,
    pub commands: mpsc::Sender<Command>,
    pub events: mpsc::Receiver<Event>,
    pub task: tokio::task::JoinHandle<()>,
    /// The TURN relay on this node's socket, when it runs one.
    pub turn: Option<TurnHandle>,
}

impl OverlayNode {
    /// Start a client node's task on an already bound socket, with what
    /// [`ClientOptions`] adds: NAT detection, messaging, calls, relayed
    /// paths.
    pub fn client(
        socket: impl Into<crate::socket::NodeSocket>,
        link: LinkEndpoint,
        core: ClientCore,
        clock: Arc<dyn Clock>,
        opts: ClientOptions,
    ) -> std::io::Result<Self> {
        client::spawn(socket.into(), link, core, clock, opts)
    }

    /// Start a supernode's task on an already bound socket, with what
    /// [`SupernodeOptions`] adds: a STUN server, a TURN relay.
    pub fn supernode(
        socket: impl Into<crate::socket::NodeSocket>,
        link: LinkEndpoint,
        core: SupernodeCore,
        clock: Arc<dyn Clock>,
        opts: SupernodeOptions,
    ) -> std::io::Result<Self> {
        supernode::spawn(socket.into(), link, core, clock, opts)
    }
}
