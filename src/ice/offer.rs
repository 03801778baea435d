//! The candidate exchange: what one side tells the other before checks
//! start (an offer from the caller, an answer from the callee; same
//! layout). It travels inside a sealed envelope through the supernodes,
//! so it is authenticated there; the peer link's certificate check after
//! ICE is the second line.
//!
//! Layout: `version u8 = 1 | session u64 | ufrag str8 | pwd str8 |
//! mapping u8 | n u8 | n * (kind u8 | priority u32 | addr)`, addresses as
//! the overlay writes them.

use super::{Candidate, CandidateKind, IceError};
use crate::overlay::record::{read_addr, write_addr};
use crate::wire::{Reader, WireError, Writer};

const VERSION: u8 = 1;
/// Envelope kinds (`overlay::envelope::kind::ICE_FIRST` onwards) that carry
/// an offer and an answer through the supernodes.
pub const ENVELOPE_OFFER: u8 = crate::overlay::envelope::kind::ICE_FIRST;
pub const ENVELOPE_ANSWER: u8 = crate::overlay::envelope::kind::ICE_FIRST + 1;
/// Candidates one offer may carry.
pub const MAX_CANDIDATES: usize = 16;

/// What the sender knows of its NAT's mapping (RFC 4787), from NAT
/// detection or from the ports different supernodes observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MappingHint {
    Unknown,
    EndpointIndependent,
    /// Address-dependent or address-and-port-dependent: a new port per
    /// destination, so the peer should try port prediction.
    DestinationDependent,
    /// No UDP at all but to our relay.
    Blocked,
}

impl MappingHint {
    fn code(self) -> u8 {
        match self {
            MappingHint::Unknown => 0,
            MappingHint::EndpointIndependent => 1,
            MappingHint::DestinationDependent => 2,
            MappingHint::Blocked => 3,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => MappingHint::Unknown,
            1 => MappingHint::EndpointIndependent,
            2 => MappingHint::DestinationDependent,
            3 => MappingHint::Blocked,
            _ => return None,
        })
    }
}

/// One side's ICE parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceOffer {
    /// Chosen by the caller; the answer repeats it.
    pub session: u64,
    pub ufrag: String,
    pub pwd: String,
    pub mapping: MappingHint,
    /// In the order observed (server-reflexive ports in the order the
    /// mappings were made, which port prediction relies on).
    pub candidates: Vec<Candidate>,
}

/// RFC 8445 ice-chars.
fn ice_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// ufrag 4..=32 and password 22..=64 ice-chars (RFC 8839 5.4).
pub fn valid_credentials(ufrag: &str, pwd: &str) -> bool {
    (4..=32).contains(&ufrag.len())
        && (22..=64).contains(&pwd.len())
        && ice_chars(ufrag)
        && ice_chars(pwd)
}

impl IceOffer {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION)
            .u64(self.session)
            .bytes8(self.ufrag.as_bytes())
            .bytes8(self.pwd.as_bytes())
            .u8(self.mapping.code());
        let cands: Vec<&Candidate> = self
            .candidates
            .iter()
            .filter(|c| sendable(c.kind))
            .take(MAX_CANDIDATES)
            .collect();
        w.u8(cands.len() as u8);
        for c in cands {
            w.u8(c.kind.code()).u32(c.priority);
            write_addr(&mut w, &c.addr);
        }
        w.into_vec()
    }

    pub fn decode(b: &[u8]) -> Result<Self, IceError> {
        let mut r = Reader::new(b);
        let v = r.u8()?;
        if v != VERSION {
            return Err(WireError::UnknownVersion { got: v }.into());
        }
        let session = r.u64()?;
        let ufrag = r.str8("ufrag")?.to_string();
        let pwd = r.str8("pwd")?.to_string();
        if !valid_credentials(&ufrag, &pwd) {
            return Err(IceError::Credentials);
        }
        let m = r.u8()?;
        let mapping = MappingHint::from_code(m).ok_or(WireError::UnknownType {
            what: "mapping hint",
            got: m,
        })?;
        let n = r.u8()? as usize;
        if n > MAX_CANDIDATES {
            return Err(WireError::Invalid {
                field: "candidate count",
            }
            .into());
        }
        let mut candidates = Vec::with_capacity(n);
        for _ in 0..n {
            let k = r.u8()?;
            let kind = CandidateKind::from_code(k).filter(|k| sendable(*k)).ok_or(
                WireError::UnknownType {
                    what: "candidate kind",
                    got: k,
                },
            )?;
            let priority = r.u32()?;
            let addr = read_addr(&mut r)?;
            candidates.push(Candidate {
                kind,
                addr,
                priority,
            });
        }
        r.finish()?;
        Ok(IceOffer {
            session,
            ufrag,
            pwd,
            mapping,
            candidates,
        })
    }
}

/// Peer-reflexive and predicted candidates are learnt, never offered.
fn sendable(k: CandidateKind) -> bool {
    matches!(
        k,
        CandidateKind::Host | CandidateKind::ServerReflexive | CandidateKind::Relayed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> IceOffer {
        IceOffer {
            session: 0xDEAD_BEEF,
            ufrag: "abcd".into(),
            pwd: "0123456789abcdefghijkl".into(),
            mapping: MappingHint::DestinationDependent,
            candidates: vec![
                Candidate::new(CandidateKind::Host, "10.0.0.2:5000".parse().unwrap(), 65535),
                Candidate::new(
                    CandidateKind::ServerReflexive,
                    "198.51.100.11:6000".parse().unwrap(),
                    65535,
                ),
                Candidate::new(
                    CandidateKind::Relayed,
                    "[2001:db8::1]:7".parse().unwrap(),
                    1,
                ),
            ],
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let o = sample();
        let b = o.encode();
        assert_eq!(IceOffer::decode(&b).unwrap(), o);
        for cut in 0..b.len() {
            assert!(IceOffer::decode(&b[..cut]).is_err());
        }
        let mut bad = o.clone();
        bad.pwd = "short".into();
        assert_eq!(IceOffer::decode(&bad.encode()), Err(IceError::Credentials));
        let mut trailing = b.clone();
        trailing.push(0);
        assert!(IceOffer::decode(&trailing).is_err());
    }
}
