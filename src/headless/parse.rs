//! The headless stdin grammar: one line to one node API [`Command`], or a
//! call verb the driver aims at the current call. A line that does not
//! parse gives an error that shows the usage.

use natter::node::api::{Command, Status, TEST_ENVELOPE_KIND};
use thiserror::Error;

/// Every stdin command, for error messages.
pub const USAGE: &str = "lookup USER | watch USER | status online|away|dnd|invisible|offline [MESSAGE] | relay | connect USER | ice-offer USER HEX | ice-answer USER HEX | envelope USER TEXT | msg USER TEXT | add USER [GREETING] | accept USER | decline USER | remove USER | block USER | unblock USER | contacts | history USER [N] | calls [N] | calls seen [USER] | call USER | answer | decline | hangup | mute [on|off] | unmute | hold [on|off] | resume | send-file USER PATH | file accept ID [PATH] | file decline ID | file cancel ID | files | conf start USER... | conf add USER | conf accept | conf leave | conf mute|unmute [USER] | quit";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("unknown command {0:?}: {USAGE}")]
    Unknown(String),
    #[error("usage: {0}")]
    Usage(&'static str),
    #[error("{0}")]
    Invalid(String),
}

/// A call verb without a call id: the driver applies it to the current
/// call (`None` for mute and hold: toggle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallVerb {
    Answer,
    Decline,
    HangUp,
    Mute(Option<bool>),
    Hold(Option<bool>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Command(Command),
    Call(CallVerb),
    /// A blank line.
    Nothing,
}

/// Parse one stdin line.
pub fn parse(line: &str) -> Result<Input, ParseError> {
    let line = line.trim();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let (arg, tail) = rest
        .split_once(char::is_whitespace)
        .map_or((rest, ""), |(a, t)| (a, t.trim()));
    let user = |usage: &'static str| {
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            Err(ParseError::Usage(usage))
        } else {
            Ok(arg.to_owned())
        }
    };
    // A command that takes a user and nothing more: `lookup BAD NAME!`
    // is a mistake, not a lookup of "BAD".
    let only_user = |usage: &'static str| {
        if tail.is_empty() {
            user(usage)
        } else {
            Err(ParseError::Usage(usage))
        }
    };
    let c = match word {
        "" => return Ok(Input::Nothing),
        "lookup" => Command::SearchUser {
            username: only_user("lookup USER")?,
        },
        "watch" => Command::Watch {
            username: only_user("watch USER")?,
        },
        "status" => status(arg, tail)?,
        "relay" => Command::RelayCredentials,
        "connect" => Command::Connect {
            username: only_user("connect USER")?,
        },
        "ice-offer" | "ice-answer" => ice_signal(word, arg, tail)?,
        "envelope" => Command::SendEnvelope {
            to: user("envelope USER TEXT")?,
            kind: TEST_ENVELOPE_KIND,
            payload: tail.as_bytes().to_vec(),
        },
        "msg" | "message" if !tail.is_empty() => Command::SendMessage {
            to: user("msg USER TEXT")?,
            text: tail.to_owned(),
        },
        "msg" | "message" => return Err(ParseError::Usage("msg USER TEXT")),
        "add" => Command::AddContact {
            username: user("add USER [GREETING]")?,
            greeting: tail.to_owned(),
        },
        "contacts" => Command::ListContacts,
        "calls" if arg == "seen" => Command::MarkCallsSeen {
            peer: (!tail.is_empty()).then(|| tail.to_owned()),
        },
        "calls" => Command::CallHistory {
            limit: match arg {
                "" => 20,
                n => n.parse().map_err(|_| {
                    ParseError::Invalid(format!("calls: {n:?} is not a number or `seen`"))
                })?,
            },
        },
        "history" => history(user("history USER [N]")?, tail)?,
        "quit" => Command::Quit,
        "call" if tail.is_empty() => Command::Call {
            username: user("call USER")?,
        },
        "call" => return Err(ParseError::Usage("call USER")),
        "send-file" if !tail.is_empty() => Command::SendFile {
            to: user("send-file USER PATH")?,
            path: tail.to_owned(),
        },
        "send-file" => return Err(ParseError::Usage("send-file USER PATH")),
        "file" => file(arg, tail)?,
        "files" if rest.is_empty() => Command::ListFiles,
        "conf" | "conference" => conference(arg, tail)?,
        // `decline USER` declines a contact request; `decline` a call.
        "decline" if arg.is_empty() => return Ok(Input::Call(CallVerb::Decline)),
        "accept" | "decline" | "remove" | "block" | "unblock" => contact(word, user)?,
        verb => return call_verb(verb, arg, tail).map(Input::Call),
    };
    Ok(Input::Command(c))
}

/// `file accept ID [PATH]`, `file decline ID`, `file cancel ID`; the id
/// is the transfer's 32 hex digits.
fn file(verb: &str, tail: &str) -> Result<Command, ParseError> {
    const USAGE: &str = "file accept ID [PATH] | file decline ID | file cancel ID";
    let (id, path) = tail
        .split_once(char::is_whitespace)
        .map_or((tail, ""), |(a, t)| (a, t.trim()));
    let id = u128::from_str_radix(id, 16)
        .map_err(|_| ParseError::Invalid(format!("{id:?} is not a transfer id: {USAGE}")))?;
    Ok(match (verb, path) {
        ("accept", "") => Command::AcceptFile { id, path: None },
        ("accept", p) => Command::AcceptFile {
            id,
            path: Some(p.to_owned()),
        },
        ("decline", "") => Command::DeclineFile { id },
        ("cancel", "") => Command::CancelFile { id },
        _ => return Err(ParseError::Usage(USAGE)),
    })
}

fn status(arg: &str, tail: &str) -> Result<Command, ParseError> {
    let status = arg
        .parse::<Status>()
        .map_err(|e| ParseError::Invalid(e.to_string()))?;
    Ok(Command::SetStatus {
        status,
        message: tail.to_owned(),
    })
}

fn ice_signal(word: &str, user: &str, hex: &str) -> Result<Command, ParseError> {
    match hex_decode(hex) {
        Some(data) if !user.is_empty() => Ok(Command::IceSignal {
            from: user.to_owned(),
            data,
            answer: word == "ice-answer",
        }),
        _ => Err(ParseError::Invalid(format!(
            "{word} {user} needs the hex data of the peer's ice_offer/ice_answer event"
        ))),
    }
}

fn history(with: String, n: &str) -> Result<Command, ParseError> {
    let limit = match n {
        "" => 50,
        n => n
            .parse()
            .map_err(|_| ParseError::Invalid(format!("history: {n:?} is not a number")))?,
    };
    Ok(Command::LoadHistory {
        with,
        before: None,
        limit,
    })
}

fn contact(
    word: &str,
    user: impl Fn(&'static str) -> Result<String, ParseError>,
) -> Result<Command, ParseError> {
    Ok(match word {
        "accept" => Command::AcceptContact {
            username: user("accept USER")?,
        },
        "decline" => Command::DeclineContact {
            username: user("decline USER")?,
        },
        "remove" => Command::RemoveContact {
            username: user("remove USER")?,
        },
        "block" => Command::BlockContact {
            username: user("block USER")?,
        },
        _ => Command::UnblockContact {
            username: user("unblock USER")?,
        },
    })
}

/// `conf start U1 U2 ... | add U | accept | leave | mute [U] | unmute [U]`.
fn conference(verb: &str, tail: &str) -> Result<Command, ParseError> {
    const USAGE: &str = "conf start USER... | conf add USER | conf accept | conf leave | conf mute [USER] | conf unmute [USER]";
    let words: Vec<&str> = tail.split_whitespace().collect();
    Ok(match (verb, &words[..]) {
        ("start", users) if !users.is_empty() => Command::ConferenceStart {
            users: users.iter().map(|u| u.to_string()).collect(),
        },
        ("add", [u]) => Command::ConferenceAdd {
            username: u.to_string(),
        },
        ("accept", []) => Command::ConferenceAccept,
        ("leave", []) | ("decline", []) => Command::ConferenceLeave,
        ("mute", []) => Command::ConferenceMute { muted: Some(true) },
        ("unmute", []) => Command::ConferenceMute { muted: Some(false) },
        ("mute", [u]) => Command::ConferenceMuteOther {
            username: u.to_string(),
            muted: true,
        },
        ("unmute", [u]) => Command::ConferenceMuteOther {
            username: u.to_string(),
            muted: false,
        },
        _ => return Err(ParseError::Usage(USAGE)),
    })
}

fn call_verb(verb: &str, arg: &str, tail: &str) -> Result<CallVerb, ParseError> {
    let on = |usage: &'static str| match (arg, tail) {
        ("", "") => Ok(None),
        ("on", "") => Ok(Some(true)),
        ("off", "") => Ok(Some(false)),
        _ => Err(ParseError::Usage(usage)),
    };
    let bare = |v: CallVerb| {
        if arg.is_empty() {
            Ok(v)
        } else {
            Err(ParseError::Unknown(
                format!("{verb} {arg} {tail}").trim().to_owned(),
            ))
        }
    };
    match verb {
        "answer" => bare(CallVerb::Answer),
        "hangup" | "hang-up" => bare(CallVerb::HangUp),
        "mute" => on("mute [on|off]").map(CallVerb::Mute),
        "unmute" => bare(CallVerb::Mute(Some(false))),
        "hold" => on("hold [on|off]").map(CallVerb::Hold),
        "resume" => bare(CallVerb::Hold(Some(false))),
        _ => Err(ParseError::Unknown(
            format!("{verb} {arg} {tail}").trim().to_owned(),
        )),
    }
}

/// Hex text (as the `ice_offer` event writes it) to bytes.
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> Command {
        match parse(line) {
            Ok(Input::Command(c)) => c,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn directory_and_peer_commands() {
        assert_eq!(
            cmd("lookup bob"),
            Command::SearchUser {
                username: "bob".into()
            }
        );
        assert_eq!(
            cmd(" watch  bob "),
            Command::Watch {
                username: "bob".into()
            }
        );
        assert_eq!(
            cmd("status away gone fishing"),
            Command::SetStatus {
                status: Status::Away,
                message: "gone fishing".into()
            }
        );
        assert!(matches!(
            parse("status sleepy"),
            Err(ParseError::Invalid(_))
        ));
        assert_eq!(cmd("relay"), Command::RelayCredentials);
        assert_eq!(
            cmd("ice-answer Bob 00ff"),
            Command::IceSignal {
                from: "Bob".into(),
                data: vec![0, 0xff],
                answer: true
            }
        );
        assert!(parse("ice-offer bob xyz").is_err());
        assert_eq!(
            cmd("envelope bob a b"),
            Command::SendEnvelope {
                to: "bob".into(),
                kind: TEST_ENVELOPE_KIND,
                payload: b"a b".to_vec()
            }
        );
        assert_eq!(cmd("quit"), Command::Quit);
        assert_eq!(parse("   "), Ok(Input::Nothing));
    }

    #[test]
    fn chat_and_contact_commands() {
        assert_eq!(
            cmd("msg bob hi there"),
            Command::SendMessage {
                to: "bob".into(),
                text: "hi there".into()
            }
        );
        assert_eq!(parse("msg bob"), Err(ParseError::Usage("msg USER TEXT")));
        assert_eq!(
            cmd("add bob hello"),
            Command::AddContact {
                username: "bob".into(),
                greeting: "hello".into()
            }
        );
        assert_eq!(
            cmd("decline bob"),
            Command::DeclineContact {
                username: "bob".into()
            }
        );
        assert_eq!(cmd("contacts"), Command::ListContacts);
        assert_eq!(
            cmd("history bob 5"),
            Command::LoadHistory {
                with: "bob".into(),
                before: None,
                limit: 5
            }
        );
        assert!(matches!(
            parse("history bob x"),
            Err(ParseError::Invalid(_))
        ));
        assert_eq!(parse("block"), Err(ParseError::Usage("block USER")));
    }

    #[test]
    fn conference_commands() {
        assert_eq!(
            cmd("conf start bob carol"),
            Command::ConferenceStart {
                users: vec!["bob".into(), "carol".into()]
            }
        );
        assert_eq!(
            cmd("conf add dave"),
            Command::ConferenceAdd {
                username: "dave".into()
            }
        );
        assert_eq!(cmd("conf leave"), Command::ConferenceLeave);
        assert_eq!(cmd("conf accept"), Command::ConferenceAccept);
        assert_eq!(
            cmd("conf mute"),
            Command::ConferenceMute { muted: Some(true) }
        );
        assert_eq!(
            cmd("conf unmute bob"),
            Command::ConferenceMuteOther {
                username: "bob".into(),
                muted: false
            }
        );
        assert!(parse("conf start").is_err());
        assert!(parse("conf add a b").is_err());
    }

    #[test]
    fn call_commands() {
        assert_eq!(
            cmd("call bob"),
            Command::Call {
                username: "bob".into()
            }
        );
        assert_eq!(parse("call"), Err(ParseError::Usage("call USER")));
        assert_eq!(parse("answer"), Ok(Input::Call(CallVerb::Answer)));
        assert_eq!(parse("decline"), Ok(Input::Call(CallVerb::Decline)));
        assert_eq!(parse("hang-up"), Ok(Input::Call(CallVerb::HangUp)));
        assert_eq!(parse("mute"), Ok(Input::Call(CallVerb::Mute(None))));
        assert_eq!(
            parse("mute off"),
            Ok(Input::Call(CallVerb::Mute(Some(false))))
        );
        assert_eq!(
            parse("hold on"),
            Ok(Input::Call(CallVerb::Hold(Some(true))))
        );
        assert_eq!(
            parse("resume"),
            Ok(Input::Call(CallVerb::Hold(Some(false))))
        );
        assert_eq!(parse("hold maybe"), Err(ParseError::Usage("hold [on|off]")));
    }

    #[test]
    fn a_bad_line_shows_the_usage() {
        let e = parse("bogus words").unwrap_err();
        assert_eq!(e, ParseError::Unknown("bogus words".into()));
        let text = e.to_string();
        assert!(
            text.contains("lookup USER") && text.contains("hold [on|off]"),
            "{text}"
        );
    }

    #[test]
    fn a_user_command_takes_one_name_and_nothing_more() {
        for (line, usage) in [
            ("lookup BAD NAME!", "lookup USER"),
            ("watch bob and carol", "watch USER"),
            ("connect bob now", "connect USER"),
            ("lookup", "lookup USER"),
        ] {
            assert_eq!(parse(line), Err(ParseError::Usage(usage)), "{line}");
        }
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex_decode("00abFF"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(hex_decode("abc"), None);
        assert_eq!(hex_decode("zz"), None);
    }

    #[test]
    fn call_history_commands() {
        assert_eq!(cmd("calls"), Command::CallHistory { limit: 20 });
        assert_eq!(cmd("calls 5"), Command::CallHistory { limit: 5 });
        assert_eq!(cmd("calls seen"), Command::MarkCallsSeen { peer: None });
        assert_eq!(
            cmd("calls seen bob"),
            Command::MarkCallsSeen {
                peer: Some("bob".into())
            }
        );
        assert!(matches!(parse("calls many"), Err(ParseError::Invalid(_))));
    }
}
