//! File transfer on a client node: the sub-driver that runs the
//! [`Transfers`] core and does its I/O. The client driver hands it file
//! commands ([`FilesCommand`]), the envelopes of the files kinds (its
//! dispatcher's table), their outcomes, file messages from peer links,
//! peer connections going up and down, and the results of hashing jobs
//! ([`Files::jobs`]); it asks the driver for peer connections
//! ([`Files::take_connects`]) and reports [`FileEvent`]s.
//!
//! On disk (in the data dir's `transfers/`): one record per transfer,
//! JSON, written to a temporary file and renamed into place. An outgoing
//! record (`out-ID.json`) lets a restarted sender offer the same file
//! again; an incoming one (`in-ID.json`) holds the destination and the
//! byte ranges written to `DEST.part` (written only after those bytes
//! were), so a restarted receiver resumes. The whole-file hash is
//! computed on a blocking thread, never in the node's task: before an
//! offer, and once every byte arrived; only a match renames the `.part`
//! into place.
//!
//! Received bytes, incoming records, the final check and the clean-up
//! go to one disk thread (`Disk`) in the order they happen, so the
//! node's task never waits for the disk (a page cache full of dirty pages
//! stalls `pwrite` for hundreds of milliseconds, and a call's packets
//! wait behind it) and a record never names bytes not yet written.
//! Received bytes queued there are bounded ([`DISK_QUEUE`]); data beyond
//! is dropped and counted, and the sender sends it again, so a slow disk
//! slows the transfer as a full path does. Contiguous received bytes go
//! to it as one write per driver step ([`Files::end_step`]), not one per
//! packet.

use crate::ice::IceSessions;
use crate::link::LinkEndpoint;
use crate::overlay::{ClientCore, EnvelopeId};
use crate::time::Millis;
use crate::transfer::wire::LINK_TAG;
use crate::transfer::{
    FileEvent, FileFailure, FileHasher, FileInfo, LinkMsg, Output, RangeSet, Signal, Standing,
    TransferConfig, TransferId, Transfers,
};
use rand::RngCore;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{mpsc, oneshot};

/// File bytes sent per step at most (256 packets of the configured
/// size), so that input is not starved.
const DATA_BUDGET: usize = 256 * 1200;
/// The budget while a call runs (16 packets): a call's packets wait in
/// the node's task behind a whole step.
const CALL_DATA_BUDGET: usize = 16 * 1200;
/// File bytes per data packet at most: the largest link message.
pub const MAX_CHUNK: usize = crate::link::MAX_PAYLOAD - crate::transfer::wire::DATA_HEADER;
/// Ethernet's MTU. No path across the Internet carries more, so only a
/// route whose MTU is above it (loopback, a jumbo-frame LAN) gets larger
/// data packets.
const ETHERNET_MTU: usize = 1500;
/// Bytes of a datagram that are not file data: IPv6 and UDP headers (the
/// larger family's), the link's framing and tag, the data header.
const PACKET_OVERHEAD: usize = 40
    + 8
    + (crate::wire::MAX_FRAME - crate::link::MAX_PAYLOAD)
    + crate::transfer::wire::DATA_HEADER;

/// File bytes per data packet on a route of `mtu` bytes: 0 (the
/// configured size) up to Ethernet's MTU, else what fills the route, at
/// most [`MAX_CHUNK`].
pub fn chunk_for_mtu(mtu: usize) -> usize {
    if mtu <= ETHERNET_MTU {
        0
    } else {
        (mtu - PACKET_OVERHEAD).min(MAX_CHUNK)
    }
}
/// Received bytes waiting for the disk thread at most.
pub const DISK_QUEUE: usize = 4 << 20;
/// Contiguous received bytes gathered into one write at most.
const WRITE_RUN: usize = 256 << 10;

/// Where a node keeps its transfers.
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// The records' directory (`transfers/` in the data dir).
    pub records: PathBuf,
    /// Where accepted files go when the user names no place.
    pub downloads: PathBuf,
    pub config: TransferConfig,
}

/// What the node's owner asks of the transfers.
#[derive(Debug)]
pub enum FilesCommand {
    /// Offer the file at `path` to `to`.
    Send {
        to: String,
        path: PathBuf,
    },
    /// Accept an offer into `dest` (a file, or a directory for the
    /// offered name; the downloads directory when `None`).
    Accept {
        id: TransferId,
        dest: Option<PathBuf>,
    },
    Decline {
        id: TransferId,
    },
    Cancel {
        id: TransferId,
    },
    List {
        reply: oneshot::Sender<Vec<FileInfo>>,
    },
}

/// What the transfers report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilesEvent {
    File(FileEvent),
    /// A command could not be carried out.
    Failed {
        /// The command's name ([`FilesCommand::name`]).
        command: &'static str,
        error: String,
    },
}

impl FilesCommand {
    /// A short name for error events, as [`crate::node::api::Command::name`]
    /// names the front end's command.
    pub fn name(&self) -> &'static str {
        match self {
            FilesCommand::Send { .. } => "send file",
            FilesCommand::Accept { .. } => "accept file",
            FilesCommand::Decline { .. } => "decline file",
            FilesCommand::Cancel { .. } => "cancel file",
            FilesCommand::List { .. } => "files",
        }
    }
}

/// Results of blocking jobs.
#[derive(Debug)]
pub enum Job {
    /// A file to offer was hashed.
    Hashed {
        id: TransferId,
        to: String,
        path: PathBuf,
        result: std::io::Result<(u64, [u8; 32])>,
    },
    /// An incoming file was checked (and moved into place when `ok`).
    Verified { id: TransferId, ok: bool },
    /// Writing received bytes of `id` failed.
    WriteFailed { id: TransferId },
}

/// Work for the disk thread, done in order.
enum DiskTask {
    /// Received bytes at `offset` of a `.part`.
    Write {
        id: TransferId,
        file: Arc<File>,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// An incoming record (`in-ID`), serialized.
    Record { name: String, bytes: Vec<u8> },
    /// Hash the `.part` of `dest` and move it into place on a match.
    Verify {
        id: TransferId,
        dest: PathBuf,
        hash: [u8; 32],
    },
    /// Drop `id`'s records (and its `.part` when `discard`).
    Forget { id: TransferId, discard: bool },
}

/// The disk thread's end in the node: see the module docs.
struct Disk {
    tx: std::sync::mpsc::Sender<DiskTask>,
    /// Received bytes queued and not yet written (the thread subtracts),
    /// `run` included.
    queued: Arc<AtomicUsize>,
    /// Data packets dropped because [`DISK_QUEUE`] was full.
    dropped: u64,
    /// Contiguous received bytes of one transfer not yet handed to the
    /// thread (a [`DiskTask::Write`]): handed over at the end of the
    /// driver's step, before any other task, or when the next bytes do
    /// not follow on.
    run: Option<DiskTask>,
}

impl Disk {
    fn start(records: PathBuf, jobs: mpsc::Sender<Job>) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<DiskTask>();
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        let run = move || {
            for t in rx {
                match t {
                    DiskTask::Write {
                        id,
                        file,
                        offset,
                        bytes,
                    } => {
                        let r = file.write_all_at(&bytes, offset);
                        q.fetch_sub(bytes.len(), Ordering::Relaxed);
                        if let Err(e) = r {
                            tracing::warn!("writing a received file failed: {e}");
                            let _ = jobs.blocking_send(Job::WriteFailed { id });
                        }
                    }
                    DiskTask::Record { name, bytes } => {
                        if let Err(e) = write_record_bytes(&records, &name, &bytes) {
                            tracing::warn!("transfer record: {e}");
                        }
                    }
                    DiskTask::Verify { id, dest, hash } => {
                        let part = part_path(&dest);
                        let ok = matches!(hash_file(&part), Ok((_, h)) if h == hash)
                            && std::fs::rename(&part, &dest).is_ok();
                        let _ = jobs.blocking_send(Job::Verified { id, ok });
                    }
                    DiskTask::Forget { id, discard } => {
                        if discard && let Some(dest) = incoming_dest(&records, id) {
                            let _ = std::fs::remove_file(part_path(&dest));
                        }
                        forget_records(&records, id);
                    }
                }
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("natter-files".into())
            .spawn(run)
        {
            // Without the thread every task fails as a closed channel.
            tracing::error!("no disk thread for file transfers: {e}");
        }
        Disk {
            tx,
            queued,
            dropped: 0,
            run: None,
        }
    }

    /// Queue `t` (after the bytes gathered so far); false when the thread
    /// is gone.
    fn send(&mut self, t: DiskTask) -> bool {
        self.hand_off() && self.tx.send(t).is_ok()
    }

    /// Received `bytes` of `id` at `offset`: they join the run when they
    /// follow on, else start a new one; false when the thread is gone.
    fn write(&mut self, id: TransferId, file: &Arc<File>, offset: u64, bytes: &[u8]) -> bool {
        self.queued.fetch_add(bytes.len(), Ordering::Relaxed);
        if let Some(DiskTask::Write {
            id: rid,
            offset: roff,
            bytes: run,
            ..
        }) = &mut self.run
            && *rid == id
            && *roff + run.len() as u64 == offset
            && run.len() + bytes.len() <= WRITE_RUN
        {
            run.extend_from_slice(bytes);
            return true;
        }
        let ok = self.hand_off();
        let mut run = Vec::with_capacity(WRITE_RUN.min(bytes.len() * 32));
        run.extend_from_slice(bytes);
        self.run = Some(DiskTask::Write {
            id,
            file: file.clone(),
            offset,
            bytes: run,
        });
        ok
    }

    /// Hand the gathered bytes to the thread; false when it is gone.
    fn hand_off(&mut self) -> bool {
        match self.run.take() {
            Some(t) => self.tx.send(t).is_ok(),
            None => true,
        }
    }
}

/// An outgoing record.
#[derive(Debug, Serialize, Deserialize)]
struct OutRecord {
    peer: String,
    path: PathBuf,
    name: String,
    size: u64,
    hash: String,
}

/// An incoming record: the resume state.
#[derive(Debug, Serialize, Deserialize)]
struct InRecord {
    peer: String,
    name: String,
    size: u64,
    hash: String,
    dest: PathBuf,
    have: Vec<(u64, u64)>,
}

/// The driver state this sub-driver works with.
pub struct FilesCx<'a> {
    pub now: Millis,
    /// The wall clock, which dates envelopes.
    pub unix: crate::time::UnixMillis,
    pub client: &'a mut ClientCore,
    pub link: &'a mut LinkEndpoint,
    pub ice: &'a mut IceSessions,
    pub rng: &'a mut StdRng,
}

/// See the module docs.
pub struct Files {
    core: Transfers,
    opts: FileOptions,
    /// Open files: sources and `.part`s (shared with the disk thread).
    open: HashMap<TransferId, Arc<File>>,
    /// The disk thread: received bytes, incoming records, checks.
    disk: Disk,
    /// Our envelopes, by id: which transfer.
    envelopes: HashMap<EnvelopeId, TransferId>,
    /// Records of a previous process, taken up once we are online.
    restore: Option<Vec<(TransferId, Result<OutRecord, InRecord>)>>,
    jobs_tx: mpsc::Sender<Job>,
    /// Finished blocking jobs, for the client driver's loop.
    pub jobs: mpsc::Receiver<Job>,
    /// Peers to connect to (`true`: drop the old connection first).
    connects: Vec<(String, bool)>,
    events: std::collections::VecDeque<FilesEvent>,
}

fn hex32(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut h = [0u8; 32];
    for (i, b) in h.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(h)
}

/// `dest` + ".part".
fn part_path(dest: &Path) -> PathBuf {
    let mut p = dest.as_os_str().to_owned();
    p.push(".part");
    PathBuf::from(p)
}

/// Hash a whole file in pieces (a blocking thread's work).
fn hash_file(path: &Path) -> std::io::Result<(u64, [u8; 32])> {
    use blake2::Digest;
    use std::io::Read;
    let mut f = File::open(path)?;
    let mut h = FileHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, h.finalize().into()))
}

impl Files {
    /// The transfers of this node, with the records a previous process
    /// left (taken up by [`Files::online`]).
    pub fn new(opts: FileOptions, incarnation: u64) -> Self {
        let (jobs_tx, jobs) = mpsc::channel(64);
        let restore = Some(load_records(&opts.records));
        Files {
            core: Transfers::new(opts.config.clone(), incarnation),
            disk: Disk::start(opts.records.clone(), jobs_tx.clone()),
            opts,
            open: HashMap::new(),
            envelopes: HashMap::new(),
            restore,
            jobs_tx,
            jobs,
            connects: Vec::new(),
            events: Default::default(),
        }
    }

    /// Whether `user` is the peer of a file we offered or accepted (they
    /// may have our ICE candidates); an offer we have not answered does
    /// not count.
    pub fn agreed_with(&self, user: &str) -> bool {
        self.core.list().iter().any(|f| {
            f.peer.eq_ignore_ascii_case(user)
                && (f.outgoing || f.state != crate::transfer::FileState::Offered)
        })
    }

    /// Whether a call runs on this node: transfers then queue less.
    pub fn set_call(&mut self, on: bool) {
        self.core.set_call(on);
    }

    pub fn poll_event(&mut self) -> Option<FilesEvent> {
        self.events.pop_front()
    }

    pub fn take_connects(&mut self) -> Vec<(String, bool)> {
        std::mem::take(&mut self.connects)
    }

    fn failed(&mut self, command: &'static str, error: String) {
        self.events.push_back(FilesEvent::Failed { command, error });
    }

    pub fn poll_timeout(&self, now: Millis) -> Millis {
        self.core.poll_timeout(now)
    }

    pub fn handle_timeout(&mut self, cx: &mut FilesCx<'_>) {
        self.core.handle_timeout(cx.now);
        self.flush(cx);
    }

    /// Our presence record is published: take up a previous process's
    /// transfers (their envelopes find the peers now).
    pub fn online(&mut self, cx: &mut FilesCx<'_>) {
        let Some(records) = self.restore.take() else {
            return;
        };
        for (id, r) in records {
            match r {
                Ok(o) => {
                    let Some(hash) = unhex32(&o.hash) else {
                        continue;
                    };
                    match File::open(&o.path) {
                        Ok(f) => {
                            self.open.insert(id, Arc::new(f));
                            let _ = self
                                .core
                                .offer(cx.now, id, &o.peer, o.path, &o.name, o.size, hash);
                        }
                        Err(e) => {
                            tracing::warn!(path = %o.path.display(), "file to send is gone: {e}");
                            forget_records(&self.opts.records, id);
                        }
                    }
                }
                Err(i) => {
                    let Some(hash) = unhex32(&i.hash) else {
                        continue;
                    };
                    let part = part_path(&i.dest);
                    match std::fs::OpenOptions::new()
                        .write(true)
                        .read(true)
                        .open(&part)
                    {
                        Ok(f) => {
                            self.open.insert(id, Arc::new(f));
                            let have = RangeSet::from_ranges(i.have, i.size);
                            self.core.restore_incoming(
                                cx.now, id, &i.peer, &i.name, i.size, hash, i.dest, have,
                            );
                        }
                        Err(e) => {
                            tracing::warn!(part = %part.display(), "partial file is gone: {e}");
                            forget_records(&self.opts.records, id);
                        }
                    }
                }
            }
        }
        self.flush(cx);
    }

    pub fn command(&mut self, c: FilesCommand, cx: &mut FilesCx<'_>) {
        match c {
            FilesCommand::Send { to, path } => {
                let mut b = [0u8; 16];
                cx.rng.fill_bytes(&mut b);
                let id = u128::from_be_bytes(b);
                let tx = self.jobs_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let result = hash_file(&path);
                    let _ = tx.blocking_send(Job::Hashed {
                        id,
                        to,
                        path,
                        result,
                    });
                });
            }
            FilesCommand::Accept { id, dest } => self.accept(id, dest, cx),
            FilesCommand::Decline { id } => {
                if self.core.decline(id).is_err() {
                    self.failed("decline file", format!("no file offer {id:032x}"));
                }
            }
            FilesCommand::Cancel { id } => {
                if self.core.cancel(id).is_err() {
                    self.failed("cancel file", format!("no file transfer {id:032x}"));
                }
            }
            FilesCommand::List { reply } => {
                let _ = reply.send(self.core.list());
            }
        }
        self.flush(cx);
    }

    fn accept(&mut self, id: TransferId, dest: Option<PathBuf>, cx: &mut FilesCx<'_>) {
        let Some(name) = self.core.offered_name(id).map(str::to_owned) else {
            return self.failed("accept file", format!("no file offer {id:032x}"));
        };
        let dest = match dest {
            Some(d) if d.is_dir() => d.join(&name),
            Some(d) => d,
            None => self.opts.downloads.join(&name),
        };
        if let Some(dir) = dest.parent()
            && !dir.as_os_str().is_empty()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            return self.failed(
                "accept file",
                format!("cannot create {}: {e}", dir.display()),
            );
        }
        let part = part_path(&dest);
        match std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&part)
        {
            Ok(f) => {
                self.open.insert(id, Arc::new(f));
                let _ = self.core.accept(cx.now, id, dest);
            }
            Err(e) => self.failed(
                "accept file",
                format!("cannot write {}: {e}", part.display()),
            ),
        }
    }

    /// A finished blocking job.
    pub fn job(&mut self, j: Job, cx: &mut FilesCx<'_>) {
        match j {
            Job::Hashed {
                id,
                to,
                path,
                result,
            } => match result.and_then(|r| File::open(&path).map(|f| (r, f))) {
                Ok(((size, hash), f)) => {
                    let name = path
                        .file_name()
                        .map_or("file".into(), |n| n.to_string_lossy().into_owned());
                    let rec = OutRecord {
                        peer: to.clone(),
                        path: path.clone(),
                        name: name.clone(),
                        size,
                        hash: hex32(&hash),
                    };
                    if let Err(e) =
                        write_record(&self.opts.records, &format!("out-{id:032x}"), &rec)
                    {
                        tracing::warn!("transfer record: {e}");
                    }
                    self.open.insert(id, Arc::new(f));
                    if self
                        .core
                        .offer(cx.now, id, &to, path, &name, size, hash)
                        .is_err()
                    {
                        self.open.remove(&id);
                        forget_records(&self.opts.records, id);
                        self.failed("send file", "too many file transfers at once".into());
                    }
                }
                Err(e) => self.failed("send file", format!("cannot read {}: {e}", path.display())),
            },
            Job::Verified { id, ok } => self.core.verified(id, ok),
            Job::WriteFailed { id } => self.core.io_failed(id),
        }
        self.flush(cx);
    }

    /// A files envelope from `from` (verified).
    pub fn on_envelope(
        &mut self,
        from: &str,
        standing: Standing,
        (kind, payload): (u8, &[u8]),
        cx: &mut FilesCx<'_>,
    ) {
        match Signal::decode(kind, payload) {
            Ok(s) => self.core.on_signal(cx.now, from, standing, s),
            Err(e) => tracing::debug!(%from, "bad file signal: {e}"),
        }
        self.flush(cx);
    }

    /// The outcome of an envelope; true when it was ours.
    pub fn on_outcome(&mut self, id: &EnvelopeId, failed: Option<&str>) -> bool {
        let Some(t) = self.envelopes.remove(id) else {
            return false;
        };
        if let Some(reason) = failed {
            tracing::debug!(transfer = %format!("{t:032x}"), "file signal not delivered: {reason}");
        }
        true
    }

    /// A peer connection came up or went away.
    pub fn path(&mut self, now: Millis, user: &str, up: bool) {
        self.core.path(now, user, up);
    }

    /// The peer link with `user` runs over `path` (new, or changed): a
    /// direct path whose route the kernel knows to carry more than
    /// Ethernet's MTU (loopback, a jumbo-frame LAN) gets data packets that
    /// fill it ([`chunk_for_mtu`]); any other path keeps the configured
    /// size (1200 bytes fit every path). A path that stops carrying them
    /// is taken back to that size by the core's retransmission timeout.
    pub fn path_is(&mut self, user: &str, path: &crate::ice::Path) {
        let chunk = if path.is_direct() {
            crate::socket::route_mtu(path.remote).map_or(0, chunk_for_mtu)
        } else {
            0
        };
        self.core.set_path_chunk(user, chunk);
    }

    /// A message on the peer link with `from`; false when it is not a
    /// file message.
    pub fn on_link(&mut self, from: &str, payload: &[u8], cx: &mut FilesCx<'_>) -> bool {
        if payload.first() != Some(&LINK_TAG) {
            return false;
        }
        let m = match LinkMsg::decode(payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(%from, "bad file message: {e}");
                return true;
            }
        };
        if let LinkMsg::Data {
            id, offset, bytes, ..
        } = &m
        {
            if !self.core.wants_data(from, *id, *offset, bytes.len()) {
                return true;
            }
            if self.disk.queued.load(Ordering::Relaxed) + bytes.len() > DISK_QUEUE {
                // Not acknowledged: the sender sends it again.
                self.disk.dropped += 1;
                tracing::debug!(
                    dropped = self.disk.dropped,
                    "the disk is behind: data dropped"
                );
                return true;
            }
            let queued = self
                .open
                .get(id)
                .is_some_and(|f| self.disk.write(*id, f, *offset, bytes));
            if !queued {
                tracing::warn!("no file or no disk thread for received bytes");
                self.core.io_failed(*id);
                self.flush(cx);
                return true;
            }
        }
        self.core.on_link(cx.now, from, &m);
        self.flush(cx);
        true
    }

    /// The peer link address of `user`, if a session with them is up.
    fn link_addr(cx: &FilesCx<'_>, user: &str) -> Option<std::net::SocketAddr> {
        let path = cx.ice.selected(user)?;
        let cert = cx.link.peer(path.remote)?;
        (cert.username == user).then_some(path.remote)
    }

    /// The driver's step ends: received bytes gathered go to the disk
    /// thread.
    pub fn end_step(&mut self) {
        if !self.disk.hand_off() {
            tracing::warn!("no disk thread for received bytes");
        }
    }

    /// Carry out what the core asked for, then send data while windows
    /// allow (up to a budget).
    pub fn flush(&mut self, cx: &mut FilesCx<'_>) {
        while let Some(o) = self.core.poll_output() {
            self.output(o, cx);
        }
        let mut buf = Vec::new();
        let budget = if self.core.call() {
            CALL_DATA_BUDGET
        } else {
            DATA_BUDGET
        };
        let mut sent = 0;
        while sent < budget {
            let Some(d) = self.core.poll_data(cx.now) else {
                break;
            };
            sent += d.len;
            let Some(addr) = Self::link_addr(cx, &d.to) else {
                self.core.path(cx.now, &d.to, false);
                continue;
            };
            buf.clear();
            buf.extend_from_slice(&LinkMsg::data_header(d.id, d.pn, d.ts, d.offset));
            buf.resize(crate::transfer::wire::DATA_HEADER + d.len, 0);
            let read = self
                .open
                .get(&d.id)
                .map(|f| f.read_exact_at(&mut buf[crate::transfer::wire::DATA_HEADER..], d.offset));
            match read {
                Some(Ok(())) => {
                    // A full queue is loss: the packet is sent again.
                    let _ = cx.link.send(cx.now, addr, &buf, cx.rng);
                }
                Some(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    self.core.source_changed(d.id)
                }
                _ => self.core.io_failed(d.id),
            }
        }
        while let Some(o) = self.core.poll_output() {
            self.output(o, cx);
        }
    }

    fn output(&mut self, o: Output, cx: &mut FilesCx<'_>) {
        match o {
            Output::Signal {
                to,
                id,
                kind,
                payload,
            } => {
                let e = cx
                    .client
                    .send_envelope(cx.now, cx.unix, cx.rng, &to, kind, &payload, false);
                self.envelopes.insert(e, id);
            }
            Output::Link { to, bytes } => {
                if let Some(addr) = Self::link_addr(cx, &to) {
                    let _ = cx.link.send(cx.now, addr, &bytes, cx.rng);
                }
            }
            Output::Connect { peer } => self.connects.push((peer, false)),
            Output::Reconnect { peer } => self.connects.push((peer, true)),
            Output::Persist { id } => self.persist(id),
            Output::Verify { id } => self.verify(id),
            Output::Forget { id, discard } => {
                self.open.remove(&id);
                // After the bytes and records queued before it.
                if !self.disk.send(DiskTask::Forget { id, discard }) {
                    forget_records(&self.opts.records, id);
                }
            }
            Output::Event(e) => {
                if let FileEvent::Failed { id, reason, .. } = &e
                    && *reason == FileFailure::HashMismatch
                {
                    tracing::warn!(transfer = %format!("{id:032x}"), "file hash mismatch");
                }
                self.events.push_back(FilesEvent::File(e));
            }
        }
    }

    fn persist(&mut self, id: TransferId) {
        let Some((peer, name, size, hash, Some(dest), have)) = self.core.record(id) else {
            return;
        };
        let rec = InRecord {
            peer: peer.to_owned(),
            name: name.to_owned(),
            size,
            hash: hex32(&hash),
            dest: dest.to_owned(),
            have: have.ranges().to_vec(),
        };
        match serde_json::to_vec(&rec) {
            Ok(bytes) => {
                let name = format!("in-{id:032x}");
                if !self.disk.send(DiskTask::Record { name, bytes }) {
                    tracing::warn!("transfer record: no disk thread");
                }
            }
            Err(e) => tracing::warn!("transfer record: {e}"),
        }
    }

    fn verify(&mut self, id: TransferId) {
        let Some((_, _, _, hash, Some(dest), _)) = self.core.record(id) else {
            return;
        };
        // After every byte queued before it is written.
        let dest = dest.to_owned();
        if !self.disk.send(DiskTask::Verify { id, dest, hash }) {
            self.core.verified(id, false);
        }
    }
}

fn write_record<T: Serialize>(dir: &Path, name: &str, rec: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
    write_record_bytes(dir, name, &bytes)
}

/// A record's bytes, written to a temporary file and renamed into place.
fn write_record_bytes(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, dir.join(format!("{name}.json")))
}

/// The destination recorded for incoming `id`.
fn incoming_dest(dir: &Path, id: TransferId) -> Option<PathBuf> {
    std::fs::read(dir.join(format!("in-{id:032x}.json")))
        .ok()
        .and_then(|b| serde_json::from_slice::<InRecord>(&b).ok())
        .map(|r| r.dest)
}

fn forget_records(dir: &Path, id: TransferId) {
    for p in ["out", "in"] {
        let _ = std::fs::remove_file(dir.join(format!("{p}-{id:032x}.json")));
    }
}

/// Every record in `dir`: outgoing (`Ok`) and incoming (`Err`).
fn load_records(dir: &Path) -> Vec<(TransferId, Result<OutRecord, InRecord>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        let (out_dir, hex) = match stem.split_once('-') {
            Some(("out", h)) => (true, h),
            Some(("in", h)) => (false, h),
            _ => continue,
        };
        let Ok(id) = u128::from_str_radix(hex, 16) else {
            continue;
        };
        let Ok(bytes) = std::fs::read(e.path()) else {
            continue;
        };
        let rec = if out_dir {
            serde_json::from_slice::<OutRecord>(&bytes).map(Ok)
        } else {
            serde_json::from_slice::<InRecord>(&bytes).map(Err)
        };
        match rec {
            Ok(r) => out.push((id, r)),
            Err(err) => tracing::warn!(file = %name, "unreadable transfer record: {err}"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet-sized routes (and smaller) keep the configured packet
    /// size; larger ones are filled up to the largest link message, each
    /// whole datagram within the route's MTU.
    #[test]
    fn data_packets_fill_routes_above_ethernets_mtu() {
        assert_eq!(chunk_for_mtu(1280), 0);
        assert_eq!(chunk_for_mtu(1500), 0);
        let jumbo = chunk_for_mtu(9000);
        assert!(jumbo > 8000 && jumbo + PACKET_OVERHEAD <= 9000, "{jumbo}");
        assert_eq!(chunk_for_mtu(65_536), MAX_CHUNK);
    }

    /// Contiguous bytes join one write; a gap, or another task, hands the
    /// run over first, so the disk sees everything in order.
    #[test]
    fn received_bytes_go_to_disk_in_runs_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (jobs, mut done) = mpsc::channel(4);
        let mut disk = Disk::start(dir.path().join("records"), jobs);
        let dest = dir.path().join("f.bin");
        let part = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(part_path(&dest))
            .unwrap();
        let part = Arc::new(part);
        assert!(disk.write(1, &part, 0, b"abc"));
        assert!(disk.write(1, &part, 3, b"def"));
        match &disk.run {
            Some(DiskTask::Write { offset, bytes, .. }) => {
                assert_eq!((*offset, &bytes[..]), (0, &b"abcdef"[..]))
            }
            _ => panic!("no run"),
        }
        // A gap: the run goes, a new one starts.
        assert!(disk.write(1, &part, 10, b"xyz"));
        match &disk.run {
            Some(DiskTask::Write { offset, .. }) => assert_eq!(*offset, 10),
            _ => panic!("no run"),
        }
        // The check comes after every byte before it.
        let hash = crate::transfer::hash_bytes(b"abcdef\0\0\0\0xyz");
        assert!(disk.send(DiskTask::Verify {
            id: 1,
            dest: dest.clone(),
            hash,
        }));
        assert!(disk.run.is_none());
        match done.blocking_recv() {
            Some(Job::Verified { id: 1, ok: true }) => {}
            j => panic!("{j:?}"),
        }
        assert_eq!(disk.queued.load(Ordering::Relaxed), 0);
        assert_eq!(std::fs::read(&dest).unwrap(), b"abcdef\0\0\0\0xyz");
    }
}
