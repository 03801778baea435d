//! Tokio driver for a [`LinkEndpoint`]: one task owns a UDP socket and the
//! endpoint, takes [`LinkCommand`]s over an mpsc channel, emits
//! [`LinkEvent`]s over another, and sleeps until the endpoint's next
//! deadline. All protocol logic stays in the sans-IO core.

use crate::clock::Clock;
use crate::identity::Certificate;
use crate::link::{LinkEndpoint, LinkError, LinkEvent, LinkStats};
use crate::socket::NodeSocket;
use crate::time::Millis;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

/// Commands and events waiting between the task and its users.
const CHANNEL: usize = 1024;
/// Larger than any frame, so nothing valid is cut short.
const RECV_BUFFER: usize = 65_536;

#[derive(Debug, Error)]
pub enum UdpLinkError {
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the link task has stopped")]
    Stopped,
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// What a [`LinkHandle`] asks of the task.
#[derive(Debug)]
pub enum LinkCommand {
    Connect {
        addr: SocketAddr,
        reply: oneshot::Sender<Result<(), LinkError>>,
    },
    Send {
        addr: SocketAddr,
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<(), LinkError>>,
    },
    Close {
        addr: SocketAddr,
    },
    SetCertificate {
        cert: Certificate,
        reply: oneshot::Sender<Result<(), LinkError>>,
    },
    Peer {
        addr: SocketAddr,
        reply: oneshot::Sender<Option<Certificate>>,
    },
    Stats {
        reply: oneshot::Sender<LinkStats>,
    },
}

/// Sends commands to a running link; cheap to clone.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    commands: mpsc::Sender<LinkCommand>,
}

impl LinkHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> LinkCommand,
    ) -> Result<T, UdpLinkError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| UdpLinkError::Stopped)?;
        rx.await.map_err(|_| UdpLinkError::Stopped)
    }

    pub async fn connect(&self, addr: SocketAddr) -> Result<(), UdpLinkError> {
        Ok(self
            .ask(|reply| LinkCommand::Connect { addr, reply })
            .await??)
    }

    /// Queue `payload` for `addr`; see [`LinkEndpoint::send`].
    pub async fn send(&self, addr: SocketAddr, payload: Vec<u8>) -> Result<(), UdpLinkError> {
        Ok(self
            .ask(|reply| LinkCommand::Send {
                addr,
                payload,
                reply,
            })
            .await??)
    }

    pub async fn close(&self, addr: SocketAddr) -> Result<(), UdpLinkError> {
        self.commands
            .send(LinkCommand::Close { addr })
            .await
            .map_err(|_| UdpLinkError::Stopped)
    }

    pub async fn set_certificate(&self, cert: Certificate) -> Result<(), UdpLinkError> {
        Ok(self
            .ask(|reply| LinkCommand::SetCertificate { cert, reply })
            .await??)
    }

    pub async fn peer(&self, addr: SocketAddr) -> Result<Option<Certificate>, UdpLinkError> {
        self.ask(|reply| LinkCommand::Peer { addr, reply }).await
    }

    pub async fn stats(&self) -> Result<LinkStats, UdpLinkError> {
        self.ask(|reply| LinkCommand::Stats { reply }).await
    }
}

/// A link endpoint running on a UDP socket. Dropping it stops the task.
#[derive(Debug)]
pub struct UdpLink {
    handle: LinkHandle,
    events: mpsc::Receiver<LinkEvent>,
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl UdpLink {
    /// Bind `listen` and start the task. Users must keep reading events
    /// ([`UdpLink::next_event`]): the task waits for room in the event
    /// channel, so an unread channel stalls the link.
    pub async fn bind(
        listen: SocketAddr,
        endpoint: LinkEndpoint,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, UdpLinkError> {
        let socket = NodeSocket::bind(listen)
            .await
            .map_err(|source| UdpLinkError::Bind {
                addr: listen,
                source,
            })?;
        let local_addr = socket.local_addr().map_err(|source| UdpLinkError::Bind {
            addr: listen,
            source,
        })?;
        let (cmd_tx, cmd_rx) = mpsc::channel(CHANNEL);
        let (ev_tx, ev_rx) = mpsc::channel(CHANNEL);
        let task = tokio::spawn(run(socket, endpoint, clock, cmd_rx, ev_tx));
        Ok(UdpLink {
            handle: LinkHandle { commands: cmd_tx },
            events: ev_rx,
            local_addr,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn handle(&self) -> LinkHandle {
        self.handle.clone()
    }

    /// The next event; `None` once the task has stopped.
    pub async fn next_event(&mut self) -> Option<LinkEvent> {
        self.events.recv().await
    }

    /// An event already waiting, without blocking.
    pub fn try_next_event(&mut self) -> Option<LinkEvent> {
        self.events.try_recv().ok()
    }
}

impl std::ops::Deref for UdpLink {
    type Target = LinkHandle;
    fn deref(&self) -> &LinkHandle {
        &self.handle
    }
}

impl Drop for UdpLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    socket: NodeSocket,
    mut ep: LinkEndpoint,
    clock: Arc<dyn Clock>,
    mut commands: mpsc::Receiver<LinkCommand>,
    events: mpsc::Sender<LinkEvent>,
) {
    let mut rng = StdRng::from_entropy();
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        while let Some(t) = ep.poll_transmit() {
            // UDP is lossy anyway: a failed send is a lost datagram, which
            // the protocol's retransmission covers.
            if let Err(e) = socket.send_to(&t.bytes, t.dst).await {
                tracing::debug!(dst = %t.dst, error = %e, "link datagram not sent");
            }
        }
        while let Some(ev) = ep.poll_event() {
            if events.send(ev).await.is_err() {
                return;
            }
        }
        let wait = ep
            .poll_timeout()
            .map(|at| Duration::from_millis(at.since(clock.now())));
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, from)) => ep.handle_datagram(clock.now(), clock.unix_secs(), from, &buf[..n], &mut rng),
                Err(e) => tracing::debug!(error = %e, "link receive failed"),
            },
            command = commands.recv() => match command {
                Some(c) => apply(&mut ep, clock.now(), c, &mut rng),
                None => return,
            },
            _ = sleep(wait) => ep.handle_timeout(clock.now(), clock.unix_secs(), &mut rng),
        }
    }
}

async fn sleep(wait: Option<Duration>) {
    match wait {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

fn apply(ep: &mut LinkEndpoint, now: Millis, command: LinkCommand, rng: &mut StdRng) {
    // A dropped reply receiver means the asker stopped waiting: fine.
    match command {
        LinkCommand::Connect { addr, reply } => {
            let _ = reply.send(ep.connect(now, addr, rng));
        }
        LinkCommand::Send {
            addr,
            payload,
            reply,
        } => {
            let _ = reply.send(ep.send(now, addr, &payload, rng));
        }
        LinkCommand::Close { addr } => ep.close(now, addr),
        LinkCommand::SetCertificate { cert, reply } => {
            let _ = reply.send(ep.set_certificate(cert));
        }
        LinkCommand::Peer { addr, reply } => {
            let _ = reply.send(ep.peer(addr).cloned());
        }
        LinkCommand::Stats { reply } => {
            let _ = reply.send(ep.stats().clone());
        }
    }
}
