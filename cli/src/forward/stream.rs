//! One local TCP connection carried as a stream: bytes read from the socket go out as
//! DATA within the credit the peer granted (so a peer that stops reading stops this
//! socket's reads, not the link), DATA from the peer is written to the socket and then
//! reported consumed (which grants the credit back), FIN shuts the socket's write side,
//! and a reset either way resets the socket (SO_LINGER 0: the program sees ECONNRESET,
//! not a clean EOF it could take for a complete reply).

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::link::Cmd;
use super::wire::Code;

/// The most bytes read from a local socket into one DATA message.
pub const CHUNK: usize = 16 * 1024;

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
}

/// Resets a local connection: SO_LINGER 0, then close (an RST, not a FIN).
pub fn reset_socket(tcp: TcpStream) {
    let _ = tcp.set_zero_linger();
    drop(tcp);
}

/// Pumps one stream until both directions have finished or it is reset.
pub async fn run(
    mut tcp: TcpStream,
    ctx: StreamCtx,
    mut events: mpsc::UnboundedReceiver<StreamEvent>,
) {
    let StreamCtx {
        id,
        peer,
        service,
        cmds,
    } = ctx;
    let mut credit: u64 = 0;
    let mut buf = vec![0u8; CHUNK];
    let (mut reading, mut writing) = (true, true);
    let (mut rd, mut wr) = tcp.split();
    let clean = loop {
        if !reading && !writing {
            break true;
        }
        let room = usize::try_from(credit).unwrap_or(CHUNK).min(CHUNK);
        tokio::select! {
            read = rd.read(&mut buf[..room]), if reading && room > 0 => match read {
                Ok(0) => {
                    reading = false;
                    let _ = cmds.send(Cmd::Fin(id));
                }
                Ok(n) => {
                    credit -= n as u64;
                    let _ = cmds.send(Cmd::Data(id, Bytes::copy_from_slice(&buf[..n])));
                }
                Err(e) => {
                    info!(peer = %peer, service = %service, "stream {id}: the local socket failed ({e}): resetting the stream");
                    let _ = cmds.send(Cmd::Reset(id, Code::Aborted, "the connection on the other end was reset".into()));
                    break false;
                }
            },
            event = events.recv() => match event {
                Some(StreamEvent::Credit(n)) => credit += u64::from(n),
                Some(StreamEvent::Data(bytes)) => {
                    if let Err(e) = wr.write_all(&bytes).await {
                        info!(peer = %peer, service = %service, "stream {id}: writing to the local socket failed ({e}): resetting the stream");
                        let _ = cmds.send(Cmd::Reset(id, Code::Aborted, "the connection on the other end was reset".into()));
                        break false;
                    }
                    let _ = cmds.send(Cmd::Consumed(id, bytes.len() as u32));
                }
                Some(StreamEvent::Fin) => {
                    writing = false;
                    let _ = wr.shutdown().await;
                }
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
                // The link's stream table is gone (the link ended) or forgot the stream.
                None => break !reading && !writing,
            },
        }
    };
    if clean {
        debug!(peer = %peer, service = %service, "stream {id} finished");
    } else {
        reset_socket(tcp);
    }
}
