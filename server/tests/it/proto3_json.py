#!/usr/bin/env python3
"""Reads JSON the server printed with the reference proto3 JSON parser.

    proto3_json.py CASES.json

CASES.json is a list of {"type": full message name, "json": text,
"binary": base64 protobuf or null}. Each text is parsed with
google.protobuf.json_format.Parse (strict: unknown fields are errors) into
the message generated from proto/ with grpcio-tools (the stub generation of
client/python/example.py); when "binary" is given, the parsed message must
equal that encoding decoded (the same message over gRPC). Prints one line
per case; exits 1 on the first failure.
"""

import base64
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "client", "python"))

from example import PROTO_FILES, generate_stubs  # noqa: E402
from google.protobuf import descriptor_pool, json_format, message_factory  # noqa: E402


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    with tempfile.TemporaryDirectory(prefix="valence-stubs-") as out:
        package = generate_stubs(out)
        for path in PROTO_FILES:
            module = os.path.basename(path)[: -len(".proto")] + "_pb2"
            __import__(f"{package}.{module}")
        pool = descriptor_pool.Default()
        for case in cases:
            cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(case["type"]))
            try:
                parsed = json_format.Parse(case["json"], cls())
            except json_format.ParseError as e:
                print(f"FAILED {case['type']}: {e}\n{case['json']}", file=sys.stderr)
                return 1
            if case.get("binary") is not None:
                expected = cls.FromString(base64.b64decode(case["binary"]))
                if parsed != expected:
                    print(
                        f"FAILED {case['type']}: JSON and gRPC differ\n{parsed}\n---\n{expected}",
                        file=sys.stderr,
                    )
                    return 1
            print(f"parsed {case['type']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
