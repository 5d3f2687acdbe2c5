//! The two impostors of the access protocol, derived from the physician's
//! real certificate:
//!
//! - a self-issued certificate: same subject DN and validity, clientAuth, but
//!   self-signed with a fresh key instead of issued by the lab CA;
//! - the real certificate chain paired with a fresh key of the same type, so the
//!   client presents the genuine certificate but signs the handshake
//!   (CertificateVerify) with a key that is not the certificate's.
//!
//! A correct proxy refuses both.

use std::sync::Arc;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SignatureAlgorithm,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::oid_registry::{
    OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};
use x509_parser::time::ASN1Time;

/// Why an impostor could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ImpostorError {
    /// The physician's certificate is not valid DER.
    #[error("failed to parse the client certificate: {0}")]
    Parse(String),
    /// The subject uses an encoding the certificate generator cannot reproduce.
    #[error("cannot reproduce the client certificate's subject: {0}")]
    Subject(&'static str),
    /// Key generation or signing failed.
    #[error("failed to generate the impostor certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The provider cannot sign with the freshly generated key.
    #[error("failed to load the impostor key: {0}")]
    Load(#[from] rustls::Error),
}

/// A self-signed certificate with the physician's subject DN and validity,
/// clientAuth EKU, and a fresh key of the same type, together with that key.
pub fn self_issued(
    leaf: &CertificateDer<'_>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, ImpostorError> {
    let certificate = parse(leaf)?;
    let key = fresh_key_like(&certificate)?;

    let mut params = CertificateParams::default();
    params.distinguished_name = copy_name(certificate.subject())?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = to_datetime(certificate.validity().not_before);
    params.not_after = to_datetime(certificate.validity().not_after);
    let forged = params.self_signed(&key)?;

    let signing_key = load_key(&key, provider)?;
    Ok(CertifiedKey::new(vec![forged.der().clone()], signing_key))
}

/// The physician's genuine certificate chain paired with a fresh private key of
/// the same type: the certificate is presented, but the handshake signature is
/// made with a key that does not belong to it.
pub fn without_key(
    chain: &[CertificateDer<'static>],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, ImpostorError> {
    let leaf = chain
        .first()
        .ok_or(ImpostorError::Parse("empty certificate chain".to_owned()))?;
    let key = fresh_key_like(&parse(leaf)?)?;

    let signing_key = load_key(&key, provider)?;
    Ok(CertifiedKey::new(chain.to_vec(), signing_key))
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, ImpostorError> {
    X509Certificate::from_der(der)
        .map(|(_, certificate)| certificate)
        .map_err(|e| ImpostorError::Parse(e.to_string()))
}

/// A new key pair of the same type as the certificate's, so the server's
/// signature check fails on the key, not on a mismatched algorithm.
fn fresh_key_like(certificate: &X509Certificate<'_>) -> Result<KeyPair, ImpostorError> {
    Ok(KeyPair::generate_for(algorithm_like(certificate))?)
}

fn algorithm_like(certificate: &X509Certificate<'_>) -> &'static SignatureAlgorithm {
    let spki = certificate.public_key();
    let algorithm = &spki.algorithm.algorithm;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());

    if *algorithm == OID_PKCS1_RSAENCRYPTION {
        &rcgen::PKCS_RSA_SHA256
    } else if *algorithm == OID_SIG_ED25519 {
        &rcgen::PKCS_ED25519
    } else if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY && curve == Some(OID_NIST_EC_P384) {
        &rcgen::PKCS_ECDSA_P384_SHA384
    } else if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY && curve == Some(OID_NIST_EC_P521) {
        &rcgen::PKCS_ECDSA_P521_SHA512
    } else {
        // P-256 (`OID_EC_P256`), and the fallback for key types the generator
        // cannot make: the server then rejects the signature's algorithm
        // instead of its value, which still refuses the impostor.
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

fn load_key(
    key: &KeyPair,
    provider: &CryptoProvider,
) -> Result<Arc<dyn rustls::sign::SigningKey>, ImpostorError> {
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok(provider.key_provider.load_private_key(der)?)
}

/// Rebuilds a subject DN attribute by attribute, keeping each value's string type.
fn copy_name(name: &X509Name<'_>) -> Result<DistinguishedName, ImpostorError> {
    let mut copy = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attributes = rdn.iter();
        let (Some(attribute), None) = (attributes.next(), attributes.next()) else {
            return Err(ImpostorError::Subject("multi-valued RDN"));
        };
        let oid: Vec<u64> = attribute
            .attr_type()
            .iter()
            .ok_or(ImpostorError::Subject("attribute type OID too long"))?
            .collect();
        let value = attribute.attr_value();
        copy.push(
            DnType::from_oid(&oid),
            dn_value(value.header.tag(), value.data)?,
        );
    }
    Ok(copy)
}

fn dn_value(tag: Tag, data: &[u8]) -> Result<DnValue, ImpostorError> {
    let text = || std::str::from_utf8(data).map_err(|_| ImpostorError::Subject("invalid string"));
    let invalid = |_| ImpostorError::Subject("invalid string");

    Ok(match tag {
        Tag::Utf8String => DnValue::Utf8String(text()?.to_owned()),
        Tag::PrintableString => DnValue::PrintableString(text()?.try_into().map_err(invalid)?),
        Tag::Ia5String => DnValue::Ia5String(text()?.try_into().map_err(invalid)?),
        Tag::T61String => DnValue::TeletexString(text()?.try_into().map_err(invalid)?),
        Tag::BmpString => DnValue::BmpString(
            rcgen::string::BmpString::from_utf16be(data.to_vec()).map_err(invalid)?,
        ),
        Tag::UniversalString => DnValue::UniversalString(
            rcgen::string::UniversalString::from_utf32be(data.to_vec()).map_err(invalid)?,
        ),
        _ => return Err(ImpostorError::Subject("unsupported string type")),
    })
}

fn to_datetime(time: ASN1Time) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(time.timestamp()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, Issuer};

    use super::*;

    /// A physician's certificate issued by a throwaway CA, with a UTF-8 subject.
    fn physician_certificate() -> CertificateDer<'static> {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Labor CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let mut params = CertificateParams::default();
        let country = DnValue::PrintableString("DE".try_into().unwrap());
        params.distinguished_name.push(DnType::CountryName, country);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Praxis Müller");
        params
            .distinguished_name
            .push(DnType::CommonName, "Dr. Jürgen Müller");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.signed_by(&key, &issuer).unwrap().der().clone()
    }

    fn provider() -> CryptoProvider {
        rustls::crypto::aws_lc_rs::default_provider()
    }

    #[test]
    fn self_issued_certificate_has_the_same_subject_and_is_its_own_issuer() {
        let genuine = physician_certificate();

        let forged = self_issued(&genuine, &provider()).unwrap();

        let genuine = parse(&genuine).unwrap();
        let forged_der = &forged.cert[0];
        let forged = parse(forged_der).unwrap();
        assert_eq!(forged.subject().as_raw(), genuine.subject().as_raw());
        assert_eq!(forged.issuer().as_raw(), genuine.subject().as_raw());
        assert_ne!(forged.public_key().raw, genuine.public_key().raw);
        assert_eq!(
            forged.public_key().algorithm,
            genuine.public_key().algorithm
        );
        assert!(
            forged
                .extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .client_auth
        );
        assert_eq!(forged.validity().not_after, genuine.validity().not_after);
    }

    #[test]
    fn certificate_without_key_presents_the_genuine_chain_with_a_foreign_key() {
        let genuine = physician_certificate();

        let impostor = without_key(std::slice::from_ref(&genuine), &provider()).unwrap();

        assert_eq!(impostor.cert, [genuine]);
        assert!(impostor.keys_match().is_err());
    }
}
