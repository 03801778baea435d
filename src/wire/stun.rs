//! The STUN layer of the base, and the demultiplexing of the one UDP
//! socket every node speaks on (after RFC 7983).
//!
//! It owns the STUN header (magic cookie, message class and method, RFC
//! 8489 §5), the borrowing header read [`peek`] that nat, relay and ice
//! route on without decoding attributes, TURN ChannelData framing (RFC 8656
//! §12.4), and [`classify`], which tells the protocols on the shared socket
//! apart from their first bytes:
//!
//! | first bytes | [`Datagram`] |
//! |---|---|
//! | `len:u16 = n-2, version 1, kind 16..=19` | [`Datagram::Link`] (natter link frame) |
//! | top two bits `00`, cookie `0x2112A442` at offset 4, length `n-20` | [`Datagram::Stun`] (STUN / TURN message) |
//! | channel `0x4000..=0x7FFF`, `len:u16` at offset 2 fits the datagram | [`Datagram::ChannelData`] |
//! | `0x80..=0xBF` | [`Datagram::Media`] (RTP-shaped, see the media module) |
//!
//! A link frame is recognised first: its length prefix must equal the
//! datagram length, which a STUN or ChannelData header does not satisfy
//! for any message that fits in a datagram. Channels above `0x4FFF` are
//! RFC 5766's; RFC 8656 dropped them but older clients still bind them,
//! and nothing else on the socket starts `0x50..=0x7F`.
//!
//! Full STUN messages are encoded and decoded with `stun-rs` by the cores;
//! everything here borrows its input, checks lengths first and never
//! panics.

use super::VERSION;
use std::ops::RangeInclusive;
use thiserror::Error;

/// The STUN magic cookie (RFC 8489 §5).
pub const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// Header length of every STUN message.
pub const HEADER_LEN: usize = 20;
/// Channel numbers a ChannelData message may carry: RFC 8656's
/// `0x4000..=0x4FFF` and RFC 5766's up to `0x7FFF`.
pub const CHANNELS: RangeInclusive<u16> = 0x4000..=0x7FFF;
/// ChannelData header: channel number and length.
pub const CHANNEL_HEADER: usize = 4;
/// Link frame kinds ([`crate::link`]'s INIT, RESP, FIN, DATA, COOKIE,
/// RENEW and BUSY).
pub const LINK_KINDS: RangeInclusive<u8> = 16..=22;
/// First bytes of a media packet (RTP version 2).
pub const MEDIA_FIRST_BYTES: RangeInclusive<u8> = 0x80..=0xBF;

/// STUN methods natter routes on (RFC 8489, RFC 8656 §18).
pub mod method {
    pub const BINDING: u16 = 0x001;
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
    pub const SEND: u16 = 0x006;
    pub const DATA: u16 = 0x007;
    pub const CREATE_PERMISSION: u16 = 0x008;
    pub const CHANNEL_BIND: u16 = 0x009;

    /// Whether `m` is a TURN method (for the relay, not the STUN server).
    pub const fn is_turn(m: u16) -> bool {
        matches!(
            m,
            ALLOCATE | REFRESH | SEND | DATA | CREATE_PERMISSION | CHANNEL_BIND
        )
    }
}

/// Why bytes are not a STUN header or a ChannelData message.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum StunError {
    #[error("{got} bytes is shorter than a {need}-byte header")]
    Short { need: usize, got: usize },
    #[error("first byte {0:#04x} does not start a STUN message")]
    TopBits(u8),
    #[error("STUN message without the magic cookie")]
    NoCookie,
    #[error("length field {declared} does not fit the {got} bytes after the header")]
    BadLength { declared: usize, got: usize },
    #[error("channel number {0:#06x} outside 0x4000-0x7fff")]
    BadChannel(u16),
}

/// The message class (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// A STUN header, read without decoding attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    pub class: Class,
    pub method: u16,
    /// Attribute bytes after the header.
    pub length: u16,
    pub transaction: [u8; 12],
}

impl Header {
    /// Read the header of a STUN message that fills `d` exactly (one
    /// datagram, or one message cut from a stream).
    pub fn read(d: &[u8]) -> Result<Header, StunError> {
        if d.len() < HEADER_LEN {
            return Err(StunError::Short {
                need: HEADER_LEN,
                got: d.len(),
            });
        }
        if d[0] & 0xC0 != 0 {
            return Err(StunError::TopBits(d[0]));
        }
        if d[4..8] != MAGIC_COOKIE {
            return Err(StunError::NoCookie);
        }
        let t = u16::from_be_bytes([d[0], d[1]]);
        let length = u16::from_be_bytes([d[2], d[3]]);
        if !length.is_multiple_of(4) || HEADER_LEN + length as usize != d.len() {
            return Err(StunError::BadLength {
                declared: length as usize,
                got: d.len() - HEADER_LEN,
            });
        }
        let class = match ((t >> 7) & 0b10) | ((t >> 4) & 0b01) {
            0 => Class::Request,
            1 => Class::Indication,
            2 => Class::Success,
            _ => Class::Error,
        };
        let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
        let mut transaction = [0u8; 12];
        transaction.copy_from_slice(&d[8..HEADER_LEN]);
        Ok(Header {
            class,
            method,
            length,
            transaction,
        })
    }

    /// Whether the method is TURN's rather than Binding.
    pub fn is_turn(&self) -> bool {
        method::is_turn(self.method)
    }

    /// The message type field: method and class bits interleaved.
    pub fn message_type(&self) -> u16 {
        let m = self.method & 0x0FFF;
        let c = match self.class {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        };
        (m & 0x000F)
            | ((m & 0x0070) << 1)
            | ((m & 0x0F80) << 2)
            | ((c & 0b01) << 4)
            | ((c & 0b10) << 7)
    }

    /// The 20 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..2].copy_from_slice(&self.message_type().to_be_bytes());
        h[2..4].copy_from_slice(&self.length.to_be_bytes());
        h[4..8].copy_from_slice(&MAGIC_COOKIE);
        h[8..].copy_from_slice(&self.transaction);
        h
    }
}

/// The header of a STUN message that fills `d` exactly, or `None`.
pub fn peek(d: &[u8]) -> Option<Header> {
    Header::read(d).ok()
}

/// A ChannelData message, borrowed from its datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    pub channel: u16,
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Decode one message; trailing padding (at most three bytes) is
    /// allowed over UDP and required over TCP.
    pub fn decode(b: &'a [u8]) -> Result<Self, StunError> {
        if b.len() < CHANNEL_HEADER {
            return Err(StunError::Short {
                need: CHANNEL_HEADER,
                got: b.len(),
            });
        }
        let channel = u16::from_be_bytes([b[0], b[1]]);
        if !CHANNELS.contains(&channel) {
            return Err(StunError::BadChannel(channel));
        }
        let len = u16::from_be_bytes([b[2], b[3]]) as usize;
        let got = b.len() - CHANNEL_HEADER;
        if len > got || got > len + 3 {
            return Err(StunError::BadLength { declared: len, got });
        }
        Ok(ChannelData {
            channel,
            data: &b[CHANNEL_HEADER..CHANNEL_HEADER + len],
        })
    }

    /// Encode, padded to four bytes when `pad` (stream transports); data
    /// beyond 65535 bytes is cut.
    pub fn encode(channel: u16, data: &[u8], pad: bool) -> Vec<u8> {
        let len = data.len().min(u16::MAX as usize);
        let padded = if pad { (len + 3) & !3 } else { len };
        let mut v = Vec::with_capacity(CHANNEL_HEADER + padded);
        v.extend_from_slice(&channel.to_be_bytes());
        v.extend_from_slice(&(len as u16).to_be_bytes());
        v.extend_from_slice(&data[..len]);
        v.resize(CHANNEL_HEADER + padded, 0);
        v
    }
}

/// What a datagram on the shared socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// A natter link frame.
    Link,
    /// A STUN or TURN message that fills the datagram.
    Stun(Header),
    /// TURN ChannelData.
    ChannelData(ChannelData<'a>),
    /// A media packet.
    Media,
    /// None of the above: dropped and counted by the caller.
    Unknown,
}

/// Classify one datagram by its first bytes (see the module docs).
pub fn classify(d: &[u8]) -> Datagram<'_> {
    if d.len() >= 4 {
        let len = u16::from_be_bytes([d[0], d[1]]) as usize;
        if len + 2 == d.len() && d[2] == VERSION && LINK_KINDS.contains(&d[3]) {
            return Datagram::Link;
        }
    }
    match d.first() {
        Some(0x00..=0x3F) => peek(d).map_or(Datagram::Unknown, Datagram::Stun),
        Some(0x40..=0x7F) => {
            ChannelData::decode(d).map_or(Datagram::Unknown, Datagram::ChannelData)
        }
        Some(b) if MEDIA_FIRST_BYTES.contains(b) => Datagram::Media,
        _ => Datagram::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stun(t: u16, attrs: usize) -> Vec<u8> {
        let mut s = vec![0u8; HEADER_LEN + attrs];
        s[0..2].copy_from_slice(&t.to_be_bytes());
        s[2..4].copy_from_slice(&(attrs as u16).to_be_bytes());
        s[4..8].copy_from_slice(&MAGIC_COOKIE);
        s[8..20].copy_from_slice(&[7; 12]);
        s
    }

    #[test]
    fn header_class_and_method() {
        // Binding request, Allocate error, ChannelBind success, Data
        // indication, Refresh success, ChannelBind error.
        for (t, m, c) in [
            (0x0001u16, method::BINDING, Class::Request),
            (0x0113, method::ALLOCATE, Class::Error),
            (0x0109, method::CHANNEL_BIND, Class::Success),
            (0x0017, method::DATA, Class::Indication),
            (0x0104, method::REFRESH, Class::Success),
            (0x0119, method::CHANNEL_BIND, Class::Error),
            (0x0016, method::SEND, Class::Indication),
        ] {
            let s = stun(t, 8);
            let h = peek(&s).unwrap();
            assert_eq!((h.method, h.class), (m, c), "{t:#06x}");
            assert_eq!((h.length, h.transaction), (8, [7; 12]));
            assert_eq!(h.message_type(), t);
            assert_eq!(h.encode()[..], s[..HEADER_LEN]);
            assert_eq!(h.is_turn(), m != method::BINDING);
        }
    }

    #[test]
    fn header_errors() {
        let s = stun(0x0001, 4);
        assert_eq!(
            Header::read(&s[..19]),
            Err(StunError::Short { need: 20, got: 19 })
        );
        assert_eq!(
            Header::read(&s[..23]),
            Err(StunError::BadLength {
                declared: 4,
                got: 3
            })
        );
        let mut long = s.clone();
        long.extend_from_slice(&[0; 4]);
        assert!(matches!(
            Header::read(&long),
            Err(StunError::BadLength { .. })
        ));
        let mut odd = stun(0x0001, 3);
        assert!(matches!(
            Header::read(&odd),
            Err(StunError::BadLength { .. })
        ));
        odd[0] = 0x40;
        assert_eq!(Header::read(&odd), Err(StunError::TopBits(0x40)));
        let mut bad = s.clone();
        bad[5] ^= 1;
        assert_eq!(Header::read(&bad), Err(StunError::NoCookie));
        assert_eq!(peek(&[]), None);
    }

    #[test]
    fn channel_data_round_trip_and_limits() {
        let m = ChannelData::encode(0x4001, b"hello", false);
        assert_eq!(m.len(), 9);
        assert_eq!(
            ChannelData::decode(&m).unwrap(),
            ChannelData {
                channel: 0x4001,
                data: b"hello"
            }
        );
        let p = ChannelData::encode(0x4FFF, b"hello", true);
        assert_eq!(p.len(), 12);
        assert_eq!(ChannelData::decode(&p).unwrap().data, b"hello");
        assert!(ChannelData::decode(&m[..8]).is_err());
        let mut long = p.clone();
        long.push(0);
        assert!(ChannelData::decode(&long).is_err());
        assert_eq!(
            ChannelData::decode(&[0x80, 0, 0, 0]),
            Err(StunError::BadChannel(0x8000))
        );
        assert_eq!(
            ChannelData::decode(&[0x40, 0]),
            Err(StunError::Short { need: 4, got: 2 })
        );
    }

    #[test]
    fn classify_each_protocol() {
        let mut link = vec![0u8; 40];
        link[0..2].copy_from_slice(&38u16.to_be_bytes());
        link[2] = VERSION;
        link[3] = 19;
        assert_eq!(classify(&link), Datagram::Link);
        link[3] = 23;
        assert_eq!(classify(&link), Datagram::Unknown);

        let s = stun(0x0001, 0);
        assert_eq!(classify(&s), Datagram::Stun(peek(&s).unwrap()));
        // A STUN header whose length disagrees with the datagram.
        assert_eq!(classify(&s[..19]), Datagram::Unknown);

        let mut c = vec![0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        assert_eq!(
            classify(&c),
            Datagram::ChannelData(ChannelData {
                channel: 0x4000,
                data: &[1, 2, 3, 4, 5]
            })
        );
        // RFC 5766's higher channels.
        c[0] = 0x7F;
        assert!(matches!(classify(&c), Datagram::ChannelData(_)));
        c.truncate(6);
        assert_eq!(classify(&c), Datagram::Unknown);

        assert_eq!(classify(&[0x80, 0x60, 0, 1]), Datagram::Media);
        assert_eq!(classify(&[0xBF]), Datagram::Media);
        assert_eq!(classify(&[]), Datagram::Unknown);
        assert_eq!(classify(&[0xC0; 30]), Datagram::Unknown);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(d in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = classify(&d);
            let _ = Header::read(&d);
            let _ = ChannelData::decode(&d);
        }

        #[test]
        fn any_header_round_trips(
            method in 0u16..0x1000,
            class in 0usize..4,
            words in 0u16..300,
            transaction in any::<[u8; 12]>(),
        ) {
            let h = Header {
                class: [Class::Request, Class::Indication, Class::Success, Class::Error][class],
                method,
                length: words * 4,
                transaction,
            };
            let mut d = h.encode().to_vec();
            d.resize(HEADER_LEN + h.length as usize, 0xAA);
            prop_assert_eq!(Header::read(&d), Ok(h));
            // Link frames, which are checked first, never take a STUN
            // message of this size.
            if d.len() < 256 + HEADER_LEN {
                prop_assert_eq!(classify(&d), Datagram::Stun(h));
            }
        }

        #[test]
        fn any_channel_data_classifies(
            channel in CHANNELS,
            data in proptest::collection::vec(any::<u8>(), 0..300),
            pad in any::<bool>(),
        ) {
            let m = ChannelData::encode(channel, &data, pad);
            let want = ChannelData { channel, data: &data };
            prop_assert_eq!(ChannelData::decode(&m), Ok(want));
            prop_assert_eq!(classify(&m), Datagram::ChannelData(want));
        }
    }
}
