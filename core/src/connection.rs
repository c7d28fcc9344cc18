//! One link's state machine, from the first byte to the close.
//!
//! The shape is quinn-proto's. Inputs: [`Connection::handle_input`],
//! [`Connection::handle_timeout`], [`Connection::handle_eof`]. Commands:
//! [`Connection::send`], [`Connection::close`]. Outputs, drained after every input or
//! command, in this order:
//!
//! 1. [`Connection::poll_transmit`] until `None`: bytes to write to the socket;
//! 2. [`Connection::poll_timeout`]: when to call `handle_timeout` next;
//! 3. [`Connection::poll_event`] until `None`: joined, frames, closed.
//!
//! Receive memory is bounded: `handle_input` takes only as many bytes as fit under
//! `recv_buffer_limit` (counting frames delivered as events but not yet polled) plus
//! whatever completes the frame in progress, and says how many it took. The caller keeps
//! the rest and offers it again after draining events.

mod trust;

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};

use crate::close::{CloseCode, CloseReason};
use crate::config::{Config, Side};
use crate::error::ConnectionError;
use crate::events::EventQueue;
pub use crate::events::{CloseCause, Event};
use crate::frame::{Frame, FrameDecoder, FrameKind, HEADER_LEN};
use crate::frame_auth::{FrameAuth, LinkKeys, Opened, TAG_LEN};
use crate::frame_run::FrameRun;
use crate::join::{
    AcceptorHandshake, InitiatorHandshake, JoinError, JoinHello, JoinWelcome, OwnNonce, PeerInfo,
    RejectCode, Rejection, ReplayCache, NONCE_LEN,
};
use crate::mode::BelowStrict;
use crate::preface::{self, PREFACE, PREFACE_LEN};
use crate::random::RandomSource;
use crate::send_queue::SendQueue;
use crate::time::WallClock;
use crate::tls::config::TlsContext;
use crate::transport::Transport;
use trust::Rejoin;
pub use trust::{rejoin_binding, transcript};

/// `send` could not queue a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The send buffer is full; the frame is handed back. Drain `poll_transmit` (write
    /// to the socket) and try again.
    Full(Bytes),
    /// The frame is larger than the peer's max_frame.
    TooLarge {
        /// The payload's length.
        len: usize,
        /// The peer's limit.
        max: usize,
    },
    /// The link has not joined yet.
    NotJoined,
    /// The link is closed.
    Closed,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full(_) => f.write_str("the send buffer is full; wait until queued frames are written"),
            Self::TooLarge { len, max } => write!(
                f,
                "a {len}-byte frame exceeds the peer's max_frame of {max} bytes; split it or raise max_frame on the peer"
            ),
            Self::NotJoined => f.write_str("the link has not joined yet"),
            Self::Closed => f.write_str("the link is closed"),
        }
    }
}

impl std::error::Error for SendError {}

/// Whom a new connection is with, as the endpoint knows it.
#[derive(Debug)]
pub(crate) enum Peer {
    /// This node dialed, expecting the node with this node id when one is given.
    Dialed(Option<String>),
    /// This node accepted a link from this address, when the caller gave it.
    Accepted(Option<std::net::IpAddr>),
}

#[derive(Debug)]
enum State {
    /// Initiator waiting for the transport to be ready before it sends HELLO.
    InitiatorStarting {
        nonce: [u8; NONCE_LEN],
        expected_peer: Option<String>,
        /// Keeps the nonce known to this endpoint's acceptors until the join ends, so
        /// the HELLO reflected back to this node is refused.
        own: OwnNonce,
    },
    /// Initiator that sent HELLO and waits for WELCOME or REJECT.
    InitiatorSentHello(InitiatorHandshake, OwnNonce),
    /// Acceptor waiting for HELLO.
    AcceptorWaiting(AcceptorHandshake),
    /// Joined: application frames flow.
    Joined,
    /// Over. Only the frames owed to the peer remain to be transmitted.
    Closed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            Self::InitiatorStarting { .. } => "before the HELLO",
            Self::InitiatorSentHello(..) => "while waiting for WELCOME",
            Self::AcceptorWaiting(_) => "while waiting for HELLO",
            Self::Joined => "after the join",
            Self::Closed => "after the close",
        }
    }
}

/// One link, initiator or acceptor. Made by [`crate::Endpoint`].
#[derive(Debug)]
pub struct Connection {
    side: Side,
    config: Arc<Config>,
    replay: Arc<ReplayCache>,
    clock: WallClock,
    handshake_deadline: Option<Instant>,
    /// Acceptor only: when a peer that has sent nothing at all is given up on (cleared
    /// by its first byte). A silent socket then holds a listener's slot for
    /// `first_bytes_timeout`, not the whole `handshake_timeout`.
    first_bytes_deadline: Option<Instant>,
    transport: Transport,
    decoder: FrameDecoder,
    /// Frame-stream bytes received and not yet decoded.
    recv: BytesMut,
    preface_received: bool,
    send_queue: SendQueue,
    state: State,
    events: EventQueue,
    peer: Option<PeerInfo>,
    close_cause: Option<CloseCause>,
    /// Plaintext with a secret, once joined: tags every frame sent and checks every frame
    /// received (docs/PROTOCOL.md §5.7).
    frame_auth: Option<Box<FrameAuth>>,
    /// Nonces for re-joins.
    random: Arc<dyn RandomSource>,
    /// The TLS settings new settings brought (`update_settings`), for re-deciding the
    /// peer's certificate; `None` until then (the session's own decided it).
    tls_context: Option<Arc<TlsContext>>,
    /// Settings that arrived during the handshake: taken, and the peer decided under
    /// them, once joined.
    pending_settings: Option<(Arc<Config>, Option<Arc<TlsContext>>)>,
    /// SHA-256 of the last (re)join's HELLO and WELCOME: what a re-join is bound to.
    transcript: [u8; 32],
    /// A re-join in progress.
    rejoin: Rejoin,
    /// When the peer's certificate ends (`close_on_peer_expiry`).
    peer_expiry: Option<Instant>,
}

impl Connection {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        peer: Peer,
        config: Arc<Config>,
        replay: Arc<ReplayCache>,
        random: Arc<dyn RandomSource>,
        nonce: [u8; NONCE_LEN],
        now: Instant,
        unix_ms: u64,
        transport: Transport,
    ) -> Self {
        let (side, state) = match peer {
            Peer::Dialed(expected_peer) => (
                Side::Initiator,
                State::InitiatorStarting {
                    nonce,
                    expected_peer,
                    own: replay.register_own(nonce),
                },
            ),
            Peer::Accepted(source) => (
                Side::Acceptor,
                State::AcceptorWaiting(AcceptorHandshake::new(nonce).from_source(source)),
            ),
        };
        let mut conn = Self {
            side,
            decoder: FrameDecoder::new(config.max_frame),
            handshake_deadline: now.checked_add(config.handshake_timeout),
            first_bytes_deadline: match side {
                Side::Acceptor => now.checked_add(config.first_bytes_timeout),
                Side::Initiator => None,
            },
            config,
            replay,
            clock: WallClock::new(now, unix_ms),
            transport,
            recv: BytesMut::new(),
            preface_received: false,
            send_queue: SendQueue::default(),
            state,
            events: EventQueue::default(),
            peer: None,
            close_cause: None,
            frame_auth: None,
            random,
            tls_context: None,
            pending_settings: None,
            transcript: [0; 32],
            rejoin: Rejoin::Idle,
            peer_expiry: None,
        };
        conn.send_queue.push_raw(&PREFACE);
        conn.advance_handshake(now);
        conn
    }

    // ----- getters -----

    /// Which end of the link this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// Whether the join has completed and the link is not closed.
    pub fn is_joined(&self) -> bool {
        matches!(self.state, State::Joined)
    }

    /// Whether the link is over (frames owed to the peer may still be queued).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Whether the link is over and everything owed to the peer has been handed to
    /// `poll_transmit`'s caller: the socket can be shut down.
    pub fn is_drained(&self) -> bool {
        self.is_closed() && self.send_queue.is_empty() && !self.transport.has_pending_output(true)
    }

    /// What the join revealed about the peer.
    pub fn peer(&self) -> Option<&PeerInfo> {
        self.peer.as_ref()
    }

    /// Why the link ended, once it has.
    pub fn close_cause(&self) -> Option<&CloseCause> {
        self.close_cause.as_ref()
    }

    /// Frame-stream bytes queued for sending and not yet handed to `poll_transmit`.
    pub fn send_buffered(&self) -> usize {
        self.send_queue.len()
    }

    /// The settings this connection runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ----- inputs -----

    /// Takes bytes read from the socket and returns how many it consumed. Fewer than
    /// offered means the receive buffer is full, and then an event is always waiting:
    /// drain `poll_event`, then offer the rest again. After the link is closed, input is
    /// discarded (all of it is consumed).
    pub fn handle_input(&mut self, input: &[u8], now: Instant) -> usize {
        if self.is_closed() {
            return input.len();
        }
        if !input.is_empty() {
            self.first_bytes_deadline = None;
        }
        let unix_ms = self.clock.unix_ms(now);
        let mut consumed = 0;
        let mut peer_closed = false;
        // Until the input is gone, the window is shut or an event waits: what was just
        // taken can open more room (a frame header that arrived makes the rest of its
        // frame welcome), so one pass could stop short with no event to poll, and a
        // caller that waits for an event before offering the rest again would wait for
        // ever. Not past an event, though: each pass may take a little more than its
        // room (a whole TLS record), and that may hold the next frame's header, whose
        // frame is welcome in turn; stopping at the first event keeps what is held to
        // the window and one frame.
        loop {
            let rest = input.get(consumed..).unwrap_or_default();
            let room = self.recv_room();
            let outcome = match self.transport.read(rest, &mut self.recv, room, unix_ms) {
                Ok(outcome) => outcome,
                Err(e) => {
                    self.fail(e);
                    return input.len();
                }
            };
            consumed += outcome.consumed;
            peer_closed |= outcome.peer_closed;
            self.process(now);
            // With TLS, the handshake may have just completed: the initiator's HELLO
            // goes out in the same flight as its Finished.
            self.advance_handshake(now);
            if outcome.consumed == 0
                || consumed >= input.len()
                || peer_closed
                || self.is_closed()
                || !self.events.is_empty()
            {
                break;
            }
        }
        if self.recv.is_empty() {
            // Frames split off the buffer still share its allocation; letting go of the
            // empty view frees it as soon as the application drops them, rather than an
            // idle link holding its largest read for good.
            self.recv = BytesMut::new();
        }
        if peer_closed {
            // TLS close_notify: the peer will send nothing more.
            self.handle_eof();
        }
        consumed
    }

    /// The deadline returned by `poll_timeout` may have passed. Calling it early, or more
    /// than once, does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_joined() {
            return self.handle_joined_timeout(now);
        }
        // The join deadline first: when both have passed (first_bytes_timeout at or
        // above handshake_timeout), that is the one that applies.
        if let Some(deadline) = self.handshake_deadline {
            if now >= deadline && !self.is_joined() && !self.is_closed() {
                self.fail(ConnectionError::HandshakeTimeout {
                    after: self.config.handshake_timeout,
                });
            }
        }
        if let Some(deadline) = self.first_bytes_deadline {
            if now >= deadline && !self.is_closed() {
                self.fail(ConnectionError::FirstBytesTimeout {
                    after: self.config.first_bytes_timeout,
                });
            }
        }
    }

    /// The peer closed its sending side (read returned 0).
    pub fn handle_eof(&mut self) {
        if self.is_closed() {
            return;
        }
        let err = match self.decoder.truncation(&self.recv) {
            Some(e) if self.preface_received => ConnectionError::Frame(e),
            _ => ConnectionError::UnexpectedEof {
                joined: self.is_joined(),
            },
        };
        self.fail(err);
    }

    // ----- commands -----

    /// Queues an application frame. Refused when not joined, closed, larger than the
    /// peer's max_frame, or when the send buffer is full (the frame comes back in
    /// [`SendError::Full`]). A frame always fits into an empty buffer.
    pub fn send(&mut self, payload: Bytes) -> Result<(), SendError> {
        match self.state {
            State::Joined => {}
            State::Closed => return Err(SendError::Closed),
            _ => return Err(SendError::NotJoined),
        }
        let max = self.peer.as_ref().map_or(0, |p| p.max_frame);
        if payload.len() > max {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let queued = self.send_queue.len();
        let tag_len = self.frame_auth.as_ref().map_or(0, |_| TAG_LEN);
        if queued > 0
            && queued + HEADER_LEN + payload.len() + tag_len > self.config.send_buffer_limit
        {
            return Err(SendError::Full(payload));
        }
        match self.frame_auth.as_deref_mut() {
            Some(auth) => {
                let tag = auth.seal(FrameKind::Data, &payload);
                self.send_queue.push_tagged(FrameKind::Data, payload, &tag);
            }
            None => self.send_queue.push(FrameKind::Data, payload),
        }
        Ok(())
    }

    /// Queues frames from the front of `frames`, as many as fit, each as its own frame
    /// (the peer receives exactly these payloads, in order): the batch form of
    /// [`Self::send`], which checks the link once per call and borrows the payloads, so
    /// a small frame costs a header write and a copy next to it. Returns how many were
    /// queued; fewer than `frames.len()` means the next one did not fit (drain
    /// `poll_transmit` and call again with the rest). When not even the first frame can
    /// be queued, its error is returned as `send` would return it.
    pub fn send_frames(&mut self, frames: &[Bytes]) -> Result<usize, SendError> {
        match self.state {
            State::Joined => {}
            State::Closed => return Err(SendError::Closed),
            _ => return Err(SendError::NotJoined),
        }
        if self.frame_auth.is_some() {
            // Authenticated links seal each frame in turn; the single-frame path does that.
            return self.send_each(frames);
        }
        let max = self.peer.as_ref().map_or(0, |p| p.max_frame);
        let queued =
            self.send_queue
                .push_many(FrameKind::Data, frames, max, self.config.send_buffer_limit);
        if queued > 0 {
            return Ok(queued);
        }
        match frames.first() {
            Some(first) if first.len() > max => Err(SendError::TooLarge {
                len: first.len(),
                max,
            }),
            Some(first) => Err(SendError::Full(first.clone())),
            None => Ok(0),
        }
    }

    /// [`Self::send_frames`] one frame at a time.
    fn send_each(&mut self, frames: &[Bytes]) -> Result<usize, SendError> {
        for (i, frame) in frames.iter().enumerate() {
            match self.send(frame.clone()) {
                Ok(()) => {}
                Err(e) if i == 0 => return Err(e),
                Err(_) => return Ok(i),
            }
        }
        Ok(frames.len())
    }

    /// Bytes `send` accepts right now before it reports the buffer full (header included;
    /// on an authenticated link the 16-byte tag each frame carries is already deducted).
    pub fn send_capacity(&self) -> usize {
        if !self.is_joined() {
            return 0;
        }
        let tag_len = self.frame_auth.as_ref().map_or(0, |_| TAG_LEN);
        self.config
            .send_buffer_limit
            .saturating_sub(self.send_queue.len() + tag_len)
    }

    /// Ends the link: frames already queued are still sent, followed by a CLOSE with
    /// `reason`. Does nothing if the link is already closed.
    pub fn close(&mut self, reason: CloseReason) {
        if self.is_closed() {
            return;
        }
        self.queue_control(FrameKind::Close, &reason.encode());
        self.finish(CloseCause::Local(reason));
    }

    // ----- outputs -----

    /// The next bytes to write to the socket.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        let closing = self.is_closed();
        self.transport.poll_transmit(&mut self.send_queue, closing)
    }

    /// When `handle_timeout` must be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_joined() {
            self.joined_timeout()
        } else if self.is_closed() {
            None
        } else {
            match (self.first_bytes_deadline, self.handshake_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    /// Moves the received frames that come before the next other event into `out`, in
    /// order, each its own payload (not copied out of the receive buffer), and returns
    /// how many: the batch form of taking `Event::Frame`s from [`Self::poll_event`],
    /// without an event per frame. Any other event (closed) stays for `poll_event`, so
    /// drain both: `poll_frames` until it returns 0, then `poll_event`.
    pub fn poll_frames(&mut self, out: &mut Vec<Bytes>) -> usize {
        self.events.pop_frames(out)
    }

    /// The DATA frames at the front of the event queue as one [`FrameRun`]: the frames
    /// that arrived back to back share one buffer, so taking them costs one reference
    /// count for the run, not one per frame (the way to read many small frames). Their
    /// bytes leave the receive window as the run is taken. `None` when the next event is
    /// not a frame (or there is none): then [`Self::poll_event`]. A run holds at least
    /// one frame; frames keep their order across runs, [`Self::poll_frames`] and
    /// [`Self::poll_event`].
    pub fn poll_frame_run(&mut self) -> Option<FrameRun> {
        self.events.pop_run()
    }

    // ----- internals -----

    /// Plaintext bytes the receive side can take now.
    fn recv_room(&self) -> usize {
        let used = self.recv.len() + self.events.frame_bytes();
        let window = self.config.recv_buffer_limit.saturating_sub(used);
        // A frame whose header has arrived may always complete, so a full event queue
        // never deadlocks a frame larger than the window.
        let finish_frame = match self.decoder.frame_len(&self.recv) {
            Ok(Some(total)) if self.preface_received => total.saturating_sub(self.recv.len()),
            _ => 0,
        };
        // With every event taken, the preface or a frame header may always complete,
        // however small the window: a tiny recv_buffer_limit slows a link, never stalls it.
        let finish_head = if !self.events.is_empty() {
            0
        } else if !self.preface_received {
            PREFACE_LEN.saturating_sub(self.recv.len())
        } else {
            HEADER_LEN.saturating_sub(self.recv.len())
        };
        window.max(finish_frame).max(finish_head)
    }

    /// Decodes and handles every complete frame received.
    fn process(&mut self, now: Instant) {
        if !self.preface_received {
            match preface::check(&self.recv) {
                Ok(true) => {
                    self.recv.advance(PREFACE_LEN);
                    self.preface_received = true;
                }
                Ok(false) => return,
                Err(e) => return self.fail(e.into()),
            }
        }
        while !self.is_closed() {
            if self.frame_auth.is_none() && matches!(self.state, State::Joined) {
                // The hot path: DATA frames on a joined link go straight to the queue.
                // Split off in one piece: one reference-counted buffer for the run.
                let (count, end) = self.decoder.data_run(&self.recv);
                if count > 0 {
                    let wire = self.recv.split_to(end).freeze();
                    self.events.push_run(FrameRun::wire(wire, count));
                }
            }
            // An unauthenticated peer may not send DATA, so it may not make this node
            // buffer a DATA body either: refuse on the kind byte.
            if let Some(&byte) = self.recv.first() {
                if byte == FrameKind::Data.to_byte() && !self.is_joined() {
                    return self.fail(ConnectionError::UnexpectedFrame {
                        kind: FrameKind::Data,
                        during: self.state.name(),
                    });
                }
            }
            match self.decoder.decode(&mut self.recv) {
                Ok(Some(frame)) => self.handle_frame(frame, now),
                Ok(None) => break,
                Err(e) => return self.fail(e.into()),
            }
        }
    }

    /// Starts the join once the transport is ready (at once without TLS).
    fn advance_handshake(&mut self, now: Instant) {
        if !matches!(self.state, State::InitiatorStarting { .. }) || !self.transport.is_ready() {
            return;
        }
        if let State::InitiatorStarting {
            nonce,
            expected_peer,
            own,
        } = std::mem::replace(&mut self.state, State::Closed)
        {
            let init = InitiatorHandshake::new(
                &self.config,
                nonce,
                self.clock.unix_ms(now),
                self.transport.channel_binding(),
            )
            .expecting(expected_peer);
            self.send_queue
                .push_control(FrameKind::Hello, &init.hello().encode());
            self.state = State::InitiatorSentHello(init, own);
        }
    }

    fn handle_frame(&mut self, mut frame: Frame, now: Instant) {
        if let Some(auth) = self.frame_auth.as_deref_mut() {
            match auth.open(frame.kind, &frame.payload) {
                // Zero copy: the tag is cut off the view into the receive buffer.
                Ok(Opened::Authenticated { len }) => frame.payload.truncate(len),
                Ok(Opened::BeforePeerJoined) => {}
                Err(e) => return self.fail(ConnectionError::FrameAuth(e)),
            }
        }
        // The hot path: a DATA frame on a joined link moves no state.
        if frame.kind == FrameKind::Data && matches!(self.state, State::Joined) {
            self.events.push_frame(frame.payload);
            return;
        }
        let state = std::mem::replace(&mut self.state, State::Closed);
        let result = match (state, frame.kind) {
            (State::AcceptorWaiting(acceptor), FrameKind::Hello) => {
                self.on_hello(acceptor, &frame.payload, now)
            }
            (State::InitiatorSentHello(init, _own), FrameKind::Welcome) => {
                self.on_welcome(init, &frame.payload, now)
            }
            (
                State::Joined,
                kind @ (FrameKind::Rejoin | FrameKind::Rejoined | FrameKind::Rekey),
            ) => {
                self.state = State::Joined;
                self.on_rejoin_frame(kind, &frame.payload, now);
                Ok(())
            }
            // A REJECT ends a join: any time before joined, and at a joined acceptor
            // (the initiator refused its WELCOME). The state is put back first so a
            // malformed body is answered as the state calls for.
            (state, FrameKind::Reject)
                if !matches!(state, State::Joined) || self.side == Side::Acceptor =>
            {
                self.state = state;
                match Rejection::decode(&frame.payload) {
                    Ok(rejection) => {
                        Err(ConnectionError::Join(JoinError::RefusedByPeer(rejection)))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            (state, FrameKind::Close) => {
                self.state = state;
                match CloseReason::decode(&frame.payload) {
                    Ok(reason) => {
                        self.finish(CloseCause::Peer(reason));
                        Ok(())
                    }
                    Err(e) => Err(e.into()),
                }
            }
            (state, kind) => {
                let during = state.name();
                self.state = state;
                Err(ConnectionError::UnexpectedFrame { kind, during })
            }
        };
        if let Err(e) = result {
            self.fail(e);
        }
    }

    fn on_hello(
        &mut self,
        acceptor: AcceptorHandshake,
        body: &[u8],
        now: Instant,
    ) -> Result<(), ConnectionError> {
        let hello = JoinHello::decode(body)?;
        let (welcome, peer) = acceptor
            .read_hello(
                &self.config,
                &self.replay,
                &hello,
                self.transport.channel_binding(),
                self.clock.unix_ms(now),
            )
            .and_then(|(welcome, peer)| {
                self.authorize_identity(&peer)?;
                Ok((welcome, peer))
            })
            .map_err(|r| ConnectionError::Join(JoinError::RefusedPeer(r)))?;
        let welcome = welcome.encode();
        self.send_queue.push_control(FrameKind::Welcome, &welcome);
        self.authenticate_frames(body, &welcome, &peer);
        self.transcript = transcript(body, &welcome);
        self.joined(peer, now);
        Ok(())
    }

    fn on_welcome(
        &mut self,
        init: InitiatorHandshake,
        body: &[u8],
        now: Instant,
    ) -> Result<(), ConnectionError> {
        let welcome = JoinWelcome::decode(body)?;
        let hello = init.hello().encode();
        let peer = init
            .read_welcome(
                &self.config,
                &welcome,
                self.transport.channel_binding(),
                self.clock.unix_ms(now),
            )
            .and_then(|peer| {
                self.authorize_identity(&peer)?;
                Ok(peer)
            })
            .map_err(|r| ConnectionError::Join(JoinError::RefusedPeer(r)))?;
        self.authenticate_frames(&hello, body, &peer);
        self.transcript = transcript(&hello, body);
        self.joined(peer, now);
        Ok(())
    }

    /// Plaintext with a secret: from here on every frame either side sends is tagged under
    /// a key derived from the secret the join used and both join messages (PROTOCOL.md §5.7).
    fn authenticate_frames(&mut self, hello: &[u8], welcome: &[u8], peer: &PeerInfo) {
        if self.transport.is_tls() {
            return;
        }
        let keyring = self.config.keyring.as_ref();
        let Some(secret) = peer.key_id.and_then(|id| keyring?.get(id)) else {
            return;
        };
        let keys = LinkKeys::derive(secret, hello, welcome);
        self.frame_auth = Some(Box::new(FrameAuth::new(&keys, self.side)));
        self.decoder.set_tag_len(TAG_LEN);
        self.events.set_tag_len(TAG_LEN);
    }

    /// Queues a CLOSE (or other control frame), tagged when frames are authenticated.
    fn queue_control(&mut self, kind: FrameKind, body: &[u8]) {
        match self.frame_auth.as_deref_mut() {
            Some(auth) => {
                let tag = auth.seal(kind, body);
                let body = Bytes::copy_from_slice(body);
                self.send_queue.push_tagged(kind, body, &tag);
            }
            None => self.send_queue.push_control(kind, body),
        }
    }

    /// The peer policy (revocation, `allowed_peers`, `node_id_in_cert`), at the join.
    fn authorize_identity(&self, peer: &PeerInfo) -> Result<(), Rejection> {
        crate::authorize::authorize(
            &self.config,
            crate::authorize::PeerFacts {
                node_id: &peer.node_id,
                key_id: peer.key_id,
                cert_names: self.transport.cert_names(),
            },
        )
    }

    fn joined(&mut self, mut peer: PeerInfo, now: Instant) {
        peer.tls = self.transport.peer();
        // Only a permissive acceptor gets here with either: a strict node refuses both.
        peer.below_strict = BelowStrict {
            plaintext: self.config.tls.is_some() && !self.transport.is_tls(),
            without_secret: self.config.keyring.is_some() && peer.key_id.is_none(),
        };
        self.state = State::Joined;
        if self.transport.is_tls() {
            self.send_queue.gather();
        }
        self.peer = Some(peer.clone());
        self.events.push(Event::Joined(peer));
        self.on_joined_trust(now);
    }

    /// Ends the link with an error, queuing what the peer is owed: a REJECT for a join
    /// this node refused or a malformed join message, a CLOSE for other protocol errors,
    /// nothing when the peer already left or refused us.
    fn fail(&mut self, err: ConnectionError) {
        if self.is_closed() && self.close_cause.is_some() {
            return;
        }
        let joining = !self.is_joined();
        match &err {
            ConnectionError::Join(JoinError::RefusedPeer(rejection)) => {
                self.send_queue
                    .push_control(FrameKind::Reject, &rejection.encode());
            }
            ConnectionError::Message(_) | ConnectionError::UnexpectedFrame { .. } if joining => {
                let rejection = Rejection::new(RejectCode::Malformed, err.to_string());
                self.send_queue
                    .push_control(FrameKind::Reject, &rejection.encode());
            }
            _ => {
                if let Some(reason) = err.close_reason() {
                    self.queue_control(FrameKind::Close, &reason.encode());
                }
            }
        }
        self.finish(CloseCause::Error(err));
    }

    fn finish(&mut self, cause: CloseCause) {
        self.state = State::Closed;
        self.handshake_deadline = None;
        self.first_bytes_deadline = None;
        self.close_cause = Some(cause.clone());
        self.events.push(Event::Closed(cause));
    }
}

/// A CLOSE with [`CloseCode::Normal`] and no message.
impl Default for CloseReason {
    fn default() -> Self {
        Self::new(CloseCode::Normal, "")
    }
}
