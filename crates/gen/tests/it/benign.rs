//! Benign traffic (no incidents): nothing the built-in pack reports,
//! checked from the generated files alone.

use trailwatch_gen::GenConfig;

use crate::fixture::{answer_key, for_each_record, generate_into};
use crate::pack::{instance_session, public_ip, text, Pack};

/// Every event name a rule of the pack names (whatever the service).
const FLAGGED: &[&str] = &[
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
    "CreateTrail",
    "UpdateTrail",
    "DeleteTrail",
    "StartLogging",
    "StopLogging",
    "PutEventSelectors",
    "PutInsightSelectors",
    "DisableKey",
    "ScheduleKeyDeletion",
    "PutBucketAcl",
    "PutBucketPolicy",
    "PutBucketCors",
    "PutBucketLifecycle",
    "PutBucketReplication",
    "DeleteBucketPolicy",
    "DeleteBucketCors",
    "DeleteBucketLifecycle",
    "DeleteBucketReplication",
    "StopConfigurationRecorder",
    "DeleteDeliveryChannel",
    "PutDeliveryChannel",
    "PutConfigurationRecorder",
    "AuthorizeSecurityGroupIngress",
    "AuthorizeSecurityGroupEgress",
    "RevokeSecurityGroupIngress",
    "RevokeSecurityGroupEgress",
    "CreateSecurityGroup",
    "DeleteSecurityGroup",
    "CreateNetworkAcl",
    "CreateNetworkAclEntry",
    "DeleteNetworkAcl",
    "DeleteNetworkAclEntry",
    "ReplaceNetworkAclEntry",
    "ReplaceNetworkAclAssociation",
    "CreateCustomerGateway",
    "DeleteCustomerGateway",
    "CreateInternetGateway",
    "DeleteInternetGateway",
    "AttachInternetGateway",
    "DetachInternetGateway",
    "CreateRoute",
    "CreateRouteTable",
    "ReplaceRoute",
    "ReplaceRouteTableAssociation",
    "DeleteRouteTable",
    "DeleteRoute",
    "DisassociateRouteTable",
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
    "RequestSpotInstances",
    "RequestSpotFleet",
    "CreateFleet",
    "CancelSpotInstanceRequests",
    "CreateAccessKey",
    "DeleteDetector",
];

#[test]
fn benign_traffic_raises_no_alert_of_the_pack() {
    // A large organization over two days, and a small one made dense (more calls per caller).
    for config in [
        GenConfig { accounts: 40, events: 200_000, days: 2, seed: 9, ..GenConfig::default() },
        GenConfig { accounts: 6, events: 120_000, days: 1, seed: 10, ..GenConfig::default() },
    ] {
        let (dir, report) = generate_into(&config);
        assert_eq!((report.incidents, report.alerts), (0, 0));
        let key = answer_key(dir.path());
        assert!(key["alerts"].as_array().unwrap().is_empty() && key["incidents"].as_array().unwrap().is_empty());
        let mut pack = Pack::new();
        let (mut records, mut logins, mut instance_calls) = (0, 0, 0);
        for_each_record(dir.path(), |r| {
            records += 1;
            pack.feed(r);
            let name = text(r, "eventName").unwrap();
            assert!(!FLAGGED.contains(&name), "{name} is a change the pack reports: {r}");
            assert_ne!(text(r, "userIdentity.type"), Some("Root"), "the root user acts only in incidents: {r}");
            if name == "ConsoleLogin" {
                logins += 1;
                assert_eq!(text(r, "responseElements.ConsoleLogin"), Some("Success"), "{r}");
                assert!(r.get("errorMessage").is_none(), "{r}");
                if text(r, "userIdentity.type") == Some("IAMUser") {
                    assert_eq!(text(r, "additionalEventData.MFAUsed"), Some("Yes"), "{r}");
                }
            }
            if name == "RunInstances" {
                assert!(r["requestParameters"].get("instanceMarketOptions").is_none(), "on demand only: {r}");
            }
            if instance_session(r) {
                instance_calls += 1;
                let ip = text(r, "sourceIPAddress").unwrap();
                assert!(!public_ip(ip) || r.get("vpcEndpointId").is_some(), "instance credentials used from {ip}: {r}");
            }
        });
        assert_eq!(records, config.events);
        assert_eq!(pack.alerts(), vec![], "{config:?}");
        let denied = pack.matched("unauthorized-api-calls");
        let densest = pack.densest("unauthorized-api-calls");
        assert!(densest <= 10, "{densest} authorization failures of one caller within 5 minutes");
        // Not vacuous: the shapes checked are there, within bounds.
        assert!(denied > 100 && densest >= 2, "{denied} authorization failures, at most {densest} in 5 minutes");
        assert!(logins > 10 && instance_calls > 1_000, "{logins} console sign-ins, {instance_calls} calls with instance credentials");
        assert!(pack.matched("console-authentication-failures") == 0 && pack.matched("root-account-usage") == 0);
    }
}
