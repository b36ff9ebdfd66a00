//! The organization's accounts and what they are called: read from the JSON
//! that `aws organizations list-accounts` prints (the embedded default, so
//! aliases work without AWS), later from Organizations itself, with overrides.
//!
//! Two optional members extend that shape, since `list-accounts` leaves them
//! out: `OuPath` (`Root/Workloads/Prod`, as `list-parents` walks it) and
//! `Tags` (`[{"Key": …, "Value": …}]`, as `list-tags-for-resource` prints them).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// One account as Organizations describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Account {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The account's name: trailwatch's alias for it unless overridden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `ACTIVE`, `SUSPENDED`, `PENDING_CLOSURE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined_timestamp: Option<String>,
    /// The organizational units above the account, from the root: `Root/Workloads/Prod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ou_path: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<AccountTag>,
}

/// A tag on an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccountTag {
    pub key: String,
    pub value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListAccounts {
    accounts: Vec<Account>,
}

/// Why an accounts file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct AccountsError(String);

/// The accounts known by id, with their aliases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountDirectory {
    accounts: HashMap<String, Account>,
    overrides: HashMap<String, String>,
}

fn valid_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit())
}

impl AccountDirectory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `{"Accounts":[{"Id":…,"Name":…},…]}` as `list-accounts` prints
    /// it (a bare array of accounts is accepted too). `origin` names the file
    /// in errors.
    pub fn from_list_accounts(json: &str, origin: &str) -> Result<Self, AccountsError> {
        let accounts = match serde_json::from_str::<ListAccounts>(json) {
            Ok(list) => list.accounts,
            Err(first) => serde_json::from_str::<Vec<Account>>(json).map_err(|_| {
                AccountsError(format!(
                    "{origin}: not the output of `aws organizations list-accounts` (line {}, column {}): {first}",
                    first.line(),
                    first.column()
                ))
            })?,
        };
        let mut directory = AccountDirectory::new();
        for (i, account) in accounts.into_iter().enumerate() {
            if !valid_id(&account.id) {
                return Err(AccountsError(format!("{origin}: account {} has Id {:?}: not 12 digits", i + 1, account.id)));
            }
            directory.accounts.insert(account.id.clone(), account);
        }
        Ok(directory)
    }

    /// Sets an alias that wins over the account's name.
    pub fn set_alias(&mut self, account_id: &str, alias: &str) {
        self.overrides.insert(account_id.to_owned(), alias.to_owned());
    }

    /// The account's alias: the override, else its name.
    pub fn alias(&self, account_id: &str) -> Option<&str> {
        self.overrides.get(account_id).map(String::as_str).or_else(|| self.accounts.get(account_id).and_then(|a| a.name.as_deref()))
    }

    pub fn get(&self, account_id: &str) -> Option<&Account> {
        self.accounts.get(account_id)
    }

    /// Every account, by id.
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }

    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }
}

/// An account directory that can be replaced while it is read: AWS mode
/// refreshes it from Organizations on a schedule. Readers take the current
/// copy once per batch.
#[derive(Debug, Default)]
pub struct SharedDirectory {
    current: std::sync::RwLock<std::sync::Arc<AccountDirectory>>,
}

impl SharedDirectory {
    pub fn new(directory: AccountDirectory) -> Self {
        SharedDirectory { current: std::sync::RwLock::new(std::sync::Arc::new(directory)) }
    }

    /// The directory as it is now.
    pub fn current(&self) -> std::sync::Arc<AccountDirectory> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the directory for every later reader.
    pub fn replace(&self, directory: AccountDirectory) {
        let next = std::sync::Arc::new(directory);
        match self.current.write() {
            Ok(mut guard) => *guard = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }
}

impl From<AccountDirectory> for SharedDirectory {
    fn from(directory: AccountDirectory) -> Self {
        SharedDirectory::new(directory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"{"Accounts":[
        {"Id":"111111111111","Arn":"arn:aws:organizations::999999999999:account/o-abc/111111111111","Email":"pay@example.com","Name":"Prod Payments","Status":"ACTIVE","JoinedMethod":"CREATED","JoinedTimestamp":"2021-08-24T05:28:00.393000+00:00"},
        {"Id":"222222222222","Name":"Sandbox","Status":"SUSPENDED","OuPath":"Root/Sandbox","Tags":[{"Key":"owner","Value":"alice"}]}
    ]}"#;

    #[test]
    fn names_become_aliases_and_overrides_win() {
        let mut dir = AccountDirectory::from_list_accounts(LIST, "accounts.json").unwrap();
        assert_eq!(dir.len(), 2);
        assert_eq!(dir.alias("111111111111"), Some("Prod Payments"));
        assert_eq!(dir.get("222222222222").and_then(|a| a.status.as_deref()), Some("SUSPENDED"));
        assert_eq!(dir.alias("333333333333"), None);
        let sandbox = dir.get("222222222222").unwrap();
        assert_eq!(sandbox.ou_path.as_deref(), Some("Root/Sandbox"));
        assert_eq!(sandbox.tags, vec![AccountTag { key: "owner".into(), value: "alice".into() }]);
        assert!(dir.get("111111111111").unwrap().tags.is_empty());
        dir.set_alias("111111111111", "payments-prod");
        assert_eq!(dir.alias("111111111111"), Some("payments-prod"));
    }

    #[test]
    fn a_bare_array_is_accepted() {
        let dir = AccountDirectory::from_list_accounts(r#"[{"Id":"111111111111","Name":"A"}]"#, "a.json").unwrap();
        assert_eq!(dir.alias("111111111111"), Some("A"));
    }

    #[test]
    fn bad_files_are_named_with_the_reason() {
        let err = AccountDirectory::from_list_accounts(r#"{"Users":[]}"#, "orgs.json").unwrap_err();
        assert!(err.0.starts_with("orgs.json: not the output of `aws organizations list-accounts`"), "{err}");
        let err = AccountDirectory::from_list_accounts(r#"{"Accounts":[{"Id":"12345"}]}"#, "orgs.json").unwrap_err();
        assert_eq!(err.0, r#"orgs.json: account 1 has Id "12345": not 12 digits"#);
    }
}
