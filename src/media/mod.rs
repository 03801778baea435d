//! Voice: audio devices, the Opus codec, encrypted media packets, the
//! adaptive jitter buffer and the time-scale modification that follows
//! it, receiver reports, and the sans-IO
//! [`MediaSession`] that ties them together for one call.
//!
//! Layering: [`audio`] owns device threads and the lock-free rings;
//! [`processing`] cleans the microphone path (echo, noise, gain); the
//! session core is sans-IO (bytes, PCM and `now` in; datagrams, PCM,
//! events and the next timer out) and runs off the audio thread, in the
//! thin tokio [`driver`].

pub mod audio;
pub mod codec;
pub mod jitter;
pub mod libopus;
pub mod packet;
pub mod processing;
pub mod quality;
pub mod report;
pub mod session;
pub mod tsm;

pub use packet::{MediaKeys, Side};
pub use session::{MediaConfig, MediaError, MediaEvent, MediaSession, MediaStats};
pub mod driver;
pub mod impair;
pub mod mixer;
