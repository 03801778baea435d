//! Prometheus metrics of a running supernode, authority or client:
//! `[metrics] listen` (or `--metrics-listen`) serves the text exposition
//! format at `GET /metrics`.
//!
//! Nothing here keeps state of its own: each scrape asks the running node
//! for a snapshot of its cores' counters (the `*Stats` structs every core
//! already keeps, refusals included) and renders it with the `prometheus`
//! crate's data model and text encoder. So a metric can't drift from what
//! the core counted, and a core stays free of any metrics library.
//!
//! - [`Exposition`] builds metric families from plain numbers;
//! - [`authority`], [`supernode`]: the families of each role;
//! - [`serve`]: the scrape endpoint, a small HTTP/1.1 responder with a
//!   deadline per request and a cap on concurrent connections (a scraper
//!   is one trusted host; anyone else who reaches the port gets a bounded
//!   share and is counted).

pub mod authority;
pub mod supernode;

use crate::histogram::LatencyHistogram;
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Scrapes served at once; more connections are closed at once.
const MAX_CONNECTIONS: usize = 8;
/// A request must arrive whole within this.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Longest request head read.
const MAX_REQUEST: usize = 8 * 1024;

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("cannot serve metrics on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Metric families under construction, in the order first named.
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<MetricFamily>,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    fn family(&mut self, name: &str, help: &str, kind: MetricType) -> &mut MetricFamily {
        let i = match self.families.iter().position(|f| f.name() == name) {
            Some(i) => i,
            None => {
                let mut f = MetricFamily::default();
                f.set_name(name.to_owned());
                f.set_help(help.to_owned());
                f.set_field_type(kind);
                self.families.push(f);
                self.families.len() - 1
            }
        };
        &mut self.families[i]
    }

    fn metric(labels: &[(&str, &str)]) -> Metric {
        let mut m = Metric::default();
        m.set_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut l = LabelPair::default();
                    l.set_name((*k).to_owned());
                    l.set_value((*v).to_owned());
                    l
                })
                .collect(),
        );
        m
    }

    /// A monotonic count (`name` ends in `_total`).
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        let mut m = Self::metric(labels);
        let mut c = Counter::default();
        c.set_value(value as f64);
        m.set_counter(c);
        self.family(name, help, MetricType::COUNTER)
            .mut_metric()
            .push(m);
    }

    /// A value that goes up and down.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let mut m = Self::metric(labels);
        let mut g = Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
        self.family(name, help, MetricType::GAUGE)
            .mut_metric()
            .push(m);
    }

    /// A latency histogram, in seconds (`name` ends in `_seconds`).
    pub fn histogram(&mut self, name: &str, help: &str, h: &LatencyHistogram) {
        let mut m = Self::metric(&[]);
        let mut p = Histogram::default();
        p.set_sample_count(h.count());
        p.set_sample_sum(h.sum_ms as f64 / 1000.0);
        p.set_bucket(
            h.cumulative()
                .map(|(bound_ms, n)| {
                    let mut b = Bucket::default();
                    b.set_upper_bound(bound_ms as f64 / 1000.0);
                    b.set_cumulative_count(n);
                    b
                })
                .collect(),
        );
        m.set_histogram(p);
        self.family(name, help, MetricType::HISTOGRAM)
            .mut_metric()
            .push(m);
    }

    /// Every non-zero or zero count of `(reason, value)` pairs as one
    /// family with a `reason` label (refusals and drops).
    pub fn reasons(&mut self, name: &str, help: &str, pairs: &[(&str, u64)]) {
        for (reason, v) in pairs {
            self.counter(name, help, &[("reason", reason)], *v);
        }
    }

    /// The text exposition format (version 0.0.4).
    pub fn encode(&self) -> String {
        // Encoding only fails for families the builder never makes
        // (a summary without quantiles, an empty name).
        prometheus::TextEncoder::new()
            .encode_to_string(&self.families)
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}

/// Counters of the endpoint itself.
#[derive(Debug, Default)]
pub struct EndpointStats {
    pub scrapes: AtomicU64,
    /// Connections closed because `MAX_CONNECTIONS` were open.
    pub refused_busy: AtomicU64,
    /// Requests that were too slow, too long or not HTTP.
    pub bad_requests: AtomicU64,
}

impl EndpointStats {
    fn add_to(&self, e: &mut Exposition) {
        e.counter(
            "natter_metrics_scrapes_total",
            "Scrapes of this endpoint served.",
            &[],
            self.scrapes.load(Ordering::Relaxed),
        );
        e.reasons(
            "natter_metrics_refused_total",
            "Connections to this endpoint refused, by reason.",
            &[
                ("busy", self.refused_busy.load(Ordering::Relaxed)),
                ("bad_request", self.bad_requests.load(Ordering::Relaxed)),
            ],
        );
    }
}

/// Bind the scrape endpoint.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Serve scrapes on `listener` until `shutdown` completes; `collect`
/// makes the exposition of one scrape.
pub async fn serve<F, Fut>(listener: TcpListener, collect: F, shutdown: impl Future<Output = ()>)
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Exposition> + Send,
{
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let stats = Arc::new(EndpointStats::default());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("metrics: accept failed: {e}");
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            stats.refused_busy.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "metrics: refused, {MAX_CONNECTIONS} scrapes open");
            continue;
        };
        let collect = collect.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(why) = answer(stream, collect, &stats).await {
                stats.bad_requests.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, "metrics: {why}");
            }
        });
    }
}

/// Read one request head and answer it.
async fn answer<F, Fut>(
    mut s: TcpStream,
    collect: F,
    stats: &EndpointStats,
) -> Result<(), &'static str>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Exposition>,
{
    let head = tokio::time::timeout(REQUEST_DEADLINE, read_head(&mut s))
        .await
        .map_err(|_| "request too slow")??;
    let mut words = head.split(' ');
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => {
            stats.scrapes.fetch_add(1, Ordering::Relaxed);
            let mut e = collect().await;
            stats.add_to(&mut e);
            ("200 OK", e.encode())
        }
        ("GET", "/") => ("200 OK", "natter metrics: GET /metrics\n".to_owned()),
        ("GET", _) => ("404 Not Found", "not found\n".to_owned()),
        _ => ("405 Method Not Allowed", "only GET\n".to_owned()),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        prometheus::TEXT_FORMAT,
        body.len()
    );
    let _ = tokio::time::timeout(REQUEST_DEADLINE, s.write_all(reply.as_bytes())).await;
    let _ = s.shutdown().await;
    Ok(())
}

/// The request line of a request whose head ends within `MAX_REQUEST`.
async fn read_head(s: &mut TcpStream) -> Result<String, &'static str> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > MAX_REQUEST {
            return Err("request head too long");
        }
        let n = s.read(&mut chunk).await.map_err(|_| "read failed")?;
        if n == 0 {
            return Err("closed before the request ended");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
    std::str::from_utf8(line)
        .map(str::to_owned)
        .map_err(|_| "request line is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_group_labels_and_render_the_text_format() {
        let mut e = Exposition::new();
        e.counter("natter_x_total", "X.", &[("outcome", "ok")], 3);
        e.counter("natter_x_total", "X.", &[("outcome", "refused")], 1);
        e.gauge("natter_y", "Y.", &[], 2.0);
        let mut h = LatencyHistogram::default();
        h.record(3);
        h.record(40);
        e.histogram("natter_z_seconds", "Z.", &h);
        let text = e.encode();
        assert_eq!(text.matches("# TYPE natter_x_total counter").count(), 1);
        assert!(text.contains("natter_x_total{outcome=\"ok\"} 3"));
        assert!(text.contains("natter_x_total{outcome=\"refused\"} 1"));
        assert!(text.contains("natter_y 2"));
        assert!(text.contains("natter_z_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("natter_z_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("natter_z_seconds_sum 0.043"));
    }
}
