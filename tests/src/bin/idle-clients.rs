//! `idle-clients`: opens many mTLS connections to one proxy, sends one
//! request on each (HTTP/1.1 keep-alive, or HTTP/2 with `--http2`), and then
//! holds them all open and idle, so that the proxy's memory can be read
//! while it keeps them.
//!
//! Run by `cargo xtask bench proxy`. Talks to its caller through one JSON
//! line on standard output once every connection was opened (or failed),
//! holds the connections until standard input closes, then prints a second
//! JSON line and exits: status 0 only if every connection was answered
//! with 2xx and none was closed by the server while held.

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use clap::Parser;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
use serde::Serialize;
use tokio::{
    io::AsyncReadExt as _,
    sync::{Semaphore, mpsc, watch},
};

/// File descriptors beyond one per connection: standard streams, the
/// runtime's own descriptors, the certificate files being read.
const SPARE_FILES: u64 = 64;

#[derive(Parser)]
#[command(about = "Hold many idle mTLS keep-alive connections to one proxy")]
struct Args {
    /// The proxy's address.
    #[arg(long)]
    connect: SocketAddr,
    /// The name the server certificate must carry (SNI and Host header).
    #[arg(long)]
    server_name: String,
    /// CA certificate (PEM) that the server certificate must chain to.
    #[arg(long)]
    ca: PathBuf,
    /// Client certificate (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// The client certificate's private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// Connections to open and hold.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    connections: u32,
    /// Connections being opened at the same time (connect, handshake, first
    /// request).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=2000))]
    in_flight: u32,
    /// The path requested once on each connection.
    #[arg(long, default_value = "/")]
    path: String,
    /// Seconds allowed for opening all connections; whatever is not
    /// answered by then counts as failed.
    #[arg(long, default_value_t = 300)]
    deadline: u64,
    /// Seconds allowed for one connection's connect, handshake and response.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Longest time to hold the connections if standard input stays open.
    #[arg(long, default_value_t = 900)]
    hold_limit: u64,
    /// Offer only HTTP/2 in ALPN and send the request over HTTP/2 (as
    /// browsers do), instead of HTTP/1.1.
    #[arg(long)]
    http2: bool,
}

/// Why a connection did not reach the idle state, as counted in the report.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Failure {
    Connect(String),
    Handshake(String),
    Request(String),
    Status(u16),
    TimedOut,
    DeadlinePassed,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "connect: {e}"),
            Self::Handshake(e) => write!(f, "TLS handshake: {e}"),
            Self::Request(e) => write!(f, "request: {e}"),
            Self::Status(s) => write!(f, "status {s}"),
            Self::TimedOut => f.write_str("not answered within the per-connection timeout"),
            Self::DeadlinePassed => f.write_str("not answered before the overall deadline"),
        }
    }
}

/// What a connection task reports.
#[derive(Debug)]
enum Event {
    /// Handshake done and the request answered with 2xx; now idle.
    Answered,
    /// It never got there.
    Failed(Failure),
    /// The server closed a connection that was held idle.
    ClosedByServer,
}

/// The first line on standard output: the outcome of opening.
#[derive(Debug, Default, PartialEq, Serialize)]
struct Opened {
    /// Connections attempted.
    connections: u32,
    /// TLS handshakes completed.
    established: u32,
    /// Requests answered with 2xx (these connections are now idle).
    answered: u32,
    /// Connections that did not get there.
    failed: u32,
    /// How many failed for which reason.
    failures: BTreeMap<String, u32>,
    /// Time taken to open them all.
    seconds: f64,
}

impl Opened {
    fn record(&mut self, failure: &Failure) {
        self.failed += 1;
        *self.failures.entry(failure.to_string()).or_default() += 1;
    }
}

/// The second line: what happened while they were held.
#[derive(Debug, PartialEq, Serialize)]
struct Released {
    /// Connections that were held until standard input closed.
    held: u32,
    /// Connections the server closed while they were held.
    closed_by_server: u32,
    /// Seconds they were held.
    seconds: f64,
}

/// The shared parts of every connection.
struct Target {
    addr: SocketAddr,
    name: ServerName<'static>,
    host: String,
    path: String,
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
    http2: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("idle-clients: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<bool> {
    raise_open_file_limit(u64::from(args.connections) + SPARE_FILES)?;
    let target = Arc::new(Target {
        addr: args.connect,
        name: ServerName::try_from(args.server_name.clone())
            .context("--server-name is no valid DNS name")?,
        host: args.server_name.clone(),
        path: args.path.clone(),
        tls: tokio_rustls::TlsConnector::from(Arc::new(client_config(args)?)),
        timeout: Duration::from_secs(args.timeout),
        http2: args.http2,
    });
    tokio::runtime::Runtime::new()
        .context("failed to start the async runtime")?
        .block_on(hold(args, target))
}

/// Raises the soft limit on open files to at least `needed`, and the hard
/// limit too when it is lower (which needs root).
fn raise_open_file_limit(needed: u64) -> Result<()> {
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).context("failed to read RLIMIT_NOFILE")?;
    if soft >= needed {
        return Ok(());
    }
    let raised_hard = hard.max(needed);
    setrlimit(Resource::RLIMIT_NOFILE, needed, raised_hard).with_context(|| {
        format!(
            "failed to raise the open-file limit from {soft} to {needed} (hard limit {hard}; \
             raising that needs CAP_SYS_RESOURCE)"
        )
    })
}

fn client_config(args: &Args) -> Result<rustls::ClientConfig> {
    let read = |path: &Path| format!("failed to read {}", path.display());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&args.ca).with_context(|| read(&args.ca))? {
        roots.add(cert.with_context(|| read(&args.ca))?)?;
    }
    let chain = CertificateDer::pem_file_iter(&args.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| read(&args.cert))?;
    let key = PrivateKeyDer::from_pem_file(&args.key).with_context(|| read(&args.key))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = if args.http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    // Every connection runs a full handshake, as separate clients would.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// Opens every connection, reports, holds them until standard input closes,
/// reports again. Returns whether everything went as it should.
async fn hold(args: &Args, target: Arc<Target>) -> Result<bool> {
    let start = Instant::now();
    let permits = Arc::new(Semaphore::new(args.in_flight as usize));
    let (release_tx, release) = watch::channel(false);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        tasks.spawn(connection(
            target.clone(),
            permits.clone(),
            release.clone(),
            events_tx.clone(),
        ));
    }
    drop(events_tx);

    let mut opened = Opened {
        connections: args.connections,
        ..Opened::default()
    };
    let deadline = tokio::time::Instant::from_std(start + Duration::from_secs(args.deadline));
    let mut closed_by_server = 0;
    while opened.answered + opened.failed < args.connections {
        let event = tokio::select! {
            event = events.recv() => event.context("connection tasks ended without reporting")?,
            () = tokio::time::sleep_until(deadline) => {
                let missing = args.connections - opened.answered - opened.failed;
                for _ in 0..missing {
                    opened.record(&Failure::DeadlinePassed);
                }
                break;
            }
        };
        match event {
            Event::Answered => opened.answered += 1,
            Event::Failed(failure) => opened.record(&failure),
            Event::ClosedByServer => {
                // Counted as a failure of opening: the connection did not
                // stay until all were open.
                opened.answered -= 1;
                closed_by_server += 1;
                opened.record(&Failure::Request(
                    "closed by the server before all connections were open".into(),
                ));
            }
        }
    }
    opened.established = opened.answered + handshakes_of_failed(&opened);
    opened.seconds = start.elapsed().as_secs_f64();
    print_line(&opened)?;
    if opened.failed > 0 {
        return Ok(false);
    }

    let held_since = Instant::now();
    let stdin_closed = async {
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    };
    tokio::select! {
        () = stdin_closed => {}
        () = tokio::time::sleep(Duration::from_secs(args.hold_limit)) => {
            eprintln!("idle-clients: standard input still open after {} s; releasing", args.hold_limit);
        }
    }
    // Reports that arrived while holding.
    while let Ok(event) = events.try_recv() {
        if matches!(event, Event::ClosedByServer) {
            closed_by_server += 1;
        }
    }
    let released = Released {
        held: opened.answered - closed_by_server.min(opened.answered),
        closed_by_server,
        seconds: held_since.elapsed().as_secs_f64(),
    };
    let _ = release_tx.send(true);
    while tasks.join_next().await.is_some() {}
    print_line(&released)?;
    Ok(released.closed_by_server == 0)
}

/// Failures after a completed handshake: a request error or a non-2xx status.
fn handshakes_of_failed(opened: &Opened) -> u32 {
    opened
        .failures
        .iter()
        .filter(|(reason, _)| reason.starts_with("request:") || reason.starts_with("status "))
        .map(|(_, n)| n)
        .sum()
}

fn print_line(value: &impl Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// One connection: open it with at most `in_flight` others, then hold it
/// until `release` turns true, reporting if the server closes it first.
async fn connection(
    target: Arc<Target>,
    permits: Arc<Semaphore>,
    mut release: watch::Receiver<bool>,
    events: mpsc::UnboundedSender<Event>,
) {
    let Ok(permit) = permits.acquire_owned().await else {
        return;
    };
    let opened = tokio::time::timeout(target.timeout, open(&target)).await;
    drop(permit);
    let (sender, mut driver) = match opened {
        Ok(Ok(open)) => open,
        Ok(Err(failure)) => {
            let _ = events.send(Event::Failed(failure));
            return;
        }
        Err(_elapsed) => {
            let _ = events.send(Event::Failed(Failure::TimedOut));
            return;
        }
    };
    let _ = events.send(Event::Answered);
    tokio::select! {
        _ = &mut driver => {
            let _ = events.send(Event::ClosedByServer);
        }
        _ = release.wait_for(|released| *released) => {}
    }
    // Without a sender, hyper closes the idle connection.
    drop(sender);
    driver.abort();
}

/// The request side of an open connection; dropping it lets the
/// connection close.
enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

type Driver = tokio::task::JoinHandle<Result<(), hyper::Error>>;

/// Connects, completes the mTLS handshake, sends one request and reads its
/// response. Returns the idle connection.
async fn open(target: &Target) -> Result<(Sender, Driver), Failure> {
    let tcp = tokio::net::TcpStream::connect(target.addr)
        .await
        .map_err(|e| Failure::Connect(e.kind().to_string()))?;
    let _ = tcp.set_nodelay(true);
    let tls = target
        .tls
        .connect(target.name.clone(), tcp)
        .await
        .map_err(|e| Failure::Handshake(e.to_string()))?;
    let negotiated_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    if negotiated_h2 != target.http2 {
        return Err(Failure::Request(format!(
            "the server negotiated {} instead",
            if negotiated_h2 { "HTTP/2" } else { "HTTP/1.1" }
        )));
    }
    let io = TokioIo::new(tls);
    let request_error = |e: hyper::Error| Failure::Request(e.to_string());
    let (sender, driver) = if target.http2 {
        let (sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(request_error)?;
        (Sender::Http2(sender), tokio::spawn(conn))
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(request_error)?;
        (Sender::Http1(sender), tokio::spawn(conn))
    };
    let mut sender = sender;

    let response = match &mut sender {
        Sender::Http1(sender) => {
            let request = hyper::Request::get(&target.path)
                .header(hyper::header::HOST, &target.host)
                .body(Empty::new())
                .map_err(|e| Failure::Request(e.to_string()))?;
            sender.send_request(request).await
        }
        Sender::Http2(sender) => {
            // HTTP/2 carries the host as :authority, from the URI.
            let uri = format!("https://{}{}", target.host, target.path);
            let request = hyper::Request::get(uri)
                .body(Empty::new())
                .map_err(|e| Failure::Request(e.to_string()))?;
            sender.send_request(request).await
        }
    }
    .map_err(request_error)?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(request_error)?;
    if !status.is_success() {
        return Err(Failure::Status(status.as_u16()));
    }
    if driver.is_finished() {
        return Err(Failure::Request(
            "the server closed the connection after the response".into(),
        ));
    }
    Ok((sender, driver))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_per_reason_and_handshakes_of_answered_failures_kept() {
        let mut opened = Opened {
            connections: 5,
            answered: 1,
            ..Opened::default()
        };
        opened.record(&Failure::Status(502));
        opened.record(&Failure::Status(502));
        opened.record(&Failure::Handshake(
            "received fatal alert: CertificateRequired".into(),
        ));
        opened.record(&Failure::DeadlinePassed);

        assert_eq!(opened.failed, 4);
        assert_eq!(opened.failures["status 502"], 2);
        // The two 502s completed their handshakes; the others did not.
        assert_eq!(handshakes_of_failed(&opened), 2);
    }

    #[test]
    fn opened_line_is_one_json_object_with_the_counts() {
        let mut opened = Opened {
            connections: 2,
            established: 2,
            answered: 1,
            seconds: 0.5,
            ..Opened::default()
        };
        opened.record(&Failure::Connect("connection refused".into()));
        let line = serde_json::to_string(&opened).unwrap();
        assert_eq!(
            line,
            r#"{"connections":2,"established":2,"answered":1,"failed":1,"failures":{"connect: connection refused":1},"seconds":0.5}"#
        );
    }

    #[test]
    fn connections_beyond_the_bound_are_rejected() {
        let base = [
            "idle-clients",
            "--connect",
            "198.51.100.1:443",
            "--server-name",
            "befund.labor.test",
            "--ca",
            "ca.crt",
            "--cert",
            "c.crt",
            "--key",
            "c.key",
            "--connections",
        ];
        let parse = |n: &str| Args::try_parse_from(base.iter().copied().chain([n]));
        assert!(parse("50000").is_ok());
        assert!(parse("50001").is_err());
        assert!(parse("0").is_err());
    }
}
