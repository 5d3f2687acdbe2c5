//! Distinguished names as RFC 4514 strings, escaped the way the identity
//! contract forwards them, so that what `befundctl cert show` prints is what
//! the Befundserver receives.

use std::fmt::Write as _;

use x509_parser::asn1_rs::ToDer;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// RFC 4514 short names for the attribute types it lists.
const SHORT_NAMES: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.6", "C"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

/// Formats a name most specific RDN first, `,` between RDNs and `+` inside a
/// multi-valued RDN.
pub fn rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| rdn.iter().map(attribute).collect::<Vec<_>>().join("+"))
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// The first common name of a name, if it has one as a string.
pub fn common_name(name: &X509Name<'_>) -> Option<String> {
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

fn attribute(attr: &AttributeTypeAndValue<'_>) -> String {
    let oid = attr.attr_type().to_id_string();
    let short = SHORT_NAMES
        .iter()
        .find(|(id, _)| *id == oid)
        .map(|(_, short)| *short);

    match (short, attr.as_str()) {
        (Some(short), Ok(value)) => format!("{short}={}", escape_value(value)),
        // RFC 4514 2.4: types without a short name, and values that are not
        // character strings, are written as `#` and the value's DER in hex.
        (short, _) => {
            let der = attr.attr_value().to_der_vec().unwrap_or_default();
            let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
            format!("{}=#{hex}", short.unwrap_or(&oid))
        }
    }
}

/// Escapes an attribute value: RFC 4514's specials with a backslash, and
/// every byte outside printable ASCII, and the backslash itself, as `\hh`.
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.len().saturating_sub(1);
    for (i, byte) in value.bytes().enumerate() {
        let leading = i == 0 && (byte == b' ' || byte == b'#');
        let trailing = i == last && byte == b' ';
        match byte {
            b'"' | b'+' | b',' | b';' | b'<' | b'>' => {
                out.push('\\');
                out.push(char::from(byte));
            }
            _ if leading || trailing => {
                out.push('\\');
                out.push(char::from(byte));
            }
            b'\\' | 0x00..=0x1f | 0x7f..=0xff => {
                let _ = write!(out, "\\{byte:02x}");
            }
            _ => out.push(char::from(byte)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_of(params: rcgen::DistinguishedName) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut cert_params = rcgen::CertificateParams::default();
        cert_params.distinguished_name = params;
        let cert = cert_params.self_signed(&key).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
        rfc4514(parsed.subject())
    }

    #[test]
    fn name_is_written_most_specific_rdn_first() {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "DE");
        dn.push(rcgen::DnType::OrganizationName, "Labor Nord");
        dn.push(rcgen::DnType::CommonName, "ARZT0001");

        assert_eq!(name_of(dn), "CN=ARZT0001,O=Labor Nord,C=DE");
    }

    #[test]
    fn specials_are_backslash_escaped_and_non_ascii_bytes_hex_escaped() {
        assert_eq!(escape_value("Müller, Dr."), "M\\c3\\bcller\\, Dr.");
        assert_eq!(escape_value("a+b;c<d>\"e\""), "a\\+b\\;c\\<d\\>\\\"e\\\"");
        assert_eq!(escape_value("back\\slash"), "back\\5cslash");
    }

    #[test]
    fn leading_hash_and_space_and_trailing_space_are_escaped() {
        assert_eq!(escape_value("#1"), "\\#1");
        assert_eq!(escape_value(" x "), "\\ x\\ ");
        assert_eq!(escape_value("a#b c"), "a#b c");
    }

    #[test]
    fn control_characters_are_escaped_so_the_value_stays_on_one_line() {
        assert_eq!(escape_value("a\nb\r"), "a\\0ab\\0d");
    }
}
