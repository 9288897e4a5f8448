//! A subscriber holding the private key opens what the server sealed, exactly as Graph's docs tell
//! subscribers to: check the HMAC, unwrap the key with RSA-OAEP (SHA-1), decrypt AES-256-CBC.

use aes::cipher::{BlockDecryptMut, KeyIvInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use presence_notify::encryption::{seal, CertificateError, EncryptionCertificate};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rsa::{Oaep, RsaPrivateKey};
use sha1::{Digest, Sha1};
use sha2::Sha256;

/// An RSA key and a self-signed certificate for it.
fn subscriber() -> (RsaPrivateKey, Vec<u8>) {
    let private = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let pem = private.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    let key_pair = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap();
    let certificate =
        rcgen::CertificateParams::new(vec!["subscriber.example".to_owned()]).unwrap().self_signed(&key_pair).unwrap();
    (RsaPrivateKey::from_pkcs8_pem(&pem).unwrap(), certificate.der().to_vec())
}

#[test]
fn the_subscriber_opens_the_sealed_presence() {
    let (private, der) = subscriber();
    let certificate = EncryptionCertificate::from_base64(&STANDARD.encode(&der)).unwrap();
    let expected_thumbprint: String = Sha1::digest(&der).iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(certificate.thumbprint(), expected_thumbprint);

    let presence =
        br##"{"@odata.type":"#microsoft.graph.presence","id":"u1","availability":"Busy","activity":"InACall"}"##;
    let sealed = seal(presence, &certificate, "my-cert-1", &mut rand::thread_rng()).unwrap();
    assert_eq!(sealed.encryption_certificate_id, "my-cert-1");
    assert_eq!(sealed.encryption_certificate_thumbprint, expected_thumbprint);

    let key = private.decrypt(Oaep::new::<Sha1>(), &STANDARD.decode(&sealed.data_key).unwrap()).unwrap();
    assert_eq!(key.len(), 32);
    let ciphertext = STANDARD.decode(&sealed.data).unwrap();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(&ciphertext);
    mac.verify_slice(&STANDARD.decode(&sealed.data_signature).unwrap()).expect("the signature matches");
    let plaintext = cbc::Decryptor::<aes::Aes256>::new(key[..].into(), key[..16].into())
        .decrypt_padded_vec_mut::<aes::cipher::block_padding::Pkcs7>(&ciphertext)
        .unwrap();
    assert_eq!(plaintext, presence);

    let again = seal(presence, &certificate, "my-cert-1", &mut rand::thread_rng()).unwrap();
    assert_ne!(again.data_key, sealed.data_key, "every item gets a fresh key");
}

/// An RSA public key (PKCS#1 DER) for rcgen to certify.
struct ShortKey(Vec<u8>);

impl rcgen::PublicKeyData for ShortKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

#[test]
fn unusable_certificates_are_refused() {
    assert_eq!(EncryptionCertificate::from_base64("***").unwrap_err(), CertificateError::NotBase64);
    assert!(matches!(
        EncryptionCertificate::from_base64(&STANDARD.encode(b"not a certificate")),
        Err(CertificateError::NotCertificate(_))
    ));
    let ecdsa = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap();
    assert_eq!(EncryptionCertificate::from_der(ecdsa.cert.der()).unwrap_err(), CertificateError::NotRsa);
    let pem = ecdsa.cert.pem();
    assert_eq!(EncryptionCertificate::from_base64(&pem).unwrap_err(), CertificateError::NotRsa, "PEM armour is read");
    // ring will not sign with a 1024-bit key, so the short key is certified by another one.
    let short = RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
    let pkcs1 = rsa::pkcs1::EncodeRsaPublicKey::to_pkcs1_der(&short.to_public_key()).unwrap();
    let spki = ShortKey(pkcs1.as_bytes().to_vec());
    let ca = rcgen::Issuer::new(rcgen::CertificateParams::default(), rcgen::KeyPair::generate().unwrap());
    let certificate = rcgen::CertificateParams::new(vec!["x".to_owned()]).unwrap().signed_by(&spki, &ca).unwrap();
    assert_eq!(EncryptionCertificate::from_der(certificate.der()).unwrap_err(), CertificateError::KeyTooShort(1024));
}
