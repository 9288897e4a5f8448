//! The server's token-signing key: an RSA key kept as PKCS#8 PEM in the data directory.

use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use sha2::{Digest, Sha256};

/// The key file's name inside the data directory.
pub const KEY_FILE: &str = "signing-key.pem";

/// Why the signing key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("signing key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The key file does not hold an RSA private key.
    #[error("signing key file {path} is not a PKCS#8 RSA private key: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
}

/// An RS256 signing key with its key id and public components.
#[derive(Clone)]
pub struct SigningKey {
    pem: String,
    kid: String,
    modulus: String,
    exponent: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a new 2048-bit key.
    pub fn generate() -> Self {
        let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("2048-bit RSA key generation");
        let pem = key.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8 encoding of a fresh key").to_string();
        Self::from_pem(&pem).expect("a freshly encoded key decodes")
    }

    /// A key from PKCS#8 PEM text.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let key = RsaPrivateKey::from_pkcs8_pem(pem).map_err(|error| error.to_string())?;
        let public_der = key.to_public_key().to_public_key_der().map_err(|error| error.to_string())?;
        let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(public_der.as_bytes())[..16]);
        Ok(SigningKey {
            pem: pem.to_owned(),
            kid,
            modulus: URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            exponent: URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        })
    }

    /// Loads the key from `data_dir`, creating it (readable by the owner only) when absent.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, KeyError> {
        Self::load_or_create_file(&data_dir.join(KEY_FILE))
    }

    /// [`SigningKey::load_or_create`] with the key file at `path` (several nodes share one key this way).
    /// Nodes that start at once on one new file all end up with the key of the first to create it.
    pub fn load_or_create_file(path: &Path) -> Result<Self, KeyError> {
        let display = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(pem) => Self::from_pem(&pem).map_err(|reason| KeyError::Invalid { path: display, reason }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                let io = |source| KeyError::Io { path: display.clone(), source };
                let mut temporary = path.as_os_str().to_owned();
                temporary.push(format!(".{}.tmp", std::process::id()));
                let temporary = std::path::PathBuf::from(temporary);
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create(true).truncate(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(&temporary).map_err(io)?;
                file.write_all(key.pem.as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                // A link, unlike a rename, never replaces a key another process created meanwhile.
                let linked = std::fs::hard_link(&temporary, path);
                std::fs::remove_file(&temporary).map_err(io)?;
                match linked {
                    Ok(()) => {
                        // The new name lives in the directory: sync it too, or a power cut may forget the
                        // key (and with it every token signed by it) although its bytes were synced.
                        sync_directory_of(path).map_err(io)?;
                        Ok(key)
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                        let pem = std::fs::read_to_string(path).map_err(io)?;
                        Self::from_pem(&pem).map_err(|reason| KeyError::Invalid { path: display.clone(), reason })
                    }
                    Err(error) => Err(io(error)),
                }
            }
            Err(source) => Err(KeyError::Io { path: display, source }),
        }
    }

    /// The PKCS#8 PEM text of the private key.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The key id (`kid`) stamped in token headers and the JWKS.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The base64url modulus.
    pub fn modulus(&self) -> &str {
        &self.modulus
    }

    /// The base64url public exponent.
    pub fn exponent(&self) -> &str {
        &self.exponent
    }

    /// The JSON Web Key Set publishing the public key.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "RSA",
                "use": "sig",
                "alg": "RS256",
                "kid": self.kid,
                "n": self.modulus,
                "e": self.exponent,
            }]
        })
    }
}
/// Fsyncs the directory holding `path`, making the names added to it durable.
fn sync_directory_of(path: &Path) -> std::io::Result<()> {
    let directory = path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(directory)?.sync_all()
}
