//! The runtime that wires the cores to sockets: tokio drivers, the login
//! driver, the UDP link driver, the device's on-disk state, and the
//! Command/Event API (`api`) that front ends talk to through the client
//! runtime (`client`).

pub mod api;
pub mod calls;
pub mod client;
pub mod datadir;
pub mod device;
pub mod login;
pub mod messaging;
pub mod overlay;
pub mod peer;
pub mod tcp;
pub mod turn;
pub mod udp;

pub use datadir::{DataDirError, DataDirLock};
pub use device::{DeviceError, DeviceFiles};
pub use login::{AuthorityConnection, LoginError};
pub use udp::{LinkCommand, LinkHandle, UdpLink, UdpLinkError};
