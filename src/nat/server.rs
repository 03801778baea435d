//! The STUN server core of a supernode: answers Binding requests with the
//! requester's reflexive address (XOR-MAPPED-ADDRESS), and, when the
//! supernode has a second address, the RFC 5780 behaviour-discovery
//! attributes: OTHER-ADDRESS, RESPONSE-ORIGIN, and CHANGE-REQUEST honoured
//! by answering from another of its four sockets (primary ip/port, primary
//! ip/alt port, alt ip/port, alt ip/alt port, as coturn's
//! `--alt-listening-*` options do).
//!
//! Stateless apart from counters and a token bucket per source (IPv4
//! address, IPv6 /64): one request in, at most one response out, and at
//! most `burst` then `per_sec` answers a second to one source, so the
//! server cannot be a reflection amplifier. Answers carry only what a
//! client needs: XOR-MAPPED-ADDRESS (no legacy MAPPED-ADDRESS, no
//! SOFTWARE), RFC 5780's RESPONSE-ORIGIN and OTHER-ADDRESS, FINGERPRINT. Other STUN methods (TURN's Allocate and friends) are not this
//! core's: the driver routes on [`crate::wire::stun::peek`] before calling it.

use super::Transmit;
use super::stun;
use crate::limits::{Rate, RateTable, SourceKey, log_worthy};
use crate::time::Millis;
use crate::wire::stun::{Class, method, peek};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use stun_rs::attributes::discovery::{
    ChangeRequest, ChangeRequestFlags, OtherAddress, ResponseOrigin, ResponsePort,
};
use stun_rs::attributes::stun::{ErrorCode, Fingerprint, UnknownAttributes, XorMappedAddress};
use stun_rs::{MessageClass, StunAttribute, StunMessageBuilder};

/// Where the server listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StunServerConfig {
    /// The main socket's address. Must be a specific IP when `alt` is set,
    /// since RESPONSE-ORIGIN and OTHER-ADDRESS name real addresses.
    pub primary: SocketAddr,
    /// The second address: its IP differs from the primary's, its port is
    /// the alternate port used on both IPs.
    pub alt: Option<SocketAddr>,
}

/// Counters, for status output and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StunStats {
    pub requests: u64,
    pub responses: u64,
    /// Error responses sent (420 for CHANGE-REQUEST without a second
    /// address or unknown comprehension-required attributes).
    pub errors: u64,
    /// Undecodable datagrams, dropped.
    pub malformed: u64,
    /// Indications and stray responses, dropped.
    pub ignored: u64,
    /// Responses that asked for a change of address or port.
    pub changed: u64,
    /// Requests dropped: their source was over its answer rate.
    pub rate_limited: u64,
}

/// Answers per source: a burst, then a steady rate. A client's NAT
/// measurement sends about a dozen requests; keepalives one every few
/// seconds.
pub const DEFAULT_RATE: Rate = Rate::new(20, 5);
/// Sources tracked at once; past this, new sources wait for old buckets to
/// refill (so a spray of spoofed sources is limited as a whole too).
const MAX_SOURCES: usize = 65_536;

/// The sans-IO STUN Binding server.
#[derive(Debug)]
pub struct StunServer {
    cfg: StunServerConfig,
    /// Answers per source, so we cannot be aimed at a victim.
    rate: RateTable<SourceKey>,
    out: VecDeque<Transmit>,
    stats: StunStats,
}

impl StunServer {
    pub fn new(cfg: StunServerConfig) -> Self {
        StunServer {
            cfg,
            rate: RateTable::new(DEFAULT_RATE, MAX_SOURCES),
            out: VecDeque::new(),
            stats: StunStats::default(),
        }
    }

    /// Answers per source (default [`DEFAULT_RATE`]).
    pub fn set_rate(&mut self, rate: Rate) {
        self.rate = RateTable::new(rate, MAX_SOURCES);
    }

    pub fn config(&self) -> &StunServerConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &StunStats {
        &self.stats
    }

    /// Whether RFC 5780 behaviour discovery is served.
    pub fn has_alt(&self) -> bool {
        self.cfg.alt.is_some()
    }

    /// The local addresses the driver must bind besides the main socket:
    /// primary ip/alt port, alt ip/primary port, alt ip/alt port.
    pub fn extra_sockets(&self) -> Vec<SocketAddr> {
        let Some(alt) = self.cfg.alt else {
            return Vec::new();
        };
        let p = self.cfg.primary;
        vec![
            SocketAddr::new(p.ip(), alt.port()),
            SocketAddr::new(alt.ip(), p.port()),
            alt,
        ]
    }

    /// The local address that differs from `local` in the IP (if
    /// `change_ip`) and/or the port (if `change_port`). `None` without a
    /// second address or when `local` is not one of our sockets.
    fn flipped(&self, local: SocketAddr, change_ip: bool, change_port: bool) -> Option<SocketAddr> {
        let alt = self.cfg.alt?;
        let p = self.cfg.primary;
        let ip_is_p = local.ip() == p.ip();
        let port_is_p = local.port() == p.port();
        if !(ip_is_p || local.ip() == alt.ip()) || !(port_is_p || local.port() == alt.port()) {
            return None;
        }
        let ip: IpAddr = match (change_ip, ip_is_p) {
            (false, _) => local.ip(),
            (true, true) => alt.ip(),
            (true, false) => p.ip(),
        };
        let port = match (change_port, port_is_p) {
            (false, _) => local.port(),
            (true, true) => alt.port(),
            (true, false) => p.port(),
        };
        Some(SocketAddr::new(ip, port))
    }

    /// A STUN datagram that arrived on the socket bound to `local` from
    /// `from` at `now`. Only Binding is served; anything else is
    /// counted and dropped (the driver should not pass it).
    pub fn handle_datagram(&mut self, now: Millis, local: SocketAddr, from: SocketAddr, d: &[u8]) {
        let Some(h) = peek(d) else {
            self.stats.malformed += 1;
            return;
        };
        if h.method != method::BINDING || h.class != Class::Request {
            self.stats.ignored += 1;
            return;
        }
        let msg = match stun::decode(d) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(%from, "malformed STUN request: {e}");
                self.stats.malformed += 1;
                return;
            }
        };
        self.stats.requests += 1;
        let key = SourceKey::of(from.ip());
        if !self.rate.allow(key, now) {
            self.stats.rate_limited += 1;
            if log_worthy(self.stats.rate_limited) {
                tracing::warn!(source = %key, count = self.stats.rate_limited, "STUN request dropped: source over its rate");
            }
            return;
        }
        let tid = *msg.transaction_id();

        // Comprehension-required attributes we do not know (RFC 8489 §7.3.1).
        let mut unknown: Vec<u16> = msg
            .attributes()
            .iter()
            .filter_map(|a| match a {
                StunAttribute::Unknown(u) if u.attribute_type().is_comprehension_required() => {
                    Some(u.attribute_type().as_u16())
                }
                _ => None,
            })
            .collect();
        let (change_ip, change_port) = msg
            .get::<ChangeRequest>()
            .and_then(|a| a.as_change_request().ok())
            .map(|c| {
                let f = c.flags();
                (
                    f.contains(ChangeRequestFlags::ChangeIp),
                    f.contains(ChangeRequestFlags::ChangePort),
                )
            })
            .unwrap_or((false, false));
        let src = if change_ip || change_port {
            let s = self.flipped(local, change_ip, change_port);
            if s.is_none() {
                // RFC 5780 §6.1: no alternate address, CHANGE-REQUEST is
                // an attribute we cannot honour.
                unknown.push(0x0003);
            }
            s
        } else {
            Some(local)
        };
        if !unknown.is_empty() {
            let mut b =
                StunMessageBuilder::new(stun_rs::methods::BINDING, MessageClass::ErrorResponse)
                    .with_transaction_id(tid);
            if let Ok(code) = stun_rs::ErrorCode::new(420, "Unknown Attribute") {
                b = b.with_attribute(ErrorCode::new(code));
            }
            b = b.with_attribute(UnknownAttributes::from(unknown.as_slice()));
            self.push(local, from, b);
            self.stats.errors += 1;
            return;
        }
        let src = src.unwrap_or(local);
        // RFC 5780 §7.3: RESPONSE-PORT sends the answer to another port of
        // the same address (no amplification: one answer, to the sender's IP).
        let dst = match msg
            .get::<ResponsePort>()
            .and_then(|a| a.as_response_port().ok())
        {
            Some(p) if p.as_u16() != 0 => SocketAddr::new(from.ip(), p.as_u16()),
            _ => from,
        };
        let mut b =
            StunMessageBuilder::new(stun_rs::methods::BINDING, MessageClass::SuccessResponse)
                .with_transaction_id(tid)
                .with_attribute(XorMappedAddress::from(from));
        if !src.ip().is_unspecified() {
            b = b.with_attribute(ResponseOrigin::from(src));
        }
        if let Some(other) = self.flipped(local, true, true) {
            b = b.with_attribute(OtherAddress::from(other));
        }
        if change_ip || change_port {
            self.stats.changed += 1;
        }
        self.push(src, dst, b);
        self.stats.responses += 1;
    }

    fn push(&mut self, src: SocketAddr, dst: SocketAddr, b: StunMessageBuilder) {
        let b = b.with_attribute(Fingerprint::default());
        match stun::encode(&b.build()) {
            Ok(bytes) => self.out.push_back(Transmit {
                src: if src == self.cfg.primary {
                    None
                } else {
                    Some(src)
                },
                dst,
                bytes,
            }),
            Err(e) => tracing::warn!("cannot encode a STUN response: {e}"),
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The server has no timers.
    pub fn poll_timeout(&self) -> u64 {
        u64::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::stun::{BindingResponse, binding_request, parse_binding_response};

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn server(alt: bool) -> StunServer {
        StunServer::new(StunServerConfig {
            primary: a("198.51.100.1:3478"),
            alt: alt.then(|| a("198.51.100.2:3479")),
        })
    }

    fn ask(s: &mut StunServer, local: &str, req: &[u8]) -> (Transmit, BindingResponse) {
        s.handle_datagram(Millis::ZERO, a(local), a("203.0.113.9:40000"), req);
        let t = s.poll_transmit().expect("an answer");
        assert!(s.poll_transmit().is_none());
        let r = parse_binding_response(&t.bytes).unwrap();
        (t, r)
    }

    #[test]
    fn binding_gives_the_reflexive_address() {
        let mut s = server(false);
        let (t, r) = ask(
            &mut s,
            "198.51.100.1:3478",
            &binding_request([1; 12], false, false),
        );
        assert_eq!(t.src, None);
        assert_eq!(t.dst, a("203.0.113.9:40000"));
        assert_eq!(r.transaction, [1; 12]);
        assert_eq!(r.mapped, Some(a("203.0.113.9:40000")));
        assert_eq!(r.other, None, "no second address, no OTHER-ADDRESS");
        assert_eq!(r.origin, Some(a("198.51.100.1:3478")));
        assert_eq!(r.error, None);
    }

    #[test]
    fn change_request_without_second_address_is_420() {
        let mut s = server(false);
        let (t, r) = ask(
            &mut s,
            "198.51.100.1:3478",
            &binding_request([2; 12], true, true),
        );
        assert_eq!(r.error, Some(420));
        assert_eq!(t.dst, a("203.0.113.9:40000"));
        let m = stun::decode(&t.bytes).unwrap();
        let u = m
            .get::<UnknownAttributes>()
            .unwrap()
            .as_unknown_attributes()
            .unwrap();
        assert_eq!(u.attributes(), &[0x0003]);
        assert_eq!(s.stats().errors, 1);
    }

    #[test]
    fn rfc5780_sources_from_every_socket() {
        let mut s = server(true);
        assert_eq!(
            s.extra_sockets(),
            vec![
                a("198.51.100.1:3479"),
                a("198.51.100.2:3478"),
                a("198.51.100.2:3479")
            ]
        );
        // (arrival socket, change ip, change port) -> answering socket
        let cases = [
            ("198.51.100.1:3478", false, false, "198.51.100.1:3478"),
            ("198.51.100.1:3478", true, true, "198.51.100.2:3479"),
            ("198.51.100.1:3478", false, true, "198.51.100.1:3479"),
            ("198.51.100.1:3478", true, false, "198.51.100.2:3478"),
            ("198.51.100.2:3479", true, true, "198.51.100.1:3478"),
            ("198.51.100.2:3478", false, true, "198.51.100.2:3479"),
            ("198.51.100.1:3479", true, false, "198.51.100.2:3479"),
        ];
        for (i, (local, ci, cp, want)) in cases.into_iter().enumerate() {
            let (t, r) = ask(&mut s, local, &binding_request([i as u8; 12], ci, cp));
            let want = a(want);
            let expect_src = if want == a("198.51.100.1:3478") {
                None
            } else {
                Some(want)
            };
            assert_eq!(t.src, expect_src, "case {i}");
            assert_eq!(r.origin, Some(want), "case {i}");
            assert_eq!(r.mapped, Some(a("203.0.113.9:40000")));
            // OTHER-ADDRESS differs from the arrival socket in both.
            let other = r.other.unwrap();
            let l = a(local);
            assert_ne!(other.ip(), l.ip());
            assert_ne!(other.port(), l.port());
        }
        assert_eq!(s.stats().changed, 6);
    }

    #[test]
    fn non_binding_and_garbage_are_dropped_and_counted() {
        let mut s = server(true);
        let mut alloc = binding_request([3; 12], false, false);
        alloc[1] = 0x03; // Allocate request
        s.handle_datagram(
            Millis::ZERO,
            a("198.51.100.1:3478"),
            a("203.0.113.9:1"),
            &alloc,
        );
        s.handle_datagram(
            Millis::ZERO,
            a("198.51.100.1:3478"),
            a("203.0.113.9:1"),
            &[0u8; 7],
        );
        let mut ind = binding_request([3; 12], false, false);
        ind[1] = 0x11; // Binding indication
        s.handle_datagram(
            Millis::ZERO,
            a("198.51.100.1:3478"),
            a("203.0.113.9:1"),
            &ind,
        );
        assert!(s.poll_transmit().is_none());
        assert_eq!(s.stats().ignored, 2);
        assert_eq!(s.stats().malformed, 1);
    }

    #[test]
    fn unknown_comprehension_required_attribute_is_420() {
        let mut s = server(true);
        let mut req = binding_request([4; 12], false, false);
        // Append attribute 0x7777 (comprehension-required), 4 bytes.
        req.extend_from_slice(&[0x77, 0x77, 0, 4, 1, 2, 3, 4]);
        let len = (req.len() - 20) as u16;
        req[2..4].copy_from_slice(&len.to_be_bytes());
        let (_, r) = ask(&mut s, "198.51.100.1:3478", &req);
        assert_eq!(r.error, Some(420));
    }

    /// Issue 14.6: answers to one source are rate-limited, and no answer
    /// is much larger than the smallest request that provokes it.
    #[test]
    fn answers_are_rate_limited_per_source_and_small() {
        let mut s = server(true);
        let req = binding_request([5; 12], false, false);
        let victim = a("203.0.113.50:9");
        let mut answered = 0;
        let mut bytes = 0;
        // 1000 spoofed requests in one second, from ports of one host.
        for i in 0..1000u64 {
            let from = SocketAddr::new(victim.ip(), 1000 + i as u16);
            s.handle_datagram(Millis(i), a("198.51.100.1:3478"), from, &req);
            while let Some(t) = s.poll_transmit() {
                answered += 1;
                bytes += t.bytes.len();
            }
        }
        // In 999 ms the bucket refills 4.995 tokens: four more answers.
        assert_eq!(answered, 20 + 4, "burst, then five a second");
        assert_eq!(s.stats().rate_limited, 1000 - 24);
        let ratio = bytes as f64 / (answered * req.len()) as f64;
        println!(
            "STUN: {} byte request, {} byte answer ({ratio:.2}x)",
            req.len(),
            bytes / answered
        );
        assert!(
            ratio <= 2.6,
            "amplification {ratio:.2}x ({} byte request)",
            req.len()
        );
        // Another source is not affected.
        s.handle_datagram(
            Millis(1000),
            a("198.51.100.1:3478"),
            a("203.0.113.51:9"),
            &req,
        );
        assert!(s.poll_transmit().is_some());
    }
}
