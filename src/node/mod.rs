//! The runtime that wires the cores to sockets: tokio drivers and, in later
//! work, the Command/Event API the UI and `--headless` talk to. For now it
//! holds the login driver, the UDP link driver and the device's on-disk
//! state.

pub mod demux;
pub mod device;
pub mod login;
pub mod messaging;
pub mod overlay;
pub mod udp;

pub use device::{DeviceError, DeviceFiles};
pub use login::{AuthorityConnection, LoginError};
pub use udp::{LinkCommand, LinkHandle, UdpLink, UdpLinkError};
