//! Batched reads for fields of list items, so a page of alerts asking for
//! their events or transitions makes one batch of store reads, not one
//! round trip after another. The ports have no multi-get yet: a batch is
//! deduplicated and its reads run concurrently.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use async_graphql::futures_util::future::try_join_all;
use trailwatch_core::alerts::{AlertStore, Transition};
use trailwatch_core::ports::{HistoryStore, PortError};

use super::types::EventObj;

/// Stored events by (account id, event id).
pub struct EventLoader(pub Arc<dyn HistoryStore>);

impl Loader<(String, String)> for EventLoader {
    type Value = EventObj;
    type Error = Arc<PortError>;

    async fn load(&self, keys: &[(String, String)]) -> Result<HashMap<(String, String), EventObj>, Self::Error> {
        let reads =
            keys.iter().map(|(account, id)| async move { self.0.get(account, id).await.map(|e| e.map(|e| ((account.clone(), id.clone()), EventObj::new(e)))) });
        let found: Vec<Option<((String, String), EventObj)>> = try_join_all(reads).await.map_err(Arc::new)?;
        Ok(found.into_iter().flatten().collect())
    }
}

/// An alert's transitions by alert id.
pub struct TransitionLoader(pub Arc<dyn AlertStore>);

impl Loader<String> for TransitionLoader {
    type Value = Arc<[Transition]>;
    type Error = Arc<PortError>;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let reads = keys.iter().map(|id| async move { self.0.transitions(id).await.map(|t| (id.clone(), Arc::<[Transition]>::from(t))) });
        Ok(try_join_all(reads).await.map_err(Arc::new)?.into_iter().collect())
    }
}
