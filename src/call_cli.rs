//! Calls for `natter --headless`: the call flags (`--call`, `--play`,
//! `--record`, `--hangup-after`, `--auto-answer`, `--echo`), the stdin
//! commands, and the script that places one call and exits when it ends
//! (documented in the README).

use anyhow::{Context, Result, bail};
use natter::call::{CallEvent, CallId};
use natter::config::Config;
use natter::media::MediaConfig;
use natter::media::audio::DeviceSpec;
use natter::node::calls::{CallOptions, CallUpdate};
use natter::node::overlay::Command;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

/// The call commands of the headless stdin.
pub const HELP: &str = "call USER | answer | decline | hangup | mute [on|off] | hold [on|off]";

/// The call flags of `--headless`.
#[derive(Debug, Default, Clone)]
pub struct CallFlags {
    /// Call this user once online; exit when the call ends.
    pub call: Option<String>,
    /// Play this WAV file into calls (instead of [audio] input).
    pub play: Option<PathBuf>,
    /// Record what we hear to this WAV file (instead of [audio] output).
    pub record: Option<PathBuf>,
    /// Hang up this long after a call becomes active.
    pub hangup_after: Option<Duration>,
    pub auto_answer: bool,
    /// Be an echo test contact: answer every call, play back what we hear.
    pub echo: bool,
}

/// What the node runs calls with, from the config and the flags.
pub fn options(config: &Config, f: &CallFlags) -> Result<CallOptions> {
    let media = MediaConfig::from_section(&config.media);
    let call = config.call.core_config();
    let output = match &f.record {
        Some(p) => DeviceSpec::File(p.clone()),
        None => config.audio.output.clone(),
    };
    // `--play tone:HZ` is a sine; anything else a WAV file.
    let play = match &f.play {
        Some(p)
            if p.to_str()
                .is_some_and(|t| t == "tone" || t.starts_with("tone:")) =>
        {
            let spec: DeviceSpec = p.to_str().unwrap_or_default().parse()?;
            Some(spec)
        }
        Some(p) => {
            // A missing or unreadable file is a startup error, not a
            // failed call.
            natter::media::audio::read_wav(p).with_context(|| format!("--play {}", p.display()))?;
            Some(DeviceSpec::File(p.clone()))
        }
        None => None,
    };
    if f.echo {
        if f.play.is_some() {
            bail!("--echo plays back what it hears: it takes no --play");
        }
        // The echo contact needs no sound card: without --record it plays
        // into nothing.
        let output = match output {
            DeviceSpec::File(_) | DeviceSpec::Null => output,
            _ => DeviceSpec::Null,
        };
        return Ok(CallOptions::echo(output, media, call));
    }
    Ok(CallOptions {
        input: play.unwrap_or_else(|| config.audio.input.clone()),
        output,
        media,
        call,
        auto_answer: f.auto_answer || config.call.auto_answer,
        ringback: config.call.ringback,
        ringtone: config.call.ringtone,
    })
}

/// Parse a call command line; `None` when it is not one.
pub fn parse(line: &str) -> Option<Result<Command, String>> {
    let mut w = line.split_whitespace();
    let (word, arg, more) = (w.next()?, w.next(), w.next());
    let on = |arg: Option<&str>| -> Result<Option<bool>, String> {
        match arg {
            None => Ok(None),
            Some("on") => Ok(Some(true)),
            Some("off") => Ok(Some(false)),
            Some(x) => Err(format!("{word}: expected on or off, not {x:?}")),
        }
    };
    Some(match (word, arg, more) {
        ("call", Some(u), None) => Ok(Command::Call {
            username: u.to_owned(),
            reply: None,
        }),
        ("call", _, _) => Err("usage: call USER".to_owned()),
        ("answer", None, _) => Ok(Command::AcceptCall { call: None }),
        // `decline USER` declines a contact request (chat and contacts).
        ("decline", None, _) => Ok(Command::DeclineCall { call: None }),
        ("hangup" | "hang-up", None, _) => Ok(Command::HangUp { call: None }),
        ("mute", a, None) => on(a).map(|on| Command::Mute { call: None, on }),
        ("unmute", None, _) => Ok(Command::Mute {
            call: None,
            on: Some(false),
        }),
        ("hold", a, None) => on(a).map(|on| Command::Hold { call: None, on }),
        ("resume", None, _) => Ok(Command::Hold {
            call: None,
            on: Some(false),
        }),
        _ => return None,
    })
}

/// What the headless loop must do after a call update.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    None,
    /// The scripted call ended: stop the node.
    Stop,
}

/// The call the `--call` flag places, and `--hangup-after`.
#[derive(Debug, Default)]
pub struct Script {
    /// Still to call once online.
    pub pending: Option<String>,
    peer: Option<String>,
    ours: Option<CallId>,
    hangup_after: Option<Duration>,
    /// Hang this call up at this instant.
    pub hangup_at: Option<(Instant, CallId)>,
    /// The scripted call became active.
    pub connected: bool,
    /// How the scripted call ended, in words.
    pub ended: Option<String>,
}

impl Script {
    pub fn new(f: &CallFlags) -> Self {
        Script {
            pending: f.call.clone(),
            peer: f.call.as_ref().map(|u| u.to_ascii_lowercase()),
            hangup_after: f.hangup_after,
            ..Default::default()
        }
    }

    pub fn on_update(&mut self, u: &CallUpdate) -> Action {
        match u {
            CallUpdate::Dialing { id, peer }
                if self.ours.is_none() && self.peer.as_ref() == Some(peer) =>
            {
                self.ours = Some(*id);
            }
            CallUpdate::State {
                event: CallEvent::Active { id },
                ..
            } => {
                if self.ours == Some(*id) {
                    self.connected = true;
                }
                if let Some(d) = self.hangup_after {
                    self.hangup_at = Some((Instant::now() + d, *id));
                }
            }
            CallUpdate::State {
                event: CallEvent::Ended { id, reason },
                detail,
                ..
            } => {
                if self.hangup_at.is_some_and(|(_, c)| c == *id) {
                    self.hangup_at = None;
                }
                if self.ours == Some(*id) {
                    self.ended = Some(match detail {
                        Some(d) => format!("{reason} ({d})"),
                        None => reason.to_string(),
                    });
                    return Action::Stop;
                }
            }
            _ => {}
        }
        Action::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert!(matches!(
            parse("call bob"),
            Some(Ok(Command::Call { username, .. })) if username == "bob"
        ));
        assert!(matches!(parse("call"), Some(Err(_))));
        assert!(matches!(
            parse("answer"),
            Some(Ok(Command::AcceptCall { call: None }))
        ));
        assert!(matches!(
            parse("decline"),
            Some(Ok(Command::DeclineCall { call: None }))
        ));
        // A contact request, not a call.
        assert!(parse("decline bob").is_none());
        assert!(matches!(
            parse("mute"),
            Some(Ok(Command::Mute { on: None, .. }))
        ));
        assert!(matches!(
            parse("mute off"),
            Some(Ok(Command::Mute {
                on: Some(false),
                ..
            }))
        ));
        assert!(matches!(
            parse("hold on"),
            Some(Ok(Command::Hold { on: Some(true), .. }))
        ));
        assert!(matches!(parse("hold maybe"), Some(Err(_))));
        assert!(matches!(
            parse("hangup"),
            Some(Ok(Command::HangUp { call: None }))
        ));
        assert!(parse("lookup bob").is_none());
    }
}
