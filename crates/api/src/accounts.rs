//! Account names with the aliases set through the API: the directory read
//! from the accounts file, and a store the integrator supplies that keeps
//! aliases across restarts.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};

use async_trait::async_trait;
use trailwatch_core::accounts::{Account, AccountDirectory};
use trailwatch_core::PortError;

/// Keeps aliases set with `setAccountAlias`.
#[async_trait]
pub trait AliasStore: Send + Sync {
    async fn save(&self, account_id: &str, alias: &str) -> Result<(), PortError>;
}

/// Aliases kept in memory only (tests, demos).
#[derive(Default)]
pub struct MemoryAliases {
    saved: Mutex<HashMap<String, String>>,
}

impl MemoryAliases {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn saved(&self) -> HashMap<String, String> {
        self.saved.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[async_trait]
impl AliasStore for MemoryAliases {
    async fn save(&self, account_id: &str, alias: &str) -> Result<(), PortError> {
        self.saved.lock().unwrap_or_else(PoisonError::into_inner).insert(account_id.to_owned(), alias.to_owned());
        Ok(())
    }
}

/// The accounts and their aliases, shared by the API and whoever else names accounts.
pub struct Accounts {
    directory: RwLock<AccountDirectory>,
    store: Box<dyn AliasStore>,
}

impl Accounts {
    pub fn new(directory: AccountDirectory, store: Box<dyn AliasStore>) -> Self {
        Accounts { directory: RwLock::new(directory), store }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, AccountDirectory> {
        self.directory.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn alias(&self, account_id: &str) -> Option<String> {
        self.read().alias(account_id).map(str::to_owned)
    }

    pub fn get(&self, account_id: &str) -> Option<Account> {
        self.read().get(account_id).cloned()
    }

    /// Every account of the directory with its alias.
    pub fn snapshot(&self) -> Vec<(Account, Option<String>)> {
        let dir = self.read();
        dir.accounts().map(|a| (a.clone(), dir.alias(&a.id).map(str::to_owned))).collect()
    }

    /// A copy of the directory (for the pipeline's detector, say).
    pub fn directory(&self) -> AccountDirectory {
        self.read().clone()
    }

    /// Replaces the directory (a refresh from Organizations, overrides applied).
    pub fn replace(&self, directory: AccountDirectory) {
        *self.directory.write().unwrap_or_else(PoisonError::into_inner) = directory;
    }

    /// Saves the alias, then shows it: a failed save changes nothing.
    pub async fn set_alias(&self, account_id: &str, alias: &str) -> Result<(), PortError> {
        self.store.save(account_id, alias).await?;
        self.directory.write().unwrap_or_else(PoisonError::into_inner).set_alias(account_id, alias);
        Ok(())
    }
}
