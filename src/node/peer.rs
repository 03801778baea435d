//! Peer-to-peer connections in the client node: what the driver reports
//! about them ([`PeerEvent`]), and our host address towards a peer.
//! The protocol state lives in [`crate::ice::IceSessions`] and the link
//! endpoint; the client driver's peers sub-driver (`node::driver`) wires
//! them to the socket.

use crate::ice::Path;
use std::net::SocketAddr;
use tokio::net::UdpSocket;

/// What happened to a peer connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// Our ICE offer (or answer) for `to`, to carry through the
    /// supernodes; `bytes` is [`crate::ice::IceOffer::encode`].
    Signal {
        to: String,
        bytes: Vec<u8>,
        answer: bool,
    },
    /// The peer link is up over `path`, `setup_ms` after the connect
    /// command (caller) or the offer (callee).
    Connected {
        user: String,
        path: Path,
        setup_ms: u64,
    },
    /// The link moved to another path (e.g. relayed to direct).
    PathChanged {
        user: String,
        from: Path,
        to: Path,
    },
    Failed {
        user: String,
        reason: String,
    },
}

/// The host candidate of a socket bound to `bound`: itself when bound to
/// an IP, else the source address the routing table picks towards `dst`.
pub async fn host_address(bound: SocketAddr, dst: SocketAddr) -> Option<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return Some(bound);
    }
    let any: SocketAddr = if dst.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let probe = UdpSocket::bind(any).await.ok()?;
    // A UDP connect picks the route and source address; nothing is sent.
    probe.connect(dst).await.ok()?;
    Some(SocketAddr::new(probe.local_addr().ok()?.ip(), bound.port()))
}
