"""Least privilege, both ways: every IAM action a role grants is one its
service's code calls, and every AWS call the code makes is granted.

Neither list is kept by hand. The calls come from the Rust source: every
SDK operation started in the code (`client.get_object()`, `.query()`, ...),
recognised against the operation names of the SDK crates the workspace
builds with, attributed to the services whose code reaches it (from each
service's entry file, following the names its items use, item by item), and
mapped to the IAM action it needs. The grants come from the templates' role
policies. Actions a call needs only indirectly (KMS for encrypted data, the
Glue catalogue and the result bucket behind an Athena query) must sit in a
statement with Sid "Implied" and be implied by a call the service makes.
"""

from __future__ import annotations

import json
import re
import subprocess
import unittest
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

from harness import ROOT, load_template

SOURCES = sorted((ROOT / "crates").glob("*/src"))

SERVICES = {
    # task role in infra/central.yaml -> the service's entry file
    "CollectorTaskRole": "crates/cli/src/aws/collector.rs",
    "EnricherTaskRole": "crates/cli/src/aws/enricher.rs",
    "ApiTaskRole": "crates/cli/src/aws/api.rs",
    "BackfillTaskRole": "crates/cli/src/aws/backfill.rs",
}

SDK_USERS = {"aws", "cli"}
"""The crates that depend on the AWS SDK (the others' `.send()` is something else's)."""

SDK_CRATES = {
    "aws-sdk-s3": "s3",
    "aws-sdk-sqs": "sqs",
    "aws-sdk-sns": "sns",
    "aws-sdk-dynamodb": "dynamodb",
    "aws-sdk-athena": "athena",
    "aws-sdk-sts": "sts",
    "aws-sdk-organizations": "organizations",
    "aws-sdk-iam": "iam",
    "aws-sdk-cloudtrail": "cloudtrail",
    "aws-sdk-glue": "glue",
}

# Where an operation's IAM action is not named after it (AWS's service
# authorization reference). None: no permission is needed.
ACTION_OF = {
    "s3:HeadObject": "s3:GetObject",
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:ListObjects": "s3:ListBucket",
    "s3:HeadBucket": "s3:ListBucket",
    "s3:PutBucketNotificationConfiguration": "s3:PutBucketNotification",
    "s3:GetBucketNotificationConfiguration": "s3:GetBucketNotification",
    "s3:DeleteObjects": "s3:DeleteObject",
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "sts:GetCallerIdentity": None,
    "dynamodb:TransactGetItems": "dynamodb:GetItem",
}

# TransactWriteItems is authorised per contained write.
TRANSACT_PARTS = {"Put": "dynamodb:PutItem", "Update": "dynamodb:UpdateItem", "Delete": "dynamodb:DeleteItem",
                  "ConditionCheck": "dynamodb:ConditionCheckItem"}

# Actions a call needs behind the scenes, which therefore sit in the "Implied" statement.
ENCRYPTION = {"kms:Decrypt", "kms:GenerateDataKey"}
IMPLIED_BY = {
    "athena:StartQueryExecution": {
        "glue:GetDatabase", "glue:GetTable", "glue:GetPartition", "glue:GetPartitions",
        "s3:GetObject", "s3:ListBucket", "s3:PutObject", "s3:GetBucketLocation",
        "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts",
    } | ENCRYPTION,
    "athena:GetQueryResults": {"s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"} | ENCRYPTION,
}
for _action in ("s3:GetObject", "s3:PutObject", "sqs:ReceiveMessage", "sqs:SendMessage", "sns:Publish",
                "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"):
    IMPLIED_BY.setdefault(_action, set()).update(ENCRYPTION)


@lru_cache(maxsize=None)
def sdk_operations() -> dict[str, set[str]]:
    """snake_case operation name -> the services (IAM prefixes) whose SDK crate has it."""
    host = re.search(r"^host: (\S+)", subprocess.run(["rustc", "-vV"], check=True, capture_output=True, text=True).stdout,
                     re.M).group(1)
    out = subprocess.run(["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", host], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    ops: dict[str, set[str]] = defaultdict(set)
    for package in json.loads(out)["packages"]:
        service = SDK_CRATES.get(package["name"])
        if service:
            for op_dir in (Path(package["manifest_path"]).parent / "src/operation").iterdir():
                if op_dir.is_dir():
                    ops[op_dir.name].add(service)
    return ops


def pascal(snake: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in snake.split("_"))


# ---------------------------------------------------------------- the source, item by item

ITEM_START = re.compile(
    r"^(?:pub(?:\([^)]*\))? )?(?:async )?(?:unsafe )?(fn|struct|enum|trait|impl|const|static|type)\b[^\n]*", re.M)
WORD = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")


class Item:
    """A top-level item of a source file, or one method of an impl block."""

    def __init__(self, path: Path, kind: str, name: str, text: str, owner: str | None = None, by_trait: str | None = None,
                 dispatched: bool = False):
        self.path, self.kind, self.name, self.text, self.owner, self.by_trait = path, kind, name, text, owner, by_trait
        self.dispatched = dispatched
        self.words = set(WORD.findall(text))
        # Names used as values or called, unqualified; and `module::name` pairs.
        self.free_calls = set(re.findall(r"(?<![.\w:])(?<!fn )([a-z_][a-z0-9_]*)\b(?!\s*(?:!|::))", text))
        self.path_calls = set(re.findall(r"(?=\b(\w+)::(\w+)\b)", text))
        self.method_calls = set(re.findall(r"(?:\.|::)(\w+)\s*(?:\(|::<)", text))
        # (receiver, method): receiver is "self", "self.<field>", "<Type>::" or "" (any other expression).
        self.calls = set()
        for m in re.finditer(r"(\bself\s*\.\s*(\w+)\s*|\bself\s*|\b(\w+)::|)\.?\s*\b(\w+)\s*(?:\(|::<)", text):
            whole, field, path, method = m.group(1), m.group(2), m.group(3), m.group(4)
            if path:
                self.calls.add((f"{path}::", method))
            elif field:
                self.calls.add((f"self.{field}", method))
            elif whole.strip() == "self":
                self.calls.add(("self", method))
            elif method == "send" and re.match(r"\s*\(\s*\)", text[m.end(4):]):
                pass  # an SDK request being sent, not a method of ours
            elif text[max(0, m.start(4) - 1)] == ".":
                # The receiver, without the conversions that keep its type (`self.clone()`, `x.as_ref()`, `y?`).
                head = re.sub(r"(?:\s*\.\s*(?:clone|as_ref|as_deref|borrow|deref)\s*\(\s*\)|\?|\s*\.await)+\s*$", "",
                              text[:m.start(4) - 1])
                field = re.search(r"\bself\s*\.\s*(\w+)\s*$", head)
                before = re.search(r"(\w+)\s*(?:\([^()]*\))?\s*$", head)
                if field:
                    self.calls.add((f"self.{field.group(1)}", method))
                elif before and before.group(0).strip() == "self":
                    self.calls.add(("self", method))
                else:
                    self.calls.add((f"?{before.group(1)}" if before else "", method))
        self.fields = dict(re.findall(r"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?(\w+)\s*:\s*([^\n]+?),?\s*$", text)) \
            if kind == "struct" else {}

    def __repr__(self):
        owner = f"{self.owner}::" if self.owner else ""
        return f"{self.path.relative_to(ROOT)}:{self.kind} {owner}{self.name}"


def strip_comments_and_strings(text: str) -> str:
    """The code alone: comments removed, string and char literals emptied (lines kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            out.append("\n" * text.count("\n", i, n if j < 0 else j))
            i = n if j < 0 else j + 2
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            j = text.find('"' + hashes, i + len(hashes) + 2)
            out.append('""' + "\n" * text.count("\n", i, n if j < 0 else j))
            i = n if j < 0 else j + 1 + len(hashes)
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.[^']*|[^\\'])'", text[i:i + 12]):
            j = text.find("'", i + 2 if text[i + 1] == "\\" else i + 1)
            out.append("' '")
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def production_text(path: Path) -> str:
    """The file without its test module, comments and literal text."""
    text = path.read_text()
    cut = re.search(r"^#\[cfg\(test\)\]", text, re.M)
    return strip_comments_and_strings(text[:cut.start()] if cut else text)


def impl_type(header: str) -> tuple[str, str | None]:
    """The type an impl block is for, and the trait it implements (if any)."""
    header = re.sub(r"<[^<>]*(?:<[^<>]*>[^<>]*)*>", "", header)  # generics
    m = re.match(r"impl\s+(?:(?:[\w]+::)*(\w+)\s+for\s+)?(?:[\w:]*::)?(\w+)", header.strip())
    return (m.group(2), m.group(1)) if m else ("?", None)


METHOD_START = re.compile(r"^    (?:pub(?:\([^)]*\))? )?(?:async )?(?:unsafe )?fn (\w+)", re.M)


@lru_cache(maxsize=None)
def items() -> list[Item]:
    found = []
    for root in SOURCES:
        for path in sorted(root.rglob("*.rs")):
            text = production_text(path)
            starts = list(ITEM_START.finditer(text))
            for i, m in enumerate(starts):
                end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
                kind, header, body = m.group(1), m.group(0), text[m.start():end]
                if kind != "impl":
                    found.append(Item(path, kind, re.search(rf"\b{kind}\s+(\w+)", header).group(1), body))
                    continue
                owner, by_trait = impl_type(header[header.index("impl"):])
                # An impl under an attribute macro (a GraphQL object, say): its methods are called by the framework.
                attributes = re.findall(r"(?m)^#\[(\w+)", text[max(0, m.start() - 300):m.start()].rsplit("\n\n", 1)[-1])
                dispatched = any(a not in ("cfg", "allow", "doc", "async_trait") for a in attributes)
                methods = list(METHOD_START.finditer(body))
                found.append(Item(path, "impl", owner, body[:methods[0].start()] if methods else body))
                for j, mm in enumerate(methods):
                    mend = methods[j + 1].start() if j + 1 < len(methods) else len(body)
                    found.append(Item(path, "method", mm.group(1), body[mm.start():mend], owner, by_trait, dispatched))
    return found


@lru_cache(maxsize=None)
def imported(path: Path) -> dict[str, set[str]]:
    """The names a file's `use` declarations bring into scope, each with the module paths it may come from."""
    parent = path.parent.parent.name if path.name == "mod.rs" else path.parent.name
    crate = "trailwatch_" + path.relative_to(ROOT / "crates").parts[0]
    found: dict[str, set[str]] = defaultdict(set)
    for use in re.findall(r"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", production_text(path)):
        words = WORD.findall(use.replace("super", parent).replace("crate", crate))
        for w in words:
            found[w].update(words)
    return found


def crate_of(path: Path) -> str:
    return path.relative_to(ROOT / "crates").parts[0]


@lru_cache(maxsize=None)
def dependencies(crate: str) -> frozenset[str]:
    """The workspace crates `crate` can use: itself and its (transitive) normal dependencies."""
    manifest = (ROOT / "crates" / crate / "Cargo.toml").read_text()
    section = re.search(r"(?ms)^\[dependencies\](.*?)(?=^\[|\Z)", manifest)
    direct = re.findall(r"(?m)^trailwatch-(\w+)", section.group(1) if section else "")
    return frozenset([crate]).union(*(dependencies(d) for d in direct))


CONSTRUCTS = re.compile(r"\b([A-Z]\w*)\s*::\s*[a-z_]\w*\s*(?:\(|::<)|(?<!struct )(?<!enum )(?<!impl )(?<!for )\b([A-Z]\w*)\s*\{")


def module_stem(path: Path) -> str:
    """How other code names the module of a file (`ledger`, `trailwatch_enricher`)."""
    if path.name in ("lib.rs", "main.rs") and path.parent.name == "src":
        return "trailwatch_" + path.parent.parent.name
    return path.parent.name if path.name == "mod.rs" else path.stem


WHY: dict[int, str] = {}
"""Why the last reached_items() took each item (for failure messages)."""


def reached_items(entry: Path) -> list[Item]:
    """The items a service's code can run: its entry file's, and those their names lead to.

    A type is reached when a reached item names it; a free function when one
    calls it (by its name, or by `module::name` where several files define
    it); a method when its type is reached and a reached item calls a method
    of that name — or at once, for trait methods, which code outside these
    crates calls through the trait."""
    every = items()
    fn_defs: dict[str, list[Item]] = defaultdict(list)
    for item in every:
        if item.kind == "fn":
            fn_defs[item.name].append(item)
    reached = {id(i) for i in every if i.path == entry}
    WHY.clear()
    structs = {i.name: i for i in every if i.kind == "struct"}
    field_types: dict[str, str] = defaultdict(str)
    for st in structs.values():
        for field, ty in st.fields.items():
            field_types[field] += " " + ty
    impl_files: dict[str, set[Path]] = defaultdict(set)
    for i in every:
        if i.kind in ("impl", "method"):
            impl_files[i.owner or i.name].add(i.path)

    def may_call(caller: Item, receiver: str, owner: str) -> bool:
        """Whether a call `receiver.method(…)` in `caller` can be on a value of type `owner`."""
        if receiver == "self":
            return caller.owner == owner
        if receiver.endswith("::"):
            return receiver[:-2] in (owner, "Self") and (receiver[:-2] == owner or caller.owner == owner)
        if receiver.startswith("self."):
            field_type = structs[caller.owner].fields.get(receiver[5:], "") if caller.owner in structs else ""
            return bool(re.search(rf"\b{owner}\b", field_type))
        if receiver.startswith("?"):
            # `x.method(…)`: a field of that type, or a variable in code that names the type.
            return (bool(re.search(rf"\b{owner}\b", field_types.get(receiver[1:], ""))) or owner in caller.words
                    or caller.owner == owner)
        return owner in caller.words or caller.path in impl_files[owner]

    words: set[str] = set()
    word_from: dict[str, Item] = {}
    reached_list: list[Item] = []
    constructed: set[str] = set()
    calls: list[tuple[Item, str, str]] = []
    free_calls: set[tuple[Path, str, frozenset]] = set()
    done: set[int] = set()
    changed = True
    while changed:
        changed = False
        for item in every:
            if id(item) in reached and id(item) not in done:
                done.add(id(item))
                for w in item.words - words:
                    word_from[w] = item
                words |= item.words
                reached_list.append(item)
                for m in CONSTRUCTS.finditer(item.text):
                    name = m.group(1) or m.group(2)
                    constructed.add(item.owner if name == "Self" and item.owner else name)
                calls.extend((item, receiver, method) for receiver, method in item.calls)
                for name in item.free_calls:
                    if name in fn_defs:
                        free_calls.add((item.path, name, frozenset()))
                for module, name in item.path_calls:
                    if name in fn_defs:
                        if module == "super":
                            module = item.path.parent.parent.name if item.path.name == "mod.rs" else item.path.parent.name
                        elif module == "self":
                            module = module_stem(item.path)
                        elif module == "crate":
                            module = "trailwatch_" + item.path.relative_to(ROOT / "crates").parts[0]
                        free_calls.add((item.path, name, frozenset([module])))
        chosen: dict[int, str] = {}
        for path, name, modules in free_calls:
            defs = [d for d in fn_defs[name] if crate_of(d.path) in dependencies(crate_of(path))]
            if modules:
                # `module::name(…)`: the function of that module, if it is ours at all.
                defs = [d for d in defs if module_stem(d.path) in modules or d.path.parent.name in modules]
            else:
                # A plain call: a function of the same file, or one the file imports.
                defs = [d for d in defs if d.path == path] or [
                    d for d in defs if module_stem(d.path) in imported(path).get(name, ())]
            chosen.update({id(d): f"{path.relative_to(ROOT)} names {name}" for d in defs})
        for item in every:
            if id(item) in reached:
                continue
            why = None
            if item.kind == "fn":
                why = chosen.get(id(item))
            elif item.kind == "method":
                if item.owner in words and (item.owner in constructed or crate_of(item.path) != "aws"):
                    if item.by_trait:
                        # Called through the trait, on a value whose type the code does not spell out.
                        caller = next((c for c, r, m in calls if m == item.name and (
                            may_call(c, r, item.owner) or may_call(c, r, item.by_trait))), None)
                        why = caller and f"{word_from[item.owner]!r} names {item.owner}, {caller!r} calls .{item.name}()"
                    else:
                        caller = next((c for c, r, m in calls if m == item.name and may_call(c, r, item.owner)), None)
                        why = caller and f"{caller!r} calls {item.owner}::{item.name}"
                        if item.dispatched:
                            why = f"{word_from[item.owner]!r} names {item.owner}, whose methods a framework calls"
            elif item.name in words:
                source = word_from[item.name]
                if crate_of(item.path) in dependencies(crate_of(source.path)) and (
                        item.path == source.path or item.name in imported(source.path)
                        or re.search(rf"::\s*{item.name}\b", source.text) or any(
                            item.name in i.words and (i.path == item.path or item.name in imported(i.path))
                            for i in reached_list)):
                    why = f"{source!r} names it"
            if why:
                WHY[id(item)] = why
                reached.add(id(item))
                changed = True
    return [i for i in every if id(i) in reached]


SEND = re.compile(r"\.\s*send\s*\(\s*\)")
CALL = re.compile(r"\.\s*([a-z][a-z0-9_]*)\s*\(\s*\)")


def sdk_calls(item: Item) -> list[tuple[str, str]]:
    """(IAM-prefixed operation, the statement) of every SDK request the item sends."""
    ops = sdk_operations()
    calls = []
    for send in SEND.finditer(item.text):
        # The statement the send ends: back to the previous `;`, `{` or `}` at the start of a line.
        start = max(item.text.rfind(";", 0, send.start()), item.text.rfind("{\n", 0, send.start()),
                    item.text.rfind("=>", 0, send.start()))
        statement = item.text[start + 1:send.end()]
        found = [m.group(1) for m in CALL.finditer(statement) if m.group(1) in ops]
        var = re.search(r"(\w+)\s*\.\s*send\s*\(\s*\)$", statement)
        if not found and var:
            # A request built in a variable first: `let mut request = client.op()...; ...; request.send()`.
            let = None
            for let in re.finditer(rf"\blet\s+(?:mut\s+)?{var.group(1)}\b[^;=]*=([^;]*);", item.text[:send.start()]):
                pass
            if let:
                found = [m.group(1) for m in CALL.finditer(let.group(1)) if m.group(1) in ops]
        if not found:
            calls.append(("?", statement))
            continue
        op = found[0]
        services = ops[op]
        if len(services) > 1:
            # The SDK crate the file imports decides.
            used = {s for crate, s in SDK_CRATES.items() if crate.replace("-", "_") in item.path.read_text()}
            services = services & used or services
        if len(services) != 1:
            calls.append((f"ambiguous {op} {sorted(services)}", statement))
            continue
        calls.append((f"{next(iter(services))}:{pascal(op)}", statement))
    return calls


def built_requests(item: Item) -> list[tuple[str, str]]:
    """Requests an item builds and hands to a helper to send (`query_all(client.query()…)`)."""
    ops = sdk_operations()
    found = []
    for m in re.finditer(r"\b(?:client|s3|sqs|sns|dynamodb|athena|sts|organizations|iam|cloudtrail)\s*\.\s*([a-z]\w*)\s*\(\s*\)",
                         item.text):
        end = item.text.find(";", m.end())
        statement = item.text[m.start():end if end >= 0 else len(item.text)]
        if m.group(1) in ops and not SEND.search(statement):
            services = ops[m.group(1)]
            if len(services) > 1:
                used = {sv for crate, sv in SDK_CRATES.items() if crate.replace("-", "_") in item.path.read_text()}
                services = services & used or services
            if len(services) == 1:
                found.append((f"{next(iter(services))}:{pascal(m.group(1))}", statement))
    return found


def actions_of(item_list: list[Item]) -> tuple[dict[str, list[str]], list[str]]:
    """IAM action -> where it is called; and the sends that could not be attributed."""
    actions: dict[str, list[str]] = defaultdict(list)
    problems = []
    for item in item_list:
        if crate_of(item.path) not in SDK_USERS:
            continue
        builder_param = "FluentBuilder" in item.text.split("{", 1)[0]
        for op, statement in sdk_calls(item) + built_requests(item):
            where = f"{item.path.relative_to(ROOT)} ({item.kind} {item.name})"
            if op == "?":
                if not builder_param:
                    problems.append(f"{where}: a request whose operation is not in its statement: {statement.strip()[:120]}")
                continue
            if op.startswith("ambiguous"):
                problems.append(f"{where}: {op}")
                continue
            if op == "dynamodb:TransactWriteItems":
                parts = [a for part, a in TRANSACT_PARTS.items() if re.search(rf"\b{part}::builder\(\)", item.text)]
                for a in parts or ["dynamodb:PutItem"]:
                    actions[a].append(where)
                continue
            action = ACTION_OF.get(op, op)
            if action:
                actions[action].append(where)
    return actions, problems


# ---------------------------------------------------------------- the templates

def statements(node) -> list[dict]:
    """Policy statements, both branches of an Fn::If taken."""
    if isinstance(node, list):
        return [s for n in node for s in statements(n)]
    if isinstance(node, dict):
        if "Fn::If" in node:
            return statements(node["Fn::If"][1:])
        if "Effect" in node:
            return [node]
        if "Ref" in node and node["Ref"] == "AWS::NoValue":
            return []
    return []


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def granted(template: dict, role: str) -> tuple[set[str], set[str]]:
    """(actions granted, actions in Implied statements) of a role's inline and attached policies."""
    resources = template["Resources"]
    docs = [p["PolicyDocument"] for p in statements_or_policies(resources[role]["Properties"].get("Policies", []))]
    for res in resources.values():
        if res.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            roles = as_list(res["Properties"].get("Roles", []))
            if {"Ref": role} in roles:
                docs.append(res["Properties"]["PolicyDocument"])
    direct, implied = set(), set()
    for doc in docs:
        for st in statements(doc["Statement"]):
            if st.get("Effect") != "Allow":
                continue
            target = implied if st.get("Sid") == "Implied" else direct
            target.update(as_list(st.get("Action", [])))
    return direct, implied


def statements_or_policies(policies) -> list[dict]:
    out = []
    for p in as_list(policies):
        if isinstance(p, dict) and "Fn::If" in p:
            out.extend(statements_or_policies([b for b in p["Fn::If"][1:] if isinstance(b, dict) and "PolicyDocument" in b]))
        elif isinstance(p, dict) and "PolicyDocument" in p:
            out.append(p)
    return out


ASSUMED = {"organizations": "the Organizations read role (stacksets/stackset.yaml)",
           "iam": "the member-account read role (stacksets/member.yaml)",
           "cloudtrail": "the member-account read role (stacksets/member.yaml)"}
"""Services whose calls go through a role in another account, which the task role may only assume."""

OWN_ACCOUNT = {"cloudtrail:ListPublicKeys"}
"""Calls of those services made with the task role itself (CloudTrail's public keys, for digest signatures)."""


def through_assumed_roles(called: dict[str, list[str]]) -> dict[str, list[str]]:
    """The task role's share: calls made through another account's role become sts:AssumeRole."""
    out: dict[str, list[str]] = defaultdict(list)
    for action, sites in called.items():
        if action.split(":")[0] in ASSUMED and action not in OWN_ACCOUNT:
            out["sts:AssumeRole"].extend(f"{site} via {ASSUMED[action.split(':')[0]]}" for site in sites)
        else:
            out[action].extend(sites)
    return out


class LeastPrivilege(unittest.TestCase):
    maxDiff = None

    def check_role(self, template_path: Path, role: str, called: dict[str, list[str]]):
        template = load_template(template_path)
        self.assertIn(role, template["Resources"], f"{template_path.relative_to(ROOT)} has no {role}")
        direct, implied = granted(template, role)
        where = f"{template_path.relative_to(ROOT)} {role}"
        wildcards = sorted(a for a in direct | implied if "*" in a)
        self.assertEqual(wildcards, [], f"{where} grants wildcard actions")
        missing = {a: called[a] for a in sorted(set(called) - direct)}
        self.assertEqual(missing, {}, f"{where} lacks actions the code calls (action: call sites)")
        unused = sorted(direct - set(called))
        self.assertEqual(unused, [], f"{where} grants actions its service's code never calls")
        allowed = set().union(*(IMPLIED_BY.get(a, set()) for a in called)) if called else set()
        unjustified = sorted(implied - allowed)
        self.assertEqual(unjustified, [], f"{where}: Implied actions no call of the service needs")

    def test_the_source_is_understood(self):
        """Every request the code sends is attributed to one operation of one service."""
        _, problems = actions_of(items())
        self.assertEqual(problems, [])
        every, _ = actions_of(items())
        self.assertIn("s3:GetObject", every, "the scan finds the S3 reads")
        self.assertIn("dynamodb:Query", every)

    def test_each_task_role_grants_what_its_service_calls(self):
        central = ROOT / "infra/central.yaml"
        for role, entry in SERVICES.items():
            with self.subTest(role=role):
                called, problems = actions_of(reached_items(ROOT / entry))
                self.assertEqual(problems, [])
                self.assertTrue(called, f"{entry}: no AWS call found")
                self.check_role(central, role, through_assumed_roles(called))

    def test_the_services_call_what_they_must(self):
        """The derivation itself: a few calls each service must be found making."""
        expect = {
            "CollectorTaskRole": {"s3:GetObject", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage",
                                  "dynamodb:BatchWriteItem"},
            "EnricherTaskRole": {"s3:GetObject", "s3:PutObject", "sns:Publish", "athena:StartQueryExecution",
                                 "dynamodb:Query"},
            "ApiTaskRole": {"athena:StartQueryExecution", "dynamodb:Query"},
            "BackfillTaskRole": {"s3:ListBucket", "sqs:SendMessage"},
        }
        for role, entry in SERVICES.items():
            called, _ = actions_of(reached_items(ROOT / entry))
            self.assertLessEqual(expect[role], set(called), role)
            self.assertNotIn("dynamodb:CreateTable", called, f"{role}: creating tables is aws-setup's, not a service's")

    def test_the_organizations_role_grants_what_the_directory_calls(self):
        path = ROOT / "crates/aws/src/organizations.rs"
        called, problems = actions_of([i for i in items() if i.path == path])
        self.assertEqual(problems, [])
        self.check_role(ROOT / "stacksets/stackset.yaml", "OrganizationsReadRole", called)

    def test_the_member_role_grants_what_the_member_checks_call(self):
        path = ROOT / "crates/aws/src/member.rs"
        if not path.exists():
            self.skipTest("no member-account checks in the code")
        called, problems = actions_of([i for i in items() if i.path == path])
        self.assertEqual(problems, [])
        called.pop("sts:AssumeRole", None)  # the caller's permission, granted in its task role
        template = load_template(ROOT / "stacksets/member.yaml")
        roles = [name for name, r in template["Resources"].items() if r.get("Type") == "AWS::IAM::Role"]
        self.assertEqual(len(roles), 1, f"stacksets/member.yaml: one role expected, found {roles}")
        self.check_role(ROOT / "stacksets/member.yaml", roles[0], called)


if __name__ == "__main__":
    unittest.main()
