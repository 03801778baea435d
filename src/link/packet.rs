//! The link's four datagram kinds and their codec.
//!
//! Each datagram is one [`Frame`]; integers are big-endian:
//!
//! | kind | name | payload |
//! |------|------|---------|
//! | 16 | INIT | `sender index u32 \| noise msg1 (ephemeral key) [32] \| cookie [16] (zeros: none) \| zero padding` to [`INIT_LEN`] |
//! | 17 | RESP | `sender index u32 \| receiver index u32 \| noise msg2` |
//! | 18 | FIN  | `receiver index u32 \| noise msg3` |
//! | 19 | DATA | `receiver index u32 \| counter u64 \| ciphertext (>= 16 bytes)` |
//! | 20 | COOKIE | `receiver index u32 \| cookie [16]` |
//! | 21 | RENEW | as DATA; the plaintext is the sender's renewed certificate |
//! | 22 | BUSY | `receiver index u32 \| count u8 \| addresses` ([`crate::wire::addr`]) |
//!
//! A responder under load answers an INIT without a valid cookie with a
//! COOKIE (keeping no state); the initiator repeats its INIT carrying it,
//! proving it receives at its address. A responder whose session table
//! is full (or whose share for the initiator's address or account is
//! taken) answers BUSY with other nodes to try, so the initiator moves on
//! at once instead of timing out; it is no larger than the INIT it
//! answers, and only the initiator knows the index it names.

use crate::wire::{Frame, MAX_FRAME, Reader, WireError, Writer};

pub const KIND_INIT: u8 = 16;
pub const KIND_RESP: u8 = 17;
pub const KIND_FIN: u8 = 18;
pub const KIND_DATA: u8 = 19;
pub const KIND_COOKIE: u8 = 20;
pub const KIND_RENEW: u8 = 21;
pub const KIND_BUSY: u8 = 22;
// The shared socket's demultiplexer files exactly these kinds as link frames.
const _: () = assert!(
    *crate::wire::stun::LINK_KINDS.start() == KIND_INIT
        && *crate::wire::stun::LINK_KINDS.end() == KIND_BUSY
);

/// An XX first message with an empty payload is just the ephemeral key.
pub const EPHEMERAL: usize = 32;
/// A cookie: a MAC of the initiator's address, index and key.
pub const COOKIE: usize = 16;
/// INIT payload length, padding included. The padding makes INIT at least
/// as large as the RESP it provokes (303 bytes for the largest
/// certificate), so a spoofed INIT cannot amplify traffic at a victim.
pub const INIT_LEN: usize = 320;
const TAG: usize = 16;
/// DATA payload before the ciphertext: receiver index and counter.
pub const DATA_HEADER: usize = 12;
/// Largest message one DATA datagram carries. Keep messages well under
/// ~1200 bytes in practice: larger ones are fragmented by IP, and a lost
/// fragment loses the whole datagram.
pub const MAX_PAYLOAD: usize = MAX_FRAME - 2 - DATA_HEADER - TAG;

/// One decoded datagram, borrowing from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    Init {
        sender: u32,
        ephemeral: [u8; EPHEMERAL],
        /// The responder's cookie, when it asked for one.
        cookie: Option<[u8; COOKIE]>,
    },
    Resp {
        sender: u32,
        receiver: u32,
        msg: &'a [u8],
    },
    Fin {
        receiver: u32,
        msg: &'a [u8],
    },
    Data {
        receiver: u32,
        counter: u64,
        ciphertext: &'a [u8],
    },
    Cookie {
        receiver: u32,
        cookie: [u8; COOKIE],
    },
    /// A live session's renewed certificate, sealed and numbered as DATA.
    Renew {
        receiver: u32,
        counter: u64,
        ciphertext: &'a [u8],
    },
    /// No room for the session the initiator `receiver` asked for; try
    /// `others` (encoded address list, checked at decode: see
    /// [`Packet::busy_others`]).
    Busy {
        receiver: u32,
        others: &'a [u8],
    },
}

impl<'a> Packet<'a> {
    pub fn decode(buf: &'a [u8]) -> Result<Self, WireError> {
        let frame = Frame::decode(buf)?;
        let mut r = Reader::new(frame.payload);
        let p = match frame.kind {
            KIND_INIT => {
                if frame.payload.len() != INIT_LEN {
                    return Err(WireError::Invalid {
                        field: "INIT length",
                    });
                }
                let sender = r.u32()?;
                let ephemeral = r.array()?;
                let cookie: [u8; COOKIE] = r.array()?;
                // Strict zero padding keeps the encoding canonical.
                if r.rest().iter().any(|&b| b != 0) {
                    return Err(WireError::Invalid {
                        field: "INIT padding",
                    });
                }
                let cookie = (cookie != [0; COOKIE]).then_some(cookie);
                Packet::Init {
                    sender,
                    ephemeral,
                    cookie,
                }
            }
            KIND_COOKIE => {
                let receiver = r.u32()?;
                let cookie = r.array()?;
                if !r.rest().is_empty() {
                    return Err(WireError::Invalid {
                        field: "COOKIE length",
                    });
                }
                Packet::Cookie { receiver, cookie }
            }
            KIND_RESP => Packet::Resp {
                sender: r.u32()?,
                receiver: r.u32()?,
                msg: nonempty(r.rest(), "RESP message")?,
            },
            KIND_FIN => Packet::Fin {
                receiver: r.u32()?,
                msg: nonempty(r.rest(), "FIN message")?,
            },
            KIND_DATA | KIND_RENEW => {
                let receiver = r.u32()?;
                let counter = r.u64()?;
                let ciphertext = r.rest();
                if ciphertext.len() < TAG {
                    return Err(WireError::Truncated {
                        need: TAG,
                        have: ciphertext.len(),
                    });
                }
                if frame.kind == KIND_RENEW {
                    Packet::Renew {
                        receiver,
                        counter,
                        ciphertext,
                    }
                } else {
                    Packet::Data {
                        receiver,
                        counter,
                        ciphertext,
                    }
                }
            }
            KIND_BUSY => {
                let receiver = r.u32()?;
                let others = r.rest();
                let mut check = Reader::new(others);
                crate::wire::addr::read_addrs(&mut check)?;
                if !check.rest().is_empty() {
                    return Err(WireError::Invalid {
                        field: "BUSY length",
                    });
                }
                Packet::Busy { receiver, others }
            }
            got => {
                return Err(WireError::UnknownType {
                    what: "link packet",
                    got,
                });
            }
        };
        Ok(p)
    }

    /// Encode; fails only when a message exceeds the frame limit.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut w = Writer::new();
        let kind = match *self {
            Packet::Init {
                sender,
                ephemeral,
                cookie,
            } => {
                w.u32(sender)
                    .raw(&ephemeral)
                    .raw(&cookie.unwrap_or([0; COOKIE]));
                w.buf.resize(INIT_LEN, 0);
                KIND_INIT
            }
            Packet::Cookie { receiver, cookie } => {
                w.u32(receiver).raw(&cookie);
                KIND_COOKIE
            }
            Packet::Resp {
                sender,
                receiver,
                msg,
            } => {
                w.u32(sender).u32(receiver).raw(msg);
                KIND_RESP
            }
            Packet::Fin { receiver, msg } => {
                w.u32(receiver).raw(msg);
                KIND_FIN
            }
            Packet::Data {
                receiver,
                counter,
                ciphertext,
            } => {
                w.u32(receiver).u64(counter).raw(ciphertext);
                KIND_DATA
            }
            Packet::Renew {
                receiver,
                counter,
                ciphertext,
            } => {
                w.u32(receiver).u64(counter).raw(ciphertext);
                KIND_RENEW
            }
            Packet::Busy { receiver, others } => {
                w.u32(receiver).raw(others);
                KIND_BUSY
            }
        };
        Frame::encode(kind, &w.buf)
    }

    /// A BUSY for the initiator's index `receiver`, naming up to
    /// [`crate::wire::addr::MAX_ADDRS`] of `others`.
    pub fn encode_busy(
        receiver: u32,
        others: &[std::net::SocketAddr],
    ) -> Result<Vec<u8>, WireError> {
        let mut w = Writer::new();
        crate::wire::addr::write_addrs(&mut w, others);
        Packet::Busy {
            receiver,
            others: &w.buf,
        }
        .encode()
    }

    /// The addresses a decoded BUSY names (empty for other packets).
    pub fn busy_others(&self) -> Vec<std::net::SocketAddr> {
        match self {
            Packet::Busy { others, .. } => {
                crate::wire::addr::read_addrs(&mut Reader::new(others)).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }
}

fn nonempty<'a>(b: &'a [u8], field: &'static str) -> Result<&'a [u8], WireError> {
    if b.is_empty() {
        Err(WireError::Invalid { field })
    } else {
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let msg = [5u8; 40];
        for p in [
            Packet::Init {
                sender: 1,
                ephemeral: [9; 32],
                cookie: None,
            },
            Packet::Init {
                sender: 1,
                ephemeral: [9; 32],
                cookie: Some([7; COOKIE]),
            },
            Packet::Cookie {
                receiver: 6,
                cookie: [8; COOKIE],
            },
            Packet::Resp {
                sender: 2,
                receiver: 3,
                msg: &msg,
            },
            Packet::Fin {
                receiver: 4,
                msg: &msg,
            },
            Packet::Data {
                receiver: 5,
                counter: u64::MAX,
                ciphertext: &msg,
            },
        ] {
            let bytes = p.encode().unwrap();
            assert_eq!(Packet::decode(&bytes).unwrap(), p);
            for cut in 0..bytes.len() {
                assert!(Packet::decode(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn busy_names_other_nodes_and_is_checked_at_decode() {
        let others: Vec<std::net::SocketAddr> = vec![
            "192.0.2.1:7700".parse().unwrap(),
            "[2001:db8::1]:7701".parse().unwrap(),
        ];
        let bytes = Packet::encode_busy(9, &others).unwrap();
        let p = Packet::decode(&bytes).unwrap();
        assert!(matches!(p, Packet::Busy { receiver: 9, .. }));
        assert_eq!(p.busy_others(), others);
        for cut in 0..bytes.len() {
            assert!(Packet::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        // Trailing bytes, a bad family, too many addresses.
        let mut long = bytes.clone();
        long.push(0);
        long[1] += 1;
        assert!(Packet::decode(&long).is_err());
        let bad = Frame::encode(KIND_BUSY, &[0, 0, 0, 9, 1, 5, 1, 2, 3, 4, 0, 1]).unwrap();
        assert!(Packet::decode(&bad).is_err());
        let mut many = vec![0, 0, 0, 9, 9];
        for _ in 0..9 {
            many.extend_from_slice(&[4, 1, 2, 3, 4, 0, 1]);
        }
        assert!(Packet::decode(&Frame::encode(KIND_BUSY, &many).unwrap()).is_err());
        // No larger than the INIT it answers, with the most addresses.
        let v6: Vec<std::net::SocketAddr> = (0..20)
            .map(|i| format!("[2001:db8::{i}]:1").parse().unwrap())
            .collect();
        let full = Packet::encode_busy(1, &v6).unwrap();
        let init = Packet::Init {
            sender: 1,
            ephemeral: [1; 32],
            cookie: None,
        }
        .encode()
        .unwrap();
        assert!(full.len() <= init.len(), "{} > {}", full.len(), init.len());
    }

    #[test]
    fn rejects_bad_padding_short_data_and_foreign_kinds() {
        let mut init = Packet::Init {
            sender: 1,
            ephemeral: [1; 32],
            cookie: None,
        }
        .encode()
        .unwrap();
        *init.last_mut().unwrap() = 1;
        assert!(Packet::decode(&init).is_err());
        let data = Frame::encode(KIND_DATA, &[0; DATA_HEADER + TAG - 1]).unwrap();
        assert!(Packet::decode(&data).is_err());
        let long_cookie = Frame::encode(KIND_COOKIE, &[1; 4 + COOKIE + 1]).unwrap();
        assert!(Packet::decode(&long_cookie).is_err());
        // A COOKIE is far smaller than the INIT that provokes it.
        let c = Packet::Cookie {
            receiver: 1,
            cookie: [1; COOKIE],
        };
        assert!(c.encode().unwrap().len() * 10 < INIT_LEN);
        let authority = Frame::encode(1, &[0; 40]).unwrap();
        assert!(matches!(
            Packet::decode(&authority),
            Err(WireError::UnknownType { got: 1, .. })
        ));
        let max = Frame::encode(KIND_DATA, &vec![0; DATA_HEADER + TAG + MAX_PAYLOAD]).unwrap();
        assert!(Packet::decode(&max).is_ok());
    }
}
