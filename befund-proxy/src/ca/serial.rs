//! Certificate serial numbers: random, positive, and written the way the
//! identity contract forwards them (lowercase hex of the DER INTEGER's
//! content bytes, no leading `00`).

use std::fmt;

use super::error::CaError;

/// Length of a new serial. 16 bytes with the top bit cleared leave 127 bits
/// of randomness, far above the 64 bits that CA practice asks for, and stay
/// within RFC 5280's limit of 20 octets.
const SERIAL_LEN: usize = 16;

/// A certificate serial number as its big-endian magnitude, without leading
/// zero bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// Draws a new random serial of exactly 16 content bytes: the first byte
    /// is in `0x01..=0x7f`, so DER needs neither a sign byte nor trimming and
    /// the hex form is always 32 characters.
    pub fn random() -> Result<Self, CaError> {
        let mut bytes = [0u8; SERIAL_LEN];
        loop {
            getrandom::fill(&mut bytes).map_err(|e| {
                CaError::invalid("random source", format!("cannot draw a serial number: {e}"))
            })?;
            bytes[0] &= 0x7f;
            if bytes[0] != 0 {
                return Ok(Self(bytes.to_vec()));
            }
        }
    }

    /// Takes the content bytes of a DER INTEGER (as in a parsed certificate),
    /// dropping the sign byte and any other leading zeros.
    pub fn from_der_content(bytes: &[u8]) -> Self {
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        Self(bytes[start..].to_vec())
    }

    /// Parses an operator-typed serial: hex digits, optionally with `:`
    /// separators (as `openssl x509 -serial` and browsers print them) and in
    /// either case.
    pub fn parse(text: &str) -> Option<Self> {
        let digits: String = text.chars().filter(|&c| c != ':').collect();
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let padded = if digits.len() % 2 == 1 {
            format!("0{digits}")
        } else {
            digits
        };
        let bytes = (0..padded.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&padded[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .ok()?;
        Some(Self::from_der_content(&bytes))
    }

    /// The magnitude, big-endian.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("00");
        }
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_serial_is_32_lowercase_hex_digits_with_top_bit_clear() {
        for _ in 0..200 {
            let serial = Serial::random().unwrap();
            let hex = serial.to_string();

            assert_eq!(hex.len(), 32, "{hex}");
            assert!(
                hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
                "{hex}"
            );
            assert!((0x01..=0x7f).contains(&serial.as_bytes()[0]), "{hex}");
        }
    }

    #[test]
    fn random_serials_differ() {
        let a = Serial::random().unwrap();
        let b = Serial::random().unwrap();

        assert_ne!(a, b);
    }

    #[test]
    fn der_content_with_sign_byte_prints_without_leading_zero() {
        let serial = Serial::from_der_content(&[0x00, 0x9f, 0x3a]);

        assert_eq!(serial.to_string(), "9f3a");
    }

    #[test]
    fn typed_serial_with_colons_and_capitals_matches_canonical_form() {
        let serial = Serial::parse("5F:3A:09:C2:E1:D4:B7:A8").unwrap();

        assert_eq!(serial.to_string(), "5f3a09c2e1d4b7a8");
    }

    #[test]
    fn typed_serial_with_odd_length_is_padded() {
        assert_eq!(Serial::parse("abc").unwrap().to_string(), "0abc");
    }

    #[test]
    fn non_hex_text_is_not_a_serial() {
        assert_eq!(Serial::parse("ARZT0001"), None);
        assert_eq!(Serial::parse(""), None);
        assert_eq!(Serial::parse(":"), None);
    }
}
