//! Operating the appliance in the demo's three namespaces: reloads under
//! load, revocation that closes open connections, metrics, health and the
//! systemd readiness protocol, against the real daemon, the real
//! Befundserver and real clients (curl, openssl, a rustls/hyper client).
//! Needs root (BPF, namespaces), curl and openssl.

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use befund_testbed::netns::Netns;
use befund_tests::{
    demo::{Deployment, Options, SERVER_NAME, topology::GATEWAY_WAN},
    harness::{eventually, profile_dir},
    traffic::connect_within,
};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};

fn deploy(tag: &str, gateway_env: Vec<(String, String)>) -> Deployment {
    deploy_as(tag, gateway_env, None)
}

fn deploy_as(tag: &str, gateway_env: Vec<(String, String)>, user: Option<&str>) -> Deployment {
    Deployment::start(&Options {
        bin_dir: profile_dir().expect("the product's binaries"),
        tag: tag.to_owned(),
        gateway_env,
        runtime_user: user.map(str::to_owned),
    })
    .expect("deployment starts")
}

fn output(cmd: &mut Command) -> Result<Output> {
    cmd.output()
        .with_context(|| format!("failed to run {:?}", cmd.get_program()))
}

fn stdout(mut cmd: Command) -> Result<String> {
    let out = output(cmd.stdin(std::process::Stdio::null()))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `befundctl ARGS...` inside the gateway namespace.
fn befundctl(d: &Deployment, args: &[&str]) -> Command {
    let mut cmd = d.topology.gateway.command(d.bin("befundctl"));
    cmd.args(args);
    cmd
}

/// `befundctl reload` for the deployment's gateway.
fn reload(d: &Deployment) -> Result<Output> {
    let mut cmd = befundctl(d, &["reload", "--config"]);
    cmd.arg(d.gateway_config());
    output(&mut cmd)
}

/// GET from the admin listener (127.0.0.1:9090 in the gateway namespace):
/// status and body.
fn admin_get(d: &Deployment, path: &str) -> Result<(u16, String)> {
    let mut cmd = d.topology.gateway.command("curl");
    cmd.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:9090{path}"));
    let text = stdout(cmd)?;
    let (body, code) = text.rsplit_once('\n').context("no status line")?;
    Ok((code.trim().parse()?, body.to_owned()))
}

fn gateway_log(d: &Deployment) -> String {
    std::fs::read_to_string(d.topology.log_path("befund-proxy")).unwrap_or_default()
}

/// The serial number of the certificate the gateway serves, as openssl sees it.
fn served_serial(d: &Deployment) -> Result<String> {
    let physician = &d.pki.physicians[0];
    let script = format!(
        "openssl s_client -connect {GATEWAY_WAN}:443 -servername {SERVER_NAME} -cert {} -key {} \
         </dev/null 2>/dev/null | openssl x509 -noout -serial",
        physician.cert.display(),
        physician.key.display()
    );
    let mut cmd = d.topology.client.command("sh");
    cmd.args(["-c", &script]);
    let line = stdout(cmd)?;
    Ok(line
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase())
}

fn file_serial(cert: &Path) -> Result<String> {
    let mut cmd = Command::new("openssl");
    cmd.args(["x509", "-noout", "-serial", "-in"]).arg(cert);
    let line = stdout(cmd)?;
    Ok(line
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase())
}

/// What a load worker needs to reach the gateway as a physician.
#[derive(Clone)]
struct LoadTarget {
    client_ns: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl LoadTarget {
    fn new(d: &Deployment, physician: usize) -> Self {
        let p = &d.pki.physicians[physician];
        Self {
            client_ns: d.topology.client.name().to_owned(),
            ca: d.pki.ca_cert.clone(),
            cert: p.cert.clone(),
            key: p.key.clone(),
        }
    }

    /// One curl process in the client namespace fetching `count` URLs over
    /// one keep-alive connection; returns how many got a 200.
    fn curl_batch(&self, count: usize) -> Result<usize> {
        let mut cmd = Netns::existing(&self.client_ns).command("curl");
        cmd.args(["-sS", "--max-time", "120", "--resolve"])
            .arg(format!("{SERVER_NAME}:443:{GATEWAY_WAN}"))
            .arg("--cacert")
            .arg(&self.ca)
            .arg("--cert")
            .arg(&self.cert)
            .arg("--key")
            .arg(&self.key)
            .args(["-w", "\nSTATUS:%{http_code}\n"])
            .arg(format!("https://{SERVER_NAME}/healthz?n=[1-{count}]"));
        let out = output(&mut cmd)?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text.lines().filter(|l| *l == "STATUS:200").count())
    }
}

#[test]
fn reload_under_load_fails_no_request_and_a_broken_certificate_changes_nothing() -> Result<()> {
    let d = deploy("opsreload", Vec::new());
    let old_serial = served_serial(&d)?;

    // Load from other processes: 4 workers, each repeating curl runs of 100
    // requests (a fresh handshake, then one keep-alive connection) until
    // told to stop after the reload, and never more than 40 runs.
    const WORKERS: usize = 4;
    const MAX_RUNS: usize = 40;
    const PER_RUN: usize = 100;
    let finished_runs = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let target = LoadTarget::new(&d, 0);
            let finished_runs = finished_runs.clone();
            let stop = stop.clone();
            thread::spawn(move || -> Result<(usize, usize)> {
                let (mut ok, mut sent) = (0, 0);
                for _ in 0..MAX_RUNS {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    ok += target.curl_batch(PER_RUN)?;
                    sent += PER_RUN;
                    finished_runs.fetch_add(1, Ordering::SeqCst);
                }
                Ok((ok, sent))
            })
        })
        .collect();

    // Mid-load: a new server certificate and a new CRL, then a reload.
    eventually("the load is under way", || {
        Ok(finished_runs.load(Ordering::SeqCst) >= WORKERS)
    })?;
    let server_dir = d.pki.server_chain.parent().context("server dir")?;
    stdout(issue_server_certificate(&d)?)?;
    let mut crl = Command::new(d.bin("befundctl"));
    crl.args(["crl", "--dir"])
        .arg(&d.pki.ca_dir)
        .arg("--out")
        .arg(&d.pki.crl);
    stdout(crl)?;
    let reloaded = reload(&d);
    let during = finished_runs.load(Ordering::SeqCst);
    // Whatever the reload's outcome, the load goes on a little longer (runs
    // that started before the reload and end after it), then stops.
    let went_on = eventually("the load goes on after the reload", || {
        Ok(finished_runs.load(Ordering::SeqCst) >= during + WORKERS)
    });
    stop.store(true, Ordering::SeqCst);
    let (mut ok, mut total) = (0, 0);
    for worker in workers {
        let (worker_ok, worker_sent) = worker.join().expect("load worker")?;
        ok += worker_ok;
        total += worker_sent;
    }
    let reloaded = reloaded?;
    let said = String::from_utf8_lossy(&reloaded.stdout).into_owned();
    ensure!(
        reloaded.status.success() && said.contains("reloaded"),
        "reload: {said}{}",
        String::from_utf8_lossy(&reloaded.stderr)
    );
    let runs = finished_runs.load(Ordering::SeqCst);
    println!("{ok} of {total} requests answered 200; reload after {during} of {runs} runs");
    went_on?;
    ensure!(
        during < runs && runs < WORKERS * MAX_RUNS,
        "the reload did not fall inside the load ({during} of {runs} runs before it)"
    );
    assert_eq!(ok, total, "requests failed across the reload");

    let new_serial = served_serial(&d)?;
    let expected = file_serial(&server_dir.join("server.crt"))?;
    assert_ne!(new_serial, old_serial, "the new certificate is not served");
    assert_eq!(new_serial, expected);

    // A broken certificate file: the reload is rejected, names the file,
    // and the certificate in force stays.
    let original = std::fs::read(&d.pki.server_chain)?;
    std::fs::write(&d.pki.server_chain, "this is not a certificate\n")?;
    let rejected = reload(&d)?;
    std::fs::write(&d.pki.server_chain, original)?;
    let stderr = String::from_utf8_lossy(&rejected.stderr).into_owned();
    let chain = d.pki.server_chain.display().to_string();
    assert!(!rejected.status.success(), "a broken certificate reloaded");
    assert!(stderr.contains("reload rejected"), "{stderr}");
    assert!(stderr.contains(&chain), "{stderr}");
    assert_eq!(
        served_serial(&d)?,
        new_serial,
        "the served certificate changed"
    );
    let log = gateway_log(&d);
    assert!(
        log.lines()
            .any(|l| l.contains("reload rejected") && l.contains(&chain)),
        "{log}"
    );

    // A new certificate together with a firewall section that cannot be
    // applied (its state file is damaged): the firewall is checked before
    // the TLS swap, so the old certificate stays too.
    stdout(issue_server_certificate(&d)?)?;
    let state_file = d.gateway_config().with_file_name("firewall.json");
    let state = std::fs::read(&state_file)?;
    std::fs::write(&state_file, "{ damaged")?;
    let rejected = reload(&d)?;
    std::fs::write(&state_file, state)?;
    let stderr = String::from_utf8_lossy(&rejected.stderr).into_owned();
    assert!(
        !rejected.status.success(),
        "a damaged firewall state reloaded"
    );
    assert!(stderr.contains("[firewall]"), "{stderr}");
    assert_eq!(served_serial(&d)?, new_serial, "the TLS state changed");
    let applied = reload(&d)?;
    assert!(applied.status.success(), "{applied:?}");
    assert_eq!(
        served_serial(&d)?,
        file_serial(&server_dir.join("server.crt"))?
    );
    Ok(())
}

/// `befundctl cert server --replace` for the gateway's name and addresses.
fn issue_server_certificate(d: &Deployment) -> Result<Command> {
    let server_dir = d.pki.server_chain.parent().context("server dir")?;
    let mut issue = Command::new(d.bin("befundctl"));
    issue
        .args(["cert", "server", "--dir"])
        .arg(&d.pki.ca_dir)
        .args(["--dns", SERVER_NAME, "--ip", &GATEWAY_WAN.to_string()])
        .args(["--ip", befund_tests::demo::topology::GATEWAY_WAN6])
        .arg("--out-dir")
        .arg(server_dir)
        .arg("--replace");
    Ok(issue)
}

/// A client of the gateway's HTTPS port from the client namespace.
struct Client {
    config: Arc<rustls::ClientConfig>,
    client_ns: String,
}

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

impl Client {
    fn new(d: &Deployment, physician: usize, alpn: &[u8]) -> Result<Self> {
        let p = &d.pki.physicians[physician];
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&d.pki.ca_cert)? {
            roots.add(cert?)?;
        }
        let chain = CertificateDer::pem_file_iter(&p.cert)?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&p.key)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(Self {
            config: Arc::new(config),
            client_ns: d.topology.client.name().to_owned(),
        })
    }

    /// A TLS connection to the gateway (the same client configuration, so
    /// the same session cache, every time).
    async fn connect(&self) -> Result<TlsStream> {
        let ns = Netns::existing(&self.client_ns);
        let target = std::net::SocketAddr::from((GATEWAY_WAN, 443));
        let tcp = connect_within(&ns, None, target, Duration::from_secs(5))?;
        tcp.set_nonblocking(true)?;
        let tcp = tokio::net::TcpStream::from_std(tcp)?;
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let name = ServerName::try_from(SERVER_NAME)?;
        Ok(connector.connect(name, tcp).await?)
    }
}

fn get(path: &str) -> Result<hyper::Request<Empty<Bytes>>> {
    Ok(hyper::Request::get(format!("https://{SERVER_NAME}{path}"))
        .header(hyper::header::HOST, SERVER_NAME)
        .body(Empty::new())?)
}

#[test]
fn revoked_certificate_loses_its_open_connections_without_a_signal() -> Result<()> {
    let d = deploy("opsrevoke", Vec::new());
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let h1 = Client::new(&d, 1, b"http/1.1")?;
        let h2 = Client::new(&d, 1, b"h2")?;

        // An HTTP/1.1 keep-alive connection and an HTTP/2 connection, both
        // used once and left open.
        let stream = h1.connect().await?;
        let (mut h1_send, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let h1_conn = tokio::spawn(conn);
        let status = h1_send.send_request(get("/healthz")?).await?.status();
        ensure!(status == 200, "HTTP/1.1 request: {status}");

        let stream = h2.connect().await?;
        let (mut h2_send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        let h2_conn = tokio::spawn(conn);
        let status = h2_send.send_request(get("/healthz")?).await?.status();
        ensure!(status == 200, "HTTP/2 request: {status}");

        // The proxy grants no resumption: a second connection with the same
        // client (and its session cache) runs a full handshake.
        let second = h2.connect().await?;
        let kind = second.get_ref().1.handshake_kind();
        ensure!(
            kind == Some(rustls::HandshakeKind::Full),
            "second connection: {kind:?}"
        );
        drop(second);

        // Revoke on the appliance; no signal, no reload.
        let revoked_at = Instant::now();
        let mut revoke = Command::new(d.bin("befundctl"));
        revoke
            .args(["cert", "revoke", "--dir"])
            .arg(&d.pki.ca_dir)
            .args([&d.pki.physicians[1].cn, "--reason", "key-compromise"]);
        stdout(revoke)?;

        let guard = Duration::from_secs(60);
        tokio::time::timeout(guard, h1_conn)
            .await
            .context("the HTTP/1.1 connection stayed open")??
            .ok();
        let h1_closed = revoked_at.elapsed();
        tokio::time::timeout(guard, h2_conn)
            .await
            .context("the HTTP/2 connection stayed open")??
            .ok();
        let h2_closed = revoked_at.elapsed();
        println!("closed after the revocation: HTTP/1.1 {h1_closed:?}, HTTP/2 {h2_closed:?}");
        ensure!(
            h1_send.send_request(get("/healthz")?).await.is_err(),
            "HTTP/1.1 connection still answers"
        );
        ensure!(
            h2_send.send_request(get("/healthz")?).await.is_err(),
            "HTTP/2 connection still answers"
        );

        // The same client (session cache included) cannot come back: the
        // server answers the new handshake with certificate_revoked.
        let refusal = match h2.connect().await {
            Err(e) => e.to_string(),
            Ok(mut stream) => {
                let mut buf = [0u8; 64];
                match tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
                    Err(e) => e.to_string(),
                    Ok(n) => bail!("the revoked certificate was admitted again ({n} bytes)"),
                }
            }
        };
        ensure!(refusal.contains("CertificateRevoked"), "{refusal}");

        // The other physician keeps working.
        let other = Client::new(&d, 0, b"http/1.1")?;
        let stream = other.connect().await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let status = send.send_request(get("/healthz")?).await?.status();
        ensure!(status == 200, "the other physician: {status}");
        Ok::<_, anyhow::Error>(())
    })?;

    // Logged and counted right after the closing.
    let closed_lines = || {
        gateway_log(&d)
            .lines()
            .filter(|l| l.contains("no longer admitted") && l.contains("reason=\"revoked\""))
            .count()
    };
    eventually("both closings are logged", || Ok(closed_lines() >= 2))?;
    assert_eq!(closed_lines(), 2, "{}", gateway_log(&d));
    let (_, metrics) = admin_get(&d, "/metrics")?;
    assert!(
        metrics
            .lines()
            .any(|l| l == "befund_connections_closed_by_trust_change_total{reason=\"revoked\"} 2"),
        "{metrics}"
    );
    Ok(())
}

fn parse_metrics(text: &str) -> Result<prometheus_parse::Scrape> {
    Ok(prometheus_parse::Scrape::parse(
        text.lines().map(|l| Ok(l.to_owned())),
    )?)
}

fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(*v),
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map(|b| b.count),
            prometheus_parse::Value::Summary(_) => None,
        })
}

#[test]
fn metrics_parse_as_prometheus_text_with_the_expected_families() -> Result<()> {
    let d = deploy("opsmetrics", Vec::new());
    ensure!(
        LoadTarget::new(&d, 0).curl_batch(5)? == 5,
        "traffic for the metrics"
    );
    // One client without a certificate, refused in the handshake.
    let mut bare = d.topology.client.command("curl");
    bare.args(["-sS", "--max-time", "10", "--resolve"])
        .arg(format!("{SERVER_NAME}:443:{GATEWAY_WAN}"))
        .arg("--cacert")
        .arg(&d.pki.ca_cert)
        .arg(format!("https://{SERVER_NAME}/healthz"));
    let refused = output(&mut bare)?;
    ensure!(
        !refused.status.success(),
        "a client without certificate got in"
    );

    let (status, text) = admin_get(&d, "/metrics")?;
    println!("{text}");
    assert_eq!(status, 200);
    let scrape = parse_metrics(&text)?;
    let crl = d.pki.crl.display().to_string();
    let v = |metric: &str, labels: &[(&str, &str)]| {
        value(&scrape, metric, labels).unwrap_or_else(|| panic!("{metric} {labels:?}:\n{text}"))
    };
    assert!(v("befund_handshakes_total", &[("outcome", "verified")]) >= 1.0);
    assert!(
        v(
            "befund_handshakes_total",
            &[("outcome", "refused"), ("reason", "no_certificate")]
        ) >= 1.0
    );
    assert!(v("befund_responses_total", &[("class", "2xx")]) >= 5.0);
    assert!(v("befund_requests_total", &[]) >= 5.0);
    assert!(v("befund_request_duration_seconds", &[]) >= 5.0);
    assert!(v("befund_upstream_duration_seconds", &[]) >= 5.0);
    assert!(v("befund_connections_open", &[]) >= 0.0);
    assert!(v("befund_connections_accepted_total", &[]) >= 2.0);
    assert!(v("befund_server_certificate_expiry_seconds", &[]) > 86_400.0);
    let next_update = v("befund_crl_next_update_seconds", &[("file", &crl)]);
    assert!(next_update > 86_400.0, "{next_update}");
    let age = v("befund_crl_age_seconds", &[("file", &crl)]);
    assert!((0.0..3600.0).contains(&age), "{age}");
    assert_eq!(v("befund_crl_expiring", &[("file", &crl)]), 0.0);
    assert!(v("befund_xdp_packets_total", &[("name", "proxy")]) > 0.0);
    assert!(v("befund_xdp_bytes_total", &[("name", "proxy")]) > 0.0);
    assert_eq!(v("befund_reloads_total", &[("result", "rejected")]), 0.0);
    Ok(())
}

#[test]
fn healthz_turns_503_without_the_befundserver_and_200_when_it_is_back() -> Result<()> {
    let mut d = deploy("opshealth", Vec::new());
    let (status, body) = admin_get(&d, "/healthz")?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");

    d.stop_befundserver()?;
    let mut last = String::new();
    eventually("/healthz reports the Befundserver missing", || {
        let (status, body) = admin_get(&d, "/healthz")?;
        last = body;
        Ok(status == 503)
    })?;
    assert!(last.contains("\"check\":\"upstream\""), "{last}");
    assert!(!last.contains("\"check\":\"filter\""), "{last}");

    d.start_befundserver()?;
    eventually("/healthz is 200 again", || {
        Ok(admin_get(&d, "/healthz")?.0 == 200)
    })?;
    Ok(())
}

/// Receives notifications on a unix datagram socket, as systemd would.
struct FakeSystemd {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl FakeSystemd {
    fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path)?;
        socket.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(Self {
            socket,
            _dir: dir,
            path,
        })
    }

    fn recv(&self) -> Result<String> {
        let mut buf = vec![0u8; 4096];
        let n = self.socket.recv(&mut buf).context("no notification")?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Receives until a message contains `needle`; returns it.
    fn until(&self, needle: &str) -> Result<String> {
        loop {
            let message = self.recv()?;
            if message.contains(needle) {
                return Ok(message);
            }
        }
    }
}

#[test]
fn systemd_hears_ready_only_once_the_listener_accepts() -> Result<()> {
    let systemd = FakeSystemd::new()?;
    let env = vec![
        (
            "NOTIFY_SOCKET".to_owned(),
            systemd.path.display().to_string(),
        ),
        ("WATCHDOG_USEC".to_owned(), "1000000".to_owned()),
    ];
    let client_ns = Arc::new(std::sync::Mutex::new(None::<String>));

    // READY=1 must be the first message, and the HTTPS port must accept at
    // the moment it arrives.
    let ready = thread::scope(|scope| -> Result<(String, bool, Deployment)> {
        let listener = scope.spawn(|| -> Result<(String, bool)> {
            let first = systemd.recv()?;
            let ns = loop {
                if let Some(ns) = client_ns.lock().unwrap().clone() {
                    break ns;
                }
                thread::sleep(Duration::from_millis(5));
            };
            let target = std::net::SocketAddr::from((GATEWAY_WAN, 443));
            let accepted =
                connect_within(&Netns::existing(&ns), None, target, Duration::from_secs(5)).is_ok();
            Ok((first, accepted))
        });
        // The namespace names are fixed by the tag and the process id.
        *client_ns.lock().unwrap() = Some(format!("bfc-opsnotify{}", std::process::id()));
        let d = deploy("opsnotify", env);
        let (first, accepted) = listener.join().expect("listener thread")?;
        Ok((first, accepted, d))
    })?;
    let (first, accepted, d) = ready;
    assert!(
        first.lines().any(|l| l == "READY=1"),
        "first message: {first:?}"
    );
    assert!(accepted, "READY=1 arrived before the HTTPS port accepted");
    assert!(gateway_log(&d).contains("firewall attached"));

    // Watchdog pings at half of WATCHDOG_USEC.
    systemd.until("WATCHDOG=1")?;
    systemd.until("WATCHDOG=1")?;

    // A reload: RELOADING=1 with the monotonic time, then READY=1.
    let reloaded = reload(&d)?;
    ensure!(reloaded.status.success(), "{reloaded:?}");
    let reloading = systemd.until("RELOADING=1")?;
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    systemd.until("READY=1")?;

    // Shutdown: STOPPING=1.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.gateway_pid()?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    systemd.until("STOPPING=1")?;
    Ok(())
}

#[test]
fn unprivileged_daemon_still_reloads_firewall_rules_reads_counters_and_sees_revocations()
-> Result<()> {
    let d = deploy_as("opsuser", Vec::new(), Some("nobody"));
    let log = gateway_log(&d);
    let dropped = log
        .lines()
        .find(|l| l.contains("privileges dropped"))
        .with_context(|| format!("no privilege drop logged:\n{log}"))?
        .to_owned();
    println!("{dropped}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.gateway_pid()?))?;
    let nobody = nix::unistd::User::from_name("nobody")?.context("user nobody")?;
    let uid_line = format!("Uid:\t{0}\t{0}\t{0}\t{0}", nobody.uid);
    assert!(status.contains(&uid_line), "{status}");
    // Either no capability at all, or CAP_BPF alone where the kernel needs
    // it for map access through open descriptors.
    let cap_eff = status
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .context("CapEff")?;
    assert!(
        cap_eff.ends_with("0000000000000000") || cap_eff.ends_with("0000008000000000"),
        "{cap_eff}"
    );

    // The filter check reads the interface over rtnetlink, unprivileged.
    let (status, body) = admin_get(&d, "/healthz")?;
    assert_eq!(status, 200, "{body}");

    // A firewall rule added to the configuration reaches the pinned maps
    // through the descriptors the daemon opened as root.
    let config = d.gateway_config();
    let text = std::fs::read_to_string(&config)?;
    std::fs::write(
        &config,
        text.replacen(
            "[firewall]\n",
            "[firewall]\nblocked = [\"203.0.113.0/24\"]\n",
            1,
        ),
    )?;
    let reloaded = reload(&d)?;
    ensure!(reloaded.status.success(), "{reloaded:?}");
    let rules = stdout({
        let mut cmd = befundctl(&d, &["fw", "status", "--config"]);
        cmd.arg(&config);
        cmd
    })?;
    assert!(rules.contains("203.0.113.0/24"), "{rules}");

    // The XDP counters are read at scrape time.
    ensure!(LoadTarget::new(&d, 0).curl_batch(3)? == 3, "traffic");
    let (_, metrics) = admin_get(&d, "/metrics")?;
    let scrape = parse_metrics(&metrics)?;
    assert!(
        value(&scrape, "befund_xdp_packets_total", &[("name", "proxy")]).unwrap_or(0.0) > 0.0,
        "{metrics}"
    );
    assert!(
        value(
            &scrape,
            "befund_xdp_packets_total",
            &[("name", "block 203.0.113.0/24")]
        )
        .is_some(),
        "{metrics}"
    );

    // The CRL is re-read as the unprivileged user.
    let mut revoke = Command::new(d.bin("befundctl"));
    revoke
        .args(["cert", "revoke", "--dir"])
        .arg(&d.pki.ca_dir)
        .args([&d.pki.physicians[1].cn, "--reason", "affiliation-changed"]);
    stdout(revoke)?;
    eventually("the revocation is in force", || {
        Ok(LoadTarget::new(&d, 1).curl_batch(1)? == 0)
    })?;
    ensure!(
        LoadTarget::new(&d, 0).curl_batch(1)? == 1,
        "the other physician"
    );
    Ok(())
}
