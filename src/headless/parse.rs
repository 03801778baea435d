//! The headless stdin grammar: one line to one node API [`Command`], or a
//! call verb the driver aims at the current call. One table, [`GRAMMAR`],
//! lists every verb: the parser takes its words and `help` prints it. A
//! line that does not parse gives an error that shows the usage.

use natter::node::api::{Command, GroupCommand, Status, TEST_ENVELOPE_KIND};
use thiserror::Error;

/// One stdin verb: how it is written, what it does, and the node API
/// commands it sends (by [`Command::name`], so that an error from the
/// node names the verb the script typed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verb {
    /// The first word of the line.
    pub word: &'static str,
    /// Other spellings the parser takes for it.
    pub aliases: &'static [&'static str],
    /// The whole line, as `help` and usage errors show it.
    pub usage: &'static str,
    /// What it does, in a few words.
    pub does: &'static str,
    /// The node API commands it sends.
    pub api: &'static [&'static str],
}

const fn verb(
    word: &'static str,
    usage: &'static str,
    does: &'static str,
    api: &'static [&'static str],
) -> Verb {
    Verb {
        word,
        aliases: &[],
        usage,
        does,
        api,
    }
}

/// Every stdin command: the parser takes exactly these words (and their
/// aliases), and `help` lists them.
pub const GRAMMAR: &[Verb] = &[
    verb(
        "lookup",
        "lookup USER",
        "look USER up in the directory",
        &["search"],
    ),
    verb(
        "watch",
        "watch USER",
        "report USER's presence changes",
        &["watch"],
    ),
    verb(
        "status",
        "status online|away|dnd|invisible|offline [MESSAGE]",
        "set our status, shown to authorized contacts only",
        &["set status"],
    ),
    verb(
        "relay",
        "relay",
        "ask for relay (TURN) credentials",
        &["relay"],
    ),
    verb(
        "connect",
        "connect USER",
        "open a peer-to-peer link to USER",
        &["connect"],
    ),
    verb(
        "ice-offer",
        "ice-offer USER HEX",
        "deliver USER's ICE offer by hand",
        &["ice-offer"],
    ),
    verb(
        "ice-answer",
        "ice-answer USER HEX",
        "deliver USER's ICE answer by hand",
        &["ice-answer"],
    ),
    verb(
        "envelope",
        "envelope USER TEXT",
        "send a raw sealed envelope (for testing)",
        &["envelope"],
    ),
    Verb {
        aliases: &["message"],
        ..verb(
            "msg",
            "msg USER TEXT",
            "send a chat message",
            &["send message"],
        )
    },
    verb(
        "history",
        "history USER [N]",
        "the last N (50) messages with USER",
        &["load history"],
    ),
    verb(
        "read",
        "read USER",
        "mark the conversation with USER read, on every device of ours",
        &["read"],
    ),
    verb(
        "add",
        "add USER [GREETING]",
        "ask USER to be a contact",
        &["add contact"],
    ),
    verb(
        "accept",
        "accept USER",
        "accept USER's contact request",
        &["accept contact"],
    ),
    verb(
        "refuse",
        "refuse USER",
        "refuse USER's contact request",
        &["decline contact"],
    ),
    verb(
        "remove",
        "remove USER",
        "remove a contact (both sides)",
        &["remove contact"],
    ),
    verb(
        "block",
        "block USER",
        "drop everything from USER",
        &["block contact"],
    ),
    verb(
        "unblock",
        "unblock USER",
        "stop blocking USER",
        &["unblock contact"],
    ),
    verb("contacts", "contacts", "the contact list", &["contacts"]),
    verb(
        "calls",
        "calls [N] | calls seen [USER]",
        "the last N (20) calls; mark missed calls (from USER) seen",
        &["call history", "calls seen"],
    ),
    verb("call", "call USER", "call USER", &["call"]),
    verb(
        "answer",
        "answer",
        "answer the ringing call",
        &["accept call"],
    ),
    verb(
        "decline",
        "decline",
        "decline the ringing call",
        &["decline call"],
    ),
    Verb {
        aliases: &["hang-up"],
        ..verb("hangup", "hangup", "end the current call", &["hang up"])
    },
    verb(
        "mute",
        "mute [on|off]",
        "mute our microphone (toggle)",
        &["mute"],
    ),
    verb("unmute", "unmute", "unmute our microphone", &[]),
    verb(
        "hold",
        "hold [on|off]",
        "put the call on hold (toggle)",
        &["hold"],
    ),
    verb("resume", "resume", "take the call off hold", &[]),
    verb(
        "take",
        "take",
        "move the call on another of your devices here",
        &["take call"],
    ),
    verb(
        "send-file",
        "send-file USER PATH",
        "offer a file to USER",
        &["send file"],
    ),
    verb(
        "file",
        "file accept ID [PATH] | file decline ID | file cancel ID",
        "answer a file offer, or stop a transfer",
        &["accept file", "decline file", "cancel file"],
    ),
    verb("files", "files", "the file transfers under way", &["files"]),
    Verb {
        aliases: &["conference"],
        ..verb(
            "conf",
            "conf start USER... | conf add USER | conf accept | conf leave | conf mute|unmute [USER]",
            "start, join, grow, leave or mute a conference",
            &[
                "conference start",
                "conference add",
                "conference accept",
                "conference leave",
                "conference mute",
                "conference mute other",
                "conference",
            ],
        )
    },
    verb(
        "group",
        "group create NAME [USER...] | group invite GROUP USER | group leave GROUP | group remove GROUP USER | group rename GROUP NAME | group msg GROUP TEXT | group history GROUP [N]",
        "group chat (GROUP: its id or its one-word name)",
        &[
            "group create",
            "group invite",
            "group leave",
            "group remove",
            "group rename",
            "group msg",
            "group history",
        ],
    ),
    verb(
        "groups",
        "groups",
        "our groups and their members",
        &["groups"],
    ),
    verb(
        "devices",
        "devices",
        "this account's devices, as the authority lists them",
        &["devices"],
    ),
    verb(
        "revoke-device",
        "revoke-device DEVICE",
        "revoke a device of this account (id prefix or name); the next line is the password",
        &["revoke device"],
    ),
    verb("help", "help", "this list", &[]),
    verb("quit", "quit", "go offline and exit", &["quit"]),
];

/// The verb a line's first word names (its own word or an alias).
pub fn find(word: &str) -> Option<&'static Verb> {
    GRAMMAR
        .iter()
        .find(|v| v.word == word || v.aliases.contains(&word))
}

/// The stdin verb that sends the node API command `name`
/// ([`Command::name`]), for errors; the name itself when no verb does.
pub fn verb_of(name: &str) -> &str {
    GRAMMAR
        .iter()
        .find(|v| v.api.contains(&name))
        .map_or(name, |v| v.word)
}

/// Every usage, one line: what an unknown command shows.
pub fn usage_line() -> String {
    GRAMMAR
        .iter()
        .map(|v| v.usage)
        .collect::<Vec<_>>()
        .join(" | ")
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("unknown command {0:?}: {usage}", usage = usage_line())]
    Unknown(String),
    #[error("usage: {0}")]
    Usage(&'static str),
    #[error("{0}")]
    Invalid(String),
}

impl ParseError {
    /// A code for the `error` event's `reason`.
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::Unknown(_) => "unknown_command",
            ParseError::Usage(_) => "usage",
            ParseError::Invalid(_) => "invalid_argument",
        }
    }
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
    /// A command typed in a spelling that still works for this release
    /// (`decline USER` for `refuse USER`): send it and warn.
    Renamed {
        command: Command,
        old: &'static str,
        new: &'static str,
    },
    Call(CallVerb),
    /// `revoke-device DEVICE`: the driver reads the account's password
    /// from the next line (never from this one, which a log may keep),
    /// then sends [`Command::RevokeDevice`].
    RevokeDevice {
        device: String,
    },
    /// `help`: the command list.
    Help,
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
    if word.is_empty() {
        return Ok(Input::Nothing);
    }
    let Some(v) = find(word) else {
        return Err(ParseError::Unknown(line.to_owned()));
    };
    let usage = || ParseError::Usage(v.usage);
    let user = || {
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            Err(usage())
        } else {
            Ok(arg.to_owned())
        }
    };
    // A command that takes a user and nothing more: `lookup BAD NAME!`
    // is a mistake, not a lookup of "BAD".
    let only_user = || {
        if tail.is_empty() {
            user()
        } else {
            Err(usage())
        }
    };
    // A command that takes nothing.
    let bare = |i: Input| if rest.is_empty() { Ok(i) } else { Err(usage()) };
    let c = match v.word {
        "lookup" => Command::SearchUser {
            username: only_user()?,
        },
        "watch" => Command::Watch {
            username: only_user()?,
        },
        "status" => status(arg, tail)?,
        "relay" => return bare(Input::Command(Command::RelayCredentials)),
        "connect" => Command::Connect {
            username: only_user()?,
        },
        "ice-offer" | "ice-answer" => ice_signal(v.word, arg, tail)?,
        "envelope" => Command::SendEnvelope {
            to: user()?,
            kind: TEST_ENVELOPE_KIND,
            payload: tail.as_bytes().to_vec(),
        },
        "msg" if !tail.is_empty() => Command::SendMessage {
            to: user()?,
            text: tail.to_owned(),
        },
        "add" => Command::AddContact {
            username: user()?,
            greeting: tail.to_owned(),
        },
        "contacts" => return bare(Input::Command(Command::ListContacts)),
        "calls" if arg == "seen" => Command::MarkCallsSeen {
            peer: (!tail.is_empty()).then(|| tail.to_owned()),
        },
        "calls" if tail.is_empty() => Command::CallHistory {
            limit: match arg {
                "" => 20,
                n => n.parse().map_err(|_| {
                    ParseError::Invalid(format!("calls: {n:?} is not a number or `seen`"))
                })?,
            },
        },
        "history" => history(user()?, tail)?,
        "read" if tail.is_empty() => Command::MarkRead { with: user()? },
        "quit" => return bare(Input::Command(Command::Quit)),
        "help" => return bare(Input::Help),
        "call" if tail.is_empty() => Command::Call { username: user()? },
        "send-file" if !tail.is_empty() => Command::SendFile {
            to: user()?,
            path: tail.to_owned(),
        },
        "file" => file(arg, tail, v.usage)?,
        "files" => return bare(Input::Command(Command::ListFiles)),
        "conf" => conference(arg, tail, v.usage)?,
        "group" => Command::Group(group(arg, tail, v.usage)?),
        "groups" => return bare(Input::Command(Command::Group(GroupCommand::List))),
        "devices" => return bare(Input::Command(Command::Devices)),
        "take" => return bare(Input::Command(Command::TakeCall)),
        "revoke-device" if tail.is_empty() => {
            return Ok(Input::RevokeDevice { device: user()? });
        }
        // `decline USER` declined a contact request before `refuse`: it
        // still does, for one release, with a warning.
        "decline" if !arg.is_empty() && tail.is_empty() => {
            return Ok(Input::Renamed {
                command: Command::DeclineContact {
                    username: arg.to_owned(),
                },
                old: "decline USER",
                new: "refuse USER",
            });
        }
        "accept" | "refuse" | "remove" | "block" | "unblock" if tail.is_empty() => {
            contact(v.word, user()?)
        }
        "answer" | "decline" | "hangup" | "mute" | "unmute" | "hold" | "resume" => {
            return call_verb(v, arg, tail).map(Input::Call);
        }
        _ => return Err(usage()),
    };
    Ok(Input::Command(c))
}

/// `group VERB ...`: see the grammar's usage.
fn group(verb: &str, tail: &str, usage: &'static str) -> Result<GroupCommand, ParseError> {
    let (g, rest) = tail
        .split_once(char::is_whitespace)
        .map_or((tail, ""), |(a, t)| (a, t.trim()));
    let one = |s: &str| !s.is_empty() && !s.contains(char::is_whitespace);
    let group = g.to_owned();
    Ok(match verb {
        "create" if !g.is_empty() => GroupCommand::Create {
            name: group,
            members: rest.split_whitespace().map(str::to_owned).collect(),
        },
        "invite" if !g.is_empty() && one(rest) => GroupCommand::Invite {
            group,
            user: rest.to_owned(),
        },
        "leave" if !g.is_empty() && rest.is_empty() => GroupCommand::Leave { group },
        "remove" if !g.is_empty() && one(rest) => GroupCommand::Remove {
            group,
            user: rest.to_owned(),
        },
        "rename" if !g.is_empty() && !rest.is_empty() => GroupCommand::Rename {
            group,
            name: rest.to_owned(),
        },
        "msg" if !g.is_empty() && !rest.is_empty() => GroupCommand::Send {
            group,
            text: rest.to_owned(),
        },
        "history" if !g.is_empty() => GroupCommand::History {
            group,
            limit: match rest {
                "" => 50,
                n => n.parse().map_err(|_| {
                    ParseError::Invalid(format!("group history: {n:?} is not a number"))
                })?,
            },
        },
        _ => return Err(ParseError::Usage(usage)),
    })
}

/// `file accept ID [PATH]`, `file decline ID`, `file cancel ID`; the id
/// is the transfer's 32 hex digits.
fn file(verb: &str, tail: &str, usage: &'static str) -> Result<Command, ParseError> {
    let (id, path) = tail
        .split_once(char::is_whitespace)
        .map_or((tail, ""), |(a, t)| (a, t.trim()));
    let id = u128::from_str_radix(id, 16)
        .map_err(|_| ParseError::Invalid(format!("{id:?} is not a transfer id: {usage}")))?;
    Ok(match (verb, path) {
        ("accept", "") => Command::AcceptFile { id, path: None },
        ("accept", p) => Command::AcceptFile {
            id,
            path: Some(p.to_owned()),
        },
        ("decline", "") => Command::DeclineFile { id },
        ("cancel", "") => Command::CancelFile { id },
        _ => return Err(ParseError::Usage(usage)),
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

fn contact(word: &str, username: String) -> Command {
    match word {
        "accept" => Command::AcceptContact { username },
        "refuse" => Command::DeclineContact { username },
        "remove" => Command::RemoveContact { username },
        "block" => Command::BlockContact { username },
        _ => Command::UnblockContact { username },
    }
}

/// `conf start U1 U2 ... | add U | accept | leave | mute [U] | unmute [U]`.
fn conference(verb: &str, tail: &str, usage: &'static str) -> Result<Command, ParseError> {
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
        _ => return Err(ParseError::Usage(usage)),
    })
}

fn call_verb(v: &Verb, arg: &str, tail: &str) -> Result<CallVerb, ParseError> {
    let on = || match (arg, tail) {
        ("", "") => Ok(None),
        ("on", "") => Ok(Some(true)),
        ("off", "") => Ok(Some(false)),
        _ => Err(ParseError::Usage(v.usage)),
    };
    let bare = |c: CallVerb| {
        if arg.is_empty() {
            Ok(c)
        } else {
            Err(ParseError::Usage(v.usage))
        }
    };
    match v.word {
        "answer" => bare(CallVerb::Answer),
        "decline" => bare(CallVerb::Decline),
        "hangup" => bare(CallVerb::HangUp),
        "mute" => on().map(CallVerb::Mute),
        "unmute" => bare(CallVerb::Mute(Some(false))),
        "hold" => on().map(CallVerb::Hold),
        _ => bare(CallVerb::Hold(Some(false))),
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
            cmd("refuse bob"),
            Command::DeclineContact {
                username: "bob".into()
            }
        );
        assert_eq!(parse("refuse"), Err(ParseError::Usage("refuse USER")));
        assert_eq!(cmd("contacts"), Command::ListContacts);
        assert_eq!(cmd("read bob"), Command::MarkRead { with: "bob".into() });
        assert!(parse("read bob now").is_err());
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
    fn decline_is_for_calls_and_refuse_for_contacts() {
        assert_eq!(parse("decline"), Ok(Input::Call(CallVerb::Decline)));
        // The old spelling still declines the request, with a warning.
        assert_eq!(
            parse("decline bob"),
            Ok(Input::Renamed {
                command: Command::DeclineContact {
                    username: "bob".into()
                },
                old: "decline USER",
                new: "refuse USER",
            })
        );
        assert_eq!(parse("decline bob now"), Err(ParseError::Usage("decline")));
    }

    /// A line that uses every verb of the grammar, so that each parses.
    fn example(v: &Verb) -> String {
        let args = match v.word {
            "status" => "away",
            "ice-offer" | "ice-answer" => "bob 00ff",
            "envelope" | "msg" => "bob hi",
            "send-file" => "bob /tmp/x",
            "file" => "decline 0123456789abcdef0123456789abcdef",
            "conf" => "start bob carol",
            "group" => "msg lunch hi there",
            "revoke-device" => "0123abcd",
            w if v.usage.starts_with(&format!("{w} USER")) => "bob",
            _ => "",
        };
        format!("{} {args}", v.word)
    }

    #[test]
    fn help_lists_every_verb_the_parser_takes() {
        // Every verb (and alias) in the grammar parses...
        for v in GRAMMAR {
            for w in std::iter::once(&v.word).chain(v.aliases) {
                let line = example(v).replacen(v.word, w, 1);
                let got = parse(&line);
                assert!(
                    matches!(
                        got,
                        Ok(Input::Command(_)
                            | Input::Call(_)
                            | Input::Help
                            | Input::RevokeDevice { .. }
                            | Input::Renamed { .. })
                    ),
                    "{line}: {got:?}"
                );
                // ... and a bad line for it shows that verb's usage.
                if let Err(ParseError::Usage(u)) = parse(&format!("{w} a b c d e f")) {
                    assert_eq!(u, v.usage, "{w}");
                }
            }
            assert!(v.usage.starts_with(v.word), "{}", v.usage);
            assert!(!v.does.is_empty(), "{}", v.word);
        }
        // ... and a word the grammar does not list is unknown, whatever
        // follows it (the parser looks every word up in the grammar).
        for w in [
            "decline-contact",
            "hang",
            "messages",
            "conferences",
            "bogus",
            "h",
        ] {
            assert!(find(w).is_none(), "{w}");
            assert!(
                matches!(parse(&format!("{w} bob")), Err(ParseError::Unknown(_))),
                "{w}"
            );
        }
        // No word twice.
        let mut words: Vec<&str> = GRAMMAR
            .iter()
            .flat_map(|v| std::iter::once(v.word).chain(v.aliases.iter().copied()))
            .collect();
        let n = words.len();
        words.sort_unstable();
        words.dedup();
        assert_eq!(words.len(), n);
        // Every node API command a verb sends leads back to that verb.
        assert_eq!(verb_of("search"), "lookup");
        assert_eq!(verb_of("decline contact"), "refuse");
        assert_eq!(verb_of("decline call"), "decline");
        assert_eq!(verb_of("send message"), "msg");
        assert_eq!(verb_of("overlay"), "overlay");
    }

    #[test]
    fn group_commands() {
        let g = |c| Command::Group(c);
        assert_eq!(
            cmd("group create lunch bob carol"),
            g(GroupCommand::Create {
                name: "lunch".into(),
                members: vec!["bob".into(), "carol".into()]
            })
        );
        assert_eq!(
            cmd("group invite lunch dave"),
            g(GroupCommand::Invite {
                group: "lunch".into(),
                user: "dave".into()
            })
        );
        assert_eq!(
            cmd("group remove lunch dave"),
            g(GroupCommand::Remove {
                group: "lunch".into(),
                user: "dave".into()
            })
        );
        assert_eq!(
            cmd("group leave lunch"),
            g(GroupCommand::Leave {
                group: "lunch".into()
            })
        );
        assert_eq!(
            cmd("group msg lunch noon at the usual place?"),
            g(GroupCommand::Send {
                group: "lunch".into(),
                text: "noon at the usual place?".into()
            })
        );
        assert_eq!(
            cmd("group history lunch 10"),
            g(GroupCommand::History {
                group: "lunch".into(),
                limit: 10
            })
        );
        assert_eq!(cmd("groups"), g(GroupCommand::List));
        for bad in [
            "group",
            "group invite lunch",
            "group leave",
            "group msg lunch",
            "group x y",
        ] {
            assert!(matches!(parse(bad), Err(ParseError::Usage(_))), "{bad}");
        }
        assert!(matches!(
            parse("group history lunch ten"),
            Err(ParseError::Invalid(_))
        ));
    }

    #[test]
    fn every_api_command_a_verb_sends_names_that_verb() {
        // The commands the parser produces: their API names are in the
        // grammar under the verb that made them.
        for v in GRAMMAR {
            if let Ok(Input::Command(c)) = parse(&example(v)) {
                assert_eq!(verb_of(c.name()), v.word, "{c:?}");
            }
        }
    }

    #[test]
    fn device_commands() {
        assert_eq!(cmd("devices"), Command::Devices);
        assert!(parse("devices all").is_err());
        assert_eq!(
            parse("revoke-device 0123abcd"),
            Ok(Input::RevokeDevice {
                device: "0123abcd".into()
            })
        );
        // The password is never on the command's line.
        assert_eq!(
            parse("revoke-device laptop hunter2"),
            Err(ParseError::Usage("revoke-device DEVICE"))
        );
        assert_eq!(
            parse("revoke-device"),
            Err(ParseError::Usage("revoke-device DEVICE"))
        );
        assert_eq!(verb_of("revoke device"), "revoke-device");
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
