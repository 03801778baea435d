//! File transfers on screen: the prompt that asks for a path (to send a
//! file, or where to save one), with Tab completion from the file system,
//! and the transfers window, where offers are accepted or declined and
//! transfers in either direction show their progress or are cancelled.

use super::{Component, Ctx, Msg, TextInput, centered};
use crate::node::api::{Command, TransferId};
use crate::ui::model::Model;
use crate::ui::model::files::{FileStage, FileView, failure_text, size_text};
use ratatui::Frame;
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};
use std::path::{Path, PathBuf};

/// Directory entries read for one completion (a huge directory is cut).
const MAX_ENTRIES: usize = 2_000;
/// Candidates shown under the field.
const SHOWN_CANDIDATES: usize = 6;
/// Width of a progress bar, in cells.
const BAR: usize = 16;

/// `~` and `~/...` with the home directory, for reading the disk.
pub fn expand(path: &str, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix('~'), home) {
        (Some(""), Some(h)) => h.to_path_buf(),
        (Some(rest), Some(h)) if rest.starts_with('/') => h.join(&rest[1..]),
        _ => PathBuf::from(path),
    }
}

/// What Tab did to a path being typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The field's new text: the one match in full (a directory with its
    /// `/`), else the longest prefix all matches share.
    pub value: String,
    /// The names that match, when more than one does (directories end in
    /// `/`), sorted.
    pub candidates: Vec<String>,
}

/// Complete the last part of `typed` from what is on the disk, as a shell
/// does: hidden names only when the part starts with a dot.
pub fn complete(typed: &str, home: Option<&Path>) -> Completion {
    let (dir_text, prefix) = match typed.rfind('/') {
        Some(i) => (&typed[..=i], &typed[i + 1..]),
        None if typed == "~" => ("~/", ""),
        None => ("", typed),
    };
    let dir = if dir_text.is_empty() {
        PathBuf::from(".")
    } else {
        expand(dir_text, home)
    };
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .take(MAX_ENTRIES)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let wanted =
                    name.starts_with(prefix) && (!name.starts_with('.') || prefix.starts_with('.'));
                wanted.then(|| {
                    // A link to a directory completes as a directory.
                    let is_dir = std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir());
                    if is_dir { format!("{name}/") } else { name }
                })
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    match names.as_slice() {
        [] => Completion {
            value: typed.to_owned(),
            candidates: Vec::new(),
        },
        [one] => Completion {
            value: format!("{dir_text}{one}"),
            candidates: Vec::new(),
        },
        many => {
            let first = &many[0];
            let common = many.iter().skip(1).fold(first.chars().count(), |n, s| {
                first
                    .chars()
                    .zip(s.chars())
                    .take(n)
                    .take_while(|(a, b)| a == b)
                    .count()
            });
            let common: String = first.chars().take(common).collect();
            Completion {
                value: format!("{dir_text}{common}"),
                candidates: many.to_vec(),
            }
        }
    }
}

/// What a path prompt is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathFor {
    /// Send a file to this contact.
    Send { to: String },
    /// Save an offered file (an empty path: the downloads folder).
    Save {
        id: TransferId,
        name: String,
        peer: String,
    },
}

/// A one-line path field with Tab completion.
#[derive(Debug, Clone)]
pub struct PathPrompt {
    pub purpose: PathFor,
    pub input: TextInput,
    /// What the last Tab found, when it found several.
    candidates: Vec<String>,
    /// Why Enter did not go through (or that Tab found nothing).
    problem: Option<String>,
    /// The home directory, for `~`.
    home: Option<PathBuf>,
}

impl PathPrompt {
    pub fn new(purpose: PathFor) -> Self {
        PathPrompt {
            purpose,
            input: TextInput::default(),
            candidates: Vec::new(),
            problem: None,
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }

    /// The same prompt with `home` for `~` (tests).
    pub fn with_home(mut self, home: Option<PathBuf>) -> Self {
        self.home = home;
        self
    }

    /// Handle a key: `Some(Msg::Close)` on Esc, the command on a good
    /// Enter, `None` while editing.
    pub fn on_key(&mut self, key: &KeyEvent) -> Option<Msg> {
        match key.code {
            KeyCode::Esc => Some(Msg::Close),
            KeyCode::Tab => {
                let c = complete(&self.input.value, self.home.as_deref());
                self.problem = (c.value == self.input.value && c.candidates.is_empty())
                    .then(|| "nothing here starts so".to_owned());
                self.input.set(&c.value);
                self.candidates = c.candidates;
                None
            }
            KeyCode::Enter => self.submit(),
            _ => {
                if self.input.on_key(key) {
                    self.candidates.clear();
                    self.problem = None;
                }
                None
            }
        }
    }

    fn submit(&mut self) -> Option<Msg> {
        let typed = self.input.value.trim();
        let path = expand(typed, self.home.as_deref());
        let problem = match &self.purpose {
            PathFor::Send { .. } if typed.is_empty() => Some("type the path of a file".to_owned()),
            PathFor::Send { .. } => match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => None,
                Ok(m) if m.is_dir() => Some("that is a folder: pick a file in it (Tab)".into()),
                Ok(_) => Some("not a regular file".into()),
                Err(e) => Some(format!("can't read it: {}", io_text(&e))),
            },
            PathFor::Save { .. } if typed.is_empty() => None,
            PathFor::Save { .. } => {
                let parent = if path.is_dir() {
                    Some(path.as_path())
                } else {
                    path.parent().filter(|p| !p.as_os_str().is_empty())
                };
                match parent {
                    Some(p) if !p.is_dir() => Some(format!("no folder {}", p.display())),
                    _ => None,
                }
            }
        };
        if let Some(p) = problem {
            self.problem = Some(p);
            return None;
        }
        let text = path.to_string_lossy().into_owned();
        Some(Msg::Send(match &self.purpose {
            PathFor::Send { to } => Command::SendFile {
                to: to.clone(),
                path: text,
            },
            PathFor::Save { id, .. } => Command::AcceptFile {
                id: *id,
                path: (!typed.is_empty()).then_some(text),
            },
        }))
    }

    /// What the last key left to say: a problem, or the matches.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    pub fn candidates(&self) -> &[String] {
        &self.candidates
    }

    /// Draw the prompt as a window centred in `area`.
    pub fn draw_window(&self, f: &mut Frame, area: Rect) {
        let shown = self.candidates.len().min(SHOWN_CANDIDATES);
        let extra = u16::from(self.candidates.len() > shown);
        let h = 6 + shown as u16 + extra;
        let r = centered(area, 64.min(area.width), h);
        f.render_widget(Clear, r);
        let title = match &self.purpose {
            PathFor::Send { to } => format!(" Send a file to {to} "),
            PathFor::Save { name, peer, .. } => format!(" Save {name} from {peer} "),
        };
        let block = Block::bordered().title(title.bold());
        let inner = block.inner(r);
        f.render_widget(block, r);
        let rows = Layout::vertical(
            std::iter::repeat_n(Constraint::Length(1), inner.height as usize).collect::<Vec<_>>(),
        )
        .split(inner);
        let mut row = rows.iter().copied();
        if let Some(field) = row.next() {
            if self.input.value.is_empty() {
                let hint = match self.purpose {
                    PathFor::Send { .. } => "path of the file (Tab completes)",
                    PathFor::Save { .. } => "empty: your downloads folder",
                };
                f.render_widget(Line::from(hint).dark_gray(), field);
                f.set_cursor_position((field.x, field.y));
            } else {
                self.input.draw(f, field, true);
            }
        }
        for c in &self.candidates[..shown] {
            if let Some(r) = row.next() {
                f.render_widget(Line::from(format!("  {c}")).cyan(), r);
            }
        }
        if extra == 1
            && let Some(r) = row.next()
        {
            let more = self.candidates.len() - shown;
            f.render_widget(Line::from(format!("  … {more} more")).dark_gray(), r);
        }
        let problem = row.next();
        if let (Some(r), Some(p)) = (problem, &self.problem) {
            f.render_widget(Line::from(p.as_str()).red(), r);
        }
        let _ = row.next();
        if let Some(r) = row.next() {
            let enter = match self.purpose {
                PathFor::Send { .. } => "Enter send",
                PathFor::Save { .. } => "Enter save",
            };
            f.render_widget(
                Line::from(format!("Tab complete · {enter} · Esc cancel")).dark_gray(),
                r,
            );
        }
    }
}

/// An I/O error as a person reads it.
fn io_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// The transfers window.
#[derive(Debug, Default)]
pub struct FilesWindow {
    pub open: bool,
    /// The selected row (in [`Model::file_rows`] order).
    selected: usize,
    /// Asking where to save an accepted file.
    pub prompt: Option<PathPrompt>,
}

impl FilesWindow {
    pub fn open(&mut self, model: &Model) {
        self.open = true;
        self.prompt = None;
        // Start on the first offer waiting for an answer, if any.
        self.selected = model
            .file_rows()
            .iter()
            .position(|f| f.needs_answer())
            .unwrap_or(0);
    }

    fn row<'m>(&self, model: &'m Model) -> Option<&'m FileView> {
        let rows = model.file_rows();
        rows.get(self.selected.min(rows.len().saturating_sub(1)))
            .copied()
    }

    pub fn on_key(&mut self, key: &KeyEvent, model: &Model) -> Option<Msg> {
        if let Some(mut p) = self.prompt.take() {
            return match p.on_key(key) {
                Some(Msg::Close) => None,
                Some(m) => Some(m),
                None => {
                    self.prompt = Some(p);
                    None
                }
            };
        }
        let n = model.files.len();
        match key.code {
            KeyCode::Esc | KeyCode::Char('q') => {
                self.open = false;
                Some(Msg::Close)
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.selected = self.selected.min(n.saturating_sub(1)).saturating_sub(1);
                None
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected = (self.selected + 1).min(n.saturating_sub(1));
                None
            }
            KeyCode::Enter | KeyCode::Char('a') => {
                let f = self.row(model).filter(|f| f.needs_answer())?;
                self.prompt = Some(PathPrompt::new(PathFor::Save {
                    id: f.id,
                    name: f.name.clone(),
                    peer: f.peer.clone(),
                }));
                None
            }
            KeyCode::Char('d') => {
                let f = self.row(model).filter(|f| f.needs_answer())?;
                Some(Msg::Send(Command::DeclineFile { id: f.id }))
            }
            KeyCode::Char('c') => {
                let f = self.row(model).filter(|f| f.live())?;
                let (dir, peer) = (if f.outgoing { "to" } else { "from" }, &f.peer);
                Some(Msg::Confirm {
                    question: format!("Stop {} {dir} {peer}?", f.name),
                    commands: vec![Command::CancelFile { id: f.id }],
                })
            }
            _ => None,
        }
    }

    /// The keys for the selected row.
    fn hints(&self, model: &Model) -> &'static str {
        match self.row(model) {
            Some(f) if f.needs_answer() => "Enter accept · d decline · ↑↓ select · Esc close",
            Some(f) if f.live() => "c stop · ↑↓ select · Esc close",
            _ => "↑↓ select · Esc close",
        }
    }
}

/// A progress bar of [`BAR`] cells.
fn bar(done: u64, size: u64) -> String {
    let filled = if size == 0 {
        BAR
    } else {
        ((done.min(size) as u128 * BAR as u128) / size as u128) as usize
    };
    format!("{}{}", "█".repeat(filled), "░".repeat(BAR - filled))
}

/// `1:05` left.
fn eta(ms: u64) -> String {
    let s = ms.div_ceil(1000);
    format!("{}:{:02} left", s / 60, s % 60)
}

/// The two lines of one transfer.
fn row_lines(f: &FileView, selected: bool) -> [Line<'static>; 2] {
    let arrow = if f.outgoing { "↑" } else { "↓" };
    let dir = if f.outgoing { "to" } else { "from" };
    let mut first = vec![
        Span::raw(if selected { "▶ " } else { "  " }),
        Span::raw(format!("{arrow} {}", f.name)).bold(),
        Span::raw(format!("  {dir} {} · {}", f.peer, size_text(f.size))).dark_gray(),
    ];
    if selected {
        for s in &mut first {
            s.style = s.style.reversed();
        }
    }
    let pct = if f.size == 0 {
        100
    } else {
        (f.done.min(f.size) as u128 * 100 / f.size as u128) as u64
    };
    let second: Line = match &f.stage {
        FileStage::Offered => Line::from("    offered to you: accept or decline").yellow(),
        FileStage::Offering => Line::from("    waiting for them to accept").dark_gray(),
        FileStage::Moving => {
            let mut s = format!("    {} {pct:>3}%", bar(f.done, f.size));
            if f.rate > 0 {
                s.push_str(&format!(" · {}/s", size_text(f.rate)));
            }
            if let Some(ms) = f.eta_ms {
                s.push_str(&format!(" · {}", eta(ms)));
            }
            Line::from(s).cyan()
        }
        FileStage::Verifying => Line::from(format!("    {} checking", bar(1, 1))).cyan(),
        FileStage::Done { path } if f.outgoing => {
            let _ = path;
            Line::from("    sent").green()
        }
        FileStage::Done { path } => Line::from(format!("    saved to {}", path.display())).green(),
        FileStage::Failed(why) => Line::from(format!("    {}", failure_text(*why))).red(),
    };
    [Line::from(first), second]
}

impl Component for FilesWindow {
    fn draw(&self, f: &mut Frame, area: Rect, ctx: &Ctx) {
        let rows = ctx.model.file_rows();
        let w = 72.min(area.width);
        let h = (rows.len().max(1) as u16 * 2 + 4).min(area.height);
        let r = centered(area, w, h);
        f.render_widget(Clear, r);
        let block = Block::bordered()
            .title(" File transfers ".bold())
            .border_style(Style::new().cyan());
        let inner = block.inner(r);
        f.render_widget(block, r);
        let [list, _, hint] = Layout::vertical([
            Constraint::Fill(1),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .areas(inner);
        let selected = self.selected.min(rows.len().saturating_sub(1));
        let lines: Vec<Line> = if rows.is_empty() {
            vec![Line::from("No transfers. Send a file from the contact list.").dark_gray()]
        } else {
            // Keep the selected row in view.
            let fit = (list.height as usize / 2).max(1);
            let start = selected.saturating_sub(fit - 1);
            rows.iter()
                .enumerate()
                .skip(start)
                .take(fit)
                .flat_map(|(i, fv)| row_lines(fv, i == selected))
                .collect()
        };
        f.render_widget(Paragraph::new(lines), list);
        f.render_widget(Line::from(self.hints(ctx.model)).dark_gray(), hint);
        if let Some(p) = &self.prompt {
            p.draw_window(f, area);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("photos")).unwrap();
        std::fs::write(d.path().join("report-2026.pdf"), b"x").unwrap();
        std::fs::write(d.path().join("report-draft.txt"), b"x").unwrap();
        std::fs::write(d.path().join(".hidden"), b"x").unwrap();
        std::fs::write(d.path().join("photos/cat.jpg"), b"x").unwrap();
        d
    }

    #[test]
    fn tab_completes_the_one_match_and_the_shared_prefix() {
        let d = tree();
        let base = format!("{}/", d.path().display());
        let c = complete(&format!("{base}ph"), None);
        assert_eq!(c.value, format!("{base}photos/"));
        assert!(c.candidates.is_empty());
        let c = complete(&format!("{base}photos/"), None);
        assert_eq!(c.value, format!("{base}photos/cat.jpg"));
        let c = complete(&format!("{base}rep"), None);
        assert_eq!(c.value, format!("{base}report-"));
        assert_eq!(c.candidates, vec!["report-2026.pdf", "report-draft.txt"]);
        // Hidden names only when asked for.
        let c = complete(&base, None);
        assert!(!c.candidates.iter().any(|n| n.starts_with('.')));
        assert_eq!(
            complete(&format!("{base}.h"), None).value,
            format!("{base}.hidden")
        );
        // Nothing matches: the text stays.
        let c = complete(&format!("{base}zzz"), None);
        assert_eq!(
            (c.value.as_str(), c.candidates.len()),
            (&*format!("{base}zzz"), 0)
        );
    }

    #[test]
    fn tilde_is_the_home_directory() {
        let d = tree();
        let home = Some(d.path());
        assert_eq!(complete("~/ph", home).value, "~/photos/");
        assert_eq!(
            expand("~/photos/cat.jpg", home),
            d.path().join("photos/cat.jpg")
        );
        assert_eq!(expand("~", home), d.path());
        assert_eq!(expand("a~b", home), PathBuf::from("a~b"));
    }

    #[test]
    fn enter_checks_the_path_before_anything_is_sent() {
        let d = tree();
        let key = |c| KeyEvent::from(c);
        let mut p = PathPrompt::new(PathFor::Send { to: "ann".into() })
            .with_home(Some(d.path().to_path_buf()));
        assert_eq!(p.on_key(&key(KeyCode::Enter)), None);
        assert!(p.problem().is_some());
        p.input.set("~/photos");
        assert_eq!(p.on_key(&key(KeyCode::Enter)), None);
        assert!(p.problem().unwrap().contains("folder"));
        p.input.set("~/nope.txt");
        assert_eq!(p.on_key(&key(KeyCode::Enter)), None);
        assert!(p.problem().unwrap().contains("no such file"));
        p.input.set("~/pho");
        p.on_key(&key(KeyCode::Tab));
        p.on_key(&key(KeyCode::Tab));
        assert_eq!(p.input.value, "~/photos/cat.jpg");
        let want = d
            .path()
            .join("photos/cat.jpg")
            .to_string_lossy()
            .into_owned();
        assert_eq!(
            p.on_key(&key(KeyCode::Enter)),
            Some(Msg::Send(Command::SendFile {
                to: "ann".into(),
                path: want
            }))
        );
        // Saving: empty means the downloads folder; a missing folder is
        // refused.
        let save = PathFor::Save {
            id: 7,
            name: "a.txt".into(),
            peer: "ann".into(),
        };
        let mut s = PathPrompt::new(save).with_home(Some(d.path().to_path_buf()));
        s.input.set("~/nowhere/a.txt");
        assert_eq!(s.on_key(&key(KeyCode::Enter)), None);
        s.input.set("");
        assert_eq!(
            s.on_key(&key(KeyCode::Enter)),
            Some(Msg::Send(Command::AcceptFile { id: 7, path: None }))
        );
    }
}
