//! Renders a [`Protocol`] as Markdown for the data-protection officer: a
//! header, the access-test table, the certificate report, the TLS survey and
//! the weaknesses.

use std::fmt::Write as _;

use super::protocol::Protocol;
use super::server_cert::{CertificateReport, ServerCertificate};
use super::tls_survey::TlsSurvey;

/// The whole protocol as a Markdown document.
pub fn render(protocol: &Protocol) -> String {
    let mut out = String::new();
    header(&mut out, protocol);
    access_tests(&mut out, protocol);
    server_certificate(&mut out, &protocol.server_certificate);
    tls_survey(&mut out, &protocol.tls_survey);
    weaknesses(&mut out, protocol);
    out
}

/// Makes text safe inside a table cell: no pipes, no line breaks.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\r', '\n'], " ")
}

fn header(out: &mut String, protocol: &Protocol) {
    let header = &protocol.header;
    let result = if protocol.passed { "PASS" } else { "FAIL" };

    out.push_str("# Prüfprotokoll: access protocol\n\n");
    out.push_str("| | |\n|---|---|\n");
    let _ = writeln!(
        out,
        "| target | {} ({}) |",
        cell(&header.target),
        header.address
    );
    let _ = writeln!(out, "| date | {} |", header.date);
    let _ = writeln!(out, "| tool | {} |", cell(&header.tool));
    let _ = writeln!(out, "| result | **{result}** |");
    out.push('\n');
}

fn access_tests(out: &mut String, protocol: &Protocol) {
    out.push_str("## Access tests\n\n");
    out.push_str("| # | access test | expected | observed | result | detail |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for row in &protocol.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            row.number,
            cell(&row.test.to_string()),
            row.expected,
            cell(&row.observed),
            row.verdict,
            cell(&row.detail),
        );
    }
    out.push('\n');
}

fn server_certificate(out: &mut String, certificate: &ServerCertificate) {
    out.push_str("## Server certificate\n\n");
    let report = match certificate {
        ServerCertificate::Obtained(report) => report,
        ServerCertificate::NotObtained { reason } => {
            let _ = writeln!(out, "Not obtained: {}.\n", reason);
            return;
        }
    };
    let CertificateReport {
        obtained_via,
        chain_length,
        subject,
        issuer,
        serial,
        subject_alt_names,
        key,
        signature_algorithm,
        weak_signature_hash: _,
        not_before,
        not_after,
        days_left,
        valid_now: _,
        key_usage,
        extended_key_usage,
    } = &**report;

    let fields = [
        ("subject", subject.clone()),
        ("issuer", issuer.clone()),
        ("subject alternative names", list_or_none(subject_alt_names)),
        ("serial", serial.clone()),
        ("key", key.to_string()),
        ("signature algorithm", signature_algorithm.clone()),
        ("not before", not_before.clone()),
        ("not after", format!("{not_after} ({days_left} days left)")),
        ("key usage", list_or_none(key_usage)),
        ("extended key usage", list_or_none(extended_key_usage)),
        (
            "obtained via",
            format!("{obtained_via}, {chain_length} certificate(s) sent"),
        ),
    ];
    out.push_str("| field | value |\n|---|---|\n");
    for (name, value) in fields {
        let _ = writeln!(out, "| {name} | {} |", cell(&value));
    }
    out.push('\n');
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}

fn tls_survey(out: &mut String, survey: &TlsSurvey) {
    out.push_str("## TLS versions and cipher suites\n\n");
    match &survey.openssl {
        Some(version) => {
            let _ = writeln!(out, "Legacy probes made with {}.\n", cell(version));
        }
        None => out.push_str("Legacy probes not made: openssl not found.\n\n"),
    }
    out.push_str("| protocol | cipher | probed with | result | detail |\n");
    out.push_str("|---|---|---|---|---|\n");
    for probe in &survey.probes {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            cell(&probe.protocol),
            cell(&probe.cipher),
            probe.tool,
            probe.result,
            cell(&probe.detail),
        );
    }
    out.push('\n');
}

fn weaknesses(out: &mut String, protocol: &Protocol) {
    out.push_str("## Weaknesses\n\n");
    if protocol.weaknesses.is_empty() {
        out.push_str("None found.\n");
        return;
    }
    for weakness in &protocol.weaknesses {
        let _ = writeln!(
            out,
            "- **{}**: {}",
            weakness.kind,
            weakness.detail.replace('\n', " ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_protocol::protocol::tests::sample;

    #[test]
    fn markdown_has_header_and_one_table_line_per_row() {
        let protocol = sample();

        let text = render(&protocol);

        assert!(text.starts_with("# Prüfprotokoll: access protocol\n"));
        assert!(text.contains("| target | https://proxy.befund.test:8443 (127.0.0.1:8443) |"));
        assert!(text.contains("| tool | befundctl 0.1.0 |"));
        assert!(text.contains("| result | **FAIL** |"));
        let access_lines = text
            .lines()
            .skip_while(|l| !l.starts_with("| # |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .count();
        assert_eq!(access_lines, protocol.rows.len());
        assert!(text.contains(
            "| 1 | no client certificate | refused | refused | PASS | TLS alert certificate_required (116) after the handshake |"
        ));
    }

    #[test]
    fn markdown_escapes_pipes_and_line_breaks_in_cells() {
        let mut protocol = sample();
        protocol.rows[0].detail = "a|b\nc".to_owned();

        let text = render(&protocol);

        assert!(text.contains("| a\\|b c |"));
    }

    #[test]
    fn markdown_lists_certificate_survey_and_weaknesses() {
        let text = render(&sample());

        assert!(text.contains("| key | RSA 1024 bits |"));
        assert!(text.contains(
            "| TLS 1.0 | any | openssl | accepted | negotiated TLSv1 ECDHE-RSA-AES256-SHA |"
        ));
        assert!(
            text.contains("- **RSA key below 2048 bits**: server certificate key is RSA 1024 bits")
        );
    }
}
