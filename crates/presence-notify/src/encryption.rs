//! Sealing rich-notification content for a subscriber, as Graph does (presence-spec.md 7.4).
//!
//! For each notification item: a fresh random 32-byte key; `data` = base64(AES-256-CBC(PKCS#7) of the JSON,
//! IV = the key's first 16 bytes); `dataSignature` = base64(HMAC-SHA256(key, ciphertext)); `dataKey` =
//! base64(RSA-OAEP with SHA-1 and MGF1-SHA-1 of the key, under the certificate's public key);
//! `encryptionCertificateThumbprint` = the certificate's SHA-1 thumbprint in upper-case hex.

use aes::cipher::{BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rsa::pkcs8::DecodePublicKey;
use rsa::{Oaep, RsaPublicKey};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use x509_cert::der::{Decode, Encode};
use x509_cert::Certificate;

/// Why a subscriber's certificate cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// Not base64.
    #[error("encryptionCertificate is not base64")]
    NotBase64,
    /// Not a DER X.509 certificate.
    #[error("encryptionCertificate is not an X.509 certificate: {0}")]
    NotCertificate(String),
    /// The key is not RSA.
    #[error("encryptionCertificate must carry an RSA public key")]
    NotRsa,
    /// The RSA key is shorter than [`MIN_RSA_BITS`].
    #[error("encryptionCertificate's RSA key has {0} bits; at least 2048 are required")]
    KeyTooShort(usize),
}

/// The shortest RSA key accepted for rich notifications.
pub const MIN_RSA_BITS: usize = 2048;

/// A subscriber's encryption certificate, parsed once when the subscription is created.
#[derive(Debug, Clone)]
pub struct EncryptionCertificate {
    public_key: RsaPublicKey,
    thumbprint: String,
}

impl EncryptionCertificate {
    /// Parses `encryptionCertificate`: a base64 DER certificate (PEM armour is tolerated).
    pub fn from_base64(text: &str) -> Result<Self, CertificateError> {
        let body: String = text
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .flat_map(|line| line.chars())
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = STANDARD.decode(body.as_bytes()).map_err(|_| CertificateError::NotBase64)?;
        Self::from_der(&der)
    }

    /// Parses a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, CertificateError> {
        let certificate =
            Certificate::from_der(der).map_err(|error| CertificateError::NotCertificate(error.to_string()))?;
        let spki = certificate
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|error| CertificateError::NotCertificate(error.to_string()))?;
        let public_key = RsaPublicKey::from_public_key_der(&spki).map_err(|_| CertificateError::NotRsa)?;
        let bits = rsa::traits::PublicKeyParts::size(&public_key) * 8;
        if bits < MIN_RSA_BITS {
            return Err(CertificateError::KeyTooShort(bits));
        }
        let thumbprint = Sha1::digest(der).iter().map(|byte| format!("{byte:02X}")).collect();
        Ok(EncryptionCertificate { public_key, thumbprint })
    }

    /// The SHA-1 thumbprint, upper-case hex.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }
}

/// `encryptedContent` of one notification item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedContent {
    /// base64 ciphertext.
    pub data: String,
    /// base64 HMAC-SHA256 of the ciphertext.
    pub data_signature: String,
    /// base64 RSA-OAEP-wrapped symmetric key.
    pub data_key: String,
    /// The subscriber's label for its certificate.
    pub encryption_certificate_id: String,
    /// The certificate's SHA-1 thumbprint.
    pub encryption_certificate_thumbprint: String,
}

/// Seals `plaintext` for the holder of `certificate`'s private key. Fails only if the RSA encryption does
/// (which a key of at least [`MIN_RSA_BITS`] never does).
pub fn seal(
    plaintext: &[u8],
    certificate: &EncryptionCertificate,
    certificate_id: &str,
    rng: &mut (impl rand::CryptoRng + rand::RngCore),
) -> Result<EncryptedContent, rsa::Error> {
    let mut key = [0u8; 32];
    rng.fill_bytes(&mut key);
    let mut iv = [0u8; 16];
    iv.copy_from_slice(&key[..16]);
    let ciphertext = cbc::Encryptor::<aes::Aes256>::new(&key.into(), &iv.into())
        .encrypt_padded_vec_mut::<aes::cipher::block_padding::Pkcs7>(plaintext);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes a key of any length");
    mac.update(&ciphertext);
    let signature = mac.finalize().into_bytes();
    let wrapped = certificate.public_key.encrypt(rng, Oaep::new::<Sha1>(), &key)?;
    Ok(EncryptedContent {
        data: STANDARD.encode(&ciphertext),
        data_signature: STANDARD.encode(signature),
        data_key: STANDARD.encode(wrapped),
        encryption_certificate_id: certificate_id.to_owned(),
        encryption_certificate_thumbprint: certificate.thumbprint.clone(),
    })
}
