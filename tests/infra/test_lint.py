"""Every CloudFormation template in the repository passes cfn-lint with no
error and no warning (informational findings are printed, not failed on)."""

from __future__ import annotations

import sys
import unittest
from pathlib import Path

import cfnlint.api

from harness import ROOT, TEMPLATE_DIRS, template_files

FAILING_LEVELS = ("error", "warning")


def describe(match: cfnlint.api.Match) -> str:
    path = Path(match.filename).resolve()
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return f"{where}:{match.linenumber}:{match.columnnumber}: {match.rule.id} ({match.rule.severity}) {match.message}"


class LintTest(unittest.TestCase):
    def test_every_template_passes_cfn_lint(self) -> None:
        templates, others = template_files()
        self.assertTrue(templates, f"no CloudFormation template found under {', '.join(TEMPLATE_DIRS)}")
        if others:
            print(f"\n  not CloudFormation templates, not linted: {', '.join(str(p.relative_to(ROOT)) for p in others)}", file=sys.stderr)
        failing: list[str] = []
        for template in templates:
            with self.subTest(template=str(template.relative_to(ROOT))):
                matches = cfnlint.api.lint_file(template)
                for match in matches:
                    if match.rule.severity not in FAILING_LEVELS:
                        print(f"\n  {describe(match)}", file=sys.stderr)
                findings = [describe(m) for m in matches if m.rule.severity in FAILING_LEVELS]
                failing += findings
                self.assertEqual(findings, [], "cfn-lint findings:\n" + "\n".join(findings))
        linted = ", ".join(str(t.relative_to(ROOT)) for t in templates)
        print(f"\n  linted {len(templates)} templates ({linted}): {len(failing)} errors or warnings", file=sys.stderr)

    def test_discovery_finds_the_stackset_templates(self) -> None:
        # The member template is only ever deployed through the StackSet,
        # which never lints it: it must be found and linted on its own.
        templates, _ = template_files()
        names = {str(t.relative_to(ROOT)) for t in templates}
        self.assertLessEqual({"stacksets/member.yaml", "stacksets/stackset.yaml"}, names)

    def test_a_broken_template_is_reported(self) -> None:
        # The linter run above must be able to fail: a template with a bad
        # property and a dangling reference gives findings with their lines.
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            broken = Path(scratch) / "broken.yaml"
            broken.write_text(
                "AWSTemplateFormatVersion: '2010-09-09'\n"
                "Resources:\n"
                "  Queue:\n"
                "    Type: AWS::SQS::Queue\n"
                "    Properties:\n"
                "      VisibilityTimeoutSeconds: 30\n"
                "      RedrivePolicy:\n"
                "        deadLetterTargetArn: !GetAtt Missing.Arn\n"
                "        maxReceiveCount: 5\n"
            )
            findings = [describe(m) for m in cfnlint.api.lint_file(broken) if m.rule.severity in FAILING_LEVELS]
        self.assertTrue(any("VisibilityTimeoutSeconds" in f for f in findings), findings)
        self.assertTrue(any("Missing" in f and ":8:" in f for f in findings), findings)


if __name__ == "__main__":
    unittest.main()
