//! Borrowed, bounds-checked reading and plain writing of message fields.

use super::WireError;

/// Reads fields from a borrowed buffer; every read checks the length first.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated {
                need: n,
                have: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let b = self.bytes(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A byte string with a u8 length prefix.
    pub fn bytes8(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u8()? as usize;
        self.bytes(n)
    }

    /// A byte string with a u16 length prefix.
    pub fn bytes16(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u16()? as usize;
        self.bytes(n)
    }

    /// A UTF-8 string with a u8 length prefix.
    pub fn str8(&mut self, field: &'static str) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes8()?).map_err(|_| WireError::Utf8 { field })
    }

    /// A UTF-8 string with a u16 length prefix.
    pub fn str16(&mut self, field: &'static str) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes16()?).map_err(|_| WireError::Utf8 { field })
    }

    /// The rest of the buffer.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing {
                count: self.buf.len(),
            })
        }
    }
}

/// Appends fields in the same layout [`Reader`] reads.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// Writes a u8-prefixed string; callers validate lengths beforehand, so
    /// an over-long value is truncated at 255 bytes rather than mis-framed.
    pub fn bytes8(&mut self, v: &[u8]) -> &mut Self {
        let v = &v[..v.len().min(u8::MAX as usize)];
        self.u8(v.len() as u8).raw(v)
    }

    /// Writes a u16-prefixed string, truncated at 65535 bytes.
    pub fn bytes16(&mut self, v: &[u8]) -> &mut Self {
        let v = &v[..v.len().min(u16::MAX as usize)];
        self.u16(v.len() as u16).raw(v)
    }

    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let mut w = Writer::new();
        w.u8(1).u16(2).u32(3).u64(4).bytes8(b"ab").bytes16(b"cde");
        let buf = w.into_vec();
        let mut r = Reader::new(&buf);
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u16().unwrap(), 2);
        assert_eq!(r.u32().unwrap(), 3);
        assert_eq!(r.u64().unwrap(), 4);
        assert_eq!(r.str8("a").unwrap(), "ab");
        assert_eq!(r.bytes16().unwrap(), b"cde");
        r.finish().unwrap();
    }

    #[test]
    fn short_reads_are_errors() {
        let mut r = Reader::new(&[5, 1, 2]);
        assert_eq!(
            r.bytes8().unwrap_err(),
            WireError::Truncated { need: 5, have: 2 }
        );
        assert!(Reader::new(&[]).u64().is_err());
    }
}
