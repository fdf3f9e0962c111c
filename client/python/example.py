#!/usr/bin/env python3
"""A Python client of the Valence Lifecycle Manager, from proto/ alone.

Generates the stubs with grpcio-tools into a temporary directory at start
(nothing generated is kept), then, against a running server:

1. asks gRPC health whether the server and each API service are SERVING;
2. creates, reads, updates and deletes a progression rule (RuleService);
3. lists rules page by page with page tokens;
4. subscribes to the rules' events (EventStreamService.Subscribe), stops
   half-way and resumes from the next sequence, missing nothing;
5. reads the google.rpc details of errors: BadRequest field violations and
   ErrorInfo of an invalid rule, ErrorInfo of a missing one.

    python3 -m pip install grpcio-tools grpcio-status grpcio-health-checking
    python3 client/python/example.py --target 127.0.0.1:50051 [--token TOKEN]

Exits 0 when every step behaved as the API documents, 1 otherwise.
"""

import argparse
import importlib
import os
import sys
import tempfile
import uuid

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "..", "..", "proto")
PROTO_FILES = [
    "valence/lifecycle/v1/types.proto",
    "valence/lifecycle/v1/events.proto",
    "valence/lifecycle/v1/lifecycle_service.proto",
    "valence/lifecycle/v1/rule_service.proto",
    "valence/lifecycle/v1/singleton_admin_service.proto",
    "valence/lifecycle/v1/event_stream_service.proto",
]
SERVICES = [
    "valence.lifecycle.v1.LifecycleService",
    "valence.lifecycle.v1.RuleService",
    "valence.lifecycle.v1.SingletonAdminService",
    "valence.lifecycle.v1.EventStreamService",
]


def generate_stubs(out_dir, proto_dir=PROTO_DIR):
    """Runs protoc (grpcio-tools) on proto/ into out_dir and makes the
    modules importable; returns the `valence.lifecycle.v1` package path."""
    from grpc_tools import protoc

    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = [
        "protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
    ] + PROTO_FILES
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {proto_dir}")
    sys.path.insert(0, out_dir)
    return "valence.lifecycle.v1"


def load(package, name):
    """The generated module `<package>.<name>`."""
    return importlib.import_module(f"{package}.{name}")


class Failure(Exception):
    """A step did not behave as documented."""


def check(condition, what):
    if not condition:
        raise Failure(what)


def details(error):
    """(BadRequest or None, ErrorInfo or None) of a failed call."""
    status = rpc_status.from_call(error)
    bad_request, info = None, None
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
    return bad_request, info


def run(channel, pb, metadata):
    types, rules_pb, rules_grpc, events_pb, stream_pb, stream_grpc = pb
    rules = rules_grpc.RuleServiceStub(channel)
    stream = stream_grpc.EventStreamServiceStub(channel)

    # 1. Health: the server ("") and every API service.
    health = health_pb2_grpc.HealthStub(channel)
    for service in [""] + SERVICES:
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        check(reply.status == health_pb2.HealthCheckResponse.SERVING, f"{service!r} serving")
    print(f"health: SERVING ({len(SERVICES)} services)")

    prefix = f"py-{uuid.uuid4().hex[:8]}"

    def rule(rule_id, idle_seconds=300):
        # A rule can be written in proto3 JSON too; Parse checks it against the schema.
        return json_format.Parse(
            '{"id": "%s", "name": "Python example", "enabled": true,'
            ' "condition": {"sessionIdleForSeconds": "%d"},'
            ' "action": {"notifyWebhook": {"url": "https://example.invalid/hook"}}}'
            % (rule_id, idle_seconds),
            types.ProgressionRule(),
        )

    # 4 (first half). Subscribe before anything is written: the stream's
    # first message is a heartbeat, so once it arrives the subscription is live.
    ids = [f"{prefix}-{i}" for i in range(5)]
    created = events_pb.EventType.Value("EVENT_TYPE_RULE_CREATED")
    subscription = stream.Subscribe(
        stream_pb.SubscribeRequest(
            event_types=[created],
            entity_ids=ids,
            start=stream_pb.StartPosition.Value("START_POSITION_NOW"),
        ),
        metadata=metadata,
        timeout=20,
    )
    first = next(subscription)
    check(first.WhichOneof("message") == "heartbeat", "a subscription starts with a heartbeat")

    # 2. Rule round trip.
    made = rules.CreateRule(rules_pb.CreateRuleRequest(rule=rule(ids[0])), metadata=metadata).rule
    check(made.id == ids[0] and made.HasField("created_at"), "CreateRule returns the stored rule")
    got = rules.GetRule(rules_pb.GetRuleRequest(id=ids[0]), metadata=metadata).rule
    check(got.condition.session_idle_for_seconds == 300, "GetRule returns the condition")
    changed = rule(ids[0], idle_seconds=600)
    updated = rules.UpdateRule(rules_pb.UpdateRuleRequest(rule=changed), metadata=metadata).rule
    check(updated.condition.session_idle_for_seconds == 600, "UpdateRule replaces the condition")
    print(f"rule round trip: created, read, updated {ids[0]}")

    # 3. Paging: more rules, listed two at a time.
    for rule_id in ids[1:]:
        rules.CreateRule(rules_pb.CreateRuleRequest(rule=rule(rule_id)), metadata=metadata)
    seen, pages, token = [], 0, ""
    while True:
        page = rules.ListRules(
            rules_pb.ListRulesRequest(page_size=2, page_token=token), metadata=metadata
        )
        pages += 1
        seen += [r.id for r in page.rules if r.id.startswith(prefix)]
        token = page.next_page_token
        if not token:
            break
    check(sorted(seen) == ids, f"every rule listed exactly once: {seen}")
    print(f"paging: {len(seen)} rules in {pages} pages of 2")

    # 4. Read two creations, stop, resume from the next sequence.
    sequences, got_ids = [], []

    def take(messages, count):
        for message in messages:
            if message.WhichOneof("message") != "event":
                continue
            sequences.append(message.event.sequence)
            got_ids.append(message.event.entity_id)
            if len(got_ids) == count:
                return

    take(subscription, 2)
    subscription.cancel()
    resume_at = sequences[-1] + 1
    resumed = stream.Subscribe(
        stream_pb.SubscribeRequest(
            event_types=[created],
            entity_ids=ids,
            start=stream_pb.StartPosition.Value("START_POSITION_FROM_SEQUENCE"),
            from_sequence=resume_at,
        ),
        metadata=metadata,
        timeout=20,
    )
    take(resumed, len(ids))
    resumed.cancel()
    check(got_ids == ids, f"every creation once, in order: {got_ids}")
    check(sequences == sorted(set(sequences)), f"increasing sequences: {sequences}")
    print(f"subscribe: resumed from sequence {resume_at}, {len(got_ids)} events, none missed")

    # 5. Error details: an invalid rule, then a missing one.
    try:
        rules.CreateRule(
            rules_pb.CreateRuleRequest(rule=rule(f"{prefix}-bad", idle_seconds=0)), metadata=metadata
        )
        raise Failure("an idle time of 0 is refused")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"INVALID_ARGUMENT: {error}")
        bad_request, info = details(error)
        check(bad_request is not None and info is not None, "BadRequest and ErrorInfo details")
        violation = bad_request.field_violations[0]
        check("session_idle_for_seconds" in violation.field, f"the field: {violation.field}")
        print(
            f"error details: {error.code().name} field={violation.field}"
            f" reason={info.reason} domain={info.domain}"
        )

    for rule_id in ids:
        rules.DeleteRule(rules_pb.DeleteRuleRequest(id=rule_id), metadata=metadata)
    try:
        rules.GetRule(rules_pb.GetRuleRequest(id=ids[0]), metadata=metadata)
        raise Failure("a deleted rule is gone")
    except grpc.RpcError as error:
        check(error.code() == grpc.StatusCode.NOT_FOUND, f"NOT_FOUND: {error}")
        _, info = details(error)
        check(info is not None and info.reason == "NOT_FOUND", f"ErrorInfo reason: {info}")
        print(f"deleted {len(ids)} rules; GetRule after delete: reason={info.reason}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:50051", help="gRPC host:port")
    parser.add_argument("--token", default=os.environ.get("VALENCE_TOKEN", ""),
                        help="bearer token (operator role), when the server has tokens")
    args = parser.parse_args()
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
    with tempfile.TemporaryDirectory(prefix="valence-stubs-") as out:
        package = generate_stubs(out)
        pb = [
            load(package, name)
            for name in [
                "types_pb2",
                "rule_service_pb2",
                "rule_service_pb2_grpc",
                "events_pb2",
                "event_stream_service_pb2",
                "event_stream_service_pb2_grpc",
            ]
        ]
        with grpc.insecure_channel(args.target) as channel:
            try:
                run(channel, pb, metadata)
            except Failure as failure:
                print(f"FAILED: {failure}", file=sys.stderr)
                return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
