//! Sessions in DynamoDB, keyed by access key id and issue time.
//!
//! An item: `access_key_id` (S, partition key), `issued_at` (N, epoch ms, sort
//! key), `expires_at` (N, epoch ms), `expires_ttl` (N, epoch **seconds**: the
//! expiration plus the retention margin, for DynamoDB's TTL) and `session`
//! (S, the [`Session`] as JSON).
//!
//! A lookup is one Query: the key's sessions issued up to the time of use
//! (plus slack), newest first, filtered to those still valid then and still
//! retained now. DynamoDB deletes expired items late (moto never does), so
//! the filter, not the TTL, is what keeps an expired session out.
//!
//! The two copies of a cross-account call merge ([`Session::merge`]) without
//! losing the caller, whatever the order and however many writers:
//! - a copy whose caller is known (every session but the role owner's copy)
//!   is what the merge keeps, so it is written as it is, with BatchWriteItem;
//! - the role owner's `AWSAccount`-only copy is written only where no item is
//!   (`attribute_not_exists`); when one is there, it is merged into what is
//!   stored and written back only if that changes anything and only if the
//!   stored document is still the one it was merged into (compare and swap).
//!
//! Writing a caller's copy over a stored owner's copy drops what only the
//! owner's copy had; `capture` takes both copies' fields from the same
//! request and response, so the owner's copy never has more.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use aws_sdk_dynamodb::Client;
use trailwatch_core::identity::{Session, SessionStore, WINDOW_SLACK_MS};
use trailwatch_core::ports::PortError;
use trailwatch_core::time::EpochMillis;

use super::{batch_write, build_error, n, op, query_until, s, Backoff, Item, ItemReader};
use crate::error::{classify, AwsResult};

const KEY: &str = "access_key_id";
const ISSUED: &str = "issued_at";
const EXPIRES: &str = "expires_at";
/// The TTL attribute: epoch seconds.
pub const TTL_ATTRIBUTE: &str = "expires_ttl";
const SESSION: &str = "session";

/// How many times a role owner's copy is merged again after another writer changed the item.
const MERGE_TRIES: u32 = 8;

/// Sessions in a DynamoDB table (see the module doc).
#[derive(Debug, Clone)]
pub struct DynamoSessionStore {
    client: Client,
    table: String,
    retention_margin_ms: EpochMillis,
}

/// The TTL of a session: its expiration plus the margin, in epoch seconds, rounded up.
pub fn ttl_seconds(expires_at: EpochMillis, margin_ms: EpochMillis) -> i64 {
    expires_at.saturating_add(margin_ms).saturating_add(999).div_euclid(1000)
}

/// Merges the copies of one issuance that arrive in the same batch, in
/// their order; the first copy's place in the batch is kept.
fn merge_copies(sessions: &[Session]) -> Vec<Session> {
    let mut merged: Vec<Session> = Vec::with_capacity(sessions.len());
    for session in sessions {
        match merged.iter_mut().find(|m| m.same_issue(session)) {
            Some(stored) => stored.merge(session),
            None => merged.push(session.clone()),
        }
    }
    merged
}

impl DynamoSessionStore {
    /// Sessions are kept (and returned) until `retention_margin_ms` after
    /// their credentials expire; negative margins count as 0.
    pub fn new(client: Client, table: impl Into<String>, retention_margin_ms: i64) -> Self {
        DynamoSessionStore { client, table: table.into(), retention_margin_ms: retention_margin_ms.max(0) }
    }

    fn place(&self, key: &str, issued_at: EpochMillis) -> String {
        format!("dynamodb table {}, session {key} issued at {issued_at}", self.table)
    }

    fn item(&self, session: &Session) -> AwsResult<Item> {
        let json = serde_json::to_string(session)
            .map_err(|e| PortError::Invalid { what: self.place(&session.access_key_id, session.issued_at), message: format!("session as JSON: {e}") })?;
        Ok(Item::from([
            (KEY.to_owned(), s(&session.access_key_id)),
            (ISSUED.to_owned(), n(session.issued_at)),
            (EXPIRES.to_owned(), n(session.expires_at)),
            (TTL_ATTRIBUTE.to_owned(), n(ttl_seconds(session.expires_at, self.retention_margin_ms))),
            (SESSION.to_owned(), s(json)),
        ]))
    }

    fn parse(&self, item: &Item) -> AwsResult<Session> {
        let read = ItemReader::new(item, format!("dynamodb table {}", self.table));
        let key = read.s(KEY)?;
        let issued_at: EpochMillis = read.n(ISSUED)?;
        ItemReader::new(item, self.place(key, issued_at)).json(SESSION)
    }

    /// Writes a role owner's copy without replacing a richer stored copy (see the module doc).
    async fn put_owner_copy(&self, owner: &Session) -> AwsResult<()> {
        let what = format!("{}, session {} issued at {}", op("PutItem", &self.table), owner.access_key_id, owner.issued_at);
        let mut backoff = Backoff::new(MERGE_TRIES);
        loop {
            let stored = self.get_exact(&owner.access_key_id, owner.issued_at).await?;
            let (write, condition, old) = match stored {
                None => (owner.clone(), format!("attribute_not_exists({KEY})"), None),
                Some((stored, json)) => {
                    let mut merged = stored.clone();
                    merged.merge(owner);
                    if merged == stored {
                        return Ok(());
                    }
                    // `session` is a reserved word in expressions.
                    (merged, "#session = :old".to_owned(), Some(json))
                }
            };
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(self.item(&write)?))
                .condition_expression(condition)
                .set_expression_attribute_names(old.is_some().then(|| [("#session".to_owned(), SESSION.to_owned())].into()))
                .set_expression_attribute_values(old.map(|json| [(":old".to_owned(), s(json))].into()))
                .send()
                .await;
            match result {
                Ok(_) => return Ok(()),
                Err(e) if matches!(e.as_service_error(), Some(PutItemError::ConditionalCheckFailedException(_))) => {
                    // Another writer got there first: merge into what it wrote.
                    if !backoff.wait().await {
                        return Err(PortError::backend(what, format!("the item kept changing: gave up after {} merges", backoff.tries()), true));
                    }
                }
                Err(e) => return Err(classify(&what, e)),
            }
        }
    }

    /// The stored session of exactly this key and issue time, and its JSON as stored.
    async fn get_exact(&self, key: &str, issued_at: EpochMillis) -> AwsResult<Option<(Session, String)>> {
        let what = format!("{}, session {key} issued at {issued_at}", op("GetItem", &self.table));
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY, s(key))
            .key(ISSUED, n(issued_at))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(&what, e))?;
        let Some(item) = out.item else { return Ok(None) };
        let json = ItemReader::new(&item, self.place(key, issued_at)).s(SESSION)?.to_owned();
        Ok(Some((self.parse(&item)?, json)))
    }
}

#[async_trait]
impl SessionStore for DynamoSessionStore {
    async fn put(&self, sessions: Arc<[Session]>) -> Result<(), PortError> {
        let (owners, callers): (Vec<Session>, Vec<Session>) = merge_copies(&sessions).into_iter().partition(Session::caller_is_account_only);
        let what = op("BatchWriteItem", &self.table);
        let mut writes = Vec::with_capacity(callers.len());
        for session in &callers {
            let put = PutRequest::builder().set_item(Some(self.item(session)?)).build().map_err(|e| build_error(&what, e))?;
            writes.push(WriteRequest::builder().put_request(put).build());
        }
        batch_write(&self.client, &self.table, writes).await?;
        for owner in &owners {
            self.put_owner_copy(owner).await?;
        }
        Ok(())
    }

    async fn get(&self, access_key_id: &str, at: EpochMillis, now: EpochMillis) -> Result<Option<Session>, PortError> {
        let what = format!("{}, sessions of {access_key_id}", op("Query", &self.table));
        let retained_since = now.saturating_sub(self.retention_margin_ms);
        let now_seconds = now.div_euclid(1000);
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .scan_index_forward(false)
            .key_condition_expression(format!("{KEY} = :key AND {ISSUED} <= :latest"))
            .filter_expression(format!("{EXPIRES} >= :earliest AND {EXPIRES} >= :retained AND {TTL_ATTRIBUTE} >= :now"))
            .expression_attribute_values(":key", s(access_key_id))
            .expression_attribute_values(":latest", n(at.saturating_add(WINDOW_SLACK_MS)))
            .expression_attribute_values(":earliest", n(at.saturating_sub(WINDOW_SLACK_MS)))
            .expression_attribute_values(":retained", n(retained_since))
            .expression_attribute_values(":now", n(now_seconds));
        let items = query_until(query, &what, |found| !found.is_empty()).await?;
        // Newest first: the first found is the latest issued of those valid.
        match items.first() {
            None => Ok(None),
            Some(item) => {
                let session = self.parse(item)?;
                // The filter said so; a session that says otherwise is not returned.
                Ok((session.valid_at(at) && session.expires_at >= retained_since).then_some(session))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailwatch_core::conformance::{owner_copy, sample_session};

    #[test]
    fn ttl_is_expiry_plus_margin_in_seconds_rounded_up() {
        assert_eq!(ttl_seconds(1_700_000_000_000, 0), 1_700_000_000);
        assert_eq!(ttl_seconds(1_700_000_000_001, 60_000), 1_700_000_061);
        assert_eq!(ttl_seconds(i64::MAX, 1), i64::MAX / 1000);
    }

    #[test]
    fn copies_in_one_batch_merge_into_the_callers() {
        let caller = sample_session("ASIAMERGE", 1_700_000_000_000, 3_600_000, "e1");
        let owner = owner_copy(&caller);
        let other = sample_session("ASIAOTHER", 1_700_000_000_000, 3_600_000, "e2");
        let merged = merge_copies(&[owner.clone(), other.clone(), caller.clone(), owner]);
        assert_eq!(merged, vec![caller, other]);
    }
}
