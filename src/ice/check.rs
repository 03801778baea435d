//! Connectivity checks on the wire: STUN Binding requests and responses
//! with the ICE attributes (RFC 8445 7.1), encoded and decoded with the
//! `stun-rs` codec. Short-term credentials: USERNAME is
//! `receiver-ufrag:sender-ufrag`, MESSAGE-INTEGRITY is keyed with the
//! receiver's password (responses: the responder's, i.e. the password the
//! request was checked with), and FINGERPRINT closes every message.
//!
//! [`peek`] reads the routing facts (class, transaction, USERNAME) without
//! any key, so the driver can find the agent a message belongs to;
//! [`open`] then verifies integrity with that agent's password.

use super::IceError;
use crate::wire::stun;
use std::net::SocketAddr;
use stun_rs::attributes::ice::{IceControlled, IceControlling, Priority, UseCandidate};
use stun_rs::attributes::stun::{
    ErrorCode, Fingerprint, MessageIntegrity, UserName, XorMappedAddress,
};
use stun_rs::methods::BINDING;
use stun_rs::{
    DecoderContextBuilder, HMACKey, MessageClass, MessageDecoderBuilder, MessageEncoderBuilder,
    StunMessage, StunMessageBuilder, TransactionId,
};

/// STUN Binding error: the sender must switch its ICE role.
pub const ROLE_CONFLICT: u16 = 487;
/// Largest check we build; real ones are about 100 bytes.
const MAX_CHECK: usize = 512;

/// Our role, with the tie-breaker sent in ICE-CONTROLLING/CONTROLLED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleAttr {
    Controlling(u64),
    Controlled(u64),
}

/// A Binding request as a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub txid: [u8; 12],
    /// `receiver-ufrag:sender-ufrag`.
    pub username: String,
    pub priority: u32,
    pub use_candidate: bool,
    pub role: Option<RoleAttr>,
}

/// A decoded, verified check message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Request(Request),
    Success { txid: [u8; 12], mapped: SocketAddr },
    Error { txid: [u8; 12], code: u16 },
}

/// What a Binding message is, read without a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peek {
    pub class: MessageClass,
    pub txid: [u8; 12],
    pub username: Option<String>,
}

fn encode(msg: &StunMessage) -> Vec<u8> {
    let mut buf = [0u8; MAX_CHECK];
    let n = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, msg)
        // Only fixed-size attributes and a bounded USERNAME: cannot overflow.
        .unwrap_or(0);
    buf[..n].to_vec()
}

fn key(pwd: &str) -> Result<HMACKey, IceError> {
    HMACKey::new_short_term(pwd).map_err(|_| IceError::Credentials)
}

/// A Binding request keyed with the receiver's password.
pub fn encode_request(req: &Request, remote_pwd: &str) -> Result<Vec<u8>, IceError> {
    let username = UserName::new(&req.username).map_err(|_| IceError::Credentials)?;
    let mut b = StunMessageBuilder::new(BINDING, MessageClass::Request)
        .with_transaction_id(TransactionId::from(req.txid))
        .with_attribute(username)
        .with_attribute(Priority::from(req.priority));
    match req.role {
        Some(RoleAttr::Controlling(t)) => b = b.with_attribute(IceControlling::from(t)),
        Some(RoleAttr::Controlled(t)) => b = b.with_attribute(IceControlled::from(t)),
        None => {}
    }
    if req.use_candidate {
        b = b.with_attribute(UseCandidate::default());
    }
    let msg = b
        .with_attribute(MessageIntegrity::new(key(remote_pwd)?))
        .with_attribute(Fingerprint::default())
        .build();
    Ok(encode(&msg))
}

/// A success response telling the requester where it came from.
pub fn encode_success(
    txid: [u8; 12],
    mapped: SocketAddr,
    local_pwd: &str,
) -> Result<Vec<u8>, IceError> {
    let msg = StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
        .with_transaction_id(TransactionId::from(txid))
        .with_attribute(XorMappedAddress::from(mapped))
        .with_attribute(MessageIntegrity::new(key(local_pwd)?))
        .with_attribute(Fingerprint::default())
        .build();
    Ok(encode(&msg))
}

/// An error response (e.g. [`ROLE_CONFLICT`]).
pub fn encode_error(txid: [u8; 12], code: u16, local_pwd: &str) -> Result<Vec<u8>, IceError> {
    let reason = if code == ROLE_CONFLICT {
        "Role Conflict"
    } else {
        "Bad Request"
    };
    let ec = stun_rs::ErrorCode::new(code, reason).map_err(|e| IceError::Stun(e.to_string()))?;
    let msg = StunMessageBuilder::new(BINDING, MessageClass::ErrorResponse)
        .with_transaction_id(TransactionId::from(txid))
        .with_attribute(ErrorCode::from(ec))
        .with_attribute(MessageIntegrity::new(key(local_pwd)?))
        .with_attribute(Fingerprint::default())
        .build();
    Ok(encode(&msg))
}

fn txid_of(msg: &StunMessage) -> [u8; 12] {
    let mut t = [0u8; 12];
    t.copy_from_slice(msg.transaction_id().as_bytes());
    t
}

/// Class, transaction and USERNAME of a Binding message, unverified.
/// `None` for anything that is not a well-formed STUN Binding message.
pub fn peek(bytes: &[u8]) -> Option<Peek> {
    // The header first: cheap, and only Binding is ours.
    let h = stun::peek(bytes).filter(|h| h.method == stun::method::BINDING)?;
    let (msg, _) = MessageDecoderBuilder::default()
        .build()
        .decode(bytes)
        .ok()?;
    let username = msg
        .get::<UserName>()
        .and_then(|a| a.as_user_name().ok())
        .map(|u| u.as_str().to_string());
    Some(Peek {
        class: msg.class(),
        txid: h.transaction,
        username,
    })
}

/// Decode a Binding message and verify MESSAGE-INTEGRITY with `pwd` and
/// FINGERPRINT; both must be present.
pub fn open(bytes: &[u8], pwd: &str) -> Result<Check, IceError> {
    let ctx = DecoderContextBuilder::default()
        .with_key(key(pwd)?)
        .with_validation()
        .build();
    let (msg, _) = MessageDecoderBuilder::default()
        .with_context(ctx)
        .build()
        .decode(bytes)
        .map_err(|e| {
            if e.to_string().contains("validation") {
                IceError::Integrity
            } else {
                IceError::Stun(e.to_string())
            }
        })?;
    if msg.method() != BINDING {
        return Err(IceError::Stun("not a Binding message".into()));
    }
    if msg.get::<MessageIntegrity>().is_none() {
        return Err(IceError::Missing("MESSAGE-INTEGRITY"));
    }
    if msg.get::<Fingerprint>().is_none() {
        return Err(IceError::Missing("FINGERPRINT"));
    }
    let txid = txid_of(&msg);
    match msg.class() {
        MessageClass::Request => {
            let username = msg
                .get::<UserName>()
                .and_then(|a| a.as_user_name().ok())
                .ok_or(IceError::Missing("USERNAME"))?
                .as_str()
                .to_string();
            let priority = msg
                .get::<Priority>()
                .and_then(|a| a.as_priority().ok())
                .ok_or(IceError::Missing("PRIORITY"))?
                .as_u32();
            let role = if let Some(a) = msg.get::<IceControlling>() {
                a.as_ice_controlling()
                    .ok()
                    .map(|v| RoleAttr::Controlling(v.as_u64()))
            } else if let Some(a) = msg.get::<IceControlled>() {
                a.as_ice_controlled()
                    .ok()
                    .map(|v| RoleAttr::Controlled(v.as_u64()))
            } else {
                None
            };
            Ok(Check::Request(Request {
                txid,
                username,
                priority,
                use_candidate: msg.get::<UseCandidate>().is_some(),
                role,
            }))
        }
        MessageClass::SuccessResponse => {
            let mapped = *msg
                .get::<XorMappedAddress>()
                .and_then(|a| a.as_xor_mapped_address().ok())
                .ok_or(IceError::Missing("XOR-MAPPED-ADDRESS"))?
                .socket_address();
            Ok(Check::Success { txid, mapped })
        }
        MessageClass::ErrorResponse => {
            let code = msg
                .get::<ErrorCode>()
                .and_then(|a| a.as_error_code().ok())
                .ok_or(IceError::Missing("ERROR-CODE"))?
                .error_code()
                .error_code();
            Ok(Check::Error { txid, code })
        }
        MessageClass::Indication => Err(IceError::Stun("indication".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> Request {
        Request {
            txid: [7; 12],
            username: "abcd:efgh".into(),
            priority: 0x6E00_01FF,
            use_candidate: true,
            role: Some(RoleAttr::Controlling(42)),
        }
    }

    /// The class of a Binding message, as the socket's demultiplexer files it.
    fn class_of(b: &[u8]) -> stun::Class {
        match stun::classify(b) {
            stun::Datagram::Stun(h) if h.method == stun::method::BINDING => h.class,
            k => panic!("not a Binding message: {k:?}"),
        }
    }

    #[test]
    fn request_round_trip_and_integrity() {
        let pwd = "0123456789abcdefghijkl";
        let b = encode_request(&req(), pwd).unwrap();
        assert_eq!(class_of(&b), stun::Class::Request);
        let p = peek(&b).unwrap();
        assert_eq!(p.class, MessageClass::Request);
        assert_eq!(p.username.as_deref(), Some("abcd:efgh"));
        assert_eq!(open(&b, pwd).unwrap(), Check::Request(req()));
        // Wrong password, and a flipped bit under the integrity.
        assert!(open(&b, "another-password-xxxxxx").is_err());
        let mut bad = b.clone();
        bad[30] ^= 1;
        assert!(open(&bad, pwd).is_err());
    }

    #[test]
    fn responses_round_trip() {
        let pwd = "0123456789abcdefghijkl";
        let a: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let b = encode_success([1; 12], a, pwd).unwrap();
        assert_eq!(class_of(&b), stun::Class::Success);
        assert_eq!(
            open(&b, pwd).unwrap(),
            Check::Success {
                txid: [1; 12],
                mapped: a
            }
        );
        let e = encode_error([2; 12], ROLE_CONFLICT, pwd).unwrap();
        assert_eq!(class_of(&e), stun::Class::Error);
        assert_eq!(
            open(&e, pwd).unwrap(),
            Check::Error {
                txid: [2; 12],
                code: ROLE_CONFLICT
            }
        );
    }

    #[test]
    fn missing_integrity_is_refused() {
        let msg = StunMessageBuilder::new(BINDING, MessageClass::Request)
            .with_attribute(UserName::new("a:b").unwrap())
            .with_attribute(Priority::from(1))
            .build();
        let b = encode(&msg);
        assert_eq!(
            open(&b, "0123456789abcdefghijkl"),
            Err(IceError::Missing("MESSAGE-INTEGRITY"))
        );
    }
}
