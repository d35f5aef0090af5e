#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_protocol_header (see the input format at the
top of fuzz_protocol_header.cc). Run from tests/fuzz: python3 make_protocol_corpus.py"""
import os
import struct

TYPES = {"HELLO": 1, "SNAPSHOT_BEGIN": 2, "NETNS_FDS": 3, "SNAPSHOT_END": 4, "ACK": 5}


def msg(kind, payload, fds=0, version=1):
    return b"RMSP" + struct.pack("<HHII", version, TYPES[kind], len(payload), fds) + payload


def records(*messages, mode=0):
    return bytes([mode]) + b"".join(struct.pack("<H", len(m)) + m for m in messages)


def begin(gen, pods, json_size):
    return struct.pack("<QIIQ", gen, pods, 0, json_size)


def fds(first, present):
    return struct.pack("<II", first, len(present)) + bytes(present)


def fragment(offset, data):
    return struct.pack("<Q", offset) + data


hello = struct.pack("<HHHH", 2, 1, 1, 5) + b"0.1.0"
snap = b'{"generation":5,"outboundPort":15001,"pods":[{"namespace":"a","name":"p0","ips":["198.18.0.1"]},' \
       b'{"namespace":"a","name":"p1","ips":["198.18.0.2"],"mode":"disabled"}],"services":[]}'
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_protocol_header")
os.makedirs(out, exist_ok=True)
seeds = {
    "hello": records(msg("HELLO", hello)),
    "ack": records(msg("ACK", struct.pack("<QI", 5, 4) + b"oops")),
    "snapshot_two_pods": records(
        msg("SNAPSHOT_BEGIN", begin(5, 2, len(snap))),
        msg("NETNS_FDS", fds(0, [1, 0]), fds=1),
        msg("SNAPSHOT_END", fragment(0, snap[:40])),
        msg("SNAPSHOT_END", fragment(40, snap[40:]))),
    "snapshot_no_pods": records(
        msg("SNAPSHOT_BEGIN", begin(1, 0, 2)), msg("SNAPSHOT_END", fragment(0, b"{}"))),
    "fd_mismatch": records(msg("SNAPSHOT_BEGIN", begin(5, 3, 10)), msg("NETNS_FDS", fds(0, [1, 1, 1]), fds=3), mode=1),
}
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
