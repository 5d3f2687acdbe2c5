//! `befundserver`: the reference report server behind the Befund Gateway
//! proxy, and the commands that set up its database.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use befund_tests::befundserver::db::{NewReport, Store};
use befund_tests::befundserver::demo::{self, AnalyteArg, ReportDate};
use befund_tests::befundserver::identity::{CertBinding, CertSerial, Fingerprint};
use befund_tests::befundserver::password;
use befund_tests::befundserver::proxy_secret::{self, ProxySecret};
use befund_tests::befundserver::server::{self, App};
use clap::{Args, Parser, Subcommand};
use hyper::header::HeaderName;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;
use tracing_subscriber::EnvFilter;

/// Reference Befundserver: lab reports for physicians who present username,
/// password and the client certificate bound to their account (forwarded by
/// the Befund Gateway proxy).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the database (file mode 0600); does nothing if it exists.
    Init {
        /// SQLite database file.
        #[arg(long)]
        db: PathBuf,
    },
    /// Add a physician's account, bound to one client certificate.
    AddUser(AddUser),
    /// Add a lab report for a physician.
    AddReport(AddReport),
    /// Add three fictional demo reports for a physician.
    SeedDemo {
        /// SQLite database file.
        #[arg(long)]
        db: PathBuf,
        /// Whose reports they are.
        #[arg(long)]
        username: String,
    },
    /// Serve HTTP; prints the bound address on standard output once listening.
    Serve(Serve),
}

#[derive(Args)]
struct AddUser {
    /// SQLite database file.
    #[arg(long)]
    db: PathBuf,
    /// Login name.
    #[arg(long)]
    username: String,
    /// File holding the password (one line; the final newline is dropped).
    #[arg(long)]
    password_file: PathBuf,
    /// Bind to this certificate: SHA-256 fingerprint of its DER, hex (colons allowed).
    #[arg(
        long,
        value_name = "HEX",
        required_unless_present = "cert_issuer",
        conflicts_with = "cert_issuer"
    )]
    cert_fingerprint: Option<Fingerprint>,
    /// Bind by issuer: the RFC 4514 issuer string exactly as the proxy forwards it.
    #[arg(long, value_name = "DN", requires = "cert_serial")]
    cert_issuer: Option<String>,
    /// Bind by serial number (with --cert-issuer), hex as `openssl x509 -serial` prints it.
    #[arg(long, value_name = "HEX", requires = "cert_issuer")]
    cert_serial: Option<CertSerial>,
}

#[derive(Args)]
struct AddReport {
    /// SQLite database file.
    #[arg(long)]
    db: PathBuf,
    /// Whose report it is.
    #[arg(long)]
    username: String,
    /// Short title, e.g. "Kleines Blutbild".
    #[arg(long)]
    title: String,
    /// Free-text findings.
    #[arg(long)]
    body: String,
    /// Patient pseudonym.
    #[arg(long, default_value = "PSN-0000")]
    patient: String,
    /// Day the sample was taken, YYYY-MM-DD [default: today].
    #[arg(long)]
    date: Option<ReportDate>,
    /// A measured value: "NAME=VALUE UNIT [REFERENCE]"; repeat for more.
    #[arg(long = "analyte", value_name = "ANALYTE")]
    analytes: Vec<AnalyteArg>,
}

#[derive(Args)]
struct Serve {
    /// SQLite database file (made by `befundserver init`).
    #[arg(long)]
    db: PathBuf,
    /// Address to listen on, e.g. 10.10.0.2:8080 (port 0 picks a free port).
    #[arg(long)]
    listen: SocketAddr,
    /// File holding the secret the proxy sends in every request.
    #[arg(long)]
    proxy_secret_file: PathBuf,
    /// Name of the header that carries the proxy secret.
    #[arg(long, default_value = proxy_secret::DEFAULT_HEADER)]
    secret_header: HeaderName,
    /// How long a login session lasts, in seconds.
    #[arg(long, value_name = "SECONDS", default_value = "28800", value_parser = parse_seconds)]
    session_ttl: Duration,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(0) | Err(_) => Err(format!("{s:?} is not a positive number of seconds")),
        Ok(secs) => Ok(Duration::from_secs(secs)),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();

    let result = match cli.command {
        Command::Init { db } => init(&db),
        Command::AddUser(args) => add_user(args),
        Command::AddReport(args) => add_report(args),
        Command::SeedDemo { db, username } => seed_demo(&db, &username),
        Command::Serve(args) => serve(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("befundserver: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init(db: &Path) -> anyhow::Result<()> {
    Store::init(db)?;
    println!("database {} ready", db.display());
    Ok(())
}

fn add_user(args: AddUser) -> anyhow::Result<()> {
    let AddUser {
        db,
        username,
        password_file,
        cert_fingerprint,
        cert_issuer,
        cert_serial,
    } = args;
    let binding = match (cert_fingerprint, cert_issuer, cert_serial) {
        (Some(fp), None, None) => CertBinding::Fingerprint(fp),
        (None, Some(issuer), Some(serial)) => CertBinding::IssuerSerial { issuer, serial },
        _ => bail!("give either --cert-fingerprint or both --cert-issuer and --cert-serial"),
    };

    let password = read_password(&password_file)?;
    let hash = password::hash(password.as_bytes())?;
    let mut store = Store::open(&db)?;
    store.add_user(&username, &hash, &binding)?;
    println!("user {username} added, bound to certificate {binding}");
    Ok(())
}

/// The password file's contents without the final line break.
fn read_password(path: &Path) -> anyhow::Result<String> {
    let contents = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read password file {}", path.display()))?;
    let password = contents
        .strip_suffix('\n')
        .map_or(contents.as_str(), |p| p.strip_suffix('\r').unwrap_or(p));
    Ok(password.to_owned())
}

fn add_report(args: AddReport) -> anyhow::Result<()> {
    let AddReport {
        db,
        username,
        title,
        body,
        patient,
        date,
        analytes,
    } = args;
    let report = NewReport {
        title,
        patient,
        collected_on: date.unwrap_or_else(ReportDate::today).to_string(),
        body,
        analytes: analytes.into_iter().map(|a| a.0).collect(),
    };

    let mut store = Store::open(&db)?;
    let user = store.user(&username)?;
    let id = store.add_report(user.id, &report)?;
    println!("report {id} added for {username}");
    Ok(())
}

fn seed_demo(db: &Path, username: &str) -> anyhow::Result<()> {
    let mut store = Store::open(db)?;
    let user = store.user(username)?;
    for report in demo::demo_reports(username) {
        let id = store.add_report(user.id, &report)?;
        println!("report {id} added for {username}: {}", report.title);
    }
    Ok(())
}

fn serve(args: Serve) -> anyhow::Result<()> {
    let Serve {
        db,
        listen,
        proxy_secret_file,
        secret_header,
        session_ttl,
    } = args;
    let secret = ProxySecret::from_file(&proxy_secret_file, secret_header)?;
    let store = Store::open(&db)?;
    let app = Arc::new(App::new(store, secret, session_ttl)?);

    let runtime = tokio::runtime::Runtime::new().context("failed to start the async runtime")?;
    runtime.block_on(async {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("failed to listen on {listen}"))?;
        let local = listener
            .local_addr()
            .context("failed to read the bound address")?;
        info!(addr = %local, db = %db.display(), "listening");
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{local}")
            .and_then(|()| stdout.flush())
            .context("failed to print the bound address")?;

        let shutdown = shutdown_signal()?;
        server::serve(listener, app, shutdown).await;
        Ok(())
    })
}

/// Completes on SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("failed to watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("failed to watch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => info!(signal = "SIGTERM", "stopping"),
            _ = int.recv() => info!(signal = "SIGINT", "stopping"),
        }
    })
}
