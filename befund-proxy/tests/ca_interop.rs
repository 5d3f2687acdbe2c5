//! The internal CA against the real `openssl` command: what `befundctl`
//! issues, revokes and exports must be read and accepted by OpenSSL exactly
//! as a TLS stack or Windows would. Every test runs the built `befundctl`
//! binary in its own temporary directory.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

const BEFUNDCTL: &str = env!("CARGO_BIN_EXE_befundctl");

/// A temporary CA directory with helpers to run commands against it.
struct Lab {
    tmp: tempfile::TempDir,
}

impl Lab {
    /// A new, empty working directory.
    fn empty() -> Self {
        require_openssl();
        Self {
            tmp: tempfile::tempdir().expect("temporary directory"),
        }
    }

    /// A working directory with a CA created by `befundctl ca init`.
    fn with_ca(extra: &[&str]) -> Self {
        let lab = Self::empty();
        let mut args = vec!["ca", "init", "--org", "Labor Nord"];
        args.extend_from_slice(extra);
        lab.ok(&args);
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn ca_dir(&self) -> PathBuf {
        self.path("ca")
    }

    fn ca_file(&self, name: &str) -> PathBuf {
        self.ca_dir().join(name)
    }

    /// Runs `befundctl ARGS --dir CA_DIR`.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(BEFUNDCTL)
            .args(args)
            .arg("--dir")
            .arg(self.ca_dir())
            .env_remove("BEFUND_CA_DIR")
            .output()
            .expect("befundctl runs")
    }

    /// Runs befundctl and requires success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "befundctl {args:?} failed: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Runs befundctl and requires failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "befundctl {args:?} should have failed but printed: {}",
            text(&out.stdout)
        );
        text(&out.stderr)
    }

    /// Issues a client certificate; returns (serial, certificate path).
    fn issue_client(&self, cn: &str, account: &str, extra: &[&str]) -> (String, PathBuf) {
        let mut args = vec!["cert", "issue", "--cn", cn, "--user", account];
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        (
            field(&out, "serial:"),
            PathBuf::from(field(&out, "certificate:")),
        )
    }

    fn registry_serials(&self) -> Vec<String> {
        let json = self.ok(&["cert", "list", "--json"]);
        let records: Vec<serde_json::Value> = serde_json::from_str(&json).expect("list --json");
        records
            .iter()
            .map(|r| r["serial"].as_str().expect("serial").to_owned())
            .collect()
    }
}

fn require_openssl() {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "these tests need the openssl CLI: apt-get install openssl"
    );
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs")
}

fn openssl_ok(args: &[&str]) -> String {
    let out = openssl(args);
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The value after `label` on the line that starts with it.
fn field(output: &str, label: &str) -> String {
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .map(|value| {
            value
                .trim()
                .split(" (")
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_else(|| panic!("no `{label}` in:\n{output}"))
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .expect("file exists")
        .permissions()
        .mode()
        & 0o777
}

/// Parses a PEM CRL; returns (number, revoked serials in lowercase hex,
/// thisUpdate, nextUpdate as Unix seconds).
fn parse_crl(path: &Path) -> (u64, Vec<String>, i64, i64) {
    let pem = fs::read(path).expect("CRL file");
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem).expect("PEM CRL");
    let (_, crl) = CertificateRevocationList::from_der(&block.contents).expect("DER CRL");
    let number = crl
        .crl_number()
        .expect("CRL number present")
        .to_u64_digits()
        .first()
        .copied()
        .unwrap_or(0);
    let serials = crl
        .iter_revoked_certificates()
        .map(|r| r.raw_serial_as_string().replace(':', ""))
        .collect();
    let next = crl.next_update().expect("nextUpdate present").timestamp();
    (number, serials, crl.last_update().timestamp(), next)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        .try_into()
        .expect("fits i64")
}

#[test]
fn issued_client_and_server_certificates_verify_with_openssl_for_their_purpose_only() {
    let lab = Lab::with_ca(&[]);
    let ca = lab.ca_file("ca.crt");
    let (serial, client) = lab.issue_client("ARZT0001", "dr.mueller", &[]);
    let server_out = lab.ok(&[
        "cert",
        "server",
        "--dns",
        "befund.labor.example",
        "--ip",
        "127.0.0.1",
    ]);
    let server = PathBuf::from(field(&server_out, "certificate:"));
    let chain = PathBuf::from(field(&server_out, "chain:"));

    openssl_ok(&["verify", "-CAfile", p(&ca), p(&client)]);
    openssl_ok(&[
        "verify",
        "-CAfile",
        p(&ca),
        "-purpose",
        "sslclient",
        p(&client),
    ]);
    openssl_ok(&[
        "verify",
        "-CAfile",
        p(&ca),
        "-purpose",
        "sslserver",
        p(&server),
    ]);
    assert!(
        !openssl(&[
            "verify",
            "-CAfile",
            p(&ca),
            "-purpose",
            "sslserver",
            p(&client)
        ])
        .status
        .success()
    );
    assert!(
        !openssl(&[
            "verify",
            "-CAfile",
            p(&ca),
            "-purpose",
            "sslclient",
            p(&server)
        ])
        .status
        .success()
    );

    // The chain file is the server certificate followed by the CA.
    let chain_text = fs::read_to_string(&chain).unwrap();
    assert_eq!(chain_text.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(chain_text.starts_with(&fs::read_to_string(&server).unwrap()));

    // Serial and fingerprint as the identity contract forwards them.
    let openssl_serial = openssl_ok(&["x509", "-in", p(&client), "-noout", "-serial"]);
    assert_eq!(
        openssl_serial.trim(),
        format!("serial={}", serial.to_uppercase())
    );
    let openssl_fp = openssl_ok(&[
        "x509",
        "-in",
        p(&client),
        "-noout",
        "-fingerprint",
        "-sha256",
    ]);
    let expected_fp = openssl_fp
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_lowercase();
    let shown = lab.ok(&["cert", "show", &serial]);
    assert_eq!(field(&shown, "SHA-256:"), expected_fp);
    assert_eq!(field(&shown, "account:"), "dr.mueller");
    assert_eq!(field(&shown, "key type:"), "RSA 2048");
    assert_eq!(field(&shown, "status:"), "valid");

    // Keys are private, certificates are not.
    let key = PathBuf::from(field(&lab.ok(&["cert", "show", "ARZT0001"]), "key:"));
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&client), 0o644);
    assert_eq!(mode(&lab.ca_file("ca.key")), 0o600);
    assert_eq!(mode(&lab.ca_file("registry.sqlite3")), 0o600);
}

#[test]
fn client_certificate_has_client_auth_only_and_sha256_or_better_signature() {
    let lab = Lab::with_ca(&["--key", "rsa3072"]);
    let (_, client) = lab.issue_client("ARZT0002", "dr.schmidt", &["--key", "ecdsa-p256"]);

    let dump = openssl_ok(&["x509", "-in", p(&client), "-noout", "-text"]);

    assert!(
        dump.contains("Signature Algorithm: sha256WithRSAEncryption"),
        "{dump}"
    );
    assert!(dump.contains("TLS Web Client Authentication"), "{dump}");
    assert!(!dump.contains("TLS Web Server Authentication"), "{dump}");
    assert!(dump.contains("CA:FALSE"), "{dump}");
    assert!(dump.contains("Digital Signature"), "{dump}");
    assert!(dump.contains("NIST CURVE: P-256"), "{dump}");
    let ca_dump = openssl_ok(&["x509", "-in", p(&lab.ca_file("ca.crt")), "-noout", "-text"]);
    assert!(ca_dump.contains("Public-Key: (3072 bit)"), "{ca_dump}");
    assert!(ca_dump.contains("CA:TRUE"), "{ca_dump}");
    openssl_ok(&["verify", "-CAfile", p(&lab.ca_file("ca.crt")), p(&client)]);
}

#[test]
fn revoked_serial_is_on_the_crl_openssl_reads_and_stays_there_across_reissues() {
    let lab = Lab::with_ca(&[]);
    let ca = lab.ca_file("ca.crt");
    let (revoked, revoked_cert) = lab.issue_client("ARZT0003", "dr.weber", &[]);
    let (kept, kept_cert) = lab.issue_client("ARZT0004", "dr.wagner", &[]);

    let out = lab.ok(&["cert", "revoke", "ARZT0003", "--reason", "key-compromise"]);
    assert!(out.contains("wrote CRL number 2"), "{out}");

    let crl = lab.ca_file("crl.pem");
    let dump = openssl_ok(&["crl", "-in", p(&crl), "-noout", "-text"]);
    assert!(dump.contains(&revoked.to_uppercase()), "{dump}");
    assert!(!dump.contains(&kept.to_uppercase()), "{dump}");
    assert!(dump.contains("Key Compromise"), "{dump}");
    let verified = openssl(&["crl", "-in", p(&crl), "-noout", "-CAfile", p(&ca)]);
    assert!(
        text(&verified.stderr).contains("verify OK"),
        "{}",
        text(&verified.stderr)
    );

    let check = |cert: &Path, crl: &Path| {
        openssl(&[
            "verify",
            "-crl_check",
            "-CAfile",
            p(&ca),
            "-CRLfile",
            p(crl),
            p(cert),
        ])
    };
    let refused = check(&revoked_cert, &crl);
    assert!(!refused.status.success());
    let message = text(&refused.stdout) + &text(&refused.stderr);
    assert!(message.contains("certificate revoked"), "{message}");
    assert!(check(&kept_cert, &crl).status.success());

    // A scheduled re-issue without new revocations keeps the entry.
    let reissued = lab.path("reissued.pem");
    lab.ok(&["crl", "--out", p(&reissued), "--days", "2"]);
    let (number, serials, this_update, next_update) = parse_crl(&reissued);
    assert_eq!(number, 3);
    assert_eq!(serials, vec![revoked.clone()]);
    assert!(this_update <= now() && now() < next_update);
    assert!(next_update - this_update == 2 * 86_400);
    assert!(!check(&revoked_cert, &reissued).status.success());

    // Revoking again is refused and changes nothing.
    let err = lab.fails(&["cert", "revoke", &revoked, "--reason", "superseded"]);
    assert!(err.contains("already revoked"), "{err}");
    assert_eq!(parse_crl(&crl).0, 2);
}

#[test]
fn crl_numbers_strictly_increase_and_crl_names_the_ca_key() {
    let lab = Lab::with_ca(&[]);
    let out = lab.path("crl.pem");
    let mut numbers = vec![parse_crl(&lab.ca_file("crl.pem")).0];

    for _ in 0..3 {
        lab.ok(&["crl", "--out", p(&out)]);
        numbers.push(parse_crl(&out).0);
    }

    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    let ca_dump = openssl_ok(&[
        "x509",
        "-in",
        p(&lab.ca_file("ca.crt")),
        "-noout",
        "-ext",
        "subjectKeyIdentifier",
    ]);
    let ski = ca_dump.lines().nth(1).expect("SKI line").trim().to_owned();
    let crl_dump = openssl_ok(&["crl", "-in", p(&out), "-noout", "-text"]);
    assert!(crl_dump.contains("Authority Key Identifier"), "{crl_dump}");
    assert!(
        crl_dump.contains(&ski),
        "CRL AKI is not the CA's SKI {ski}:\n{crl_dump}"
    );
}

#[test]
fn pkcs12_default_export_uses_aes_and_legacy_export_opens_with_openssl_legacy() {
    let lab = Lab::with_ca(&[]);
    lab.issue_client("ARZT0005", "dr.becker", &[]);
    let password = lab.path("password.txt");
    fs::write(&password, "Pr4xis-Geheimnis\n").unwrap();
    let passin = format!("file:{}", p(&password));

    let modern = lab.path("arzt5.p12");
    lab.ok(&[
        "cert",
        "export",
        "ARZT0005",
        "--p12",
        p(&modern),
        "--password-file",
        p(&password),
    ]);
    let info = openssl(&[
        "pkcs12",
        "-info",
        "-nokeys",
        "-in",
        p(&modern),
        "-passin",
        &passin,
    ]);
    assert!(info.status.success(), "{}", text(&info.stderr));
    let details = text(&info.stderr) + &text(&info.stdout);
    assert!(details.contains("AES-256-CBC"), "{details}");
    assert!(details.contains("PBKDF2"), "{details}");
    assert!(details.contains("hmacWithSHA256"), "{details}");
    assert_eq!(
        details.matches("BEGIN CERTIFICATE").count(),
        2,
        "leaf and CA: {details}"
    );
    let key_info = openssl_ok(&[
        "pkcs12",
        "-in",
        p(&modern),
        "-passin",
        &passin,
        "-nocerts",
        "-nodes",
    ]);
    assert!(key_info.contains("friendlyName: ARZT0005"), "{key_info}");
    assert_eq!(mode(&modern), 0o600);
    let wrong = lab.path("wrong.txt");
    fs::write(&wrong, "falsch").unwrap();
    let wrong_passin = format!("file:{}", p(&wrong));
    assert!(
        !openssl(&[
            "pkcs12",
            "-info",
            "-nokeys",
            "-in",
            p(&modern),
            "-passin",
            &wrong_passin
        ])
        .status
        .success()
    );

    let script =
        fs::read_to_string(lab.path("arzt5.p12.ps1")).expect("import script next to the file");
    assert!(script.contains("Import-PfxCertificate"));
    assert!(script.contains("Cert:\\CurrentUser\\My"));
    assert!(!script.contains("-Exportable"));
    assert!(!script.contains("Pr4xis-Geheimnis"));

    let legacy = lab.path("arzt5-legacy.p12");
    lab.ok(&[
        "cert",
        "export",
        "ARZT0005",
        "--p12",
        p(&legacy),
        "--password-file",
        p(&password),
        "--legacy",
    ]);
    let info = openssl(&[
        "pkcs12",
        "-info",
        "-nokeys",
        "-legacy",
        "-in",
        p(&legacy),
        "-passin",
        &passin,
    ]);
    assert!(info.status.success(), "{}", text(&info.stderr));
    let details = text(&info.stderr) + &text(&info.stdout);
    assert!(details.contains("3-KeyTripleDES-CBC"), "{details}");
    assert!(details.contains("MAC: sha1"), "{details}");
}

#[test]
fn pkcs12_export_with_an_empty_password_is_refused() {
    let lab = Lab::with_ca(&[]);
    lab.issue_client("ARZT0006", "dr.hoffmann", &[]);

    for (name, contents) in [("empty.txt", ""), ("newline.txt", "\n")] {
        let password = lab.path(name);
        fs::write(&password, contents).unwrap();
        let out = lab.path("refused.p12");

        let err = lab.fails(&[
            "cert",
            "export",
            "ARZT0006",
            "--p12",
            p(&out),
            "--password-file",
            p(&password),
        ]);

        assert!(err.contains("is empty"), "{err}");
        assert!(!out.exists());
        assert!(!lab.path("refused.p12.ps1").exists());
    }
}

#[test]
fn sha1_signed_ca_is_refused_and_its_sha256_resigned_copy_is_adopted() {
    let lab = Lab::empty();
    let (old_cert, old_key) = (lab.path("old-ca.crt"), lab.path("old-ca.key"));
    openssl_ok(&[
        "req",
        "-x509",
        "-sha1",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3650",
        "-subj",
        "/CN=Easy-RSA CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        p(&old_key),
        "-out",
        p(&old_cert),
    ]);
    // A physician certificate the old CA issued, as installed today.
    let (leaf_key, leaf_csr, leaf) = (
        lab.path("leaf.key"),
        lab.path("leaf.csr"),
        lab.path("leaf.crt"),
    );
    openssl_ok(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=ARZT0099",
        "-keyout",
        p(&leaf_key),
        "-out",
        p(&leaf_csr),
    ]);
    openssl_ok(&[
        "x509",
        "-req",
        "-sha256",
        "-in",
        p(&leaf_csr),
        "-CA",
        p(&old_cert),
        "-CAkey",
        p(&old_key),
        "-CAcreateserial",
        "-days",
        "365",
        "-out",
        p(&leaf),
    ]);

    let err = lab.fails(&["ca", "import", "--cert", p(&old_cert), "--key", p(&old_key)]);
    assert!(err.contains("SHA-1"), "{err}");
    assert!(
        err.contains("-sha256"),
        "the refusal says what to do: {err}"
    );
    assert!(
        !lab.ca_dir().join("ca.key").exists(),
        "a refused import writes nothing"
    );

    // The fix the message gives: same subject and key, signed with SHA-256.
    let resigned = lab.path("ca-sha256.crt");
    openssl_ok(&[
        "x509",
        "-in",
        p(&old_cert),
        "-key",
        p(&old_key),
        "-sha256",
        "-days",
        "3650",
        "-out",
        p(&resigned),
    ]);
    let out = lab.ok(&["ca", "import", "--cert", p(&resigned), "--key", p(&old_key)]);
    assert!(out.contains("imported CA CN=Easy-RSA CA"), "{out}");
    assert_eq!(mode(&lab.ca_file("ca.key")), 0o600);

    // Installed certificates keep working, new ones chain to the same CA.
    let ca = lab.ca_file("ca.crt");
    openssl_ok(&["verify", "-CAfile", p(&ca), p(&leaf)]);
    let (_, new_leaf) = lab.issue_client("ARZT0100", "dr.fischer", &[]);
    openssl_ok(&[
        "verify",
        "-CAfile",
        p(&old_cert),
        "-purpose",
        "sslclient",
        p(&new_leaf),
    ]);
    openssl_ok(&[
        "verify",
        "-CAfile",
        p(&ca),
        "-purpose",
        "sslclient",
        p(&new_leaf),
    ]);
    lab.ok(&["cert", "revoke", "ARZT0100", "--reason", "superseded"]);
    let crl = openssl(&[
        "crl",
        "-in",
        p(&lab.ca_file("crl.pem")),
        "-noout",
        "-CAfile",
        p(&ca),
    ]);
    assert!(
        text(&crl.stderr).contains("verify OK"),
        "{}",
        text(&crl.stderr)
    );
}

#[test]
fn import_refuses_a_key_of_another_ca_and_a_certificate_that_is_no_ca() {
    let lab = Lab::empty();
    let (cert, key, other_key) = (
        lab.path("ca.crt"),
        lab.path("ca.key"),
        lab.path("other.key"),
    );
    openssl_ok(&[
        "req",
        "-x509",
        "-sha256",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=Some CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-keyout",
        p(&key),
        "-out",
        p(&cert),
    ]);
    openssl_ok(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        p(&other_key),
    ]);
    let err = lab.fails(&["ca", "import", "--cert", p(&cert), "--key", p(&other_key)]);
    assert!(err.contains("does not belong"), "{err}");

    let (leaf, leaf_key) = (lab.path("leaf.crt"), lab.path("leaf.key"));
    openssl_ok(&[
        "req",
        "-x509",
        "-sha256",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=not a CA",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-keyout",
        p(&leaf_key),
        "-out",
        p(&leaf),
    ]);
    let err = lab.fails(&["ca", "import", "--cert", p(&leaf), "--key", p(&leaf_key)]);
    assert!(err.contains("CA:TRUE"), "{err}");
    assert!(!lab.ca_dir().join("ca.crt").exists());
}

#[test]
fn eight_parallel_issues_succeed_with_distinct_serials_and_a_consistent_registry() {
    let lab = Lab::with_ca(&[]);
    let dir = lab.ca_dir();

    // Start all eight before waiting for any, so they contend for the registry.
    let children: Vec<_> = (0..8)
        .map(|i| {
            Command::new(BEFUNDCTL)
                .args([
                    "cert",
                    "issue",
                    "--cn",
                    &format!("CON{i:04}"),
                    "--user",
                    &format!("con{i}"),
                ])
                .args(["--key", "ecdsa-p256", "--dir"])
                .arg(&dir)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("befundctl starts")
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|child| child.wait_with_output().expect("befundctl finishes"))
        .collect();

    let mut serials = HashSet::new();
    for out in &outputs {
        assert!(
            out.status.success(),
            "parallel issue failed: {}",
            text(&out.stderr)
        );
        let serial = field(&text(&out.stdout), "serial:");
        assert_eq!(serial.len(), 32);
        assert!(serials.insert(serial), "serial issued twice");
    }
    let registry = lab.registry_serials();
    assert_eq!(registry.len(), 8);
    assert!(serials.iter().all(|s| registry.contains(s)));
    let issued: Vec<_> = fs::read_dir(dir.join("issued")).unwrap().collect();
    assert_eq!(
        issued.len(),
        16,
        "one certificate and one key each, no leftovers"
    );

    let db = rusqlite::Connection::open(dir.join("registry.sqlite3")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn ca_key_readable_by_others_is_refused_with_the_chmod_hint_and_nothing_changes() {
    let lab = Lab::with_ca(&[]);
    let (serial, _) = lab.issue_client("ARZT0007", "dr.schulz", &[]);
    let key = lab.ca_file("ca.key");
    let crl_before = fs::read(lab.ca_file("crl.pem")).unwrap();
    let files_before = fs::read_dir(lab.ca_file("issued")).unwrap().count();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();

    let hint = format!("chmod 600 {}", key.display());
    for args in [
        &["cert", "issue", "--cn", "ARZT0008", "--user", "dr.koch"][..],
        &["cert", "revoke", &serial, "--reason", "superseded"][..],
        &["cert", "server", "--dns", "befund.labor.example"][..],
        &["crl"][..],
    ] {
        let err = lab.fails(args);
        assert!(err.contains(&hint), "{args:?}: {err}");
    }

    assert_eq!(fs::read(lab.ca_file("crl.pem")).unwrap(), crl_before);
    assert_eq!(
        fs::read_dir(lab.ca_file("issued")).unwrap().count(),
        files_before
    );
    assert!(!lab.ca_file("server").exists());
    assert_eq!(lab.registry_serials(), vec![serial.clone()]);
    assert!(
        lab.ok(&["cert", "show", &serial])
            .contains("status:      valid")
    );

    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    lab.ok(&["cert", "issue", "--cn", "ARZT0008", "--user", "dr.koch"]);
}

#[test]
fn missing_ca_key_says_what_to_do() {
    let lab = Lab::with_ca(&[]);
    fs::remove_file(lab.ca_file("ca.key")).unwrap();

    let err = lab.fails(&["cert", "issue", "--cn", "ARZT0009", "--user", "dr.richter"]);

    assert!(err.contains("not found"), "{err}");
    assert!(err.contains("restore it"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn init_refuses_to_overwrite_an_existing_ca() {
    let lab = Lab::with_ca(&[]);
    let key_before = fs::read(lab.ca_file("ca.key")).unwrap();
    let cert_before = fs::read(lab.ca_file("ca.crt")).unwrap();

    let err = lab.fails(&["ca", "init"]);

    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(fs::read(lab.ca_file("ca.key")).unwrap(), key_before);
    assert_eq!(fs::read(lab.ca_file("ca.crt")).unwrap(), cert_before);
    let leftovers: Vec<_> = fs::read_dir(lab.ca_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn parallel_crl_runs_get_distinct_numbers_and_the_newest_crl_stays_published() {
    let lab = Lab::with_ca(&[]);
    let (serial, _) = lab.issue_client("ARZT0010", "dr.klein", &[]);
    lab.ok(&[
        "cert",
        "revoke",
        &serial,
        "--reason",
        "cessation-of-operation",
    ]);

    // Start all six before waiting for any.
    let children: Vec<_> = (0..6)
        .map(|_| {
            Command::new(BEFUNDCTL)
                .arg("crl")
                .arg("--dir")
                .arg(lab.ca_dir())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("befundctl starts")
        })
        .collect();
    let mut numbers = HashSet::new();
    for child in children {
        let out = child.wait_with_output().expect("befundctl finishes");
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let number: u64 = stdout
            .split_whitespace()
            .nth(3)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no CRL number in {stdout}"));
        assert!(numbers.insert(number), "CRL number {number} issued twice");
    }

    let (published, serials, _, _) = parse_crl(&lab.ca_file("crl.pem"));
    assert_eq!(Some(&published), numbers.iter().max());
    assert_eq!(
        published, 8,
        "1 from init, 2 from the revocation, then six more"
    );
    assert_eq!(serials, vec![serial]);
}

#[test]
fn ca_key_never_appears_in_any_output() {
    let lab = Lab::empty();
    let mut outputs = Vec::new();
    let mut run = |args: &[&str]| {
        let out = lab.run(args);
        outputs.push(text(&out.stdout) + &text(&out.stderr));
    };
    run(&["ca", "init"]);
    run(&["cert", "issue", "--cn", "ARZT0011", "--user", "dr.wolf"]);
    run(&["cert", "server", "--dns", "befund.labor.example"]);
    run(&["cert", "list", "--json"]);
    run(&["cert", "show", "ARZT0011"]);
    run(&["cert", "revoke", "ARZT0011", "--reason", "superseded"]);
    run(&["crl"]);
    run(&["ca", "init"]);

    let key_pem = fs::read_to_string(lab.ca_file("ca.key")).unwrap();
    let body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(body.len() > 100);
    for chunk in body.as_bytes().chunks_exact(24) {
        let chunk = std::str::from_utf8(chunk).unwrap();
        for output in &outputs {
            assert!(
                !output.contains(chunk),
                "CA key material in output:\n{output}"
            );
        }
    }
}
