//! The subscription root: alert transitions as they are delivered to the
//! `api` sink ([`crate::BroadcastSink`]), so subscribers see what every other
//! sink sees, from the same outbox.

use async_graphql::futures_util::stream::{self, Stream};
use async_graphql::{Context, SimpleObject, Subscription};
use tokio::sync::broadcast::error::RecvError;
use trailwatch_core::alerts::Severity;

use super::types::{deps, AlertObj, GqlSeverity, TransitionObj};
use crate::auth::{Role, RoleGuard};

pub struct SubscriptionRoot;

/// An alert right after one of its transitions.
#[derive(SimpleObject)]
pub struct AlertTransitionEvent {
    pub alert: AlertObj,
    pub transition: TransitionObj,
    /// `<alert id>:<revision>`: drop repeats by it (a delivery may be repeated after a restart).
    pub delivery_key: String,
}

#[Subscription]
impl SubscriptionRoot {
    /// Transitions of alerts at or above `minSeverity` (default: all).
    #[graphql(guard = "RoleGuard(Role::Viewer)")]
    async fn alert_transitions(&self, ctx: &Context<'_>, min_severity: Option<GqlSeverity>) -> impl Stream<Item = AlertTransitionEvent> {
        let min: Severity = min_severity.map_or(Severity::Informational, Into::into);
        let rx = deps(ctx).alert_feed.subscribe();
        stream::unfold(rx, move |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(d) if d.alert.severity >= min => {
                        let item = AlertTransitionEvent { delivery_key: d.dedup_key(), alert: AlertObj(d.alert), transition: TransitionObj(d.transition) };
                        return Some((item, rx));
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "api.subscriber_lagged: a subscriber missed transitions"),
                    Err(RecvError::Closed) => return None,
                }
            }
        })
    }
}
