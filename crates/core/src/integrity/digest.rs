//! CloudTrail's digest file: its JSON structure, and the string its
//! signature covers.
//!
//! The data signing string is four lines joined by `\n`: the digest's end
//! time as the file writes it (`2015-05-08T07:19:37Z`), the digest's S3 path
//! (`bucket/key`), the hex SHA-256 of the uncompressed digest file, and the
//! previous digest's hex signature (`null` for the first digest of a chain).
//! The signature is RSA PKCS#1 v1.5 over the SHA-256 of that string
//! (`SHA256withRSA`), hex encoded.

use serde::Deserialize;

use crate::time::{parse_utc, EpochMillis};

/// One log file a digest lists.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedLogFile {
    pub s3_bucket: String,
    pub s3_object: String,
    /// Hex SHA-256 of the file's uncompressed content.
    pub hash_value: String,
    #[serde(default)]
    pub hash_algorithm: Option<String>,
    #[serde(default)]
    pub newest_event_time: Option<String>,
    #[serde(default)]
    pub oldest_event_time: Option<String>,
}

/// A digest file as CloudTrail writes it (fields this code does not use are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DigestFile {
    pub aws_account_id: String,
    pub digest_start_time: String,
    pub digest_end_time: String,
    pub digest_s3_bucket: String,
    pub digest_s3_object: String,
    #[serde(default)]
    pub digest_public_key_fingerprint: Option<String>,
    /// The name older digests use for the fingerprint.
    #[serde(default)]
    pub public_key_fingerprint: Option<String>,
    #[serde(default)]
    pub digest_signature_algorithm: Option<String>,
    #[serde(default)]
    pub previous_digest_s3_bucket: Option<String>,
    #[serde(default)]
    pub previous_digest_s3_object: Option<String>,
    #[serde(default)]
    pub previous_digest_hash_value: Option<String>,
    #[serde(default)]
    pub previous_digest_hash_algorithm: Option<String>,
    #[serde(default)]
    pub previous_digest_signature: Option<String>,
    #[serde(default)]
    pub log_files: Vec<ListedLogFile>,
}

/// Why a digest file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("not a CloudTrail digest: {0}")]
    Json(String),
    #[error("{field} {value:?} is not a UTC time")]
    Time { field: &'static str, value: String },
}

impl DigestFile {
    /// Parses the uncompressed content of a digest file.
    pub fn parse(content: &[u8]) -> Result<Self, DigestError> {
        serde_json::from_slice(content).map_err(|e| DigestError::Json(e.to_string()))
    }

    /// The fingerprint of the key that signed it, under either of its names.
    pub fn fingerprint(&self) -> Option<&str> {
        self.digest_public_key_fingerprint.as_deref().or(self.public_key_fingerprint.as_deref()).filter(|f| !f.is_empty())
    }

    pub fn start(&self) -> Result<EpochMillis, DigestError> {
        parse_utc(&self.digest_start_time).map_err(|_| DigestError::Time { field: "digestStartTime", value: self.digest_start_time.clone() })
    }

    pub fn end(&self) -> Result<EpochMillis, DigestError> {
        parse_utc(&self.digest_end_time).map_err(|_| DigestError::Time { field: "digestEndTime", value: self.digest_end_time.clone() })
    }

    /// Where the digest says it lives: `s3://bucket/key`.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.digest_s3_bucket, self.digest_s3_object)
    }

    /// The string the digest's signature covers, given the hex SHA-256 of
    /// the uncompressed digest file.
    pub fn signing_string(&self, content_sha256_hex: &str) -> String {
        signing_string(&self.digest_end_time, &self.digest_s3_bucket, &self.digest_s3_object, content_sha256_hex, self.previous_digest_signature.as_deref())
    }
}

/// The data signing string of a digest (see the module's doc).
pub fn signing_string(end_time: &str, bucket: &str, key: &str, content_sha256_hex: &str, previous_signature: Option<&str>) -> String {
    format!("{end_time}\n{bucket}/{key}\n{content_sha256_hex}\n{}", previous_signature.unwrap_or("null"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = r#"{"awsAccountId":"111122223333","digestStartTime":"2015-08-17T14:01:31Z","digestEndTime":"2015-08-17T15:01:31Z",
        "digestS3Bucket":"trail-bucket","digestS3Object":"AWSLogs/111122223333/CloudTrail-Digest/us-east-2/2015/08/17/111122223333_CloudTrail-Digest_us-east-2_main_us-east-2_20150817T150131Z.json.gz",
        "digestPublicKeyFingerprint":"31e8b5433410dfb61a9dc45cc65b22ff","digestSignatureAlgorithm":"SHA256withRSA",
        "newestEventTime":"2015-08-17T14:52:27Z","oldestEventTime":"2015-08-17T14:42:27Z",
        "previousDigestS3Bucket":null,"previousDigestS3Object":null,"previousDigestHashValue":null,"previousDigestHashAlgorithm":null,"previousDigestSignature":null,
        "logFiles":[{"s3Bucket":"trail-bucket","s3Object":"AWSLogs/111122223333/CloudTrail/us-east-2/2015/08/17/111122223333_CloudTrail_us-east-2_20150817T1445Z_9nYN7gp2eWAJHIfT.json.gz",
        "hashValue":"9bb6196fc6b84d6f075a56548feca262bd99ba3c2de41b618e5b6e22c1fc71f6","hashAlgorithm":"SHA-256","newestEventTime":"2015-08-17T14:52:27Z","oldestEventTime":"2015-08-17T14:42:27Z"}]}"#;

    #[test]
    fn parses_the_documented_structure() {
        let d = DigestFile::parse(DIGEST.as_bytes()).expect("parses");
        assert_eq!(d.aws_account_id, "111122223333");
        assert_eq!(d.fingerprint(), Some("31e8b5433410dfb61a9dc45cc65b22ff"));
        assert_eq!(d.previous_digest_s3_object, None);
        assert_eq!(d.log_files.len(), 1);
        assert_eq!(d.log_files[0].hash_value, "9bb6196fc6b84d6f075a56548feca262bd99ba3c2de41b618e5b6e22c1fc71f6");
        assert_eq!(d.end().expect("end") - d.start().expect("start"), 3_600_000);
        assert!(DigestFile::parse(b"{\"Records\":[]}").is_err());
    }

    #[test]
    fn the_signing_string_has_four_lines_and_null_for_the_first_digest() {
        let d = DigestFile::parse(DIGEST.as_bytes()).expect("parses");
        let s = d.signing_string("abc123");
        let lines: Vec<&str> = s.split('\n').collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "2015-08-17T15:01:31Z");
        assert_eq!(lines[1], format!("trail-bucket/{}", d.digest_s3_object));
        assert_eq!(lines[2], "abc123");
        assert_eq!(lines[3], "null");
        assert!(signing_string("t", "b", "k", "h", Some("beef")).ends_with("\nh\nbeef"));
    }
}
