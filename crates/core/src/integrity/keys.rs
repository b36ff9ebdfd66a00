//! Public keys that verify digest signatures, by fingerprint.
//!
//! A key is DER: PKCS#1 `RSAPublicKey`, as CloudTrail's `ListPublicKeys`
//! returns it (a SubjectPublicKeyInfo is taken too). The keys file of
//! embedded mode has the shape `aws cloudtrail list-public-keys` prints:
//! `{"PublicKeyList":[{"Fingerprint":"…","Value":"<base64 DER>", …}]}`.

use std::collections::HashMap;

use base64::Engine as _;
use rsa::pkcs1::{DecodeRsaPublicKey, EncodeRsaPublicKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::ports::PortError;
use crate::time::EpochMillis;

/// What checking a digest's signature found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureCheck {
    Valid,
    /// No public keys are configured: the signature was not checked.
    NotChecked,
    /// The digest names no key, or one no configured key has.
    UnknownKey(Option<String>),
    /// The digest object carries no signature.
    Missing,
    /// The signature does not verify (or is not hex).
    Invalid(String),
}

/// Where public keys come from when a digest names one not known yet:
/// CloudTrail's `ListPublicKeys` in AWS mode.
#[async_trait::async_trait]
pub trait KeyFetcher: Send + Sync {
    /// The public keys of `region` whose private keys signed digests
    /// between `start` and `end`.
    async fn fetch(&self, region: &str, start: EpochMillis, end: EpochMillis) -> Result<PublicKeys, PortError>;
}

/// Why a keys file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("public keys {what}: {message}")]
pub struct KeysError {
    pub what: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyList {
    public_key_list: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyEntry {
    fingerprint: String,
    value: String,
}

/// Public keys by fingerprint. Empty: signatures are not checked.
#[derive(Debug, Clone, Default)]
pub struct PublicKeys {
    keys: HashMap<String, RsaPublicKey>,
}

impl PublicKeys {
    /// No keys: signatures are reported as not checked.
    pub fn none() -> Self {
        PublicKeys::default()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Adds a DER key (PKCS#1 or SubjectPublicKeyInfo) under `fingerprint`.
    pub fn insert_der(&mut self, fingerprint: &str, der: &[u8]) -> Result<(), KeysError> {
        let key = RsaPublicKey::from_pkcs1_der(der)
            .or_else(|_| RsaPublicKey::from_public_key_der(der))
            .map_err(|e| KeysError { what: format!("key {fingerprint}"), message: format!("not a DER RSA public key: {e}") })?;
        self.keys.insert(fingerprint.to_ascii_lowercase(), key);
        Ok(())
    }

    /// Parses a keys file (see the module's doc); `what` names it in errors.
    pub fn from_list_json(text: &str, what: &str) -> Result<Self, KeysError> {
        let list: KeyList = serde_json::from_str(text)
            .map_err(|e| KeysError { what: what.to_owned(), message: format!("expected {{\"PublicKeyList\":[{{\"Fingerprint\",\"Value\"}}]}}: {e}") })?;
        let mut keys = PublicKeys::none();
        for entry in list.public_key_list {
            let der = base64::engine::general_purpose::STANDARD
                .decode(entry.value.trim())
                .map_err(|e| KeysError { what: format!("{what}, key {}", entry.fingerprint), message: format!("Value is not base64: {e}") })?;
            keys.insert_der(&entry.fingerprint, &der).map_err(|e| KeysError { what: format!("{what}, {}", e.what), message: e.message })?;
        }
        Ok(keys)
    }

    /// Whether it has the key `fingerprint`.
    pub fn contains(&self, fingerprint: &str) -> bool {
        self.keys.contains_key(&fingerprint.to_ascii_lowercase())
    }

    /// Adds every key of `other`.
    pub fn extend(&mut self, other: PublicKeys) {
        self.keys.extend(other.keys);
    }

    /// Checks a hex signature of `signing_string` made with the key
    /// `fingerprint`; with no keys at all, the signature is not checked.
    pub fn check(&self, fingerprint: Option<&str>, signing_string: &str, signature_hex: Option<&str>) -> SignatureCheck {
        if self.keys.is_empty() {
            return SignatureCheck::NotChecked;
        }
        self.check_required(fingerprint, signing_string, signature_hex)
    }

    /// [`PublicKeys::check`] where keys are expected even when none is
    /// known yet (they are fetched): never [`SignatureCheck::NotChecked`].
    pub fn check_required(&self, fingerprint: Option<&str>, signing_string: &str, signature_hex: Option<&str>) -> SignatureCheck {
        let Some(signature_hex) = signature_hex.map(str::trim).filter(|s| !s.is_empty()) else {
            return SignatureCheck::Missing;
        };
        let Some(key) = fingerprint.and_then(|f| self.keys.get(&f.to_ascii_lowercase())) else {
            return SignatureCheck::UnknownKey(fingerprint.map(str::to_owned));
        };
        let Some(signature) = hex_decode(signature_hex) else {
            return SignatureCheck::Invalid("the signature is not hex".into());
        };
        let hashed = Sha256::digest(signing_string.as_bytes());
        match key.verify(Pkcs1v15Sign::new::<Sha256>(), &hashed, &signature) {
            Ok(()) => SignatureCheck::Valid,
            Err(e) => SignatureCheck::Invalid(format!("the signature does not verify with key {}: {e}", fingerprint.unwrap_or_default())),
        }
    }
}

/// The keys file entry of a public key: `{"Fingerprint", "Value"}` with the
/// PKCS#1 DER in base64, as [`PublicKeys::from_list_json`] reads it.
pub fn list_json(keys: &[(String, RsaPublicKey)]) -> Result<String, KeysError> {
    let mut entries = Vec::new();
    for (fingerprint, key) in keys {
        let der = key.to_pkcs1_der().map_err(|e| KeysError { what: format!("key {fingerprint}"), message: e.to_string() })?;
        let value = base64::engine::general_purpose::STANDARD.encode(der.as_bytes());
        entries.push(serde_json::json!({ "Fingerprint": fingerprint, "Value": value }));
    }
    Ok(serde_json::to_string_pretty(&serde_json::json!({ "PublicKeyList": entries })).unwrap_or_default())
}

/// A fingerprint for a key of one's own: the first 16 bytes of the SHA-256
/// of its PKCS#1 DER, as 32 hex digits (CloudTrail's are 32 hex digits too).
pub fn fingerprint_of(key: &RsaPublicKey) -> Result<String, KeysError> {
    let der = key.to_pkcs1_der().map_err(|e| KeysError { what: "key".into(), message: e.to_string() })?;
    Ok(hex_encode(&Sha256::digest(der.as_bytes())[..16]))
}

/// Lowercase hex.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// Bytes of a hex string (either case); None if it is not hex.
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok());
    b.chunks(2).map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?)).collect()
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex_encode(&Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        assert_eq!(hex_encode(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(hex_decode("00ABff"), Some(vec![0x00, 0xab, 0xff]));
        assert_eq!(hex_decode("abc"), None);
        assert_eq!(hex_decode("zz"), None);
    }

    #[test]
    fn without_keys_nothing_is_checked_and_a_bad_keys_file_says_why() {
        assert_eq!(PublicKeys::none().check(Some("f"), "s", Some("00")), SignatureCheck::NotChecked);
        let e = PublicKeys::from_list_json(r#"{"PublicKeyList":[{"Fingerprint":"ab","Value":"not base64!"}]}"#, "keys.json").unwrap_err();
        assert!(e.to_string().contains("keys.json") && e.to_string().contains("base64"), "{e}");
        let e = PublicKeys::from_list_json(r#"{"PublicKeyList":[{"Fingerprint":"ab","Value":"AAAA"}]}"#, "keys.json").unwrap_err();
        assert!(e.to_string().contains("not a DER RSA public key"), "{e}");
    }
}
