//! `join_messages`: arbitrary HELLO / WELCOME / REJECT / CLOSE bodies into the parsers,
//! and the parsed HELLOs and WELCOMEs into the acceptor's and initiator's verifiers.
//!
//! Parsing is strict and canonical (a parsed body re-encodes to the same bytes), refusals
//! are well-formed REJECT bodies, and the verifiers are sound: a HELLO or WELCOME is
//! accepted only if its proof is the HMAC of this exact message (and, for a WELCOME,
//! the HELLO it answers) under the shared secret; an accepted HELLO is refused when it
//! comes again (replay).
//!
//! Input: one selector byte (bit 0: the verifying node has no secret; bit 1: a TLS
//! channel binding instead of none; bits 2-3: the verifier's clock offset), then the
//! body. Every body goes through every parser. Recorded bodies verify: the verifiers
//! are the fixture nodes, at the fixture clock, with the fixture nonces.

use palisade_core::join::{
    acceptor_proof, initiator_proof, AcceptorHandshake, InitiatorHandshake, JoinHello, JoinWelcome,
    MessageError, ReplayCache, MAX_NAME_LEN, MAX_REASON_LEN, PROOF_LEN,
};
use palisade_core::preface::PROTOCOL_VERSION;
use palisade_core::tls::CHANNEL_BINDING_LEN;
use palisade_core::{CloseCode, CloseReason, Config, JoinError, RejectCode, Rejection, Side};

use super::fixtures::{self, WALL_MS};
use super::input::Input;

/// The selector byte.
pub fn selector(keyed: bool, binding: bool, clock: u8) -> u8 {
    u8::from(!keyed) | u8::from(binding) << 1 | (clock & 3) << 2
}

/// A whole input.
pub fn encode_input(selector: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![selector];
    out.extend_from_slice(body);
    out
}

/// How the verifying node is set up.
struct Verifier {
    keyed: bool,
    binding: Vec<u8>,
    now_ms: u64,
}

impl Verifier {
    fn config(&self, side: Side) -> Config {
        fixtures::config(side, self.keyed, false)
    }
}

/// The check.
pub fn check(data: &[u8]) {
    run(data);
}

/// Runs one input; returns whether the body parsed as a HELLO and was accepted, and
/// likewise as a WELCOME (`None`: it does not parse as one).
pub fn run(data: &[u8]) -> (Option<bool>, Option<bool>) {
    let mut input = Input::new(data);
    let selector = input.u8();
    let body = input.rest();
    let tolerance = fixtures::config(Side::Acceptor, true, false).clock_skew_tolerance;
    let tolerance_ms = tolerance.as_millis() as u64;
    let verifier = Verifier {
        keyed: selector & 1 == 0,
        binding: if selector & 2 == 0 {
            Vec::new()
        } else {
            vec![0xb1; CHANNEL_BINDING_LEN]
        },
        now_ms: match (selector >> 2) & 3 {
            0 => WALL_MS + 10,
            1 => WALL_MS + tolerance_ms,
            2 => WALL_MS + tolerance_ms + 1,
            _ => WALL_MS - tolerance_ms - 1,
        },
    };
    let verdicts = (
        hello(body, &verifier, tolerance_ms),
        welcome(body, &verifier),
    );
    reject(body);
    close(body);
    verdicts
}

/// The parsed message, or `None` after checking the error can be shown.
fn parsed<T>(result: Result<T, MessageError>) -> Option<T> {
    result.map_err(|e| assert!(!e.to_string().is_empty())).ok()
}

fn name_ok(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN
}

fn refusal_ok(rejection: &Rejection) {
    assert!(rejection.message.len() <= MAX_REASON_LEN);
    // What travels is the code and the message; the local detail never does.
    let sent = Rejection::decode(&rejection.encode());
    assert_eq!(
        sent.as_ref().map(|r| (r.code, &r.message, &r.local_detail)),
        Ok((rejection.code, &rejection.message, &None))
    );
    let _ = JoinError::RefusedPeer(rejection.clone()).to_string();
}

fn hello(body: &[u8], v: &Verifier, tolerance_ms: u64) -> Option<bool> {
    let hello = parsed(JoinHello::decode(body))?;
    assert_eq!(&hello.encode()[..], body, "HELLO is not canonical");
    let signed = hello.signed_part();
    let proof_len = if hello.auth.is_some() { PROOF_LEN } else { 0 };
    assert_eq!(&body[..body.len() - proof_len], &signed[..]);
    assert!(name_ok(&hello.cluster_name) && name_ok(&hello.node_id));

    let config = v.config(Side::Acceptor);
    let replay = ReplayCache::new(4, 4);
    let answer = AcceptorHandshake::new(fixtures::first_nonce(Side::Acceptor))
        .read_hello(&config, &replay, &hello, &v.binding, v.now_ms);
    let (welcome, peer) = match answer {
        Ok(ok) => ok,
        Err(rejection) => {
            assert!(
                replay.is_empty(),
                "a refused HELLO entered the replay cache"
            );
            refusal_ok(&rejection);
            return Some(false);
        }
    };
    assert_eq!(hello.version, PROTOCOL_VERSION);
    assert_eq!(hello.cluster_name, config.cluster_name);
    assert!(
        hello.timestamp_ms.abs_diff(v.now_ms) <= tolerance_ms,
        "skew"
    );
    assert_eq!(
        (peer.node_id.as_str(), peer.max_frame),
        (hello.node_id.as_str(), hello.max_frame as usize)
    );
    assert_eq!(
        JoinWelcome::decode(&welcome.encode()).as_ref(),
        Ok(&welcome)
    );
    assert_eq!(welcome.node_id, config.node_id);
    if v.keyed {
        let secret = fixtures::secret();
        let auth = hello.auth.expect("accepted a HELLO without a proof");
        assert_eq!(auth.key_id, secret.key_id());
        assert_eq!(
            auth.proof,
            initiator_proof(&secret, &v.binding, &hello),
            "accepted a HELLO whose proof is not the HMAC of it"
        );
        assert_eq!(peer.key_id, Some(secret.key_id()));
        let theirs = welcome.auth.map(|a| a.proof);
        let expected = acceptor_proof(&secret, &v.binding, &hello, &welcome);
        assert_eq!(theirs, Some(expected), "WELCOME proof");
        assert_eq!(replay.len(), 1);
        let again = AcceptorHandshake::new([0x77; 32])
            .read_hello(&config, &replay, &hello, &v.binding, v.now_ms);
        assert_eq!(again.map_err(|r| r.code).err(), Some(RejectCode::Replay));
    } else {
        assert!(hello.auth.is_none() && welcome.auth.is_none() && peer.key_id.is_none());
        assert!(replay.is_empty());
    }
    Some(true)
}

fn welcome(body: &[u8], v: &Verifier) -> Option<bool> {
    let welcome = parsed(JoinWelcome::decode(body))?;
    assert_eq!(&welcome.encode()[..], body, "WELCOME is not canonical");
    assert!(name_ok(&welcome.node_id));
    let config = v.config(Side::Initiator);
    // The initiator as the corpus's recorded one: its HELLO is the one recorded.
    let init = InitiatorHandshake::new(
        &config,
        fixtures::first_nonce(Side::Initiator),
        WALL_MS,
        &v.binding,
    );
    let hello = init.hello().clone();
    let peer = match init.read_welcome(&config, &welcome, &v.binding, v.now_ms) {
        Ok(peer) => peer,
        Err(rejection) => {
            refusal_ok(&rejection);
            return Some(false);
        }
    };
    assert_eq!(welcome.version, PROTOCOL_VERSION);
    assert_eq!(
        (peer.node_id.as_str(), peer.max_frame),
        (welcome.node_id.as_str(), welcome.max_frame as usize)
    );
    if v.keyed {
        let secret = fixtures::secret();
        let auth = welcome.auth.expect("accepted a WELCOME without a proof");
        assert_eq!(
            auth.proof,
            acceptor_proof(&secret, &v.binding, &hello, &welcome),
            "accepted a WELCOME whose proof is not the HMAC of it and the HELLO"
        );
        assert_eq!(peer.key_id, Some(secret.key_id()));
    } else {
        assert!(welcome.auth.is_none() && peer.key_id.is_none());
    }
    Some(true)
}

fn reject(body: &[u8]) {
    let Ok(rejection) = Rejection::decode(body) else {
        return;
    };
    assert_eq!(&rejection.encode()[..], body, "REJECT is not canonical");
    assert_eq!(
        RejectCode::from_u16(rejection.code.to_u16()),
        rejection.code
    );
    let _ = (rejection.to_string(), rejection.code.advice());
    let _ = JoinError::RefusedByPeer(rejection).to_string();
}

fn close(body: &[u8]) {
    let Ok(reason) = CloseReason::decode(body) else {
        return;
    };
    assert_eq!(&reason.encode()[..], body, "CLOSE is not canonical");
    assert_eq!(CloseCode::from_u16(reason.code.to_u16()), reason.code);
    assert!(reason.message.len() <= MAX_REASON_LEN);
    let _ = reason.to_string();
}
