//! One link's TLS session, driven from byte buffers: ciphertext in, frame-stream
//! plaintext out, and the reverse.
//!
//! rustls's buffered API (`read_tls` / `process_new_packets` / `reader` / `writer` /
//! `write_tls`) runs over caller slices. Memory stays bounded: rustls holds at most one
//! read's worth of ciphertext, and every byte it decrypts is moved at once into the
//! connection's receive buffer, which is where the window is enforced.

use std::io::{BufRead, IoSlice, Write};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use std::time::Duration;

use rustls::pki_types::{ServerName, UnixTime};
use rustls::{ClientConnection, Connection as RustlsConnection, ServerConnection};

use super::config::TlsContext;
use super::error::CertRefusal;
use super::error::TlsError;
use super::scope::LinkScope;
use super::{CertNames, TlsPeer, CHANNEL_BINDING_LABEL, CHANNEL_BINDING_LEN};
use crate::preface::{self, PrefaceError};
use crate::send_queue::SendQueue;

/// Plaintext bytes turned into records per `poll_transmit`: one socket write carries
/// several 64 KiB frames rather than one frame and the first record of the next.
const SEND_BATCH: usize = 256 * 1024;

/// Plaintext bytes encrypted per step of a `poll_transmit`: one record. Each record is
/// copied out right after it is encrypted, while it is still in the L1 cache; a whole
/// batch encrypted at once measured 0.78–0.82× hand-coalesced rustls at 1 KiB frames
/// in memory, 64 KiB steps 0.86–0.89×, record steps 0.89–0.92× (BENCHMARKS.md,
/// issue 23).
const ENCRYPT_STEP: usize = RECORD_PLAINTEXT;

/// The most plaintext one TLS record carries (RFC 8446 §5.1, and rustls's fragment
/// size unless configured otherwise, which palisade does not).
const RECORD_PLAINTEXT: usize = 16 * 1024;

/// Queue slices handed to rustls per vectored write (a record). 64 fill a record with
/// frames from 512 B up (two slices each, header and payload); more cost more than
/// they save, as rustls walks every slice of a write for each record it cuts.
const MAX_SLICES: usize = 64;

/// What reading socket bytes produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadOutcome {
    /// Socket bytes taken.
    pub(crate) consumed: usize,
    /// The peer ended its side of the TLS session (close_notify).
    pub(crate) peer_closed: bool,
}

/// One link's TLS session.
#[derive(Debug)]
pub(crate) struct TlsSession {
    conn: RustlsConnection,
    /// This link's clock and certificate verdict (the rustls configuration is shared).
    scope: Arc<LinkScope>,
    /// Initiator side: the name this node dialed (the hostname rule checks it again
    /// when the settings change).
    server_name: Option<ServerName<'static>>,
    /// The exporter value, once the handshake is complete.
    binding: Option<[u8; CHANNEL_BINDING_LEN]>,
    /// Whether the first byte from the peer has been checked for plaintext palisade.
    sniffed: bool,
    failed: bool,
    close_notify_sent: bool,
}

impl TlsSession {
    /// The initiator's session; `server_name` is the name or IP this node dialed.
    pub(crate) fn client(
        ctx: &TlsContext,
        server_name: ServerName<'static>,
        unix_ms: u64,
    ) -> Result<Self, TlsError> {
        let scope = LinkScope::new(unix_ms);
        let conn = {
            let _link = scope.enter(unix_ms);
            ClientConnection::new(Arc::clone(&ctx.client), server_name.clone())
                .map_err(|e| protocol(&e))?
        };
        let mut session = Self::new(conn.into(), scope);
        session.server_name = Some(server_name);
        Ok(session)
    }

    /// The acceptor's session.
    pub(crate) fn server(ctx: &TlsContext, unix_ms: u64) -> Result<Self, TlsError> {
        let scope = LinkScope::new(unix_ms);
        let conn = {
            let _link = scope.enter(unix_ms);
            ServerConnection::new(Arc::clone(&ctx.server)).map_err(|e| protocol(&e))?
        };
        Ok(Self::new(conn.into(), scope))
    }

    fn new(mut conn: RustlsConnection, scope: Arc<LinkScope>) -> Self {
        // rustls's own limit never cuts a step short: its record buffer is emptied after
        // every step (`encrypt_from` decides how much each step takes).
        conn.set_buffer_limit(Some(2 * ENCRYPT_STEP));
        Self {
            conn,
            scope,
            server_name: None,
            binding: None,
            sniffed: false,
            failed: false,
            close_notify_sent: false,
        }
    }

    /// Whether the TLS handshake is complete (the join may start).
    pub(crate) fn is_ready(&self) -> bool {
        self.binding.is_some()
    }

    /// The exporter value both join proofs are bound to (empty before the handshake
    /// completes).
    pub(crate) fn channel_binding(&self) -> &[u8] {
        self.binding.as_ref().map_or(&[], |b| &b[..])
    }

    /// Takes socket bytes and appends the plaintext they carry to `plain`. Stops taking
    /// input once `room` bytes of plaintext have been produced (it may overshoot by what
    /// one read decrypts, at most one TLS record's worth).
    pub(crate) fn read(
        &mut self,
        input: &[u8],
        plain: &mut BytesMut,
        room: usize,
        unix_ms: u64,
    ) -> Result<ReadOutcome, PrefaceOrTls> {
        let _link = self.scope.enter(unix_ms);
        if !self.sniffed && !input.is_empty() {
            self.sniffed = true;
            if let Some(err) = not_tls(input) {
                // Let rustls see the bytes anyway: it answers with an alert record, which
                // tells a plaintext palisade peer that this endpoint speaks TLS.
                let mut rest = input;
                let _ = self.conn.read_tls(&mut rest);
                let _ = self.conn.process_new_packets();
                self.failed = true;
                return Err(PrefaceOrTls::Preface(err));
            }
        }
        if self.is_ready() {
            // Plaintext is never longer than the records carrying it: one allocation
            // for the whole read instead of growing record by record.
            plain.reserve(input.len().min(room));
        }
        let mut rest = input;
        let mut produced = 0usize;
        let mut peer_closed = false;
        while produced < room && !rest.is_empty() {
            match self.conn.read_tls(&mut rest) {
                Ok(0) => {
                    // close_notify already received: nothing more is read.
                    peer_closed = true;
                    rest = &[];
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    let err = TlsError::Protocol {
                        detail: e.to_string(),
                    };
                    return Err(self.fail_with(err));
                }
            }
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    let err = self.scope.refusal().cloned().map_or_else(
                        || TlsError::from_rustls(&e),
                        |r| TlsError::CertificateRefused(Box::new(r)),
                    );
                    return Err(self.fail_with(err));
                }
            };
            produced += self.drain_plaintext(plain);
            if state.peer_has_closed() {
                peer_closed = true;
                rest = &[];
            }
        }
        if let Err(e) = self.note_handshake_done() {
            return Err(self.fail_with(e));
        }
        if rest.is_empty() {
            self.shrink_receive_buffer();
        }
        Ok(ReadOutcome {
            consumed: input.len() - rest.len(),
            peer_closed,
        })
    }

    /// Gives back the receive buffer rustls grew for full records (32 KiB) when it holds
    /// no partial record, as at the end of a burst: an idle link keeps 4 KiB. rustls
    /// shrinks the buffer when a read starts with it empty; a source with nothing to
    /// give starts such a read without taking input or changing other state. Mid-stream
    /// reads usually end inside a record, and then this does nothing.
    fn shrink_receive_buffer(&mut self) {
        struct NothingYet;
        impl std::io::Read for NothingYet {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::WouldBlock.into())
            }
        }
        if !self.failed {
            let _ = self.conn.read_tls(&mut NothingYet);
        }
    }

    /// Moves everything rustls has decrypted into `plain`.
    fn drain_plaintext(&mut self, plain: &mut BytesMut) -> usize {
        let mut moved = 0;
        let mut reader = self.conn.reader();
        loop {
            let chunk = match reader.fill_buf() {
                Ok(chunk) if !chunk.is_empty() => chunk,
                _ => break,
            };
            let n = chunk.len();
            plain.extend_from_slice(chunk);
            reader.consume(n);
            moved += n;
        }
        moved
    }

    /// Once the handshake is complete, derives the channel binding (RFC 5705 / 8446
    /// exporter with palisade's label).
    fn note_handshake_done(&mut self) -> Result<(), TlsError> {
        if self.binding.is_some() || self.conn.is_handshaking() {
            return Ok(());
        }
        let mut binding = [0u8; CHANNEL_BINDING_LEN];
        self.conn
            .export_keying_material(&mut binding[..], CHANNEL_BINDING_LABEL, None)
            .map_err(|e| protocol(&e))?;
        self.binding = Some(binding);
        Ok(())
    }

    fn fail_with(&mut self, err: TlsError) -> PrefaceOrTls {
        self.failed = true;
        PrefaceOrTls::Tls(err)
    }

    /// The next socket bytes: queued frame-stream bytes become TLS records once the
    /// handshake is complete (so the preface, and the initiator's HELLO, travel in the
    /// flight that carries its Finished); when `closing` and everything is written, a
    /// close_notify follows.
    pub(crate) fn poll_transmit(&mut self, queue: &mut SendQueue, closing: bool) -> Option<Bytes> {
        let mut out = Vec::new();
        if self.failed || (closing && !self.is_ready()) {
            // Nothing more can be encrypted; only what rustls queued (an alert) goes out.
            queue.clear();
        } else if self.is_ready() {
            let want = queue.len().min(SEND_BATCH);
            // Room for the records too: each adds at most a header, a tag and a type.
            out.reserve(want + (want / RECORD_PLAINTEXT + 1) * 32);
            let mut taken = 0;
            while !queue.is_empty() && taken < want {
                let step = self.encrypt_from(queue, (want - taken).min(ENCRYPT_STEP));
                self.write_records(&mut out);
                if step == 0 {
                    break;
                }
                taken += step;
            }
            if closing && queue.is_empty() && !self.close_notify_sent {
                self.conn.send_close_notify();
                self.close_notify_sent = true;
            }
        }
        self.write_records(&mut out);
        (!out.is_empty()).then(|| Bytes::from(out))
    }

    /// Appends every record rustls holds to `out`.
    fn write_records(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Hands one step of queued plaintext, at most `limit` bytes, to rustls in one
    /// vectored write and returns the bytes taken. rustls cuts records across the
    /// slices, so a frame's header shares a record with its payload instead of making a
    /// 5-byte record of its own, and small frames (coalesced by the queue) fill whole
    /// records. Unless it takes the rest of the queue, a step ends on a record
    /// boundary: every record but the queue's last is full (a step that ended mid-record
    /// would leave a short record behind, one per step).
    fn encrypt_from(&mut self, queue: &mut SendQueue, limit: usize) -> usize {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let (count, _) = queue.fill_slices(limit, RECORD_PLAINTEXT, &mut slices);
        let n = self
            .conn
            .writer()
            .write_vectored(slices.get(..count).unwrap_or_default())
            .unwrap_or_default();
        queue.advance(n);
        n
    }

    /// Whether bytes remain to be handed to `poll_transmit`'s caller.
    pub(crate) fn has_pending_output(&self, closing: bool) -> bool {
        self.conn.wants_write()
            || (closing && !self.failed && self.is_ready() && !self.close_notify_sent)
    }

    /// What the handshake established about the peer.
    pub(crate) fn peer(&self) -> Option<TlsPeer> {
        let accepted = self.scope.accepted()?;
        let certificate = self.conn.peer_certificates()?.first()?.clone().into_owned();
        Some(TlsPeer {
            version: self
                .conn
                .protocol_version()
                .and_then(|v| v.as_str())
                .unwrap_or("unknown"),
            cipher_suite: self
                .conn
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .unwrap_or("unknown"),
            names: accepted.names.clone(),
            certificate,
        })
    }

    /// The accepted peer certificate's names, once the handshake verified one.
    pub(crate) fn cert_names(&self) -> Option<&CertNames> {
        self.scope.accepted().map(|a| &a.names)
    }

    /// The peer's certificate decided again under `ctx`'s policy at `unix_ms` (the
    /// settings changed while the link was joined). `None` before the handshake.
    pub(crate) fn recheck(
        &self,
        ctx: &TlsContext,
        unix_ms: u64,
    ) -> Option<Result<(), CertRefusal>> {
        let chain = self.conn.peer_certificates()?;
        let now = UnixTime::since_unix_epoch(Duration::from_millis(unix_ms));
        Some(
            ctx.policy
                .recheck(chain, self.server_name.as_ref(), now)
                .map(|_| ()),
        )
    }

    /// When the peer's certificate ends (notAfter, unix seconds).
    pub(crate) fn peer_not_after(&self) -> Option<i64> {
        self.scope.accepted().map(|a| a.not_after)
    }
}

/// A failure while reading: the peer does not speak TLS, or TLS failed.
#[derive(Debug)]
pub(crate) enum PrefaceOrTls {
    Preface(PrefaceError),
    Tls(TlsError),
}

/// Recognizes a peer that does not speak TLS from its first bytes. TLS records start
/// with content type 0x14..=0x17 (a ClientHello or ServerHello with 0x16, an alert with
/// 0x15).
fn not_tls(first: &[u8]) -> Option<PrefaceError> {
    match first.first() {
        Some(0x14..=0x17) | None => None,
        Some(_) => Some(preface::diagnose_non_tls(first)),
    }
}

fn protocol(e: &rustls::Error) -> TlsError {
    TlsError::Protocol {
        detail: e.to_string(),
    }
}
