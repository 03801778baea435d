//! TURN framing below the STUN codec: ChannelData messages (RFC 8656
//! §12.4), the STUN header fields the relay dispatches on, and the framer
//! that cuts a TCP byte stream into STUN and ChannelData messages (RFC 8656
//! §12.5: over TCP, ChannelData is padded to a multiple of four bytes).
//! Everything here borrows its input, checks lengths first and never
//! panics.

use thiserror::Error;

/// The STUN magic cookie (RFC 8489).
pub const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// STUN header length.
pub const STUN_HEADER: usize = 20;
/// Channel numbers our client binds (RFC 8656 §12).
pub const CHANNEL_MIN: u16 = 0x4000;
pub const CHANNEL_MAX: u16 = 0x4FFF;
/// Channel numbers the server accepts: RFC 5766 allowed up to 0x7FFF, and
/// clients written to it (coturn's turnutils_uclient) still use them.
pub const CHANNEL_MAX_ACCEPTED: u16 = 0x7FFF;
/// Largest message a stream may carry: a STUN or ChannelData length field
/// is 16 bits, plus its header and padding.
pub const MAX_MESSAGE: usize = 65_535 + STUN_HEADER + 3;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FramingError {
    #[error("message too short")]
    Short,
    #[error("channel number {0:#06x} outside 0x4000-0x7fff")]
    BadChannel(u16),
    #[error("length field {declared} does not match the {got} bytes received")]
    BadLength { declared: usize, got: usize },
    #[error("stream byte {0:#04x} starts neither STUN nor ChannelData")]
    NotTurn(u8),
    #[error("STUN message without the magic cookie")]
    NoCookie,
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
    pub fn decode(b: &'a [u8]) -> Result<Self, FramingError> {
        if b.len() < 4 {
            return Err(FramingError::Short);
        }
        let channel = u16::from_be_bytes([b[0], b[1]]);
        if !(CHANNEL_MIN..=CHANNEL_MAX_ACCEPTED).contains(&channel) {
            return Err(FramingError::BadChannel(channel));
        }
        let len = u16::from_be_bytes([b[2], b[3]]) as usize;
        if len + 4 > b.len() || b.len() > len + 4 + 3 {
            return Err(FramingError::BadLength {
                declared: len,
                got: b.len() - 4,
            });
        }
        Ok(ChannelData {
            channel,
            data: &b[4..4 + len],
        })
    }

    /// Encode, padded to four bytes when `pad` (stream transports).
    pub fn encode(channel: u16, data: &[u8], pad: bool) -> Vec<u8> {
        let len = data.len().min(u16::MAX as usize);
        let padded = if pad { (len + 3) & !3 } else { len };
        let mut v = Vec::with_capacity(4 + padded);
        v.extend_from_slice(&channel.to_be_bytes());
        v.extend_from_slice(&(len as u16).to_be_bytes());
        v.extend_from_slice(&data[..len]);
        v.resize(4 + padded, 0);
        v
    }
}

/// STUN message classes, from the type field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// The fields of a STUN header the relay dispatches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StunHeader {
    pub method: u16,
    pub class: Class,
    /// Length of the attributes, excluding the header.
    pub length: usize,
    pub transaction: [u8; 12],
}

impl StunHeader {
    pub fn peek(b: &[u8]) -> Result<Self, FramingError> {
        if b.len() < STUN_HEADER {
            return Err(FramingError::Short);
        }
        if b[0] & 0xC0 != 0 {
            return Err(FramingError::NotTurn(b[0]));
        }
        if b[4..8] != MAGIC_COOKIE {
            return Err(FramingError::NoCookie);
        }
        let t = u16::from_be_bytes([b[0], b[1]]);
        let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
        let class = match ((t >> 7) & 0x2) | ((t >> 4) & 0x1) {
            0 => Class::Request,
            1 => Class::Indication,
            2 => Class::Success,
            _ => Class::Error,
        };
        let mut transaction = [0u8; 12];
        transaction.copy_from_slice(&b[8..20]);
        Ok(StunHeader {
            method,
            class,
            length: u16::from_be_bytes([b[2], b[3]]) as usize,
            transaction,
        })
    }
}

/// TURN methods (RFC 8656 §18): the STUN method numbers natter routes on.
pub use crate::nat::stun::method;

/// Whether a datagram (already classified as STUN) is a TURN message for
/// the relay rather than a Binding for the STUN server.
pub fn is_turn_method(b: &[u8]) -> bool {
    StunHeader::peek(b).is_ok_and(|h| {
        matches!(
            h.method,
            method::ALLOCATE
                | method::REFRESH
                | method::SEND
                | method::DATA
                | method::CREATE_PERMISSION
                | method::CHANNEL_BIND
        )
    })
}

/// Length of the first message in `b` if it is complete, `Ok(None)` if
/// more bytes are needed, an error if the stream cannot be TURN.
pub fn message_len(b: &[u8], padded_channel_data: bool) -> Result<Option<usize>, FramingError> {
    let Some(&first) = b.first() else {
        return Ok(None);
    };
    if b.len() < 4 {
        return match first >> 6 {
            0 | 1 => Ok(None),
            _ => Err(FramingError::NotTurn(first)),
        };
    }
    let len = u16::from_be_bytes([b[2], b[3]]) as usize;
    let total = match first >> 6 {
        0 => {
            if !len.is_multiple_of(4) {
                return Err(FramingError::BadLength {
                    declared: len,
                    got: len,
                });
            }
            STUN_HEADER + len
        }
        1 => {
            if padded_channel_data {
                4 + ((len + 3) & !3)
            } else {
                4 + len
            }
        }
        _ => return Err(FramingError::NotTurn(first)),
    };
    Ok((b.len() >= total).then_some(total))
}

/// Cuts a TCP byte stream into whole STUN and ChannelData messages.
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
    start: usize,
}

impl StreamFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 65_536 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, `Ok(None)` when more bytes are needed, an
    /// error when the stream is not TURN (the caller closes it).
    pub fn next_message(&mut self) -> Result<Option<&[u8]>, FramingError> {
        let rest = &self.buf[self.start..];
        match message_len(rest, true)? {
            Some(n) => {
                let s = self.start;
                self.start += n;
                Ok(Some(&self.buf[s..s + n]))
            }
            None => Ok(None),
        }
    }

    /// Bytes held waiting for the rest of a message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Err(FramingError::BadChannel(0x8000))
        );
    }

    #[test]
    fn header_fields() {
        // Allocate request (0x0003), error response to ChannelBind (0x0119),
        // Data indication (0x0017).
        for (t, m, c) in [
            (0x0003u16, method::ALLOCATE, Class::Request),
            (0x0119, method::CHANNEL_BIND, Class::Error),
            (0x0017, method::DATA, Class::Indication),
            (0x0104, method::REFRESH, Class::Success),
        ] {
            let mut b = [0u8; 20];
            b[0..2].copy_from_slice(&t.to_be_bytes());
            b[4..8].copy_from_slice(&MAGIC_COOKIE);
            let h = StunHeader::peek(&b).unwrap();
            assert_eq!((h.method, h.class), (m, c), "{t:#06x}");
        }
        let mut b = [0u8; 20];
        b[1] = 1;
        b[4..8].copy_from_slice(&MAGIC_COOKIE);
        assert!(!is_turn_method(&b));
        b[1] = 3;
        assert!(is_turn_method(&b));
    }

    #[test]
    fn framer_cuts_a_stream_anywhere() {
        let mut stream = Vec::new();
        let mut stun = vec![0u8; 28];
        stun[1] = 3;
        stun[3] = 8;
        stun[4..8].copy_from_slice(&MAGIC_COOKIE);
        stream.extend_from_slice(&stun);
        stream.extend(ChannelData::encode(0x4000, b"abcde", true));
        stream.extend(ChannelData::encode(0x4001, b"", true));
        for step in 1..stream.len() {
            let mut f = StreamFramer::new();
            let mut got = Vec::new();
            for chunk in stream.chunks(step) {
                f.push(chunk);
                while let Some(m) = f.next_message().unwrap() {
                    got.push(m.to_vec());
                }
            }
            assert_eq!(got.len(), 3, "step {step}");
            assert_eq!(got[0], stun);
            assert_eq!(ChannelData::decode(&got[1]).unwrap().data, b"abcde");
            assert_eq!(f.buffered(), 0);
        }
        let mut f = StreamFramer::new();
        f.push(&[0xC0, 0, 0, 0]);
        assert!(f.next_message().is_err());
    }
}
