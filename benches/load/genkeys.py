#!/usr/bin/env python3
"""Write a keys.yaml with N consumers' keys (random digests), for load and reload benchmarks.

usage: genkeys.py N OUT [KEYS_OUT]     (OUT ending in .json: JSON, which is also YAML)
  N         number of keys (spread over N/10 consumers)
  OUT       keys.yaml to write
  KEYS_OUT  optional file receiving the first 100 plain keys (for load generators)
"""
import hashlib
import os
import sys

n = int(sys.argv[1])
out = sys.argv[2]
keys_out = sys.argv[3] if len(sys.argv) > 3 else None
plain = []
as_json = out.endswith(".json")


def key_entry(i):
    key = f"bench-{os.urandom(16).hex()}"
    if len(plain) < 100:
        plain.append(key)
    return i, hashlib.sha256(key.encode()).hexdigest()


if as_json:
    per = 10
    with open(out, "w") as f:
        f.write('{"consumers": [\n')
        nc = max(1, (n + per - 1) // per)
        for c in range(nc):
            ks = [key_entry(i) for i in range(c * per, min(n, c * per + per))]
            body = ", ".join(f'{{"id": "k{i}", "sha256": "{d}"}}' for i, d in ks)
            f.write(f'  {{"id": "c{c}", "keys": [{body}]}}{"," if c + 1 < nc else ""}\n')
        f.write("]}\n")
    if keys_out:
        with open(keys_out, "w") as f:
            f.write("\n".join(plain) + "\n")
    sys.exit(0)

with open(out, "w") as f:
    f.write("consumers:\n")
    per = 10
    for c in range(max(1, (n + per - 1) // per)):
        f.write(f"  - id: c{c}\n    keys:\n")
        for k in range(per):
            i = c * per + k
            if i >= n:
                break
            key = f"bench-{os.urandom(16).hex()}"
            if len(plain) < 100:
                plain.append(key)
            d = hashlib.sha256(key.encode()).hexdigest()
            f.write(f"      - {{ id: k{i}, sha256: \"{d}\" }}\n")
if keys_out:
    with open(keys_out, "w") as f:
        f.write("\n".join(plain) + "\n")
