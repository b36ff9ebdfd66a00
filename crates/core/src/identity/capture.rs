//! Sessions from credential-issuing records.
//!
//! Only a record that shows credentials issues a session: a successful STS
//! `AssumeRole*`, `GetFederationToken` or `GetSessionToken` with
//! `responseElements.credentials.accessKeyId`, or an Identity Center
//! `GetRoleCredentials` whose response shows `roleCredentials` (CloudTrail
//! normally writes that response as `null`: the credentials' use then shows
//! as an `AssumeRoleWithSAML` into the `AWSReservedSSO_*` role, which is
//! captured). A console `SwitchRole` sign-in event shows no key, so it issues
//! nothing; its console session's calls are resolved by the fallbacks.
//!
//! Issuing records are rare, so their `requestParameters` and
//! `responseElements` are parsed into small owned structs here, and only for
//! the event names that can issue.

use serde::Deserialize;
use serde_json::Value;

use super::{Caller, IssueKind, Session};
use crate::time::{days_from_civil, parse_utc, EpochMillis};
use crate::view::RecordView;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    role_arn: Option<String>,
    role_session_name: Option<String>,
    source_identity: Option<String>,
    /// The SAML provider (AssumeRoleWithSAML).
    principal_arn: Option<String>,
    /// The OIDC provider (AssumeRoleWithWebIdentity, older records).
    provider_id: Option<String>,
    /// The federated user's name (GetFederationToken).
    name: Option<String>,
    duration_seconds: Option<Value>,
    /// The account of the role (Identity Center `GetRoleCredentials`).
    account_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    credentials: Option<Credentials>,
    /// Identity Center `GetRoleCredentials`.
    role_credentials: Option<Credentials>,
    assumed_role_user: Option<ArnHolder>,
    federated_user: Option<ArnHolder>,
    source_identity: Option<String>,
    subject_from_web_identity_token: Option<String>,
    /// The SAML subject.
    subject: Option<String>,
    provider: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Credentials {
    access_key_id: Option<String>,
    expiration: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct ArnHolder {
    arn: Option<String>,
}

const HOUR_MS: EpochMillis = 3_600_000;

/// The session issued by a credential-issuing record, or None: other
/// events, failed calls (any `errorCode`) and records that show no
/// credentials issue nothing. `key_account` is the account of the object the
/// record came from, used when `recipientAccountId` is absent.
pub fn capture(view: &RecordView<'_>, key_account: &str) -> Option<Session> {
    if view.error_code.as_deref().is_some_and(|c| !c.is_empty()) {
        return None;
    }
    let kind = match (view.event_source.as_deref()?, view.event_name.as_deref()?) {
        ("sts.amazonaws.com", "AssumeRole") => IssueKind::AssumeRole,
        ("sts.amazonaws.com", "AssumeRoleWithSAML") => IssueKind::AssumeRoleWithSaml,
        ("sts.amazonaws.com", "AssumeRoleWithWebIdentity") => IssueKind::AssumeRoleWithWebIdentity,
        ("sts.amazonaws.com", "GetFederationToken") => IssueKind::GetFederationToken,
        ("sts.amazonaws.com", "GetSessionToken") => IssueKind::GetSessionToken,
        ("sso.amazonaws.com", "GetRoleCredentials") => IssueKind::IdentityCenter,
        _ => return None,
    };
    let response_raw = view.response_elements?.get();
    if !response_raw.contains("accessKeyId") {
        return None;
    }
    let response: Response = serde_json::from_str(response_raw).ok()?;
    let request: Request = view.request_parameters.and_then(|r| serde_json::from_str(r.get()).ok()).unwrap_or_default();
    let credentials = response.credentials.as_ref().or(response.role_credentials.as_ref())?;
    let access_key_id = credentials.access_key_id.clone().filter(|k| !k.is_empty())?;
    let issued_at = parse_utc(view.event_time.as_deref().or(view.export_timestamp.as_deref())?).ok()?;
    let event_id = view.event_id.as_deref().filter(|s| !s.is_empty())?.to_owned();
    let mut caller = view.user_identity.as_ref().map(Caller::from_view).unwrap_or_else(|| Caller { identity_type: "Unknown".into(), ..Caller::default() });

    let kind = match kind {
        IssueKind::AssumeRole if caller.identity_type == "AWSService" => IssueKind::Service,
        IssueKind::AssumeRoleWithSaml if request.role_arn.as_deref().is_some_and(is_identity_center_role) => IssueKind::IdentityCenter,
        other => other,
    };
    // What the caller's userIdentity leaves out, the request and response say.
    match kind {
        IssueKind::AssumeRoleWithSaml | IssueKind::IdentityCenter if caller.identity_type == "SAMLUser" => {
            // The provider ARN names the IdP; `identityProvider` holds only its name qualifier.
            if request.principal_arn.is_some() {
                caller.identity_provider.clone_from(&request.principal_arn);
            }
            if caller.user_name.is_none() {
                caller.user_name.clone_from(&response.subject);
            }
        }
        IssueKind::AssumeRoleWithWebIdentity => {
            if caller.identity_provider.is_none() {
                caller.identity_provider = response.provider.clone().or_else(|| request.provider_id.clone());
            }
            if caller.user_name.is_none() {
                caller.user_name.clone_from(&response.subject_from_web_identity_token);
            }
        }
        _ => {}
    }

    let caller_account = caller.account_id.clone().or_else(|| caller.arn.as_deref().and_then(arn_account).map(str::to_owned));
    let (account_id, role_arn, session_name, assumed_arn) = match kind {
        IssueKind::GetSessionToken => (caller_account?, None, None, caller.arn.clone()),
        IssueKind::GetFederationToken => (caller_account?, None, request.name.clone(), response.federated_user.and_then(|u| u.arn)),
        IssueKind::IdentityCenter if request.role_arn.is_none() => (request.account_id.clone()?, None, None, None),
        _ => {
            let role_arn = request.role_arn.clone()?;
            let account = arn_account(&role_arn)?.to_owned();
            let session_name = request.role_session_name.clone();
            let assumed = response.assumed_role_user.and_then(|u| u.arn).or_else(|| session_name.as_deref().and_then(|name| assumed_role_arn(&role_arn, name)));
            (account, Some(role_arn), session_name, assumed)
        }
    };
    let expires_at = credentials.expiration.as_ref().and_then(parse_expiration).unwrap_or_else(|| issued_at + default_duration(kind, &request));
    let source_identity = response.source_identity.or(request.source_identity).or_else(|| caller.source_identity.clone());
    Some(Session {
        access_key_id,
        issued_at,
        expires_at,
        kind,
        account_id,
        role_arn,
        session_name,
        assumed_arn,
        source_identity,
        event_id,
        event_account: view.recipient_account_id.as_deref().filter(|a| !a.is_empty()).unwrap_or(key_account).to_owned(),
        shared_event_id: view.shared_event_id.as_deref().filter(|s| !s.is_empty()).map(str::to_owned),
        caller,
    })
}

/// How long credentials last when the record does not say: the requested
/// duration, else the API's default (one hour for roles, twelve for tokens).
fn default_duration(kind: IssueKind, request: &Request) -> EpochMillis {
    let requested = request.duration_seconds.as_ref().and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())));
    match (requested, kind) {
        (Some(secs), _) if secs > 0 => secs * 1000,
        (_, IssueKind::GetSessionToken | IssueKind::GetFederationToken) => 12 * HOUR_MS,
        _ => HOUR_MS,
    }
}

/// Whether a role ARN (or role name) is an Identity Center permission-set role.
pub(crate) fn is_identity_center_role(role: &str) -> bool {
    permission_set(role.rsplit('/').next().unwrap_or(role)).is_some()
}

/// The permission set of an `AWSReservedSSO_<PermissionSet>_<16 hex>` role name.
pub(crate) fn permission_set(role_name: &str) -> Option<&str> {
    let (set, suffix) = role_name.strip_prefix("AWSReservedSSO_")?.rsplit_once('_')?;
    (!set.is_empty() && suffix.len() == 16 && suffix.bytes().all(|b| b.is_ascii_hexdigit())).then_some(set)
}

/// The account of an ARN (`arn:aws:iam::123456789012:role/x` → `123456789012`).
pub(crate) fn arn_account(arn: &str) -> Option<&str> {
    arn.split(':').nth(4).filter(|a| !a.is_empty())
}

/// The session ARN of a role session, when the record does not show it
/// (EC2 writes no `assumedRoleUser`).
fn assumed_role_arn(role_arn: &str, session_name: &str) -> Option<String> {
    let partition = role_arn.split(':').nth(1)?;
    let account = arn_account(role_arn)?;
    let role_name = role_arn.rsplit('/').next()?;
    Some(format!("arn:{partition}:sts::{account}:assumed-role/{role_name}/{session_name}"))
}

/// Reads `credentials.expiration` in the forms CloudTrail writes: `Mar 12,
/// 2024, 10:14:27 AM` (also without the comma after the year, or with a
/// narrow no-break space before the AM/PM), ISO 8601 (`2024-03-12T10:14:27Z`),
/// or epoch milliseconds (Identity Center). Always UTC.
pub fn parse_expiration(value: &Value) -> Option<EpochMillis> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => parse_utc(s).ok().or_else(|| parse_human(s)).or_else(|| parse_utc(&s.replace("+0000", "Z")).ok()),
        _ => None,
    }
}

fn parse_human(text: &str) -> Option<EpochMillis> {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let mut parts = text.split(|c: char| c == ',' || c.is_whitespace()).filter(|p| !p.is_empty());
    let month = parts.next()?;
    let month = MONTHS.iter().position(|m| month.get(..3).is_some_and(|p| p.eq_ignore_ascii_case(m)))? as u32 + 1;
    let day: u32 = parts.next()?.parse().ok()?;
    let year: i64 = parts.next()?.parse().ok()?;
    let mut clock = parts.next()?.split(':');
    let (hour, minute, second): (i64, i64, i64) = (clock.next()?.parse().ok()?, clock.next()?.parse().ok()?, clock.next().unwrap_or("0").parse().ok()?);
    let hour = match parts.next() {
        Some(h) if h.eq_ignore_ascii_case("AM") => hour % 12,
        Some(h) if h.eq_ignore_ascii_case("PM") => hour % 12 + 12,
        None => hour,
        Some(_) => return None,
    };
    if !(1..=31).contains(&day) || !(0..24).contains(&hour) || !(0..60).contains(&minute) || !(0..=60).contains(&second) {
        return None;
    }
    Some(((days_from_civil(year, month, day) * 24 + hour) * 60 + minute) * 60_000 + second * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn session(record: Value) -> Option<Session> {
        let bytes = serde_json::to_vec(&record).unwrap();
        capture(&RecordView::parse(&bytes).unwrap(), "111122223333")
    }

    fn assume_role(identity: Value) -> Value {
        json!({"eventTime": "2024-03-12T09:14:27Z", "eventSource": "sts.amazonaws.com", "eventName": "AssumeRole", "eventID": "e1",
            "recipientAccountId": "508917263341", "userIdentity": identity,
            "requestParameters": {"roleArn": "arn:aws:iam::741258963012:role/Deployer", "roleSessionName": "ci-7", "durationSeconds": 900},
            "responseElements": {"credentials": {"accessKeyId": "ASIAEXAMPLE1", "expiration": "Mar 12, 2024, 9:29:27 AM"}}})
    }

    #[test]
    fn reads_expirations_in_every_form() {
        let at = parse_utc("2024-03-12T22:14:27Z").unwrap();
        for text in [
            "Mar 12, 2024, 10:14:27 PM",
            "Mar 12, 2024 10:14:27 PM",
            "Mar 12, 2024, 10:14:27\u{202f}PM",
            "2024-03-12T22:14:27Z",
            "2024-03-12T22:14:27.000+0000",
        ] {
            assert_eq!(parse_expiration(&json!(text)), Some(at), "{text}");
        }
        assert_eq!(parse_expiration(&json!("Sep 14, 2020, 12:01:26 AM")), parse_utc("2020-09-14T00:01:26Z").ok());
        assert_eq!(parse_expiration(&json!("Sep 14, 2020, 12:01:26 PM")), parse_utc("2020-09-14T12:01:26Z").ok());
        assert_eq!(parse_expiration(&json!(1_710_281_667_000_i64)), Some(1_710_281_667_000));
        assert_eq!(parse_expiration(&json!("soon")), None);
    }

    #[test]
    fn an_assume_role_issues_a_session_for_the_role() {
        let s = session(assume_role(
            json!({"type": "IAMUser", "arn": "arn:aws:iam::508917263341:user/maria", "accountId": "508917263341", "accessKeyId": "AKIAEXAMPLE"}),
        ))
        .unwrap();
        assert_eq!(
            (s.access_key_id.as_str(), s.kind, s.account_id.as_str(), s.event_account.as_str()),
            ("ASIAEXAMPLE1", IssueKind::AssumeRole, "741258963012", "508917263341")
        );
        assert_eq!(s.expires_at - s.issued_at, 15 * 60_000);
        assert_eq!(
            s.assumed_arn.as_deref(),
            Some("arn:aws:sts::741258963012:assumed-role/Deployer/ci-7"),
            "derived from the request when the response has none"
        );
        assert_eq!(s.caller.arn.as_deref(), Some("arn:aws:iam::508917263341:user/maria"));
    }

    #[test]
    fn a_service_caller_issues_a_service_session() {
        let s = session(assume_role(json!({"type": "AWSService", "invokedBy": "ecs-tasks.amazonaws.com"}))).unwrap();
        assert_eq!(s.kind, IssueKind::Service);
    }

    #[test]
    fn failed_or_credential_less_records_issue_nothing() {
        let mut failed = assume_role(json!({"type": "IAMUser", "accountId": "508917263341"}));
        failed["errorCode"] = json!("AccessDenied");
        assert_eq!(session(failed), None);
        let mut redacted = assume_role(json!({"type": "IAMUser", "accountId": "508917263341"}));
        redacted["responseElements"] = Value::Null;
        assert_eq!(session(redacted), None);
        let mut other = assume_role(json!({"type": "IAMUser", "accountId": "508917263341"}));
        other["eventName"] = json!("GetCallerIdentity");
        assert_eq!(session(other), None);
        let switch = json!({"eventTime": "2024-03-12T16:21:12Z", "eventSource": "signin.amazonaws.com", "eventName": "SwitchRole", "eventID": "e2", "responseElements": {"SwitchRole": "Success"}});
        assert_eq!(session(switch), None);
    }

    #[test]
    fn a_missing_expiration_falls_back_to_the_requested_duration() {
        let mut record = assume_role(json!({"type": "IAMUser", "accountId": "508917263341"}));
        record["responseElements"]["credentials"]["expiration"] = json!("later");
        let s = session(record).unwrap();
        assert_eq!(s.expires_at - s.issued_at, 900_000);
    }

    #[test]
    fn identity_center_role_credentials_with_a_response_issue_a_session() {
        let record = json!({"eventTime": "2024-03-12T08:31:40Z", "eventSource": "sso.amazonaws.com", "eventName": "GetRoleCredentials", "eventID": "e3",
            "recipientAccountId": "318246550911",
            "userIdentity": {"type": "IdentityCenterUser", "accountId": "318246550911", "onBehalfOf": {"userId": "u-1", "identityStoreArn": "arn:aws:identitystore::318246550911:identitystore/d-1"}},
            "requestParameters": {"roleName": "PlatformAdmin", "accountId": "741258963012"},
            "responseElements": {"roleCredentials": {"accessKeyId": "ASIAEXAMPLESSO", "expiration": 1_710_261_100_000_i64}}});
        let s = session(record).unwrap();
        assert_eq!((s.kind, s.account_id.as_str(), s.expires_at), (IssueKind::IdentityCenter, "741258963012", 1_710_261_100_000));
        assert_eq!(s.caller.on_behalf_of.as_deref(), Some("u-1"));
    }

    #[test]
    fn recognizes_permission_set_roles() {
        assert_eq!(permission_set("AWSReservedSSO_PlatformAdmin_3f9c2a7b1d8e4f60"), Some("PlatformAdmin"));
        assert_eq!(permission_set("AWSReservedSSO_Read_Only_3f9c2a7b1d8e4f60"), Some("Read_Only"));
        assert_eq!(permission_set("AWSReservedSSO_PlatformAdmin"), None);
        assert!(is_identity_center_role(
            "arn:aws:iam::741258963012:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_PlatformAdmin_3f9c2a7b1d8e4f60"
        ));
        assert!(!is_identity_center_role("arn:aws:iam::741258963012:role/Admin"));
    }
}
