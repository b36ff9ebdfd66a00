//! The mutation root: what a person does. Each needs a role (see `auth`).

use async_graphql::{Context, ErrorExtensions, Object};

use super::query::AccountObj;
use super::support::{bad_input, port_error};
use super::types::{deps, AlertObj};
use crate::auth::{Principal, Role, RoleGuard};

pub struct MutationRoot;

/// The caller (the guards already refused a request without one).
fn who<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Principal> {
    ctx.data_opt::<Principal>().ok_or_else(|| async_graphql::Error::new("not authenticated").extend_with(|_, e| e.set("code", "UNAUTHENTICATED")))
}

#[Object]
impl MutationRoot {
    /// Acknowledges an alert (it stays unresolved and keeps taking matches);
    /// recorded as a transition by the token's name, with the note as its cause.
    #[graphql(guard = "RoleGuard(Role::Responder)")]
    async fn acknowledge_alert(&self, ctx: &Context<'_>, id: String, note: Option<String>) -> async_graphql::Result<AlertObj> {
        let by = &who(ctx)?.name;
        let alert = deps(ctx)
            .lifecycle
            .acknowledge(&id, by, note.as_deref(), crate::now_ms())
            .await
            .map_err(|e| port_error(&format!("acknowledging alert {id:?}"), &e))?;
        tracing::info!(alert_id = %id, by = %by, "api.alert_acknowledged");
        Ok(AlertObj(alert))
    }

    /// Resolves an alert: a later match opens a new one.
    #[graphql(guard = "RoleGuard(Role::Responder)")]
    async fn resolve_alert(&self, ctx: &Context<'_>, id: String, note: Option<String>) -> async_graphql::Result<AlertObj> {
        let by = &who(ctx)?.name;
        let alert =
            deps(ctx).lifecycle.resolve(&id, by, note.as_deref(), crate::now_ms()).await.map_err(|e| port_error(&format!("resolving alert {id:?}"), &e))?;
        tracing::info!(alert_id = %id, by = %by, "api.alert_resolved");
        Ok(AlertObj(alert))
    }

    /// Sets the alias an account is shown by (over its Organizations name), and keeps it.
    #[graphql(guard = "RoleGuard(Role::Admin)")]
    async fn set_account_alias(&self, ctx: &Context<'_>, account_id: String, alias: String) -> async_graphql::Result<AccountObj> {
        if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad_input(format!("{account_id:?} is not an account id (12 digits)")));
        }
        let alias = alias.trim();
        if alias.is_empty() || alias.chars().count() > 64 || alias.chars().any(char::is_control) {
            return Err(bad_input("an alias is 1 to 64 characters, none of them control characters"));
        }
        let d = deps(ctx);
        d.accounts.set_alias(&account_id, alias).await.map_err(|e| port_error("saving an account alias", &e))?;
        tracing::info!(account_id = %account_id, by = %who(ctx)?.name, "api.alias_set");
        Ok(AccountObj { account: d.accounts.get(&account_id), alias: Some(alias.to_owned()), id: account_id, activity: None })
    }
}
