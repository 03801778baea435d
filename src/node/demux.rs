//! One UDP socket per node carries every protocol natter speaks, as
//! RFC 7983 multiplexes STUN, TURN and RTP: this module tells them apart
//! from the first bytes of a datagram, without decoding it.
//!
//! | first bytes | protocol |
//! |---|---|
//! | `len:u16 = n-2, version 1, kind 16..=19` | natter link frame ([`crate::link`]) |
//! | top two bits `00`, magic cookie `0x2112A442` at offset 4 | STUN / TURN message |
//! | `0x40..=0x4F`, `len:u16` at offset 2 fits the datagram | TURN ChannelData |
//! | `0x80..=0xBF` | media packet (RTP-shaped, see the media module) |
//!
//! A link frame is recognised first: its length prefix must equal the
//! datagram length, which a STUN or ChannelData header does not satisfy
//! for any message that fits in a datagram.

use crate::wire::VERSION;

/// The STUN magic cookie (RFC 8489).
pub const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// What a datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Datagram {
    Link,
    Stun,
    ChannelData,
    Media,
    /// None of the above: dropped and counted by the caller.
    Unknown,
}

/// Classify one datagram by its first bytes.
pub fn classify(d: &[u8]) -> Datagram {
    if d.len() >= 4 {
        let len = u16::from_be_bytes([d[0], d[1]]) as usize;
        if len + 2 == d.len() && d[2] == VERSION && (16..=19).contains(&d[3]) {
            return Datagram::Link;
        }
    }
    if d.len() >= 20 && d[0] & 0xC0 == 0 && d[4..8] == STUN_MAGIC {
        return Datagram::Stun;
    }
    match d.first() {
        Some(0x40..=0x4F) if d.len() >= 4 => {
            let len = u16::from_be_bytes([d[2], d[3]]) as usize;
            // Over UDP the payload may be padded to 4 bytes.
            if len + 4 <= d.len() && d.len() <= len + 4 + 3 {
                Datagram::ChannelData
            } else {
                Datagram::Unknown
            }
        }
        Some(0x80..=0xBF) => Datagram::Media,
        _ => Datagram::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_frames() {
        let mut d = vec![0u8; 40];
        d[0..2].copy_from_slice(&38u16.to_be_bytes());
        d[2] = VERSION;
        d[3] = 19;
        assert_eq!(classify(&d), Datagram::Link);
        d[3] = 20;
        assert_eq!(classify(&d), Datagram::Unknown);
    }

    #[test]
    fn stun_and_channel_data_and_media() {
        let mut s = vec![0u8; 20];
        s[1] = 1; // Binding request
        s[4..8].copy_from_slice(&STUN_MAGIC);
        assert_eq!(classify(&s), Datagram::Stun);
        let mut c = vec![0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        assert_eq!(classify(&c), Datagram::ChannelData);
        c.truncate(6);
        assert_eq!(classify(&c), Datagram::Unknown);
        assert_eq!(classify(&[0x80, 0x60, 0, 1]), Datagram::Media);
        assert_eq!(classify(&[]), Datagram::Unknown);
        assert_eq!(classify(&[0xFF; 30]), Datagram::Unknown);
    }
}
