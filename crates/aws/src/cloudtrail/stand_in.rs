//! CloudTrail's `ListPublicKeys` for tests, answered by the fault proxy
//! ([`crate::faults::FaultProxy::answer_target`]) since the emulator has no
//! such call.
//!
//! [`PublicKeyService`] holds keys per region, each valid over a time
//! range, and answers as the service does (awsJson1_1): the request's
//! `StartTime` and `EndTime` are epoch seconds (either missing: now); the
//! answer lists the keys of the request's region (its SigV4 credential
//! scope) whose validity overlaps that range, as
//! `{"PublicKeyList":[{"Value":"<base64 DER>","ValidityStartTime":<epoch s>,"ValidityEndTime":<epoch s>,"Fingerprint":"…"}]}`,
//! a page at a time with `NextToken` when a page size is set. It counts the
//! calls, so a test can tell how often keys were fetched.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::{json, Value};
use trailwatch_core::time::EpochMillis;

use super::LIST_PUBLIC_KEYS_TARGET;
use crate::faults::{Answer, CannedCall, CannedReply, FaultProxy};

/// One key the service holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedKey {
    pub region: String,
    pub fingerprint: String,
    /// PKCS#1 DER.
    pub der: Vec<u8>,
    pub valid_from: EpochMillis,
    pub valid_until: EpochMillis,
}

/// One call the service answered: its region and time range (epoch millis).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCall {
    pub region: String,
    pub start: EpochMillis,
    pub end: EpochMillis,
    pub next_token: Option<String>,
}

/// Keys per region with their validity; see the module's doc.
#[derive(Debug, Default)]
pub struct PublicKeyService {
    keys: Mutex<Vec<ServedKey>>,
    calls: Mutex<Vec<KeyCall>>,
    /// Keys per page; None: every key in one page.
    page_size: Option<usize>,
}

impl PublicKeyService {
    pub fn new() -> Arc<PublicKeyService> {
        Arc::new(PublicKeyService::default())
    }

    /// A service answering `page_size` keys a page, with `NextToken`.
    pub fn paged(page_size: usize) -> Arc<PublicKeyService> {
        Arc::new(PublicKeyService { page_size: Some(page_size.max(1)), ..PublicKeyService::default() })
    }

    /// Adds a key of `region` valid from `valid_from` to `valid_until`.
    pub fn add(&self, region: &str, fingerprint: &str, der: &[u8], valid_from: EpochMillis, valid_until: EpochMillis) {
        let key = ServedKey { region: region.to_owned(), fingerprint: fingerprint.to_owned(), der: der.to_vec(), valid_from, valid_until };
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).push(key);
    }

    /// Makes `proxy` answer `ListPublicKeys` from this service.
    pub fn install(self: &Arc<Self>, proxy: &FaultProxy) {
        proxy.answer_target(LIST_PUBLIC_KEYS_TARGET, self.clone());
    }

    /// The calls answered so far, in order (each page is one).
    pub fn calls(&self) -> Vec<KeyCall> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many calls were answered.
    pub fn call_count(&self) -> usize {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn reply(&self, call: CannedCall<'_>) -> Result<Value, CannedReply> {
        let bad = |message: String| CannedReply::error(400, "InvalidParameterException", &message);
        let request: Value = if call.body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(call.body).map_err(|e| CannedReply::error(400, "SerializationException", &format!("the body is not JSON: {e}")))?
        };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let seconds = |name: &str| match request.get(name) {
            None | Some(Value::Null) => Ok(now),
            Some(v) => v.as_f64().ok_or_else(|| bad(format!("{name} is not epoch seconds: {v}"))),
        };
        let (start, end) = (seconds_to_millis(seconds("StartTime")?), seconds_to_millis(seconds("EndTime")?));
        if start > end {
            return Err(CannedReply::error(400, "InvalidTimeRangeException", "Start time must be before end time."));
        }
        let token = request.get("NextToken").and_then(Value::as_str).map(str::to_owned);
        let skip = match &token {
            None => 0,
            Some(t) => t.parse::<usize>().map_err(|_| CannedReply::error(400, "InvalidTokenException", "The NextToken is not valid."))?,
        };
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).push(KeyCall { region: call.region.to_owned(), start, end, next_token: token });
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let matching: Vec<&ServedKey> = keys.iter().filter(|k| k.region == call.region && k.valid_from <= end && k.valid_until >= start).collect();
        let take = self.page_size.unwrap_or(matching.len().max(1));
        let page: Vec<Value> = matching
            .iter()
            .skip(skip)
            .take(take)
            .map(|k| {
                json!({
                    "Value": base64::engine::general_purpose::STANDARD.encode(&k.der),
                    "ValidityStartTime": millis_to_seconds(k.valid_from),
                    "ValidityEndTime": millis_to_seconds(k.valid_until),
                    "Fingerprint": k.fingerprint,
                })
            })
            .collect();
        let mut answer = json!({ "PublicKeyList": page });
        if skip + take < matching.len() {
            answer["NextToken"] = json!((skip + take).to_string());
        }
        Ok(answer)
    }
}

impl Answer for PublicKeyService {
    fn answer(&self, call: CannedCall<'_>) -> CannedReply {
        self.reply(call).map_or_else(|error| error, CannedReply::ok)
    }
}

fn seconds_to_millis(seconds: f64) -> EpochMillis {
    (seconds * 1000.0).round() as EpochMillis
}

fn millis_to_seconds(millis: EpochMillis) -> f64 {
    millis as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(region: &'a str, body: &'a str) -> CannedCall<'a> {
        CannedCall { region, body: body.as_bytes() }
    }

    #[test]
    fn answers_the_keys_of_the_region_valid_in_the_range_a_page_at_a_time() {
        let service = PublicKeyService::paged(1);
        service.add("eu-west-1", "aa", b"der-a", 1_000_000, 2_000_000);
        service.add("eu-west-1", "bb", b"der-b", 2_000_000, 3_000_000);
        service.add("us-east-1", "cc", b"der-c", 0, 9_000_000);
        let first = service.answer(call("eu-west-1", r#"{"StartTime":1500,"EndTime":2500}"#));
        assert_eq!(first.status, 200);
        assert_eq!(first.body["PublicKeyList"][0]["Fingerprint"], "aa");
        assert_eq!(first.body["PublicKeyList"][0]["Value"], base64::engine::general_purpose::STANDARD.encode(b"der-a"));
        assert_eq!(first.body["PublicKeyList"][0]["ValidityStartTime"], 1000.0);
        let token = first.body["NextToken"].as_str().unwrap().to_owned();
        let second = service.answer(call("eu-west-1", &format!(r#"{{"StartTime":1500,"EndTime":2500,"NextToken":"{token}"}}"#)));
        assert_eq!(second.body["PublicKeyList"][0]["Fingerprint"], "bb");
        assert!(second.body.get("NextToken").is_none());
        let early = service.answer(call("eu-west-1", r#"{"StartTime":100,"EndTime":900}"#));
        assert_eq!(early.body["PublicKeyList"], json!([]), "no key valid before its time");
        assert_eq!(service.call_count(), 3);
        assert_eq!(service.calls()[0], KeyCall { region: "eu-west-1".into(), start: 1_500_000, end: 2_500_000, next_token: None });
        let wrong = service.answer(call("eu-west-1", r#"{"StartTime":2500,"EndTime":1500}"#));
        assert_eq!((wrong.status, wrong.body["__type"].as_str()), (400, Some("InvalidTimeRangeException")));
    }
}
