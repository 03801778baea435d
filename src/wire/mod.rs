//! Wire format: versioned, length-prefixed frames and the borrowed byte
//! reader/writer every message codec in natter is built on.
//!
//! A frame is `len: u16 BE | version: u8 | kind: u8 | payload`, where `len`
//! counts everything after itself. Decoders borrow from the input, check
//! lengths before reading and return [`WireError`]; they never panic, whatever
//! the bytes. Over TCP frames follow each other on the stream; over UDP one
//! datagram carries one frame.
//!
//! [`stun`] is the STUN layer under nat, relay, ice and media: the STUN
//! header, TURN ChannelData and the demultiplexing of the shared UDP socket.

pub mod addr;
pub mod prefix;
mod reader;
pub mod stun;

pub use prefix::IpPrefix;
pub use reader::{Reader, Writer};

use thiserror::Error;

/// The only frame version this build speaks.
pub const VERSION: u8 = 1;
/// Hard limit on a frame body (version + kind + payload), in bytes.
pub const MAX_FRAME: usize = 16 * 1024;
/// Bytes before the body: the length prefix.
pub const HEADER: usize = 2;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("truncated: needed {need} more bytes, {have} left")]
    Truncated { need: usize, have: usize },
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("frame too short to hold a version and a kind ({len} bytes)")]
    Runt { len: usize },
    #[error("unsupported wire version {got} (this build speaks version {VERSION})")]
    UnknownVersion { got: u8 },
    #[error("unknown {what} type {got}")]
    UnknownType { what: &'static str, got: u8 },
    #[error("{count} trailing bytes after the message")]
    Trailing { count: usize },
    #[error("invalid UTF-8 in {field}")]
    Utf8 { field: &'static str },
    #[error("invalid value for {field}")]
    Invalid { field: &'static str },
}

/// One decoded frame, borrowing its payload from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Decode one whole frame from exactly `buf` (one datagram).
    pub fn decode(buf: &'a [u8]) -> Result<Frame<'a>, WireError> {
        match Self::decode_prefix(buf)? {
            Some((frame, used)) if used == buf.len() => Ok(frame),
            Some((_, used)) => Err(WireError::Trailing {
                count: buf.len() - used,
            }),
            None => Err(WireError::Truncated {
                need: declared_len(buf).map_or(HEADER, |l| HEADER + l),
                have: buf.len(),
            }),
        }
    }

    /// Decode the first frame of a stream buffer. `Ok(None)` means more
    /// bytes are needed; the second value is how many bytes the frame used.
    /// An oversized length is rejected before any body is awaited, so a peer
    /// cannot make us buffer more than [`MAX_FRAME`].
    pub fn decode_prefix(buf: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, WireError> {
        let Some(len) = declared_len(buf) else {
            return Ok(None);
        };
        if len > MAX_FRAME {
            return Err(WireError::TooLarge {
                len,
                max: MAX_FRAME,
            });
        }
        if len < 2 {
            return Err(WireError::Runt { len });
        }
        let Some(body) = buf.get(HEADER..HEADER + len) else {
            return Ok(None);
        };
        let version = body[0];
        if version != VERSION {
            return Err(WireError::UnknownVersion { got: version });
        }
        Ok(Some((
            Frame {
                kind: body[1],
                payload: &body[2..],
            },
            HEADER + len,
        )))
    }

    /// Encode a frame; fails only when the payload is over the limit.
    pub fn encode(kind: u8, payload: &[u8]) -> Result<Vec<u8>, WireError> {
        let len = payload.len() + 2;
        if len > MAX_FRAME {
            return Err(WireError::TooLarge {
                len,
                max: MAX_FRAME,
            });
        }
        let mut out = Vec::with_capacity(HEADER + len);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.push(VERSION);
        out.push(kind);
        out.extend_from_slice(payload);
        Ok(out)
    }
}

fn declared_len(buf: &[u8]) -> Option<usize> {
    let b = buf.get(..HEADER)?;
    Some(u16::from_be_bytes([b[0], b[1]]) as usize)
}

/// Lower-case hex, for keys in config files and logs of public values.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Parse hex into exactly `N` bytes.
pub fn hex_decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.trim().as_bytes();
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip() {
        let bytes = Frame::encode(7, b"hello").unwrap();
        let f = Frame::decode(&bytes).unwrap();
        assert_eq!(f.kind, 7);
        assert_eq!(f.payload, b"hello");
    }

    #[test]
    fn stream_needs_more_then_decodes() {
        let bytes = Frame::encode(1, &[9; 100]).unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(Frame::decode_prefix(&bytes[..cut]).unwrap(), None);
        }
        let (_, used) = Frame::decode_prefix(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn oversized_rejected_from_header_alone() {
        let hdr = (MAX_FRAME as u16 + 1).to_be_bytes();
        assert!(matches!(
            Frame::decode_prefix(&hdr),
            Err(WireError::TooLarge { .. })
        ));
        assert!(Frame::encode(1, &vec![0; MAX_FRAME]).is_err());
    }

    #[test]
    fn unknown_version_is_named() {
        let mut bytes = Frame::encode(1, b"x").unwrap();
        bytes[2] = 9;
        let err = Frame::decode(&bytes).unwrap_err();
        assert_eq!(err, WireError::UnknownVersion { got: 9 });
        assert!(err.to_string().contains("unsupported wire version 9"));
    }

    #[test]
    fn trailing_and_runt() {
        let mut bytes = Frame::encode(1, b"x").unwrap();
        bytes.push(0);
        assert_eq!(
            Frame::decode(&bytes).unwrap_err(),
            WireError::Trailing { count: 1 }
        );
        assert_eq!(
            Frame::decode(&[0, 1, 1]).unwrap_err(),
            WireError::Runt { len: 1 }
        );
    }

    #[test]
    fn hex_round_trip() {
        let k = [0xab_u8; 32];
        assert_eq!(hex_decode::<32>(&hex_encode(&k)), Some(k));
        assert_eq!(hex_decode::<2>("zz00"), None);
        assert_eq!(hex_decode::<2>("00"), None);
    }
}
