"""The templates deployed on the emulator (moto): the central stack, and the
member StackSet over an organization's OUs.

What moto 5.2.5 cannot do is said where it matters; in short:
- it has no AWS::CloudFormation::StackSet resource (a stack holding one fails
  to create), so the StackSet is created through the API with the properties
  read from stacksets/stackset.yaml;
- it stores a StackSet's AutoDeployment and ManagedExecution without acting
  on them: an account that joins a target OU gets no stack instance by itself,
  and one that leaves keeps its instance. The settings are asserted as the
  template declares them, and the instance AWS would create for a new account
  is created with CreateStackInstances over the same deployment targets;
- resource types it does not model are skipped when a stack is created; the
  test prints them and asserts on the rest. Of infra/central.yaml that means
  the bucket and queue policies, the SNS subscriptions, Glue, Athena,
  CloudTrail, alarms and autoscaling; and of what it models, it drops the
  bucket's NotificationConfiguration and the tables' TimeToLiveSpecification.
  The notification path is therefore checked in the template and then run on
  moto with those two settings applied through the API as the template
  states them; TTL is checked in the template.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import urllib.parse
from typing import Any

from harness import REGION, ROOT, MotoTestCase, condition_values, load_template, parameter_values, resolve, resources_of_type, to_plain

STACKSET = ROOT / "stacksets" / "stackset.yaml"
MEMBER = ROOT / "stacksets" / "member.yaml"
CENTRAL = ROOT / "infra" / "central.yaml"

EXTERNAL_ID = "trailwatch-4f1c9e-onboarding"
REGIONS = ["us-east-1", "eu-west-1"]


def iam_actions(document: dict[str, Any] | str) -> set[str]:
    """The actions a policy document allows."""
    if isinstance(document, str):
        # moto 5.2.5 keeps the inline policies of roles made by CloudFormation
        # as Python's repr of the document, and hands that back.
        text = urllib.parse.unquote(document)
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            document = ast.literal_eval(text)
    assert isinstance(document, dict)
    actions: set[str] = set()
    for statement in document["Statement"]:
        if statement["Effect"] == "Allow":
            listed = statement["Action"]
            actions.update([listed] if isinstance(listed, str) else listed)
    return actions


class Organization:
    """An organization in moto: the caller's account is the management
    account; a Workloads OU (with a nested Prod OU) is what the StackSet
    targets; a Sandbox OU and the trailwatch (Security) account are not."""

    def __init__(self, test: MotoTestCase) -> None:
        self.client = test.client("organizations")
        self.client.create_organization(FeatureSet="ALL")
        self.management = test.client("sts").get_caller_identity()["Account"]
        self.root = self.client.list_roots()["Roots"][0]["Id"]
        self.workloads = self.ou("Workloads", self.root)
        self.prod = self.ou("Prod", self.workloads)
        self.sandbox = self.ou("Sandbox", self.root)
        self.security = self.account("Security", self.root)
        self.targeted = [self.account("Payments", self.workloads), self.account("Search", self.workloads), self.account("Prod Payments", self.prod)]
        self.untargeted = [self.account("Experiments", self.sandbox)]

    def ou(self, name: str, parent: str) -> str:
        return self.client.create_organizational_unit(ParentId=parent, Name=name)["OrganizationalUnit"]["Id"]

    def account(self, name: str, parent: str) -> str:
        status = self.client.create_account(Email=f"{name.lower().replace(' ', '-')}@example.com", AccountName=name)["CreateAccountStatus"]
        account_id = status["AccountId"]
        if parent != self.root:
            self.client.move_account(AccountId=account_id, SourceParentId=self.root, DestinationParentId=parent)
        return account_id


class MemberStackSetTest(MotoTestCase):
    """stacksets/stackset.yaml and member.yaml over an organization."""

    def setUp(self) -> None:
        super().setUp()
        self.org = Organization(self)
        self.task_roles = [f"arn:aws:iam::{self.org.security}:role/trailwatch-{s}-task" for s in ("collector", "enricher", "api")]
        # The README's first step: member.yaml uploaded where the StackSet reads it.
        s3 = self.client("s3")
        s3.create_bucket(Bucket="acme-cfn-templates")
        s3.put_object(Bucket="acme-cfn-templates", Key="trailwatch/member.yaml", Body=MEMBER.read_bytes())
        self.template = load_template(STACKSET)
        self.values = parameter_values(
            self.template,
            {
                "TrailwatchAccountId": self.org.security,
                "ExternalId": EXTERNAL_ID,
                "TaskRoleArns": ",".join(self.task_roles),
                "MemberTemplateURL": f"https://acme-cfn-templates.s3.{REGION}.amazonaws.com/trailwatch/member.yaml",
                "OrganizationalUnitIds": self.org.workloads,
                "Regions": ",".join(REGIONS),
            },
        )
        self.values.update({"AWS::Region": REGION, "AWS::AccountId": self.org.management, "AWS::Partition": "aws"})
        self.cloudformation = self.client("cloudformation")

    def stackset_properties(self) -> dict[str, Any]:
        (properties,) = (to_plain(r["Properties"]) for r in resources_of_type(self.template, "AWS::CloudFormation::StackSet").values())
        properties = resolve(properties, self.values)
        # Number parameters reach the API as numbers.
        preferences = properties.get("OperationPreferences", {})
        for key, value in preferences.items():
            if key.endswith(("Count", "Percentage")):
                preferences[key] = int(value)
        return properties

    def deploy_stackset(self) -> dict[str, Any]:
        """What CloudFormation does for the template's StackSet resource:
        CreateStackSet, then CreateStackInstances for each instances group."""
        p = self.stackset_properties()
        handled = {
            "StackSetName", "Description", "PermissionModel", "CallAs", "AutoDeployment", "ManagedExecution", "Capabilities",
            "OperationPreferences", "TemplateURL", "Parameters", "StackInstancesGroup", "Tags",
        }  # fmt: skip
        self.assertEqual(sorted(set(p) - handled), [], "StackSet properties this test does not pass on: extend deploy_stackset")
        create = {k: p[k] for k in ("StackSetName", "Description", "PermissionModel", "CallAs", "AutoDeployment", "ManagedExecution", "Capabilities", "TemplateURL", "Parameters", "Tags") if k in p}
        self.cloudformation.create_stack_set(**create)
        for group in p["StackInstancesGroup"]:
            self.create_instances(p, group)
        return p

    def create_instances(self, p: dict[str, Any], group: dict[str, Any]) -> None:
        args = {"StackSetName": p["StackSetName"], "DeploymentTargets": group["DeploymentTargets"], "Regions": group["Regions"], "CallAs": p["CallAs"]}
        if "OperationPreferences" in p:
            args["OperationPreferences"] = p["OperationPreferences"]
        if "ParameterOverrides" in group:
            args["ParameterOverrides"] = group["ParameterOverrides"]
        operation = self.cloudformation.create_stack_instances(**args)["OperationId"]
        status = self.cloudformation.describe_stack_set_operation(StackSetName=p["StackSetName"], OperationId=operation, CallAs=p["CallAs"])
        self.assertEqual(status["StackSetOperation"]["Status"], "SUCCEEDED")

    def instances(self, stackset_name: str) -> dict[tuple[str, str], str]:
        summaries = self.cloudformation.list_stack_instances(StackSetName=stackset_name)["Summaries"]
        return {(s["Account"], s["Region"]): s["Status"] for s in summaries}

    def member_role(self, account: str) -> dict[str, Any] | None:
        """The read role in a member account, seen from inside it (moto gives
        every account it creates an OrganizationAccountAccessRole)."""
        iam = self.client("iam", self.assume(f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole"))
        name = self.values["MemberRoleName"]
        try:
            role = iam.get_role(RoleName=name)["Role"]
        except iam.exceptions.NoSuchEntityException:
            return None
        policies = {n: iam.get_role_policy(RoleName=name, PolicyName=n)["PolicyDocument"] for n in iam.list_role_policies(RoleName=name)["PolicyNames"]}
        roles = [r["RoleName"] for r in iam.list_roles()["Roles"]]
        return {"role": role, "policies": policies, "copies": roles.count(name)}

    def test_every_account_of_the_ous_gets_an_instance_per_region(self) -> None:
        p = self.deploy_stackset()
        described = self.cloudformation.describe_stack_set(StackSetName=p["StackSetName"])["StackSet"]
        self.assertEqual(described["PermissionModel"], "SERVICE_MANAGED")
        self.assertEqual(described["Status"], "ACTIVE")
        self.assertIn("RoleName", described["TemplateBody"], "the StackSet did not read member.yaml from its TemplateURL")
        expected = {(account, region) for account in self.org.targeted for region in REGIONS}
        found = self.instances(p["StackSetName"])
        # Accounts of nested OUs are included; the management account (which
        # service-managed StackSets never deploy to), the trailwatch account
        # and the Sandbox OU's accounts are not.
        self.assertEqual(set(found), expected)
        self.assertEqual(set(found.values()), {"CURRENT"})

    def test_member_accounts_get_the_read_role_once(self) -> None:
        self.deploy_stackset()
        for account in self.org.targeted:
            with self.subTest(account=account):
                made = self.member_role(account)
                self.assertIsNotNone(made, f"no {self.values['MemberRoleName']} role in {account}")
                assert made is not None
                # Two regions, one role: only the first region's instance makes it.
                self.assertEqual(made["copies"], 1)
                (statement,) = made["role"]["AssumeRolePolicyDocument"]["Statement"]
                self.assertEqual(statement["Principal"], {"AWS": f"arn:aws:iam::{self.org.security}:root"})
                self.assertEqual(statement["Action"], "sts:AssumeRole")
                self.assertEqual(statement["Condition"]["StringEquals"], {"sts:ExternalId": EXTERNAL_ID})
                self.assertEqual(statement["Condition"]["ArnEquals"], {"aws:PrincipalArn": self.task_roles})
                granted = set().union(*(iam_actions(d) for d in made["policies"].values()))
                self.assertEqual(granted, {"iam:ListAccountAliases", "cloudtrail:DescribeTrails", "cloudtrail:GetTrailStatus"})
        for account in [self.org.security, *self.org.untargeted]:
            with self.subTest(account=account, targeted=False):
                self.assertIsNone(self.member_role(account))

    def test_an_account_that_joins_an_ou_is_onboarded(self) -> None:
        p = self.deploy_stackset()
        # On AWS, AutoDeployment deploys the StackSet to an account as soon as
        # it joins a target OU, and deletes its stacks when it leaves
        # (RetainStacksOnAccountRemoval false). The template asks for exactly that:
        self.assertEqual(p["AutoDeployment"], {"Enabled": True, "RetainStacksOnAccountRemoval": False})
        before = self.instances(p["StackSetName"])
        newcomer = self.org.account("Analytics", self.org.workloads)
        # moto 5.2.5 ignores AutoDeployment (CloudFormationBackend.create_stack_set
        # does not store it) and does nothing when an account moves, so the
        # instances AWS would add are created here the way AWS adds them: over
        # the StackSet's own deployment targets, which now hold the newcomer.
        for group in p["StackInstancesGroup"]:
            self.create_instances(p, group)
        after = self.instances(p["StackSetName"])
        self.assertEqual(set(after) - set(before), {(newcomer, region) for region in REGIONS})
        self.assertEqual({k: after[k] for k in before}, before, "the existing instances changed")
        made = self.member_role(newcomer)
        self.assertIsNotNone(made, "the new account has no read role")

    def test_organizations_role_reads_the_organization(self) -> None:
        # The stack itself, without the StackSet resource that moto cannot
        # create (and the output that reads it).
        template = to_plain(self.template)
        (stackset_name,) = resources_of_type(template, "AWS::CloudFormation::StackSet")
        del template["Resources"][stackset_name]
        template["Outputs"] = {k: v for k, v in template["Outputs"].items() if stackset_name not in json.dumps(v["Value"])}
        given = {k: ",".join(v) if isinstance(v, list) else v for k, v in self.values.items() if k in template["Parameters"]}
        self.cloudformation.create_stack(
            StackName="trailwatch-onboarding",
            TemplateBody=json.dumps(template),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in given.items()],
            Capabilities=["CAPABILITY_NAMED_IAM"],
        )
        stack = self.wait_for_stack(self.cloudformation, "trailwatch-onboarding")
        self.assertEqual(stack["StackStatus"], "CREATE_COMPLETE", self.stack_failure(self.cloudformation, "trailwatch-onboarding"))
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
        role_arn = outputs["OrganizationsRoleArn"]
        self.assertEqual(role_arn, f"arn:aws:iam::{self.org.management}:role/{self.values['OrganizationsRoleName']}")
        self.assertEqual(outputs["MemberRoleName"], "trailwatch-member-read")

        iam = self.client("iam")
        role = iam.get_role(RoleName=self.values["OrganizationsRoleName"])["Role"]
        (statement,) = role["AssumeRolePolicyDocument"]["Statement"]
        self.assertEqual(statement["Principal"], {"AWS": f"arn:aws:iam::{self.org.security}:root"})
        self.assertEqual(statement["Condition"]["StringEquals"], {"sts:ExternalId": EXTERNAL_ID})
        (policy,) = iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]
        granted = iam_actions(iam.get_role_policy(RoleName=role["RoleName"], PolicyName=policy)["PolicyDocument"])
        self.assertTrue(granted and all(a.startswith("organizations:") for a in granted), granted)

        # What the services do with the output: assume it with the external
        # id and read the organization (moto checks no permissions, so this
        # shows the ARN is usable, not that the policy suffices).
        organizations = self.client("organizations", self.assume(role_arn, EXTERNAL_ID))
        listed = {a["Id"] for a in organizations.list_accounts()["Accounts"]}
        self.assertEqual(listed, {self.org.management, self.org.security, *self.org.targeted, *self.org.untargeted})
        (parent,) = organizations.list_parents(ChildId=self.org.targeted[2])["Parents"]
        self.assertEqual(organizations.describe_organizational_unit(OrganizationalUnitId=parent["Id"])["OrganizationalUnit"]["Name"], "Prod")



# The tables the services create and check at start (crates/aws/src/dynamo/mod.rs
# create_*_table, crates/aws/src/alerts/schema.rs create_table), by name after
# the prefix: key schema, key attribute types, indexes (keys, projection), TTL.
EXPECTED_TABLES: dict[str, dict[str, Any]] = {
    "sessions": {"keys": [("access_key_id", "HASH", "S"), ("issued_at", "RANGE", "N")], "indexes": {}, "ttl": "expires_ttl"},
    "pending": {
        "keys": [("account_id", "HASH", "S"), ("event_id", "RANGE", "S")],
        "indexes": {
            "by_missing_key": ([("missing_key", "HASH", "S"), ("event_time", "RANGE", "N")], "KEYS_ONLY"),
            "by_event_time": ([("shard", "HASH", "N"), ("event_time", "RANGE", "N")], "KEYS_ONLY"),
        },
        "ttl": None,
    },
    "ledger": {
        "keys": [("object_key", "HASH", "S")],
        "indexes": {
            "problems": ([("problem", "HASH", "S"), ("processed_at", "RANGE", "N")], "ALL"),
            "counters": ([("counter", "HASH", "S"), ("counter_sort", "RANGE", "S")], "ALL"),
        },
        "ttl": None,
    },
    "alerts": {
        "keys": [("pk", "HASH", "S"), ("sk", "RANGE", "S")],
        "indexes": {
            "due": ([("due_sink", "HASH", "S"), ("due_sk", "RANGE", "S")], "ALL"),
            "quiet": ([("quiet_part", "HASH", "S"), ("quiet_sk", "RANGE", "S")], "ALL"),
            "origin_event": ([("origin_event", "HASH", "S")], "ALL"),
            **{name: ([(attribute, "HASH", "S"), ("updated_sk", "RANGE", "S")], "ALL") for name, attribute in (
                ("by_status", "alert_status"), ("by_severity", "severity"), ("by_rule", "rule_id"),
                ("by_account", "account_id"), ("by_principal", "origin_principal"),
            )},  # fmt: skip
        },
        "ttl": None,
    },
    "aliases": {"keys": [("account_id", "HASH", "S")], "indexes": {}, "ttl": None},
    "integrity": {
        "keys": [("pk", "HASH", "S"), ("sk", "RANGE", "S")],
        "indexes": {"open_findings": ([("open", "HASH", "S"), ("open_sort", "RANGE", "S")], "ALL")},
        "ttl": None,
    },
}


def cli_environment_variables() -> set[str]:
    """Every TRAILWATCH_* variable the trailwatch command reads (its flags'
    `env = "…"`, and the log filter's TRAILWATCH_LOG)."""
    names: set[str] = set()
    for path in (ROOT / "crates" / "cli" / "src").rglob("*.rs"):
        names.update(re.findall(r'"(TRAILWATCH_[A-Z0-9_]+)"', path.read_text()))
    return names


def moto_models() -> set[str]:
    """The resource types moto's CloudFormation creates (it skips the others)."""
    from moto.cloudformation.parsing import NULL_MODELS, get_model_map

    return set(get_model_map()) | set(NULL_MODELS)


class CentralStackTest(MotoTestCase):
    """infra/central.yaml created on moto with the parameters a security team
    would give it, and the wiring the services rely on."""

    NAME_PREFIX = "acme-tw"
    MAX_RECEIVE_COUNT = "7"
    VISIBILITY_SECONDS = "300"

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        if not CENTRAL.exists():
            raise AssertionError(f"{CENTRAL.relative_to(ROOT)} does not exist")
        cls.template = load_template(CENTRAL)

    def setUp(self) -> None:
        super().setUp()
        self.org = Organization(self)
        organization = self.org.client.describe_organization()["Organization"]
        accounts = sorted(a["Id"] for a in self.org.client.list_accounts()["Accounts"])
        ec2 = self.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=f"{REGION}{zone}")["Subnet"]["SubnetId"]
            for i, zone in ((1, "a"), (2, "b"))
        ]
        token = self.client("secretsmanager").create_secret(Name="trailwatch/api-token", SecretString="secops:admin:4f1c9e0a7b3d2c5e8f6a")["ARN"]
        # Customer managed keys, as a security team's trail usually has. (Without
        # them, moto 5.2.5 cannot create the stack at all: it passes the
        # AWS::NoValue of an Fn::If inside a role's Policies list on as None
        # and fails on it, though CloudFormation drops it.)
        key = self.client("kms").create_key(Description="trailwatch data")["KeyMetadata"]["Arn"]
        self.organizations_role = f"arn:aws:iam::{self.org.management}:role/trailwatch-organizations-read"
        self.given = {
            "NamePrefix": self.NAME_PREFIX,
            "OrganizationId": organization["Id"],
            "ManagementAccountId": organization["MasterAccountId"],
            "AccountIds": ",".join(accounts),
            "TrailKmsKeyArn": key,
            "DataKmsKeyArn": key,
            "MaxReceiveCount": self.MAX_RECEIVE_COUNT,
            "QueueVisibilitySeconds": self.VISIBILITY_SECONDS,
            "TicketingEndpoint": "https://tickets.example.com/hooks/trailwatch",
            "OrganizationsRoleArn": self.organizations_role,
            "OrganizationsExternalId": EXTERNAL_ID,
            "ImageTag": "v1.4.2",
            "ApiTokenSecretArn": token,
            "VpcId": vpc,
            "SubnetIds": ",".join(subnets),
            "AllowedCidr": "10.64.0.0/16",
        }
        self.values = parameter_values(self.template, self.given)  # fails on a new required parameter
        self.cloudformation = self.client("cloudformation")
        self.cloudformation.create_stack(
            StackName="trailwatch",
            TemplateBody=CENTRAL.read_text(),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in self.given.items()],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
        )
        self.stack = self.wait_for_stack(self.cloudformation, "trailwatch")
        self.assertEqual(self.stack["StackStatus"], "CREATE_COMPLETE", self.stack_failure(self.cloudformation, "trailwatch"))
        summaries = self.cloudformation.list_stack_resources(StackName="trailwatch")["StackResourceSummaries"]
        self.physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in summaries}
        self.outputs = {o["OutputKey"]: o["OutputValue"] for o in self.stack.get("Outputs", [])}

    def created(self, logical_id: str) -> str:
        """The physical id of a resource moto created."""
        self.assertIn(logical_id, self.physical, f"moto did not create {logical_id}")
        return self.physical[logical_id]

    def task_environment(self, family_suffix: str) -> dict[str, str]:
        definition = self.client("ecs").describe_task_definition(taskDefinition=f"{self.NAME_PREFIX}-{family_suffix}")["taskDefinition"]
        (container,) = definition["containerDefinitions"]
        # moto leaves out the value of a variable set to "".
        return {e["name"]: e.get("value", "") for e in container.get("environment", [])}

    def test_stack_is_created_and_moto_skips_only_what_it_cannot_model(self) -> None:
        supported = moto_models()
        skipped: list[str] = []
        missing: list[str] = []
        for name, resource in sorted(self.template["Resources"].items()):
            if name in self.physical:
                continue
            if resource["Type"] not in supported:
                skipped.append(f"{name} ({resource['Type']})")
            elif "Condition" not in resource:
                missing.append(f"{name} ({resource['Type']})")
        report(f"moto skipped {len(skipped)} of {len(self.template['Resources'])} resources of infra/central.yaml (types it does not model)", skipped)
        self.assertEqual(missing, [], "resources moto models but did not create")

    def test_queues_redrive_to_their_dead_letter_queues(self) -> None:
        sqs = self.client("sqs")
        with_redrive = {n: r for n, r in resources_of_type(self.template, "AWS::SQS::Queue").items() if "RedrivePolicy" in r["Properties"]}
        self.assertGreaterEqual(len(with_redrive), 2, "the collector's and the enricher's queues should both have a dead-letter queue")
        for name, resource in with_redrive.items():
            with self.subTest(queue=name):
                dlq_name = resource["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
                attributes = sqs.get_queue_attributes(QueueUrl=self.created(name), AttributeNames=["All"])["Attributes"]
                dlq_arn = sqs.get_queue_attributes(QueueUrl=self.created(dlq_name), AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
                redrive = json.loads(attributes["RedrivePolicy"])
                self.assertEqual(redrive["deadLetterTargetArn"], dlq_arn)
                self.assertEqual(int(redrive["maxReceiveCount"]), int(self.MAX_RECEIVE_COUNT))
                self.assertEqual(attributes["VisibilityTimeout"], self.VISIBILITY_SECONDS)
                self.assertNotEqual(dlq_name, name)

    def test_tables_are_the_ones_the_services_check_for(self) -> None:
        dynamodb = self.client("dynamodb")
        tables = {self.created(n) for n in resources_of_type(self.template, "AWS::DynamoDB::Table")}
        self.assertEqual(tables, {f"{self.NAME_PREFIX}-{t}" for t in EXPECTED_TABLES})
        for table, expected in EXPECTED_TABLES.items():
            with self.subTest(table=table):
                described = dynamodb.describe_table(TableName=f"{self.NAME_PREFIX}-{table}")["Table"]
                types = {a["AttributeName"]: a["AttributeType"] for a in described["AttributeDefinitions"]}
                self.assertEqual([(k["AttributeName"], k["KeyType"], types[k["AttributeName"]]) for k in described["KeySchema"]], expected["keys"])
                self.assertEqual(described["BillingModeSummary"]["BillingMode"], "PAY_PER_REQUEST")
                indexes = {
                    i["IndexName"]: ([(k["AttributeName"], k["KeyType"], types[k["AttributeName"]]) for k in i["KeySchema"]], i["Projection"]["ProjectionType"])
                    for i in described.get("GlobalSecondaryIndexes", [])
                }
                self.assertEqual(indexes, expected["indexes"])
        # TTL: moto's CloudFormation drops TimeToLiveSpecification (its
        # AWS::DynamoDB::Table never reads it), so DescribeTimeToLive says
        # DISABLED there; the template is what turns it on, on sessions only.
        ttl = {
            self.created(n): r["Properties"].get("TimeToLiveSpecification")
            for n, r in resources_of_type(self.template, "AWS::DynamoDB::Table").items()
        }
        for table, expected in EXPECTED_TABLES.items():
            spec = ttl[f"{self.NAME_PREFIX}-{table}"]
            with self.subTest(table=table, ttl=expected["ttl"]):
                if expected["ttl"]:
                    self.assertEqual(spec, {"AttributeName": expected["ttl"], "Enabled": True})
                else:
                    self.assertIsNone(spec)

    def notification_path(self) -> tuple[str, str, str, dict[str, Any], dict[str, Any]]:
        """The trail bucket, its notification's topic, and the queue
        subscribed to that topic, as the template wires them: logical ids,
        the notification configuration and the subscription's properties."""
        buckets = {n: r for n, r in resources_of_type(self.template, "AWS::S3::Bucket").items() if "NotificationConfiguration" in r["Properties"]}
        (bucket, resource), = buckets.items()
        (notification,) = resource["Properties"]["NotificationConfiguration"]["TopicConfigurations"]
        topic = notification["Topic"]["Ref"]
        subscriptions = [
            r["Properties"] for r in resources_of_type(self.template, "AWS::SNS::Subscription").values()
            if r["Properties"].get("TopicArn") == {"Ref": topic} and r["Properties"]["Protocol"] == "sqs"
        ]  # fmt: skip
        (subscription,) = subscriptions
        queue = subscription["Endpoint"]["Fn::GetAtt"][0]
        return bucket, topic, queue, notification, subscription

    def test_new_log_files_reach_the_queue_the_collector_reads(self) -> None:
        bucket, topic, queue, notification, subscription = self.notification_path()
        bucket_name, topic_arn, queue_url = self.created(bucket), self.created(topic), self.created(queue)
        sqs, sns, s3 = self.client("sqs"), self.client("sns"), self.client("s3")
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.assertEqual(sns.get_topic_attributes(TopicArn=topic_arn)["Attributes"]["TopicArn"], topic_arn)
        # The queue the notifications reach is the one the collector is told to read.
        self.assertEqual(self.task_environment("collector")["TRAILWATCH_NOTIFICATION_QUEUE"], queue_url)
        self.assertEqual(self.task_environment("collector")["TRAILWATCH_TRAIL_BUCKET"], bucket_name)
        self.assertEqual(notification["Event"], "s3:ObjectCreated:*")

        # Who may deliver: S3 to the topic, the topic to the queue (policies
        # moto does not model; read from the template).
        (topic_policy,) = [r["Properties"] for r in resources_of_type(self.template, "AWS::SNS::TopicPolicy").values() if {"Ref": topic} in r["Properties"]["Topics"]]
        self.assertTrue(any(st["Principal"] == {"Service": "s3.amazonaws.com"} and st["Action"] == "sns:Publish" for st in topic_policy["PolicyDocument"]["Statement"]))
        self.assertIn("TrailObjectsTopicPolicy", self.template["Resources"][bucket].get("DependsOn", []))
        (queue_policy,) = [r["Properties"] for r in resources_of_type(self.template, "AWS::SQS::QueuePolicy").values() if {"Ref": queue} in r["Properties"]["Queues"]]
        (statement,) = [st for st in queue_policy["PolicyDocument"]["Statement"] if st["Principal"] == {"Service": "sns.amazonaws.com"}]
        self.assertEqual(statement["Action"], "sqs:SendMessage")
        self.assertEqual(statement["Condition"]["ArnEquals"]["aws:SourceArn"], {"Ref": topic})

        # moto's CloudFormation drops the bucket's NotificationConfiguration
        # and has no AWS::SNS::Subscription, so those two are applied here as
        # CloudFormation would, from the template's own properties (with the
        # resources moto did create); then a log file is dropped in the bucket.
        rules = resolve(notification["Filter"]["S3Key"]["Rules"], self.values, condition_values(self.template, self.values))
        s3.put_bucket_notification_configuration(
            Bucket=bucket_name,
            NotificationConfiguration={"TopicConfigurations": [{"TopicArn": topic_arn, "Events": [notification["Event"]], "Filter": {"Key": {"FilterRules": rules}}}]},
        )
        raw = "true" if str(subscription.get("RawMessageDelivery", "false")).lower() == "true" else "false"
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": raw})
        account = self.org.targeted[0]
        log_key = f"AWSLogs/{self.given['OrganizationId']}/{account}/CloudTrail/{REGION}/2026/11/30/{account}_CloudTrail_{REGION}_20261130T1205Z_AbCdEf0123456789.json.gz"
        s3.put_object(Bucket=bucket_name, Key=f"elsewhere/{account}/notes.txt", Body=b"not a log file")
        s3.put_object(Bucket=bucket_name, Key=log_key, Body=b"\x1f\x8b")
        keys = self.received_object_keys(sqs, queue_url)
        self.assertEqual(keys, [log_key])

    def received_object_keys(self, sqs: Any, queue_url: str) -> list[str]:
        """The object keys announced on a queue (raw or in an SNS envelope),
        skipping S3's test event."""
        keys: list[str] = []
        for _ in range(3):
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            for message in messages:
                body = json.loads(message["Body"])
                if body.get("Type") == "Notification":
                    body = json.loads(body["Message"])
                for record in body.get("Records", []):
                    keys.append(urllib.parse.unquote_plus(record["s3"]["object"]["key"]))
        return keys

    def test_alerts_go_to_the_alert_topic(self) -> None:
        sns = self.client("sns")
        enricher = self.task_environment("enricher")
        alert_topic = enricher["TRAILWATCH_ALERT_TOPIC_ARN"]
        self.assertEqual(alert_topic, self.outputs["AlertTopicArn"])
        self.assertEqual(sns.get_topic_attributes(TopicArn=alert_topic)["Attributes"]["TopicArn"], alert_topic)
        self.assertTrue(alert_topic.endswith(f":{self.NAME_PREFIX}-alerts"), alert_topic)
        _, objects_topic, _, _, _ = self.notification_path()
        self.assertNotEqual(alert_topic, self.created(objects_topic), "alerts must not go to the topic of new log files")

    def test_services_are_given_the_stack_resources(self) -> None:
        known = cli_environment_variables()
        sqs, s3 = self.client("sqs"), self.client("s3")
        for service in ("collector", "enricher", "api", "backfill"):
            with self.subTest(service=service):
                env = self.task_environment(service)
                unknown = sorted(set(env) - known)
                self.assertEqual(unknown, [], f"the {service} task sets variables trailwatch does not read")
                self.assertEqual(env["TRAILWATCH_TABLE_PREFIX"], self.NAME_PREFIX)
                s3.head_bucket(Bucket=env["TRAILWATCH_TRAIL_BUCKET"])
                for variable in ("TRAILWATCH_NOTIFICATION_QUEUE", "TRAILWATCH_ENRICHER_QUEUE"):
                    if variable in env:
                        sqs.get_queue_attributes(QueueUrl=env[variable], AttributeNames=["QueueArn"])
        collector, enricher = self.task_environment("collector"), self.task_environment("enricher")
        self.assertEqual(collector["TRAILWATCH_ENRICHER_QUEUE"], enricher["TRAILWATCH_ENRICHER_QUEUE"], "the collector hands files to a queue the enricher does not read")
        self.assertEqual(self.task_environment("backfill")["TRAILWATCH_ENRICHER_QUEUE"], enricher["TRAILWATCH_ENRICHER_QUEUE"])
        for service in ("enricher", "api"):
            env = self.task_environment(service)
            self.assertEqual(env.get("TRAILWATCH_ORGANIZATIONS_ROLE_ARN"), self.organizations_role)
            self.assertEqual(env.get("TRAILWATCH_ORGANIZATIONS_EXTERNAL_ID"), EXTERNAL_ID)
        ecs = self.client("ecs")
        cluster = self.created("Cluster")
        services = ecs.describe_services(cluster=cluster, services=ecs.list_services(cluster=cluster)["serviceArns"])["services"]
        self.assertEqual(sorted(s["serviceName"] for s in services), [f"{self.NAME_PREFIX}-{s}" for s in ("api", "collector", "enricher")])


def report(what: str, lines: list[str]) -> None:
    if lines:
        print(f"\n  {what}:\n" + "\n".join(f"    {line}" for line in lines), file=sys.stderr)

