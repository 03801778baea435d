//! File transfers as the screen shows them: one row per transfer, built
//! from [`FileEvent`]s and [`Event::Files`](crate::node::api::Event::Files)
//! answers. Finished and failed ones stay (the newest few) so the user
//! sees where a file went or why it stopped.

use super::{Level, Model};
use crate::node::api::{FileEvent, FileFailure, FileInfo, FileState, TransferId};
use crate::time::UnixMillis;
use std::path::PathBuf;

/// Finished or failed transfers kept on screen.
const MAX_ENDED: usize = 20;

/// Where a transfer stands, for the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStage {
    /// Offered to us: waiting for accept or decline.
    Offered,
    /// Our offer is out: waiting for the receiver.
    Offering,
    /// Accepted; bytes flow (or will once the peer path is up).
    Moving,
    /// Every byte is there; the hash is being checked.
    Verifying,
    /// Arrived whole (hash checked) at `path`.
    Done {
        path: PathBuf,
    },
    Failed(FileFailure),
}

/// One transfer on screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileView {
    pub id: TransferId,
    pub peer: String,
    pub outgoing: bool,
    pub name: String,
    pub size: u64,
    /// Bytes the receiver holds.
    pub done: u64,
    /// Bytes per second lately (0 until progress is reported).
    pub rate: u64,
    /// Time left at that rate, ms.
    pub eta_ms: Option<u64>,
    pub stage: FileStage,
    /// When it was last reported, for ordering (the display clock).
    pub at: UnixMillis,
}

impl FileView {
    pub fn live(&self) -> bool {
        !matches!(self.stage, FileStage::Done { .. } | FileStage::Failed(_))
    }

    /// Waiting for our answer.
    pub fn needs_answer(&self) -> bool {
        self.stage == FileStage::Offered
    }
}

/// What a failed transfer says.
pub fn failure_text(f: FileFailure) -> &'static str {
    match f {
        FileFailure::Declined => "declined",
        FileFailure::Cancelled { by_peer: true } => "cancelled by the other side",
        FileFailure::Cancelled { by_peer: false } => "cancelled",
        FileFailure::HashMismatch => "damaged on the way (hash mismatch): not saved",
        FileFailure::Io { by_peer: true } => "the other side could not read or write it",
        FileFailure::Io { by_peer: false } => "could not read or write the file here",
        FileFailure::Changed => "the file changed since it was offered",
        FileFailure::Expired => "nobody answered the offer in time",
        FileFailure::Unknown => "the other side no longer knows this transfer",
        FileFailure::Refused => "refused: too many transfers at once",
    }
}

/// `1.5 MB`, `820 kB`, `12 B` (decimal units, as file managers show).
pub fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if v < 10.0 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.0} {}", UNITS[unit])
    }
}

impl Model {
    /// Transfers waiting for our answer.
    pub fn file_offers(&self) -> usize {
        self.files.values().filter(|f| f.needs_answer()).count()
    }

    /// Transfers under way (answered, not ended).
    pub fn files_moving(&self) -> usize {
        self.files
            .values()
            .filter(|f| f.live() && !f.needs_answer() && f.stage != FileStage::Offering)
            .count()
    }

    /// The transfers on screen, newest first.
    pub fn file_rows(&self) -> Vec<&FileView> {
        let mut rows: Vec<&FileView> = self.files.values().collect();
        rows.sort_by_key(|f| (std::cmp::Reverse(f.live()), std::cmp::Reverse(f.at), f.id));
        rows
    }

    fn file_entry(&mut self, id: TransferId, peer: &str, outgoing: bool) -> &mut FileView {
        let at = self.now;
        let f = self.files.entry(id).or_insert_with(|| FileView {
            id,
            peer: peer.to_owned(),
            outgoing,
            name: String::new(),
            size: 0,
            done: 0,
            rate: 0,
            eta_ms: None,
            stage: if outgoing {
                FileStage::Offering
            } else {
                FileStage::Offered
            },
            at,
        });
        f.at = at;
        f
    }

    /// Drop the oldest ended transfers beyond [`MAX_ENDED`].
    fn trim_files(&mut self) {
        let mut ended: Vec<(UnixMillis, TransferId)> = self
            .files
            .values()
            .filter(|f| !f.live())
            .map(|f| (f.at, f.id))
            .collect();
        if ended.len() > MAX_ENDED {
            ended.sort();
            for (_, id) in &ended[..ended.len() - MAX_ENDED] {
                self.files.remove(id);
            }
        }
    }

    pub(super) fn apply_file(&mut self, e: FileEvent) {
        match e {
            FileEvent::Offered {
                id,
                peer,
                name,
                size,
            } => {
                let fresh = !self.files.contains_key(&id);
                let f = self.file_entry(id, &peer, false);
                f.name = name.clone();
                f.size = size;
                f.stage = FileStage::Offered;
                if fresh {
                    self.notify(
                        Level::Alert,
                        format!("{peer} offers you {name} ({})", size_text(size)),
                    );
                    self.bell = true;
                }
            }
            FileEvent::Offering {
                id,
                peer,
                name,
                size,
            } => {
                let f = self.file_entry(id, &peer, true);
                f.name = name;
                f.size = size;
                f.stage = FileStage::Offering;
            }
            FileEvent::Started {
                id,
                peer,
                outgoing,
                resumed_from,
            } => {
                let f = self.file_entry(id, &peer, outgoing);
                f.stage = FileStage::Moving;
                f.done = f.done.max(resumed_from);
            }
            FileEvent::Progress(p) => {
                let f = self.file_entry(p.id, &p.peer, p.outgoing);
                if matches!(f.stage, FileStage::Offered | FileStage::Offering) {
                    f.stage = FileStage::Moving;
                }
                f.done = p.done;
                f.size = p.size;
                f.rate = p.rate;
                f.eta_ms = p.eta_ms;
            }
            FileEvent::Completed {
                id,
                peer,
                outgoing,
                path,
                size,
                ..
            } => {
                let f = self.file_entry(id, &peer, outgoing);
                f.done = size;
                f.size = size;
                f.rate = 0;
                f.eta_ms = None;
                f.stage = FileStage::Done { path: path.clone() };
                let name = f.name.clone();
                let text = if outgoing {
                    format!("{name} arrived at {peer}'s")
                } else {
                    format!("{name} from {peer} saved to {}", path.display())
                };
                self.notify(Level::Info, text);
                self.trim_files();
            }
            FileEvent::Failed {
                id,
                peer,
                outgoing,
                reason,
            } => {
                let f = self.file_entry(id, &peer, outgoing);
                f.stage = FileStage::Failed(reason);
                f.rate = 0;
                f.eta_ms = None;
                let name = f.name.clone();
                let dir = if outgoing { "to" } else { "from" };
                self.notify(
                    Level::Error,
                    format!("{name} {dir} {peer}: {}", failure_text(reason)),
                );
                self.trim_files();
            }
        }
    }

    /// A list answer: the transfers the node holds now (live ones only;
    /// ended ones on screen stay).
    pub(super) fn apply_file_list(&mut self, list: Vec<FileInfo>) {
        self.files.retain(|_, f| !f.live());
        for i in list {
            let stage = match (i.state, i.outgoing) {
                (FileState::Offered, false) => FileStage::Offered,
                (FileState::Offered, true) => FileStage::Offering,
                (FileState::Transferring, _) => FileStage::Moving,
                (FileState::Verifying, _) => FileStage::Verifying,
            };
            let f = self.file_entry(i.id, &i.peer, i.outgoing);
            f.name = i.name;
            f.size = i.size;
            f.done = i.done;
            f.stage = stage;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_file_manager() {
        assert_eq!(size_text(12), "12 B");
        assert_eq!(size_text(1_500), "1.5 kB");
        assert_eq!(size_text(820_000), "820 kB");
        assert_eq!(size_text(24_000_000), "24 MB");
        assert_eq!(size_text(3_200_000_000), "3.2 GB");
    }
}
