//! What one connection reported and what it wrote, checked against each other and
//! against docs/PROTOCOL.md. Shared by the connection targets and the pair target.

use bytes::{Bytes, BytesMut};
use palisade_core::frame::{FrameKind, HEADER_LEN, MAX_CONTROL_PAYLOAD};
use palisade_core::frame_auth::TAG_LEN;
use palisade_core::join::{JoinHello, JoinWelcome};
use palisade_core::preface::{PREFACE, PREFACE_LEN};
use palisade_core::{
    CloseCause, CloseCode, CloseReason, Connection, ConnectionError, Event, FrameDecoder,
    FrameError, JoinError, PeerInfo, RejectCode, Rejection, SendError, Side,
};

use super::fixtures;

/// Everything one connection reported through `poll_event`, checked as it arrives:
/// at most one `Joined`, before any `Frame`; at most one `Closed`, and nothing after it.
#[derive(Debug)]
pub struct Report {
    /// Whether the connection holds the shared secret.
    pub keyed: bool,
    /// A permissive acceptor (PROTOCOL.md §8.1): a peer may join without the secret
    /// (TLS on: also over plaintext), and the join says so in `below_strict`.
    pub permissive: bool,
    /// The `Joined` event's peer.
    pub joined: Option<PeerInfo>,
    /// The application frames, in order.
    pub frames: Vec<Bytes>,
    /// The `Closed` event's cause.
    pub closed: Option<CloseCause>,
}

impl Report {
    /// Nothing reported yet, by a connection with or without the shared secret.
    pub fn new(keyed: bool) -> Self {
        Self {
            keyed,
            permissive: false,
            joined: None,
            frames: Vec::new(),
            closed: None,
        }
    }

    /// Records one event.
    pub fn record(&mut self, who: &str, event: Event) {
        assert!(self.closed.is_none(), "{who}: event {event:?} after Closed");
        match event {
            Event::Joined(peer) => {
                assert!(self.joined.is_none(), "{who}: Joined twice");
                assert!(self.frames.is_empty(), "{who}: Joined after a frame");
                // With the secret on, a join means the peer proved it holds it, unless
                // a permissive acceptor took it without (and says so).
                let key_id = self.keyed.then(|| fixtures::secret().key_id());
                if self.permissive && peer.key_id.is_none() {
                    assert_eq!(
                        peer.below_strict.without_secret, self.keyed,
                        "{who}: a join without the secret not reported"
                    );
                } else {
                    assert_eq!(peer.key_id, key_id, "{who}: joined with the wrong proof");
                    assert!(
                        !peer.below_strict.without_secret,
                        "{who}: {}",
                        peer.below_strict
                    );
                }
                // Only a permissive acceptor joins over plaintext with TLS on, and then
                // it says so.
                if self.permissive {
                    assert_eq!(peer.below_strict.plaintext, peer.tls.is_none(), "{who}");
                } else {
                    assert!(!peer.below_strict.plaintext, "{who}");
                }
                self.joined = Some(peer);
            }
            Event::Frame(payload) => {
                assert!(self.joined.is_some(), "{who}: a frame before Joined");
                self.frames.push(payload);
            }
            // Nobody here changes settings, and a REJOIN needs a proof made with the
            // secret: bytes alone can never complete one.
            Event::Rejoined(peer) => panic!("{who}: a re-join without new settings: {peer:?}"),
            Event::Closed(cause) => {
                // Every cause can be shown to an operator.
                let _ = cause.to_string();
                if let CloseCause::Error(e) = &cause {
                    let mut source: Option<&dyn std::error::Error> = Some(e);
                    while let Some(s) = source {
                        let _ = s.to_string();
                        source = s.source();
                    }
                }
                self.closed = Some(cause);
            }
        }
    }
}

/// Whether a joined link's frames carry tags (PROTOCOL.md §5.7): it is plaintext and
/// joined with the secret.
pub fn authenticated(peer: &PeerInfo) -> bool {
    peer.tls.is_none() && peer.key_id.is_some()
}

/// The connection's state agrees with what it reported, and is one the protocol has.
pub fn check_state(who: &str, conn: &Connection, report: &Report) {
    if conn.is_closed() {
        let cause = conn.close_cause();
        assert!(cause.is_some(), "{who}: closed without a cause");
        assert_eq!(
            report.closed.as_ref(),
            cause,
            "{who}: Closed event and close_cause differ"
        );
        assert_eq!(conn.poll_timeout(), None, "{who}: a timer after the close");
        assert_eq!(
            conn.send_capacity(),
            0,
            "{who}: send capacity after the close"
        );
    } else {
        assert!(
            report.closed.is_none(),
            "{who}: Closed reported, not closed"
        );
        assert_eq!(conn.close_cause(), None, "{who}: a cause while open");
        assert_eq!(
            conn.is_joined(),
            report.joined.is_some(),
            "{who}: is_joined disagrees with the events"
        );
        if conn.is_joined() {
            // After the join the only timer is the end of the peer's certificate
            // (close_on_peer_expiry); nobody here re-joins, so no re-join deadline.
            let expiry =
                conn.config().close_on_peer_expiry && conn.peer().is_some_and(|p| p.tls.is_some());
            assert_eq!(
                conn.poll_timeout().is_some(),
                expiry,
                "{who}: a joined link's timer is exactly its peer certificate's end"
            );
        } else {
            assert!(
                conn.poll_timeout().is_some(),
                "{who}: the handshake timer runs until the join"
            );
        }
        assert!(!conn.is_drained(), "{who}: drained while open");
    }
    if report.joined.is_some() {
        assert_eq!(conn.peer(), report.joined.as_ref(), "{who}: peer() differs");
    }
}

/// Calls `send` and checks its answer against the state the connection was in.
pub fn send(who: &str, conn: &mut Connection, payload: Bytes) -> bool {
    let (joined, closed) = (conn.is_joined(), conn.is_closed());
    let queued = conn.send_buffered();
    let limit = conn.config().send_buffer_limit;
    let peer_max = conn.peer().map(|p| p.max_frame);
    let len = payload.len();
    // Plaintext with the secret: every frame after the join carries a tag.
    let tag = if conn.peer().is_some_and(authenticated) && joined {
        TAG_LEN
    } else {
        0
    };
    let result = conn.send(payload);
    match &result {
        Ok(()) => {
            assert!(joined, "{who}: send accepted before the join");
            assert_eq!(conn.send_buffered(), queued + HEADER_LEN + len + tag);
        }
        Err(SendError::Closed) => assert!(closed, "{who}: send refused as closed"),
        Err(SendError::NotJoined) => assert!(!joined && !closed, "{who}: NotJoined"),
        Err(SendError::TooLarge { len: l, max }) => {
            assert_eq!((Some(*max), *l), (peer_max, len), "{who}: TooLarge");
            assert!(len > *max, "{who}: TooLarge for a frame that fits");
        }
        Err(SendError::Full(back)) => {
            assert_eq!(back.len(), len, "{who}: Full handed back another frame");
            assert!(queued > 0, "{who}: an empty buffer refused a frame");
            assert!(
                queued + HEADER_LEN + len + tag > limit,
                "{who}: Full below the limit"
            );
        }
        Err(e) => panic!("{who}: unexpected send error {e}"),
    }
    if let Err(e) = &result {
        let _ = e.to_string();
    }
    result.is_ok()
}

/// One frame a connection wrote, and where it ends in its stream.
#[derive(Debug, Clone)]
pub struct WireFrame {
    /// The frame's kind.
    pub kind: FrameKind,
    /// Its body.
    pub payload: Bytes,
    /// Offset just past its last byte, counted from the start of the stream.
    pub end: usize,
}

/// Parses a plaintext connection's whole output: the preface, then whole frames whose
/// control bodies parse (a connection only ever writes well-formed frames).
///
/// `tagged`: the side joined with the secret (PROTOCOL.md §5.7), so every frame after its
/// own join message (HELLO for the initiator, WELCOME for the acceptor) ends in a tag,
/// which is checked for length and cut off the returned payload.
pub fn parse_output(who: &str, side: Side, out: &[u8], tagged: bool) -> Vec<WireFrame> {
    let join_kind = match side {
        Side::Initiator => FrameKind::Hello,
        Side::Acceptor => FrameKind::Welcome,
    };
    let mut after_join = false;
    assert!(
        out.starts_with(&PREFACE),
        "{who}: output does not open with the preface"
    );
    let mut buf = BytesMut::from(&out[PREFACE_LEN..]);
    // A DATA frame is limited by the peer's max_frame, which the peer announced.
    let mut decoder = FrameDecoder::new(u32::MAX as usize);
    let mut frames = Vec::new();
    loop {
        let end = out.len() - buf.len();
        match decoder.decode(&mut buf) {
            Ok(Some(mut frame)) => {
                let end = end + HEADER_LEN + frame.payload.len();
                if tagged && after_join {
                    let len = frame.payload.len().checked_sub(TAG_LEN);
                    let Some(len) = len else {
                        panic!("{who}: wrote a {} too short for its tag", frame.kind)
                    };
                    frame.payload.truncate(len);
                }
                after_join |= frame.kind == join_kind;
                let body = &frame.payload;
                let parsed = match frame.kind {
                    FrameKind::Hello => JoinHello::decode(body).map(|_| ()),
                    FrameKind::Welcome => JoinWelcome::decode(body).map(|_| ()),
                    FrameKind::Reject => Rejection::decode(body).map(|_| ()),
                    FrameKind::Close => CloseReason::decode(body).map(|_| ()),
                    _ => Ok(()),
                };
                assert_eq!(parsed, Ok(()), "{who}: wrote a malformed {}", frame.kind);
                frames.push(WireFrame {
                    kind: frame.kind,
                    payload: frame.payload,
                    end,
                });
            }
            Ok(None) => break,
            Err(e) => panic!("{who}: wrote an invalid frame: {e}"),
        }
    }
    assert!(buf.is_empty(), "{who}: output ends inside a frame");
    frames
}

/// Every frame of a plaintext output, tags left on (no checks).
fn raw_frames(out: &[u8]) -> Vec<(FrameKind, Bytes)> {
    let mut buf = BytesMut::from(out.get(PREFACE_LEN..).unwrap_or_default());
    let mut decoder = FrameDecoder::new(u32::MAX as usize);
    let mut frames = Vec::new();
    while let Ok(Some(f)) = decoder.decode(&mut buf) {
        frames.push((f.kind, f.payload));
    }
    frames
}

/// Plaintext with the secret (PROTOCOL.md §5.7): every frame a joined side wrote after its
/// join message carries the tag for its place in the sequence, under the key derived
/// from the HELLO and WELCOME as written, checked as its peer would check it.
pub fn check_tags(outputs: [&[u8]; 2], reports: [&Report; 2]) {
    use palisade_core::frame_auth::{FrameAuth, LinkKeys, Opened};
    let frames = outputs.map(raw_frames);
    let find = |frames: &[(FrameKind, Bytes)], kind| {
        frames
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, b)| b.clone())
    };
    let (Some(hello), Some(welcome)) = (
        find(&frames[0], FrameKind::Hello),
        find(&frames[1], FrameKind::Welcome),
    ) else {
        return;
    };
    let keys = LinkKeys::derive(&fixtures::secret(), &hello, &welcome);
    let sides = [
        (Side::Initiator, FrameKind::Hello, Side::Acceptor),
        (Side::Acceptor, FrameKind::Welcome, Side::Initiator),
    ];
    for (i, (side, join, peer)) in sides.into_iter().enumerate() {
        if reports[i].joined.is_none() {
            continue;
        }
        let mut checker = FrameAuth::new(&keys, peer);
        let after_join = frames[i].iter().skip_while(|(k, _)| *k != join).skip(1);
        for (n, (kind, body)) in after_join.enumerate() {
            assert!(
                matches!(checker.open(*kind, body), Ok(Opened::Authenticated { .. })),
                "{side:?}: frame {n} after the join ({kind}) does not carry its tag"
            );
        }
    }
}

/// What the last frame must be for a side that ended with `cause`, per PROTOCOL.md §4:
/// `Some(Some((kind, code)))` a REJECT or CLOSE with that code, `Some(None)` nothing
/// (the peer already left or refused), `None` not pinned down.
fn owed(cause: &CloseCause, joined: bool) -> Option<Option<(FrameKind, u16)>> {
    let close = |code: CloseCode| Some(Some((FrameKind::Close, code.to_u16())));
    let reject = |code: RejectCode| Some(Some((FrameKind::Reject, code.to_u16())));
    match cause {
        CloseCause::Local(r) => Some(Some((FrameKind::Close, r.code.to_u16()))),
        CloseCause::Peer(_) => Some(None),
        CloseCause::Error(e) => match e {
            ConnectionError::Join(JoinError::RefusedPeer(r)) => reject(r.code),
            ConnectionError::Join(JoinError::RefusedByPeer(_))
            | ConnectionError::UnexpectedEof { .. }
            | ConnectionError::Tls(_) => Some(None),
            ConnectionError::Message(_) | ConnectionError::UnexpectedFrame { .. } if !joined => {
                reject(RejectCode::Malformed)
            }
            ConnectionError::Message(_)
            | ConnectionError::UnexpectedFrame { .. }
            | ConnectionError::Preface(_) => close(CloseCode::ProtocolError),
            ConnectionError::Frame(FrameError::TooLarge {
                kind: FrameKind::Data,
                ..
            }) => close(CloseCode::FrameTooLarge),
            ConnectionError::Frame(_) => close(CloseCode::ProtocolError),
            ConnectionError::HandshakeTimeout { .. }
            | ConnectionError::FirstBytesTimeout { .. } => close(CloseCode::HandshakeTimeout),
            ConnectionError::Random(_) => close(CloseCode::InternalError),
            ConnectionError::FrameAuth(_) => close(CloseCode::ProtocolError),
            _ => None,
        },
    }
}

/// A plaintext side's whole output agrees with its role, what it reported, and the
/// frames the application queued (`sent`, in order). Returns the parsed frames.
pub fn check_output(
    who: &str,
    side: Side,
    out: &[u8],
    report: &Report,
    sent: &[Bytes],
) -> Vec<WireFrame> {
    let tagged = report.joined.as_ref().is_some_and(authenticated);
    let frames = parse_output(who, side, out, tagged);
    let kinds: Vec<FrameKind> = frames.iter().map(|f| f.kind).collect();
    let count = |k: FrameKind| kinds.iter().filter(|&&x| x == k).count();
    let joined = report.joined.is_some();
    match side {
        Side::Initiator => {
            assert_eq!(kinds.first(), Some(&FrameKind::Hello), "{who}: HELLO first");
            assert_eq!(count(FrameKind::Hello), 1, "{who}: one HELLO");
            assert_eq!(count(FrameKind::Welcome), 0, "{who}: wrote a WELCOME");
        }
        Side::Acceptor => {
            assert_eq!(count(FrameKind::Hello), 0, "{who}: wrote a HELLO");
            assert_eq!(
                kinds.first() == Some(&FrameKind::Welcome),
                joined,
                "{who}: a WELCOME first exactly when joined"
            );
            assert!(count(FrameKind::Welcome) <= 1, "{who}: two WELCOMEs");
        }
    }
    let data: Vec<&Bytes> = frames
        .iter()
        .filter(|f| f.kind == FrameKind::Data)
        .map(|f| &f.payload)
        .collect();
    assert!(
        data.iter().copied().eq(sent.iter()),
        "{who}: the DATA written is not the frames queued ({} written, {} queued)",
        data.len(),
        sent.len()
    );
    let terminal: Vec<&WireFrame> = frames
        .iter()
        .filter(|f| matches!(f.kind, FrameKind::Reject | FrameKind::Close))
        .collect();
    assert!(terminal.len() <= 1, "{who}: more than one REJECT/CLOSE");
    if let Some(t) = terminal.first() {
        assert_eq!(
            frames.last().map(|f| f.end),
            Some(t.end),
            "{who}: wrote after its REJECT/CLOSE"
        );
        assert!(t.payload.len() <= MAX_CONTROL_PAYLOAD);
    }
    let last = terminal.first().map(|t| {
        let code = match t.kind {
            FrameKind::Reject => Rejection::decode(&t.payload).map(|r| r.code.to_u16()),
            _ => CloseReason::decode(&t.payload).map(|r| r.code.to_u16()),
        };
        (t.kind, code.unwrap_or(u16::MAX))
    });
    match &report.closed {
        None => assert_eq!(last, None, "{who}: a REJECT/CLOSE while open"),
        Some(cause) => {
            if let Some(expected) = owed(cause, joined) {
                assert_eq!(last, expected, "{who}: wrong last frame for {cause:?}");
            }
        }
    }
    frames
}
