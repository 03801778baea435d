//! Compact socket addresses for tables with an entry per supernode (full
//! membership is n x n entries over a whole overlay): [`PackedAddr`] keeps
//! an IPv4 address and port inline in 8 bytes instead of `SocketAddr`'s 32,
//! and an IPv6 one as an index into an [`AddrTable`] its owner keeps, so no
//! address loses its flow label or scope id on the way.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackedAddr {
    V4([u8; 4], u16),
    /// Index into the owner's [`AddrTable`].
    V6(u32),
}

/// IPv6 addresses interned for [`PackedAddr`]; supernodes are few and
/// mostly IPv4, so this stays small.
#[derive(Debug, Default)]
pub struct AddrTable {
    v6: Vec<SocketAddrV6>,
    index: HashMap<SocketAddrV6, u32>,
}

impl AddrTable {
    pub fn pack(&mut self, a: SocketAddr) -> PackedAddr {
        match a {
            SocketAddr::V4(v4) => PackedAddr::V4(v4.ip().octets(), v4.port()),
            SocketAddr::V6(v6) => {
                let next = self.v6.len() as u32;
                let i = *self.index.entry(v6).or_insert(next);
                if i == next {
                    self.v6.push(v6);
                }
                PackedAddr::V6(i)
            }
        }
    }

    pub fn unpack(&self, p: PackedAddr) -> SocketAddr {
        match p {
            PackedAddr::V4(ip, port) => SocketAddr::V4(SocketAddrV4::new(ip.into(), port)),
            PackedAddr::V6(i) => SocketAddr::V6(self.v6[i as usize]),
        }
    }

    /// Number of interned IPv6 addresses.
    pub fn v6_len(&self) -> usize {
        self.v6.len()
    }
}

/// A socket address in 16 bytes instead of 32 for per-client lists (the
/// host cache): IPv4 inline, IPv6 boxed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAddr {
    V4(SocketAddrV4),
    V6(Box<SocketAddrV6>),
}

impl From<SocketAddr> for HostAddr {
    fn from(a: SocketAddr) -> Self {
        match a {
            SocketAddr::V4(v4) => HostAddr::V4(v4),
            SocketAddr::V6(v6) => HostAddr::V6(Box::new(v6)),
        }
    }
}

impl HostAddr {
    pub fn get(&self) -> SocketAddr {
        match self {
            HostAddr::V4(v4) => SocketAddr::V4(*v4),
            HostAddr::V6(v6) => SocketAddr::V6(**v6),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_exactly() {
        let mut t = AddrTable::default();
        let v4: SocketAddr = "10.1.2.3:7000".parse().unwrap();
        let v6 = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 7000, 5, 3));
        let p4 = t.pack(v4);
        let p6 = t.pack(v6);
        assert_eq!(t.unpack(p4), v4);
        assert_eq!(t.unpack(p6), v6);
        assert_eq!(t.pack(v6), p6, "interned once");
        assert_eq!(t.v6_len(), 1);
        assert_eq!(std::mem::size_of::<PackedAddr>(), 8);
        assert_eq!(HostAddr::from(v6).get(), v6);
        assert_eq!(HostAddr::from(v4).get(), v4);
        assert_eq!(std::mem::size_of::<HostAddr>(), 16);
    }
}
