//! What a request may ask for, checked on the parsed document before
//! async-graphql checks, validates or runs it (so over HTTP, WebSocket and
//! `Schema::execute` alike):
//!
//! - at most [`Limits::operations`] operations in one document;
//! - no fragment that spreads itself, directly or through others, and
//!   fragments spreading each other at most 32 deep;
//! - at most [`Limits::fields`] fields and [`Limits::aliases`] aliases,
//!   counted with every fragment spread expanded (each fragment is counted
//!   once and remembered, so a fragment that doubles at every level costs
//!   its size, not its expansion, to check);
//! - introspection (`__schema`, `__type`) only for a role of at least
//!   [`Limits::introspection`] (or nobody).
//!
//! Depth and complexity are async-graphql's own checks; their errors are
//! reworded here to say the limit, with code `QUERY_LIMIT`.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest, NextValidation};
use async_graphql::parser::types::{ExecutableDocument, FragmentDefinition, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, Name, Positioned, Request, ServerError, ServerResult, ValidationResult};

use crate::auth::Principal;
use crate::Limits;

/// The extension (see the module doc).
pub(crate) struct RequestLimits(pub Limits);

impl ExtensionFactory for RequestLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Checker(self.0))
    }
}

struct Checker(Limits);

fn refused(message: String, code: &str) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", code);
    error.extensions = Some(extensions);
    error
}

#[async_trait::async_trait]
impl Extension for Checker {
    /// Parses the document (async-graphql keeps it for the rest of the
    /// request) and checks it before anything else walks it: async-graphql's
    /// own recursion check expands fragments without remembering them, so a
    /// fragment bomb would cost it exponential time.
    async fn prepare_request(&self, ctx: &ExtensionContext<'_>, mut request: Request, next: NextPrepareRequest<'_>) -> ServerResult<Request> {
        // The principal is in the request's data over HTTP, in the connection's over WebSocket.
        let principal = request.data.get(&TypeId::of::<Principal>()).and_then(|p| p.downcast_ref::<Principal>()).cloned();
        let principal = principal.or_else(|| ctx.data_opt::<Principal>().cloned());
        // A document that does not parse is reported as such further on.
        if let Ok(document) = request.parsed_query() {
            check(document, &self.0, principal.as_ref())?;
        }
        next.run(ctx, request).await
    }

    async fn validation(&self, ctx: &ExtensionContext<'_>, next: NextValidation<'_>) -> Result<ValidationResult, Vec<ServerError>> {
        let limits = self.0;
        next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|e| match e.message.as_str() {
                    "Query is too complex." => refused(
                        format!(
                            "the query is too complex: its cost is over the limit of {} (a connection costs `first` times its fields); ask for fewer items, fields or aliases",
                            limits.complexity
                        ),
                        "QUERY_LIMIT",
                    ),
                    "Query is nested too deep." => refused(format!("the query is nested too deep: more than {} levels", limits.depth), "QUERY_LIMIT"),
                    _ => e,
                })
                .collect()
        })
    }
}

/// What a selection costs, fragments expanded.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    fields: u64,
    aliases: u64,
    introspection: bool,
}

impl Cost {
    fn add(&mut self, other: Cost) {
        self.fields = self.fields.saturating_add(other.fields);
        self.aliases = self.aliases.saturating_add(other.aliases);
        self.introspection |= other.introspection;
    }
}

/// Fragments within fragments: deeper is refused (and the walk's recursion stays bounded).
const MAX_FRAGMENT_NESTING: usize = 32;

struct Walk<'a> {
    fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>,
    done: HashMap<&'a str, Cost>,
    /// The fragments being expanded, outermost first.
    stack: Vec<&'a str>,
}

impl<'a> Walk<'a> {
    fn selection_set(&mut self, set: &'a SelectionSet) -> Result<Cost, ServerError> {
        let mut cost = Cost::default();
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    cost.fields = cost.fields.saturating_add(1);
                    cost.aliases = cost.aliases.saturating_add(u64::from(field.alias.is_some()));
                    cost.introspection |= matches!(field.name.node.as_str(), "__schema" | "__type");
                    cost.add(self.selection_set(&field.selection_set.node)?);
                }
                Selection::InlineFragment(fragment) => cost.add(self.selection_set(&fragment.node.selection_set.node)?),
                Selection::FragmentSpread(spread) => cost.add(self.fragment(spread.node.fragment_name.node.as_str())?),
            }
        }
        Ok(cost)
    }

    fn fragment(&mut self, name: &'a str) -> Result<Cost, ServerError> {
        if let Some(cost) = self.done.get(name) {
            return Ok(*cost);
        }
        if self.stack.len() >= MAX_FRAGMENT_NESTING {
            return Err(refused(format!("fragments spread each other more than {MAX_FRAGMENT_NESTING} deep"), "QUERY_LIMIT"));
        }
        if let Some(at) = self.stack.iter().position(|n| *n == name) {
            let cycle: Vec<&str> = self.stack[at..].iter().copied().chain([name]).collect();
            return Err(refused(format!("fragment {name} spreads itself ({}): fragments may not form cycles", cycle.join(" → ")), "GRAPHQL_VALIDATION_FAILED"));
        }
        // An unknown fragment costs nothing here; validation names it.
        let Some((key, definition)) = self.fragments.get_key_value(name) else { return Ok(Cost::default()) };
        self.stack.push(key.as_str());
        let cost = self.selection_set(&definition.node.selection_set.node);
        self.stack.pop();
        let cost = cost?;
        self.done.insert(key.as_str(), cost);
        Ok(cost)
    }
}

/// Refuses a document over the limits (see the module doc).
pub(crate) fn check(document: &ExecutableDocument, limits: &Limits, principal: Option<&Principal>) -> ServerResult<()> {
    let operations: Vec<_> = document.operations.iter().collect();
    if operations.len() > limits.operations {
        return Err(refused(
            format!("the document holds {} operations; at most {} are accepted in one request", operations.len(), limits.operations),
            "QUERY_LIMIT",
        ));
    }
    let mut walk = Walk { fragments: &document.fragments, done: HashMap::new(), stack: Vec::new() };
    let mut cost = Cost::default();
    for (_, operation) in operations {
        cost.add(walk.selection_set(&operation.node.selection_set.node)?);
    }
    // Fragments no operation spreads: validation refuses them, but a cycle among them is still refused here.
    for name in document.fragments.keys() {
        walk.fragment(name.as_str())?;
    }
    if cost.aliases > limits.aliases as u64 {
        return Err(refused(format!("the query uses {} aliases (fragments expanded); at most {} are accepted", cost.aliases, limits.aliases), "QUERY_LIMIT"));
    }
    if cost.fields > limits.fields as u64 {
        return Err(refused(format!("the query selects {} fields (fragments expanded); at most {} are accepted", cost.fields, limits.fields), "QUERY_LIMIT"));
    }
    if cost.introspection {
        let allowed = match (limits.introspection, principal) {
            (Some(least), Some(p)) => p.role >= least,
            _ => false,
        };
        if !allowed {
            let message = match (limits.introspection, principal) {
                (None, _) => "introspection is disabled on this server".to_owned(),
                (Some(least), Some(p)) => format!("introspection needs the {} role; this token has {}", least.as_str(), p.role.as_str()),
                (Some(_), None) => "introspection needs an authenticated caller".to_owned(),
            };
            return Err(refused(message, "FORBIDDEN"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn run(query: &str, role: Role) -> ServerResult<()> {
        let document = async_graphql::parser::parse_query(query).expect("parses");
        check(&document, &Limits::default(), Some(&Principal { name: "t".into(), role }))
    }

    #[test]
    fn fragment_bombs_are_counted_without_expanding() {
        let mut query = String::from("{ ...F0 }\n");
        for i in 0..30 {
            query.push_str(&format!("fragment F{i} on QueryRoot {{ ...F{} ...F{} }}\n", i + 1, i + 1));
        }
        query.push_str("fragment F30 on QueryRoot { rules { id } }\n");
        let started = std::time::Instant::now();
        let err = run(&query, Role::Admin).expect_err("2^30 fields");
        assert!(err.message.contains("fields (fragments expanded)"), "{}", err.message);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn cycles_are_named() {
        let err = run("{ ...A } fragment A on QueryRoot { ...B } fragment B on QueryRoot { ...A }", Role::Admin).expect_err("a cycle");
        assert!(err.message.contains("A → B → A"), "{}", err.message);
    }
}
