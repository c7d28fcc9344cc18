//! The error every adapter returns: one type, so an application can switch runtimes
//! without touching its error handling.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::admission::AdmissionError;
use palisade_core::{
    CloseCause, ConfigError, ConnectError, ConnectionError, JoinError, RejectCode, Rejection,
    SendError,
};

/// Why an adapter call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The socket failed (connect, bind, read or write).
    Io(io::Error),
    /// The settings cannot work.
    Config(ConfigError),
    /// The connection could not be set up (a bad server name, say).
    Setup(ConnectError),
    /// The link ended with an error: a failed handshake (the peer's REJECT included), a
    /// TLS failure, a protocol violation, a timeout.
    Link(ConnectionError),
    /// The link was closed (by this node or the peer); nothing more can be sent.
    Closed(CloseCause),
    /// The address has no usable socket address.
    NoAddress(String),
    /// The frame cannot be sent (larger than the peer's max_frame, or not joined).
    Send(SendError),
    /// A listener's admission control closed the connection (before any TLS or HMAC
    /// work, or by evicting it), or its limits cannot work.
    Admission(AdmissionError),
}

impl Error {
    /// The REJECT the peer sent, when the peer refused this node's join.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            Self::Link(ConnectionError::Join(JoinError::RefusedByPeer(r))) => Some(r),
            _ => None,
        }
    }

    /// The reject code of the join refusal, whichever side refused.
    pub fn reject_code(&self) -> Option<RejectCode> {
        match self {
            Self::Link(ConnectionError::Join(
                JoinError::RefusedByPeer(r) | JoinError::RefusedPeer(r),
            )) => Some(r.code),
            _ => None,
        }
    }

    /// Whether retrying cannot help until someone changes a setting, a certificate or a
    /// secret: a certificate refused, authentication failed, a cluster name mismatch, a
    /// peer that is not palisade or speaks another version, settings that cannot work.
    /// `false` means transient (refused, reset, timed out, busy, closed at admission):
    /// a reconnect loop should back off and try again, and stop on a permanent error.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Config(_) | Self::Setup(ConnectError::InvalidServerName(_)) => true,
            Self::Setup(ConnectError::Tls(_)) => true,
            Self::Link(e) => link_error_is_permanent(e),
            Self::Send(SendError::TooLarge { .. }) => true,
            _ => false,
        }
    }

    pub(crate) fn from_cause(cause: &CloseCause) -> Self {
        match cause {
            CloseCause::Error(e) => Self::Link(e.clone()),
            other => Self::Closed(other.clone()),
        }
    }
}

fn link_error_is_permanent(e: &ConnectionError) -> bool {
    match e {
        ConnectionError::Join(join) => match join.rejection().code {
            // Someone resent a recorded join, or the peer is loaded: a fresh join works.
            RejectCode::Replay | RejectCode::Busy => false,
            // A code this version does not know: back off rather than give up.
            RejectCode::Other(_) => false,
            _ => true,
        },
        // The peer is not palisade, speaks another version, TLS to plaintext, or breaks
        // the protocol: the same peer will do the same again.
        ConnectionError::Preface(_)
        | ConnectionError::Frame(_)
        | ConnectionError::Message(_)
        | ConnectionError::UnexpectedFrame { .. } => true,
        ConnectionError::Tls(tls) => !matches!(tls, palisade_core::tls::TlsError::Protocol { .. }),
        _ => false,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "socket error: {e}"),
            Self::Config(e) => e.fmt(f),
            Self::Setup(e) => e.fmt(f),
            Self::Link(e) => e.fmt(f),
            Self::Closed(cause) => write!(f, "the link is closed ({cause})"),
            Self::NoAddress(addr) => write!(f, "{addr:?} resolves to no socket address"),
            Self::Send(e) => e.fmt(f),
            Self::Admission(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Config(e) => Some(e),
            Self::Setup(e) => Some(e),
            Self::Link(e) => Some(e),
            Self::Admission(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<AdmissionError> for Error {
    fn from(e: AdmissionError) -> Self {
        Self::Admission(e)
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl From<ConnectError> for Error {
    fn from(e: ConnectError) -> Self {
        Self::Setup(e)
    }
}

/// A handshake a listener gave up on. The listener keeps serving; this is reported to
/// the failure hook and logged (tracing, target `palisade`).
#[derive(Debug)]
pub struct HandshakeFailure {
    /// Who connected.
    pub peer_addr: SocketAddr,
    /// What went wrong.
    pub error: Error,
}

impl HandshakeFailure {
    /// The reject code, when the join was refused (by either side).
    pub fn reject_code(&self) -> Option<RejectCode> {
        self.error.reject_code()
    }
}

impl fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "handshake with {} failed: {}",
            self.peer_addr, self.error
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::tls::{CertRefusal, TlsError};

    fn refused(code: RejectCode) -> Error {
        Error::Link(ConnectionError::Join(JoinError::RefusedByPeer(
            Rejection::new(code, ""),
        )))
    }

    #[test]
    fn a_reconnect_loop_stops_on_permanent_errors_and_retries_transient_ones() {
        for code in [
            RejectCode::AuthenticationFailed,
            RejectCode::UnknownKey,
            RejectCode::ClusterMismatch,
            RejectCode::IdentityNotAllowed,
            RejectCode::Reflected,
            RejectCode::ClockSkew,
        ] {
            assert!(refused(code).is_permanent(), "{code}");
        }
        for code in [RejectCode::Busy, RejectCode::Replay, RejectCode::Other(99)] {
            assert!(!refused(code).is_permanent(), "{code}");
        }
        let cert = Error::Link(ConnectionError::Tls(TlsError::CertificateRefused(
            Box::new(CertRefusal::UnknownIssuer {
                subject: "CN=x".into(),
                issuer: "CN=y".into(),
            }),
        )));
        assert!(cert.is_permanent());
        let io = |kind| Error::Io(io::Error::from(kind));
        assert!(!io(io::ErrorKind::ConnectionRefused).is_permanent());
        assert!(!io(io::ErrorKind::ConnectionReset).is_permanent());
        assert!(!io(io::ErrorKind::TimedOut).is_permanent());
        let timeout = Error::Link(ConnectionError::HandshakeTimeout {
            after: std::time::Duration::from_secs(10),
        });
        assert!(!timeout.is_permanent());
        assert!(Error::Config(ConfigError::Zero {
            setting: "max_frame"
        })
        .is_permanent());
    }
}
