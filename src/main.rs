//! The `natter` binary: one program that is the softphone, a supernode or
//! the login authority. This file is the edge: it parses the command line,
//! loads the config and reports errors with `anyhow`.

mod demo;
mod headless;
mod supernode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use natter::authority::store::{Device, RevokeOutcome};
use natter::authority::{AuthorityServer, Store};
use natter::clock::{Clock, SystemClock};
use natter::config::{Authorities, Config, HostPort, PublicKey};
use natter::identity::cert::fmt_time;
use natter::identity::{AuthorityKey, Role, Username, validate_password};
use natter::node::{AuthorityConnection, DeviceFiles};
use natter::time::UnixSecs;
use natter::wire::hex_encode;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(
    name = "natter",
    version,
    about = "Peer-to-peer voice and chat for the terminal",
    long_about = "Peer-to-peer voice and chat for the terminal.\n\n\
        With no subcommand natter starts the softphone (TUI). The same binary runs\n\
        a supernode (`natter supernode`), the login authority (`natter authority`)\n\
        and a scriptable client (`natter headless`); each has its own --help.\n\n\
        The old mode flags --supernode, --authority and --headless still work for\n\
        this release, with a warning."
)]
struct Cli {
    /// Config file (TOML); default: the user's config dir, natter/natter.toml
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for keys, certificates and databases
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log filter, e.g. `debug` or `natter=trace` (overrides [log] level)
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,

    /// The softphone's overlay address and supernodes
    #[command(flatten)]
    net: NetArgs,
    /// List the sound cards natter can use for [audio] input and output, and exit
    #[arg(long)]
    list_audio_devices: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

/// Where a node listens and whom it joins or attaches through.
#[derive(Debug, Args, Clone, Default)]
struct NetArgs {
    /// Address to listen on (overrides [overlay] listen)
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Supernodes to join or attach through, `host:port` (repeatable)
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap: Vec<HostPort>,
}

#[derive(Debug, Args)]
struct MetricsArgs {
    /// Serve Prometheus metrics at ADDR/metrics (overrides [metrics] listen)
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
struct SupernodeArgs {
    #[command(flatten)]
    net: NetArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    /// A second IP of this host, for RFC 5780 NAT behaviour discovery
    /// (overrides [supernode] alt_address)
    #[arg(long, value_name = "IP")]
    alt_address: Option<std::net::IpAddr>,
    /// The second port, on both addresses (default: listen port + 1)
    #[arg(long, value_name = "PORT")]
    alt_port: Option<u16>,
}

#[derive(Debug, Args)]
struct AuthorityArgs {
    /// Address to listen on (overrides [authority] listen)
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    metrics: MetricsArgs,
}

#[derive(Debug, Args)]
struct HeadlessArgs {
    #[command(flatten)]
    net: NetArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    /// The user to run as (default: this device's certificate)
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// Look NAME up, print the result and exit
    #[arg(long, value_name = "NAME")]
    lookup: Option<String>,
    /// Follow NAME's presence (repeatable)
    #[arg(long, value_name = "NAME")]
    watch: Vec<String>,
    /// Connect to NAME peer to peer once online (ICE, then a link)
    #[arg(long, value_name = "NAME")]
    connect: Option<String>,
    /// Initial status (online, away, dnd, invisible)
    #[arg(long, value_name = "STATUS")]
    status: Option<natter::overlay::Status>,
    /// Print one JSON object per line for every event
    #[arg(long)]
    json: bool,
    /// Log in as --user (needed) with the password on the first line of
    /// stdin if there is no certificate (later lines are commands)
    #[arg(long, requires = "user")]
    password_stdin: bool,
    /// Measure the NAT against this STUN server instead of the
    /// supernodes, `host:port` (repeatable; overrides [nat] stun_servers)
    #[arg(long, value_name = "HOST:PORT")]
    stun_server: Vec<HostPort>,
    /// Do not measure the NAT
    #[arg(long)]
    no_nat_detect: bool,
    /// Ask NAME to be a contact once online (repeatable)
    #[arg(long, value_name = "NAME")]
    add: Vec<String>,
    /// Send a chat message once online (repeatable)
    #[arg(long, num_args = 2, value_names = ["NAME", "TEXT"])]
    msg: Vec<String>,
    /// Show the real status in the directory, to everyone (by default
    /// only authorized contacts see it)
    #[arg(long)]
    public_presence: bool,
    /// Idle time before the status becomes away, e.g. `5m` (`0s`: never)
    #[arg(long, value_name = "DURATION")]
    away_after: Option<humantime::Duration>,
    /// Call NAME once online; exit when the call ends (status 1 if it
    /// never connected)
    #[arg(long, value_name = "NAME")]
    call: Option<String>,
    /// Play this WAV file (or `tone:HZ`, a sine) into calls (instead of
    /// [audio] input)
    #[arg(long, value_name = "FILE")]
    play: Option<PathBuf>,
    /// Record what the other side says to this WAV file (instead of
    /// [audio] output)
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Hang up SECS seconds after a call connects
    #[arg(long, value_name = "SECS")]
    hangup_after: Option<f64>,
    /// Answer every incoming call at once
    #[arg(long)]
    auto_answer: bool,
    /// Be an echo test contact (answers every call and plays back what it
    /// hears)
    #[arg(long, conflicts_with_all = ["call", "play"])]
    echo: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an account at the authority
    Register(AccountArgs),
    /// Log in with a password and save a certificate for this device
    Login(AccountArgs),
    /// Renew this device's certificate with its device key (no password)
    Renew(ServerArgs),
    /// Show this device's identity and certificate
    Whoami,
    /// Change this account's password, from a logged-in device (asks the
    /// old password, then the new one twice)
    Passwd(PasswdArgs),
    /// List this account's devices (marking this one), or revoke one
    Devices(DevicesArgs),
    /// Manage the authority's account database (run where the authority runs)
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Run a supernode: overlay, directory, STUN and relay (no TUI)
    Supernode(SupernodeArgs),
    /// Run the login authority: accounts and certificates
    Authority(AuthorityArgs),
    /// Run a client for scripts: commands on stdin, events on stdout
    Headless(Box<HeadlessArgs>),
    /// Run a self-contained local network on loopback (no config needed;
    /// it keeps its data in temporary dirs, so --data-dir does not apply)
    Demo {
        /// Start the network, check the local user sees both demo contacts
        /// online, and exit instead of opening the softphone
        #[arg(long)]
        once: bool,
    },
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// Authority address `host:port` (overrides [login] server)
    #[arg(long, value_name = "HOST:PORT")]
    server: Option<HostPort>,
    /// Authority public key, 64 hex digits (overrides [login] authority_key)
    #[arg(long, value_name = "HEX")]
    authority_key: Option<PublicKey>,
}

#[derive(Debug, Args)]
struct AccountArgs {
    /// Username: 3-32 characters of a-z 0-9 . _ -
    user: String,
    /// Read the password from the first line of standard input
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
struct PasswdArgs {
    /// Read the old password from the first line of standard input and
    /// the new one from the second
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
struct DevicesArgs {
    #[command(subcommand)]
    command: Option<DevicesCommand>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Subcommand)]
enum DevicesCommand {
    /// Revoke one of this account's devices (asks the password)
    ///
    /// The device can no longer log in or renew, and supernodes refuse it
    /// within a minute. If it was stolen, change the password too
    /// (`natter passwd`).
    Revoke {
        /// The device: its id as `natter devices` prints it (at least 4
        /// hex digits) or its name
        device: String,
        /// Read the password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Give an account the user or supernode role
    SetRole { user: String, role: Role },
    /// Disable an account: no more logins or renewals; supernodes refuse
    /// it within a minute
    Disable { user: String },
    /// Enable a disabled account
    Enable { user: String },
    /// List accounts
    List,
    /// List an account's devices (id, name, first and last seen, revoked)
    Devices { user: String },
    /// Revoke one device of an account, by id or name
    ///
    /// DEVICE is its id as `natter admin devices` prints it (at least 4 hex
    /// digits) or its name. It can no longer log in or renew, and
    /// supernodes refuse it within a minute.
    Revoke { user: String, device: String },
}

/// The mode flags of earlier releases, and the subcommand each became.
const OLD_MODE_FLAGS: [(&str, &str); 3] = [
    ("--supernode", "supernode"),
    ("--authority", "authority"),
    ("--headless", "headless"),
];

/// The command line with an old mode flag (`--supernode`, ...) turned into
/// its subcommand, which then takes the flags that followed it; the
/// warning to print, or why the flags cannot work together.
fn modernize_args(args: Vec<String>) -> Result<(Vec<String>, Option<String>), String> {
    let end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let found: Vec<(usize, &str, &str)> = args[..end]
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            OLD_MODE_FLAGS
                .iter()
                .find(|(f, _)| a == f)
                .map(|(f, c)| (i, *f, *c))
        })
        .collect();
    let Some(&(i, flag, sub)) = found.first() else {
        return Ok((args, None));
    };
    if let Some(&(_, other, _)) = found.iter().find(|(_, f, _)| *f != flag) {
        return Err(format!(
            "{flag} and {other} cannot be combined: run each mode as its own process (`natter {sub}`, ...)"
        ));
    }
    let is_sub = |a: &String| a.as_str() == sub || OLD_MODE_FLAGS.iter().any(|(_, c)| a == c);
    if args[1..end].iter().any(is_sub) {
        return Err(format!(
            "{flag} and a subcommand cannot be combined: use `natter {sub}`"
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(args.len());
    out.push(args[0].clone());
    out.push(sub.to_owned());
    out.extend(
        args[1..]
            .iter()
            .enumerate()
            .filter(|(j, a)| !(*j + 1 < end && a.as_str() == flag))
            .map(|(_, a)| a.clone()),
    );
    let _ = i;
    Ok((
        out,
        Some(format!(
            "natter: warning: {flag} is deprecated and goes away in the next release; use `natter {sub}` (see `natter {sub} --help`)"
        )),
    ))
}

/// For a flag given where it does not belong: the subcommands that take it.
fn flag_home(e: &clap::Error) -> Option<String> {
    use clap::CommandFactory;
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let name = arg.trim_start_matches('-').split('=').next()?;
    let homes: Vec<String> = Cli::command()
        .get_subcommands()
        .filter(|s| s.get_arguments().any(|a| a.get_long() == Some(name)))
        .map(|s| format!("`natter {}`", s.get_name()))
        .collect();
    (!homes.is_empty()).then(|| format!("note: --{name} is a flag of {}", homes.join(", ")))
}

fn main() -> std::process::ExitCode {
    let started = std::time::Instant::now();
    let (args, warning) = match modernize_args(std::env::args().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("natter: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(w) = warning {
        eprintln!("{w}");
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            if let Some(hint) = flag_home(&e) {
                eprintln!("{hint}");
            }
            // --help and --version are "errors" that succeed.
            return std::process::ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli, started) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natter: {}", error_text(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes, each said once: most of natter's errors
/// already include their cause in their own text, and printing the chain
/// again read "malformed: malformed: malformed" (issue 13.13).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if text.contains(&c) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&c);
    }
    text
}

fn run(cli: Cli, started: std::time::Instant) -> Result<()> {
    let (mut config, _source) = Config::load(cli.config.as_deref())?;
    // Flags that do not apply are errors, not silently ignored.
    if let Some(Command::Demo { .. }) = &cli.command
        && cli.data_dir.is_some()
    {
        bail!(
            "demo keeps its data in temporary dirs: --data-dir does not apply (run `natter demo` without it)"
        );
    }
    apply_flags(&cli, &mut config)?;
    let data_dir = config.data_dir(cli.data_dir.as_deref())?;
    // The long-running modes own the data dir while they run.
    let long_running = !cli.list_audio_devices
        && matches!(
            cli.command,
            None | Some(Command::Supernode(_) | Command::Authority(_) | Command::Headless(_))
        );
    let _data_lock = if long_running {
        Some(natter::node::DataDirLock::acquire(&data_dir)?)
    } else {
        None
    };
    // While the TUI owns the terminal, logs go to a file; the demo always
    // logs to its own file.
    let log_file = match &cli.command {
        Some(Command::Demo { .. }) => Some(demo::create_log()?),
        None => {
            let path = config
                .log
                .file
                .clone()
                .unwrap_or_else(|| data_dir.join("natter.log"));
            let file = open_log(&path)?;
            Some((path, file))
        }
        _ => None,
    };
    let tui_log = log_file.as_ref().map(|(p, _)| p.clone());
    let _log_guard = match log_file {
        Some((_, file)) => Some(init_file_logging(&config, cli.log_level.as_deref(), file)?),
        None => {
            init_logging(&config, cli.log_level.as_deref())?;
            None
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;

    if cli.list_audio_devices {
        return list_audio_devices();
    }
    match cli.command {
        Some(Command::Register(a)) => rt.block_on(register(&config, &data_dir, a)),
        Some(Command::Login(a)) => rt.block_on(login(&config, &data_dir, a)),
        Some(Command::Renew(s)) => rt.block_on(renew(&config, &data_dir, s)),
        Some(Command::Whoami) => whoami(&data_dir),
        Some(Command::Passwd(a)) => rt.block_on(passwd(&config, &data_dir, a)),
        Some(Command::Devices(a)) => rt.block_on(devices(&config, &data_dir, a)),
        Some(Command::Admin(c)) => admin(&config, &data_dir, c),
        Some(Command::Demo { once }) => {
            let keys = natter::ui::KeyMap::from_config(&config.keys);
            let log = tui_log.as_deref().context("the demo's log")?;
            let r = rt.block_on(demo::run(once, keys, started, log));
            // Tasks of the demo network may still hold the runtime.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            r
        }
        Some(Command::Authority(a)) => rt.block_on(run_authority(&config, &data_dir, a.listen)),
        Some(Command::Supernode(a)) => rt.block_on(supernode::run(
            &config,
            &data_dir,
            a.net.listen,
            a.net.bootstrap,
        )),
        Some(Command::Headless(h)) => {
            let h = *h;
            let r = rt.block_on(headless::run(&config, &data_dir, headless_options(h)?));
            // The stdin reader blocks a runtime thread until EOF: a
            // script's call may end while stdin is still open.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            r
        }
        None => {
            let log = tui_log.clone().unwrap_or_default();
            let r = rt.block_on(softphone(
                &config,
                &data_dir,
                &cli.net.bootstrap,
                cli.net.listen,
                &log,
                started,
            ));
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            r
        }
    }
}

/// Command-line flags that override the configuration; flags given where
/// they do not apply are errors, not silently ignored.
fn apply_flags(cli: &Cli, config: &mut Config) -> Result<()> {
    let softphone_flags = cli.net.listen.is_some() || !cli.net.bootstrap.is_empty();
    if softphone_flags && (cli.command.is_some() || cli.list_audio_devices) {
        bail!(
            "--listen and --bootstrap before a subcommand are the softphone's: put them after the subcommand (e.g. `natter supernode --listen ADDR`)"
        );
    }
    let metrics = match &cli.command {
        Some(Command::Supernode(a)) => a.metrics.metrics_listen,
        Some(Command::Authority(a)) => a.metrics.metrics_listen,
        Some(Command::Headless(a)) => a.metrics.metrics_listen,
        _ => None,
    };
    if metrics.is_some() {
        config.metrics.listen = metrics;
    }
    if let Some(Command::Supernode(a)) = &cli.command {
        if a.alt_address.is_some() {
            config.supernode.alt_address = a.alt_address;
        }
        if a.alt_port.is_some() {
            config.supernode.alt_port = a.alt_port;
        }
    }
    if let Some(Command::Headless(a)) = &cli.command
        && a.no_nat_detect
    {
        config.nat.detect = false;
    }
    Ok(())
}

/// The headless front end's options from its command line.
fn headless_options(h: HeadlessArgs) -> Result<headless::Headless> {
    Ok(headless::Headless {
        user: h.user,
        lookup: h.lookup,
        watch: h.watch,
        connect: h.connect,
        status: h.status,
        json: h.json,
        password_stdin: h.password_stdin,
        bootstrap: h.net.bootstrap,
        listen: h.net.listen,
        stun_servers: h.stun_server,
        add: h.add,
        msg: h
            .msg
            .chunks(2)
            .map(|p| (p[0].clone(), p.get(1).cloned().unwrap_or_default()))
            .collect(),
        public_presence: h.public_presence,
        away_after: h.away_after.map(Into::into),
        calls: headless::CallFlags {
            call: h.call,
            play: h.play,
            record: h.record,
            hangup_after: match h.hangup_after {
                Some(s) if s.is_finite() && s >= 0.0 => Some(std::time::Duration::from_secs_f64(s)),
                Some(s) => bail!("--hangup-after {s}: expected seconds >= 0"),
                None => None,
            },
            auto_answer: h.auto_answer,
            echo: h.echo,
        },
    })
}

fn list_audio_devices() -> Result<()> {
    let (inputs, outputs) = natter::media::audio::list_devices()?;
    println!("input devices (use as [audio] input = \"NAME\"):");
    for n in &inputs {
        println!("  {n}");
    }
    println!("output devices (use as [audio] output = \"NAME\"):");
    for n in &outputs {
        println!("  {n}");
    }
    println!("always available: default, null, tone[:HZ] (input), file:PATH.wav");
    Ok(())
}

/// The tracing filter: `--log-level`, else RUST_LOG, else `[log] level`
/// (checked at load).
fn log_filter(config: &Config, flag: Option<&str>) -> Result<tracing_subscriber::EnvFilter> {
    use tracing_subscriber::EnvFilter;
    Ok(match flag {
        Some(f) => {
            natter::config::check_log_filter(f)
                .map_err(|e| anyhow::anyhow!("bad --log-level: {e}"))?;
            EnvFilter::try_new(f).with_context(|| format!("bad --log-level {f:?}"))?
        }
        None => EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(&config.log.level))
            .with_context(|| format!("bad [log] level {:?}", config.log.level))?,
    })
}

fn init_logging(config: &Config, flag: Option<&str>) -> Result<()> {
    let filter = log_filter(config, flag)?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match &config.log.file {
        Some(path) => {
            let file = open_log(path)?;
            builder.with_ansi(false).with_writer(Arc::new(file)).init();
        }
        // Colour only on a terminal, never into a redirected log.
        None => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init(),
    }
    Ok(())
}

/// Open a log file for appending: made private (0600) if new, its
/// directory made (0700) if missing, and never through a symlink.
fn open_log(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("opening log file {}", path.display()))
}

/// Logging to `file` through a background writer; the guard flushes it
/// when dropped, so `run` keeps it to the end.
fn init_file_logging(
    config: &Config,
    flag: Option<&str>,
    file: std::fs::File,
) -> Result<tracing_appender::non_blocking::WorkerGuard> {
    let filter = log_filter(config, flag)?;
    let (writer, guard) = tracing_appender::non_blocking(file);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(writer)
        .init();
    Ok(guard)
}

/// `natter` with no mode: the softphone on this device's account.
async fn softphone(
    config: &Config,
    data_dir: &Path,
    bootstrap: &[HostPort],
    listen: Option<SocketAddr>,
    log: &Path,
    started: std::time::Instant,
) -> Result<()> {
    use natter::node::client::{self, ClientSettings};
    let settings = ClientSettings::from_config(config, data_dir, bootstrap, listen)
        .await
        .context("no authority key pinned: set [login] authority_key in the config (the authority prints it at start), or try `natter demo`")?;
    let node = client::spawn(settings, Arc::new(SystemClock));
    let app = natter::ui::App::new(natter::ui::KeyMap::from_config(&config.keys));
    natter::ui::terminal::run(app, node.commands, node.events, Some(log), started).await?;
    Ok(())
}

fn under(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        dir.join(p)
    }
}

async fn run_authority(config: &Config, data_dir: &Path, listen: Option<SocketAddr>) -> Result<()> {
    let ac = &config.authority;
    let key_path = under(data_dir, &ac.key_file);
    let (key, created) = AuthorityKey::load_or_create(&key_path)?;
    let public = hex_encode(&key.public());
    let pub_path = key_path.with_extension("pub");
    std::fs::write(&pub_path, format!("{public}\n"))
        .with_context(|| format!("writing {}", pub_path.display()))?;
    let (db, password_file) = database_of(config, data_dir);
    // The PostgreSQL client blocks: keep it off the async workers.
    let (store, accounts) = tokio::task::spawn_blocking(move || -> Result<(Store, u64)> {
        let store = Store::open_database(&db, password_file.as_deref())?;
        let accounts = store.count_accounts()?;
        Ok((store, accounts))
    })
    .await
    .context("opening the account database")??;
    let server = AuthorityServer::bind(
        listen.unwrap_or(ac.listen),
        key,
        store,
        ac.policy(),
        Arc::new(SystemClock),
        ac.max_connections,
    )
    .await?;
    if created {
        println!("created a new authority key in {}", key_path.display());
    }
    println!("authority public key: {public}");
    println!(
        "  (also in {}; pin it in clients as [login] authority_key)",
        pub_path.display()
    );
    println!("accounts: {accounts}");
    println!("listening on {}", server.local_addr());
    if let Some(addr) = config.metrics.listen {
        let handle = server.handle();
        let slots = ac.max_connections.max(1);
        let listener = natter::metrics::bind(addr).await?;
        println!("metrics on http://{}/metrics", listener.local_addr()?);
        tokio::spawn(natter::metrics::serve(
            listener,
            move || {
                let open = handle.open_connections();
                let e = natter::metrics::authority::exposition(&handle.stats(), open, slots);
                async move { e }
            },
            std::future::pending(),
        ));
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    server.run(shutdown_signal()).await;
    println!("authority stopped");
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn server_of(config: &Config, args: &ServerArgs) -> Result<(Authorities, [u8; 32])> {
    let server = args
        .server
        .clone()
        .map_or_else(|| config.login.server.clone(), Authorities::from);
    let key = args
        .authority_key
        .or(config.login.authority_key)
        .context("no authority key pinned: set [login] authority_key in the config or pass --authority-key (the authority prints its key at start)")?;
    Ok((server, key.0))
}

fn read_password(from_stdin: bool, confirm: bool) -> Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        let pw = line.trim_end_matches(['\r', '\n']).to_owned();
        if pw.is_empty() {
            bail!("no password on standard input");
        }
        return Ok(pw);
    }
    let pw = rpassword::prompt_password("Password: ").context("reading the password")?;
    if confirm {
        let again =
            rpassword::prompt_password("Password (again): ").context("reading the password")?;
        if again != pw {
            bail!("the passwords do not match");
        }
    }
    Ok(pw)
}

async fn connect(
    config: &Config,
    data_dir: &Path,
    args: &ServerArgs,
) -> Result<(AuthorityConnection, DeviceFiles)> {
    let (server, key) = server_of(config, args)?;
    let files = DeviceFiles::new(data_dir);
    let (device, created) = files.identity()?;
    if created {
        eprintln!(
            "created a new device identity in {}",
            files.key_path().display()
        );
    }
    let conn =
        AuthorityConnection::connect_any(&server, key, &device, Arc::new(SystemClock)).await?;
    let skew = conn.clock_offset_ms().abs();
    if skew > 30_000 {
        eprintln!(
            "warning: this machine's clock differs from the authority's by {} s",
            skew / 1000
        );
    }
    Ok((conn, files))
}

async fn register(config: &Config, data_dir: &Path, a: AccountArgs) -> Result<()> {
    let user = Username::parse(&a.user)?;
    let password = read_password(a.password_stdin, true)?;
    validate_password(&password)?;
    let (mut conn, _) = connect(config, data_dir, &a.server).await?;
    let name = conn.register(user.as_str(), &password).await?;
    println!("registered {name}");
    Ok(())
}

async fn login(config: &Config, data_dir: &Path, a: AccountArgs) -> Result<()> {
    let user = Username::parse(&a.user)?;
    let password = read_password(a.password_stdin, false)?;
    let (mut conn, files) = connect(config, data_dir, &a.server).await?;
    let cert = conn.login(user.as_str(), &password).await?;
    files.save_certificate(&cert)?;
    println!(
        "logged in as {} until {} (role {}, certificate serial {:016x})",
        cert.username,
        fmt_time(cert.not_after),
        cert.role.as_str(),
        cert.serial
    );
    Ok(())
}

async fn renew(config: &Config, data_dir: &Path, s: ServerArgs) -> Result<()> {
    let files = DeviceFiles::new(data_dir);
    let old = files
        .certificate()?
        .context("this device has no certificate yet: run `natter login USER` first")?;
    let (mut conn, files) = connect(config, data_dir, &s).await?;
    let cert = conn.renew(&old).await?;
    files.save_certificate(&cert)?;
    println!(
        "renewed {} until {} (certificate serial {:016x})",
        cert.username,
        fmt_time(cert.not_after),
        cert.serial
    );
    Ok(())
}

/// This device's certificate, for requests made with it.
fn own_certificate(data_dir: &Path) -> Result<natter::identity::Certificate> {
    DeviceFiles::new(data_dir)
        .certificate()?
        .context("this device has no certificate: run `natter login USER` first")
}

async fn passwd(config: &Config, data_dir: &Path, a: PasswdArgs) -> Result<()> {
    let cert = own_certificate(data_dir)?;
    if !a.password_stdin {
        eprintln!("changing the password of {}", cert.username);
    }
    let old = read_password(a.password_stdin, false)?;
    if !a.password_stdin {
        eprintln!("new password:");
    }
    let new = read_password(a.password_stdin, true)?;
    validate_password(&new)?;
    let (mut conn, _) = connect(config, data_dir, &a.server).await?;
    let m = conn.change_password(&cert, &old, &new).await?;
    println!("{m}");
    Ok(())
}

async fn devices(config: &Config, data_dir: &Path, a: DevicesArgs) -> Result<()> {
    let cert = own_certificate(data_dir)?;
    match a.command {
        None => {
            let (mut conn, _) = connect(config, data_dir, &a.server).await?;
            let list = conn.devices(&cert).await?;
            let list: Vec<Device> = list
                .into_iter()
                .map(|d| Device {
                    ed25519: d.ed25519,
                    name: d.name,
                    first_seen: UnixSecs(d.first_seen),
                    last_seen: UnixSecs(d.last_seen),
                    revoked_at: (d.revoked_at != 0).then_some(UnixSecs(d.revoked_at)),
                })
                .collect();
            println!("devices of {}:", cert.username);
            print_devices(&list, Some(&cert.ed25519));
        }
        Some(DevicesCommand::Revoke {
            device,
            password_stdin,
        }) => {
            let password = read_password(password_stdin, false)?;
            let (mut conn, _) = connect(config, data_dir, &a.server).await?;
            let m = conn.revoke_device(&cert, &password, &device).await?;
            println!("{m}");
        }
    }
    Ok(())
}

fn whoami(data_dir: &Path) -> Result<()> {
    let files = DeviceFiles::new(data_dir);
    let (device, _) = files.identity()?;
    println!(
        "device ed25519 key: {}",
        hex_encode(&device.ed25519_public())
    );
    println!(
        "device x25519 key:  {}",
        hex_encode(&device.x25519_public())
    );
    match files.certificate()? {
        Some(c) => {
            let now = SystemClock.unix_secs().get();
            let state = if now >= c.not_after {
                "expired"
            } else {
                "valid"
            };
            println!(
                "certificate: {} ({}), {state} until {}",
                c.username,
                c.role.as_str(),
                fmt_time(c.not_after)
            );
        }
        None => println!("certificate: none (run `natter login USER`)"),
    }
    Ok(())
}

/// The account database and its password file, relative paths put under
/// the data dir.
fn database_of(config: &Config, data_dir: &Path) -> (natter::authority::Database, Option<PathBuf>) {
    let ac = &config.authority;
    let password_file = ac
        .database_password_file
        .as_ref()
        .map(|p| under(data_dir, p));
    (ac.database.under(data_dir), password_file)
}

fn admin(config: &Config, data_dir: &Path, c: AdminCommand) -> Result<()> {
    let (db, password_file) = database_of(config, data_dir);
    let store = Store::open_existing_database(&db, password_file.as_deref()).with_context(|| {
        format!(
            "no account database to administer in {}: pass the authority's --data-dir (and --config)",
            data_dir.display()
        )
    })?;
    match c {
        AdminCommand::SetRole { user, role } => {
            let u = Username::parse(&user)?;
            store.set_role(&u, role)?;
            println!(
                "{u} now has the {} role (from its next login or renewal)",
                role.as_str()
            );
        }
        AdminCommand::Disable { user } => {
            let u = Username::parse(&user)?;
            store.set_disabled(&u, true, unix_now())?;
            println!("{u} is disabled (supernodes refuse it within a minute)");
        }
        AdminCommand::Enable { user } => {
            let u = Username::parse(&user)?;
            store.set_disabled(&u, false, unix_now())?;
            println!("{u} is enabled");
        }
        AdminCommand::List => {
            for name in store.usernames()? {
                println!("{name}");
            }
        }
        AdminCommand::Devices { user } => {
            let u = Username::parse(&user)?;
            print_devices(&store.devices(&u)?, None);
        }
        AdminCommand::Revoke { user, device } => {
            let u = Username::parse(&user)?;
            match store.revoke_device(&u, &device, unix_now())? {
                RevokeOutcome::Revoked(d) => println!(
                    "revoked {u}'s device {} ({}): no more logins or renewals; supernodes refuse it within a minute",
                    hex_encode(&d.ed25519[..8]),
                    d.name
                ),
                RevokeOutcome::NoSuchDevice => {
                    bail!("{u} has no device {device:?}; `natter admin devices {u}` lists them")
                }
                RevokeOutcome::Ambiguous => {
                    bail!("{device:?} names several of {u}'s devices; give more of the id")
                }
            }
        }
    }
    Ok(())
}

fn unix_now() -> UnixSecs {
    SystemClock.unix_secs()
}

/// One line per device: id (16 hex digits of its key), name, first and
/// last seen, revoked; `this` marks the device running the command.
fn print_devices(devices: &[Device], this: Option<&[u8; 32]>) {
    for d in devices {
        let mark = if Some(&d.ed25519) == this {
            "  (this device)"
        } else {
            ""
        };
        let revoked = d
            .revoked_at
            .map(|t| format!("  revoked {}", fmt_time(t.get())))
            .unwrap_or_default();
        println!(
            "{}  {}  first {}  last {}{revoked}{mark}",
            hex_encode(&d.ed25519[..8]),
            d.name,
            fmt_time(d.first_seen.get()),
            fmt_time(d.last_seen.get())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::from_raw_os_error(libc::ENOENT);
        let said = io.to_string();
        let e = anyhow::Error::from(io).context(format!("reading natter.toml: {said}"));
        let text = error_text(&e);
        assert_eq!(text.matches("(os error 2)").count(), 1, "{text}");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&e), "outer: inner");
    }
}
