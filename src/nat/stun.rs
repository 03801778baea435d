//! The STUN wire layer over the `stun-rs` codec: a borrowing header check
//! ([`peek`]) that the drivers use to route a datagram by method without
//! decoding it, full decoding and encoding, and the Binding messages the
//! NAT tests exchange. Decoding never panics; anything malformed is an
//! error the caller counts and drops.

use super::NatError;
use std::net::SocketAddr;
use stun_rs::attributes::discovery::{
    ChangeRequest, ChangeRequestFlags, OtherAddress, ResponseOrigin,
};
use stun_rs::attributes::stun::{ErrorCode, MappedAddress, Software, XorMappedAddress};
use stun_rs::{
    MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, StunMessage, StunMessageBuilder,
    TransactionId,
};

/// STUN methods natter routes on (RFC 8489, RFC 8656).
pub mod method {
    pub const BINDING: u16 = 0x001;
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
    pub const SEND: u16 = 0x006;
    pub const DATA: u16 = 0x007;
    pub const CREATE_PERMISSION: u16 = 0x008;
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// Header length of every STUN message.
pub const HEADER_LEN: usize = 20;
/// Largest message we build or accept (fits any path MTU we care about).
pub const MAX_MESSAGE: usize = 1280;

const MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// What our messages say in SOFTWARE.
pub const SOFTWARE: &str = concat!("natter ", env!("CARGO_PKG_VERSION"));

/// The message class (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// A STUN header, read without decoding attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub class: Class,
    pub method: u16,
    /// Attribute bytes after the header.
    pub length: u16,
    pub transaction: [u8; 12],
}

/// The header of a STUN message that fills `d` exactly (a datagram), or
/// `None`: top bits not zero, no magic cookie, or a length that disagrees
/// with the datagram.
pub fn peek(d: &[u8]) -> Option<Header> {
    if d.len() < HEADER_LEN || d[0] & 0xC0 != 0 || d[4..8] != MAGIC {
        return None;
    }
    let t = u16::from_be_bytes([d[0], d[1]]);
    let length = u16::from_be_bytes([d[2], d[3]]);
    if !length.is_multiple_of(4) || HEADER_LEN + length as usize != d.len() {
        return None;
    }
    let class = match ((t >> 7) & 0b10) | ((t >> 4) & 0b01) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::Success,
        _ => Class::Error,
    };
    let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    let mut transaction = [0u8; 12];
    transaction.copy_from_slice(&d[8..20]);
    Some(Header {
        class,
        method,
        length,
        transaction,
    })
}

/// Decode a whole message with `stun-rs` (attributes included).
pub fn decode(d: &[u8]) -> Result<StunMessage, NatError> {
    if peek(d).is_none() {
        return Err(NatError::NotStun("bad header"));
    }
    let decoder = MessageDecoderBuilder::default().build();
    let (msg, _) = decoder
        .decode(d)
        .map_err(|e| NatError::Malformed(e.to_string()))?;
    Ok(msg)
}

/// Encode a message built with `stun-rs`.
pub fn encode(msg: &StunMessage) -> Result<Vec<u8>, NatError> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, msg)
        .map_err(|e| NatError::Encode(e.to_string()))?;
    buf.truncate(n);
    Ok(buf)
}

/// A Binding request; `change_ip`/`change_port` add CHANGE-REQUEST
/// (RFC 5780 §7.2) when either is set.
pub fn binding_request(transaction: [u8; 12], change_ip: bool, change_port: bool) -> Vec<u8> {
    let mut b = StunMessageBuilder::new(stun_rs::methods::BINDING, MessageClass::Request)
        .with_transaction_id(TransactionId::from(transaction));
    use ChangeRequestFlags::{ChangeIp, ChangePort};
    let flags = match (change_ip, change_port) {
        (true, true) => Some(ChangeIp | ChangePort),
        (true, false) => Some(ChangeIp.into()),
        (false, true) => Some(ChangePort.into()),
        (false, false) => None,
    };
    if flags.is_some() {
        b = b.with_attribute(ChangeRequest::new(flags));
    }
    if let Ok(s) = Software::new(SOFTWARE) {
        b = b.with_attribute(s);
    }
    // A request of three small attributes always fits MAX_MESSAGE.
    encode(&b.build()).unwrap_or_default()
}

/// What a Binding response carries that the NAT tests use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingResponse {
    pub transaction: [u8; 12],
    /// XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS (old servers).
    pub mapped: Option<SocketAddr>,
    pub other: Option<SocketAddr>,
    pub origin: Option<SocketAddr>,
    /// The ERROR-CODE of an error response.
    pub error: Option<u16>,
}

/// Parse a Binding success or error response.
pub fn parse_binding_response(d: &[u8]) -> Result<BindingResponse, NatError> {
    let h = peek(d).ok_or(NatError::NotStun("bad header"))?;
    if h.method != method::BINDING || !matches!(h.class, Class::Success | Class::Error) {
        return Err(NatError::NotStun("not a Binding response"));
    }
    let msg = decode(d)?;
    let addr_of =
        |a: Option<&stun_rs::StunAttribute>,
         f: fn(&stun_rs::StunAttribute) -> Option<SocketAddr>| { a.and_then(f) };
    let xor = addr_of(msg.get::<XorMappedAddress>(), |a| {
        a.as_xor_mapped_address().ok().map(|x| *x.socket_address())
    });
    let plain = addr_of(msg.get::<MappedAddress>(), |a| {
        a.as_mapped_address().ok().map(|x| *x.socket_address())
    });
    let other = addr_of(msg.get::<OtherAddress>(), |a| {
        a.as_other_address().ok().map(|x| *x.socket_address())
    });
    let origin = addr_of(msg.get::<ResponseOrigin>(), |a| {
        a.as_response_origin().ok().map(|x| *x.socket_address())
    });
    let error = msg
        .get::<ErrorCode>()
        .and_then(|a| a.as_error_code().ok())
        .map(|e| e.error_code().error_code());
    if h.class == Class::Error && error.is_none() {
        return Err(NatError::Malformed(
            "error response without ERROR-CODE".into(),
        ));
    }
    Ok(BindingResponse {
        transaction: h.transaction,
        mapped: xor.or(plain),
        other,
        origin,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_reads_class_and_method() {
        let r = binding_request([7; 12], true, false);
        let h = peek(&r).unwrap();
        assert_eq!(h.class, Class::Request);
        assert_eq!(h.method, method::BINDING);
        assert_eq!(h.transaction, [7; 12]);
        assert_eq!(h.length as usize + HEADER_LEN, r.len());
        // Allocate error response: type 0x0113.
        let mut d = r.clone();
        d[0] = 0x01;
        d[1] = 0x13;
        let h = peek(&d).unwrap();
        assert_eq!((h.class, h.method), (Class::Error, method::ALLOCATE));
        // ChannelBind success: 0x0109.
        d[1] = 0x09;
        assert_eq!(peek(&d).unwrap().class, Class::Success);
        assert_eq!(peek(&d).unwrap().method, method::CHANNEL_BIND);
        // Data indication: 0x0017.
        d[0] = 0;
        d[1] = 0x17;
        let h = peek(&d).unwrap();
        assert_eq!((h.class, h.method), (Class::Indication, method::DATA));
    }

    #[test]
    fn peek_rejects_bad_lengths_and_cookies() {
        let r = binding_request([1; 12], false, false);
        assert!(peek(&r[..r.len() - 1]).is_none());
        let mut long = r.clone();
        long.extend_from_slice(&[0; 4]);
        assert!(peek(&long).is_none());
        let mut bad = r.clone();
        bad[5] ^= 1;
        assert!(peek(&bad).is_none());
        assert!(peek(&[]).is_none());
    }

    #[test]
    fn change_request_round_trips() {
        let r = binding_request([2; 12], true, true);
        let m = decode(&r).unwrap();
        let f = m
            .get::<ChangeRequest>()
            .unwrap()
            .as_change_request()
            .unwrap()
            .flags();
        assert!(f.contains(ChangeRequestFlags::ChangeIp));
        assert!(f.contains(ChangeRequestFlags::ChangePort));
        let plain = decode(&binding_request([2; 12], false, false)).unwrap();
        assert!(plain.get::<ChangeRequest>().is_none());
    }
}
