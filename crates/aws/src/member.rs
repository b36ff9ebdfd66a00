//! Reads in member accounts, through the member-account read role that the
//! StackSet (`stacksets/member.yaml`) deploys in every account:
//! `arn:aws:iam::<account>:role/<name>`, assumed with an external id.
//!
//! Every call made with that role's credentials is in this file: STS
//! AssumeRole, then iam:ListAccountAliases, cloudtrail:DescribeTrails (with
//! shadow trails, so organization trails show) and cloudtrail:GetTrailStatus
//! per trail; the role allows exactly these. The answer is a
//! [`MemberCheck`]: a refused AssumeRole means the account is not onboarded
//! (the StackSet instance is missing); a failure after it is kept with the
//! call's name and the other reads go on.

use std::fmt;
use std::time::SystemTime;

use aws_config::SdkConfig;
use trailwatch_core::onboarding::{MemberCheck, RoleAccess, TrailState};
use trailwatch_core::ports::PortError;

use crate::clients::{ApiCalls, Clients};
use crate::error::{classify, invalid, AwsResult};

/// The role name the StackSet gives the member-account read role.
pub const DEFAULT_ROLE_NAME: &str = "trailwatch-member-read";

/// The shortest session STS grants: a check takes seconds.
const SESSION_SECONDS: i32 = 900;

/// Which role to assume in each member account.
#[derive(Clone, PartialEq, Eq)]
pub struct MemberRole {
    /// The role's name; its ARN is built from each account id.
    pub name: String,
    /// The external id the role's trust policy requires.
    pub external_id: Option<String>,
    pub session_name: String,
}

impl MemberRole {
    /// A role by name, with the session name trailwatch uses.
    pub fn new(name: impl Into<String>, external_id: Option<String>) -> Self {
        MemberRole { name: name.into(), external_id, session_name: "trailwatch-member-check".to_owned() }
    }

    /// Whether `name` is a valid IAM role name (1 to 64 of letters, digits and `+=,.@_-`).
    pub fn valid_name(name: &str) -> bool {
        (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
    }
}

impl fmt::Debug for MemberRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberRole")
            .field("name", &self.name)
            .field("external_id", &self.external_id.as_ref().map(|_| "<redacted>"))
            .field("session_name", &self.session_name)
            .finish()
    }
}

/// Checks member accounts through their read role.
#[derive(Debug, Clone)]
pub struct MemberReader {
    sts: aws_sdk_sts::Client,
    config: SdkConfig,
    calls: ApiCalls,
    role: MemberRole,
    partition: &'static str,
}

impl MemberReader {
    /// Assumes roles with the clients' own credentials; the member clients
    /// share their configuration (region, endpoint) and request counts.
    pub fn new(clients: &Clients, role: MemberRole) -> Self {
        MemberReader {
            sts: clients.sts.clone(),
            config: clients.config.clone(),
            calls: clients.calls.clone(),
            partition: partition_of(clients.region().unwrap_or_default()),
            role,
        }
    }

    /// The read role's ARN in an account.
    pub fn role_arn(&self, account_id: &str) -> String {
        format!("arn:{}:iam::{account_id}:role/{}", self.partition, self.role.name)
    }

    /// What the read role shows of one account; never fails: what could not
    /// be read is in the answer.
    pub async fn check(&self, account_id: &str) -> MemberCheck {
        let role_arn = self.role_arn(account_id);
        let mut check = MemberCheck { role_arn: role_arn.clone(), role: RoleAccess::Assumed, alias: None, trails: Vec::new(), errors: Vec::new() };
        let credentials = match self.assume(account_id, &role_arn).await {
            Ok(credentials) => credentials,
            Err(e) => {
                check.role = role_refusal(&e);
                return check;
            }
        };
        let iam = aws_sdk_iam::Client::from_conf(
            aws_sdk_iam::config::Builder::from(&self.config).credentials_provider(credentials.clone()).interceptor(self.calls.clone()).build(),
        );
        let cloudtrail = aws_sdk_cloudtrail::Client::from_conf(
            aws_sdk_cloudtrail::config::Builder::from(&self.config).credentials_provider(credentials).interceptor(self.calls.clone()).build(),
        );
        match account_alias(&iam, account_id).await {
            Ok(alias) => check.alias = alias,
            Err(e) => check.errors.push(e.to_string()),
        }
        match trails(&cloudtrail, account_id).await {
            Ok(trails) => check.trails = trails,
            Err(e) => check.errors.push(e.to_string()),
        }
        for trail in &mut check.trails {
            trail_status(&cloudtrail, account_id, trail).await;
        }
        check
    }

    /// Temporary credentials of the read role in `account_id`.
    async fn assume(&self, account_id: &str, role_arn: &str) -> AwsResult<aws_sdk_iam::config::Credentials> {
        let what = format!("sts:AssumeRole {role_arn}");
        if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(&what, format!("{account_id:?} is not a 12-digit account id")));
        }
        let out = self
            .sts
            .assume_role()
            .role_arn(role_arn)
            .role_session_name(&self.role.session_name)
            .set_external_id(self.role.external_id.clone())
            .duration_seconds(SESSION_SECONDS)
            .send()
            .await
            .map_err(|e| classify(&what, e))?;
        let c = out.credentials().ok_or_else(|| PortError::backend(&what, "the answer holds no credentials", false))?;
        Ok(aws_sdk_iam::config::Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_owned()),
            SystemTime::try_from(*c.expiration()).ok(),
            "trailwatch-member-role",
        ))
    }
}

/// How a failed AssumeRole reads: refused by AWS (no such role, a trust
/// policy or external id that keeps trailwatch out) means not onboarded; a
/// failure that may pass (throttling, no connection) leaves it unknown.
pub fn role_refusal(error: &PortError) -> RoleAccess {
    let text = match error {
        PortError::Backend { message, .. } => message.clone(),
        other => other.to_string(),
    };
    if error.is_retryable() {
        RoleAccess::Unchecked { error: text }
    } else {
        RoleAccess::Refused { error: text }
    }
}

/// The partition of a region's ARNs.
fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else {
        "aws"
    }
}

/// The account's IAM alias (an account has at most one).
async fn account_alias(iam: &aws_sdk_iam::Client, account_id: &str) -> AwsResult<Option<String>> {
    let out = iam.list_account_aliases().send().await.map_err(|e| classify(&format!("iam:ListAccountAliases in {account_id}"), e))?;
    Ok(out.account_aliases().first().cloned())
}

/// Every trail that covers the account from the client's region: its own,
/// shadow copies of multi-region trails, and organization trails.
async fn trails(cloudtrail: &aws_sdk_cloudtrail::Client, account_id: &str) -> AwsResult<Vec<TrailState>> {
    let out = cloudtrail
        .describe_trails()
        .include_shadow_trails(true)
        .send()
        .await
        .map_err(|e| classify(&format!("cloudtrail:DescribeTrails in {account_id}"), e))?;
    let mut trails: Vec<TrailState> = out
        .trail_list()
        .iter()
        .map(|t| TrailState {
            name: t.name().or(t.trail_arn()).unwrap_or("(unnamed)").to_owned(),
            arn: t.trail_arn().map(str::to_owned),
            home_region: t.home_region().map(str::to_owned),
            organization_trail: t.is_organization_trail().unwrap_or(false),
            multi_region: t.is_multi_region_trail().unwrap_or(false),
            bucket: t.s3_bucket_name().map(str::to_owned),
            ..TrailState::default()
        })
        .collect();
    trails.sort_by(|a, b| (!a.organization_trail, &a.name).cmp(&(!b.organization_trail, &b.name)));
    Ok(trails)
}

/// Fills in whether the trail logs and its latest delivery (error); a
/// failure is kept on the trail.
async fn trail_status(cloudtrail: &aws_sdk_cloudtrail::Client, account_id: &str, trail: &mut TrailState) {
    // A shadow trail's status is asked by its ARN.
    let name = trail.arn.clone().unwrap_or_else(|| trail.name.clone());
    let what = format!("cloudtrail:GetTrailStatus {name} in {account_id}");
    match cloudtrail.get_trail_status().name(&name).send().await.map_err(|e| classify(&what, e)) {
        Ok(status) => {
            trail.logging = status.is_logging();
            trail.latest_delivery_error = status.latest_delivery_error().filter(|e| !e.is_empty()).map(str::to_owned);
            trail.latest_delivery = status.latest_delivery_time().and_then(|t| t.to_millis().ok());
        }
        Err(e) => trail.status_error = Some(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_role_means_not_onboarded_and_a_passing_failure_means_unknown() {
        let denied = PortError::backend("sts:AssumeRole arn:aws:iam::111122223333:role/trailwatch-member-read", "AccessDenied: not authorized", false);
        assert_eq!(role_refusal(&denied), RoleAccess::Refused { error: "AccessDenied: not authorized".into() });
        let throttled = PortError::backend("sts:AssumeRole …", "Throttling: slow down", true);
        assert_eq!(role_refusal(&throttled), RoleAccess::Unchecked { error: "Throttling: slow down".into() });
    }

    #[test]
    fn role_names_and_partitions() {
        assert!(MemberRole::valid_name(DEFAULT_ROLE_NAME));
        assert!(!MemberRole::valid_name("") && !MemberRole::valid_name("a/b") && !MemberRole::valid_name(&"r".repeat(65)));
        assert_eq!(partition_of("eu-west-1"), "aws");
        assert_eq!(partition_of("cn-north-1"), "aws-cn");
        assert_eq!(partition_of("us-gov-west-1"), "aws-us-gov");
        let role = MemberRole::new("r", Some("secret-external-id".into()));
        assert!(!format!("{role:?}").contains("secret-external-id"));
    }
}
