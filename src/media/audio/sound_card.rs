//! Sound cards through cpal. Streams ask for 48 kHz mono; a card that
//! cannot do that runs at its own rate and channel count, and the
//! callbacks mix and resample. Callbacks only move samples between the
//! card and the rings (the output also copies what it plays into the echo
//! canceller's reference ring): no locks, no allocation.

use super::{AudioCounters, AudioError, DeviceSpec, PullResampler, Resampler, SAMPLE_RATE, to_i16};
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, SampleFormat, SizedSample, StreamConfig};
use rtrb::{Consumer, Producer};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Route ALSA's messages (printed on stderr by default) to our log.
fn quiet_alsa() {
    #[cfg(target_os = "linux")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        unsafe extern "C" {
            fn natter_alsa_quiet();
        }
        // SAFETY: installs a process-wide handler (a C function with the
        // variadic signature ALSA expects) once, before any ALSA call.
        ONCE.call_once(|| unsafe { natter_alsa_quiet() });
    }
}

/// Called by the C handler with one formatted ALSA message.
#[cfg(target_os = "linux")]
#[unsafe(no_mangle)]
extern "C" fn natter_alsa_message(msg: *const std::ffi::c_char) {
    if msg.is_null() {
        return;
    }
    // SAFETY: the handler passes a NUL-terminated buffer it owns for the
    // duration of this call.
    let m = unsafe { std::ffi::CStr::from_ptr(msg) };
    tracing::debug!(target: "natter::media::alsa", "{}", m.to_string_lossy());
}

fn backend(device: &str, e: impl std::fmt::Display) -> AudioError {
    AudioError::Backend {
        device: device.to_owned(),
        message: e.to_string(),
    }
}

/// `ID (name)`: either part selects the device in the config.
fn describe(d: &cpal::Device) -> String {
    match d.id() {
        Ok(id) if id.to_string() != d.to_string() => format!("{id}  ({d})"),
        _ => d.to_string(),
    }
}

pub fn list() -> Result<(Vec<String>, Vec<String>), AudioError> {
    quiet_alsa();
    let host = cpal::default_host();
    let inputs = host
        .input_devices()
        .map_err(|e| backend("(host)", e))?
        .map(|d| describe(&d))
        .collect();
    let outputs = host
        .output_devices()
        .map_err(|e| backend("(host)", e))?
        .map(|d| describe(&d))
        .collect();
    Ok((inputs, outputs))
}

fn find(spec: &DeviceSpec, input: bool) -> Result<cpal::Device, AudioError> {
    quiet_alsa();
    let host = cpal::default_host();
    match spec {
        DeviceSpec::Named(name) => {
            let devices = if input {
                host.input_devices().map(|d| d.collect::<Vec<_>>())
            } else {
                host.output_devices().map(|d| d.collect::<Vec<_>>())
            }
            .map_err(|e| backend(name, e))?;
            devices
                .into_iter()
                .find(|d| d.to_string() == *name || d.id().is_ok_and(|id| id.to_string() == *name))
                .ok_or_else(|| AudioError::NoDevice(name.clone()))
        }
        _ => if input {
            host.default_input_device()
        } else {
            host.default_output_device()
        }
        .ok_or_else(|| AudioError::NoDevice("default".into())),
    }
}

/// The best stream config: 48 kHz if the card has it, mono if it can,
/// a sample format we convert cheaply.
fn choose(
    ranges: Vec<cpal::SupportedStreamConfigRange>,
    default: Option<cpal::SupportedStreamConfig>,
) -> Option<(StreamConfig, SampleFormat)> {
    let supported = |f: SampleFormat| {
        matches!(
            f,
            SampleFormat::I16 | SampleFormat::F32 | SampleFormat::I32 | SampleFormat::U16
        )
    };
    let score = |r: &cpal::SupportedStreamConfigRange| {
        let has48 = (r.min_sample_rate()..=r.max_sample_rate()).contains(&SAMPLE_RATE);
        (has48 as u8) * 4
            + (r.channels() == 1) as u8 * 2
            + matches!(r.sample_format(), SampleFormat::I16 | SampleFormat::F32) as u8
    };
    let best = ranges
        .into_iter()
        .filter(|r| supported(r.sample_format()) && r.channels() > 0)
        .max_by_key(score);
    let (channels, rate, format) = match best {
        Some(r) => {
            let rate = if (r.min_sample_rate()..=r.max_sample_rate()).contains(&SAMPLE_RATE) {
                SAMPLE_RATE
            } else {
                let d = default
                    .as_ref()
                    .map(|d| d.sample_rate())
                    .unwrap_or(SAMPLE_RATE);
                d.clamp(r.min_sample_rate(), r.max_sample_rate())
            };
            (r.channels(), rate, r.sample_format())
        }
        None => {
            let d = default?;
            if !supported(d.sample_format()) {
                return None;
            }
            (d.channels(), d.sample_rate(), d.sample_format())
        }
    };
    Some((
        StreamConfig {
            channels,
            sample_rate: rate,
            buffer_size: cpal::BufferSize::Default,
        },
        format,
    ))
}

pub fn open_input(
    spec: &DeviceSpec,
    tx: Producer<i16>,
    counters: Arc<AudioCounters>,
) -> Result<cpal::Stream, AudioError> {
    let name = spec.to_string();
    let dev = find(spec, true)?;
    let ranges = dev
        .supported_input_configs()
        .map(|r| r.collect())
        .unwrap_or_default();
    let (config, format) = choose(ranges, dev.default_input_config().ok())
        .ok_or_else(|| backend(&name, "no usable input format"))?;
    tracing::info!(device = %name, ?config, ?format, "opening audio input");
    let err_name = name.clone();
    let on_err = move |e: cpal::Error| tracing::warn!(device = %err_name, "audio input: {e}");
    let stream = match format {
        SampleFormat::I16 => build_input::<i16>(&dev, config, tx, counters, on_err),
        SampleFormat::I32 => build_input::<i32>(&dev, config, tx, counters, on_err),
        SampleFormat::U16 => build_input::<u16>(&dev, config, tx, counters, on_err),
        _ => build_input::<f32>(&dev, config, tx, counters, on_err),
    }
    .map_err(|e| backend(&name, e))?;
    stream.play().map_err(|e| backend(&name, e))?;
    Ok(stream)
}

fn build_input<T>(
    dev: &cpal::Device,
    config: StreamConfig,
    mut tx: Producer<i16>,
    counters: Arc<AudioCounters>,
    on_err: impl FnMut(cpal::Error) + Send + 'static,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    let channels = config.channels.max(1) as usize;
    let mut rs = Resampler::new(config.sample_rate, SAMPLE_RATE);
    dev.build_input_stream::<T, _, _>(
        config,
        move |data: &[T], _| {
            let mut dropped = 0u64;
            let mut produced = 0u64;
            for frame in data.chunks(channels) {
                let x = frame.iter().map(|s| s.to_sample::<f32>()).sum::<f32>() / channels as f32;
                rs.push(x, |y| {
                    produced += 1;
                    if tx.push(to_i16(y)).is_err() {
                        dropped += 1;
                    }
                });
            }
            counters.captured.fetch_add(produced, Ordering::Relaxed);
            if dropped > 0 {
                counters.overruns.fetch_add(dropped, Ordering::Relaxed);
            }
        },
        on_err,
        None,
    )
}

pub fn open_output(
    spec: &DeviceSpec,
    rx: Consumer<i16>,
    reference: Producer<i16>,
    counters: Arc<AudioCounters>,
) -> Result<cpal::Stream, AudioError> {
    let name = spec.to_string();
    let dev = find(spec, false)?;
    let ranges = dev
        .supported_output_configs()
        .map(|r| r.collect())
        .unwrap_or_default();
    let (config, format) = choose(ranges, dev.default_output_config().ok())
        .ok_or_else(|| backend(&name, "no usable output format"))?;
    tracing::info!(device = %name, ?config, ?format, "opening audio output");
    let err_name = name.clone();
    let on_err = move |e: cpal::Error| tracing::warn!(device = %err_name, "audio output: {e}");
    let stream = match format {
        SampleFormat::I16 => build_output::<i16>(&dev, config, rx, reference, counters, on_err),
        SampleFormat::I32 => build_output::<i32>(&dev, config, rx, reference, counters, on_err),
        SampleFormat::U16 => build_output::<u16>(&dev, config, rx, reference, counters, on_err),
        _ => build_output::<f32>(&dev, config, rx, reference, counters, on_err),
    }
    .map_err(|e| backend(&name, e))?;
    stream.play().map_err(|e| backend(&name, e))?;
    Ok(stream)
}

fn build_output<T>(
    dev: &cpal::Device,
    config: StreamConfig,
    mut rx: Consumer<i16>,
    mut reference: Producer<i16>,
    counters: Arc<AudioCounters>,
    on_err: impl FnMut(cpal::Error) + Send + 'static,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + FromSample<f32>,
{
    let channels = config.channels.max(1) as usize;
    let mut rs = PullResampler::new(SAMPLE_RATE, config.sample_rate);
    let mut playing = false;
    dev.build_output_stream::<T, _, _>(
        config,
        move |data: &mut [T], _| {
            let mut missing = 0u64;
            let mut frames = 0u64;
            for frame in data.chunks_mut(channels) {
                let y = rs.pull(|| {
                    let s = match rx.pop() {
                        Ok(s) => {
                            playing = true;
                            s
                        }
                        Err(_) => {
                            missing += playing as u64;
                            0
                        }
                    };
                    // What the card plays, for the echo canceller; a
                    // full ring (nobody reading) drops it.
                    let _ = reference.push(s);
                    super::to_f32(s)
                });
                let v = T::from_sample(y);
                frame.fill(v);
                frames += 1;
            }
            counters.played.fetch_add(frames, Ordering::Relaxed);
            if missing > 0 {
                counters.underruns.fetch_add(missing, Ordering::Relaxed);
            }
        },
        on_err,
        None,
    )
}
