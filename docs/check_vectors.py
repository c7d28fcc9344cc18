#!/usr/bin/env python3
"""A second implementation of palisade's frames, join messages and proofs, written from
docs/PROTOCOL.md alone and checked against the spec's test vectors.

Run: python3 docs/check_vectors.py   (exit status 0 when every vector agrees)
"""
import hashlib
import hmac
import os
import re
import struct
import sys

SPEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "PROTOCOL.md")
SECRET = b"palisade test vector secret 0001"


def lp16(b):
    return struct.pack(">H", len(b)) + b


def mac(data):
    return hmac.new(SECRET, data, hashlib.sha256).digest()


def frame(kind, body):
    return bytes([kind]) + struct.pack(">I", len(body)) + body


KEY_ID = mac(b"palisade/v1 key id")[:8]


def join_vectors(binding, suffix):
    hello_signed = (struct.pack(">H", 1) + lp16(b"prod") + lp16(b"node-a")
                    + struct.pack(">Q", 1767225600000) + bytes(range(32))
                    + struct.pack(">I", 8388608) + b"\x01" + KEY_ID)
    proof_i = mac(lp16(b"palisade/v1 initiator proof") + lp16(binding) + hello_signed)
    hello = hello_signed + proof_i
    welcome_signed = (struct.pack(">H", 1) + lp16(b"node-b")
                      + struct.pack(">Q", 1767225600250) + bytes(range(32, 64))
                      + struct.pack(">I", 8388608) + b"\x01" + KEY_ID)
    proof_r = mac(lp16(b"palisade/v1 acceptor proof") + lp16(binding) + lp16(hello)
                  + welcome_signed)
    return {
        "proof_i" + suffix: proof_i,
        "hello_frame" + suffix: frame(0x01, hello),
        "proof_r" + suffix: proof_r,
        "welcome_frame" + suffix: frame(0x02, welcome_signed + proof_r),
    }


def frame_auth_vectors(hello, welcome):
    """Frame authentication without TLS (§5.7), from the HELLO / WELCOME payloads."""
    h = lambda key, msg: hmac.new(key, msg, hashlib.sha256).digest()
    link_key = mac(lp16(b"palisade/v1 frame key") + lp16(hello) + lp16(welcome))
    key_i = h(link_key, b"palisade/v1 initiator frames")
    key_r = h(link_key, b"palisade/v1 acceptor frames")

    def sealed(key, seq, kind, payload):
        tag = h(key, struct.pack(">QBI", seq, kind, len(payload)) + payload)[:16]
        return bytes([kind]) + struct.pack(">I", len(payload) + 16) + payload + tag

    return {
        "link_key": link_key,
        "key_i": key_i,
        "key_r": key_r,
        "auth_data_i": sealed(key_i, 0, 0x10, b"hello, cluster"),
        "auth_data_r": sealed(key_r, 0, 0x10, b"hello, cluster"),
        "auth_close_r": sealed(key_r, 1, 0x11, struct.pack(">H", 0) + lp16(b"bye")),
    }


def main():
    section = open(SPEC, encoding="utf-8").read().split("## 9. Test vectors")[1]
    spec = dict(re.findall(r"^([a-z_]+) = ([0-9a-f]+)$", section, re.M))
    ours = {
        "preface": b"PALISADE" + struct.pack(">H", 1),
        "key_id": KEY_ID,
        "reject_frame": frame(0x03, struct.pack(">H", 5) + lp16(b"skew 400000 ms")),
        "close_frame": frame(0x11, struct.pack(">H", 0) + lp16(b"bye")),
        "data_frame": frame(0x10, b"hello, cluster"),
    }
    ours.update(join_vectors(b"", ""))
    ours.update(frame_auth_vectors(ours["hello_frame"][5:], ours["welcome_frame"][5:]))
    ours.update(join_vectors(b"\xaa" * 32, "_tls"))
    bad = [k for k in sorted(set(ours) | set(spec)) if ours.get(k, b"").hex() != spec.get(k)]
    for k in bad:
        print(f"vector {k}: spec {spec.get(k)} != computed {ours.get(k, b'').hex()}")
    print(f"check_vectors: {len(ours) - len(bad)} passed, {len(bad)} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
