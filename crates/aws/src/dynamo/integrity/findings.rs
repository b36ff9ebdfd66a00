//! Open findings: opened or refreshed, cleared, and listed through the sparse index.

use aws_sdk_dynamodb::types::ReturnValue;
use trailwatch_core::integrity::Finding;
use trailwatch_core::time::EpochMillis;

use super::items::{finding_sk, key, place_key};
use super::{DynamoIntegrityStore, OPEN, OPEN_FINDINGS, OPEN_SORT, PK};
use crate::dynamo::{n, op, query_all, s};
use crate::error::{classify, AwsResult};

impl DynamoIntegrityStore {
    /// Opens a finding, or refreshes it when open: true when it was not open.
    pub(super) async fn open(&self, f: &Finding, now: EpochMillis) -> AwsResult<bool> {
        let pk = place_key("X", &f.account_id, &f.region);
        let sk = finding_sk(f.kind, &f.subject);
        let what = format!("{}, finding {pk} / {sk}", op("UpdateItem", &self.table));
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, &sk)))
            .update_expression(
                "SET #kind = :kind, account_id = :account, #region = :region, #subject = :subject, #digest = :digest, #detail = :detail, \
                 #at = if_not_exists(#at, :at), opened_at = if_not_exists(opened_at, :now), #open = :open, open_sort = :sort",
            )
            .expression_attribute_names("#kind", "kind")
            .expression_attribute_names("#region", "region")
            .expression_attribute_names("#subject", "subject")
            .expression_attribute_names("#digest", "digest")
            .expression_attribute_names("#detail", "detail")
            .expression_attribute_names("#at", "at")
            .expression_attribute_names("#open", OPEN)
            .expression_attribute_values(":kind", s(f.kind.as_str()))
            .expression_attribute_values(":account", s(&f.account_id))
            .expression_attribute_values(":region", s(&f.region))
            .expression_attribute_values(":subject", s(&f.subject))
            .expression_attribute_values(":digest", s(&f.digest))
            .expression_attribute_values(":detail", s(&f.detail))
            .expression_attribute_values(":at", n(f.at))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":open", s(OPEN))
            .expression_attribute_values(":sort", s(format!("{}#{}#{sk}", f.account_id, f.region)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| classify(&what, e))?;
        Ok(out.attributes.is_none_or(|old| old.is_empty()))
    }

    /// Clears an open finding: its item leaves the open ones, and is kept as cleared.
    pub(super) async fn clear(&self, pk: String, sk: String, now: EpochMillis) -> AwsResult<()> {
        let what = format!("{}, finding {pk} / {sk}", op("DeleteItem", &self.table));
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, &sk)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| classify(&what, e))?;
        let Some(mut item) = out.attributes.filter(|old| !old.is_empty()) else { return Ok(()) };
        let finding = self.finding(&item)?;
        item.remove(OPEN);
        item.remove(OPEN_SORT);
        item.insert(PK.to_owned(), s(place_key("C", &finding.account_id, &finding.region)));
        item.insert("cleared_at".to_owned(), n(now));
        let what = format!("{}, cleared finding {sk}", op("PutItem", &self.table));
        self.client.put_item().table_name(&self.table).set_item(Some(item)).send().await.map_err(|e| classify(&what, e))?;
        Ok(())
    }

    /// Every open finding through the sparse index, of one account if named.
    pub(super) async fn open_everywhere(&self, account_id: Option<&str>) -> AwsResult<Vec<Finding>> {
        let what = format!("{} index {OPEN_FINDINGS}", op("Query", &self.table));
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(OPEN_FINDINGS)
            .expression_attribute_names("#open", OPEN)
            .expression_attribute_values(":open", s(OPEN));
        query = match account_id {
            Some(account) => query
                .key_condition_expression("#open = :open AND begins_with(open_sort, :account)")
                .expression_attribute_values(":account", s(format!("{account}#"))),
            None => query.key_condition_expression("#open = :open"),
        };
        query_all(query, &what).await?.iter().map(|item| self.finding(item)).collect()
    }
}
