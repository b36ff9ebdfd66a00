//! The `api` alert sink: publishes each delivery to the subscriptions.

use async_trait::async_trait;
use tokio::sync::broadcast;
use trailwatch_core::alerts::{AlertSink, Delivery};
use trailwatch_core::PortError;

/// Publishes deliveries into the broadcast channel that `alertTransitions`
/// subscriptions read. It rides the outbox like every sink: a transition is
/// published once the delivery worker reaches it. With no subscriber
/// connected the transition is dropped (subscriptions are live, not a replay).
pub struct BroadcastSink {
    feed: broadcast::Sender<Delivery>,
}

impl BroadcastSink {
    /// The sink's name, to list among the lifecycle's sinks.
    pub const NAME: &'static str = "api";

    pub fn new(feed: broadcast::Sender<Delivery>) -> Self {
        BroadcastSink { feed }
    }
}

#[async_trait]
impl AlertSink for BroadcastSink {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<(), PortError> {
        // An error only means no subscriber is connected now.
        let _ = self.feed.send(delivery.clone());
        Ok(())
    }
}
