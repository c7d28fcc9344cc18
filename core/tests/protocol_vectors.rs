//! The test vectors in docs/PROTOCOL.md, checked against this implementation.
//!
//! The vectors are read from the spec itself, so the document and the code cannot drift
//! apart. Run with `PALISADE_PRINT_VECTORS=1` to print the computed values.

use palisade_core::frame::{encode, FrameKind};
use palisade_core::frame_auth::{FrameAuth, LinkKeys, TAG_LEN};
use palisade_core::join::{
    acceptor_proof, initiator_proof, Auth, JoinHello, JoinWelcome, RejectCode, Rejection,
    SharedSecret,
};
use palisade_core::preface::PREFACE;
use palisade_core::{CloseCode, CloseReason, Side};

const SPEC: &str = include_str!("../../docs/PROTOCOL.md");

/// `name = hex` lines of the spec's test-vector section.
fn spec_vectors() -> Vec<(String, String)> {
    let section = SPEC
        .split("## 9. Test vectors")
        .nth(1)
        .expect("docs/PROTOCOL.md has a '## 9. Test vectors' section");
    // §10 (the `palisade node` streams) has vectors of its own, checked by the CLI.
    let section = section.split("\n## 10. ").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(" = ")?;
            let value = value.trim();
            let is_hex = !value.is_empty() && value.bytes().all(|b| b.is_ascii_hexdigit());
            (is_hex && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
                .then(|| (name.to_owned(), value.to_owned()))
        })
        .collect()
}

fn bytes_of(counting_from: u8) -> [u8; 32] {
    std::array::from_fn(|i| counting_from + i as u8)
}

/// Every value the spec lists, computed from the spec's stated inputs.
fn computed(binding: &[u8], suffix: &str) -> Vec<(String, String)> {
    let secret = SharedSecret::new(b"palisade test vector secret 0001".to_vec()).unwrap();
    let mut hello = JoinHello {
        version: 1,
        cluster_name: "prod".into(),
        node_id: "node-a".into(),
        timestamp_ms: 1_767_225_600_000,
        nonce: bytes_of(0x00),
        max_frame: 8 * 1024 * 1024,
        auth: Some(Auth {
            key_id: secret.key_id(),
            proof: [0; 32],
        }),
    };
    let proof_i = initiator_proof(&secret, binding, &hello);
    hello.auth = Some(Auth {
        key_id: secret.key_id(),
        proof: proof_i,
    });
    let mut welcome = JoinWelcome {
        version: 1,
        node_id: "node-b".into(),
        timestamp_ms: 1_767_225_600_250,
        nonce: bytes_of(0x20),
        max_frame: 8 * 1024 * 1024,
        auth: Some(Auth {
            key_id: secret.key_id(),
            proof: [0; 32],
        }),
    };
    let proof_r = acceptor_proof(&secret, binding, &hello, &welcome);
    welcome.auth = Some(Auth {
        key_id: secret.key_id(),
        proof: proof_r,
    });
    let frame = |kind, body: &[u8]| {
        let mut out = bytes::BytesMut::new();
        encode(kind, body, &mut out);
        hex::encode(out)
    };
    let mut out = vec![
        (format!("proof_i{suffix}"), hex::encode(proof_i)),
        (
            format!("hello_frame{suffix}"),
            frame(FrameKind::Hello, &hello.encode()),
        ),
        (format!("proof_r{suffix}"), hex::encode(proof_r)),
        (
            format!("welcome_frame{suffix}"),
            frame(FrameKind::Welcome, &welcome.encode()),
        ),
    ];
    if suffix.is_empty() {
        let reject = Rejection::new(RejectCode::ClockSkew, "skew 400000 ms");
        let close = CloseReason::new(CloseCode::Normal, "bye");
        let data = frame(FrameKind::Data, b"hello, cluster");
        out.splice(
            0..0,
            [
                ("preface".to_owned(), hex::encode(PREFACE)),
                ("key_id".to_owned(), hex::encode(secret.key_id().0)),
            ],
        );
        out.extend([
            (
                "reject_frame".to_owned(),
                frame(FrameKind::Reject, &reject.encode()),
            ),
            (
                "close_frame".to_owned(),
                frame(FrameKind::Close, &close.encode()),
            ),
            (
                "reject_revoked_frame".to_owned(),
                frame(
                    FrameKind::Reject,
                    &Rejection::new(RejectCode::Revoked, "node id \"node-c\" is revoked").encode(),
                ),
            ),
            (
                "close_revoked_frame".to_owned(),
                frame(
                    FrameKind::Close,
                    &CloseReason::new(CloseCode::Revoked, "revoked: node-id node-c").encode(),
                ),
            ),
            ("data_frame".to_owned(), data),
        ]);
        out.extend(frame_auth_vectors(
            &secret,
            &hello.encode(),
            &welcome.encode(),
        ));
        out.extend(rejoin_vectors(&secret, &hello.encode(), &welcome.encode()));
    }
    out
}

/// §5.8: the re-join that continues the plaintext join above; node-b sends REJOIN.
fn rejoin_vectors(secret: &SharedSecret, hello: &[u8], welcome: &[u8]) -> Vec<(String, String)> {
    use palisade_core::rejoin::{rejoin_binding, transcript};
    let t = transcript(hello, welcome);
    let rebind = rejoin_binding(b"", &t);
    let auth = Some(Auth {
        key_id: secret.key_id(),
        proof: [0; 32],
    });
    let mut rehello = JoinHello {
        version: 1,
        cluster_name: "prod".into(),
        node_id: "node-b".into(),
        timestamp_ms: 1_767_225_660_000,
        nonce: bytes_of(0x40),
        max_frame: 8 * 1024 * 1024,
        auth,
    };
    let proof = initiator_proof(secret, &rebind, &rehello);
    rehello.auth = Some(Auth {
        key_id: secret.key_id(),
        proof,
    });
    let mut rewelcome = JoinWelcome {
        version: 1,
        node_id: "node-a".into(),
        timestamp_ms: 1_767_225_660_100,
        nonce: bytes_of(0x60),
        max_frame: 8 * 1024 * 1024,
        auth,
    };
    let proof = acceptor_proof(secret, &rebind, &rehello, &rewelcome);
    rewelcome.auth = Some(Auth {
        key_id: secret.key_id(),
        proof,
    });
    let frame = |kind, body: &[u8]| {
        let mut out = bytes::BytesMut::new();
        encode(kind, body, &mut out);
        hex::encode(out)
    };
    [
        ("rejoin_transcript", hex::encode(t)),
        ("rejoin_binding", hex::encode(rebind)),
        ("rejoin_frame", frame(FrameKind::Rejoin, &rehello.encode())),
        (
            "rejoined_frame",
            frame(FrameKind::Rejoined, &rewelcome.encode()),
        ),
        ("rekey_frame", frame(FrameKind::Rekey, b"")),
        (
            "rejoin_next_transcript",
            hex::encode(transcript(&rehello.encode(), &rewelcome.encode())),
        ),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v))
    .collect()
}

/// §5.7: the link keys from the join messages, and whole authenticated frames.
fn frame_auth_vectors(
    secret: &SharedSecret,
    hello: &[u8],
    welcome: &[u8],
) -> Vec<(String, String)> {
    let keys = LinkKeys::derive(secret, hello, welcome);
    let mut initiator = FrameAuth::new(&keys, Side::Initiator);
    let mut acceptor = FrameAuth::new(&keys, Side::Acceptor);
    let sealed = |auth: &mut FrameAuth, kind: FrameKind, payload: &[u8]| {
        let tag = auth.seal(kind, payload);
        let mut out = bytes::BytesMut::new();
        palisade_core::frame::encode_header(kind, payload.len() + TAG_LEN, &mut out);
        out.extend_from_slice(payload);
        out.extend_from_slice(&tag);
        hex::encode(out)
    };
    let data_i0 = sealed(&mut initiator, FrameKind::Data, b"hello, cluster");
    let data_r0 = sealed(&mut acceptor, FrameKind::Data, b"hello, cluster");
    let close = CloseReason::new(CloseCode::Normal, "bye").encode();
    let close_r1 = sealed(&mut acceptor, FrameKind::Close, &close);
    [
        ("link_key", hex::encode(keys.link_key())),
        ("key_i", hex::encode(keys.key_i())),
        ("key_r", hex::encode(keys.key_r())),
        ("auth_data_i", data_i0),
        ("auth_data_r", data_r0),
        ("auth_close_r", close_r1),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v))
    .collect()
}

#[test]
fn the_spec_vectors_match_this_implementation() {
    let mut expected = computed(b"", "");
    expected.extend(computed(&[0xaa; 32], "_tls"));
    if std::env::var_os("PALISADE_PRINT_VECTORS").is_some() {
        for (name, value) in &expected {
            println!("{name} = {value}");
        }
    }
    let spec = spec_vectors();
    let names: Vec<&str> = spec.iter().map(|(n, _)| n.as_str()).collect();
    for (name, value) in &expected {
        let found = spec.iter().find(|(n, _)| n == name);
        assert_eq!(
            found.map(|(_, v)| v.as_str()),
            Some(value.as_str()),
            "vector `{name}` in docs/PROTOCOL.md (the spec lists {names:?})"
        );
    }
    assert_eq!(
        spec.len(),
        expected.len(),
        "the spec lists vectors this test does not check"
    );
}

#[test]
fn the_spec_vectors_decode_back_to_their_inputs() {
    let spec = spec_vectors();
    let get = |name: &str| {
        let (_, v) = spec
            .iter()
            .find(|(n, _)| n == name)
            .expect("vector present");
        hex::decode(v).unwrap()
    };
    let hello = JoinHello::decode(&get("hello_frame")[5..]).unwrap();
    assert_eq!(
        (hello.cluster_name.as_str(), hello.node_id.as_str()),
        ("prod", "node-a")
    );
    let welcome = JoinWelcome::decode(&get("welcome_frame")[5..]).unwrap();
    assert_eq!(welcome.node_id, "node-b");
    let reject = Rejection::decode(&get("reject_frame")[5..]).unwrap();
    assert_eq!(reject.code, RejectCode::ClockSkew);
}
