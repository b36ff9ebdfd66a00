//! What one caller says by itself: an origin (a principal that needs no
//! session behind it), a key to follow, or nothing; and what a record still
//! tells when the session behind a key is missing (the fallbacks).

use super::capture::{arn_account, permission_set};
use super::{Caller, Confidence, IssueKind, Origin, OriginKind, Session};

/// The next step from a caller.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// The caller is where the chain starts.
    Origin(Origin),
    /// The caller acted with temporary credentials: follow their session.
    Follow(String),
    /// The caller is known only as another account (the role owner's copy).
    AccountOnly,
    /// A session identity without an access key (console sign-in records).
    NoKey,
    /// An identity with nothing to follow (`Unknown` sign-in records, unknown types).
    Opaque { principal: Option<String>, reason: String },
}

pub(crate) fn origin(kind: OriginKind, principal: Option<String>, account_id: Option<String>, provider: Option<String>) -> Origin {
    Origin { kind, principal, account_id, provider, source_identity: None, chain: Vec::new(), confidence: Confidence::Exact, reason: None }
}

fn is_temporary(key: &str) -> bool {
    key.starts_with("ASIA")
}

/// Where `caller` leads. `issued` is the session the caller asked for, when
/// the caller was reached by following one (its kind, account and name shape
/// the origin: a SAML subject into an Identity Center role is an Identity
/// Center user, EC2 acting for an instance names the instance).
pub(crate) fn step(caller: &Caller, issued: Option<&Session>) -> Step {
    let key = caller.access_key_id.as_deref().filter(|k| !k.is_empty());
    let own = |v: &Option<String>| v.clone();
    let session_account = issued.map(|s| s.account_id.clone()).or_else(|| own(&caller.account_id));
    match caller.identity_type.as_str() {
        "Root" => {
            let principal = own(&caller.arn).or_else(|| caller.account_id.as_ref().map(|a| format!("arn:aws:iam::{a}:root")));
            Step::Origin(origin(OriginKind::Root, principal, own(&caller.account_id), None))
        }
        "IAMUser" => match (key, &caller.arn) {
            (Some(k), _) if is_temporary(k) => Step::Follow(k.to_owned()),
            (_, Some(arn)) => Step::Origin(origin(OriginKind::IamUser, Some(arn.clone()), own(&caller.account_id), None)),
            // A failed sign-in names the user it tried, not one that signed in.
            (_, None) => match caller.user_name.as_deref() {
                Some(name) if name != "HIDDEN_DUE_TO_SECURITY_REASONS" => {
                    let mut o = origin(OriginKind::IamUser, Some(name.to_owned()), own(&caller.account_id), None);
                    o.confidence = Confidence::Derived;
                    o.reason = Some("the record names the user without an ARN (a failed sign-in names the user it tried)".into());
                    Step::Origin(o)
                }
                _ => Step::Opaque { principal: None, reason: "the record hides the user name (a sign-in with a user name that does not exist)".into() },
            },
        },
        "SAMLUser" => {
            let kind = if issued.is_some_and(|s| s.kind == IssueKind::IdentityCenter) { OriginKind::IdentityCenterUser } else { OriginKind::SamlUser };
            Step::Origin(origin(kind, own(&caller.user_name).or_else(|| own(&caller.principal_id)), session_account, own(&caller.identity_provider)))
        }
        "WebIdentityUser" => Step::Origin(origin(
            OriginKind::WebIdentity,
            own(&caller.user_name).or_else(|| own(&caller.principal_id)),
            session_account,
            own(&caller.identity_provider),
        )),
        "IdentityCenterUser" => {
            Step::Origin(origin(OriginKind::IdentityCenterUser, own(&caller.on_behalf_of), own(&caller.account_id), own(&caller.identity_store_arn)))
        }
        "AWSService" => Step::Origin(origin(OriginKind::AwsService, Some(service_principal(caller, issued)), session_account, None)),
        "AWSAccount" => Step::AccountOnly,
        _ if key.is_some() => Step::Follow(key.map(str::to_owned).unwrap_or_default()),
        "AssumedRole" | "FederatedUser" | "Role" => Step::NoKey,
        // Service events (key rotation) name only the service acting.
        _ if caller.invoked_by.is_some() => Step::Origin(origin(OriginKind::AwsService, own(&caller.invoked_by), own(&caller.account_id), None)),
        other => Step::Opaque {
            principal: own(&caller.user_name).or_else(|| own(&caller.arn)),
            reason: format!("the record's userIdentity is of type {other}, which names no credentials to follow"),
        },
    }
}

/// `ec2.amazonaws.com:i-0…` for an instance profile; else the service.
fn service_principal(caller: &Caller, issued: Option<&Session>) -> String {
    let service = caller.invoked_by.clone().unwrap_or_else(|| "AWS service".to_owned());
    match issued.and_then(|s| s.session_name.as_deref()) {
        Some(name) if service == "ec2.amazonaws.com" && is_instance_id(name) => format!("{service}:{name}"),
        _ => service,
    }
}

/// The origin of a federation token's session: the federated user.
pub(crate) fn federated(session: &Session) -> Origin {
    let principal = session.assumed_arn.clone().or_else(|| session.session_name.clone());
    origin(OriginKind::FederatedUser, principal, Some(session.account_id.clone()), None)
}

/// A principal of another account, known only by that account.
pub(crate) fn account_only(caller: &Caller) -> Origin {
    let mut o = origin(OriginKind::AwsAccount, caller.account_id.clone(), caller.account_id.clone(), None);
    o.confidence = Confidence::Derived;
    o
}

/// `i-` then 8 or 17 lowercase hex digits.
pub(crate) fn is_instance_id(name: &str) -> bool {
    name.strip_prefix("i-").is_some_and(|hex| matches!(hex.len(), 8 | 17) && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// The role session's name: the last part of `assumed-role/<role>/<name>`, or
/// of the principal id `AROA…:<name>`.
fn session_name(caller: &Caller) -> Option<&str> {
    let from_arn = caller.arn.as_deref().filter(|a| a.contains(":assumed-role/")).and_then(|a| a.rsplit('/').next());
    from_arn.or_else(|| caller.principal_id.as_deref().and_then(|p| p.split_once(':')).map(|(_, name)| name)).filter(|n| !n.is_empty())
}

/// The role name of a role session (from the issuer, else the session ARN).
fn role_name(caller: &Caller) -> Option<&str> {
    if let Some(issuer) = caller.session_issuer_arn.as_deref() {
        return issuer.rsplit('/').next();
    }
    let arn = caller.arn.as_deref()?;
    let rest = arn.split_once(":assumed-role/")?.1;
    rest.split('/').next()
}

fn role_account(caller: &Caller) -> Option<String> {
    caller.session_issuer_arn.as_deref().and_then(arn_account).map(str::to_owned).or_else(|| caller.account_id.clone())
}

/// What the record itself tells when the session behind the caller's key is
/// missing: an Identity Center role's session name, an instance-profile
/// session, the chain's `sourceIdentity`, or the IAM user of a user session.
/// The origin is `derived`; its reason says what it was taken from.
pub(crate) fn fallback(caller: &Caller) -> Option<Origin> {
    let derived = |mut o: Origin, reason: String| {
        o.confidence = Confidence::Derived;
        o.reason = Some(reason);
        o
    };
    if let (Some(set), Some(name)) = (role_name(caller).and_then(permission_set), session_name(caller)) {
        let o = origin(OriginKind::IdentityCenterUser, Some(name.to_owned()), role_account(caller), None);
        return Some(derived(o, format!("the Identity Center user named by the session of permission set {set}")));
    }
    let name = session_name(caller);
    let instance = name.filter(|n| is_instance_id(n));
    if caller.ec2_role_delivery.is_some() || instance.is_some() {
        let principal = instance.map_or_else(|| "ec2.amazonaws.com".to_owned(), |id| format!("ec2.amazonaws.com:{id}"));
        let how = if caller.ec2_role_delivery.is_some() { "delivered by the instance metadata service (ec2RoleDelivery)" } else { "named after the instance" };
        return Some(derived(origin(OriginKind::AwsService, Some(principal), role_account(caller), None), format!("an instance-profile session, {how}")));
    }
    if let Some(source) = caller.source_identity.as_deref().filter(|s| !s.is_empty()) {
        let o = origin(OriginKind::SourceIdentity, Some(source.to_owned()), None, None);
        return Some(derived(o, "the sourceIdentity the chain carries".to_owned()));
    }
    if caller.identity_type == "IAMUser" {
        let o = origin(OriginKind::IamUser, caller.arn.clone().or_else(|| caller.user_name.clone()), caller.account_id.clone(), None);
        return Some(derived(o, "the IAM user the temporary key belongs to (a GetSessionToken or console session)".to_owned()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role_session(role: &str, name: &str) -> Caller {
        Caller {
            identity_type: "AssumedRole".into(),
            arn: Some(format!("arn:aws:sts::741258963012:assumed-role/{role}/{name}")),
            account_id: Some("741258963012".into()),
            access_key_id: Some("ASIAEXAMPLE".into()),
            session_issuer_arn: Some(format!("arn:aws:iam::741258963012:role/{role}")),
            ..Caller::default()
        }
    }

    #[test]
    fn session_identities_are_followed_and_principals_are_origins() {
        assert_eq!(step(&role_session("Admin", "bob"), None), Step::Follow("ASIAEXAMPLE".into()));
        let user =
            Caller { identity_type: "IAMUser".into(), arn: Some("arn:aws:iam::1:user/a".into()), access_key_id: Some("AKIA1".into()), ..Caller::default() };
        assert!(matches!(step(&user, None), Step::Origin(Origin { kind: OriginKind::IamUser, .. })));
        let with_token = Caller { access_key_id: Some("ASIA1".into()), ..user };
        assert_eq!(step(&with_token, None), Step::Follow("ASIA1".into()));
        let console = Caller { access_key_id: None, ..role_session("Admin", "bob") };
        assert_eq!(step(&console, None), Step::NoKey);
        let sign_in = Caller { identity_type: "Unknown".into(), user_name: Some("alice@example.com".into()), ..Caller::default() };
        assert!(matches!(step(&sign_in, None), Step::Opaque { principal: Some(_), .. }));
    }

    #[test]
    fn fallbacks_say_what_they_were_taken_from() {
        let sso = fallback(&role_session("AWSReservedSSO_PlatformAdmin_3f9c2a7b1d8e4f60", "alice@example.com")).unwrap();
        assert_eq!((sso.kind, sso.principal.as_deref(), sso.confidence), (OriginKind::IdentityCenterUser, Some("alice@example.com"), Confidence::Derived));
        assert!(sso.reason.unwrap().contains("PlatformAdmin"));
        let ec2 = fallback(&role_session("web", "i-0c4e7a19b2d3f5a68")).unwrap();
        assert_eq!((ec2.kind, ec2.principal.as_deref()), (OriginKind::AwsService, Some("ec2.amazonaws.com:i-0c4e7a19b2d3f5a68")));
        let carried = Caller { source_identity: Some("devon".into()), ..role_session("Deployer", "deploy-1") };
        assert_eq!(fallback(&carried).unwrap().kind, OriginKind::SourceIdentity);
        assert_eq!(fallback(&role_session("Deployer", "deploy-1")), None);
        assert!(
            is_instance_id("i-0317f6c6b66ae9c40") && is_instance_id("i-12ab34cd") && !is_instance_id("i-nstance") && !is_instance_id("i-0317F6C6B66AE9C40")
        );
    }
}
