//! `sessions(originPrincipal, since, until)`: the blast radius of one origin,
//! derived from its stored events: each event's chain ends in the session it
//! acted with, and every hop names an account and a role reached.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use trailwatch_core::ports::{EventFilter, MAX_SEARCH_LIMIT, MAX_SEARCH_RANGE_MS};

use super::query::{SessionObj, SessionsResult, SESSIONS_SCAN_CAP};
use super::support::{bad_input, port_error, DateTime};
use crate::ApiDeps;

pub async fn sessions(deps: &Arc<ApiDeps>, origin_principal: String, since: DateTime, until: DateTime) -> async_graphql::Result<SessionsResult> {
    if origin_principal.trim().is_empty() {
        return Err(bad_input("originPrincipal is empty"));
    }
    if until.0 < since.0 {
        return Err(bad_input("until is before since"));
    }
    if until.0 - since.0 > MAX_SEARCH_RANGE_MS {
        return Err(bad_input(format!("the time range may cover at most {} days", MAX_SEARCH_RANGE_MS / 86_400_000)));
    }
    let mut search = EventFilter::new(since.0, until.0, MAX_SEARCH_LIMIT);
    search.origin_principal = Some(origin_principal.clone());
    let mut sessions: BTreeMap<String, SessionObj> = BTreeMap::new();
    let mut accounts = BTreeSet::new();
    let mut roles = BTreeSet::new();
    let mut examined = 0u64;
    let mut truncated = false;
    loop {
        let page = deps.history.search(&search).await.map_err(|e| port_error("searching events", &e))?;
        for event in page.hits.iter().map(|h| &h.event) {
            examined += 1;
            accounts.insert(event.account_id.clone());
            let Some(origin) = &event.origin else { continue };
            for hop in &origin.chain {
                accounts.insert(hop.account_id.clone());
                if let Some(role) = &hop.role_arn {
                    roles.insert(role.clone());
                }
            }
            let Some(last) = origin.chain.last() else { continue };
            let s = sessions.entry(format!("{}@{}", last.access_key_id, last.time)).or_insert_with(|| SessionObj {
                access_key_id: last.access_key_id.clone(),
                account_id: last.account_id.clone(),
                role_arn: last.role_arn.clone(),
                session_name: last.session_name.clone(),
                issued_at: DateTime(last.time),
                depth: origin.chain.len() as i32,
                events: 0,
                first_event: DateTime(event.event_time),
                last_event: DateTime(event.event_time),
            });
            s.events += 1;
            s.first_event = s.first_event.min(DateTime(event.event_time));
            s.last_event = s.last_event.max(DateTime(event.event_time));
        }
        match page.next {
            Some(_) if examined >= SESSIONS_SCAN_CAP => {
                truncated = true;
                break;
            }
            Some(next) => search.after = Some(next),
            None => break,
        }
    }
    let mut sessions: Vec<SessionObj> = sessions.into_values().collect();
    sessions.sort_by(|a, b| (a.issued_at, &a.access_key_id).cmp(&(b.issued_at, &b.access_key_id)));
    Ok(SessionsResult {
        origin_principal,
        sessions,
        accounts: accounts.into_iter().collect(),
        roles: roles.into_iter().collect(),
        events_examined: examined,
        truncated,
    })
}
