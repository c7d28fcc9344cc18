//! The tokio side of one link's streams: a writer task that owns the link's send half
//! (so neither the link's reader nor the stream table ever waits on a full send buffer,
//! which could deadlock two nodes that both send), and a task that owns the link's
//! [`Mux`] and moves frames, commands and events between it and the stream tasks.
//!
//! Memory: the writer's queue holds at most what the peer's windows allow in DATA plus
//! one control message per message received; the stream tasks' queues hold at most one
//! window each (the mux resets a peer that sends more).

use std::collections::HashMap;
use std::sync::Arc;

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

/// The link writer's queue.
pub type Writer = mpsc::UnboundedSender<Out>;

/// Starts the task that owns the link's send half; it ends after a [`Out::Close`], a
/// send error, or when every [`Writer`] is dropped.
pub fn spawn_writer(mut tx: SendHalf) -> (Writer, JoinHandle<()>) {
    let (out, mut queue) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(item) = queue.recv().await {
            match item {
                Out::Frame(frame) => {
                    if let Err(e) = tx.send(frame).await {
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
    (out, task)
}

/// What the link's reader holds: hand it the stream frames; dropping it ends the
/// link's streams (their local sockets are reset).
#[derive(Debug)]
pub struct LinkStreams {
    pub(crate) frames: mpsc::UnboundedSender<Bytes>,
}

impl LinkStreams {
    /// One frame whose kind is a stream message ([`super::is_stream_kind`]).
    pub fn frame(&self, frame: Bytes) {
        let _ = self.frames.send(frame);
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
    pub(crate) side: Side,
    pub(crate) out: Writer,
    pub(crate) cmds_tx: mpsc::UnboundedSender<Cmd>,
}

/// The link's stream table, until the link's reader drops its [`LinkStreams`].
pub(crate) async fn run(
    fwd: Arc<Forwarder>,
    ctx: LinkCtx,
    mut frames: mpsc::UnboundedReceiver<Bytes>,
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
                        let _ = ctx.out.send(Out::Close(CloseReason::new(CloseCode::ProtocolError, format!("node streams: {e}"))));
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
            let _ = ctx.out.send(Out::Frame(msg.encode()));
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
            mux.refuse(id, code, &why);
            return;
        }
    };
    let (events_tx, events) = mpsc::unbounded_channel();
    streams.insert(id, events_tx);
    let cmds = ctx.cmds_tx.clone();
    tokio::spawn(async move {
        let connect = tokio::time::timeout(TARGET_CONNECT_TIMEOUT, TcpStream::connect(&target));
        let tcp = match connect.await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                warn!(peer = %peer, service = %service, "refused stream {id} from {peer} to {service:?}: cannot connect to its target {target}: {e}");
                let _ = cmds.send(Cmd::Refuse(
                    id,
                    Code::TargetUnreachable,
                    format!("the service's target cannot be reached: {}", e.kind()),
                ));
                return;
            }
            Err(_) => {
                warn!(peer = %peer, service = %service, "refused stream {id} from {peer} to {service:?}: connecting to its target {target} timed out");
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
        let ctx = StreamCtx {
            id,
            peer,
            service,
            cmds,
        };
        stream::run(tcp, ctx, events).await;
    });
}
