//! `userIdentity` elements, following the CloudTrail userIdentity reference:
//! IAM users with long-term keys, assumed-role / federated / session-token
//! sessions with their `sessionContext`, the `AWSAccount` form the role's
//! account sees of a cross-account caller, SAML and web identity users, AWS
//! service principals, and the root user's console session.

use trailwatch_core::time::EpochMillis;

use crate::org::{IamUser, Org};
use crate::plan::{IssueKind, Issuer, Plan, Session};
use crate::text::{field, push_str, push_time};

/// An IAM user signing with a key (`AKIA…` long-term, or `ASIA…` from GetSessionToken).
pub fn iam_user(out: &mut Vec<u8>, org: &Org, user: &IamUser, key: &str) {
    out.extend_from_slice(b"{\"type\":\"IAMUser\"");
    field(out, b",\"principalId\":", &user.principal_id);
    field(out, b",\"arn\":", &user.arn);
    field(out, b",\"accountId\":", &org.accounts[user.account].id);
    field(out, b",\"accessKeyId\":", key);
    field(out, b",\"userName\":", &user.name);
    out.push(b'}');
}

/// The root user, calling from the console session it signed in to at
/// `since` (with MFA) with temporary key `key`.
pub fn root(out: &mut Vec<u8>, account_id: &str, key: &str, since: EpochMillis) {
    field(out, b"{\"type\":\"Root\",\"principalId\":", account_id);
    field(out, b",\"arn\":", &format!("arn:aws:iam::{account_id}:root"));
    field(out, b",\"accountId\":", account_id);
    field(out, b",\"accessKeyId\":", key);
    out.extend_from_slice(b",\"sessionContext\":{\"attributes\":{\"creationDate\":");
    push_time(out, since);
    out.extend_from_slice(b",\"mfaAuthenticated\":\"true\"}}}");
}

fn attributes(out: &mut Vec<u8>, s: &Session) {
    out.extend_from_slice(b"\"attributes\":{\"creationDate\":");
    push_time(out, s.issued);
    out.extend_from_slice(if s.mfa { b",\"mfaAuthenticated\":\"true\"}" } else { b",\"mfaAuthenticated\":\"false\"}" });
}

/// A request made with a session's temporary credentials.
pub fn session(out: &mut Vec<u8>, org: &Org, s: &Session, invoked_by: Option<&str>) {
    let account = &org.accounts[s.account].id;
    match (s.kind, s.issuer) {
        (IssueKind::GetSessionToken, Issuer::User(u)) => {
            let user = &org.users[u];
            out.extend_from_slice(b"{\"type\":\"IAMUser\"");
            field(out, b",\"principalId\":", &user.principal_id);
            field(out, b",\"arn\":", &user.arn);
            field(out, b",\"accountId\":", account);
            field(out, b",\"accessKeyId\":", &s.key);
            field(out, b",\"userName\":", &user.name);
            out.extend_from_slice(b",\"sessionContext\":{");
            attributes(out, s);
            out.push(b'}');
        }
        (IssueKind::GetFederationToken, Issuer::User(u)) => {
            let user = &org.users[u];
            out.extend_from_slice(b"{\"type\":\"FederatedUser\"");
            field(out, b",\"principalId\":", &s.principal_id);
            field(out, b",\"arn\":", &s.arn);
            field(out, b",\"accountId\":", account);
            field(out, b",\"accessKeyId\":", &s.key);
            out.extend_from_slice(b",\"sessionContext\":{\"sessionIssuer\":{\"type\":\"IAMUser\"");
            field(out, b",\"principalId\":", &user.principal_id);
            field(out, b",\"arn\":", &user.arn);
            field(out, b",\"accountId\":", account);
            field(out, b",\"userName\":", &user.name);
            out.extend_from_slice(b"},");
            attributes(out, s);
            out.push(b'}');
        }
        _ => {
            out.extend_from_slice(b"{\"type\":\"AssumedRole\"");
            field(out, b",\"principalId\":", &s.principal_id);
            field(out, b",\"arn\":", &s.arn);
            field(out, b",\"accountId\":", account);
            field(out, b",\"accessKeyId\":", &s.key);
            out.extend_from_slice(b",\"sessionContext\":{\"sessionIssuer\":{\"type\":\"Role\"");
            if let Some(role) = s.role.map(|r| &org.roles[r]) {
                field(out, b",\"principalId\":", &role.principal_id);
                field(out, b",\"arn\":", &role.arn);
                field(out, b",\"accountId\":", account);
                field(out, b",\"userName\":", &role.name);
            }
            out.extend_from_slice(b"},");
            if let (IssueKind::AssumeRoleWithWebIdentity, Some(provider)) = (s.kind, &org.accounts[s.account].github_provider) {
                field(out, b"\"webIdFederationData\":{\"federatedProvider\":", provider);
                out.extend_from_slice(b",\"attributes\":{}},");
            }
            attributes(out, s);
            if let Some(source) = &s.source_identity {
                field(out, b",\"sourceIdentity\":", source);
            }
            if s.issuer == (Issuer::Service { service: "ec2.amazonaws.com" }) {
                out.extend_from_slice(b",\"ec2RoleDelivery\":\"2.0\"");
            }
            out.push(b'}');
        }
    }
    if let Some(service) = invoked_by {
        field(out, b",\"invokedBy\":", service);
    }
    out.push(b'}');
}

/// The caller of an issuing event, as copy `copy` of it shows it: the
/// caller-side copy names the caller fully, the copy in the role's account
/// of a cross-account call shows only `AWSAccount` with the caller's
/// principal id and account.
pub fn issuer(out: &mut Vec<u8>, org: &Org, plan: &Plan, s: &Session, copy: usize) {
    if copy > 0 {
        let (principal, account) = match s.issuer {
            Issuer::User(u) => (org.users[u].principal_id.as_str(), org.users[u].account),
            Issuer::Session(p) => {
                let parent = &plan.sessions[p as usize];
                (parent.principal_id.as_str(), parent.account)
            }
            _ => ("", s.account),
        };
        out.extend_from_slice(b"{\"type\":\"AWSAccount\"");
        field(out, b",\"principalId\":", principal);
        field(out, b",\"accountId\":", &org.accounts[account].id);
        out.push(b'}');
        return;
    }
    match s.issuer {
        Issuer::User(u) => iam_user(out, org, &org.users[u], &org.users[u].key),
        Issuer::Session(p) => session(out, org, &plan.sessions[p as usize], None),
        Issuer::Saml { person, okta } => {
            let email = &org.people[person].email;
            let qualifier = saml_qualifier(org, s.account, okta);
            out.extend_from_slice(b"{\"type\":\"SAMLUser\",\"principalId\":\"");
            out.extend_from_slice(qualifier.as_bytes());
            out.push(b':');
            out.extend_from_slice(email.as_bytes());
            out.push(b'"');
            field(out, b",\"userName\":", email);
            field(out, b",\"identityProvider\":", qualifier);
            out.push(b'}');
        }
        Issuer::Web { repo } => {
            let subject = &org.repos[repo].subject;
            let provider = org.accounts[s.account].github_provider.as_deref().unwrap_or_default();
            out.extend_from_slice(b"{\"type\":\"WebIdentityUser\",\"principalId\":");
            push_str(out, &format!("{provider}:sts.amazonaws.com:{subject}"));
            field(out, b",\"userName\":", subject);
            field(out, b",\"identityProvider\":", provider);
            out.push(b'}');
        }
        Issuer::Service { service } => {
            field(out, b"{\"type\":\"AWSService\",\"invokedBy\":", service);
            out.push(b'}');
        }
    }
}

/// The SAML name qualifier of the provider a SAML session came through.
pub fn saml_qualifier(org: &Org, account: usize, okta: bool) -> &str {
    let a = &org.accounts[account];
    match (&a.okta, okta) {
        (Some((_, qualifier)), true) => qualifier,
        _ => &a.sso_qualifier,
    }
}

/// The ARN of the SAML provider a SAML session came through.
pub fn saml_provider(org: &Org, account: usize, okta: bool) -> &str {
    let a = &org.accounts[account];
    match (&a.okta, okta) {
        (Some((arn, _)), true) => arn,
        _ => &a.sso_provider,
    }
}
