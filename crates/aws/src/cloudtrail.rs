//! CloudTrail's public keys, which verify digest signatures in AWS mode.
//!
//! CloudTrail signs each region's digests with that region's own key pairs,
//! so [`CloudTrailKeys`] asks `ListPublicKeys` in the digest's region (a
//! per-call region override of one client): the keys whose private keys
//! signed digests in a time range, each a PKCS#1 DER key and its
//! fingerprint. [`stand_in`] answers that call in tests (the emulator has
//! no `ListPublicKeys`).

pub mod stand_in;

use async_trait::async_trait;
use aws_sdk_cloudtrail::config::Region;
use aws_sdk_cloudtrail::primitives::DateTime;
use trailwatch_core::integrity::{KeyFetcher, PublicKeys};
use trailwatch_core::ports::PortError;
use trailwatch_core::time::EpochMillis;

use crate::error::{classify, invalid, AwsResult};

/// The `X-Amz-Target` of `ListPublicKeys`, as the SDK sends it.
pub const LIST_PUBLIC_KEYS_TARGET: &str = "CloudTrail_20131101.ListPublicKeys";

/// Pages of one `ListPublicKeys` answer followed at most (the API has
/// returned one page so far; a service that kept sending tokens must not
/// hold a digest check forever).
const MAX_PAGES: usize = 100;

/// Public keys from CloudTrail's `ListPublicKeys`, per region.
#[derive(Debug, Clone)]
pub struct CloudTrailKeys {
    client: aws_sdk_cloudtrail::Client,
}

impl CloudTrailKeys {
    pub fn new(client: aws_sdk_cloudtrail::Client) -> Self {
        CloudTrailKeys { client }
    }

    /// The keys of `region` whose private keys signed digests between
    /// `start` and `end`, every page, parsed.
    pub async fn list(&self, region: &str, start: EpochMillis, end: EpochMillis) -> AwsResult<PublicKeys> {
        let what = format!("cloudtrail:ListPublicKeys {region}");
        if region.is_empty() {
            return Err(invalid(&what, "no region given: each region has its own keys"));
        }
        let mut keys = PublicKeys::none();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .client
                .list_public_keys()
                .start_time(DateTime::from_millis(start))
                .end_time(DateTime::from_millis(end))
                .set_next_token(token.clone())
                .customize()
                .config_override(aws_sdk_cloudtrail::config::Builder::default().region(Region::new(region.to_owned())))
                .send()
                .await
                .map_err(|e| classify(&what, e))?;
            for key in page.public_key_list() {
                let Some(fingerprint) = key.fingerprint().filter(|f| !f.is_empty()) else {
                    return Err(invalid(&what, "a key without a Fingerprint"));
                };
                let Some(der) = key.value() else {
                    return Err(invalid(&what, format!("key {fingerprint} of {region} has no Value")));
                };
                keys.insert_der(fingerprint, der.as_ref()).map_err(|e| invalid(&what, format!("key {fingerprint} of {region}: {}", e.message)))?;
            }
            match page.next_token().filter(|t| !t.is_empty()) {
                None => return Ok(keys),
                Some(next) if token.as_deref() == Some(next) => {
                    return Err(PortError::backend(&what, format!("the same NextToken twice ({next}): the listing does not advance"), false));
                }
                Some(next) => token = Some(next.to_owned()),
            }
        }
        Err(PortError::backend(&what, format!("more than {MAX_PAGES} pages of keys"), false))
    }
}

#[async_trait]
impl KeyFetcher for CloudTrailKeys {
    async fn fetch(&self, region: &str, start: EpochMillis, end: EpochMillis) -> Result<PublicKeys, PortError> {
        self.list(region, start, end).await
    }
}
