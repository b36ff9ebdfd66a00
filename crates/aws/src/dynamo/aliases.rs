//! Account alias overrides: names an operator gives accounts, over the ones
//! Organizations has. One item per account: `account_id` (S, the key) and
//! `alias` (S). The table is small (one item per renamed account) and read
//! whole.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;

use super::{op, s, Item, ItemReader};
use crate::error::{classify, AwsResult};

/// The alias overrides in DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoAliases {
    client: Client,
    table: String,
}

impl DynamoAliases {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoAliases { client, table: table.into() }
    }

    /// Every override: account id → alias.
    pub async fn all(&self) -> AwsResult<HashMap<String, String>> {
        let what = op("Scan", &self.table);
        let mut aliases = HashMap::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| classify(&what, e))?;
            for item in out.items() {
                let read = ItemReader::new(item, format!("dynamodb table {}", self.table));
                aliases.insert(read.s("account_id")?.to_owned(), read.s("alias")?.to_owned());
            }
            match out.last_evaluated_key.filter(|k| !k.is_empty()) {
                Some(next) => start = Some(next),
                None => return Ok(aliases),
            }
        }
    }

    /// Sets an account's alias; `None` removes the override.
    pub async fn set(&self, account_id: &str, alias: Option<&str>) -> AwsResult<()> {
        match alias {
            Some(alias) => {
                self.client
                    .put_item()
                    .table_name(&self.table)
                    .item("account_id", s(account_id))
                    .item("alias", s(alias))
                    .send()
                    .await
                    .map_err(|e| classify(&format!("{}, account {account_id}", op("PutItem", &self.table)), e))?;
            }
            None => {
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .key("account_id", s(account_id))
                    .send()
                    .await
                    .map_err(|e| classify(&format!("{}, account {account_id}", op("DeleteItem", &self.table)), e))?;
            }
        }
        Ok(())
    }
}
