//! Relay throughput and added latency: a natter supernode's TURN relay
//! (in this process, the same driver `natter --supernode` runs) against
//! coturn's turnserver on the same machine, driven by the same load
//! generators:
//!
//! 1. coturn's turnutils_uclient (REST credentials from the shared secret,
//!    channels, echo through turnutils_peer): messages echoed per second;
//! 2. our own saturating generator: clients blast ChannelData at the relay
//!    from two threads, a sink peer counts what the relay delivers per
//!    second (the relay's forwarding capacity);
//! 3. added latency: one packet at a time through a channel to an echo
//!    peer and back, against the same exchange without the relay; p50/p99.
//!
//! Run: `cargo bench --bench relay -- [seconds] [clients]` (defaults 5, 8).
//! coturn must be installed (`apt-get install coturn`).

// The relay helpers of the integration tests; the bench uses a few.
#[allow(dead_code)]
#[path = "../tests/it/common/relay.rs"]
mod relay;

use natter::clock::{Clock, SystemClock};
use natter::relay::framing::ChannelData;
use natter::relay::{TurnClient, TurnClientConfig, TurnClientEvent, TurnCredentials};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PAYLOAD: usize = 172; // a 20 ms Opus voice frame with our header

/// A TURN client core on a blocking socket, pumped by hand.
struct Blocking {
    sock: UdpSocket,
    core: TurnClient,
}

impl Blocking {
    fn new(server: SocketAddr, creds: TurnCredentials) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
        let core = TurnClient::new(TurnClientConfig::udp(server), creds, key, SystemClock.now());
        Blocking { sock, core }
    }

    fn pump_until(&mut self, mut done: impl FnMut(&TurnClientEvent) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            while let Some(t) = self.core.poll_transmit() {
                self.sock.send_to(&t.bytes, t.dst).unwrap();
            }
            while let Some(e) = self.core.poll_event() {
                if done(&e) {
                    return;
                }
                assert!(
                    !matches!(
                        e,
                        TurnClientEvent::AllocateFailed { .. }
                            | TurnClientEvent::ChannelBindFailed { .. }
                    ),
                    "{e:?}"
                );
            }
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                self.core.handle_input(SystemClock.now(), &buf[..n]);
            }
            self.core.handle_timeout(SystemClock.now());
        }
        panic!("TURN setup timed out");
    }

    /// Allocate and bind a channel to `peer`; returns the relayed address
    /// and the channel number.
    fn setup(&mut self, peer: SocketAddr) -> (SocketAddr, u16) {
        let now = SystemClock.now();
        self.core.allocate(now);
        let ch = self.core.bind_channel(now, peer).unwrap();
        self.pump_until(|e| matches!(e, TurnClientEvent::ChannelBound { .. }));
        (self.core.relayed_addr().unwrap(), ch)
    }
}

fn echo_peer(stop: Arc<AtomicBool>) -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let a = s.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        }
    });
    a
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Round trips (µs) of one packet at a time: through the relay when
/// `server` is set, else straight to the echo peer.
fn round_trips(server: Option<SocketAddr>, samples: usize) -> Vec<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let peer = echo_peer(stop.clone());
    let payload = vec![0x5A; PAYLOAD];
    let mut out = Vec::with_capacity(samples);
    let mut buf = [0u8; 2048];
    match server {
        Some(server) => {
            let mut c = Blocking::new(server, relay::creds(relay::SECRET, "lat", 3600));
            let (_, ch) = c.setup(peer);
            let msg = ChannelData::encode(ch, &payload, false);
            for _ in 0..samples {
                let t = Instant::now();
                c.sock.send_to(&msg, server).unwrap();
                loop {
                    let (n, _) = c.sock.recv_from(&mut buf).expect("echo lost");
                    if buf[0] & 0xC0 == 0x40 && n >= 4 + PAYLOAD {
                        break;
                    }
                }
                out.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        None => {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            for _ in 0..samples {
                let t = Instant::now();
                s.send_to(&payload, peer).unwrap();
                s.recv_from(&mut buf).expect("echo lost");
                out.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    out.sort_by(|a, b| a.total_cmp(b));
    out
}

/// Packets per second the relay delivers to a sink while `clients`
/// blast ChannelData at it for `secs`; also returns packets offered.
/// CPU seconds used so far by the threads of process `pid` whose name
/// starts with `prefix` (all of them for ""), from /proc.
fn cpu_secs(pid: u32, prefix: &str) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let mut ticks = 0u64;
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is the 3rd field,
        // utime and stime the 14th and 15th.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| {
            f.get(i - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ticks += field(14) + field(15);
    }
    ticks as f64 / hz
}

/// Saturate the relay at `server` with `clients` blasting channels;
/// (packets delivered per second, offered per second, delivered per CPU
/// second of the relay's threads as `cpu` reads them).
fn saturate(
    server: SocketAddr,
    clients: usize,
    secs: f64,
    cpu: &dyn Fn() -> f64,
) -> (f64, f64, f64) {
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let mut senders = Vec::new();
    for i in 0..clients {
        let mut c = Blocking::new(
            server,
            relay::creds(relay::SECRET, &format!("load{i}"), 3600),
        );
        let (_, ch) = c.setup(sink_addr);
        senders.push((c.sock, ChannelData::encode(ch, &[0xA5; PAYLOAD], false)));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let counting = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let sink_thread = {
        let (stop, counting, delivered) = (stop.clone(), counting.clone(), delivered.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if sink.recv_from(&mut buf).is_ok() && counting.load(Ordering::Relaxed) {
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let offered = Arc::new(AtomicU64::new(0));
    let halves: Vec<Vec<(UdpSocket, Vec<u8>)>> = {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for (i, s) in senders.into_iter().enumerate() {
            if i % 2 == 0 { a.push(s) } else { b.push(s) }
        }
        vec![a, b]
    };
    let mut threads = Vec::new();
    for group in halves {
        let (stop, offered) = (stop.clone(), offered.clone());
        threads.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (s, m) in &group {
                    let _ = s.send_to(m, server);
                    n += 1;
                }
            }
            offered.fetch_add(n, Ordering::Relaxed);
        }));
    }
    // Warm up, then count.
    std::thread::sleep(Duration::from_millis(500));
    counting.store(true, Ordering::Relaxed);
    let (t, cpu0) = (Instant::now(), cpu());
    std::thread::sleep(Duration::from_secs_f64(secs));
    counting.store(false, Ordering::Relaxed);
    let (elapsed, used) = (t.elapsed().as_secs_f64(), cpu() - cpu0);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let _ = sink_thread.join();
    let got = delivered.load(Ordering::Relaxed) as f64;
    (
        got / elapsed,
        offered.load(Ordering::Relaxed) as f64 / (elapsed + 0.5),
        got / used.max(1e-3),
    )
}

/// turnutils_uclient against `server`: messages echoed per second.
fn uclient(server: SocketAddr, peer_port: u16, clients: usize, messages: usize) -> Option<f64> {
    let bin = relay::coturn_tool("turnutils_uclient")?;
    let t = Instant::now();
    let out = Command::new("timeout")
        .arg("120")
        .arg(bin)
        .args([
            "-W",
            relay::SECRET,
            "-u",
            "bench",
            "-e",
            "127.0.0.1",
            "-c",
            "-z",
            "0",
        ])
        .args(["-r", &peer_port.to_string(), "-n", &messages.to_string()])
        .args(["-m", &clients.to_string(), "-l", &PAYLOAD.to_string()])
        .args(["-p", &server.port().to_string(), "127.0.0.1"])
        .output()
        .ok()?;
    let secs = t.elapsed().as_secs_f64();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let recv: f64 = text
        .lines()
        .rev()
        .filter_map(|l| l.split("tot_recv_msgs=").nth(1))
        .find_map(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())?;
    Some(recv / secs)
}

fn main() {
    // `cargo test --all-targets` runs benches without `--bench`: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run it with `cargo bench --bench relay`");
        return;
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let secs: f64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(5.0);
    let clients: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(8);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ours = rt.block_on(relay::supernode(natter::config::RelaySection {
        user_allocations: 1000,
        ..relay::relay_config()
    }));
    let Some(coturn) = relay::coturn(relay::SECRET, "natter.test", &[]) else {
        return;
    };
    rt.block_on(relay::wait_listening(coturn.addr));
    let servers = [("natter", ours.addr), ("coturn", coturn.addr)];
    println!(
        "relay benchmark: {clients} clients, {secs} s per run, {PAYLOAD}-byte payloads, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // 1. Added latency.
    let direct = round_trips(None, 3000);
    let (d50, d99) = (percentile(&direct, 0.5), percentile(&direct, 0.99));
    println!("direct round trip: p50 {d50:.0} µs, p99 {d99:.0} µs");
    for (name, addr) in servers {
        let r = round_trips(Some(addr), 3000);
        let (p50, p99) = (percentile(&r, 0.5), percentile(&r, 0.99));
        println!(
            "{name:6} relayed round trip: p50 {p50:.0} µs, p99 {p99:.0} µs; added by the relay (two passes): p50 {:.0} µs, p99 {:.0} µs",
            p50 - d50,
            p99 - d99
        );
    }

    // 2. Saturation, alternating servers, three rounds each.
    // The relays share the machine's cores with the load generators, so
    // packets per CPU second of the relay's own threads (ours: the
    // runtime's workers in this process; coturn: all its threads) tell
    // the cost per packet apart from the share of the CPU each got.
    let me = std::process::id();
    let coturn_pid = coturn.child.id();
    let ours_cpu = move || cpu_secs(me, "tokio");
    let coturn_cpu = move || cpu_secs(coturn_pid, "");
    let cpus: [&dyn Fn() -> f64; 2] = [&ours_cpu, &coturn_cpu];
    let mut best = [Vec::new(), Vec::new()];
    let mut per_cpu = [Vec::new(), Vec::new()];
    for round in 0..3 {
        for (i, (name, addr)) in servers.iter().enumerate() {
            let (pps, offered, per) = saturate(*addr, clients, secs, cpus[i]);
            println!(
                "round {round}: {name:6} delivers {pps:>9.0} packets/s ({:.1} MB/s payload) of {offered:.0} offered; {per:.0} per CPU second of the relay ({:.2} cores)",
                pps * PAYLOAD as f64 / 1e6,
                pps / per.max(1.0)
            );
            best[i].push(pps);
            per_cpu[i].push(per);
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (n, c) = (med(&mut best[0]), med(&mut best[1]));
    println!(
        "saturation (median of 3): natter {n:.0} pps, coturn {c:.0} pps, ratio natter/coturn {:.2}",
        n / c
    );
    let (n, c) = (med(&mut per_cpu[0]), med(&mut per_cpu[1]));
    println!(
        "per CPU second of the relay (median of 3): natter {n:.0} packets, coturn {c:.0}, ratio natter/coturn {:.2}",
        n / c
    );

    // 3. turnutils_uclient, echoing through turnutils_peer.
    if let Some(peer_bin) = relay::coturn_tool("turnutils_peer") {
        let port = relay::free_port();
        let mut peer = Command::new(peer_bin)
            .args(["-L", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let messages = 2000;
        let mut rates = [Vec::new(), Vec::new()];
        for _ in 0..2 {
            for (i, (name, addr)) in servers.iter().enumerate() {
                match uclient(*addr, port, clients, messages) {
                    Some(r) => {
                        println!("uclient: {name:6} echoes {r:>8.0} messages/s");
                        rates[i].push(r);
                    }
                    None => println!("uclient: {name:6} failed"),
                }
            }
        }
        if !rates[0].is_empty() && !rates[1].is_empty() {
            let (n, c) = (med(&mut rates[0]), med(&mut rates[1]));
            println!(
                "uclient (-m {clients} -n {messages} -z 0 -c): natter {n:.0}/s, coturn {c:.0}/s, ratio {:.2}",
                n / c
            );
        }
        let _ = peer.kill();
        let _ = peer.wait();
    }
    let st = rt
        .block_on(ours.node.turn.as_ref().unwrap().stats())
        .unwrap();
    println!(
        "natter relay counters: {} allocations, {} packets to peers, {} to clients, {} datagrams dropped at the service queue",
        st.allocations,
        st.to_peer_packets,
        st.to_client_packets,
        ours.node.turn.as_ref().unwrap().queue_drops()
    );
}
