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
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// A UDP socket that speaks both families when bound to "any".
#[derive(Debug)]
pub struct NodeSocket {
    inner: tokio::net::UdpSocket,
    /// The socket is `AF_INET6` with `IPV6_V6ONLY` off: IPv4 destinations
    /// must be written IPv4-mapped.
    dual: bool,
    /// An IPv6-only host behind NAT64 (see [`NodeSocket::set_nat64`]):
    /// IPv4 destinations are written in this /96 prefix, and sources in it
    /// are handed up as the IPv4 address they carry.
    nat64: Option<Ipv6Addr>,
}

/// The NAT64 well-known prefix 64:ff9b::/96 (RFC 6052).
pub const NAT64_WKP: Ipv6Addr = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0);

/// The IPv4 address `a` carries in the /96 `prefix`, if it is in it.
pub fn nat64_embedded(prefix: Ipv6Addr, a: Ipv6Addr) -> Option<Ipv4Addr> {
    let (p, s) = (prefix.segments(), a.segments());
    (p[..6] == s[..6]).then(|| {
        let o = a.octets();
        Ipv4Addr::new(o[12], o[13], o[14], o[15])
    })
}

/// `v4` in the /96 `prefix` (RFC 6052 2.2).
pub fn nat64_synthesize(prefix: Ipv6Addr, v4: Ipv4Addr) -> Ipv6Addr {
    let mut o = prefix.octets();
    o[12..].copy_from_slice(&v4.octets());
    Ipv6Addr::from(o)
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
                    return Ok(NodeSocket {
                        inner,
                        dual: true,
                        nat64: None,
                    });
                }
                Err(e) if listen.is_ipv4() => {
                    tracing::debug!("no dual-stack socket ({e}); IPv4 only");
                }
                Err(e) => return Err(e),
            }
        }
        let inner = tokio::net::UdpSocket::bind(listen).await?;
        Ok(NodeSocket {
            inner,
            dual: false,
            nat64: None,
        })
    }

    /// Reach IPv4 through NAT64 `prefix` (a /96, e.g. [`NAT64_WKP`]) when
    /// this dual-stack socket has no IPv4 route to `probe` (an IPv4 host
    /// the node wants): the layers above then see IPv4 peers as on any
    /// IPv4 host (RFC 6535's bump in the host). Returns whether it does.
    pub fn set_nat64(&mut self, prefix: Ipv6Addr, probe: SocketAddr) -> bool {
        let routed = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .and_then(|s| s.connect(probe))
            .is_ok();
        self.nat64 = (self.dual && !routed).then_some(prefix);
        self.nat64.is_some()
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
        Ok((n, self.up(from)))
    }

    /// Datagrams already waiting, many per system call (see
    /// [`crate::mmsg`]); sources in canonical form. `WouldBlock` when none.
    pub fn try_recv_batch(&self, b: &mut crate::mmsg::RecvBatch) -> io::Result<usize> {
        let n = crate::mmsg::try_recv_batch(&self.inner, b)?;
        b.map_sources(|a| self.up(a));
        Ok(n)
    }

    /// Send every `(destination, bytes)`, many per system call, waiting
    /// for room when the socket is full; returns how many were refused.
    pub async fn send_batch(&self, msgs: &mut [(SocketAddr, &[u8])]) -> io::Result<usize> {
        for m in msgs.iter_mut() {
            m.0 = self.wire(m.0);
        }
        crate::mmsg::send_batch(&self.inner, msgs).await
    }

    /// Where a datagram to `dst` really goes, for routing lookups: its
    /// address in the NAT64 prefix when IPv4 is reached through it, else
    /// `dst`.
    pub fn routed(&self, dst: SocketAddr) -> SocketAddr {
        match (self.nat64, dst) {
            (Some(p), SocketAddr::V4(v4)) => SocketAddr::V6(SocketAddrV6::new(
                nat64_synthesize(p, *v4.ip()),
                v4.port(),
                0,
                0,
            )),
            _ => dst,
        }
    }

    /// `dst` as this socket must be given it.
    fn wire(&self, dst: SocketAddr) -> SocketAddr {
        match dst {
            SocketAddr::V4(v4) if self.dual => {
                let ip = match self.nat64 {
                    Some(p) => nat64_synthesize(p, *v4.ip()),
                    None => v4.ip().to_ipv6_mapped(),
                };
                SocketAddr::V6(SocketAddrV6::new(ip, v4.port(), 0, 0))
            }
            other => other,
        }
    }

    /// A source as the layers above see it: canonical, and IPv4 for one
    /// in the NAT64 prefix.
    fn up(&self, from: SocketAddr) -> SocketAddr {
        let from = canonical(from);
        match (self.nat64, from) {
            (Some(p), SocketAddr::V6(v6)) => match nat64_embedded(p, *v6.ip()) {
                Some(v4) => SocketAddr::from((v4, v6.port())),
                None => from,
            },
            _ => from,
        }
    }
}

impl From<tokio::net::UdpSocket> for NodeSocket {
    /// A socket bound elsewhere: one family, as bound.
    fn from(inner: tokio::net::UdpSocket) -> Self {
        NodeSocket {
            inner,
            dual: false,
            nat64: None,
        }
    }
}

/// The MTU of the kernel's route to `peer` (Linux: `IP_MTU` or `IPV6_MTU`
/// of a UDP socket connected to it, which includes what ICMP has taught
/// the kernel about the path); `None` where it can't be read. Connecting
/// a UDP socket sends nothing.
pub fn route_mtu(peer: SocketAddr) -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let peer = canonical(peer);
        let (any, level, name): (SocketAddr, _, _) = match peer {
            SocketAddr::V4(_) => (
                (Ipv4Addr::UNSPECIFIED, 0).into(),
                libc::IPPROTO_IP,
                libc::IP_MTU,
            ),
            SocketAddr::V6(_) => (
                (Ipv6Addr::UNSPECIFIED, 0).into(),
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU,
            ),
        };
        let s = std::net::UdpSocket::bind(any).ok()?;
        s.connect(peer).ok()?;
        let mut mtu: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `mtu` and `len` are valid for writes of a c_int and a
        // socklen_t, and the descriptor is open for the call.
        let r = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                level,
                name,
                (&mut mtu as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        (r == 0 && mtu > 0).then_some(mtu as usize)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = peer;
        None
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

/// The addresses of this host's interfaces (`getifaddrs`), both families,
/// link-local IPv6 left out (it needs a scope to be reached). Empty when
/// the call fails.
pub fn interface_addrs() -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below; every
    // node and address pointer is checked before it is read.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let sa = (*cur).ifa_addr;
            if !sa.is_null() {
                match i32::from((*sa).sa_family) {
                    libc::AF_INET => {
                        let a = &*(sa as *const libc::sockaddr_in);
                        out.push(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into());
                    }
                    libc::AF_INET6 => {
                        let a = &*(sa as *const libc::sockaddr_in6);
                        let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                        if !ip.is_unicast_link_local() {
                            out.push(ip.into());
                        }
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loopback route's MTU is the loopback device's (64 KiB on
    /// Linux, a datagram's most, 65,535), far above Ethernet's.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_loopback_route_has_the_loopback_mtu() {
        let lo = std::fs::read_to_string("/sys/class/net/lo/mtu").unwrap();
        let dev: usize = lo.trim().parse().unwrap();
        let mtu = route_mtu("127.0.0.1:9".parse().unwrap()).unwrap();
        assert_eq!(mtu, dev.min(65_535));
        assert!(mtu > 1500);
    }

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

    /// Behind NAT64 (no IPv4 route here: stood in for by a prefix whose
    /// "IPv4" peers are ::1 in a /96), IPv4 destinations go out in the
    /// prefix and come back as IPv4.
    #[tokio::test]
    async fn nat64_writes_ipv4_in_the_prefix_and_hands_it_up_as_ipv4() {
        let p = NAT64_WKP;
        let v4 = Ipv4Addr::new(192, 88, 99, 3);
        assert_eq!(
            nat64_synthesize(p, v4),
            "64:ff9b::c058:6303".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(nat64_embedded(p, nat64_synthesize(p, v4)), Some(v4));
        assert_eq!(nat64_embedded(p, "2001:db8::1".parse().unwrap()), None);
        let mut s = NodeSocket::bind("0.0.0.0:0".parse().unwrap())
            .await
            .unwrap();
        // An IPv4 route exists here: no NAT64.
        assert!(!s.set_nat64(p, "127.0.0.1:9".parse().unwrap()));
        // The prefix ::/96 puts 0.0.0.1 at ::1, the loopback.
        s.nat64 = Some(Ipv6Addr::UNSPECIFIED);
        let peer = tokio::net::UdpSocket::bind("[::1]:0").await.unwrap();
        let as_v4 = SocketAddr::from(([0, 0, 0, 1], peer.local_addr().unwrap().port()));
        s.send_to(b"hi", as_v4).await.unwrap();
        let mut buf = [0u8; 8];
        let (_, from) = peer.recv_from(&mut buf).await.unwrap();
        peer.send_to(b"back", from).await.unwrap();
        let (n, back) = s.recv_from(&mut buf).await.unwrap();
        assert_eq!((n, back), (4, as_v4));
        // Routing lookups (the host candidate) go towards the prefix too:
        // an IPv4 supernode is found over IPv6, from an IPv6 address.
        assert_eq!(s.routed(as_v4), peer.local_addr().unwrap());
        let v6 = "[2001:db8::1]:5".parse().unwrap();
        assert_eq!(s.routed(v6), v6);
        let h = crate::node::peer::host_address(s.local_addr().unwrap(), s.routed(as_v4)).await;
        assert!(h.is_some_and(|h| h.is_ipv6()), "{h:?}");
    }

    #[test]
    fn the_interface_addresses_include_the_loopback() {
        let ips = interface_addrs();
        assert!(ips.contains(&Ipv4Addr::LOCALHOST.into()), "{ips:?}");
        assert!(ips.iter().all(|ip| !ip.is_unspecified()), "{ips:?}");
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
