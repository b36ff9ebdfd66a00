//! The GraphQL schema: query, mutation and subscription roots over the ports.

mod events;
mod loaders;
mod mutation;
mod onboarding;
mod query;
mod sessions;
mod subscription;
pub mod support;
mod types;

pub use mutation::MutationRoot;
pub use query::QueryRoot;
pub use subscription::SubscriptionRoot;
pub use types::RuleTests;

pub(crate) use loaders::{EventLoader, TransitionLoader};
