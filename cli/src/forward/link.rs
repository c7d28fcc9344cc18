//! The tokio side of one link's streams: a writer task that owns the link's send half
//! (so neither the link's reader nor the stream table ever waits on a full send buffer,
//! which could deadlock two nodes that both send), and a task that owns the link's
//! [`Mux`] and moves frames, commands and events between it and the stream tasks.
//!
//! Memory: the writer's queue holds at most what the peer's windows allow in DATA plus
//! one control message per message received; the stream tasks' queues hold at most one
//! window each (the mux resets a peer that sends more).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::ops::names::ServiceCounters;
use bytes::Bytes;
use palisade::tokio::SendHalf;
use palisade::{CloseCode, CloseReason};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::mux::{Event, Mux, Side};
use super::stream::{self, StreamCtx, StreamEvent};
use super::wire::Code;
use super::{Forwarder, TARGET_CONNECT_TIMEOUT};

/// What the link's writer sends.
#[derive(Debug)]
pub enum Out {
    Frame(Bytes),
    /// Close the link with this reason (after the frames queued before it).
    Close(CloseReason),
}

/// Bytes the writer's queue may hold, beyond which the peer is asking for more than it
/// reads: the link is closed. Legitimate traffic stays below it: DATA is bounded by the
/// windows the peer granted (at most 256 streams × 256 KiB), and the rest (replies to
/// PING and INFO, WINDOW, FIN, RESET, REFUSE) is small and paced by what the peer sends.
pub const WRITER_QUEUE_CAP: usize = 64 * 1024 * 1024 + 4 * 1024 * 1024;

/// What each queued message counts beyond its bytes (a flood of tiny RESETs is memory too).
const PER_MESSAGE: usize = 64;

/// The link writer's queue, shared by the link's reader and its stream table. It never
/// waits (two nodes whose writers both waited on each other's reading would deadlock), and
/// it is bounded in bytes ([`WRITER_QUEUE_CAP`]).
#[derive(Debug, Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<Out>,
    queued: Arc<AtomicUsize>,
    cap: usize,
    /// Set once the cap was passed: nothing more is queued after that CLOSE.
    over: Arc<AtomicBool>,
}

impl Writer {
    /// A writer whose queue the caller drains (tests).
    #[cfg(test)]
    pub(crate) fn channel(cap: usize) -> (Self, mpsc::UnboundedReceiver<Out>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let over = Arc::default();
        (
            Self {
                tx,
                queued,
                cap,
                over,
            },
            rx,
        )
    }

    /// Queues `out`; false once the writer has stopped, or when the queue is over its cap
    /// (then a CLOSE is queued instead, and the link ends).
    pub fn send(&self, out: Out) -> bool {
        let cost = match &out {
            Out::Frame(f) => f.len() + PER_MESSAGE,
            Out::Close(_) => 0,
        };
        if self.over.load(Ordering::Relaxed) {
            return false;
        }
        if cost > 0 && self.queued.fetch_add(cost, Ordering::Relaxed) + cost > self.cap {
            self.queued.fetch_sub(cost, Ordering::Relaxed);
            self.over.store(true, Ordering::Relaxed);
            let _ = self.tx.send(Out::Close(CloseReason::new(
                CloseCode::ProtocolError,
                "the peer asks for more than it reads (node streams)",
            )));
            return false;
        }
        self.tx.send(out).is_ok()
    }
}

/// Starts the task that owns the link's send half; it ends after a [`Out::Close`], a
/// send error, or when every [`Writer`] is dropped.
pub fn spawn_writer(mut tx: SendHalf) -> (Writer, JoinHandle<()>) {
    let (out, mut queue) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&queued);
    let task = tokio::spawn(async move {
        while let Some(item) = queue.recv().await {
            match item {
                Out::Frame(frame) => {
                    let cost = frame.len() + PER_MESSAGE;
                    let sent = tx.send(frame).await;
                    counter.fetch_sub(cost, Ordering::Relaxed);
                    if let Err(e) = sent {
                        debug!("the link's writer stops: {e}");
                        return;
                    }
                }
                Out::Close(reason) => {
                    tx.close(reason).await;
                    return;
                }
            }
        }
    });
    let writer = Writer {
        tx: out,
        queued,
        cap: WRITER_QUEUE_CAP,
        over: Arc::default(),
    };
    (writer, task)
}

/// What the link's reader holds: hand it the stream frames; dropping it ends the
/// link's streams (their local sockets are reset).
#[derive(Debug)]
pub struct LinkStreams {
    pub(crate) frames: mpsc::Sender<Bytes>,
}

/// Stream frames received and not yet taken by the stream table: the link's reader waits
/// beyond it (the table itself never waits, so this cannot deadlock).
pub const FRAME_QUEUE: usize = 64;

impl LinkStreams {
    /// One frame whose kind is a stream message ([`super::is_stream_kind`]).
    pub async fn frame(&self, frame: Bytes) {
        let _ = self.frames.send(frame).await;
    }
}

/// Commands to a link's stream task.
#[derive(Debug)]
pub enum Cmd {
    /// A local connection wants a stream to the peer's `service`.
    Open {
        service: String,
        events: mpsc::UnboundedSender<StreamEvent>,
        reply: oneshot::Sender<Result<u32, Code>>,
    },
    /// The target of an incoming stream is connected.
    Accept(u32),
    /// The target of an incoming stream could not be reached.
    Refuse(u32, Code, String),
    Data(u32, Bytes),
    Fin(u32),
    Reset(u32, Code, String),
    Consumed(u32, u32),
    /// The services changed: decide the peer's streams again.
    Recheck,
}

pub(crate) struct LinkCtx {
    pub(crate) id: u64,
    pub(crate) peer: String,
    /// The peer's address, for the audit log.
    pub(crate) peer_addr: String,
    pub(crate) side: Side,
    pub(crate) out: Writer,
    pub(crate) cmds_tx: mpsc::UnboundedSender<Cmd>,
}

/// The link's stream table, until the link's reader drops its [`LinkStreams`].
pub(crate) async fn run(
    fwd: Arc<Forwarder>,
    ctx: LinkCtx,
    mut frames: mpsc::Receiver<Bytes>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
) {
    let mut mux = Mux::new(ctx.side, fwd.limits);
    let mut streams: HashMap<u32, mpsc::UnboundedSender<StreamEvent>> = HashMap::new();
    let peer = ctx.peer.as_str();
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(frame) => {
                    if let Err(e) = mux.handle_frame(&frame) {
                        warn!(peer = %peer, "closing the link with {peer}: it broke the stream rules: {e}");
                        ctx.out.send(Out::Close(CloseReason::new(CloseCode::ProtocolError, format!("node streams: {e}"))));
                        mux.close_all(Code::LinkClosing, "the link broke the stream rules");
                        flush(&fwd, &ctx, &mut mux, &mut streams);
                        break;
                    }
                }
                None => {
                    mux.close_all(Code::LinkClosing, "the link ended");
                    flush(&fwd, &ctx, &mut mux, &mut streams);
                    break;
                }
            },
            Some(cmd) = cmds.recv() => command(&fwd, peer, &mut mux, &mut streams, cmd),
        }
        flush(&fwd, &ctx, &mut mux, &mut streams);
    }
    fwd.detach(peer, ctx.id);
}

fn command(
    fwd: &Forwarder,
    peer: &str,
    mux: &mut Mux,
    streams: &mut HashMap<u32, mpsc::UnboundedSender<StreamEvent>>,
    cmd: Cmd,
) {
    // A command about a stream that has ended meanwhile fails with `Gone`: its task has
    // been (or is being) told with `Ended`, so there is nothing more to do.
    match cmd {
        Cmd::Open {
            service,
            events,
            reply,
        } => match mux.open(&service) {
            Ok(id) => {
                streams.insert(id, events);
                if reply.send(Ok(id)).is_err() {
                    mux.reset(id, Code::Aborted, "the local connection went away");
                }
            }
            Err(code) => {
                let _ = reply.send(Err(code));
            }
        },
        Cmd::Accept(id) => {
            let _ = mux.accept(id);
        }
        Cmd::Refuse(id, code, reason) => {
            streams.remove(&id);
            mux.refuse(id, code, &reason);
        }
        Cmd::Data(id, bytes) => {
            if mux.send_data(id, bytes).is_err() {
                mux.reset(id, Code::Aborted, "data beyond the stream's credit");
            }
        }
        Cmd::Fin(id) => {
            let _ = mux.finish(id);
        }
        Cmd::Reset(id, code, reason) => mux.reset(id, code, &reason),
        Cmd::Consumed(id, n) => mux.consumed(id, n),
        Cmd::Recheck => {
            for (id, service) in mux.peer_streams() {
                if let Err((_, why)) = fwd.decide(&service, peer) {
                    warn!(peer = %peer, service = %service, "reload: resetting stream {id} from {peer} to {service:?}: {why}");
                    mux.reset(id, Code::Withdrawn, &why);
                }
            }
        }
    }
}

/// Sends what the mux wants sent, then acts on its events, until both are empty (an
/// event may cause more to send: a refusal).
fn flush(
    fwd: &Arc<Forwarder>,
    ctx: &LinkCtx,
    mux: &mut Mux,
    streams: &mut HashMap<u32, mpsc::UnboundedSender<StreamEvent>>,
) {
    loop {
        let mut any = false;
        while let Some(msg) = mux.poll_transmit() {
            any = true;
            ctx.out.send(Out::Frame(msg.encode()));
        }
        while let Some(event) = mux.poll_event() {
            any = true;
            match event {
                Event::Incoming { id, service } => incoming(fwd, ctx, mux, streams, id, service),
                Event::Credit { id, n } => send(streams, id, StreamEvent::Credit(n)),
                Event::Data { id, bytes } => send(streams, id, StreamEvent::Data(bytes)),
                Event::Fin { id } => send(streams, id, StreamEvent::Fin),
                Event::Closed { id } => {
                    streams.remove(&id);
                }
                Event::Ended {
                    id,
                    code,
                    reason,
                    by_peer,
                } => {
                    if let Some(tx) = streams.remove(&id) {
                        let _ = tx.send(StreamEvent::Ended {
                            code,
                            reason,
                            by_peer,
                        });
                    }
                }
            }
        }
        if !any {
            return;
        }
    }
}

fn send(streams: &HashMap<u32, mpsc::UnboundedSender<StreamEvent>>, id: u32, event: StreamEvent) {
    if let Some(tx) = streams.get(&id) {
        let _ = tx.send(event);
    }
}

/// The peer opened a stream: refuse it at once if the service is unknown or the peer
/// not allowed, else connect to the target in a task of its own.
fn incoming(
    fwd: &Arc<Forwarder>,
    ctx: &LinkCtx,
    mux: &mut Mux,
    streams: &mut HashMap<u32, mpsc::UnboundedSender<StreamEvent>>,
    id: u32,
    service: String,
) {
    let peer = ctx.peer.clone();
    let target = match fwd.decide(&service, &peer) {
        Ok(target) => target,
        Err((code, why)) => {
            warn!(peer = %peer, service = %service, "refused stream {id} from {peer} to {service:?}: {why}");
            fwd.audit
                .stream_refused(&ctx.peer_addr, &peer, &service, &why);
            fwd.stats.refused.fetch_add(1, Ordering::Relaxed);
            mux.refuse(id, code, &why);
            return;
        }
    };
    let (events_tx, events) = mpsc::unbounded_channel();
    streams.insert(id, events_tx);
    let cmds = ctx.cmds_tx.clone();
    let peer_addr = ctx.peer_addr.clone();
    let fwd = Arc::clone(fwd);
    tokio::spawn(async move {
        let connect = tokio::time::timeout(TARGET_CONNECT_TIMEOUT, TcpStream::connect(&target));
        let tcp = match connect.await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                warn!(peer = %peer, service = %service, "refused stream {id} from {peer} to {service:?}: cannot connect to its target {target}: {e}");
                let why = format!("cannot connect to its target {target}: {e}");
                fwd.audit.stream_refused(&peer_addr, &peer, &service, &why);
                fwd.stats.refused.fetch_add(1, Ordering::Relaxed);
                let _ = cmds.send(Cmd::Refuse(
                    id,
                    Code::TargetUnreachable,
                    format!("the service's target cannot be reached: {}", e.kind()),
                ));
                return;
            }
            Err(_) => {
                warn!(peer = %peer, service = %service, "refused stream {id} from {peer} to {service:?}: connecting to its target {target} timed out");
                let why = format!("connecting to its target {target} timed out");
                fwd.audit.stream_refused(&peer_addr, &peer, &service, &why);
                fwd.stats.refused.fetch_add(1, Ordering::Relaxed);
                let _ = cmds.send(Cmd::Refuse(
                    id,
                    Code::TargetUnreachable,
                    "the service's target did not answer in time".into(),
                ));
                return;
            }
        };
        let _ = tcp.set_nodelay(true);
        let _ = cmds.send(Cmd::Accept(id));
        let counters = ServiceCounters::new(&fwd.node_id, &service);
        counters.stream_opened();
        let ctx = StreamCtx {
            id,
            peer,
            service,
            cmds,
            counters,
        };
        fwd.stats.inbound.fetch_add(1, Ordering::Relaxed);
        if !stream::run(tcp, ctx, events).await {
            fwd.stats.reset.fetch_add(1, Ordering::Relaxed);
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::wire::Msg;
    use super::*;

    async fn next(sent: &mut mpsc::UnboundedReceiver<Out>) -> Out {
        tokio::time::timeout(Duration::from_secs(5), sent.recv())
            .await
            .expect("the link's stream table answers")
            .expect("the stream table is running")
    }

    async fn next_msg(sent: &mut mpsc::UnboundedReceiver<Out>) -> Msg {
        match next(sent).await {
            Out::Frame(f) => Msg::decode(&f).unwrap(),
            Out::Close(r) => panic!("closed: {r:?}"),
        }
    }

    /// A peer that keeps asking (PINGs, OPENs refused, DATA for unknown ids) without
    /// reading the answers fills the writer's queue to its cap, and no further: then the
    /// queue holds a CLOSE and refuses the rest.
    #[tokio::test]
    async fn a_peer_that_does_not_read_its_answers_is_closed_at_the_cap() {
        let fwd = Forwarder::new("node-1");
        let (out, mut sent) = Writer::channel(10_000);
        let streams = fwd.attach("node-2", "127.0.0.1:7000", false, out);
        for id in 0..1000u32 {
            streams.frame(Msg::Fin { id: 2 * id + 1001 }.encode()).await;
        }
        let mut resets = 0;
        while let Out::Frame(f) = next(&mut sent).await {
            assert!(matches!(Msg::decode(&f).unwrap(), Msg::Reset { .. }));
            resets += 1;
        }
        // (The loop ended at the CLOSE.)
        // Nothing after the CLOSE, though the peer went on.
        streams.frame(Msg::Fin { id: 9_999 }.encode()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(sent.try_recv().is_err());
        // Each RESET counts its bytes and 64: at most 10 000 bytes' worth were queued.
        assert!(resets > 50 && resets < 10_000 / 64, "{resets}");
    }

    /// What a hostile or broken peer gets from a link's stream table: RESETs and REFUSEs
    /// for stream-level faults (the link goes on), a CLOSE for a malformed message.
    #[tokio::test]
    async fn a_hostile_peer_gets_resets_refusals_and_at_last_a_close() {
        let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut settings = palisade::Settings::default();
        settings.service = vec![palisade::settings::ServiceSettings {
            name: "echo".into(),
            target: target.local_addr().unwrap().to_string(),
            allow: vec!["node-2".into()],
        }];
        let fwd = Forwarder::new("node-1");
        fwd.configure(&settings);
        let (out, mut sent) = Writer::channel(WRITER_QUEUE_CAP);
        // node-2 dialed: it opens odd ids.
        let streams = fwd.attach("node-2", "127.0.0.1:7000", false, out);

        streams
            .frame(
                Msg::Data {
                    id: 1,
                    bytes: Bytes::from_static(b"x"),
                }
                .encode(),
            )
            .await;
        assert!(matches!(
            next_msg(&mut sent).await,
            Msg::Reset {
                id: 1,
                code: Code::Protocol,
                ..
            }
        ));

        let open = |id, service: &str| {
            Msg::Open {
                id,
                window: 1000,
                service: service.into(),
            }
            .encode()
        };
        streams.frame(open(1, "nope")).await;
        assert!(matches!(
            next_msg(&mut sent).await,
            Msg::Refuse {
                id: 1,
                code: Code::UnknownService,
                ..
            }
        ));

        streams.frame(open(3, "echo")).await;
        let (_conn, _) = tokio::time::timeout(Duration::from_secs(5), target.accept())
            .await
            .unwrap()
            .unwrap();
        let Msg::Accept { id: 3, window } = next_msg(&mut sent).await else {
            panic!("no ACCEPT")
        };
        // One byte beyond the window: the stream is reset, the link is not.
        let over = Bytes::from(vec![0u8; window as usize + 1]);
        streams
            .frame(Msg::Data { id: 3, bytes: over }.encode())
            .await;
        assert!(matches!(
            next_msg(&mut sent).await,
            Msg::Reset {
                id: 3,
                code: Code::Protocol,
                ..
            }
        ));

        // An OPEN with this node's parity breaks the id rules: the link closes.
        streams.frame(open(4, "echo")).await;
        assert!(matches!(next(&mut sent).await, Out::Close(_)));

        // So does a malformed message (a DATA too short for its id), on another link.
        let (out, mut sent) = Writer::channel(WRITER_QUEUE_CAP);
        let other = fwd.attach("node-3", "127.0.0.1:7001", true, out);
        other.frame(Bytes::from_static(&[0x13, 0, 0])).await;
        assert!(matches!(next(&mut sent).await, Out::Close(_)));
    }
}
