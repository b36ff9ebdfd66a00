"""What the template tests share: the repository's paths, its CloudFormation
templates (parsed with cfn-lint's decoder, so !Ref, !Sub and !GetAtt read as
their long forms), and one moto server for the whole test run.

The server is `moto_server` from the project's .venv (or
$TRAILWATCH_MOTO_SERVER) on a free loopback port. It is started by the first
test that asks for it, reset before every test (`POST /moto-api/reset`), and
stopped when the interpreter exits, whether the tests passed or not.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import cfnlint.decode

ROOT = Path(__file__).resolve().parents[2]
"""The repository."""

TEMPLATE_DIRS = ("infra", "stacksets")
"""Where CloudFormation templates live."""

REGION = "us-east-1"
FAKE_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

START_WITHIN_S = 30.0


def load_template(path: Path) -> dict[str, Any]:
    """A template as a dict; fails with cfn-lint's parse errors if it does not parse."""
    template, errors = cfnlint.decode.decode(str(path))
    if errors or template is None:
        found = "\n".join(f"  {e}" for e in errors) or "  (nothing parsed)"
        raise AssertionError(f"{path.relative_to(ROOT)} does not parse:\n{found}")
    return template


def is_template(document: Any) -> bool:
    """Whether a parsed YAML/JSON document is a CloudFormation template."""
    return isinstance(document, dict) and ("Resources" in document or "AWSTemplateFormatVersion" in document)


def template_files() -> tuple[list[Path], list[Path]]:
    """Every *.yaml, *.yml and *.json under the template directories: those
    that are CloudFormation templates, and the others. A file that does not
    parse counts as a template (so that linting reports why)."""
    templates: list[Path] = []
    others: list[Path] = []
    for directory in TEMPLATE_DIRS:
        for path in sorted((ROOT / directory).rglob("*")):
            if not path.is_file() or path.suffix not in (".yaml", ".yml", ".json"):
                continue
            document, errors = cfnlint.decode.decode(str(path))
            (templates if errors or is_template(document) else others).append(path)
    return templates, others


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    """The template's resources of one type, by logical id."""
    return {name: r for name, r in template.get("Resources", {}).items() if r.get("Type") == resource_type}


def to_plain(value: Any) -> Any:
    """A decoded template node as plain dicts, lists and strings (for boto3 and JSON)."""
    return json.loads(json.dumps(value))


def parameter_values(template: dict[str, Any], given: dict[str, str]) -> dict[str, Any]:
    """Every parameter's value as a template sees it: the given one or the
    default; a CommaDelimitedList as a list. Fails on an unknown or missing one."""
    declared = template.get("Parameters", {})
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise AssertionError(f"not parameters of the template: {unknown}")
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        if name in given:
            value = given[name]
        elif "Default" in spec:
            value = str(spec["Default"])
        else:
            raise AssertionError(f"parameter {name} has no default and no value was given")
        kind = spec.get("Type", "String")
        values[name] = value.split(",") if kind == "CommaDelimitedList" or kind.startswith("List<") else value
    return values


_NO_VALUE = object()


def condition_values(template: dict[str, Any], values: dict[str, Any]) -> dict[str, bool]:
    """Every condition of the template, evaluated over these parameter values."""
    declared = template.get("Conditions", {})
    evaluated: dict[str, bool] = {}

    def evaluate(node: Any) -> bool:
        (key, arg), = node.items()
        if key == "Condition":
            return condition(arg)
        if key == "Fn::Equals":
            left, right = (resolve(a, values, evaluated) for a in arg)
            return bool(left == right)
        if key == "Fn::Not":
            return not evaluate(arg[0])
        if key == "Fn::And":
            return all(evaluate(a) for a in arg)
        if key == "Fn::Or":
            return any(evaluate(a) for a in arg)
        raise AssertionError(f"condition function {key} is not supported here")

    def condition(name: str) -> bool:
        if name not in evaluated:
            evaluated[name] = evaluate(declared[name])
        return evaluated[name]

    for name in declared:
        condition(name)
    return evaluated


def resolve(node: Any, values: dict[str, Any], conditions: dict[str, bool] | None = None) -> Any:
    """A property with Ref, Fn::Join, Fn::Select, Fn::Sub and Fn::If over
    parameters and pseudo parameters (in `values`) and conditions evaluated,
    as CloudFormation would."""
    if isinstance(node, list):
        return [v for v in (resolve(item, values, conditions) for item in node) if v is not _NO_VALUE]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        (key, arg), = node.items()
        if key == "Ref":
            if arg == "AWS::NoValue":
                return _NO_VALUE
            if arg not in values:
                raise AssertionError(f"Ref {arg}: not a parameter (resources cannot be resolved here)")
            return values[arg]
        if key == "Fn::Join":
            separator, items = arg
            return separator.join(str(i) for i in resolve(items, values, conditions))
        if key == "Fn::Select":
            index, items = arg
            return resolve(items, values, conditions)[int(resolve(index, values, conditions))]
        if key == "Fn::If" and conditions is not None:
            name, if_true, if_false = arg
            return resolve(if_true if conditions[name] else if_false, values, conditions)
        if key == "Fn::Sub" and isinstance(arg, str):

            def one(m: re.Match[str]) -> str:
                name = m.group(1)
                if name not in values:
                    raise AssertionError(f"Fn::Sub ${{{name}}}: not a parameter")
                return str(values[name])

            return re.sub(r"\$\{([^}!]+)\}", one, arg)
        if key.startswith("Fn::") or key == "Condition":
            raise AssertionError(f"{key} cannot be resolved outside CloudFormation")
    return {k: v for k, v in ((k, resolve(v, values, conditions)) for k, v in node.items()) if v is not _NO_VALUE}


def moto_server_path() -> str:
    configured = os.environ.get("TRAILWATCH_MOTO_SERVER")
    candidates = [configured] if configured else []
    candidates += [str(ROOT / ".venv" / "bin" / "moto_server"), str(Path(sys.executable).parent / "moto_server")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("moto_server")
    if found:
        return found
    raise RuntimeError(f"moto_server not found (tried {', '.join(candidates)} and PATH); run scripts/test once to install it into .venv")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child: ask Linux to end the server if the test process dies
    without running its exit handlers."""
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except OSError:
        pass


class MotoServer:
    """One moto_server process on a loopback port."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="trailwatch-moto-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [moto_server_path(), "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_WITHIN_S
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.process.returncode} before answering:\n{self.output()}")
            try:
                self.reset()
                return
            except (urllib.error.URLError, ConnectionError, OSError) as e:
                last_error = e
                time.sleep(0.1)
        raise RuntimeError(f"moto_server on {self.endpoint} did not answer within {START_WITHIN_S:.0f} s ({last_error}):\n{self.output()}")

    def reset(self) -> None:
        """Forgets every resource of every service (the organization too)."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=5) as response:
            if response.status != 200:
                raise RuntimeError(f"POST {self.endpoint}/moto-api/reset answered {response.status}")

    def output(self) -> str:
        """What the server printed (the end of it)."""
        self.log.flush()
        text = Path(self.log.name).read_text(errors="replace")
        return text[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


_server: MotoServer | None = None


def server() -> MotoServer:
    """The run's moto server, started on first use and stopped at exit."""
    global _server
    if _server is None:
        _server = MotoServer()
        atexit.register(_server.stop)
    return _server


class MotoTestCase(unittest.TestCase):
    """A test against a freshly reset moto server, in the default account."""

    moto: MotoServer

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.moto = server()

    def setUp(self) -> None:
        super().setUp()
        self.moto.reset()

    def client(self, service: str, credentials: dict[str, str] | None = None, region: str = REGION) -> Any:
        """A boto3 client of the emulator: fake static credentials unless
        others are given (as `assume` returns)."""
        return boto3.client(
            service,
            endpoint_url=self.moto.endpoint,
            region_name=region,
            config=botocore.config.Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
            **(credentials or FAKE_CREDENTIALS),
        )

    def assume(self, role_arn: str, external_id: str | None = None) -> dict[str, str]:
        """Credentials of a role (moto scopes them to the role's account)."""
        args: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": "trailwatch-infra-test"}
        if external_id is not None:
            args["ExternalId"] = external_id
        c = self.client("sts").assume_role(**args)["Credentials"]
        return {"aws_access_key_id": c["AccessKeyId"], "aws_secret_access_key": c["SecretAccessKey"], "aws_session_token": c["SessionToken"]}

    def wait_for_stack(self, cloudformation: Any, stack_name: str, within_s: float = 60.0) -> dict[str, Any]:
        """The stack once it is no longer in progress."""
        deadline = time.monotonic() + within_s
        while True:
            stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
            if not stack["StackStatus"].endswith("_IN_PROGRESS") or time.monotonic() > deadline:
                return stack
            time.sleep(0.2)

    def stack_failure(self, cloudformation: Any, stack_name: str) -> str:
        """The failed events of a stack, for a failure message."""
        events = cloudformation.describe_stack_events(StackName=stack_name)["StackEvents"]
        failed = [f"  {e['LogicalResourceId']} ({e['ResourceType']}): {e.get('ResourceStatusReason', '')}" for e in events if "FAILED" in e["ResourceStatus"]]
        return "\n".join(failed) or "  (no failed events)"
