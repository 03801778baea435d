//! The runtime that wires the cores to sockets. Top to bottom (imports
//! point down only; `module_graph` tests that no modules import each
//! other round in a circle):
//!
//! - `api`: the one door for front ends (`Command` in, `Event` out), and
//!   `client`, the client runtime behind it (login, host cache, one
//!   running node per logged-in user);
//! - `driver`: the node's task: a socket-and-link base under a client
//!   driver or a supernode driver, the client's sub-drivers for peers
//!   (ICE and paths) and NAT detection, and the dispatcher that routes
//!   envelope kinds to their consumer;
//! - the sub-drivers the client driver runs that stand on their own:
//!   `calls` (signalling, media tasks) and `messaging` (chat and
//!   contacts), each with its command and event enums; `peer` (what
//!   peers report); `turn` (the supernode's TURN relay task, and a TURN
//!   client for tools);
//! - sockets and state: `tcp` (link and TURN streams), `udp` (a bare link
//!   driver), `login` (the authority connection), `device` and `datadir`
//!   (the data dir), `mailbox` (a supernode's durable offline mailbox).

pub mod api;
pub mod calls;
pub mod client;
pub mod datadir;
pub mod device;
pub mod driver;
pub mod files;
pub mod login;
pub mod mailbox;
pub mod messaging;
pub mod peer;
pub mod tcp;
pub mod turn;
pub mod udp;

pub use datadir::{DataDirError, DataDirLock};
pub use device::{DeviceError, DeviceFiles};
pub use login::{AuthorityConnection, LoginError};
pub use udp::{LinkCommand, LinkHandle, UdpLink, UdpLinkError};
