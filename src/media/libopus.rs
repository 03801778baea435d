//! The one safe wrapper of libopus' C interface (`opusic-sys`, which
//! builds libopus 1.6 with its DRED and deep PLC models): a mono encoder, a
//! decoder, and the decoder's Deep REDundancy (DRED) side. Every call
//! checks lengths before it crosses into C and turns libopus' error codes
//! into [`OpusError`]; nothing here panics.
//!
//! [`codec`](super::codec) builds natter's encoder and decoder on it.

use opusic_sys as ffi;
use std::ffi::c_int;
use std::ptr::NonNull;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum OpusError {
    /// libopus returned this error code (its text follows).
    #[error("libopus error {code}: {message}")]
    Code { code: i32, message: &'static str },
    #[error("libopus could not allocate its state")]
    Alloc,
    #[error("a buffer of {0} bytes or samples is too large for libopus")]
    TooLarge(usize),
}

fn check(code: c_int) -> Result<c_int, OpusError> {
    if code >= 0 {
        return Ok(code);
    }
    // SAFETY: opus_strerror returns a static NUL-terminated string for any
    // code.
    let message = unsafe { std::ffi::CStr::from_ptr(ffi::opus_strerror(code)) }
        .to_str()
        .unwrap_or("unknown error");
    Err(OpusError::Code { code, message })
}

fn len_i32(n: usize) -> Result<i32, OpusError> {
    i32::try_from(n).map_err(|_| OpusError::TooLarge(n))
}

/// A mono libopus encoder.
pub struct Encoder {
    ptr: NonNull<ffi::OpusEncoder>,
}

// SAFETY: the encoder state is plain memory owned by this value; libopus
// keeps no thread-local or shared state for it.
unsafe impl Send for Encoder {}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_encoder_create, destroyed once.
        unsafe { ffi::opus_encoder_destroy(self.ptr.as_ptr()) }
    }
}

impl Encoder {
    /// A mono VOIP encoder at `rate` Hz.
    pub fn new(rate: u32) -> Result<Self, OpusError> {
        let mut err: c_int = 0;
        // SAFETY: plain values and a valid out-pointer.
        let ptr = unsafe {
            ffi::opus_encoder_create(
                len_i32(rate as usize)?,
                1,
                ffi::OPUS_APPLICATION_VOIP,
                &mut err,
            )
        };
        check(err)?;
        Ok(Encoder {
            ptr: NonNull::new(ptr).ok_or(OpusError::Alloc)?,
        })
    }

    fn set(&mut self, request: c_int, value: i32) -> Result<(), OpusError> {
        // SAFETY: every SET request used here takes one opus_int32.
        check(unsafe { ffi::opus_encoder_ctl(self.ptr.as_ptr(), request, value) }).map(|_| ())
    }

    pub fn set_bitrate(&mut self, bits: i32) -> Result<(), OpusError> {
        self.set(ffi::OPUS_SET_BITRATE_REQUEST, bits)
    }

    pub fn set_inband_fec(&mut self, on: bool) -> Result<(), OpusError> {
        self.set(ffi::OPUS_SET_INBAND_FEC_REQUEST, on as i32)
    }

    pub fn set_voice(&mut self) -> Result<(), OpusError> {
        self.set(ffi::OPUS_SET_SIGNAL_REQUEST, ffi::OPUS_SIGNAL_VOICE)
    }

    pub fn set_complexity(&mut self, c: i32) -> Result<(), OpusError> {
        self.set(ffi::OPUS_SET_COMPLEXITY_REQUEST, c.clamp(0, 10))
    }

    pub fn set_packet_loss_perc(&mut self, p: i32) -> Result<(), OpusError> {
        self.set(ffi::OPUS_SET_PACKET_LOSS_PERC_REQUEST, p.clamp(0, 100))
    }

    /// Deep redundancy: each packet carries up to `frames` 10 ms frames
    /// of the past (0: off; libopus caps it at about a second).
    pub fn set_dred_duration(&mut self, frames: i32) -> Result<(), OpusError> {
        self.set(ffi::OPUS_SET_DRED_DURATION_REQUEST, frames.clamp(0, 100))
    }

    /// Encoder delay, samples.
    pub fn lookahead(&mut self) -> Result<usize, OpusError> {
        let mut v: i32 = 0;
        // SAFETY: a GET request takes a pointer to one opus_int32.
        check(unsafe {
            ffi::opus_encoder_ctl(
                self.ptr.as_ptr(),
                ffi::OPUS_GET_LOOKAHEAD_REQUEST,
                &mut v as *mut i32,
            )
        })?;
        Ok(v.max(0) as usize)
    }

    /// Encode one frame of `pcm` (a valid Opus frame length) into `out`;
    /// returns the packet length.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, OpusError> {
        // SAFETY: libopus reads `pcm.len()` samples (mono) and writes at
        // most `out.len()` bytes.
        let n = check(unsafe {
            ffi::opus_encode(
                self.ptr.as_ptr(),
                pcm.as_ptr(),
                len_i32(pcm.len())?,
                out.as_mut_ptr(),
                len_i32(out.len())?,
            )
        })?;
        Ok(n as usize)
    }
}

/// A mono libopus decoder with its DRED side: the DRED decoder and one
/// parsed packet's redundancy.
pub struct Decoder {
    ptr: NonNull<ffi::OpusDecoder>,
    dred_decoder: NonNull<ffi::OpusDREDDecoder>,
    dred: NonNull<ffi::OpusDRED>,
    rate: i32,
}

// SAFETY: as for the encoder: states owned by this value alone.
unsafe impl Send for Decoder {}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: each created once in `new`, destroyed once here.
        unsafe {
            ffi::opus_decoder_destroy(self.ptr.as_ptr());
            ffi::opus_dred_decoder_destroy(self.dred_decoder.as_ptr());
            ffi::opus_dred_free(self.dred.as_ptr());
        }
    }
}

impl Decoder {
    /// A mono decoder at `rate` Hz, at complexity 5: libopus then
    /// conceals with its deep PLC model. (OSCE's enhancement, complexity
    /// 6 and up, costs more CPU than a loaded 2-core machine can spare in
    /// real time and is not built.)
    pub fn new(rate: u32) -> Result<Self, OpusError> {
        let rate = len_i32(rate as usize)?;
        let mut err: c_int = 0;
        // SAFETY: plain values and valid out-pointers; each result is
        // checked for null before use, and freed on the error paths.
        unsafe {
            let ptr = ffi::opus_decoder_create(rate, 1, &mut err);
            check(err)?;
            let ptr = NonNull::new(ptr).ok_or(OpusError::Alloc)?;
            let dd = ffi::opus_dred_decoder_create(&mut err);
            let Some(dd) = NonNull::new(dd).filter(|_| err >= 0) else {
                ffi::opus_decoder_destroy(ptr.as_ptr());
                check(err)?;
                return Err(OpusError::Alloc);
            };
            let dred = ffi::opus_dred_alloc(&mut err);
            let Some(dred) = NonNull::new(dred).filter(|_| err >= 0) else {
                ffi::opus_decoder_destroy(ptr.as_ptr());
                ffi::opus_dred_decoder_destroy(dd.as_ptr());
                check(err)?;
                return Err(OpusError::Alloc);
            };
            let d = Decoder {
                ptr,
                dred_decoder: dd,
                dred,
                rate,
            };
            check(ffi::opus_decoder_ctl(
                d.ptr.as_ptr(),
                ffi::OPUS_SET_COMPLEXITY_REQUEST,
                5i32,
            ))?;
            Ok(d)
        }
    }

    /// Decode `packet` into `out` (its frame's length at most); an empty
    /// packet conceals `out.len()` samples; `fec` decodes the LBRR copy
    /// of the frame before `packet` instead. Returns the samples written.
    pub fn decode(
        &mut self,
        packet: &[u8],
        out: &mut [i16],
        fec: bool,
    ) -> Result<usize, OpusError> {
        let data = if packet.is_empty() {
            std::ptr::null()
        } else {
            packet.as_ptr()
        };
        // SAFETY: libopus reads `packet.len()` bytes (none for null) and
        // writes at most `out.len()` mono samples.
        let n = check(unsafe {
            ffi::opus_decode(
                self.ptr.as_ptr(),
                data,
                len_i32(packet.len())?,
                out.as_mut_ptr(),
                len_i32(out.len())?,
                fec as c_int,
            )
        })?;
        Ok(n as usize)
    }

    /// Parse the DRED redundancy in `packet` (kept until the next parse),
    /// as far as `want` samples back; returns how many samples before the
    /// packet's start it covers (0: none).
    pub fn parse_dred(&mut self, packet: &[u8], want: usize) -> Result<usize, OpusError> {
        if packet.is_empty() {
            return Ok(0);
        }
        let mut end: c_int = 0;
        // SAFETY: libopus reads `packet.len()` bytes into the DRED state
        // this value owns.
        let n = check(unsafe {
            ffi::opus_dred_parse(
                self.dred_decoder.as_ptr(),
                self.dred.as_ptr(),
                packet.as_ptr(),
                len_i32(packet.len())?,
                len_i32(want)?.min(self.rate),
                self.rate,
                &mut end,
                0,
            )
        })?;
        Ok(n as usize)
    }

    /// Decode `out.len()` samples from the last parsed redundancy, ending
    /// `offset` samples before the start of the packet it came from.
    pub fn decode_dred(&mut self, offset: usize, out: &mut [i16]) -> Result<usize, OpusError> {
        // SAFETY: the DRED state was filled by `parse_dred` (an unparsed
        // one decodes as silence); libopus writes `out.len()` samples.
        let n = check(unsafe {
            ffi::opus_decoder_dred_decode(
                self.ptr.as_ptr(),
                self.dred.as_ptr(),
                len_i32(offset)?,
                out.as_mut_ptr(),
                len_i32(out.len())?,
            )
        })?;
        Ok(n as usize)
    }
}

/// Samples in `packet` at `rate` Hz, without decoding it.
pub fn samples_in(packet: &[u8], rate: u32) -> Result<usize, OpusError> {
    if packet.is_empty() {
        return Ok(0);
    }
    // SAFETY: libopus reads at most `packet.len()` bytes.
    let n = check(unsafe {
        ffi::opus_packet_get_nb_samples(
            packet.as_ptr(),
            len_i32(packet.len())?,
            len_i32(rate as usize)?,
        )
    })?;
    Ok(n as usize)
}

/// Whether `packet` carries LBRR (in-band FEC) data for the frame before.
pub fn has_lbrr(packet: &[u8]) -> bool {
    let Ok(len) = len_i32(packet.len()) else {
        return false;
    };
    if packet.is_empty() {
        return false;
    }
    // SAFETY: libopus reads at most `len` bytes and validates the packet
    // before looking into it.
    unsafe { ffi::opus_packet_has_lbrr(packet.as_ptr(), len) == 1 }
}
