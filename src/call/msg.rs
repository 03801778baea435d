//! Call signalling messages on the wire.
//!
//! `version u8 = 1 | kind u8 | call_id u64 | body`, big-endian:
//!
//! | kind | message | body |
//! |---|---|---|
//! | 1 | Invite | caller nonce (16 bytes) |
//! | 2 | Ringing | |
//! | 3 | Accept | callee nonce (16 bytes) |
//! | 4 | Decline | |
//! | 5 | Busy | |
//! | 6 | Cancel | |
//! | 7 | Hangup | |
//! | 8 | Mute | on u8 (0 or 1) |
//! | 9 | Hold | on u8 (0 or 1) |
//! | 10 | Ack | kind acknowledged u8, then that message's flag u8 (Mute/Hold, else 0) |

use thiserror::Error;

pub const VERSION: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("malformed call message")]
pub struct MsgError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    Invite { nonce: [u8; 16] },
    Ringing,
    Accept { nonce: [u8; 16] },
    Decline,
    Busy,
    Cancel,
    Hangup,
    Mute { on: bool },
    Hold { on: bool },
    Ack { kind: u8, flag: bool },
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
        let mut v = Vec::with_capacity(26);
        v.push(VERSION);
        v.push(self.kind());
        v.extend_from_slice(&call_id.to_be_bytes());
        match self {
            Msg::Invite { nonce } | Msg::Accept { nonce } => v.extend_from_slice(nonce),
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
            3 => Msg::Accept { nonce: nonce()? },
            4 => empty(Msg::Decline)?,
            5 => empty(Msg::Busy)?,
            6 => empty(Msg::Cancel)?,
            7 => empty(Msg::Hangup)?,
            8 if body.len() == 1 => Msg::Mute { on: flag(0)? },
            9 if body.len() == 1 => Msg::Hold { on: flag(0)? },
            10 if body.len() == 2 && (1..=9).contains(&body[0]) => Msg::Ack {
                kind: body[0],
                flag: flag(1)?,
            },
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
            Msg::Accept { nonce: [2; 16] },
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
    }
}
