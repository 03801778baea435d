//! Socket addresses on the wire: a family byte (4 or 6), the address and
//! the port; lists carry a count byte first. Shared by the overlay's
//! records and messages, ICE offers and the link's BUSY reply.

use super::{Reader, WireError, Writer};
use std::net::SocketAddr;

/// Addresses one list carries at most.
pub const MAX_ADDRS: usize = 8;

/// Appends one address.
pub fn write_addr(w: &mut Writer, a: &SocketAddr) {
    match a {
        SocketAddr::V4(v4) => {
            w.u8(4).raw(&v4.ip().octets()).u16(v4.port());
        }
        SocketAddr::V6(v6) => {
            w.u8(6).raw(&v6.ip().octets()).u16(v6.port());
        }
    }
}

/// Reads one address.
pub fn read_addr(r: &mut Reader<'_>) -> Result<SocketAddr, WireError> {
    match r.u8()? {
        4 => {
            let ip: [u8; 4] = r.array()?;
            Ok(SocketAddr::from((ip, r.u16()?)))
        }
        6 => {
            let ip: [u8; 16] = r.array()?;
            Ok(SocketAddr::from((ip, r.u16()?)))
        }
        got => Err(WireError::UnknownType {
            what: "address family",
            got,
        }),
    }
}

/// Appends one address.
/// Appends up to [`MAX_ADDRS`] of `addrs`, counted.
pub fn write_addrs(w: &mut Writer, addrs: &[SocketAddr]) {
    let n = addrs.len().min(MAX_ADDRS);
    w.u8(n as u8);
    for a in &addrs[..n] {
        write_addr(w, a);
    }
}

/// Reads a counted list; more than [`MAX_ADDRS`] is an error.
pub fn read_addrs(r: &mut Reader<'_>) -> Result<Vec<SocketAddr>, WireError> {
    let n = r.u8()? as usize;
    if n > MAX_ADDRS {
        return Err(WireError::Invalid {
            field: "address count",
        });
    }
    (0..n).map(|_| read_addr(r)).collect()
}
