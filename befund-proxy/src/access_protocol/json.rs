//! Renders a [`Protocol`] as JSON for machines. The shape is the serde form of
//! [`Protocol`]: `header`, `rows`, `server_certificate`, `tls_survey`,
//! `weaknesses` and `passed`, with enum values in snake_case.

use super::protocol::Protocol;

/// The protocol as pretty-printed JSON, newline-terminated.
pub fn render(protocol: &Protocol) -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(protocol)?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::access_protocol::protocol::tests::sample;

    #[test]
    fn json_has_rows_with_test_expectation_and_verdict() {
        let value: Value = serde_json::from_str(&render(&sample()).unwrap()).unwrap();

        assert_eq!(value["header"]["tool"], "befundctl 0.1.0");
        assert_eq!(value["header"]["address"], "127.0.0.1:8443");
        let first = &value["rows"][0];
        assert_eq!(first["number"], 1);
        assert_eq!(first["test"]["kind"], "no_client_certificate");
        assert_eq!(first["expected"], "refused");
        assert_eq!(first["verdict"], "pass");
        assert_eq!(value["rows"][4]["test"]["address"], "127.0.0.1:9");
        assert_eq!(value["passed"], false);
    }

    #[test]
    fn json_reports_certificate_survey_and_weaknesses_in_snake_case() {
        let value: Value = serde_json::from_str(&render(&sample()).unwrap()).unwrap();

        assert_eq!(value["server_certificate"]["status"], "obtained");
        assert_eq!(value["server_certificate"]["key"]["type"], "rsa");
        assert_eq!(value["server_certificate"]["key"]["bits"], 1024);
        assert_eq!(value["tls_survey"]["probes"][0]["tool"], "openssl");
        assert_eq!(value["tls_survey"]["probes"][0]["result"], "accepted");
        assert_eq!(value["weaknesses"][0]["kind"], "short_rsa_key");
        assert_eq!(value["weaknesses"][1]["kind"], "protocol_below_tls12");
    }
}
