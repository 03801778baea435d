//! The node's main UDP socket, dual-stack, and dual-stack TCP listeners.
//!
//! A listen address on "any" (`0.0.0.0` or `[::]`) binds one IPv6 socket
//! with `IPV6_V6ONLY` off, so the same port takes IPv4 and IPv6 (RFC 3493
//! 3.7); where the host has no IPv6 an IPv4 socket stands in. A specific
//! address binds that family only. Everything above this module sees
//! plain addresses: IPv4 peers arrive as `::ffff:a.b.c.d` on the IPv6
//! socket and are handed up as IPv4 ([`std::net::IpAddr::to_canonical`]),
//! and IPv4 destinations are written as IPv4-mapped on the way out.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

/// A UDP socket that speaks both families when bound to "any".
#[derive(Debug)]
pub struct NodeSocket {
    inner: tokio::net::UdpSocket,
    /// The socket is `AF_INET6` with `IPV6_V6ONLY` off: IPv4 destinations
    /// must be written IPv4-mapped.
    dual: bool,
}

/// The families a socket (or a node) can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Families {
    pub v4: bool,
    pub v6: bool,
}

impl Families {
    /// Whether `addr` is reachable from a socket of these families.
    pub fn reaches(self, addr: SocketAddr) -> bool {
        if addr.is_ipv4() { self.v4 } else { self.v6 }
    }
}

/// An IPv6 "any" socket of `ty` on `port` with `IPV6_V6ONLY` off.
fn dual_socket(ty: Type, port: u16) -> io::Result<Socket> {
    let proto = if ty == Type::DGRAM {
        Protocol::UDP
    } else {
        Protocol::TCP
    };
    let s = Socket::new(Domain::IPV6, ty, Some(proto))?;
    s.set_only_v6(false)?;
    if ty == Type::STREAM {
        s.set_reuse_address(true)?;
    }
    s.set_nonblocking(true)?;
    let any = SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0);
    s.bind(&SocketAddr::V6(any).into())?;
    Ok(s)
}

impl NodeSocket {
    /// Bind `listen`; "any" of either family binds both (see the module
    /// docs), falling back to IPv4 alone when IPv6 is unavailable and
    /// `listen` was `0.0.0.0`.
    pub async fn bind(listen: SocketAddr) -> io::Result<Self> {
        if listen.ip().is_unspecified() {
            match dual_socket(Type::DGRAM, listen.port()) {
                Ok(s) => {
                    let inner = tokio::net::UdpSocket::from_std(s.into())?;
                    return Ok(NodeSocket { inner, dual: true });
                }
                Err(e) if listen.is_ipv4() => {
                    tracing::debug!("no dual-stack socket ({e}); IPv4 only");
                }
                Err(e) => return Err(e),
            }
        }
        let inner = tokio::net::UdpSocket::bind(listen).await?;
        Ok(NodeSocket { inner, dual: false })
    }

    /// The bound address: `[::]:port` for a dual-stack socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr().map(canonical)
    }

    /// The families this socket can send to.
    pub fn families(&self) -> Families {
        if self.dual {
            return Families { v4: true, v6: true };
        }
        match self.inner.local_addr() {
            Ok(a) => Families {
                v4: a.is_ipv4(),
                v6: a.is_ipv6(),
            },
            Err(_) => Families::default(),
        }
    }

    pub async fn send_to(&self, buf: &[u8], dst: SocketAddr) -> io::Result<usize> {
        self.inner.send_to(buf, self.wire(dst)).await
    }

    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (n, from) = self.inner.recv_from(buf).await?;
        Ok((n, canonical(from)))
    }

    /// Datagrams already waiting, many per system call (see
    /// [`crate::mmsg`]); sources in canonical form. `WouldBlock` when none.
    pub fn try_recv_batch(&self, b: &mut crate::mmsg::RecvBatch) -> io::Result<usize> {
        let n = crate::mmsg::try_recv_batch(&self.inner, b)?;
        b.map_sources(canonical);
        Ok(n)
    }

    /// Send every `(destination, bytes)`, many per system call, waiting
    /// for room when the socket is full.
    pub async fn send_batch(&self, msgs: &mut [(SocketAddr, &[u8])]) -> io::Result<()> {
        for m in msgs.iter_mut() {
            m.0 = self.wire(m.0);
        }
        crate::mmsg::send_batch(&self.inner, msgs).await
    }

    /// `dst` as this socket must be given it.
    fn wire(&self, dst: SocketAddr) -> SocketAddr {
        match dst {
            SocketAddr::V4(v4) if self.dual => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            other => other,
        }
    }
}

impl From<tokio::net::UdpSocket> for NodeSocket {
    /// A socket bound elsewhere: one family, as bound.
    fn from(inner: tokio::net::UdpSocket) -> Self {
        NodeSocket { inner, dual: false }
    }
}

/// An address as the layers above see it: IPv4-mapped IPv6 as IPv4.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => a,
        },
        v4 => v4,
    }
}

/// A TCP listener on `listen`; "any" listens on both families as
/// [`NodeSocket::bind`] does.
pub async fn bind_tcp(listen: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    if listen.ip().is_unspecified() {
        match dual_socket(Type::STREAM, listen.port()) {
            Ok(s) => {
                s.listen(1024)?;
                return tokio::net::TcpListener::from_std(s.into());
            }
            Err(e) if listen.is_ipv4() => {
                tracing::debug!("no dual-stack listener ({e}); IPv4 only");
            }
            Err(e) => return Err(e),
        }
    }
    tokio::net::TcpListener::bind(listen).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn any_takes_both_families_on_one_port() {
        let s = NodeSocket::bind("0.0.0.0:0".parse().unwrap())
            .await
            .unwrap();
        let port = s.local_addr().unwrap().port();
        assert_eq!(s.families(), Families { v4: true, v6: true });
        let v4 = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let v6 = tokio::net::UdpSocket::bind("[::1]:0").await.unwrap();
        let mut buf = [0u8; 16];
        for (peer, to) in [(&v4, "127.0.0.1"), (&v6, "::1")] {
            let to = SocketAddr::new(to.parse().unwrap(), port);
            peer.send_to(b"hi", to).await.unwrap();
            let (n, from) = s.recv_from(&mut buf).await.unwrap();
            // Handed up as the peer's own family, never IPv4-mapped.
            assert_eq!((n, from), (2, peer.local_addr().unwrap()));
            s.send_to(b"back", from).await.unwrap();
            let (n, back) = peer.recv_from(&mut buf).await.unwrap();
            assert_eq!(n, 4);
            assert_eq!(back.port(), port);
        }
    }

    #[tokio::test]
    async fn a_specific_address_binds_its_family_only() {
        let s = NodeSocket::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(
            s.families(),
            Families {
                v4: true,
                v6: false
            }
        );
        let s = NodeSocket::bind("[::1]:0".parse().unwrap()).await.unwrap();
        assert_eq!(
            s.families(),
            Families {
                v4: false,
                v6: true
            }
        );
        assert!(!s.families().reaches("127.0.0.1:1".parse().unwrap()));
    }

    #[tokio::test]
    async fn a_dual_listener_accepts_both_families() {
        let l = bind_tcp("0.0.0.0:0".parse().unwrap()).await.unwrap();
        let port = l.local_addr().unwrap().port();
        for ip in ["127.0.0.1", "::1"] {
            let to = SocketAddr::new(ip.parse().unwrap(), port);
            let c = tokio::net::TcpStream::connect(to).await.unwrap();
            let (_, from) = l.accept().await.unwrap();
            assert_eq!(canonical(from), c.local_addr().unwrap());
        }
    }

    #[test]
    fn mapped_addresses_read_as_ipv4() {
        let m: SocketAddr = "[::ffff:10.0.0.1]:5".parse().unwrap();
        assert_eq!(canonical(m), "10.0.0.1:5".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::1]:5".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }
}
