//! Call signalling messages on the wire.
//!
//! `version u8 = 1 | kind u8 | call_id u64 | body`, big-endian:
//!
//! | kind | message | body |
//! |---|---|---|
//! | 1 | Invite | caller nonce (16 bytes) |
//! | 2 | Ringing | |
//! | 3 | Accept | callee nonce (16 bytes), then the answering device's name (str8, 1-64 bytes of UTF-8; absent when unnamed) |
//! | 4 | Decline | |
//! | 5 | Busy | |
//! | 6 | Cancel | |
//! | 7 | Hangup | |
//! | 8 | Mute | on u8 (0 or 1) |
//! | 9 | Hold | on u8 (0 or 1) |
//! | 10 | Ack | kind acknowledged u8, then that message's flag u8 (Mute/Hold, else 0) |
//! | 11 | AnsweredElsewhere | the answering device's name (str8, 0-64 bytes of UTF-8) |
//! | 12 | Replace | taker nonce (16 bytes), replaced call id u64, the taking device's name (str8, 0-64 bytes) |
//! | 13 | Moved | the device the call moved to (str8, 0-64 bytes) |
//! | 14 | OnDevice | on u8 (0 or 1), the peer's device key (32 bytes), the peer's username (str8, 1-64 bytes), our device's name (str8, 0-64 bytes) |
//!
//! AnsweredElsewhere goes from the caller to the callee's other devices
//! once one of them answered (issue 17: a call rings every device).
//! Moving a call between one's devices (issue 17): OnDevice goes from a
//! device to its own account's other devices when a call there is up (or
//! ended), so they know which call they can take; Replace goes from the
//! taking device to the peer's device in the call, as a new leg (its call
//! id) that replaces the call it names; once the new leg has audio, the
//! peer ends the old one with Moved to the device that had it.

use thiserror::Error;

pub const VERSION: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("malformed call message")]
pub struct MsgError;

/// A device's name as it names itself in its account's device list (at
/// most [`DeviceName::MAX`] bytes of UTF-8; empty: unnamed). Fixed size,
/// so messages stay `Copy` for retransmission.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceName {
    len: u8,
    bytes: [u8; DeviceName::MAX],
}

impl DeviceName {
    pub const MAX: usize = 64;
    pub const EMPTY: DeviceName = DeviceName {
        len: 0,
        bytes: [0; DeviceName::MAX],
    };

    /// `name` cut to at most [`DeviceName::MAX`] bytes (on a character
    /// boundary).
    pub fn new(name: &str) -> Self {
        let mut end = name.len().min(Self::MAX);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0; Self::MAX];
        bytes[..end].copy_from_slice(&name.as_bytes()[..end]);
        DeviceName {
            len: end as u8,
            bytes,
        }
    }

    /// From the wire: valid UTF-8 of at most [`DeviceName::MAX`] bytes.
    fn from_wire(b: &[u8]) -> Result<Self, MsgError> {
        let s = std::str::from_utf8(b).map_err(|_| MsgError)?;
        if s.len() > Self::MAX {
            return Err(MsgError);
        }
        Ok(Self::new(s))
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from a `&str` cut on a character boundary.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// As a str8.
    fn put(&self, v: &mut Vec<u8>) {
        v.push(self.len);
        v.extend_from_slice(self.as_str().as_bytes());
    }
}

impl std::fmt::Debug for DeviceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl std::fmt::Display for DeviceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    Invite {
        nonce: [u8; 16],
    },
    Ringing,
    /// `device`: the answering device's name (empty from a device that
    /// does not name itself, and from older versions).
    Accept {
        nonce: [u8; 16],
        device: DeviceName,
    },
    Decline,
    Busy,
    Cancel,
    Hangup,
    Mute {
        on: bool,
    },
    Hold {
        on: bool,
    },
    Ack {
        kind: u8,
        flag: bool,
    },
    /// The call was answered on the callee's device `device`: stop ringing.
    AnsweredElsewhere {
        device: DeviceName,
    },
    /// A new leg (this message's call id) from the sender's device
    /// `device`, to replace call `replaces` that another device of the
    /// same user has with us; `nonce` is the caller nonce of the new leg.
    Replace {
        nonce: [u8; 16],
        replaces: u64,
        device: DeviceName,
    },
    /// The call moved to the peer's device `device`: this leg ends.
    Moved {
        device: DeviceName,
    },
    /// To our own account's other devices: our call (this message's id)
    /// with `peer` on their device `peer_device` is up (`on`) or over;
    /// `device` names the device that has it.
    OnDevice {
        on: bool,
        peer_device: [u8; 32],
        peer: DeviceName,
        device: DeviceName,
    },
}

impl Msg {
    pub fn kind(&self) -> u8 {
        match self {
            Msg::Invite { .. } => 1,
            Msg::Ringing => 2,
            Msg::Accept { .. } => 3,
            Msg::Decline => 4,
            Msg::Busy => 5,
            Msg::Cancel => 6,
            Msg::Hangup => 7,
            Msg::Mute { .. } => 8,
            Msg::Hold { .. } => 9,
            Msg::Ack { .. } => 10,
            Msg::AnsweredElsewhere { .. } => 11,
            Msg::Replace { .. } => 12,
            Msg::Moved { .. } => 13,
            Msg::OnDevice { .. } => 14,
        }
    }

    /// The flag an Ack of this message carries.
    pub fn flag(&self) -> bool {
        match self {
            Msg::Mute { on } | Msg::Hold { on } => *on,
            _ => false,
        }
    }

    pub fn encode(&self, call_id: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(44 + 2 * DeviceName::MAX);
        v.push(VERSION);
        v.push(self.kind());
        v.extend_from_slice(&call_id.to_be_bytes());
        match self {
            Msg::Invite { nonce } => v.extend_from_slice(nonce),
            Msg::Accept { nonce, device } => {
                v.extend_from_slice(nonce);
                if !device.is_empty() {
                    v.push(device.len);
                    v.extend_from_slice(device.as_str().as_bytes());
                }
            }
            Msg::AnsweredElsewhere { device } | Msg::Moved { device } => device.put(&mut v),
            Msg::Replace {
                nonce,
                replaces,
                device,
            } => {
                v.extend_from_slice(nonce);
                v.extend_from_slice(&replaces.to_be_bytes());
                device.put(&mut v);
            }
            Msg::OnDevice {
                on,
                peer_device,
                peer,
                device,
            } => {
                v.push(*on as u8);
                v.extend_from_slice(peer_device);
                peer.put(&mut v);
                device.put(&mut v);
            }
            Msg::Mute { on } | Msg::Hold { on } => v.push(*on as u8),
            Msg::Ack { kind, flag } => {
                v.push(*kind);
                v.push(*flag as u8);
            }
            _ => {}
        }
        v
    }

    /// Borrows, checks lengths first, never panics; trailing bytes are
    /// refused.
    pub fn decode(b: &[u8]) -> Result<(u64, Msg), MsgError> {
        if b.len() < 10 || b[0] != VERSION {
            return Err(MsgError);
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&b[2..10]);
        let id = u64::from_be_bytes(id);
        let body = &b[10..];
        let nonce = || -> Result<[u8; 16], MsgError> { body.try_into().map_err(|_| MsgError) };
        // A str8 that fills the rest of `b` exactly.
        let name = |b: &[u8]| -> Result<DeviceName, MsgError> {
            match b.split_first() {
                Some((&n, rest)) if rest.len() == n as usize => DeviceName::from_wire(rest),
                _ => Err(MsgError),
            }
        };
        let flag = |i: usize| -> Result<bool, MsgError> {
            match body.get(i) {
                Some(0) => Ok(false),
                Some(1) => Ok(true),
                _ => Err(MsgError),
            }
        };
        let empty = |m: Msg| {
            if body.is_empty() {
                Ok(m)
            } else {
                Err(MsgError)
            }
        };
        let m = match b[1] {
            1 => Msg::Invite { nonce: nonce()? },
            2 => empty(Msg::Ringing)?,
            3 if body.len() == 16 => Msg::Accept {
                nonce: nonce()?,
                device: DeviceName::EMPTY,
            },
            // A name, when present, is not empty (one encoding per message).
            3 if body.len() > 17 => {
                let mut n = [0u8; 16];
                n.copy_from_slice(&body[..16]);
                Msg::Accept {
                    nonce: n,
                    device: name(&body[16..])?,
                }
            }
            4 => empty(Msg::Decline)?,
            5 => empty(Msg::Busy)?,
            6 => empty(Msg::Cancel)?,
            7 => empty(Msg::Hangup)?,
            8 if body.len() == 1 => Msg::Mute { on: flag(0)? },
            9 if body.len() == 1 => Msg::Hold { on: flag(0)? },
            10 if body.len() == 2 && matches!(body[0], 1..=9 | 11..=13) => Msg::Ack {
                kind: body[0],
                flag: flag(1)?,
            },
            11 => Msg::AnsweredElsewhere {
                device: name(body)?,
            },
            12 if body.len() > 24 => {
                let mut n = [0u8; 16];
                n.copy_from_slice(&body[..16]);
                let mut r = [0u8; 8];
                r.copy_from_slice(&body[16..24]);
                Msg::Replace {
                    nonce: n,
                    replaces: u64::from_be_bytes(r),
                    device: name(&body[24..])?,
                }
            }
            13 => Msg::Moved {
                device: name(body)?,
            },
            14 if body.len() > 34 => {
                let on = flag(0)?;
                let mut peer_device = [0u8; 32];
                peer_device.copy_from_slice(&body[1..33]);
                // Two str8s: the peer's username (not empty), our device's.
                let rest = &body[33..];
                let n = rest[0] as usize;
                if n == 0 || rest.len() < 1 + n {
                    return Err(MsgError);
                }
                Msg::OnDevice {
                    on,
                    peer_device,
                    peer: DeviceName::from_wire(&rest[1..1 + n])?,
                    device: name(&rest[1 + n..])?,
                }
            }
            _ => return Err(MsgError),
        };
        Ok((id, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects() {
        let all = [
            Msg::Invite { nonce: [1; 16] },
            Msg::Ringing,
            Msg::Accept {
                nonce: [2; 16],
                device: DeviceName::EMPTY,
            },
            Msg::Accept {
                nonce: [2; 16],
                device: DeviceName::new("alice-laptop"),
            },
            Msg::AnsweredElsewhere {
                device: DeviceName::new("desk"),
            },
            Msg::AnsweredElsewhere {
                device: DeviceName::EMPTY,
            },
            Msg::Ack {
                kind: 11,
                flag: false,
            },
            Msg::Replace {
                nonce: [3; 16],
                replaces: 0x0102_0304_0506_0708,
                device: DeviceName::new("alice-laptop"),
            },
            Msg::Replace {
                nonce: [3; 16],
                replaces: 7,
                device: DeviceName::EMPTY,
            },
            Msg::Moved {
                device: DeviceName::new("alice-laptop"),
            },
            Msg::OnDevice {
                on: true,
                peer_device: [9; 32],
                peer: DeviceName::new("bob"),
                device: DeviceName::new("desk"),
            },
            Msg::OnDevice {
                on: false,
                peer_device: [9; 32],
                peer: DeviceName::new("bob"),
                device: DeviceName::EMPTY,
            },
            Msg::Ack {
                kind: 13,
                flag: false,
            },
            Msg::Decline,
            Msg::Busy,
            Msg::Cancel,
            Msg::Hangup,
            Msg::Mute { on: true },
            Msg::Hold { on: false },
            Msg::Ack {
                kind: 8,
                flag: true,
            },
        ];
        for m in all {
            let b = m.encode(42);
            assert_eq!(Msg::decode(&b), Ok((42, m)));
            assert!(Msg::decode(&b[..b.len() - 1]).is_err() || b.len() == 10);
            let mut longer = b.clone();
            longer.push(0);
            assert!(Msg::decode(&longer).is_err(), "{m:?}");
        }
        assert!(Msg::decode(&[]).is_err());
        assert!(Msg::decode(&[2, 1, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
        assert!(Msg::decode(&Msg::Mute { on: true }.encode(1)[..10]).is_err());
        let mut bad = Msg::Hold { on: true }.encode(1);
        bad[10] = 2;
        assert!(Msg::decode(&bad).is_err());
        // Names: one encoding each, UTF-8, at most 64 bytes.
        let named = Msg::Accept {
            nonce: [2; 16],
            device: DeviceName::new("é"),
        }
        .encode(1);
        let mut empty = named[..26].to_vec();
        empty.push(0);
        assert!(Msg::decode(&empty).is_err(), "an empty name is left out");
        let mut bad = named.clone();
        bad[27] = 0xff;
        assert!(Msg::decode(&bad).is_err(), "not UTF-8");
        let mut long = Msg::AnsweredElsewhere {
            device: DeviceName::EMPTY,
        }
        .encode(1);
        long[10] = 65;
        long.extend_from_slice(&[b'a'; 65]);
        assert!(Msg::decode(&long).is_err(), "too long");
        assert_eq!(DeviceName::new(&"é".repeat(40)).as_str().len(), 64);
        // OnDevice: the peer's name is not empty, the flag 0 or 1.
        let mut od = Msg::OnDevice {
            on: true,
            peer_device: [9; 32],
            peer: DeviceName::new("b"),
            device: DeviceName::EMPTY,
        }
        .encode(1);
        od[10] = 2;
        assert!(Msg::decode(&od).is_err(), "flag");
        od[10] = 1;
        od[43] = 0;
        assert!(Msg::decode(&od).is_err(), "empty peer");
        od[43] = 200;
        assert!(Msg::decode(&od).is_err(), "peer past the end");
        for n in 0..od.len() {
            let _ = Msg::decode(&od[..n]);
        }
        assert!(
            Msg::decode(
                &Msg::Ack {
                    kind: 14,
                    flag: false
                }
                .encode(1)
            )
            .is_err()
        );
    }
}
