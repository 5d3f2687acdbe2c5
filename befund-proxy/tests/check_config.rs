//! `befund-proxy check-config`: every problem is reported with the
//! configuration file, the key and what is wrong, without starting anything.

mod common;

use std::path::Path;
use std::process::Command;

use befund_proxy::check::check_config;
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose};
use time::{Duration, OffsetDateTime};

use common::pki::{SERVER_NAME, client_params, write_file};
use common::{Options, Setup};

/// Replaces `from` with `to` in the setup's configuration file.
fn edit(setup: &Setup, from: &str, to: &str) {
    let text = std::fs::read_to_string(&setup.config_path).unwrap();
    assert!(text.contains(from), "{from:?} not in the configuration");
    std::fs::write(&setup.config_path, text.replacen(from, to, 1)).unwrap();
}

/// The single error check-config reports.
fn only_error(setup: &Setup) -> String {
    let failed = check_config(&setup.config_path).expect_err("the check fails");
    assert_eq!(failed.errors.len(), 1, "{:?}", failed.errors);
    failed.errors[0].to_string()
}

fn prefix(setup: &Setup, key: &str, file: &Path) -> String {
    format!(
        "{}: key `{key}`: {}: ",
        setup.config_path.display(),
        file.display()
    )
}

#[test]
fn complete_configuration_passes_and_reports_what_it_found() {
    let setup = Setup::new(&Options::default());
    let report = check_config(&setup.config_path).unwrap();
    let text = report.lines.join("\n");
    assert!(
        text.contains("server certificate: CN=befund.test,O=Labor Test,C=DE (RSA 2048)"),
        "{text}"
    );
    assert!(
        text.contains("client CA: CN=Befund Test Root CA,O=Labor Test,C=DE"),
        "{text}"
    );
    assert!(
        text.contains("issuer CN=Befund Test Client CA,O=Labor Test,C=DE, 1 revoked"),
        "{text}"
    );
}

#[test]
fn missing_certificate_file_is_named_with_its_key() {
    let setup = Setup::new(&Options::default());
    let missing = setup.path("nope.pem");
    edit(
        &setup,
        &format!("certificate = {:?}", setup.path("server.pem")),
        &format!("certificate = {missing:?}"),
    );
    let error = only_error(&setup);
    assert!(
        error.starts_with(&prefix(&setup, "tls.certificate", &missing)),
        "{error}"
    );
    assert!(
        error.contains("cannot read the file: No such file or directory"),
        "{error}"
    );
}

#[test]
fn private_key_of_another_certificate_is_rejected() {
    let setup = Setup::new(&Options::default());
    let other = write_file(
        setup.dir.path(),
        "other.key",
        setup.pki.valid.key.serialize_pem().as_bytes(),
        0o600,
    );
    edit(
        &setup,
        &format!("private_key = {:?}", setup.path("server.key")),
        &format!("private_key = {other:?}"),
    );
    assert_eq!(
        only_error(&setup),
        format!(
            "{}the key does not belong to the certificate in {}; give the private key that was issued with that certificate",
            prefix(&setup, "tls.private_key", &other),
            setup.path("server.pem").display()
        )
    );
}

#[test]
fn world_readable_server_key_is_rejected() {
    let setup = Setup::new(&Options::default());
    let key = setup.path("server.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let error = only_error(&setup);
    assert_eq!(
        error,
        format!(
            "{}the file is readable by every user (mode 644); run `chmod o-rwx {}`",
            prefix(&setup, "tls.private_key", &key),
            key.display()
        )
    );
}

#[test]
fn empty_client_ca_bundle_is_rejected() {
    let setup = Setup::new(&Options::default());
    let ca = setup.path("client-ca.pem");
    std::fs::write(&ca, "").unwrap();
    assert_eq!(
        only_error(&setup),
        format!(
            "{}contains no certificate; expected PEM blocks starting with -----BEGIN CERTIFICATE-----",
            prefix(&setup, "tls.client_ca", &ca)
        )
    );
}

#[test]
fn client_ca_bundle_with_a_leaf_certificate_is_rejected() {
    let setup = Setup::new(&Options::default());
    let ca = setup.path("client-ca.pem");
    std::fs::write(
        &ca,
        format!("{}{}", setup.pki.root.cert.pem, setup.pki.valid.pem),
    )
    .unwrap();
    let error = only_error(&setup);
    assert!(
        error.starts_with(&prefix(&setup, "tls.client_ca", &ca)),
        "{error}"
    );
    assert!(
        error.contains(
            "certificate #2 (CN=Dr. Erika Muster,O=Labor Test,C=DE) is not a CA certificate"
        ),
        "{error}"
    );
}

#[test]
fn unparsable_listen_address_names_the_key() {
    let setup = Setup::new(&Options::default());
    edit(
        &setup,
        "listen = [\"127.0.0.1:0\"]",
        "listen = [\"127.0.0.1\"]",
    );
    let error = only_error(&setup);
    assert!(
        error.starts_with(&format!("{}: ", setup.config_path.display())),
        "{error}"
    );
    assert!(
        error.contains("listen") && error.contains("invalid socket address"),
        "{error}"
    );
}

#[test]
fn empty_listen_list_is_rejected() {
    let setup = Setup::new(&Options::default());
    edit(&setup, "listen = [\"127.0.0.1:0\"]", "listen = []");
    assert_eq!(
        only_error(&setup),
        format!(
            "{}: key `tls.listen`: no address to listen on; give at least one, e.g. [\"0.0.0.0:443\"]",
            setup.config_path.display()
        )
    );
}

#[test]
fn rsa_server_key_below_2048_bits_is_rejected() {
    let setup = Setup::new(&Options::default());
    let (cert, key) = (setup.path("small.pem"), setup.path("small.key"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:1024",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=befund.test",
        ])
        .args(["-addext", "subjectAltName=DNS:befund.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    edit(
        &setup,
        &format!("certificate = {:?}", setup.path("server.pem")),
        &format!("certificate = {cert:?}"),
    );
    edit(
        &setup,
        &format!("private_key = {:?}", setup.path("server.key")),
        &format!("private_key = {key:?}"),
    );
    assert_eq!(
        only_error(&setup),
        format!(
            "{}the server certificate has a 1024-bit RSA key; at least 2048 bits are required, issue a new \
             certificate with a larger key or an ECDSA key",
            prefix(&setup, "tls.certificate", &cert)
        )
    );
}

#[test]
fn server_certificate_for_another_name_is_rejected() {
    let setup = Setup::new(&Options::default());
    edit(
        &setup,
        &format!("server_name = \"{SERVER_NAME}\""),
        "server_name = \"befund.other\"",
    );
    let error = only_error(&setup);
    assert!(
        error.starts_with(&prefix(
            &setup,
            "tls.certificate",
            &setup.path("server.pem")
        )),
        "{error}"
    );
    assert!(
        error.contains("the certificate does not name `befund.other` (tls.server_name)"),
        "{error}"
    );
}

#[test]
fn expired_server_certificate_is_rejected() {
    let setup = Setup::new(&Options::default());
    let mut params = CertificateParams::new(vec![SERVER_NAME.to_owned()]).unwrap();
    params.not_before = OffsetDateTime::now_utc() - Duration::days(30);
    params.not_after = OffsetDateTime::now_utc() - Duration::days(1);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let old = setup.pki.root.issue(params);
    let cert = write_file(setup.dir.path(), "old.pem", old.pem.as_bytes(), 0o644);
    let key = write_file(
        setup.dir.path(),
        "old.key",
        old.key.serialize_pem().as_bytes(),
        0o600,
    );
    edit(
        &setup,
        &format!("certificate = {:?}", setup.path("server.pem")),
        &format!("certificate = {cert:?}"),
    );
    edit(
        &setup,
        &format!("private_key = {:?}", setup.path("server.key")),
        &format!("private_key = {key:?}"),
    );
    let error = only_error(&setup);
    assert!(
        error.contains("the server certificate expired on "),
        "{error}"
    );
}

#[test]
fn garbage_crl_file_is_named() {
    let setup = Setup::new(&Options::default());
    let crl = setup.path("client-ca.crl");
    std::fs::write(&crl, "not a crl\n").unwrap();
    assert_eq!(
        only_error(&setup),
        format!(
            "{}contains no CRL; expected DER or a PEM block -----BEGIN X509 CRL-----",
            prefix(&setup, "tls.crls", &crl)
        )
    );
}

#[test]
fn binary_crl_that_is_no_crl_is_named() {
    let setup = Setup::new(&Options::default());
    let crl = setup.path("client-ca.crl");
    std::fs::write(&crl, setup.pki.valid.der.as_ref()).unwrap();
    let error = only_error(&setup);
    assert!(
        error.starts_with(&prefix(&setup, "tls.crls", &crl)),
        "{error}"
    );
    assert!(error.contains("not a valid X.509 CRL"), "{error}");
}

#[test]
fn short_or_world_readable_secret_is_rejected() {
    let setup = Setup::new(&Options::default());
    let secret = setup.path("secret");
    std::fs::write(&secret, "too-short\n").unwrap();
    assert_eq!(
        only_error(&setup),
        format!(
            "{}the secret has 9 bytes, at least 32 are required; create one with `openssl rand -hex 32`",
            prefix(&setup, "identity.secret_file", &secret)
        )
    );

    std::fs::write(&secret, "x".repeat(40)).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o604)).unwrap();
    let error = only_error(&setup);
    assert!(
        error.contains("the file is readable by every user (mode 604)"),
        "{error}"
    );
}

#[test]
fn https_upstream_without_ca_is_rejected() {
    let setup = Setup::new(&Options {
        upstream: "https://10.20.0.5:8443".into(),
        ..Options::default()
    });
    assert_eq!(
        only_error(&setup),
        format!(
            "{}: key `upstream.ca`: missing: the upstream url uses https, so name the PEM file of the CA that \
             issued the Befundserver's certificate",
            setup.config_path.display()
        )
    );
}

#[test]
fn upstream_client_key_not_matching_its_certificate_is_rejected() {
    let setup = Setup::new(&Options {
        upstream: "https://10.20.0.5:8443".into(),
        ..Options::default()
    });
    let proxy_client = setup.pki.root.issue(client_params("befund-proxy", 99));
    let cert = write_file(
        setup.dir.path(),
        "up.pem",
        proxy_client.pem.as_bytes(),
        0o644,
    );
    let key = write_file(
        setup.dir.path(),
        "up.key",
        setup.pki.valid.key.serialize_pem().as_bytes(),
        0o600,
    );
    edit(
        &setup,
        "connect_timeout",
        &format!(
            "ca = {:?}\nclient_certificate = {cert:?}\nclient_key = {key:?}\nconnect_timeout",
            setup.ca_pem
        ),
    );
    let error = only_error(&setup);
    assert!(
        error.starts_with(&prefix(&setup, "upstream.client_key", &key)),
        "{error}"
    );
    assert!(
        error.contains(&format!(
            "cannot be used with the certificate in {}",
            cert.display()
        )),
        "{error}"
    );
}

#[test]
fn missing_audit_directory_and_unknown_user_are_both_reported() {
    let setup = Setup::new(&Options::default());
    let audit = setup.path("missing-dir/audit.jsonl");
    edit(
        &setup,
        &format!("audit = {:?}", setup.path("audit.jsonl")),
        &format!("audit = {audit:?}\n\n[runtime]\nuser = \"no-such-befund-user\""),
    );
    let failed = check_config(&setup.config_path).expect_err("the check fails");
    let errors: Vec<String> = failed.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            format!(
                "{}the directory {} does not exist; create it",
                prefix(&setup, "log.audit", &audit),
                setup.path("missing-dir").display()
            ),
            format!(
                "{}: key `runtime.user`: no user `no-such-befund-user` on this system; create it (useradd --system \
                 no-such-befund-user) or fix the name",
                setup.config_path.display()
            ),
        ]
    );
    assert!(!audit.exists(), "check-config creates nothing");
}

#[test]
fn check_config_command_prints_ok_or_one_line_per_error() {
    let setup = Setup::new(&Options::default());
    let bin = env!("CARGO_BIN_EXE_befund-proxy");
    let ok = Command::new(bin)
        .arg("check-config")
        .arg("--config")
        .arg(&setup.config_path)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).ends_with("configuration OK\n"));

    std::fs::write(setup.path("client-ca.pem"), "").unwrap();
    std::fs::write(setup.path("secret"), "short").unwrap();
    let bad = Command::new(bin)
        .arg("check-config")
        .arg("--config")
        .arg(&setup.config_path)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(78), "EX_CONFIG");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 2, "{stderr}");
    assert!(
        errors[0].contains("key `tls.client_ca`")
            && errors[1].contains("key `identity.secret_file`"),
        "{stderr}"
    );
}

#[test]
fn run_with_an_unusable_file_exits_ex_config_with_one_line_and_attaches_nothing() {
    let setup = Setup::new(&Options::default());
    std::fs::write(setup.path("client-ca.pem"), "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_befund-proxy"))
        .arg("run")
        .arg("--config")
        .arg(&setup.config_path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(78),
        "EX_CONFIG: a restart cannot help"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("tls.client_ca"))
        .collect();
    assert_eq!(lines.len(), 1, "the error is printed once: {stderr}");
}
