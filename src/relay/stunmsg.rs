//! STUN message helpers shared by the TURN server and client: encoding and
//! (verified) decoding through the `stun-rs` codec, long-term keys, and
//! hand-written encoders for the two messages on the data path (Send and
//! Data indications), which carry no integrity and are sent per packet.

use crate::wire::stun::{Class, HEADER_LEN, Header, MAGIC_COOKIE, peek};
use stun_rs::attributes::stun::{
    ErrorCode, MessageIntegrity, MessageIntegritySha256, Nonce, Realm, UserName,
};
use stun_rs::{
    Algorithm, AlgorithmId, DecoderContextBuilder, HMACKey, MessageDecoderBuilder,
    MessageEncoderBuilder, StunAttribute, StunMessage, TransactionId,
};

pub(crate) const ATTR_XOR_PEER_ADDRESS: u16 = 0x0012;
pub(crate) const ATTR_DATA: u16 = 0x0013;

/// Which integrity attribute a request carried; responses use the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    None,
    Sha1,
    Sha256,
}

pub(crate) fn integrity_of(m: &StunMessage) -> Integrity {
    if m.get::<MessageIntegritySha256>().is_some() {
        Integrity::Sha256
    } else if m.get::<MessageIntegrity>().is_some() {
        Integrity::Sha1
    } else {
        Integrity::None
    }
}

/// Encode `m`; `extra` is room for a large DATA attribute.
pub(crate) fn encode(m: &StunMessage, extra: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 600 + extra];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, m)
        .ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Decode without checking integrity.
pub(crate) fn decode(b: &[u8]) -> Option<StunMessage> {
    MessageDecoderBuilder::default()
        .build()
        .decode(b)
        .ok()
        .map(|(m, _)| m)
}

/// Decode and check MESSAGE-INTEGRITY(-SHA256) with `key`; `None` when the
/// message is malformed or its integrity does not match.
pub(crate) fn decode_verified(b: &[u8], key: &HMACKey) -> Option<StunMessage> {
    let ctx = DecoderContextBuilder::default()
        .with_key(key.clone())
        .with_validation()
        .build();
    MessageDecoderBuilder::default()
        .with_context(ctx)
        .build()
        .decode(b)
        .ok()
        .map(|(m, _)| m)
}

/// The long-term key MD5(username:realm:password) (RFC 8489 §9.2.2).
pub(crate) fn long_term_key(username: &str, realm: &str, password: &str) -> Option<HMACKey> {
    HMACKey::new_long_term(username, realm, password, Algorithm::from(AlgorithmId::MD5)).ok()
}

pub(crate) fn integrity_attr(kind: Integrity, key: &HMACKey) -> Option<StunAttribute> {
    match kind {
        Integrity::None => None,
        Integrity::Sha1 => Some(MessageIntegrity::new(key.clone()).into()),
        Integrity::Sha256 => Some(MessageIntegritySha256::new(key.clone()).into()),
    }
}

pub(crate) fn error_code(code: u16, reason: &str) -> Option<ErrorCode> {
    stun_rs::ErrorCode::new(code, reason)
        .ok()
        .map(ErrorCode::from)
}

pub(crate) fn username_of(m: &StunMessage) -> Option<&str> {
    m.get::<UserName>()?.as_user_name().ok().map(|u| u.as_str())
}

pub(crate) fn realm_of(m: &StunMessage) -> Option<&str> {
    m.get::<Realm>()?.as_realm().ok().map(|u| u.as_str())
}

pub(crate) fn nonce_of(m: &StunMessage) -> Option<&str> {
    m.get::<Nonce>()?.as_nonce().ok().map(|u| u.as_str())
}

/// The error code and reason of an error response.
pub(crate) fn error_of(m: &StunMessage) -> (u16, String) {
    m.get::<ErrorCode>()
        .and_then(|a| a.as_error_code().ok())
        .map(|e| {
            (
                e.error_code().error_code(),
                e.error_code().reason().to_owned(),
            )
        })
        .unwrap_or((0, String::from("no ERROR-CODE")))
}

fn put_xor_addr(v: &mut Vec<u8>, attr: u16, a: std::net::SocketAddr, tid: &[u8; 12]) {
    let port = a.port() ^ 0x2112;
    match a.ip() {
        std::net::IpAddr::V4(ip) => {
            v.extend_from_slice(&attr.to_be_bytes());
            v.extend_from_slice(&8u16.to_be_bytes());
            v.extend_from_slice(&[0, 1]);
            v.extend_from_slice(&port.to_be_bytes());
            let o = ip.octets();
            for i in 0..4 {
                v.push(o[i] ^ MAGIC_COOKIE[i]);
            }
        }
        std::net::IpAddr::V6(ip) => {
            v.extend_from_slice(&attr.to_be_bytes());
            v.extend_from_slice(&20u16.to_be_bytes());
            v.extend_from_slice(&[0, 2]);
            v.extend_from_slice(&port.to_be_bytes());
            let o = ip.octets();
            for i in 0..16 {
                let k = if i < 4 { MAGIC_COOKIE[i] } else { tid[i - 4] };
                v.push(o[i] ^ k);
            }
        }
    }
}

/// A Send (client to server) or Data (server to client) indication with
/// XOR-PEER-ADDRESS and DATA, encoded by hand: it is on the data path.
pub(crate) fn data_indication(
    method: u16,
    tid: &[u8; 12],
    peer: std::net::SocketAddr,
    data: &[u8],
) -> Vec<u8> {
    let data = &data[..data.len().min(65_000)];
    let padded = (data.len() + 3) & !3;
    let mut v = Vec::with_capacity(HEADER_LEN + 24 + 4 + padded);
    let header = Header {
        class: Class::Indication,
        method,
        length: 0,
        transaction: *tid,
    };
    v.extend_from_slice(&header.encode());
    put_xor_addr(&mut v, ATTR_XOR_PEER_ADDRESS, peer, tid);
    v.extend_from_slice(&ATTR_DATA.to_be_bytes());
    v.extend_from_slice(&(data.len() as u16).to_be_bytes());
    v.extend_from_slice(data);
    v.resize(v.len() + padded - data.len(), 0);
    let len = (v.len() - HEADER_LEN) as u16;
    v[2..4].copy_from_slice(&len.to_be_bytes());
    v
}

/// XOR-PEER-ADDRESS and DATA of a Send or Data indication, read without
/// copying: these arrive once per relayed packet. `None` when either is
/// missing or the message is malformed.
pub fn parse_data_indication(b: &[u8]) -> Option<(std::net::SocketAddr, &[u8])> {
    let h = peek(b)?;
    let tid: &[u8] = &h.transaction;
    let mut peer = None;
    let mut data = None;
    let mut at = HEADER_LEN;
    while at + 4 <= b.len() {
        let t = u16::from_be_bytes([b[at], b[at + 1]]);
        let l = u16::from_be_bytes([b[at + 2], b[at + 3]]) as usize;
        let v = b.get(at + 4..at + 4 + l)?;
        match t {
            ATTR_XOR_PEER_ADDRESS if peer.is_none() => peer = Some(read_xor_addr(v, tid)?),
            ATTR_DATA if data.is_none() => data = Some(v),
            _ => {}
        }
        at += 4 + ((l + 3) & !3);
    }
    Some((peer?, data?))
}

fn read_xor_addr(v: &[u8], tid: &[u8]) -> Option<std::net::SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ 0x2112;
    match (v[1], v.len()) {
        (1, 8) => {
            let mut o = [0u8; 4];
            for i in 0..4 {
                o[i] = v[4 + i] ^ MAGIC_COOKIE[i];
            }
            Some(std::net::SocketAddr::from((o, port)))
        }
        (2, 20) => {
            let mut o = [0u8; 16];
            for i in 0..16 {
                let k = if i < 4 { MAGIC_COOKIE[i] } else { tid[i - 4] };
                o[i] = v[4 + i] ^ k;
            }
            Some(std::net::SocketAddr::from((o, port)))
        }
        _ => None,
    }
}

pub(crate) fn tid(b: [u8; 12]) -> TransactionId {
    TransactionId::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::stun::method;
    use stun_rs::attributes::turn::{Data, XorPeerAddress};

    #[test]
    fn hand_encoded_indications_decode_with_stun_rs() {
        for peer in ["192.0.2.7:9000", "[2001:db8::5]:77"] {
            let peer: std::net::SocketAddr = peer.parse().unwrap();
            for len in [0usize, 1, 3, 4, 100] {
                let data: Vec<u8> = (0..len as u8).collect();
                let b = data_indication(method::DATA, &[9; 12], peer, &data);
                let m = decode(&b).expect("decodes");
                assert_eq!(m.method(), stun_rs::methods::DATA);
                assert_eq!(m.class(), stun_rs::MessageClass::Indication);
                let p = m
                    .get::<XorPeerAddress>()
                    .unwrap()
                    .as_xor_peer_address()
                    .unwrap();
                assert_eq!(*p.socket_address(), peer);
                let d = m.get::<Data>().unwrap().as_data().unwrap();
                assert_eq!(d.as_bytes(), &data[..]);
                let s = data_indication(method::SEND, &[1; 12], peer, &data);
                assert_eq!(decode(&s).unwrap().method(), stun_rs::methods::SEND);
                assert_eq!(parse_data_indication(&s), Some((peer, &data[..])));
                for cut in 0..s.len() {
                    assert_eq!(parse_data_indication(&s[..cut]), None);
                }
            }
        }
    }
}
