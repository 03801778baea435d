//! The headless client's Prometheus metrics (`[metrics] listen` or
//! `--metrics-listen`): what its NAT detection found, calls by the path
//! their media took and by how they ended, and messages. They are counted
//! from the node API's events as the front end sees them, so a client
//! metric is what the user was shown.

use natter::metrics::Exposition;
use natter::node::api::{CallId, CallState, Event, MediaPath, MessageState};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

/// Counts kept from the event stream.
#[derive(Debug, Default)]
pub struct ClientCounters {
    /// The last NAT detection: mapping and filtering, or "udp_blocked".
    nat: Option<(&'static str, &'static str)>,
    nat_detections: u64,
    /// Calls whose media flowed, by path; each call counted once, on its
    /// first report with a known path.
    calls_by_path: BTreeMap<&'static str, u64>,
    /// Calls already counted in `calls_by_path`.
    counted: HashSet<CallId>,
    calls_ended: BTreeMap<&'static str, u64>,
    messages_received: u64,
    messages_failed: u64,
}

/// Shared between the event loop and the scrape endpoint.
pub type Shared = Arc<Mutex<ClientCounters>>;

fn path_label(p: &MediaPath) -> Option<&'static str> {
    match p {
        MediaPath::Unknown => None,
        MediaPath::Direct { .. } => Some("direct"),
        MediaPath::Relayed { .. } => Some("relayed"),
        MediaPath::RelayedTcp { .. } => Some("relayed_tcp"),
    }
}

impl ClientCounters {
    /// Count what `e` says.
    pub fn observe(&mut self, e: &Event) {
        match e {
            Event::NatDetected(r) => {
                self.nat_detections += 1;
                self.nat = Some(if r.udp_blocked {
                    ("udp_blocked", "udp_blocked")
                } else {
                    (r.mapping.as_str(), r.filtering.as_str())
                });
            }
            Event::CallStats { call, stats } => {
                if let Some(path) = path_label(&stats.path)
                    && self.counted.insert(*call)
                {
                    *self.calls_by_path.entry(path).or_default() += 1;
                }
            }
            Event::Call(info) => {
                if let CallState::Ended { reason, .. } = &info.state {
                    *self.calls_ended.entry(reason.code()).or_default() += 1;
                    self.counted.remove(&info.id);
                }
            }
            Event::Message(m) if !m.outgoing => self.messages_received += 1,
            Event::MessageState {
                state: MessageState::Failed(_),
                ..
            } => self.messages_failed += 1,
            _ => {}
        }
    }

    /// What a scrape shows.
    pub fn exposition(&self) -> Exposition {
        let mut e = Exposition::new();
        if let Some((mapping, filtering)) = self.nat {
            e.gauge(
                "natter_client_nat",
                "The NAT type the last detection found (1 for the current one).",
                &[("mapping", mapping), ("filtering", filtering)],
                1.0,
            );
        }
        e.counter(
            "natter_client_nat_detections_total",
            "NAT detections finished.",
            &[],
            self.nat_detections,
        );
        let h = "Calls whose media flowed, by the path it took.";
        for path in ["direct", "relayed", "relayed_tcp"] {
            let v = self.calls_by_path.get(path).copied().unwrap_or(0);
            e.counter("natter_client_calls_total", h, &[("path", path)], v);
        }
        let h = "Calls ended, by reason.";
        for (reason, v) in &self.calls_ended {
            e.counter(
                "natter_client_calls_ended_total",
                h,
                &[("reason", reason)],
                *v,
            );
        }
        e.counter(
            "natter_client_messages_received_total",
            "Chat messages received.",
            &[],
            self.messages_received,
        );
        e.counter(
            "natter_client_messages_failed_total",
            "Chat messages sent that failed for good.",
            &[],
            self.messages_failed,
        );
        e
    }
}

/// Serve the counters at `addr` while the client runs.
pub async fn serve(addr: std::net::SocketAddr) -> anyhow::Result<Shared> {
    let shared = Shared::default();
    let listener = natter::metrics::bind(addr).await?;
    // Not on stdout: that is the JSON stream.
    tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
    let s = shared.clone();
    let collect = move || {
        let e = s.lock().unwrap_or_else(|p| p.into_inner()).exposition();
        async move { e }
    };
    tokio::spawn(natter::metrics::serve(
        listener,
        collect,
        std::future::pending(),
    ));
    Ok(shared)
}
