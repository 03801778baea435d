//! TURN framing on streams: the framer that cuts a TCP byte stream into
//! STUN and ChannelData messages (RFC 8656 §12.5: over TCP, ChannelData is
//! padded to a multiple of four bytes), and the channel numbers the relay
//! binds and accepts. The STUN header and ChannelData themselves are the
//! base's ([`crate::wire::stun`]); ChannelData is re-exported here. Everything here
//! borrows its input, checks lengths first and never panics.

pub use crate::wire::stun::ChannelData;
use crate::wire::stun::{CHANNELS, HEADER_LEN as STUN_HEADER};
use thiserror::Error;

/// Channel numbers our client binds (RFC 8656 §12).
pub const CHANNEL_MIN: u16 = *CHANNELS.start();
pub const CHANNEL_MAX: u16 = 0x4FFF;
/// Channel numbers the server accepts: RFC 5766 allowed up to 0x7FFF, and
/// clients written to it (coturn's turnutils_uclient) still use them.
pub const CHANNEL_MAX_ACCEPTED: u16 = *CHANNELS.end();
/// Largest message a stream may carry: a STUN or ChannelData length field
/// is 16 bits, plus its header and padding.
pub const MAX_MESSAGE: usize = 65_535 + STUN_HEADER + 3;

/// Why a byte stream cannot be TURN.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FramingError {
    #[error("STUN length field {0} is not a multiple of four")]
    BadLength(usize),
    #[error("stream byte {0:#04x} starts neither STUN nor ChannelData")]
    NotTurn(u8),
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
                return Err(FramingError::BadLength(len));
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
    fn framer_cuts_a_stream_anywhere() {
        let mut stream = Vec::new();
        let mut stun = vec![0u8; 28];
        stun[1] = 3;
        stun[3] = 8;
        stun[4..8].copy_from_slice(&crate::wire::stun::MAGIC_COOKIE);
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
