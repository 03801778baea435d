//! Running the [`App`] on the real terminal: raw mode and the alternate
//! screen while it runs, restored on exit and on panic; standard error
//! sent to the log file meanwhile, so nothing (logs, ALSA chatter) writes
//! over the screen; an async loop over terminal input, node events and a
//! one-second tick.

use super::App;
use crate::clock::{Clock, SystemClock};
use crate::node::api::{Command, Event};
use futures_util::FutureExt;
use futures_util::StreamExt;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event as TermEvent, EventStream};
use ratatui::crossterm::{cursor, execute, terminal};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::mpsc;

#[derive(Debug, Error)]
pub enum UiError {
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
    #[error("the node runtime went away")]
    NodeGone,
}

/// Whether the TUI owns the terminal (read by the panic hook).
static TUI_UP: AtomicBool = AtomicBool::new(false);
/// The real stderr while it points at the log file, else -1.
static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);

fn restore_terminal() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        event::DisableBracketedPaste,
        terminal::LeaveAlternateScreen,
        cursor::Show
    );
}

fn restore_stderr() {
    let fd = SAVED_STDERR.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: `fd` is the duplicate of stderr made in `redirect_stderr`
        // and owned by us alone; dup2 and close take plain descriptors.
        unsafe {
            libc::dup2(fd, 2);
            libc::close(fd);
        }
    }
}

/// Point fd 2 at `log` (appending), keeping the real stderr to restore.
fn redirect_stderr(log: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(log)?;
    // SAFETY: dup and dup2 on descriptors we hold open; failures are
    // checked and leave stderr as it was.
    unsafe {
        let saved = libc::dup(2);
        if saved < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::dup2(file.as_raw_fd(), 2) < 0 {
            let e = std::io::Error::last_os_error();
            libc::close(saved);
            return Err(e);
        }
        SAVED_STDERR.store(saved, Ordering::SeqCst);
    }
    Ok(())
}

/// Restores the terminal (and stderr) when dropped.
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        if TUI_UP.swap(false, Ordering::SeqCst) {
            restore_terminal();
        }
        restore_stderr();
    }
}

/// A panic anywhere (the UI or a node task) first gives the terminal back,
/// then reports, then ends the process: a half-alive softphone drawing on
/// a restored terminal helps no one.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let was_up = TUI_UP.swap(false, Ordering::SeqCst);
            if was_up {
                restore_terminal();
            }
            restore_stderr();
            prev(info);
            if was_up {
                std::process::exit(101);
            }
        }));
    });
}

/// What the run loop measured.
#[derive(Debug, Clone, Copy)]
pub struct RunStats {
    /// From `started` to the first frame on the terminal.
    pub first_frame: Duration,
}

/// Run the App on this terminal until the user quits and the node has
/// stopped. `stderr_log` receives standard error meanwhile. `started` is
/// when the program started, for the first-frame time in the log.
pub async fn run(
    mut app: App,
    commands: mpsc::Sender<Command>,
    mut events: mpsc::Receiver<Event>,
    stderr_log: Option<&Path>,
    started: Instant,
) -> Result<RunStats, UiError> {
    install_panic_hook();
    if let Some(log) = stderr_log {
        redirect_stderr(log)?;
    }
    let guard = Guard;
    terminal::enable_raw_mode()?;
    TUI_UP.store(true, Ordering::SeqCst);
    // Bracketed paste: a paste arrives as one event, not as keys (so its
    // line breaks are not Enter).
    execute!(
        std::io::stdout(),
        terminal::EnterAlternateScreen,
        event::EnableBracketedPaste
    )?;
    let mut term = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    term.hide_cursor()?;
    term.clear()?;

    let clock = SystemClock;
    let mut input = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term_sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut stats = None;
    let mut stop_deadline: Option<tokio::time::Instant> = None;
    let mut input_done = false;
    // Key presses tell the node the user is there (automatic away), at
    // most this often.
    const ACTIVITY_EVERY: Duration = Duration::from_secs(10);
    // Inputs handled before a frame is drawn, at most.
    const MAX_INPUT_BATCH: usize = 4096;
    let mut last_activity: Option<Instant> = None;
    app.tick(clock.unix());
    loop {
        term.draw(|f| app.render(f))?;
        if stats.is_none() {
            let first_frame = started.elapsed();
            tracing::info!(ms = first_frame.as_millis() as u64, "first frame drawn");
            stats = Some(RunStats { first_frame });
        }
        if app.take_bell() {
            let mut out = std::io::stdout();
            let _ = out.write_all(b"\x07");
            let _ = out.flush();
        }
        let deadline = stop_deadline
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            ev = input.next(), if !input_done => {
                // Take every input already waiting before the next frame:
                // keys typed (or pasted by a terminal without bracketed
                // paste) faster than frames are drawn cost one frame.
                let mut ev = ev;
                let mut key_seen = false;
                for _ in 0..MAX_INPUT_BATCH {
                    match ev {
                        Some(Ok(TermEvent::Key(k))) => {
                            app.handle_key(k);
                            key_seen = true;
                        }
                        Some(Ok(TermEvent::Paste(text))) => {
                            app.handle_paste(&text);
                            key_seen = true;
                        }
                        Some(Ok(TermEvent::Resize(..))) => term.autoresize()?,
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(e.into()),
                        None => {
                            input_done = true;
                            app.handle_key(ctrl_c());
                        }
                    }
                    if input_done || app.quitting() {
                        break;
                    }
                    // Only when an input is ready: a pending poll here would
                    // leave the stream's waker with this no-op context.
                    if !event::poll(Duration::ZERO)? {
                        break;
                    }
                    match input.next().now_or_never() {
                        Some(next) => ev = next,
                        None => break,
                    }
                }
                if key_seen
                    && app.model.logged_in()
                    && last_activity.is_none_or(|t| t.elapsed() >= ACTIVITY_EVERY)
                {
                    last_activity = Some(Instant::now());
                    if commands.send(Command::Activity).await.is_err() {
                        drop(guard);
                        return Err(UiError::NodeGone);
                    }
                }
            }
            ev = events.recv() => match ev {
                Some(e) => {
                    let stopped = e == Event::Stopped;
                    app.handle_event(e);
                    if stopped {
                        break;
                    }
                }
                None => break,
            },
            _ = tick.tick() => app.tick(clock.unix()),
            _ = hangup.recv() => app.handle_key(ctrl_c()),
            _ = term_sig.recv() => app.handle_key(ctrl_c()),
            _ = tokio::time::sleep_until(deadline), if stop_deadline.is_some() => break,
        }
        for c in app.take_commands() {
            if commands.send(c).await.is_err() {
                drop(guard);
                return Err(UiError::NodeGone);
            }
        }
        if app.quitting() && stop_deadline.is_none() {
            // The node publishes an offline record and stops; don't wait
            // for ever if it cannot.
            stop_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(3));
        }
    }
    drop(term);
    drop(guard);
    Ok(stats.unwrap_or(RunStats {
        first_frame: started.elapsed(),
    }))
}

fn ctrl_c() -> ratatui::crossterm::event::KeyEvent {
    ratatui::crossterm::event::KeyEvent::new(
        ratatui::crossterm::event::KeyCode::Char('c'),
        ratatui::crossterm::event::KeyModifiers::CONTROL,
    )
}
