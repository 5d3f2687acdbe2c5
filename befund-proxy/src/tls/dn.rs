//! Distinguished names as single-line RFC 4514 strings.
//!
//! RDNs are written most specific first (the reverse of their order in the
//! certificate), multi-valued RDNs joined with `+`. Attribute types use the
//! RFC 4514 short names (CN, L, ST, O, OU, C, STREET, DC, UID), others the
//! dotted OID. String values are escaped so the result is printable ASCII on
//! one line and nothing is lost:
//! - `"` `+` `,` `;` `<` `>`, a leading space or `#` and a trailing space get a
//!   backslash (RFC 4514 section 2.4);
//! - `\` and every byte outside printable ASCII (0x20-0x7e) of the value's
//!   UTF-8 encoding become `\hh` (lowercase hex), e.g. `ü` is `\c3\bc` and a
//!   newline `\0a`.
//!
//! Values that are not character strings (and strings that cannot be decoded)
//! are written as `#` followed by the hex of their DER encoding.

use std::fmt::Write as _;

use x509_parser::asn1_rs::{Any, Class, Tag, ToDer};
use x509_parser::oid_registry::{self, Oid};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// Formats `name` as an RFC 4514 string (see the module documentation).
pub fn format_name(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(format_attribute)
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn format_attribute(attribute: &AttributeTypeAndValue<'_>) -> String {
    let mut out = attribute_type_name(attribute.attr_type());
    out.push('=');
    let value = attribute.attr_value();
    match decode_string(value) {
        Some(text) => escape_value(&text, &mut out),
        None => {
            out.push('#');
            let der = value.to_der_vec().unwrap_or_else(|_| value.data.to_vec());
            push_hex(&der, &mut out);
        }
    }
    out
}

fn attribute_type_name(oid: &Oid<'_>) -> String {
    let short = [
        (oid_registry::OID_X509_COMMON_NAME, "CN"),
        (oid_registry::OID_X509_LOCALITY_NAME, "L"),
        (oid_registry::OID_X509_STATE_OR_PROVINCE_NAME, "ST"),
        (oid_registry::OID_X509_ORGANIZATION_NAME, "O"),
        (oid_registry::OID_X509_ORGANIZATIONAL_UNIT, "OU"),
        (oid_registry::OID_X509_COUNTRY_NAME, "C"),
        (oid_registry::OID_X509_STREET_ADDRESS, "STREET"),
        (oid_registry::OID_DOMAIN_COMPONENT, "DC"),
        (oid_registry::OID_USERID, "UID"),
    ];
    short
        .iter()
        .find(|(known, _)| known == oid)
        .map(|(_, name)| (*name).to_owned())
        .unwrap_or_else(|| oid.to_id_string())
}

/// Decodes the character-string types whose encoding is known; `None` for
/// anything else.
fn decode_string(value: &Any<'_>) -> Option<String> {
    if value.class() != Class::Universal {
        return None;
    }
    let data = value.data;
    match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => String::from_utf8(data.to_vec()).ok(),
        Tag::BmpString => {
            if !data.len().is_multiple_of(2) {
                return None;
            }
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        Tag::UniversalString => {
            if !data.len().is_multiple_of(4) {
                return None;
            }
            data.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

/// Appends `value` escaped as described in the module documentation.
pub fn escape_value(value: &str, out: &mut String) {
    let bytes = value.as_bytes();
    let last = bytes.len().saturating_sub(1);
    for (i, &b) in bytes.iter().enumerate() {
        let needs_backslash = matches!(b, b'"' | b'+' | b',' | b';' | b'<' | b'>')
            || (i == 0 && (b == b' ' || b == b'#'))
            || (i == last && b == b' ');
        if b == b'\\' || !(0x20..=0x7e).contains(&b) {
            let _ = write!(out, "\\{b:02x}");
        } else if needs_backslash {
            out.push('\\');
            out.push(char::from(b));
        } else {
            out.push(char::from(b));
        }
    }
}

fn push_hex(bytes: &[u8], out: &mut String) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

#[cfg(test)]
mod tests {
    use x509_parser::prelude::{FromDer, X509Certificate};

    use super::*;

    fn escaped(value: &str) -> String {
        let mut out = String::new();
        escape_value(value, &mut out);
        out
    }

    #[test]
    fn specials_get_a_backslash() {
        assert_eq!(
            escaped(r#"Dr. "A", B+C; <x>"#),
            r#"Dr. \"A\"\, B\+C\; \<x\>"#
        );
    }

    #[test]
    fn backslash_and_non_ascii_become_hex_bytes() {
        assert_eq!(escaped("Müller\\x"), r"M\c3\bcller\5cx");
    }

    #[test]
    fn newline_and_control_bytes_become_hex() {
        assert_eq!(escaped("a\nb\u{0}c\u{7f}"), r"a\0ab\00c\7f");
    }

    #[test]
    fn leading_hash_and_outer_spaces_are_escaped() {
        assert_eq!(escaped("#1"), r"\#1");
        assert_eq!(escaped(" a b "), r"\ a b\ ");
        assert_eq!(escaped(" "), r"\ ");
        assert_eq!(escaped("a#b"), "a#b");
    }

    fn subject_of(params: rcgen::CertificateParams) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (_, parsed) = X509Certificate::from_der(cert.der()).unwrap();
        format_name(parsed.subject())
    }

    #[test]
    fn names_are_written_most_specific_first_with_short_types() {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CountryName, "DE");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Labor Nord, GmbH");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Dr. Jörg Weiß");
        assert_eq!(
            subject_of(params),
            r"CN=Dr. J\c3\b6rg Wei\c3\9f,O=Labor Nord\, GmbH,C=DE"
        );
    }

    #[test]
    fn unknown_attribute_types_use_the_dotted_oid() {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 5]), "12345");
        assert_eq!(subject_of(params), "2.5.4.5=12345");
    }

    #[test]
    fn bmp_strings_are_decoded() {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            rcgen::DnValue::BmpString(rcgen::string::BmpString::try_from("Zoë").unwrap()),
        );
        assert_eq!(subject_of(params), r"CN=Zo\c3\ab");
    }
}
