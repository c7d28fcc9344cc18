//! The seam between socket bytes and frame-stream bytes.
//!
//! Without TLS the two are the same bytes. The TLS session (rustls) slots in here: it turns
//! received ciphertext into frame-stream plaintext, queued frame-stream bytes into records,
//! says when the session is ready for the join, and supplies the channel-binding value.
//! Nothing above this module knows which transport a connection uses.

use bytes::{Bytes, BytesMut};

use crate::error::ConnectionError;
use crate::send_queue::SendQueue;

#[derive(Debug)]
pub(crate) enum Transport {
    /// Frame-stream bytes go to the socket as they are.
    Plain,
}

impl Transport {
    /// Whether the join can start (TLS: the session's handshake is complete).
    pub(crate) fn is_ready(&self) -> bool {
        match self {
            Self::Plain => true,
        }
    }

    /// The value both join proofs are bound to: a TLS exporter value, empty without TLS.
    pub(crate) fn channel_binding(&self) -> &[u8] {
        match self {
            Self::Plain => &[],
        }
    }

    /// Takes socket bytes, appending at most `room` bytes of frame-stream plaintext to
    /// `plain`. Returns how many socket bytes were consumed.
    pub(crate) fn read(
        &mut self,
        input: &[u8],
        plain: &mut BytesMut,
        room: usize,
    ) -> Result<usize, ConnectionError> {
        match self {
            Self::Plain => {
                let take = input.get(..room).unwrap_or(input);
                plain.extend_from_slice(take);
                Ok(take.len())
            }
        }
    }

    /// The next bytes to write to the socket, drawn from the queued frame stream.
    pub(crate) fn poll_transmit(&mut self, queue: &mut SendQueue) -> Option<Bytes> {
        match self {
            Self::Plain => queue.pop(),
        }
    }
}
