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

    pub(crate) fn from_cause(cause: &CloseCause) -> Self {
        match cause {
            CloseCause::Error(e) => Self::Link(e.clone()),
            other => Self::Closed(other.clone()),
        }
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
