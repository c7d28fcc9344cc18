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


def join_messages(binding, i_id=b"node-a", r_id=b"node-b", t_i=1767225600000,
                  t_r=1767225600250, n_i=bytes(range(32)), n_r=bytes(range(32, 64))):
    """HELLO and WELCOME payloads (§5.1-5.3) and their proofs."""
    hello_signed = (struct.pack(">H", 1) + lp16(b"prod") + lp16(i_id)
                    + struct.pack(">Q", t_i) + n_i
                    + struct.pack(">I", 8388608) + b"\x01" + KEY_ID)
    proof_i = mac(lp16(b"palisade/v1 initiator proof") + lp16(binding) + hello_signed)
    hello = hello_signed + proof_i
    welcome_signed = (struct.pack(">H", 1) + lp16(r_id)
                      + struct.pack(">Q", t_r) + n_r
                      + struct.pack(">I", 8388608) + b"\x01" + KEY_ID)
    proof_r = mac(lp16(b"palisade/v1 acceptor proof") + lp16(binding) + lp16(hello)
                  + welcome_signed)
    return hello, welcome_signed + proof_r, proof_i, proof_r


def rejoin_vectors(hello, welcome):
    """The re-join (§5.8) on the plaintext link of the join vectors: node-b sends REJOIN."""
    transcript = hashlib.sha256(lp16(hello) + lp16(welcome)).digest()
    binding = hashlib.sha256(lp16(b"palisade/v1 rejoin") + lp16(b"") + transcript).digest()
    rehello, rewelcome, _, _ = join_messages(
        binding, b"node-b", b"node-a", 1767225660000, 1767225660100,
        bytes(range(64, 96)), bytes(range(96, 128)))
    return {
        "rejoin_transcript": transcript,
        "rejoin_binding": binding,
        "rejoin_frame": frame(0x04, rehello),
        "rejoined_frame": frame(0x05, rewelcome),
        "rekey_frame": frame(0x06, b""),
        "rejoin_next_transcript": hashlib.sha256(lp16(rehello) + lp16(rewelcome)).digest(),
    }


def join_vectors(binding, suffix):
    hello, welcome, proof_i, proof_r = join_messages(binding)
    return {
        "proof_i" + suffix: proof_i,
        "hello_frame" + suffix: frame(0x01, hello),
        "proof_r" + suffix: proof_r,
        "welcome_frame" + suffix: frame(0x02, welcome),
    }


# The channel binding (PROTOCOL.md §8): the TLS exporter with palisade's label, computed
# from the secrets and randoms the spec lists, with and without an empty context.
EXPORTER_LABEL = b"EXPORTER-palisade-join-v1"
SUITE_HASH = {"SHA256": hashlib.sha256, "SHA384": hashlib.sha384}


def hkdf_expand_label(h, secret, label, context, length):
    """RFC 8446 §7.1, HKDF-Expand (RFC 5869) over the HkdfLabel structure."""
    full = b"tls13 " + label
    info = struct.pack(">H", length) + bytes([len(full)]) + full + bytes([len(context)]) + context
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes([i]), h).digest()
        out, i = out + block, i + 1
    return out[:length]


def tls13_exporter(h, exporter_master_secret, context, length=32):
    """RFC 8446 §7.5; an absent context is the empty string."""
    empty = h(b"").digest()
    derived = hkdf_expand_label(h, exporter_master_secret, EXPORTER_LABEL, empty, len(empty))
    return hkdf_expand_label(h, derived, b"exporter", h(context or b"").digest(), length)


def tls12_prf(h, secret, label, seed, length):
    """RFC 5246 §5: P_hash(secret, label + seed)."""
    a, out = label + seed, b""
    while len(out) < length:
        a = hmac.new(secret, a, h).digest()
        out += hmac.new(secret, a + label + seed, h).digest()
    return out[:length]


def tls12_exporter(h, master_secret, client_random, server_random, context, length=32):
    """RFC 5705: the context and its length are in the seed only when a context is given."""
    seed = client_random + server_random
    if context is not None:
        seed += struct.pack(">H", len(context)) + context
    return tls12_prf(h, master_secret, EXPORTER_LABEL, seed, length)


def exporter_vectors(section):
    """(name, spec value, computed value) for every `tls12_*` / `tls13_*` vector."""
    spec = dict(re.findall(r"^(tls1[23]_[a-z_]+) = ([0-9A-Za-z_]+)$", section, re.M))

    def x(name):
        return bytes.fromhex(spec.get(name, ""))

    h13 = SUITE_HASH[spec.get("tls13_suite", "_SHA256").rsplit("_", 1)[1]]
    h12 = SUITE_HASH[spec.get("tls12_suite", "_SHA256").rsplit("_", 1)[1]]
    ems = x("tls13_exporter_master_secret")
    ms, cr, sr = x("tls12_master_secret"), x("tls12_client_random"), x("tls12_server_random")
    ours = {
        "tls13_exporter": tls13_exporter(h13, ems, None),
        "tls13_exporter_empty_context": tls13_exporter(h13, ems, b""),
        "tls12_exporter": tls12_exporter(h12, ms, cr, sr, None),
        "tls12_exporter_empty_context": tls12_exporter(h12, ms, cr, sr, b""),
    }
    checks = [(k, spec.get(k), v.hex()) for k, v in sorted(ours.items())]
    # The point of the TLS 1.2 pair: "no context" is not "an empty context" there.
    differ = ours["tls12_exporter"] != ours["tls12_exporter_empty_context"]
    checks.append(("tls12 no context != empty context", str(differ), "True"))
    return checks


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
        # "More frame authentication vectors": seq above 1, an initiator CLOSE, an empty
        # payload, and the untagged REJECT / CLOSE of the pre-join exception.
        "auth_data_i1": sealed(key_i, 1, 0x10, b"two"),
        "auth_data_i2": sealed(key_i, 2, 0x10, b"three"),
        "auth_close_i3": sealed(key_i, 3, 0x11, struct.pack(">H", 1) + lp16(b"bye")),
        "auth_data_r2": sealed(key_r, 2, 0x10, b""),
        "unauth_reject_i0": frame(0x03, struct.pack(">H", 3) + lp16(b"bad proof")),
        "unauth_close_i0": frame(0x11, struct.pack(">H", 4) + lp16(b"timeout")),
    }


def node_stream_vectors():
    """§10: the `palisade node` stream messages (DATA frame payloads, no header)."""
    def text(t):
        return bytes([len(t)]) + t
    u32 = lambda v: struct.pack(">I", v)
    return {
        "node_open": b"\x10" + u32(1) + u32(262144) + text(b"etcd-peer"),
        "node_accept": b"\x11" + u32(1) + u32(262144),
        "node_refuse": b"\x12" + u32(3) + bytes([2]) + text(b"not allowed: node-3"),
        "node_data": b"\x13" + u32(1) + b"hello",
        "node_window": b"\x14" + u32(1) + u32(65536),
        "node_fin": b"\x15" + u32(2),
        "node_reset": b"\x16" + u32(2) + bytes([5]) + text(b"window exceeded"),
    }


def main():
    section = open(SPEC, encoding="utf-8").read().split("## 9. Test vectors")[1]
    spec = dict(re.findall(r"^([a-z_]+) = ([0-9a-f]+)$", section, re.M))
    # Names with a digit: the channel-binding vectors (checked below) and the frame
    # authentication vectors of the "More frame authentication vectors" subsection.
    spec.update(re.findall(r"^((?:auth|unauth)_[a-z_]+[0-9]) = ([0-9a-f]+)$", section, re.M))
    ours = {
        "preface": b"PALISADE" + struct.pack(">H", 1),
        "key_id": KEY_ID,
        "reject_frame": frame(0x03, struct.pack(">H", 5) + lp16(b"skew 400000 ms")),
        "close_frame": frame(0x11, struct.pack(">H", 0) + lp16(b"bye")),
        "reject_revoked_frame": frame(
            0x03, struct.pack(">H", 13) + lp16(b'node id "node-c" is revoked')),
        "close_revoked_frame": frame(0x11, struct.pack(">H", 6) + lp16(b"revoked: node-id node-c")),
        "data_frame": frame(0x10, b"hello, cluster"),
    }
    ours.update(join_vectors(b"", ""))
    ours.update(frame_auth_vectors(ours["hello_frame"][5:], ours["welcome_frame"][5:]))
    ours.update(join_vectors(b"\xaa" * 32, "_tls"))
    ours.update(rejoin_vectors(ours["hello_frame"][5:], ours["welcome_frame"][5:]))
    ours.update(node_stream_vectors())
    bad = [k for k in sorted(set(ours) | set(spec)) if ours.get(k, b"").hex() != spec.get(k)]
    for k in bad:
        print(f"vector {k}: spec {spec.get(k)} != computed {ours.get(k, b'').hex()}")
    exporter = exporter_vectors(section)
    bad_exporter = [(k, spec_v, ours_v) for k, spec_v, ours_v in exporter if spec_v != ours_v]
    for k, spec_v, ours_v in bad_exporter:
        print(f"vector {k}: spec {spec_v} != computed {ours_v}")
    passed = len(ours) - len(bad) + len(exporter) - len(bad_exporter)
    failed = len(bad) + len(bad_exporter)
    print(f"check_vectors: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
