//! Peer-to-peer connections in the client node: what the driver reports
//! about them ([`PeerEvent`]) and its JSON form for `--headless --json`.
//! The protocol state lives in [`crate::ice::IceSessions`] and the link
//! endpoint; the overlay driver (`node::overlay`) wires them to the socket.

use crate::ice::{CandidateKind, Path, PathKind};
use serde_json::json;
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

fn kind_name(k: CandidateKind) -> &'static str {
    k.name()
}

fn path_json(p: &Path) -> serde_json::Value {
    let (kind, relay) = match p.kind() {
        PathKind::Direct => ("direct", None),
        PathKind::Relayed { relay } => ("relayed", Some(relay.to_string())),
    };
    json!({
        "path": kind,
        "relay": relay,
        "local": p.local.to_string(),
        "local_kind": kind_name(p.local_kind),
        "remote": p.remote.to_string(),
        "remote_kind": kind_name(p.remote_kind),
    })
}

/// The `--json` line of a peer event.
pub fn event_json(e: &PeerEvent) -> serde_json::Value {
    match e {
        PeerEvent::Signal { to, bytes, answer } => json!({
            "event": if *answer { "ice_answer" } else { "ice_offer" },
            "to": to,
            "data": crate::wire::hex_encode(bytes),
        }),
        PeerEvent::Connected {
            user,
            path,
            setup_ms,
        } => {
            let mut v = path_json(path);
            v["event"] = json!("peer_connected");
            v["user"] = json!(user);
            v["setup_ms"] = json!(setup_ms);
            v
        }
        PeerEvent::PathChanged { user, from, to } => {
            let mut v = path_json(to);
            v["event"] = json!("path_changed");
            v["user"] = json!(user);
            v["from"] = path_json(from);
            v
        }
        PeerEvent::Failed { user, reason } => {
            json!({"event": "peer_failed", "user": user, "reason": reason})
        }
    }
}

/// The human-readable line of a peer event.
pub fn event_line(e: &PeerEvent) -> String {
    match e {
        PeerEvent::Signal { to, bytes, answer } => format!(
            "{} for {to}: {}",
            if *answer { "ice-answer" } else { "ice-offer" },
            crate::wire::hex_encode(bytes)
        ),
        PeerEvent::Connected {
            user,
            path,
            setup_ms,
        } => format!("connected to {user} {path} in {setup_ms} ms"),
        PeerEvent::PathChanged { user, from, to } => {
            format!("path to {user} changed: {from} -> {to}")
        }
        PeerEvent::Failed { user, reason } => format!("could not connect to {user}: {reason}"),
    }
}

/// Decode hex text (as `event_json` writes it).
pub fn hex_decode_vec(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let b = vec![0u8, 1, 0xAB, 0xFF];
        assert_eq!(hex_decode_vec(&crate::wire::hex_encode(&b)), Some(b));
        assert_eq!(hex_decode_vec("abc"), None);
        assert_eq!(hex_decode_vec("zz"), None);
    }
}
