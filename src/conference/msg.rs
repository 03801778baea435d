//! Conference signalling messages on the wire (envelope kind
//! [`crate::overlay::envelope::kind::CONFERENCE`]), big-endian:
//!
//! `version u8 = 1 | type u8 | conference id u64 | body`
//!
//! | type | message | body |
//! |---|---|---|
//! | 1 | Invite | starter str8, epoch u32, mixer str8, replaces u64, members |
//! | 2 | Join | one member |
//! | 3 | Roster | epoch u32, mixer str8, members |
//! | 4 | Leave | |
//! | 5 | Mute | target str8, on u8 |
//! | 6 | Levels | count u8, then (name str8, level u8) each |
//! | 7 | Busy | |
//!
//! `members` is a u8 count then each member: name str8, nonce `[16]`,
//! uplink kbit/s u32, reach u8, muted u8. At most
//! [`super::MAX_PARTICIPANTS`] members; the decoder borrows nothing past
//! the call and checks every length first.

use super::{ConfId, MAX_PARTICIPANTS, Member, Reach};
use crate::wire::WireError;
use crate::wire::{Reader, Writer};

pub const VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfMsg {
    /// Join conference `id`: who started it, the mixer, the members so far.
    Invite {
        starter: String,
        epoch: u32,
        mixer: String,
        /// The 1:1 call this conference replaces (0: none).
        replaces: u64,
        members: Vec<Member>,
    },
    /// The sender joined (its own member entry).
    Join { member: Member },
    /// The mixer's view: authoritative while its epoch is the newest.
    Roster {
        epoch: u32,
        mixer: String,
        members: Vec<Member>,
    },
    /// The sender left.
    Leave,
    /// Mute `target` (from the starter), or the sender's own mute state.
    Mute { target: String, on: bool },
    /// The mixer's measure of each participant's level (0-255).
    Levels { levels: Vec<(String, u8)> },
    /// The answer to an Invite from one already in a call or another
    /// conference.
    Busy,
}

fn members(w: &mut Writer, m: &[Member]) {
    w.u8(m.len().min(MAX_PARTICIPANTS) as u8);
    for m in m.iter().take(MAX_PARTICIPANTS) {
        member(w, m);
    }
}

fn member(w: &mut Writer, m: &Member) {
    w.bytes8(m.name.as_bytes())
        .raw(&m.nonce)
        .u32(m.uplink_kbps)
        .u8(m.reach as u8)
        .u8(m.muted as u8);
}

fn read_member(r: &mut Reader<'_>) -> Result<Member, WireError> {
    let name = r.str8("member name")?.to_owned();
    let nonce = r.array()?;
    let uplink_kbps = r.u32()?;
    let reach = Reach::from_u8(r.u8()?).ok_or(WireError::Invalid { field: "reach" })?;
    let muted = r.u8()? != 0;
    Ok(Member {
        name,
        nonce,
        uplink_kbps,
        reach,
        muted,
    })
}

fn read_members(r: &mut Reader<'_>) -> Result<Vec<Member>, WireError> {
    let n = r.u8()? as usize;
    if n > MAX_PARTICIPANTS {
        return Err(WireError::Invalid { field: "members" });
    }
    (0..n).map(|_| read_member(r)).collect()
}

impl ConfMsg {
    fn kind(&self) -> u8 {
        match self {
            ConfMsg::Invite { .. } => 1,
            ConfMsg::Join { .. } => 2,
            ConfMsg::Roster { .. } => 3,
            ConfMsg::Leave => 4,
            ConfMsg::Mute { .. } => 5,
            ConfMsg::Levels { .. } => 6,
            ConfMsg::Busy => 7,
        }
    }

    pub fn encode(&self, id: ConfId) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION).u8(self.kind()).u64(id);
        match self {
            ConfMsg::Invite {
                starter,
                epoch,
                mixer,
                replaces,
                members: m,
            } => {
                w.bytes8(starter.as_bytes())
                    .u32(*epoch)
                    .bytes8(mixer.as_bytes())
                    .u64(*replaces);
                members(&mut w, m);
            }
            ConfMsg::Join { member: m } => member(&mut w, m),
            ConfMsg::Roster {
                epoch,
                mixer,
                members: m,
            } => {
                w.u32(*epoch).bytes8(mixer.as_bytes());
                members(&mut w, m);
            }
            ConfMsg::Leave | ConfMsg::Busy => {}
            ConfMsg::Mute { target, on } => {
                w.bytes8(target.as_bytes()).u8(*on as u8);
            }
            ConfMsg::Levels { levels } => {
                w.u8(levels.len().min(MAX_PARTICIPANTS) as u8);
                for (name, l) in levels.iter().take(MAX_PARTICIPANTS) {
                    w.bytes8(name.as_bytes()).u8(*l);
                }
            }
        }
        w.into_vec()
    }

    pub fn decode(b: &[u8]) -> Result<(ConfId, ConfMsg), WireError> {
        let mut r = Reader::new(b);
        let v = r.u8()?;
        if v != VERSION {
            return Err(WireError::UnknownVersion { got: v });
        }
        let kind = r.u8()?;
        let id = r.u64()?;
        let m = match kind {
            1 => ConfMsg::Invite {
                starter: r.str8("starter")?.to_owned(),
                epoch: r.u32()?,
                mixer: r.str8("mixer")?.to_owned(),
                replaces: r.u64()?,
                members: read_members(&mut r)?,
            },
            2 => ConfMsg::Join {
                member: read_member(&mut r)?,
            },
            3 => ConfMsg::Roster {
                epoch: r.u32()?,
                mixer: r.str8("mixer")?.to_owned(),
                members: read_members(&mut r)?,
            },
            4 => ConfMsg::Leave,
            5 => ConfMsg::Mute {
                target: r.str8("target")?.to_owned(),
                on: r.u8()? != 0,
            },
            6 => {
                let n = r.u8()? as usize;
                if n > MAX_PARTICIPANTS {
                    return Err(WireError::Invalid { field: "levels" });
                }
                let levels = (0..n)
                    .map(|_| Ok((r.str8("name")?.to_owned(), r.u8()?)))
                    .collect::<Result<_, WireError>>()?;
                ConfMsg::Levels { levels }
            }
            7 => ConfMsg::Busy,
            got => {
                return Err(WireError::UnknownType {
                    what: "conference message",
                    got,
                });
            }
        };
        r.finish()?;
        Ok((id, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str) -> Member {
        Member {
            name: name.into(),
            nonce: [7; 16],
            uplink_kbps: 900,
            reach: Reach::Cone,
            muted: true,
        }
    }

    #[test]
    fn round_trip_and_truncation() {
        let all = [
            ConfMsg::Invite {
                starter: "ann".into(),
                epoch: 3,
                mixer: "bob".into(),
                replaces: 9,
                members: vec![m("ann"), m("bob")],
            },
            ConfMsg::Join { member: m("cat") },
            ConfMsg::Roster {
                epoch: 4,
                mixer: "cat".into(),
                members: vec![m("cat")],
            },
            ConfMsg::Leave,
            ConfMsg::Mute {
                target: "bob".into(),
                on: true,
            },
            ConfMsg::Levels {
                levels: vec![("ann".into(), 200), ("bob".into(), 0)],
            },
            ConfMsg::Busy,
        ];
        for msg in all {
            let b = msg.encode(42);
            assert_eq!(ConfMsg::decode(&b), Ok((42, msg.clone())));
            for cut in 0..b.len() {
                assert!(ConfMsg::decode(&b[..cut]).is_err(), "{msg:?} cut {cut}");
            }
        }
        assert!(ConfMsg::decode(&[1, 99, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        // More members than a conference holds.
        let mut b = ConfMsg::Leave.encode(1);
        b[1] = 3;
        b.extend_from_slice(&[0, 0, 0, 0, 0]);
        b.push(26);
        assert!(ConfMsg::decode(&b).is_err());
    }
}
