//! One local TCP connection carried as a stream: bytes read from the socket go out as
//! DATA within the credit the peer granted (so a peer that stops reading stops this
//! socket's reads, not the link), DATA from the peer is written to the socket and then
//! reported consumed (which grants the credit back), FIN shuts the socket's write side,
//! and a reset either way resets the socket (SO_LINGER 0: the program sees ECONNRESET,
//! not a clean EOF it could take for a complete reply).

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::link::Cmd;
use super::wire::Code;
use crate::ops::names::{Direction, ServiceCounters};

/// The most bytes read from a local socket into one DATA message.
pub const CHUNK: usize = 16 * 1024;

/// The first read's size, and the least a read asks for: an idle connection holds
/// about this much, a busy one grows its reads to [`CHUNK`].
const FIRST_READ: usize = 1024;

/// What the link's stream table tells a stream's task.
#[derive(Debug)]
pub enum StreamEvent {
    Credit(u32),
    Data(Bytes),
    Fin,
    Ended {
        code: Code,
        reason: String,
        by_peer: bool,
    },
}

pub struct StreamCtx {
    pub id: u32,
    pub peer: String,
    pub service: String,
    pub cmds: mpsc::UnboundedSender<Cmd>,
    /// The service's stream and byte counters (`metrics_listen`).
    pub counters: ServiceCounters,
}

/// Resets a local connection: SO_LINGER 0, then close (an RST, not a FIN).
pub fn reset_socket(tcp: TcpStream) {
    let _ = tcp.set_zero_linger();
    drop(tcp);
}

/// What the peer sent, waiting to be written to the local socket, in order.
enum Pending {
    Data(Bytes),
    Fin,
}

/// Pumps one stream until both directions have finished or it is reset. Reads, writes
/// and the link's events are one `select!`, each branch cancel-safe, so a local program
/// that stops reading stalls only its own writes: a RESET (a peer's, or a reload's) still
/// resets its socket at once. Whether it ended cleanly (else the socket was reset).
pub async fn run(
    mut tcp: TcpStream,
    ctx: StreamCtx,
    mut events: mpsc::UnboundedReceiver<StreamEvent>,
) -> bool {
    let StreamCtx {
        id,
        peer,
        service,
        cmds,
        counters: ctx_counters,
    } = ctx;
    let aborted = |cmds: &mpsc::UnboundedSender<Cmd>| {
        let _ = cmds.send(Cmd::Reset(
            id,
            Code::Aborted,
            "the connection on the other end was reset".into(),
        ));
    };
    let mut credit: u64 = 0;
    // What reads fill: split off (not copied) into each DATA message. Its size follows
    // the traffic (doubling while reads fill it, halving while they do not), so that an
    // idle connection does not hold a CHUNK for its whole life.
    let mut inbuf = BytesMut::new();
    let mut read_size = FIRST_READ;
    // At most one window of bytes: the peer may send no more until they are written.
    let mut pending: VecDeque<Pending> = VecDeque::new();
    // Bytes of the front `Pending::Data` already written.
    let mut written = 0usize;
    let (mut reading, mut writing) = (true, true);
    let (mut rd, mut wr) = tcp.split();
    let clean = loop {
        if matches!(pending.front(), Some(Pending::Fin)) {
            pending.pop_front();
            writing = false;
            let _ = wr.shutdown().await;
        }
        if !reading && !writing {
            break true;
        }
        let room = usize::try_from(credit)
            .unwrap_or(CHUNK)
            .min(CHUNK)
            .min(read_size);
        let front: &[u8] = match pending.front() {
            Some(Pending::Data(b)) => &b[written..],
            _ => &[],
        };
        tokio::select! {
            read = async {
                inbuf.reserve(room);
                rd.read_buf(&mut (&mut inbuf).limit(room)).await
            }, if reading && room > 0 => match read {
                Ok(0) => {
                    reading = false;
                    let _ = cmds.send(Cmd::Fin(id));
                }
                Ok(n) => {
                    credit -= n as u64;
                    ctx_counters.bytes(Direction::Sent, n as u64);
                    read_size = if n == room {
                        (read_size * 2).min(CHUNK)
                    } else {
                        (read_size / 2).max(FIRST_READ)
                    };
                    let _ = cmds.send(Cmd::Data(id, inbuf.split().freeze()));
                    if inbuf.capacity() > 2 * read_size {
                        // Reads got small: let go of the large buffer while idle.
                        inbuf = BytesMut::new();
                    }
                }
                Err(e) => {
                    info!(peer = %peer, service = %service, "stream {id}: the local socket failed ({e}): resetting the stream");
                    aborted(&cmds);
                    break false;
                }
            },
            wrote = wr.write(front), if !front.is_empty() => match wrote {
                Ok(n) if n > 0 => {
                    written += n;
                    ctx_counters.bytes(Direction::Received, n as u64);
                    if let Some(Pending::Data(b)) = pending.front() {
                        if written == b.len() {
                            let _ = cmds.send(Cmd::Consumed(id, b.len() as u32));
                            pending.pop_front();
                            written = 0;
                        }
                    }
                }
                Ok(_) | Err(_) => {
                    info!(peer = %peer, service = %service, "stream {id}: writing to the local socket failed: resetting the stream");
                    aborted(&cmds);
                    break false;
                }
            },
            event = events.recv() => match event {
                Some(StreamEvent::Credit(n)) => credit += u64::from(n),
                Some(StreamEvent::Data(bytes)) => pending.push_back(Pending::Data(bytes)),
                Some(StreamEvent::Fin) => pending.push_back(Pending::Fin),
                Some(StreamEvent::Ended { code, reason, by_peer }) => {
                    if by_peer && code == Code::Aborted {
                        info!(peer = %peer, service = %service, "stream {id} to {service:?} reset by {peer}: {reason}");
                    } else if by_peer {
                        warn!(peer = %peer, service = %service, "stream {id} to {service:?} refused or reset by {peer}: {code}: {reason}");
                    } else {
                        warn!(peer = %peer, service = %service, "stream {id} to {service:?} with {peer} reset: {code}: {reason}");
                    }
                    break false;
                }
                // The link's stream table forgot the stream: both FINs went (then what
                // is pending is written first), or the link ended (then a reset).
                None if !reading && pending.iter().any(|p| matches!(p, Pending::Fin)) => {
                    while let Some(p) = pending.pop_front() {
                        if let Pending::Data(b) = p {
                            if wr.write_all(&b[written..]).await.is_err() {
                                break;
                            }
                            written = 0;
                        }
                    }
                    let _ = wr.shutdown().await;
                    break true;
                }
                None => break !reading && !writing,
            },
        }
    };
    if clean {
        debug!(peer = %peer, service = %service, "stream {id} finished");
    } else {
        reset_socket(tcp);
    }
    clean
}
