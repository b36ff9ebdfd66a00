//! Hourly digest files (log file integrity validation), per account and
//! region, in CloudTrail's digest structure: each lists the log files
//! delivered in its hour with the SHA-256 of their uncompressed content, and
//! chains to the previous digest by key and hash. An hour without files
//! still gets a digest with an empty `logFiles`.
//!
//! Each digest is signed as CloudTrail signs them (SHA256withRSA over the
//! data signing string, see `trailwatch_core::integrity::digest`) with a key
//! pair derived from the organization (so from the seed): the signature goes
//! into a sidecar next to the digest (`trailwatch_core::integrity::sidecar_key`,
//! standing in for the S3 object's `x-amz-meta-signature`), the next digest
//! carries it as `previousDigestSignature`, and [`write_public_keys`] writes
//! the public key where `--public-keys` reads it.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest as _, Sha256};
use trailwatch_core::integrity::digest::signing_string;
use trailwatch_core::integrity::keys::{fingerprint_of, hex_encode, list_json};
use trailwatch_core::integrity::sidecar_key;
use trailwatch_core::layout::{ObjectKind, TrailKey};
use trailwatch_core::time::EpochMillis;

use crate::delivery::{FileMeta, Writer};
use crate::org::{Org, TRAIL_NAME};
use crate::prng::Rng;
use crate::sha256;
use crate::text::{field, field_opt, push_time};
use crate::GenError;

const HOUR: i64 = 3_600_000;
/// The public keys file the generator writes at the top of the trail: its
/// name starts with `.`, so it is not listed as an object of the trail.
pub const PUBLIC_KEYS_FILE: &str = ".public-keys.json";
/// Size of the generated signing key.
const KEY_BITS: usize = 2048;

/// The organization's digest signing key.
pub struct Signer {
    key: RsaPrivateKey,
    pub fingerprint: String,
}

impl Signer {
    /// The hex SHA256withRSA signature of `message`.
    fn sign(&self, message: &str) -> Result<String, GenError> {
        let hashed = Sha256::digest(message.as_bytes());
        let signature = self.key.sign(Pkcs1v15Sign::new::<Sha256>(), &hashed).map_err(|e| GenError::Internal(format!("signing a digest: {e}")))?;
        Ok(hex_encode(&signature))
    }

    pub fn public_key(&self) -> RsaPublicKey {
        self.key.to_public_key()
    }
}

/// The last organization's signer: every account's thread signs with the
/// same key, generated once (a 2048-bit key takes a noticeable moment).
static SIGNER: Mutex<Option<(String, Arc<Signer>)>> = Mutex::new(None);

/// The signing key of `org`, derived from its id and bucket (so from the seed).
pub fn signer(org: &Org) -> Result<Arc<Signer>, GenError> {
    let name = format!("{}\0{}", org.id, org.bucket);
    let mut cached = SIGNER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((for_org, signer)) = cached.as_ref() {
        if *for_org == name {
            return Ok(signer.clone());
        }
    }
    let seed: [u8; 32] = Sha256::digest(format!("trailwatch-gen digest signing key\0{name}").as_bytes()).into();
    let key =
        RsaPrivateKey::new(&mut ChaCha20Rng::from_seed(seed), KEY_BITS).map_err(|e| GenError::Internal(format!("generating the digest signing key: {e}")))?;
    let fingerprint = fingerprint_of(&key.to_public_key()).map_err(|e| GenError::Internal(e.to_string()))?;
    let signer = Arc::new(Signer { key, fingerprint });
    *cached = Some((name, signer.clone()));
    Ok(signer)
}

/// Writes the public key of `org`'s digests to [`PUBLIC_KEYS_FILE`] under `out`.
pub fn write_public_keys(out: &Path, org: &Org) -> Result<(), GenError> {
    let signer = signer(org)?;
    let text = list_json(&[(signer.fingerprint.clone(), signer.public_key())]).map_err(|e| GenError::Internal(e.to_string()))?;
    let path = out.join(PUBLIC_KEYS_FILE);
    std::fs::write(&path, text).map_err(|source| GenError::Io { path, source })
}

/// `2024-01-15T12:05:00Z`, exactly as the digest writes its times.
fn time_text(t: EpochMillis) -> String {
    let mut quoted = Vec::with_capacity(24);
    push_time(&mut quoted, t);
    String::from_utf8_lossy(&quoted).trim_matches('"').to_owned()
}
/// Latest possible log file time after the end of traffic: the longest
/// delivery delay plus a window.
const LAST_FILE_AFTER_END: i64 = 21 * 60_000;

fn time_or_null(out: &mut Vec<u8>, key: &[u8], time: Option<EpochMillis>) {
    out.extend_from_slice(key);
    match time {
        Some(t) => push_time(out, t),
        None => out.extend_from_slice(b"null"),
    }
}

/// Writes the digests of one account; returns how many.
pub fn write(
    writer: &mut Writer<'_>,
    rng: &mut Rng,
    org: &Org,
    account: usize,
    files: &[FileMeta],
    start: EpochMillis,
    end: EpochMillis,
) -> Result<u64, GenError> {
    let a = &org.accounts[account];
    let signer = signer(org)?;
    let mut written = 0;
    for (r, region) in a.regions.iter().enumerate() {
        let offset = rng.between(60, 299) * 1000;
        let mut mine: Vec<&FileMeta> = files.iter().filter(|f| f.region == r).collect();
        mine.sort_by(|x, y| (x.time, &x.key).cmp(&(y.time, &y.key)));
        let mut next = mine.into_iter().peekable();
        // The previous digest's key, hash and signature.
        let mut previous: Option<(String, String, String)> = None;
        let mut from = (start - offset).div_euclid(HOUR) * HOUR + offset;
        while from <= end + LAST_FILE_AFTER_END {
            let to = from + HOUR;
            let mut listed = Vec::new();
            while let Some(f) = next.next_if(|f| f.time < to) {
                listed.push(f);
            }
            let key = TrailKey::log("", Some(&org.id), &a.id, ObjectKind::Digest, region, to, &format!("{TRAIL_NAME}_{region}")).to_key();
            let mut out = Vec::with_capacity(1024 + listed.len() * 400);
            field(&mut out, b"{\"awsAccountId\":", &a.id);
            time_or_null(&mut out, b",\"digestStartTime\":", Some(from));
            time_or_null(&mut out, b",\"digestEndTime\":", Some(to));
            field(&mut out, b",\"digestS3Bucket\":", &org.bucket);
            field(&mut out, b",\"digestS3Object\":", &key);
            field(&mut out, b",\"digestPublicKeyFingerprint\":", &signer.fingerprint);
            out.extend_from_slice(b",\"digestSignatureAlgorithm\":\"SHA256withRSA\"");
            time_or_null(&mut out, b",\"newestEventTime\":", listed.iter().map(|f| f.newest).max());
            time_or_null(&mut out, b",\"oldestEventTime\":", listed.iter().map(|f| f.oldest).min());
            let prev = previous.as_ref();
            field_opt(&mut out, b",\"previousDigestS3Bucket\":", prev.map(|_| org.bucket.as_str()));
            field_opt(&mut out, b",\"previousDigestS3Object\":", prev.map(|p| p.0.as_str()));
            field_opt(&mut out, b",\"previousDigestHashValue\":", prev.map(|p| p.1.as_str()));
            field_opt(&mut out, b",\"previousDigestHashAlgorithm\":", prev.map(|_| "SHA-256"));
            field_opt(&mut out, b",\"previousDigestSignature\":", prev.map(|p| p.2.as_str()));
            out.extend_from_slice(b",\"logFiles\":[");
            for (i, f) in listed.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                field(&mut out, b"{\"s3Bucket\":", &org.bucket);
                field(&mut out, b",\"s3Object\":", &f.key);
                field(&mut out, b",\"hashValue\":", &f.hash);
                out.extend_from_slice(b",\"hashAlgorithm\":\"SHA-256\"");
                time_or_null(&mut out, b",\"newestEventTime\":", Some(f.newest));
                time_or_null(&mut out, b",\"oldestEventTime\":", Some(f.oldest));
                out.push(b'}');
            }
            out.extend_from_slice(b"]}");
            writer.write_gz(&key, &out)?;
            let hash = sha256::hex_digest(&out);
            let signature = signer.sign(&signing_string(&time_text(to), &org.bucket, &key, &hash, prev.map(|p| p.2.as_str())))?;
            let sidecar = writer.out.join(sidecar_key(&key));
            std::fs::write(&sidecar, &signature).map_err(|source| GenError::Io { path: sidecar, source })?;
            previous = Some((key, hash, signature));
            written += 1;
            from = to;
        }
    }
    Ok(written)
}
