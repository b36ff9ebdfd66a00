//! Hourly digest files (log file integrity validation), per account and
//! region, in CloudTrail's digest structure: each lists the log files
//! delivered in its hour with the SHA-256 of their uncompressed content, and
//! chains to the previous digest by key and hash. An hour without files
//! still gets a digest with an empty `logFiles`.
//!
//! Signatures are not produced yet (there are no keys): `previousDigestSignature`
//! and `digestPublicKeyFingerprint` are `null` rather than fake values.
//! Signing arrives with the integrity-validation work.

use trailwatch_core::layout::{ObjectKind, TrailKey};
use trailwatch_core::time::EpochMillis;

use crate::delivery::{FileMeta, Writer};
use crate::org::{Org, TRAIL_NAME};
use crate::prng::Rng;
use crate::sha256;
use crate::text::{field, field_opt, push_time};
use crate::GenError;

const HOUR: i64 = 3_600_000;
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
    let mut written = 0;
    for (r, region) in a.regions.iter().enumerate() {
        let offset = rng.between(60, 299) * 1000;
        let mut mine: Vec<&FileMeta> = files.iter().filter(|f| f.region == r).collect();
        mine.sort_by(|x, y| (x.time, &x.key).cmp(&(y.time, &y.key)));
        let mut next = mine.into_iter().peekable();
        let mut previous: Option<(String, String)> = None;
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
            out.extend_from_slice(b",\"digestPublicKeyFingerprint\":null,\"digestSignatureAlgorithm\":\"SHA256withRSA\"");
            time_or_null(&mut out, b",\"newestEventTime\":", listed.iter().map(|f| f.newest).max());
            time_or_null(&mut out, b",\"oldestEventTime\":", listed.iter().map(|f| f.oldest).min());
            let prev = previous.as_ref();
            field_opt(&mut out, b",\"previousDigestS3Bucket\":", prev.map(|_| org.bucket.as_str()));
            field_opt(&mut out, b",\"previousDigestS3Object\":", prev.map(|p| p.0.as_str()));
            field_opt(&mut out, b",\"previousDigestHashValue\":", prev.map(|p| p.1.as_str()));
            field_opt(&mut out, b",\"previousDigestHashAlgorithm\":", prev.map(|_| "SHA-256"));
            out.extend_from_slice(b",\"previousDigestSignature\":null,\"logFiles\":[");
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
            previous = Some((key, sha256::hex_digest(&out)));
            written += 1;
            from = to;
        }
    }
    Ok(written)
}
