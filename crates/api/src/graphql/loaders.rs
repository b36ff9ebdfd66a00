//! Batched reads for fields of list items, so a page of alerts asking for
//! their events or transitions makes one batch of store reads, not one
//! round trip after another. Events come in one `get_many` per batch; the
//! alert store has no multi-get yet, so a batch of transitions is read
//! concurrently, one alert at a time.

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
        let found = self.0.get_many(keys).await.map_err(Arc::new)?;
        Ok(found.into_iter().map(|e| ((e.account_id.clone(), e.event_id.clone()), EventObj::new(e))).collect())
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
