#!/usr/bin/env python3
"""Independent audit of a medledger bucket with boto3 (not the project's code).

Lists every object and checks that its key is a SHA-256 content digest (no patient data in
names), that the bytes hash to that digest, that they are a medledger ciphertext (the "MLP1"
payload header, then high-entropy bytes), and that no forbidden text (plaintext markers, member
ids) occurs in any key or body. Prints one line per object; exits 1 on the first violation.

usage: s3_audit.py ENDPOINT BUCKET [FORBIDDEN ...]   (credentials from the AWS_* environment)
"""
import hashlib
import math
import re
import sys
from collections import Counter

import boto3

HEADER_BYTES = 68
KEY = re.compile(r"^(?:.*/)?([0-9a-f]{64})$")


def entropy(data: bytes) -> float:
    counts = Counter(data)
    return -sum(c / len(data) * math.log2(c / len(data)) for c in counts.values())


def main() -> int:
    endpoint, bucket, forbidden = sys.argv[1], sys.argv[2], [f.encode() for f in sys.argv[3:]]
    s3 = boto3.client("s3", endpoint_url=endpoint)
    seen = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            match = KEY.match(key)
            problems = []
            if not match:
                problems.append("key is not a content digest")
            elif hashlib.sha256(body).hexdigest() != match.group(1):
                problems.append("bytes do not hash to the key")
            if not body.startswith(b"MLP1"):
                problems.append("no medledger payload header")
            tail = body[HEADER_BYTES:]
            if len(tail) >= 256 and entropy(tail) < 7.0:
                problems.append(f"low entropy {entropy(tail):.2f} bits/byte")
            for text in forbidden:
                if text in body or text in key.encode():
                    problems.append(f"contains forbidden text {text[:12]!r}")
            print(f"{key}: {len(body)} bytes, entropy {entropy(tail) if tail else 0:.2f}: "
                  + ("; ".join(problems) or "ciphertext"))
            if problems:
                return 1
            seen += 1
    print(f"{seen} objects, all ciphertext")
    return 0 if seen else 1


if __name__ == "__main__":
    sys.exit(main())
