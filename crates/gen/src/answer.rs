//! The answer key, `expected.json`: what an identity resolver and the
//! detection rules must find in the generated trail. Every session is listed
//! with its issuing events, its origin (the person or workload behind it)
//! and its chain of hops from that origin; every injected incident with its
//! records; every alert the built-in rule pack must raise, with its dedup
//! group, first event and origin. All exactly true of the records written.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;

use crate::identity::saml_provider;
use crate::org::Org;
use crate::plan::{Culprit, IssueKind, Issuer, Plan};
use crate::text::iso;
use crate::GenConfig;

#[derive(Serialize)]
struct Generator {
    seed: u64,
    accounts: usize,
    days: u32,
    events: u64,
    end: String,
    incidents: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AccountOut<'a> {
    id: &'a str,
    name: &'a str,
    regions: &'a [&'static str],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Organization<'a> {
    id: &'a str,
    management_account_id: &'a str,
    trail_name: &'static str,
    bucket: &'a str,
    accounts: Vec<AccountOut<'a>>,
}

/// Totals of what was written.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub events: u64,
    pub files: u64,
    pub digest_files: u64,
    pub sessions: u64,
    pub events_by_account: std::collections::BTreeMap<String, u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Origin<'a> {
    kind: &'static str,
    principal: String,
    account: &'a str,
    provider: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Hop<'a> {
    event_id: &'a str,
    event_name: &'static str,
    account: &'a str,
    role_arn: Option<&'a str>,
    session_name: Option<&'a str>,
    access_key_id: &'a str,
    time: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionOut<'a> {
    access_key_id: &'a str,
    account: &'a str,
    role_arn: Option<&'a str>,
    session_name: Option<&'a str>,
    event_name: &'static str,
    issued_at: String,
    expires_at: String,
    issuing_event_ids: Vec<&'a str>,
    shared_event_id: Option<&'a str>,
    source_identity: Option<&'a str>,
    origin: Origin<'a>,
    chain: Vec<Hop<'a>>,
}

fn origin<'a>(org: &'a Org, plan: &'a Plan, i: u32) -> Origin<'a> {
    let root = &plan.sessions[plan.chain(i)[0] as usize];
    let account = &org.accounts[root.account].id;
    match (root.kind, root.issuer) {
        (IssueKind::GetFederationToken, _) => Origin { kind: "federated_user", principal: root.arn.clone(), account, provider: None },
        (_, Issuer::User(u)) => {
            Origin { kind: "iam_user", principal: org.users[u].arn.clone(), account: &org.accounts[org.users[u].account].id, provider: None }
        }
        (_, Issuer::Saml { person, okta }) => Origin {
            kind: if okta { "saml_user" } else { "identity_center_user" },
            principal: org.people[person].email.clone(),
            account,
            provider: Some(saml_provider(org, root.account, okta)),
        },
        (_, Issuer::Web { repo }) => Origin {
            kind: "web_identity",
            principal: org.repos[repo].subject.clone(),
            account,
            provider: org.accounts[root.account].github_provider.as_deref(),
        },
        (_, Issuer::Service { service }) if service == "ec2.amazonaws.com" => {
            Origin { kind: "aws_service", principal: format!("{service}:{}", root.name), account, provider: None }
        }
        (_, Issuer::Service { service }) => Origin { kind: "aws_service", principal: service.to_owned(), account, provider: None },
        (_, Issuer::Session(_)) => Origin { kind: "unknown", principal: String::new(), account, provider: None },
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IncidentOut<'a> {
    name: &'static str,
    account_id: &'a str,
    start: String,
    /// Its records (sign-ins and calls; the sessions' issuing events are in `sessions`).
    event_ids: Vec<&'a str>,
    /// Its sessions' keys, first hop first.
    access_key_ids: Vec<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AlertOut<'a> {
    rule_id: &'static str,
    account_id: &'a str,
    origin_kind: &'static str,
    origin_principal: String,
    group: BTreeMap<&'static str, &'a str>,
    first_event_id: &'a str,
    count: u32,
    incident: &'static str,
}

/// Who is behind an incident's records, as an origin kind and principal.
fn culprit(org: &Org, plan: &Plan, c: Culprit) -> (&'static str, String) {
    match c {
        Culprit::User(u) => ("iam_user", org.users[u].arn.clone()),
        Culprit::UserName(u) => ("iam_user", org.users[u].name.clone()),
        Culprit::Root(a) => ("root", format!("arn:aws:iam::{}:root", org.accounts[a].id)),
        Culprit::Session(s) => {
            let o = origin(org, plan, s);
            (o.kind, o.principal)
        }
    }
}

fn name(kind: IssueKind, name: &str) -> Option<&str> {
    (kind != IssueKind::GetSessionToken).then_some(name)
}

/// Writes `expected.json`: one session per line inside the `sessions` array.
pub fn write(mut out: impl Write, config: &GenConfig, org: &Org, plan: &Plan, totals: &Totals) -> io::Result<()> {
    let generator =
        Generator { seed: config.seed, accounts: config.accounts, days: config.days, events: config.events, end: iso(config.end), incidents: config.incidents };
    let organization = Organization {
        id: &org.id,
        management_account_id: org.management_id(),
        trail_name: crate::org::TRAIL_NAME,
        bucket: &org.bucket,
        accounts: org.accounts.iter().map(|a| AccountOut { id: &a.id, name: &a.name, regions: &a.regions }).collect(),
    };
    out.write_all(b"{\"generator\":")?;
    serde_json::to_writer(&mut out, &generator)?;
    out.write_all(b",\n\"organization\":")?;
    serde_json::to_writer(&mut out, &organization)?;
    out.write_all(b",\n\"totals\":")?;
    serde_json::to_writer(&mut out, totals)?;
    out.write_all(b",\n\"incidents\":[")?;
    for (i, incident) in plan.incidents.iter().enumerate() {
        let entry = IncidentOut {
            name: incident.name,
            account_id: &org.accounts[incident.account].id,
            start: iso(incident.start),
            event_ids: plan.acts[incident.acts.clone()].iter().map(|a| a.event_id.as_str()).collect(),
            access_key_ids: incident.sessions.iter().map(|&s| plan.sessions[s as usize].key.as_str()).collect(),
        };
        out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
        serde_json::to_writer(&mut out, &entry)?;
    }
    out.write_all(b"],\n\"alerts\":[")?;
    let alerts = plan.incidents.iter().flat_map(|i| i.alerts.iter().map(move |a| (i.name, a)));
    for (i, (incident, alert)) in alerts.enumerate() {
        let (origin_kind, origin_principal) = culprit(org, plan, alert.culprit);
        let entry = AlertOut {
            rule_id: alert.rule,
            account_id: &org.accounts[alert.account].id,
            origin_kind,
            origin_principal,
            group: alert.group.iter().map(|(k, v)| (*k, v.as_str())).collect(),
            first_event_id: &alert.first_event,
            count: alert.count,
            incident,
        };
        out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
        serde_json::to_writer(&mut out, &entry)?;
    }
    out.write_all(b"],\n\"sessions\":[")?;
    for (i, s) in plan.sessions.iter().enumerate() {
        let account = &org.accounts[s.account].id;
        let role_arn = s.role.map(|r| org.roles[r].arn.as_str());
        let chain = plan
            .chain(i as u32)
            .into_iter()
            .map(|h| {
                let hop = &plan.sessions[h as usize];
                Hop {
                    event_id: &hop.copies[0].event_id,
                    event_name: hop.kind.event_name(),
                    account: &org.accounts[hop.account].id,
                    role_arn: hop.role.map(|r| org.roles[r].arn.as_str()),
                    session_name: name(hop.kind, &hop.name),
                    access_key_id: &hop.key,
                    time: iso(hop.issued),
                }
            })
            .collect();
        let entry = SessionOut {
            access_key_id: &s.key,
            account,
            role_arn,
            session_name: name(s.kind, &s.name),
            event_name: s.kind.event_name(),
            issued_at: iso(s.issued),
            expires_at: iso(s.expires),
            issuing_event_ids: s.copies.iter().map(|c| c.event_id.as_str()).collect(),
            shared_event_id: s.shared_event_id.as_deref(),
            source_identity: s.source_identity.as_deref(),
            origin: origin(org, plan, i as u32),
            chain,
        };
        out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
        serde_json::to_writer(&mut out, &entry)?;
    }
    out.write_all(b"\n]}\n")?;
    out.flush()
}
