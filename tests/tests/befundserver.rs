//! The reference Befundserver as the proxy sees it: the real binary on
//! loopback with a fresh SQLite database, set up through its own CLI, and
//! driven over HTTP/1.1 with the identity headers the proxy would forward for
//! real certificates issued by a test CA.

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::JoinHandle;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use befund_tests::befundserver::identity::{CertSerial, Fingerprint};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, COOKIE, HOST, SET_COOKIE};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SerialNumber};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_befundserver");
const SECRET: &str = "7d1f0c9a4be85e2361f0a7c4d9b28e65";
const SECRET_HEADER: &str = "x-befund-proxy-auth";
const WEBER_PASSWORD: &str = "Stethoskop-7";
const BRANDT_PASSWORD: &str = "Reflexhammer-3";

// === certificates ===

/// A certificate authority that issues client certificates.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's subject as the proxy forwards it (RFC 4514, most specific first).
    dn: &'static str,
}

impl Ca {
    fn new(org: &'static str, dn: &'static str) -> Self {
        let key = KeyPair::generate().expect("CA key generation must work");
        let mut params = CertificateParams::new(vec![]).expect("empty SAN list is valid");
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
        params
            .distinguished_name
            .push(DnType::CommonName, "Befund Test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Self {
            issuer: Issuer::new(params, key),
            dn,
        }
    }

    fn issue(&self, common_name: &str, serial: &[u8]) -> Cert {
        let key = KeyPair::generate().expect("leaf key generation must work");
        let mut params = CertificateParams::new(vec![]).expect("empty SAN list is valid");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.serial_number = Some(SerialNumber::from_slice(serial));
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signing a leaf must work");
        Cert {
            der: cert.der().to_vec(),
            issuer: self.dn.to_owned(),
            subject: format!("CN={common_name}"),
        }
    }
}

/// A client certificate as the proxy sees it after verification.
#[derive(Clone)]
struct Cert {
    der: Vec<u8>,
    issuer: String,
    subject: String,
}

impl Cert {
    fn fingerprint(&self) -> String {
        Fingerprint::of_der(&self.der).to_string()
    }

    /// Serial as the contract spells it, read from the DER like the proxy does.
    fn serial(&self) -> String {
        let (_, cert) =
            x509_parser::parse_x509_certificate(&self.der).expect("test certificate must parse");
        CertSerial::from_be_bytes(cert.raw_serial()).to_string()
    }

    /// Every identity header the proxy adds for this certificate.
    fn identity_headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("client-cert", format!(":{}:", STANDARD.encode(&self.der))),
            ("x-client-cert-subject", self.subject.clone()),
            ("x-client-cert-issuer", self.issuer.clone()),
            ("x-client-cert-serial", self.serial()),
            ("x-client-cert-fingerprint", self.fingerprint()),
            ("x-client-cert-not-after", "2027-12-04T16:00:00Z".to_owned()),
            ("x-forwarded-for", "198.51.100.23".to_owned()),
            ("x-forwarded-proto", "https".to_owned()),
            ("x-forwarded-host", "befunde.labor.example".to_owned()),
        ]
    }
}

/// What the proxy would send for `cert`: the secret plus identity headers.
fn via_proxy(cert: &Cert) -> Vec<(&'static str, String)> {
    let mut headers = cert.identity_headers();
    headers.push((SECRET_HEADER, SECRET.to_owned()));
    headers
}

/// `headers` without the named ones.
fn without(
    mut headers: Vec<(&'static str, String)>,
    names: &[&str],
) -> Vec<(&'static str, String)> {
    headers.retain(|(name, _)| !names.contains(name));
    headers
}

/// `headers` with one value replaced.
fn replaced(
    mut headers: Vec<(&'static str, String)>,
    name: &'static str,
    value: &str,
) -> Vec<(&'static str, String)> {
    headers.retain(|(n, _)| *n != name);
    headers.push((name, value.to_owned()));
    headers
}

// === the lab: database, CLI, server ===

/// A database with two physicians and their reports, and the server on it:
/// Dr. Weber is bound by fingerprint, Dr. Brandt by issuer + serial.
struct Lab {
    dir: tempfile::TempDir,
    db: PathBuf,
    ca: Ca,
    weber: Cert,
    brandt: Cert,
    brandt_report: i64,
    server: Server,
    runtime: tokio::runtime::Runtime,
}

impl Lab {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir must be creatable");
        let db = dir.path().join("befund.sqlite");
        let ca = Ca::new("Labor Beispiel", "CN=Befund Test CA,O=Labor Beispiel");
        let weber = ca.issue("Dr. Weber", &[0x5f, 0x3a, 0x09, 0xc2]);
        let brandt = ca.issue("Dr. Brandt", &[0x9c, 0x01, 0x7e, 0x44]);

        cli(&["init", "--db", path(&db)]);
        let weber_pw = write(dir.path(), "weber.pw", &format!("{WEBER_PASSWORD}\n"));
        let brandt_pw = write(dir.path(), "brandt.pw", &format!("{BRANDT_PASSWORD}\n"));
        cli(&[
            "add-user",
            "--db",
            path(&db),
            "--username",
            "weber",
            "--password-file",
            path(&weber_pw),
            "--cert-fingerprint",
            &weber.fingerprint(),
        ]);
        cli(&[
            "add-user",
            "--db",
            path(&db),
            "--username",
            "brandt",
            "--password-file",
            path(&brandt_pw),
            "--cert-issuer",
            &brandt.issuer,
            "--cert-serial",
            &brandt.serial(),
        ]);
        cli(&["seed-demo", "--db", path(&db), "--username", "weber"]);
        let added = cli(&[
            "add-report",
            "--db",
            path(&db),
            "--username",
            "brandt",
            "--title",
            "Gerinnung",
            "--body",
            "Quick im Zielbereich.",
            "--patient",
            "PSN-BRA-0007",
            "--date",
            "2026-11-30",
            "--analyte",
            "INR=2.4 - 2.0-3.0",
            "--analyte",
            "Quick=34 % 70-120",
        ]);
        let brandt_report = report_id(&added);

        let secret_file = write(dir.path(), "proxy-secret", &format!("{SECRET}\n"));
        let server = Server::start(&db, &secret_file);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test runtime must start");
        Self {
            dir,
            db,
            ca,
            weber,
            brandt,
            brandt_report,
            server,
            runtime,
        }
    }

    fn get(&self, target: &str, headers: &[(&str, String)]) -> Reply {
        self.send(Method::GET, target, headers, None)
    }

    fn post_form(&self, target: &str, headers: &[(&str, String)], form: &[(&str, &str)]) -> Reply {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.send(Method::POST, target, headers, Some(body))
    }

    fn login(&self, username: &str, password: &str, headers: &[(&str, String)]) -> Reply {
        self.post_form(
            "/login",
            headers,
            &[("username", username), ("password", password)],
        )
    }

    /// Logs in and returns the `Cookie` header to send afterwards.
    fn session(&self, username: &str, password: &str, cert: &Cert) -> (&'static str, String) {
        let reply = self.login(username, password, &via_proxy(cert));
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "login of {username} must succeed: {}",
            reply.body
        );
        (COOKIE.as_str(), reply.session_cookie())
    }

    fn send(
        &self,
        method: Method,
        target: &str,
        headers: &[(&str, String)],
        body: Option<String>,
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(target)
            .header(HOST, self.server.addr.to_string());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("test request must be valid");
        self.runtime.block_on(exchange(self.server.addr, request))
    }

    /// Stops the server and returns everything it logged.
    fn logs(self) -> String {
        self.server.stop()
    }
}

/// One HTTP/1.1 exchange on a fresh connection.
async fn exchange(addr: SocketAddr, request: Request<Full<Bytes>>) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("befundserver must accept connections");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake must work");
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .expect("befundserver must answer");
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .expect("response body must arrive")
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(body.to_vec()).expect("response body must be UTF-8"),
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn set_cookie(&self) -> &str {
        self.headers
            .get(SET_COOKIE)
            .expect("response must set a cookie")
            .to_str()
            .expect("Set-Cookie must be ASCII")
    }

    /// `name=value` of the session cookie, as a client sends it back.
    fn session_cookie(&self) -> String {
        self.set_cookie()
            .split(';')
            .next()
            .expect("Set-Cookie has a name=value part")
            .to_owned()
    }
}

/// The running `befundserver serve`; killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: Option<JoinHandle<String>>,
}

impl Server {
    fn start(db: &Path, secret_file: &Path) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--db", path(db), "--listen", "127.0.0.1:0"])
            .args(["--proxy-secret-file", path(secret_file)])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("befundserver must start");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let stderr = std::thread::spawn(move || {
            let mut logs = String::new();
            let _ = stderr.read_to_string(&mut logs);
            logs
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout is piped"))
            .read_line(&mut line)
            .expect("befundserver must print its address");
        let parsed = line.trim().parse();
        let mut server = Self {
            child,
            addr: "127.0.0.1:0".parse().expect("valid address"),
            stderr: Some(stderr),
        };
        match parsed {
            Ok(addr) => server.addr = addr,
            Err(_) => panic!(
                "befundserver printed {line:?}, not its address; logs:\n{}",
                server.stop()
            ),
        }
        server
    }

    /// Kills the server and returns its log output. Log lines are written
    /// before the response they belong to is sent, so all are there.
    fn stop(mut self) -> String {
        self.kill();
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, contents).expect("temp file must be writable");
    file
}

/// Runs a CLI command that must succeed; returns its stdout.
fn cli(args: &[&str]) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = run_cli(args);
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    assert!(
        status.success(),
        "befundserver {args:?} failed: {}",
        String::from_utf8_lossy(&stderr)
    );
    stdout
}

fn run_cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("befundserver CLI must run")
}

/// The id in `report N added for ...`.
fn report_id(cli_output: &str) -> i64 {
    cli_output
        .split_whitespace()
        .nth(1)
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("unexpected add-report output {cli_output:?}"))
}

fn ids(list: &Value) -> Vec<i64> {
    list["reports"]
        .as_array()
        .expect("reports is a list")
        .iter()
        .map(|r| r["id"].as_i64().expect("report id is a number"))
        .collect()
}

// === tests ===

#[test]
fn password_and_bound_certificate_open_a_session_with_own_reports() {
    let lab = Lab::start();

    let login = lab.login("weber", WEBER_PASSWORD, &via_proxy(&lab.weber));
    let set_cookie = login.set_cookie().to_owned();
    let cookie = (COOKIE.as_str(), login.session_cookie());
    let mut headers = via_proxy(&lab.weber);
    headers.push(cookie);
    let list = lab.get("/reports", &headers).json();
    let first = ids(&list)[0];
    let report = lab.get(&format!("/reports/{first}"), &headers);

    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(login.json()["username"], "weber");
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(
            set_cookie.contains(attribute),
            "{set_cookie} lacks {attribute}"
        );
    }
    assert_eq!(list["username"], "weber");
    assert_eq!(
        ids(&list).len(),
        3,
        "weber has the three demo reports: {list}"
    );
    assert!(!ids(&list).contains(&lab.brandt_report));
    assert_eq!(report.status, StatusCode::OK);
    assert!(!report.json()["analytes"].as_array().unwrap().is_empty());
    assert!(
        report.json()["patient"]
            .as_str()
            .unwrap()
            .starts_with("PSN-WEB-")
    );
}

#[test]
fn browsers_get_html_pages() {
    let lab = Lab::start();
    let mut headers = via_proxy(&lab.brandt);
    headers.push((
        "accept",
        "text/html,application/xhtml+xml,*/*;q=0.8".to_owned(),
    ));

    let login = lab.post_form(
        "/login",
        &headers,
        &[("username", "brandt"), ("password", BRANDT_PASSWORD)],
    );
    headers.push((COOKIE.as_str(), login.session_cookie()));
    let page = lab.get(&format!("/reports/{}", lab.brandt_report), &headers);

    assert_eq!(login.status, StatusCode::SEE_OTHER);
    assert_eq!(login.headers["location"], "/reports");
    assert!(
        page.headers[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.body.contains("<td>INR</td><td>2.4</td>"),
        "{}",
        page.body
    );
}

#[test]
fn wrong_password_is_refused_and_logged_without_the_password() {
    let lab = Lab::start();

    let reply = lab.login("weber", "Stethoskop-8", &via_proxy(&lab.weber));
    let logs = lab.logs();

    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.body, "login failed\n");
    assert!(reply.headers.get(SET_COOKIE).is_none());
    assert!(logs.contains("reason=bad_password"), "{logs}");
    assert!(
        !logs.contains("Stethoskop-8"),
        "password leaked into the log:\n{logs}"
    );
}

#[test]
fn right_password_with_another_physicians_certificate_is_refused() {
    let lab = Lab::start();

    let reply = lab.login("weber", WEBER_PASSWORD, &via_proxy(&lab.brandt));
    let logs = lab.logs();

    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.body, "login failed\n",
        "the answer must not name the failed factor"
    );
    assert!(logs.contains("reason=identity_mismatch"), "{logs}");
    assert!(
        !logs.contains(WEBER_PASSWORD),
        "password leaked into the log:\n{logs}"
    );
}

#[test]
fn unknown_user_gets_the_same_answer_as_a_wrong_password() {
    let lab = Lab::start();

    let unknown = lab.login("roth", WEBER_PASSWORD, &via_proxy(&lab.weber));
    let wrong = lab.login("weber", "falsch", &via_proxy(&lab.weber));
    let logs = lab.logs();

    assert_eq!((unknown.status, &unknown.body), (wrong.status, &wrong.body));
    assert!(logs.contains("reason=unknown_user"), "{logs}");
}

#[test]
fn requests_without_the_proxy_secret_are_refused_even_with_identity_headers() {
    let lab = Lab::start();
    let forged = lab.weber.identity_headers();
    let wrong_secret = replaced(via_proxy(&lab.weber), SECRET_HEADER, &SECRET.to_uppercase());
    let session = lab.session("weber", WEBER_PASSWORD, &lab.weber);

    let login = lab.login("weber", WEBER_PASSWORD, &forged);
    let login_bad = lab.login("weber", WEBER_PASSWORD, &wrong_secret);
    let mut with_session = forged.clone();
    with_session.push(session.clone());
    let list = lab.get("/reports", &with_session);
    let form = lab.get("/", &[]);
    let health = lab.get("/healthz", &[]);
    let logs = lab.logs();

    for reply in [&login, &login_bad, &list, &form] {
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert!(reply.headers.get(SET_COOKIE).is_none());
    }
    assert_eq!(health.status, StatusCode::OK, "readiness needs no secret");
    assert!(logs.contains("reason=missing_proxy_secret"), "{logs}");
    assert!(logs.contains("reason=bad_proxy_secret"), "{logs}");
    assert!(
        !logs.contains(SECRET),
        "proxy secret leaked into the log:\n{logs}"
    );
}

#[test]
fn login_without_identity_headers_is_refused() {
    let lab = Lab::start();
    let no_cert = without(via_proxy(&lab.weber), &["client-cert"]);
    let no_fingerprint = without(via_proxy(&lab.weber), &["x-client-cert-fingerprint"]);
    let no_serial = without(via_proxy(&lab.brandt), &["x-client-cert-serial"]);

    let replies = [
        lab.login("weber", WEBER_PASSWORD, &no_cert),
        lab.login("weber", WEBER_PASSWORD, &no_fingerprint),
        lab.login("brandt", BRANDT_PASSWORD, &no_serial),
    ];
    let logs = lab.logs();

    for reply in &replies {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(reply.headers.get(SET_COOKIE).is_none());
    }
    assert_eq!(logs.matches("reason=missing_identity").count(), 3, "{logs}");
}

#[test]
fn fingerprint_that_is_not_the_forwarded_certificates_is_refused() {
    let lab = Lab::start();
    // Dr. Brandt's certificate claiming Dr. Weber's fingerprint.
    let claimed = replaced(
        via_proxy(&lab.brandt),
        "x-client-cert-fingerprint",
        &lab.weber.fingerprint(),
    );
    // Dr. Brandt's certificate with a serial it does not have.
    let wrong_serial = replaced(via_proxy(&lab.brandt), "x-client-cert-serial", "9c017e45");

    let by_fingerprint = lab.login("weber", WEBER_PASSWORD, &claimed);
    let by_serial = lab.login("brandt", BRANDT_PASSWORD, &wrong_serial);
    let logs = lab.logs();

    assert_eq!(by_fingerprint.status, StatusCode::UNAUTHORIZED);
    assert_eq!(by_serial.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        logs.matches("reason=inconsistent_identity").count(),
        2,
        "{logs}"
    );
}

#[test]
fn another_physicians_report_id_is_not_found() {
    let lab = Lab::start();
    let mut headers = via_proxy(&lab.weber);
    headers.push(lab.session("weber", WEBER_PASSWORD, &lab.weber));

    let theirs = lab.get(&format!("/reports/{}", lab.brandt_report), &headers);
    let missing = lab.get("/reports/999999", &headers);

    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    assert_eq!(
        theirs.body, missing.body,
        "another's report must look like a missing one"
    );
    assert!(!theirs.body.contains("Gerinnung"));
}

#[test]
fn session_cookie_replayed_with_another_certificate_is_refused() {
    let lab = Lab::start();
    let cookie = lab.session("weber", WEBER_PASSWORD, &lab.weber);
    let mut stolen = via_proxy(&lab.brandt);
    stolen.push(cookie.clone());
    let mut own = via_proxy(&lab.weber);
    own.push(cookie);
    // Issuer + serial still match this one, but it is not the certificate
    // that logged in.
    let twin = lab.ca.issue("Dr. Brandt", &[0x9c, 0x01, 0x7e, 0x44]);
    let mut twin_headers = via_proxy(&twin);
    twin_headers.push(lab.session("brandt", BRANDT_PASSWORD, &lab.brandt));

    let replayed = lab.get("/reports", &stolen);
    let replayed_by_twin = lab.get("/reports", &twin_headers);
    let still_own = lab.get("/reports", &own);
    let logs = lab.logs();

    assert_eq!(replayed.status, StatusCode::UNAUTHORIZED);
    assert!(!replayed.body.contains("PSN-"));
    assert_eq!(replayed_by_twin.status, StatusCode::UNAUTHORIZED);
    assert_eq!(still_own.status, StatusCode::OK);
    assert_eq!(
        logs.matches("reason=identity_mismatch").count(),
        2,
        "{logs}"
    );
}

#[test]
fn issuer_and_serial_binding_admits_only_that_issuers_certificate() {
    let lab = Lab::start();
    // Same subject and serial, but from a CA the lab did not bind.
    let rogue_ca = Ca::new("Fremdlabor", "CN=Befund Test CA,O=Fremdlabor");
    let imposter = rogue_ca.issue("Dr. Brandt", &[0x9c, 0x01, 0x7e, 0x44]);
    let reissued = lab.ca.issue("Dr. Brandt", &[0x9c, 0x01, 0x7e, 0x44]);

    let mut headers = via_proxy(&lab.brandt);
    headers.push(lab.session("brandt", BRANDT_PASSWORD, &lab.brandt));
    let list = lab.get("/reports", &headers).json();
    let by_imposter = lab.login("brandt", BRANDT_PASSWORD, &via_proxy(&imposter));
    let by_reissued = lab.login("brandt", BRANDT_PASSWORD, &via_proxy(&reissued));

    assert_eq!(ids(&list), vec![lab.brandt_report]);
    assert_eq!(by_imposter.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        by_reissued.status,
        StatusCode::OK,
        "issuer + serial names the certificate whatever its key"
    );
}

#[test]
fn logout_ends_the_session() {
    let lab = Lab::start();
    let mut headers = via_proxy(&lab.weber);
    headers.push(lab.session("weber", WEBER_PASSWORD, &lab.weber));

    let logout = lab.send(Method::POST, "/logout", &headers, None);
    let after = lab.get("/reports", &headers);
    let logs = lab.logs();

    assert_eq!(logout.status, StatusCode::OK);
    assert!(logout.set_cookie().contains("Max-Age=0"));
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert!(logs.contains("reason=unknown_session"), "{logs}");
}

#[test]
fn reports_without_a_session_are_refused() {
    let lab = Lab::start();

    let reply = lab.get("/reports", &via_proxy(&lab.weber));
    let forged = lab.get(
        "/reports",
        &[
            via_proxy(&lab.weber),
            vec![("cookie", "__Host-befund-session=AAAA".to_owned())],
        ]
        .concat(),
    );

    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
}

#[test]
fn add_user_refuses_a_certificate_bound_to_another_physician() {
    let lab = Lab::start();
    let password = write(lab.dir.path(), "roth.pw", "Otoskop-1\n");

    let output = run_cli(&[
        "add-user",
        "--db",
        path(&lab.db),
        "--username",
        "roth",
        "--password-file",
        path(&password),
        "--cert-fingerprint",
        &lab.weber.fingerprint(),
    ]);

    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("bound to certificate"));
}

#[test]
fn serve_refuses_a_short_proxy_secret() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("befund.sqlite");
    cli(&["init", "--db", path(&db)]);
    let secret = write(dir.path(), "secret", "kurz\n");

    let output = run_cli(&[
        "serve",
        "--db",
        path(&db),
        "--listen",
        "127.0.0.1:0",
        "--proxy-secret-file",
        path(&secret),
    ]);

    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least 16"));
}
