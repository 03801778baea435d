//! IP prefixes (`10.0.0.0/8`, `fc00::/7`) as configs write them, and the
//! special-purpose ranges (RFC 6890) that a relay must not reach on a
//! stranger's behalf: private networks, carrier-grade NAT, link-local
//! (where cloud metadata services live), "this network" and reserved
//! space.

use std::net::IpAddr;
use std::str::FromStr;

/// An address and how many leading bits of it count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

/// Ranges a TURN relay refuses as peers by default (coturn's
/// `denied-peer-ip` list in its example config is the same idea):
/// RFC 1918 private, 100.64/10 shared (CGNAT), 169.254/16 link-local
/// (cloud metadata at 169.254.169.254), 0/8 "this network", 192.0.0/24
/// protocol assignments, 198.18/15 benchmarking, 240/4 reserved, and for
/// IPv6 unique-local fc00::/7 and link-local fe80::/10.
pub const SPECIAL_PURPOSE: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "240.0.0.0/4",
    "fc00::/7",
    "fe80::/10",
    // Site-local (deprecated, still routed on some LANs), discard-only,
    // and local-use NAT64 (RFC 8215: a translator into private space).
    "fec0::/10",
    "100::/64",
    "64:ff9b:1::/48",
];

/// The IPv4 address an IPv6 address carries to an IPv4 host: IPv4-mapped
/// (`::ffff:a.b.c.d`), the NAT64 well-known prefix (`64:ff9b::/96`, RFC
/// 6052) or 6to4 (`2002:AABB:CCDD::/48`, RFC 3056). A relay judges that
/// IPv4 address too, so a denied IPv4 range cannot be reached through a
/// translator.
pub fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = v6.segments();
    let o = v6.octets();
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if s[0] == 0x2002 {
        return Some(std::net::Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// [`SPECIAL_PURPOSE`] parsed.
pub fn special_purpose() -> Vec<IpPrefix> {
    SPECIAL_PURPOSE
        .iter()
        .map(|s| s.parse().expect("SPECIAL_PURPOSE entries parse"))
        .collect()
}

impl IpPrefix {
    /// Whether `ip` lies in this prefix; an IPv4-mapped IPv6 address
    /// (`::ffff:10.0.0.1`) counts as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.len as u32).unwrap_or(0);
                u32::from(p) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.len as u32).unwrap_or(0);
                u128::from(p) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpPrefix {
    type Err = String;
    /// `ADDR/LEN`, or a bare address for just that address.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("{s:?} is not an IP prefix: expected e.g. \"10.0.0.0/8\" or \"fc00::/7\"");
        let (addr, len) = match s.trim().split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(l) => l.parse::<u8>().ok().filter(|&l| l <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(IpPrefix { addr, len })
    }
}

impl std::fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl<'de> serde::Deserialize<'de> for IpPrefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_ranges_cover_what_a_relay_must_not_reach() {
        let deny = special_purpose();
        let denied = |a: &str| deny.iter().any(|p| p.contains(ip(a)));
        for a in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.1.2.3",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(denied(a), "{a}");
        }
        for a in [
            "198.51.100.1",
            "203.0.113.9",
            "172.32.0.1",
            "100.128.0.1",
            "8.8.8.8",
            "2001:db8::1",
            "::ffff:198.51.100.1",
        ] {
            assert!(!denied(a), "{a}");
        }
    }

    #[test]
    fn parse_and_edges() {
        let p: IpPrefix = "0.0.0.0/0".parse().unwrap();
        assert!(p.contains(ip("1.2.3.4")));
        assert!(!p.contains(ip("::1")));
        let one: IpPrefix = "203.0.113.7".parse().unwrap();
        assert!(one.contains(ip("203.0.113.7")) && !one.contains(ip("203.0.113.8")));
        assert_eq!(one.to_string(), "203.0.113.7/32");
        let all6: IpPrefix = "::/0".parse().unwrap();
        assert!(all6.contains(ip("2001:db8::1")));
        for bad in ["10.0.0.0/33", "fc00::/129", "ten/8", "10.0.0.0/", ""] {
            assert!(bad.parse::<IpPrefix>().is_err(), "{bad}");
        }
    }
}
