//! STUN messages for NAT detection over the `stun-rs` codec: full
//! decoding and encoding, and the Binding messages the NAT tests exchange.
//! The header check that routes a datagram by method without decoding it
//! is the base's ([`crate::wire::stun::peek`]). Decoding never panics;
//! anything malformed is an error the caller counts and drops.

use super::NatError;
use crate::wire::stun::{Class, method, peek};
use std::net::SocketAddr;
use stun_rs::attributes::discovery::{
    ChangeRequest, ChangeRequestFlags, OtherAddress, ResponseOrigin,
};
use stun_rs::attributes::stun::{ErrorCode, MappedAddress, Software, XorMappedAddress};
use stun_rs::{
    MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, StunMessage, StunMessageBuilder,
    TransactionId,
};

/// Largest message we build or accept (fits any path MTU we care about).
pub const MAX_MESSAGE: usize = 1280;

/// What our messages say in SOFTWARE.
pub const SOFTWARE: &str = concat!("natter ", env!("CARGO_PKG_VERSION"));

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
    fn binding_requests_classify_as_binding() {
        use crate::wire::stun::{Datagram, HEADER_LEN, classify};
        for (ip, port) in [(false, false), (true, false), (false, true), (true, true)] {
            let r = binding_request([7; 12], ip, port);
            let Datagram::Stun(h) = classify(&r) else {
                panic!("not STUN: {r:?}");
            };
            assert_eq!((h.class, h.method), (Class::Request, method::BINDING));
            assert_eq!(h.transaction, [7; 12]);
            assert_eq!(h.length as usize + HEADER_LEN, r.len());
        }
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
