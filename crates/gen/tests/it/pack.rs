//! The built-in rule pack's 20 rules as their brief describes them, written
//! over plain records, independently of the generator: what a generated
//! trail must (and must not) match. Dedup: one alert per rule and group
//! (`recipientAccountId` unless the rule says more), a new one after 24 h
//! without a match. A threshold rule's match counts only when it is part of
//! a burst, more than `above` matches of its group within one `window` of
//! event time: every match of the burst counts, the first opens the alert.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;
use trailwatch_core::time::parse_utc;

const MINUTE: i64 = 60_000;
const RESOLVE_AFTER: i64 = 24 * 60 * MINUTE;
const ACCOUNT: &[&str] = &["recipientAccountId"];

pub struct Rule {
    pub id: &'static str,
    matches: fn(&Value) -> bool,
    group: &'static [&'static str],
    /// More than `.0` matches within `.1` milliseconds.
    threshold: Option<(usize, i64)>,
}

/// The text at a dotted path, if it is a string (or a number, as text).
pub fn text<'a>(record: &'a Value, path: &str) -> Option<&'a str> {
    path.split('.').try_fold(record, |v, key| v.get(key))?.as_str()
}

fn named(r: &Value, source: &str, names: &[&str]) -> bool {
    text(r, "eventSource") == Some(source) && text(r, "eventName").is_some_and(|n| names.contains(&n))
}

fn failed_console_login(r: &Value) -> bool {
    text(r, "eventName") == Some("ConsoleLogin")
        && (text(r, "responseElements.ConsoleLogin") == Some("Failure") || text(r, "errorMessage") == Some("Failed authentication"))
}

/// An EC2 instance-profile session: principal id ending `:i-…`, or `ec2RoleDelivery`.
pub fn instance_session(r: &Value) -> bool {
    let by_name = text(r, "userIdentity.principalId")
        .and_then(|p| p.rsplit_once(":i-"))
        .is_some_and(|(_, id)| !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()));
    by_name || r["userIdentity"]["sessionContext"].get("ec2RoleDelivery").is_some()
}

/// A public IP address (not an AWS service name, not private, loopback or link-local).
pub fn public_ip(ip: &str) -> bool {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => !(v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()),
        Ok(IpAddr::V6(v6)) => !(v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80 || (v6.segments()[0] & 0xfe00) == 0xfc00),
        Err(_) => false,
    }
}

pub fn rules() -> Vec<Rule> {
    let rule = |id, matches, group, threshold| Rule { id, matches, group, threshold };
    vec![
        rule(
            "root-account-usage",
            |r| text(r, "userIdentity.type") == Some("Root") && r["userIdentity"].get("invokedBy").is_none() && text(r, "eventType") != Some("AwsServiceEvent"),
            ACCOUNT,
            None,
        ),
        rule(
            "unauthorized-api-calls",
            |r| matches!(text(r, "errorCode"), Some("AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" | "Client.UnauthorizedOperation")),
            &["recipientAccountId", "userIdentity.arn"],
            Some((10, 5 * MINUTE)),
        ),
        rule(
            "console-signin-without-mfa",
            |r| {
                text(r, "eventName") == Some("ConsoleLogin")
                    && text(r, "userIdentity.type") == Some("IAMUser")
                    && text(r, "responseElements.ConsoleLogin") == Some("Success")
                    && text(r, "additionalEventData.MFAUsed") != Some("Yes")
            },
            &["recipientAccountId", "userIdentity.arn"],
            None,
        ),
        rule(
            "iam-policy-changes",
            |r| {
                named(
                    r,
                    "iam.amazonaws.com",
                    &[
                        "DeleteGroupPolicy",
                        "DeleteRolePolicy",
                        "DeleteUserPolicy",
                        "PutGroupPolicy",
                        "PutRolePolicy",
                        "PutUserPolicy",
                        "CreatePolicy",
                        "DeletePolicy",
                        "CreatePolicyVersion",
                        "DeletePolicyVersion",
                        "AttachRolePolicy",
                        "DetachRolePolicy",
                        "AttachUserPolicy",
                        "DetachUserPolicy",
                        "AttachGroupPolicy",
                        "DetachGroupPolicy",
                    ],
                )
            },
            &["recipientAccountId", "userIdentity.arn"],
            None,
        ),
        rule(
            "cloudtrail-configuration-changes",
            |r| {
                named(
                    r,
                    "cloudtrail.amazonaws.com",
                    &["CreateTrail", "UpdateTrail", "DeleteTrail", "StartLogging", "StopLogging", "PutEventSelectors", "PutInsightSelectors"],
                )
            },
            ACCOUNT,
            None,
        ),
        rule("console-authentication-failures", failed_console_login, ACCOUNT, None),
        rule("kms-key-disabled-or-scheduled-deletion", |r| named(r, "kms.amazonaws.com", &["DisableKey", "ScheduleKeyDeletion"]), ACCOUNT, None),
        rule(
            "s3-bucket-policy-changes",
            |r| {
                named(
                    r,
                    "s3.amazonaws.com",
                    &[
                        "PutBucketAcl",
                        "PutBucketPolicy",
                        "PutBucketCors",
                        "PutBucketLifecycle",
                        "PutBucketReplication",
                        "DeleteBucketPolicy",
                        "DeleteBucketCors",
                        "DeleteBucketLifecycle",
                        "DeleteBucketReplication",
                    ],
                )
            },
            ACCOUNT,
            None,
        ),
        rule(
            "config-changes",
            |r| named(r, "config.amazonaws.com", &["StopConfigurationRecorder", "DeleteDeliveryChannel", "PutDeliveryChannel", "PutConfigurationRecorder"]),
            ACCOUNT,
            None,
        ),
        rule(
            "security-group-changes",
            |r| {
                named(
                    r,
                    "ec2.amazonaws.com",
                    &[
                        "AuthorizeSecurityGroupIngress",
                        "AuthorizeSecurityGroupEgress",
                        "RevokeSecurityGroupIngress",
                        "RevokeSecurityGroupEgress",
                        "CreateSecurityGroup",
                        "DeleteSecurityGroup",
                    ],
                )
            },
            ACCOUNT,
            None,
        ),
        rule(
            "network-acl-changes",
            |r| {
                named(
                    r,
                    "ec2.amazonaws.com",
                    &[
                        "CreateNetworkAcl",
                        "CreateNetworkAclEntry",
                        "DeleteNetworkAcl",
                        "DeleteNetworkAclEntry",
                        "ReplaceNetworkAclEntry",
                        "ReplaceNetworkAclAssociation",
                    ],
                )
            },
            ACCOUNT,
            None,
        ),
        rule(
            "network-gateway-changes",
            |r| {
                named(
                    r,
                    "ec2.amazonaws.com",
                    &[
                        "CreateCustomerGateway",
                        "DeleteCustomerGateway",
                        "CreateInternetGateway",
                        "DeleteInternetGateway",
                        "AttachInternetGateway",
                        "DetachInternetGateway",
                    ],
                )
            },
            ACCOUNT,
            None,
        ),
        rule(
            "route-table-changes",
            |r| {
                named(
                    r,
                    "ec2.amazonaws.com",
                    &[
                        "CreateRoute",
                        "CreateRouteTable",
                        "ReplaceRoute",
                        "ReplaceRouteTableAssociation",
                        "DeleteRouteTable",
                        "DeleteRoute",
                        "DisassociateRouteTable",
                    ],
                )
            },
            ACCOUNT,
            None,
        ),
        rule(
            "vpc-changes",
            |r| {
                named(
                    r,
                    "ec2.amazonaws.com",
                    &[
                        "CreateVpc",
                        "DeleteVpc",
                        "ModifyVpcAttribute",
                        "AcceptVpcPeeringConnection",
                        "CreateVpcPeeringConnection",
                        "DeleteVpcPeeringConnection",
                        "RejectVpcPeeringConnection",
                        "AttachClassicLinkVpc",
                        "DetachClassicLinkVpc",
                        "DisableVpcClassicLink",
                        "EnableVpcClassicLink",
                    ],
                )
            },
            ACCOUNT,
            None,
        ),
        rule(
            "organizations-changes",
            |r| {
                text(r, "eventSource") == Some("organizations.amazonaws.com")
                    && !text(r, "eventName").is_some_and(|n| n.starts_with("Describe") || n.starts_with("List") || n.starts_with("Get"))
            },
            ACCOUNT,
            None,
        ),
        rule("console-signin-brute-force", failed_console_login, &["recipientAccountId", "userIdentity.userName"], Some((3, 5 * MINUTE))),
        rule(
            "spot-capacity-changes",
            |r| {
                named(r, "ec2.amazonaws.com", &["RequestSpotInstances", "RequestSpotFleet", "CreateFleet", "CancelSpotInstanceRequests"])
                    || (text(r, "eventName") == Some("RunInstances")
                        && text(r, "requestParameters.instanceMarketOptions.marketType").is_some_and(|m| m.eq_ignore_ascii_case("spot")))
            },
            ACCOUNT,
            None,
        ),
        rule("root-access-key-created", |r| text(r, "eventName") == Some("CreateAccessKey") && text(r, "userIdentity.type") == Some("Root"), ACCOUNT, None),
        rule("guardduty-detector-deleted", |r| named(r, "guardduty.amazonaws.com", &["DeleteDetector"]), ACCOUNT, None),
        rule(
            "instance-credentials-used-outside-aws",
            |r| instance_session(r) && text(r, "sourceIPAddress").is_some_and(public_ip) && r.get("vpcEndpointId").is_none(),
            ACCOUNT,
            None,
        ),
    ]
}

/// An alert the pack raises.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Raised {
    pub rule: &'static str,
    pub group: BTreeMap<String, String>,
    pub first_event_id: String,
    pub count: usize,
}

/// (event time, eventID) of a match.
type Match = (i64, String);

/// Feeds records, in any order, through the rules.
pub struct Pack {
    rules: Vec<Rule>,
    /// Per rule (index) and group values: every match.
    matches: BTreeMap<(usize, Vec<String>), Vec<Match>>,
}

impl Pack {
    pub fn new() -> Self {
        Pack { rules: rules(), matches: BTreeMap::new() }
    }

    pub fn feed(&mut self, record: &Value) {
        for (i, rule) in self.rules.iter().enumerate() {
            if (rule.matches)(record) {
                let group = rule.group.iter().map(|f| text(record, f).unwrap_or("-").to_owned()).collect();
                let time = parse_utc(text(record, "eventTime").unwrap_or_default()).unwrap_or_default();
                self.matches.entry((i, group)).or_default().push((time, text(record, "eventID").unwrap_or_default().to_owned()));
            }
        }
    }

    /// Matching records per rule, alert or not.
    pub fn matched(&self, rule: &str) -> usize {
        self.matches.iter().filter(|((i, _), _)| self.rules[*i].id == rule).map(|(_, m)| m.len()).sum()
    }

    /// The most matches of one group of a threshold rule within its window.
    pub fn densest(&self, rule: &str) -> usize {
        let mut most = 0;
        for ((i, _), matches) in &self.matches {
            let r = &self.rules[*i];
            if let (true, Some((_, window))) = (r.id == rule, r.threshold) {
                most = most.max(densest(&times(matches), window));
            }
        }
        most
    }

    /// The alerts raised: a group's matches (for threshold rules, those
    /// of its bursts) split where 24 h pass without one; each part is
    /// an alert, with its first match and number of matches.
    pub fn alerts(&self) -> Vec<Raised> {
        let mut out = Vec::new();
        for ((i, group), matches) in &self.matches {
            let rule = &self.rules[*i];
            let mut sorted = matches.clone();
            sorted.sort();
            if let Some((above, window)) = rule.threshold {
                // Every match of a window holding more than `above` (a burst) counts.
                let mut from = 0;
                let mut over = vec![false; sorted.len()];
                for (to, m) in sorted.iter().enumerate() {
                    while m.0 - sorted[from].0 > window {
                        from += 1;
                    }
                    if to - from + 1 > above {
                        over[from..=to].iter_mut().for_each(|o| *o = true);
                    }
                }
                sorted = sorted.into_iter().zip(over).filter(|(_, over)| *over).map(|(m, _)| m).collect();
            }
            let mut parts: Vec<Vec<Match>> = Vec::new();
            for m in sorted {
                match parts.last_mut() {
                    Some(part) if part.last().is_some_and(|last| m.0 - last.0 <= RESOLVE_AFTER) => part.push(m),
                    _ => parts.push(vec![m]),
                }
            }
            for part in parts {
                out.push(Raised {
                    rule: rule.id,
                    group: rule.group.iter().map(|f| (*f).to_owned()).zip(group.iter().cloned()).collect(),
                    first_event_id: part[0].1.clone(),
                    count: part.len(),
                });
            }
        }
        out.sort();
        out
    }
}

fn times(matches: &[Match]) -> Vec<i64> {
    let mut t: Vec<i64> = matches.iter().map(|m| m.0).collect();
    t.sort_unstable();
    t
}

/// The most of the sorted `times` within any closed window of `window`.
fn densest(times: &[i64], window: i64) -> usize {
    let (mut most, mut from) = (0, 0);
    for (to, &t) in times.iter().enumerate() {
        while t - times[from] > window {
            from += 1;
        }
        most = most.max(to - from + 1);
    }
    most
}
