//! Account names from AWS Organizations.
//!
//! [`load_directory`] reads every account (ListAccounts), its tags
//! (ListTagsForResource) and the path of organizational units above it
//! (ListParents up to the root; each OU is described and its parent listed
//! once per load, however many accounts it holds). Calls are made one after
//! another: Organizations allows few requests a second, and the SDK's retry
//! backs off when throttled.
//!
//! [`OrganizationsDirectory`] keeps the directory current: it refreshes on a
//! schedule and keeps the last good copy when a refresh fails.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use aws_sdk_organizations::primitives::DateTimeFormat;
use aws_sdk_organizations::types::ParentType;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use trailwatch_core::accounts::{Account, AccountDirectory, AccountTag};
use trailwatch_core::ports::PortError;

use crate::error::{classify, AwsResult};

/// OUs nest at most five deep under the root; more means a loop.
const MAX_DEPTH: usize = 10;

/// The root's name when ListRoots does not give one.
const ROOT_NAME: &str = "Root";

/// Reads the organization's accounts with their tags and OU paths
/// (`Root/Security/Prod`).
pub async fn load_directory(client: &aws_sdk_organizations::Client) -> AwsResult<AccountDirectory> {
    let listed = list_accounts(client).await?;
    let mut paths = OuPaths::new(client).await?;
    let mut accounts = Vec::with_capacity(listed.len());
    for account in listed {
        let Some(id) = account.id() else { continue };
        let tags = list_tags(client, id).await?;
        let ou_path = paths.path_of(id).await?;
        accounts.push(Account {
            id: id.to_owned(),
            arn: account.arn().map(str::to_owned),
            email: account.email().map(str::to_owned),
            name: account.name().map(str::to_owned),
            // `State` replaces `Status`, which AWS retires; either reads `ACTIVE`, `SUSPENDED`, …
            status: account.state().map(|s| s.as_str().to_owned()).or_else(|| account.status().map(|s| s.as_str().to_owned())),
            joined_method: account.joined_method().map(|m| m.as_str().to_owned()),
            joined_timestamp: account.joined_timestamp().and_then(|t| t.fmt(DateTimeFormat::DateTime).ok()),
            ou_path: Some(ou_path),
            tags,
        });
    }
    directory_of(accounts)
}

/// A directory of these accounts. The directory is built from the shape
/// `list-accounts` prints, which [`Account`] serializes to.
fn directory_of(accounts: Vec<Account>) -> AwsResult<AccountDirectory> {
    let what = "organizations:ListAccounts";
    let json = serde_json::to_string(&serde_json::json!({ "Accounts": accounts })).map_err(|e| PortError::backend(what, e, false))?;
    AccountDirectory::from_list_accounts(&json, what).map_err(|e| PortError::backend(what, e, false))
}

async fn list_accounts(client: &aws_sdk_organizations::Client) -> AwsResult<Vec<aws_sdk_organizations::types::Account>> {
    let mut accounts = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client.list_accounts().set_next_token(token.take()).send().await.map_err(|e| classify("organizations:ListAccounts", e))?;
        accounts.extend(page.accounts().iter().cloned());
        match page.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => return Ok(accounts),
        }
    }
}

async fn list_tags(client: &aws_sdk_organizations::Client, account_id: &str) -> AwsResult<Vec<AccountTag>> {
    let what = format!("organizations:ListTagsForResource {account_id}");
    let mut tags = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client.list_tags_for_resource().resource_id(account_id).set_next_token(token.take()).send().await.map_err(|e| classify(&what, e))?;
        tags.extend(page.tags().iter().map(|t| AccountTag { key: t.key().to_owned(), value: t.value().to_owned() }));
        match page.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => return Ok(tags),
        }
    }
}

/// The paths of the roots and OUs met so far, by id.
struct OuPaths<'a> {
    client: &'a aws_sdk_organizations::Client,
    paths: HashMap<String, String>,
}

impl<'a> OuPaths<'a> {
    /// Starts with the roots' names.
    async fn new(client: &'a aws_sdk_organizations::Client) -> AwsResult<OuPaths<'a>> {
        let out = client.list_roots().send().await.map_err(|e| classify("organizations:ListRoots", e))?;
        let paths = out.roots().iter().filter_map(|r| Some((r.id()?.to_owned(), r.name().unwrap_or(ROOT_NAME).to_owned()))).collect();
        Ok(OuPaths { client, paths })
    }

    /// The path of the containers above `child` (an account or an OU).
    async fn path_of(&mut self, child: &str) -> AwsResult<String> {
        // Walk up until a container whose path is known, remembering the OUs on the way.
        let mut unnamed: Vec<(String, String)> = Vec::new(); // (OU id, name), nearest first
        let (mut id, mut kind) = self.parent(child).await?;
        let base = loop {
            if let Some(path) = self.paths.get(&id) {
                break path.clone();
            }
            match kind {
                ParentType::Root => break ROOT_NAME.to_owned(), // a root ListRoots did not show
                _ if unnamed.len() >= MAX_DEPTH => {
                    return Err(PortError::backend(format!("organizations:ListParents {child}"), format!("more than {MAX_DEPTH} OUs above it"), false));
                }
                _ => {
                    let name = self.ou_name(&id).await?;
                    let (parent, parent_kind) = self.parent(&id).await?;
                    unnamed.push((std::mem::replace(&mut id, parent), name));
                    kind = parent_kind;
                }
            }
        };
        let mut path = base;
        for (ou, name) in unnamed.into_iter().rev() {
            path = format!("{path}/{name}");
            self.paths.insert(ou, path.clone());
        }
        Ok(path)
    }

    async fn parent(&self, child: &str) -> AwsResult<(String, ParentType)> {
        let what = format!("organizations:ListParents {child}");
        let out = self.client.list_parents().child_id(child).send().await.map_err(|e| classify(&what, e))?;
        let parent = out.parents().first().ok_or_else(|| PortError::backend(&what, "no parent", false))?;
        let id = parent.id().ok_or_else(|| PortError::backend(&what, "a parent without an id", false))?;
        Ok((id.to_owned(), parent.r#type().cloned().unwrap_or(ParentType::OrganizationalUnit)))
    }

    async fn ou_name(&self, ou: &str) -> AwsResult<String> {
        let what = format!("organizations:DescribeOrganizationalUnit {ou}");
        let out = self.client.describe_organizational_unit().organizational_unit_id(ou).send().await.map_err(|e| classify(&what, e))?;
        Ok(out.organizational_unit().and_then(|u| u.name()).unwrap_or(ou).to_owned())
    }
}

/// The organization's accounts, kept current, with configured aliases
/// winning over account names.
#[derive(Debug)]
pub struct OrganizationsDirectory {
    client: aws_sdk_organizations::Client,
    overrides: HashMap<String, String>,
    current: RwLock<Current>,
}

#[derive(Debug)]
struct Current {
    directory: Arc<AccountDirectory>,
    /// When it was read from Organizations; None for the initial copy.
    loaded_at: Option<Instant>,
}

impl OrganizationsDirectory {
    /// A directory that starts as `initial` (empty, or an accounts file)
    /// until the first refresh.
    pub fn new(client: aws_sdk_organizations::Client, overrides: HashMap<String, String>, initial: AccountDirectory) -> Self {
        let directory = Arc::new(with_overrides(initial, &overrides));
        OrganizationsDirectory { client, overrides, current: RwLock::new(Current { directory, loaded_at: None }) }
    }

    /// A directory read from Organizations now.
    pub async fn load(client: aws_sdk_organizations::Client, overrides: HashMap<String, String>) -> AwsResult<Self> {
        let directory = OrganizationsDirectory::new(client, overrides, AccountDirectory::new());
        directory.refresh().await?;
        Ok(directory)
    }

    /// The directory as last read.
    pub fn current(&self) -> Arc<AccountDirectory> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).directory.clone()
    }

    /// How long ago the directory was read from Organizations; None before the first read.
    pub fn age(&self) -> Option<Duration> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).loaded_at.map(|t| t.elapsed())
    }

    /// Reads the directory again; on failure the current one stays. Returns
    /// the number of accounts.
    pub async fn refresh(&self) -> AwsResult<usize> {
        let directory = with_overrides(load_directory(&self.client).await?, &self.overrides);
        let accounts = directory.len();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Current { directory: Arc::new(directory), loaded_at: Some(Instant::now()) };
        Ok(accounts)
    }

    /// Refreshes every `interval` until `shutdown`; failures are logged and
    /// the last good directory kept.
    pub fn spawn_refresh(self: &Arc<Self>, interval: Duration, shutdown: CancellationToken) -> JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                // A refresh stopped halfway changes nothing: the directory is swapped at the end.
                let refreshed = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    refreshed = this.refresh() => refreshed,
                };
                match refreshed {
                    Ok(accounts) => tracing::debug!(accounts, "account directory refreshed from Organizations"),
                    Err(e) => tracing::warn!(
                        error = %e,
                        kept_age_s = this.age().map(|a| a.as_secs()),
                        kept_accounts = this.current().len(),
                        "could not refresh the account directory from Organizations; keeping the last one"
                    ),
                }
            }
        })
    }
}

/// The directory with these aliases set over account names.
fn with_overrides(mut directory: AccountDirectory, overrides: &HashMap<String, String>) -> AccountDirectory {
    for (account_id, alias) in overrides {
        directory.set_alias(account_id, alias);
    }
    directory
}
