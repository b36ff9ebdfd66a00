"""What the StackSet templates promise, read from the templates themselves and
checked against the code that relies on them: the roles grant exactly what the
services call through them, only to the trailwatch account with the external
id, and the StackSet hands every member parameter through."""

from __future__ import annotations

import re
import unittest
from typing import Any

from harness import ROOT, load_template, resources_of_type

MEMBER = ROOT / "stacksets" / "member.yaml"
STACKSET = ROOT / "stacksets" / "stackset.yaml"

# What the services call through the member role (account alias, trail
# status). test_iam.py checks both roles' grants against the code's calls.
MEMBER_ACTIONS = {"iam:ListAccountAliases", "cloudtrail:DescribeTrails", "cloudtrail:GetTrailStatus"}
ORGANIZATIONS_ACTIONS = {
    "organizations:ListAccounts", "organizations:ListTagsForResource", "organizations:ListRoots",
    "organizations:ListParents", "organizations:DescribeOrganizationalUnit",
}  # fmt: skip


def allowed_actions(role: dict[str, Any]) -> set[str]:
    actions: set[str] = set()
    for policy in role["Properties"].get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            if statement["Effect"] == "Allow":
                listed = statement["Action"]
                actions.update([listed] if isinstance(listed, str) else listed)
    return actions


def trust_conditions(role: dict[str, Any], case: int) -> dict[str, Any]:
    """The trust statement's condition; `case` 0 picks the branch with task
    roles, 1 the one without, when the condition is an Fn::If."""
    (statement,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    condition = statement["Condition"]
    if "Fn::If" in condition:
        condition = condition["Fn::If"][1 + case]
    return condition


class RoleTest(unittest.TestCase):
    def setUp(self) -> None:
        self.member = load_template(MEMBER)
        self.stackset = load_template(STACKSET)

    def test_roles_grant_only_reads(self) -> None:
        (member_role,) = resources_of_type(self.member, "AWS::IAM::Role").values()
        self.assertEqual(allowed_actions(member_role), MEMBER_ACTIONS)
        self.assertEqual(allowed_actions(self.stackset["Resources"]["OrganizationsReadRole"]), ORGANIZATIONS_ACTIONS)

    def test_roles_trust_only_the_trailwatch_account_with_the_external_id(self) -> None:
        (member_role,) = resources_of_type(self.member, "AWS::IAM::Role").values()
        for name, role in (("member", member_role), ("organizations", self.stackset["Resources"]["OrganizationsReadRole"])):
            with self.subTest(role=name):
                (statement,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
                self.assertEqual(statement["Action"], "sts:AssumeRole")
                self.assertEqual(statement["Principal"], {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${TrailwatchAccountId}:root"}})
                with_task_roles, without = trust_conditions(role, 0), trust_conditions(role, 1)
                for condition in (with_task_roles, without):
                    self.assertEqual(condition["StringEquals"], {"sts:ExternalId": {"Ref": "ExternalId"}})
                self.assertEqual(with_task_roles["ArnEquals"], {"aws:PrincipalArn": {"Ref": "TaskRoleArns"}})
                self.assertNotIn("ArnEquals", without)

    def test_member_role_name_defaults_to_what_the_services_expect(self) -> None:
        source = (ROOT / "crates" / "aws" / "src" / "member.rs").read_text()
        found = re.search(r'pub const DEFAULT_ROLE_NAME: &str = "([^"]+)"', source)
        self.assertIsNotNone(found, "DEFAULT_ROLE_NAME not found in crates/aws/src/member.rs")
        assert found is not None
        self.assertEqual(self.member["Parameters"]["RoleName"]["Default"], found.group(1))
        self.assertEqual(self.stackset["Parameters"]["MemberRoleName"]["Default"], found.group(1))

    def test_account_trail_is_off_unless_asked_for(self) -> None:
        (trail_name, trail), = resources_of_type(self.member, "AWS::CloudTrail::Trail").items()
        self.assertEqual(self.member["Parameters"]["EnableAccountTrail"]["Default"], "false")
        condition = self.member["Conditions"][trail["Condition"]]
        self.assertIn({"Fn::Equals": [{"Ref": "EnableAccountTrail"}, "true"]}, condition["Fn::And"], f"{trail_name} is not conditioned on EnableAccountTrail")
        self.assertTrue(trail["Properties"]["IsMultiRegionTrail"])


class StackSetTest(unittest.TestCase):
    def setUp(self) -> None:
        self.member = load_template(MEMBER)
        self.stackset = load_template(STACKSET)
        (self.properties,) = (r["Properties"] for r in resources_of_type(self.stackset, "AWS::CloudFormation::StackSet").values())

    def test_service_managed_with_automatic_deployment(self) -> None:
        p = self.properties
        self.assertEqual(p["PermissionModel"], "SERVICE_MANAGED")
        # New accounts in the OUs get the member stack by themselves; an
        # account that leaves has its stack (and role) deleted.
        self.assertEqual(p["AutoDeployment"], {"Enabled": True, "RetainStacksOnAccountRemoval": False})
        self.assertEqual(p["ManagedExecution"], {"Active": True})
        self.assertIn("CAPABILITY_NAMED_IAM", p["Capabilities"])
        self.assertEqual(p["OperationPreferences"]["RegionConcurrencyType"], "PARALLEL")
        self.assertIn("FailureTolerancePercentage", p["OperationPreferences"])
        self.assertEqual(p["TemplateURL"], {"Ref": "MemberTemplateURL"})
        (group,) = p["StackInstancesGroup"]
        self.assertEqual(group["DeploymentTargets"]["OrganizationalUnitIds"], {"Ref": "OrganizationalUnitIds"})
        self.assertEqual(group["Regions"], {"Ref": "Regions"})

    def test_member_parameters_are_passed_through(self) -> None:
        passed = {p["ParameterKey"] for p in self.properties["Parameters"]}
        declared = self.member["Parameters"]
        unknown = sorted(passed - set(declared))
        self.assertEqual(unknown, [], "passed to the member template, which does not declare them")
        required = {name for name, spec in declared.items() if "Default" not in spec}
        self.assertEqual(sorted(required - passed), [], "member parameters without a default that the StackSet does not pass")
        # The settings a user sets on the StackSet reach the member stacks.
        for name in sorted(set(declared) - {"HomeRegion"}):
            self.assertIn(name, passed, f"member parameter {name} cannot be set through the StackSet")

    def test_account_wide_resources_are_made_once_per_account(self) -> None:
        # IAM roles are global and the account trail is multi-region: with
        # several regions listed, only the first region's instance makes them.
        home = next(p["ParameterValue"] for p in self.properties["Parameters"] if p["ParameterKey"] == "HomeRegion")
        self.assertEqual(home, {"Fn::Select": [0, {"Ref": "Regions"}]})
        for name, resource in self.member["Resources"].items():
            if resource["Type"] in ("AWS::IAM::Role", "AWS::CloudTrail::Trail"):
                condition = self.member["Conditions"][resource["Condition"]]
                in_home = {"Fn::Equals": [{"Ref": "AWS::Region"}, {"Ref": "HomeRegion"}]}
                self.assertTrue(condition == in_home or {"Condition": "InHomeRegion"} in condition.get("Fn::And", []), f"{name} is not limited to the home region")

    def test_outputs_give_the_role_and_the_stackset(self) -> None:
        outputs = self.stackset["Outputs"]
        self.assertEqual(outputs["OrganizationsRoleArn"]["Value"], {"Fn::GetAtt": ["OrganizationsReadRole", "Arn"]})
        stackset_id = outputs["StackSetId"]["Value"]
        (stackset_name,) = resources_of_type(self.stackset, "AWS::CloudFormation::StackSet")
        self.assertIn(stackset_id, ({"Ref": stackset_name}, {"Fn::GetAtt": [stackset_name, "StackSetId"]}))


if __name__ == "__main__":
    unittest.main()
