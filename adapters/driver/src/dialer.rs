//! Dialing, written once for every adapter: [`Dialer`] (generic over the runtime's
//! [`Net`], or [`Blocking`] for std sockets) holds settings that can be replaced while
//! it runs, and the adapters' free functions (`connect`, `dial`, `connect_stream`, ...)
//! are [`dial`] / [`connect_stream`] (or their blocking twins) with a fixed endpoint.
//!
//! A dial takes the settings current when it starts and keeps them to the end, so a
//! `reconfigure` racing it never mixes old and new: the join uses one set or the other.

use std::fmt;
use std::marker::PhantomData;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use palisade_core::{Config, Endpoint};

use crate::blocking::{establish_blocking_dialed, BlockingConnection};
use crate::conn::{establish_dialed, Connection};
use crate::dial::{connect_within, Dial};
use crate::error::Error;
use crate::live::LiveEndpoint;
use crate::metrics::Metrics;
use crate::serve::Net;

/// Dials and joins links with settings that can be replaced while it runs. Cheap to
/// clone; clones share the settings, so one `reconfigure` reaches every task dialing.
pub struct Dialer<N> {
    endpoint: LiveEndpoint,
    metrics: Metrics,
    _net: PhantomData<fn() -> N>,
}

impl<N> Clone for Dialer<N> {
    fn clone(&self) -> Self {
        Self {
            endpoint: self.endpoint.clone(),
            metrics: self.metrics.clone(),
            _net: PhantomData,
        }
    }
}

impl<N> fmt::Debug for Dialer<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dialer")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl<N> Dialer<N> {
    /// A dialer with `endpoint`'s settings (and its replay cache and randomness, which a
    /// `reconfigure` keeps).
    pub fn new(endpoint: Endpoint) -> Self {
        let metrics = Metrics::new(endpoint.config().node_id.clone());
        Self::with_metrics(endpoint, metrics)
    }

    /// A dialer whose links are counted in `metrics`: give it the handle the node's
    /// listener counts in (`Listener::metrics`), so one snapshot shows the whole node.
    pub fn with_metrics(endpoint: Endpoint, metrics: Metrics) -> Self {
        Self {
            endpoint: LiveEndpoint::new(endpoint),
            metrics,
            _net: PhantomData,
        }
    }

    /// The counters this dialer's links are counted in.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// `dial`, counted in this dialer's metrics unless it names counters of its own, and links follow this dialer's settings.
    fn counted(&self, dial: &Dial) -> Dial {
        let dial = dial.clone().following(self.endpoint.links().clone());
        match dial.counted_in() {
            Some(_) => dial,
            None => dial.metrics(self.metrics.clone()),
        }
    }

    /// A dialer with `config`'s settings; settings that cannot work are refused.
    pub fn from_config(config: Config) -> Result<Self, Error> {
        Ok(Self::new(Endpoint::new(config)?))
    }

    /// The settings the next dial will use.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.current()
    }

    /// New settings for the dials started from now on, and for the links this dialer
    /// made: each is decided again under them (see [`LiveEndpoint::reconfigure`]).
    /// Settings that cannot work are refused and the old ones stay.
    pub fn reconfigure(&self, config: Config) -> Result<(), Error> {
        self.endpoint.reconfigure(config)
    }
}

impl<N: Net> Dialer<N> {
    /// Dials as `dial` says (the address, the name TLS checks, the node that must
    /// answer, the TCP connect timeout) and joins.
    pub async fn dial(&self, dial: &Dial) -> Result<Connection, Error> {
        self::dial::<N>(&self.endpoint(), &self.counted(dial)).await
    }

    /// Dials `addr` (`host:port`) and joins; TLS checks the host's name.
    pub async fn connect(&self, addr: &str) -> Result<Connection, Error> {
        self.dial(&Dial::new(addr)).await
    }

    /// Joins over a stream the caller connected; `dial` gives the name TLS checks and
    /// the node that must answer (its address and timeout are not used).
    pub async fn connect_stream(
        &self,
        stream: N::TcpStream,
        dial: &Dial,
    ) -> Result<Connection, Error> {
        connect_stream::<N>(&self.endpoint(), stream, &self.counted(dial)).await
    }
}

/// Dials as `dial` says with `endpoint`'s settings and joins (see [`Dialer::dial`]).
pub async fn dial<N: Net>(endpoint: &Endpoint, dial: &Dial) -> Result<Connection, Error> {
    let stream = connect_within(&N::current(), dial, N::connect(dial.addr())).await?;
    connect_stream::<N>(endpoint, stream, dial).await
}

/// Joins over a connected stream with `endpoint`'s settings (see
/// [`Dialer::connect_stream`]).
pub async fn connect_stream<N: Net>(
    endpoint: &Endpoint,
    stream: N::TcpStream,
    dial: &Dial,
) -> Result<Connection, Error> {
    N::set_nodelay(&stream)?;
    establish_dialed(&N::current(), N::socket(stream), endpoint, dial).await
}

/// The "runtime" of a [`Dialer`] that dials blocking std sockets: its `dial`,
/// `connect` and `connect_stream` block the calling thread.
#[derive(Debug, Clone, Copy)]
pub struct Blocking;

/// [`Dialer`] for blocking std sockets: the same shape, blocking calls.
pub type BlockingDialer = Dialer<Blocking>;

impl Dialer<Blocking> {
    /// Dials as `dial` says (the address, the name TLS checks, the node that must
    /// answer, the TCP connect timeout) and joins, blocking.
    pub fn dial(&self, dial: &Dial) -> Result<BlockingConnection, Error> {
        dial_blocking(&self.endpoint(), &self.counted(dial))
    }

    /// Dials `addr` (`host:port`) and joins, blocking; TLS checks the host's name.
    pub fn connect(&self, addr: &str) -> Result<BlockingConnection, Error> {
        self.dial(&Dial::new(addr))
    }

    /// Joins over a stream the caller connected, blocking; `dial` gives the name TLS
    /// checks and the node that must answer (its address and timeout are not used).
    pub fn connect_stream(
        &self,
        stream: TcpStream,
        dial: &Dial,
    ) -> Result<BlockingConnection, Error> {
        connect_stream_blocking(&self.endpoint(), stream, &self.counted(dial))
    }
}

/// Dials as `dial` says with `endpoint`'s settings and joins, blocking.
pub fn dial_blocking(endpoint: &Endpoint, dial: &Dial) -> Result<BlockingConnection, Error> {
    let stream = match dial.timeout() {
        None => TcpStream::connect(dial.addr())?,
        Some(t) => connect_blocking_within(dial, t)?,
    };
    connect_stream_blocking(endpoint, stream, dial)
}

/// Joins over a connected std stream with `endpoint`'s settings, blocking.
pub fn connect_stream_blocking(
    endpoint: &Endpoint,
    stream: TcpStream,
    dial: &Dial,
) -> Result<BlockingConnection, Error> {
    stream.set_nodelay(true)?;
    establish_blocking_dialed(stream, endpoint, dial)
}

/// `TcpStream::connect` to each address `dial` resolves to, each bounded by `t`.
fn connect_blocking_within(dial: &Dial, t: Duration) -> Result<TcpStream, Error> {
    let mut last = None;
    for addr in dial.addr().to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, t) {
            Ok(stream) => return Ok(stream),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => last = Some(dial.timed_out()),
            Err(e) => last = Some(e.into()),
        }
    }
    Err(last.unwrap_or_else(|| Error::NoAddress(dial.addr().to_owned())))
}
