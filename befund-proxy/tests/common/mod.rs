//! Shared test harness: PKI, configuration files, the proxy running
//! in-process, a recording upstream and a rustls test client.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

pub mod pki;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use befund_proxy::config::Config;
use befund_proxy::proxy::{Proxy, ProxyMetrics};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::ServerName;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use self::pki::{Issued, Pki, SERVER_NAME, write_file};

/// The shared secret written to the secret file.
pub const SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";

/// A directory with the PKI files and a configuration pointing at them.
pub struct Setup {
    pub dir: TempDir,
    pub pki: Pki,
    pub ca_pem: PathBuf,
    pub config_path: PathBuf,
}

/// Knobs for the generated configuration.
#[derive(Clone)]
pub struct Options {
    pub upstream: String,
    pub crl_days_left: Option<i64>,
    pub crl_expired: &'static str,
    pub extra_limits: String,
    pub response_timeout: &'static str,
    pub strip_headers: Vec<String>,
    /// Further lines for `[upstream]`.
    pub upstream_extra: String,
    /// `[runtime] workers`; unset: one per CPU.
    pub workers: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            upstream: "http://127.0.0.1:9".into(),
            crl_days_left: Some(30),
            crl_expired: "refuse",
            extra_limits: String::new(),
            response_timeout: "5s",
            strip_headers: vec![],
            upstream_extra: String::new(),
            workers: None,
        }
    }
}

impl Setup {
    pub fn new(options: &Options) -> Self {
        Self::with_pki(Pki::new(), options)
    }

    pub fn with_pki(pki: Pki, options: &Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cert = write_file(d, "server.pem", pki.server.chain_pem().as_bytes(), 0o644);
        let key = write_file(
            d,
            "server.key",
            pki.server.key.serialize_pem().as_bytes(),
            0o600,
        );
        let ca_pem = write_file(d, "client-ca.pem", pki.root.cert.pem.as_bytes(), 0o644);
        let secret = write_file(d, "secret", format!("{SECRET}\n").as_bytes(), 0o600);
        let crls = match options.crl_days_left {
            Some(days) => {
                let (root_crl, intermediate_crl) = pki.crls(days);
                let a = write_file(d, "root.crl", &root_crl, 0o644);
                let b = write_file(d, "client-ca.crl", &intermediate_crl, 0o644);
                format!("[{:?}, {:?}]", a, b)
            }
            None => "[]".into(),
        };
        let strip: Vec<String> = options
            .strip_headers
            .iter()
            .map(|h| format!("{h:?}"))
            .collect();
        let runtime = match options.workers {
            Some(workers) => format!("[runtime]\nworkers = {workers}\n"),
            None => String::new(),
        };
        let text = format!(
            r#"
[firewall]
interface = "lo"
proxy_addresses = ["127.0.0.1"]

[tls]
listen = ["127.0.0.1:0"]
server_name = "{SERVER_NAME}"
certificate = {cert:?}
private_key = {key:?}
client_ca = {ca_pem:?}
crls = {crls}
crl_expired = "{crl_expired}"

[upstream]
url = "{upstream}"
connect_timeout = "2s"
response_timeout = "{response_timeout}"
{upstream_extra}

[identity]
secret_file = {secret:?}
strip_headers = [{strip}]

[limits]
{extra_limits}

[log]
audit = {audit:?}

{runtime}"#,
            crl_expired = options.crl_expired,
            upstream = options.upstream,
            response_timeout = options.response_timeout,
            upstream_extra = options.upstream_extra,
            strip = strip.join(", "),
            extra_limits = options.extra_limits,
            audit = d.join("audit.jsonl"),
        );
        let config_path = write_file(d, "befund.toml", text.as_bytes(), 0o644);
        let root_pem = write_file(d, "root.pem", pki.root.cert.pem.as_bytes(), 0o644);
        Self {
            dir,
            pki,
            ca_pem: root_pem,
            config_path,
        }
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path).unwrap()
    }

    /// Writes a fresh CRL of the client CA that revokes the valid client
    /// certificate besides the revoked one (picked up at the next reload or
    /// CRL check).
    pub fn revoke_valid_certificate(&self) {
        let now = time::OffsetDateTime::now_utc();
        let crl = self.pki.intermediate.crl(
            &[
                rcgen::SerialNumber::from(pki::REVOKED_SERIAL),
                rcgen::SerialNumber::from(pki::VALID_SERIAL),
            ],
            now - time::Duration::days(1),
            now + time::Duration::days(30),
        );
        pki::write_file(self.dir.path(), "client-ca.crl", &crl, 0o644);
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `issued`'s chain and key as PEM files for external clients.
    pub fn write_client(&self, name: &str, issued: &Issued) -> (PathBuf, PathBuf) {
        let cert = write_file(
            self.dir.path(),
            &format!("{name}.pem"),
            issued.chain_pem().as_bytes(),
            0o644,
        );
        let key = write_file(
            self.dir.path(),
            &format!("{name}.key"),
            issued.key.serialize_pem().as_bytes(),
            0o600,
        );
        (cert, key)
    }

    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// The proxy serving on loopback inside the test's runtime.
pub struct RunningProxy {
    pub addr: SocketAddr,
    pub metrics: Arc<ProxyMetrics>,
    pub tls: befund_proxy::tls::SharedTlsState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningProxy {
    pub async fn start(config: &Config) -> Self {
        let bound = Proxy::load(config).unwrap().bind().unwrap();
        let addr = bound.local_addrs()[0];
        let metrics = bound.metrics();
        let tls = bound.tls_state();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            bound
                .serve(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            metrics,
            tls,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("the proxy stops within its grace period")
                .unwrap();
        }
    }
}

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub uri: String,
    /// Every header line in arrival order (names as hyper gives them, lower case).
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
            .collect()
    }

    /// The only value of `name`; panics if absent or repeated.
    pub fn single(&self, name: &str) -> String {
        let values = self.values(name);
        assert_eq!(values.len(), 1, "header {name}: {values:?}");
        values.into_iter().next().unwrap()
    }
}

/// The answer of the test Befundservers: 200 `hello from upstream`.
pub fn hello_from_upstream() -> hyper::Response<Full<Bytes>> {
    hyper::Response::new(Full::new(Bytes::from_static(b"hello from upstream")))
}

/// Serves HTTP/1.1 on every connection `listener` accepts, each request
/// answered by `answer`. Aborting the returned task closes the listener and
/// every connection.
pub fn serve_http1<F, Fut>(listener: TcpListener, answer: F) -> JoinHandle<()>
where
    F: Fn(hyper::Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = hyper::Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let answer = answer.clone();
            connections.spawn(async move {
                let service = service_fn(move |request| {
                    let answer = answer.clone();
                    async move { Ok::<_, Infallible>(answer(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    })
}

/// An HTTP/1.1 server standing in for the Befundserver that records requests.
pub struct RecordingUpstream {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl RecordingUpstream {
    /// Answers every request 200 `hello from upstream` after `delay`.
    pub async fn start(delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let task = serve_http1(listener, move |request| {
            let recorded = recorded.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes().to_vec())
                    .unwrap_or_default();
                recorded.lock().unwrap().push(Recorded {
                    method: parts.method.to_string(),
                    uri: parts.uri.to_string(),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                        .collect(),
                    body,
                });
                tokio::time::sleep(delay).await;
                hello_from_upstream()
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Presents `chain` but signs the handshake with `key` (which may belong to
/// another certificate): the "certificate without its private key" case.
#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// How the test client authenticates.
pub enum ClientAuth<'a> {
    None,
    Cert(&'a Issued),
    /// Present the certificate chain of the first, sign with the key of the second.
    WrongKey(&'a Issued, &'a Issued),
}

/// A rustls client trusting the test root, with ALPN `alpn`.
pub fn client_config(pki: &Pki, auth: ClientAuth<'_>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    client_config_for(pki, auth, alpn, rustls::DEFAULT_VERSIONS)
}

/// Like [`client_config`], limited to the TLS `versions`.
pub fn client_config_for(
    pki: &Pki,
    auth: ClientAuth<'_>,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(pki.root.cert.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Cert(issued) => builder
            .with_client_auth_cert(issued.full_chain(), issued.key_der())
            .unwrap(),
        ClientAuth::WrongKey(presented, signer) => {
            let key = provider
                .key_provider
                .load_private_key(signer.key_der())
                .unwrap();
            let certified = CertifiedKey::new(presented.full_chain(), key);
            builder.with_client_cert_resolver(Arc::new(FixedClientCert(Arc::new(certified))))
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Connects and completes the client side of the handshake.
pub async fn connect(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config)
        .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
        .await
}

/// What a raw HTTP/1.1 exchange over TLS came to.
#[derive(Debug)]
pub enum Exchange {
    /// The server's complete response (connection closed after it).
    Response(String),
    /// The TLS layer failed; the rustls error if there was one.
    TlsFailed(Option<rustls::Error>, String),
}

impl Exchange {
    pub fn response(&self) -> &str {
        match self {
            Self::Response(text) => text,
            Self::TlsFailed(e, text) => panic!("expected a response, TLS failed: {e:?} {text}"),
        }
    }

    /// The alert the server sent, if the exchange failed with one.
    pub fn alert(&self) -> Option<rustls::AlertDescription> {
        match self {
            Self::TlsFailed(Some(rustls::Error::AlertReceived(alert)), _) => Some(*alert),
            _ => None,
        }
    }
}

fn tls_error(e: &io::Error) -> Option<rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned()
}

/// Sends `request` (raw HTTP/1.1) and reads until the server closes.
pub async fn exchange(config: Arc<ClientConfig>, addr: SocketAddr, request: &str) -> Exchange {
    let mut stream = match connect(config, addr).await {
        Ok(stream) => stream,
        Err(e) => return Exchange::TlsFailed(tls_error(&e), e.to_string()),
    };
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return Exchange::TlsFailed(tls_error(&e), e.to_string());
    }
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .expect("the server answers or closes");
    match read {
        Ok(_) => Exchange::Response(String::from_utf8_lossy(&response).into_owned()),
        Err(e) if response.is_empty() => Exchange::TlsFailed(tls_error(&e), e.to_string()),
        // A response followed by an unclean close still counts as the response.
        Err(_) => Exchange::Response(String::from_utf8_lossy(&response).into_owned()),
    }
}

/// A GET for `path` with the right Host, asking the server to close afterwards.
pub fn get(path: &str, port: u16) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {SERVER_NAME}:{port}\r\nConnection: close\r\n\r\n")
}

/// The status code of a raw HTTP/1.1 response.
pub fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

/// Collects the log lines emitted on this thread while alive.
pub struct LogCapture {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl io::Write for CaptureWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Captures everything at `info` and above (use a current-thread runtime).
    pub fn start() -> Self {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = CaptureWriter(buffer.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        Self {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }

    /// The captured lines containing every one of `needles`.
    pub fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }
}

/// Waits until `path` has at least `n` lines (the audit line is written when
/// the response body completes, which can trail the client's read).
pub async fn wait_for_lines(path: &Path, n: usize) -> Vec<String> {
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never reached {n} lines", path.display());
}

/// Reads from `stream` until `n` responses of [`RecordingUpstream`] (whose
/// body is `hello from upstream`) have arrived; returns the text. Fails if
/// the connection closes first or nothing arrives for 30 s.
pub async fn read_responses(stream: &mut (impl AsyncReadExt + Unpin), n: usize) -> String {
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while text.matches("hello from upstream").count() < n {
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
            .await
            .expect("the response arrives")
            .unwrap();
        assert!(read > 0, "connection closed after {text:?}");
        text.push_str(&String::from_utf8_lossy(&buf[..read]));
    }
    text
}

/// Waits up to ten seconds for `condition` (server-side bookkeeping can trail
/// what the client already saw).
pub async fn eventually(condition: impl Fn() -> bool) -> bool {
    for _ in 0..500 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}
