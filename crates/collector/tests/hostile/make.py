#!/usr/bin/env python3
"""Writes the hostile log files beside this script (deterministic; run it
again after changing it). What each file tries, and what the collector must
do with it, is in ../it/hostile.rs."""
import gzip
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ACCOUNT = "111122223333"


def record(event_id, minute=1, **extra):
    r = {
        "eventVersion": "1.09",
        "userIdentity": {"type": "IAMUser", "principalId": "AIDAHOSTILE0000ALICE", "arn": f"arn:aws:iam::{ACCOUNT}:user/alice",
                         "accountId": ACCOUNT, "accessKeyId": "AKIAHOSTILEALICE0001", "userName": "alice"},
        "eventTime": f"2024-01-15T12:{minute:02}:00Z",
        "eventSource": "iam.amazonaws.com",
        "eventName": "ListUsers",
        "awsRegion": "us-east-1",
        "sourceIPAddress": "203.0.113.7",
        "eventID": event_id,
        "readOnly": True,
        "recipientAccountId": ACCOUNT,
    }
    r.update(extra)
    return json.dumps(r, separators=(",", ":"))


def log_file(parts):
    return ('{"Records":[' + ",".join(parts) + "]}").encode()


def write(name, data):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)


write("good.json", log_file([record("good-0"), record("good-1"), record("good-2")]))

# 5,000 nested arrays inside a field the reader does not know.
write("nested-arrays.json", log_file([record("nest-0"), record("nest-1", requestParameters="@").replace('"@"', "[" * 5000 + "]" * 5000), record("nest-2")]))

# A 300 KB string (over CloudTrail's 256 KB event size, under the 1 MiB record limit), then a 4 MiB one.
write("huge-strings.json.gz", log_file([record("big-0"), record("big-1", userAgent="A" * 300_000), record("big-2", userAgent="B" * (4 << 20)), record("big-3")]))

# Bytes that are not UTF-8: in a field the event keeps, and in one it does not read.
bad_name = record("utf-1").replace('"ListUsers"', '"List\\u0055sers"').encode().replace(b"List\\u0055sers", b"List\xff\xfeUsers")
bad_extra = record("utf-2", userAgent="@").encode().replace(b'"@"', b'"\xc3\x28 broken"')
write("invalid-utf8.json", b'{"Records":[' + b",".join([record("utf-0").encode(), bad_name, bad_extra, record("utf-3").encode()]) + b"]}")

# The same key twice: eventID, and a second userIdentity naming someone else.
dup_id = record("dup-1")[:-1] + ',"eventID":"dup-1-again"}'
dup_who = record("dup-2")[:-1] + ',"userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::%s:user/mallory","accessKeyId":"AKIAHOSTILEMALLORY01"}}' % ACCOUNT
write("duplicate-keys.json", log_file([record("dup-0"), dup_id, dup_who, record("dup-3")]))

# A gzip stream cut in the middle.
full = gzip.compress(log_file([record(f"cut-{i}", userAgent=f"agent {i} " * 40) for i in range(40)]), mtime=0)
with open(os.path.join(HERE, "truncated.json.gz"), "wb") as f:
    f.write(full[: len(full) * 2 // 3])

# Records that are not objects.
write("non-object-members.json", log_file([record("mem-0"), "42", record("mem-2")]))
write("non-object-first.json", log_file(['"Records"', record("mem-9")]))

# A session that bob asks for under alice's name, then used with identities that
# claim to be someone else: resolution must follow the key to bob.
assume = record(
    "spoof-issue", minute=0,
    userIdentity={"type": "IAMUser", "principalId": "AIDAHOSTILE00000BOB", "arn": f"arn:aws:iam::{ACCOUNT}:user/bob",
                  "accountId": ACCOUNT, "accessKeyId": "AKIAHOSTILEBOB000001", "userName": "bob"},
    eventSource="sts.amazonaws.com", eventName="AssumeRole",
    requestParameters={"roleArn": f"arn:aws:iam::{ACCOUNT}:role/Admin", "roleSessionName": "alice", "durationSeconds": 3600},
    responseElements={"credentials": {"accessKeyId": "ASIAHOSTILESPOOF0001", "sessionToken": "token", "expiration": "Jan 15, 2024, 1:00:00 PM"},
                      "assumedRoleUser": {"assumedRoleId": "AROAHOSTILEADMIN0001:alice", "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/Admin/alice"}},
)


def used(event_id, minute, identity):
    return record(event_id, minute=minute, userIdentity=identity, eventName="CreateUser", readOnly=False)


session_context = {"sessionIssuer": {"type": "Role", "principalId": "AROAHOSTILEADMIN0001", "arn": f"arn:aws:iam::{ACCOUNT}:role/Admin",
                                     "accountId": ACCOUNT, "userName": "Admin"},
                   "attributes": {"creationDate": "2024-01-15T12:00:00Z", "mfaAuthenticated": "false"}}
spoofs = [
    # The session name imitates alice.
    used("spoof-name", 5, {"type": "AssumedRole", "principalId": "AROAHOSTILEADMIN0001:alice", "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/Admin/alice",
                           "accountId": ACCOUNT, "accessKeyId": "ASIAHOSTILESPOOF0001", "sessionContext": session_context}),
    # The ARN names another role and session than the key's.
    used("spoof-arn", 6, {"type": "AssumedRole", "principalId": "AROAHOSTILEAUDIT0001:alice", "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/SecurityAudit/alice",
                          "accountId": ACCOUNT, "accessKeyId": "ASIAHOSTILESPOOF0001",
                          "sessionContext": {"sessionIssuer": {"type": "Role", "arn": f"arn:aws:iam::{ACCOUNT}:role/SecurityAudit", "accountId": ACCOUNT}}}),
    # The session's key under a claimed source identity of alice.
    used("spoof-source", 7, {"type": "AssumedRole", "principalId": "AROAHOSTILEADMIN0001:alice", "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/Admin/alice",
                             "accountId": ACCOUNT, "accessKeyId": "ASIAHOSTILESPOOF0001", "sessionContext": dict(session_context, sourceIdentity="alice")}),
]
write("spoofed-identity.json", log_file([record("alice-own", minute=2), assume] + spoofs))
