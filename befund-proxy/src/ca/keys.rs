//! Key types the CA generates, for itself and for the certificates it issues.

use rcgen::{KeyPair, RsaKeySize, SignatureAlgorithm};

use super::error::CaError;

/// Key of a new CA. Each signs with SHA-256 or better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CaKeyType {
    /// ECDSA on P-384, signatures with SHA-384.
    #[default]
    #[value(name = "ecdsa-p384")]
    EcdsaP384,
    /// RSA 3072 bits, signatures with SHA-256.
    #[value(name = "rsa3072")]
    Rsa3072,
    /// RSA 4096 bits, signatures with SHA-256.
    #[value(name = "rsa4096")]
    Rsa4096,
}

/// Key of a client or server certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LeafKeyType {
    /// RSA 2048 bits: what every Windows version and smartcard handles.
    #[value(name = "rsa2048")]
    Rsa2048,
    /// RSA 3072 bits.
    #[value(name = "rsa3072")]
    Rsa3072,
    /// ECDSA on P-256.
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
}

/// The algorithms behind both key type enums.
#[derive(Debug, Clone, Copy)]
enum Spec {
    Ecdsa(&'static SignatureAlgorithm, &'static str),
    Rsa(RsaKeySize, &'static str),
}

impl Spec {
    fn generate(self) -> Result<KeyPair, CaError> {
        let (result, key_type) = match self {
            Self::Ecdsa(alg, name) => (KeyPair::generate_for(alg), name),
            Self::Rsa(size, name) => (
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size),
                name,
            ),
        };
        result.map_err(|source| CaError::KeyGeneration { key_type, source })
    }
}

impl CaKeyType {
    /// Generates a fresh key of this type.
    pub fn generate(self) -> Result<KeyPair, CaError> {
        match self {
            Self::EcdsaP384 => Spec::Ecdsa(&rcgen::PKCS_ECDSA_P384_SHA384, "ECDSA P-384"),
            Self::Rsa3072 => Spec::Rsa(RsaKeySize::_3072, "RSA 3072"),
            Self::Rsa4096 => Spec::Rsa(RsaKeySize::_4096, "RSA 4096"),
        }
        .generate()
    }
}

impl LeafKeyType {
    /// Generates a fresh key of this type.
    pub fn generate(self) -> Result<KeyPair, CaError> {
        match self {
            Self::Rsa2048 => Spec::Rsa(RsaKeySize::_2048, "RSA 2048"),
            Self::Rsa3072 => Spec::Rsa(RsaKeySize::_3072, "RSA 3072"),
            Self::EcdsaP256 => Spec::Ecdsa(&rcgen::PKCS_ECDSA_P256_SHA256, "ECDSA P-256"),
        }
        .generate()
    }

    /// Whether the key does RSA, which TLS 1.2 clients may also use for key
    /// transport (keyEncipherment).
    pub fn is_rsa(self) -> bool {
        matches!(self, Self::Rsa2048 | Self::Rsa3072)
    }
}
