//! Paging event searches into Relay connections: each edge's cursor is its
//! hit's position in history (event time, the store's sequence), so paging
//! from any edge continues right after it, with no duplicates or gaps; an
//! event stored meanwhile with a later position shows up on a later page.

use trailwatch_core::ports::{EventFilter, HistoryCursor, HistoryStore, MAX_SEARCH_LIMIT};
use trailwatch_core::Event;

use super::support::port_error;

/// Up to `limit` events after `after`, each with its position, and whether there are more.
pub async fn search_page(
    history: &dyn HistoryStore,
    mut search: EventFilter,
    after: Option<HistoryCursor>,
    limit: usize,
) -> async_graphql::Result<(Vec<(Event, HistoryCursor)>, bool)> {
    search.after = after;
    let mut found = Vec::new();
    loop {
        // One more than wanted tells whether there is a next page. A store
        // may stop early with a short page and a `next`: keep going.
        search.limit = (limit + 1 - found.len()).min(MAX_SEARCH_LIMIT);
        let page = history.search(&search).await.map_err(|e| port_error("searching events", &e))?;
        found.extend(page.hits.into_iter().map(|h| (h.event, h.cursor)));
        match page.next {
            Some(next) if found.len() <= limit => search.after = Some(next),
            _ => break,
        }
    }
    let more = found.len() > limit;
    found.truncate(limit);
    Ok((found, more))
}
