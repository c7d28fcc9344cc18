//! The public face of an async adapter, written once: [`async_adapter!`] gives an adapter
//! crate its `Listener` (with `bind` taking the runtime's own address type), `Dialer`, and
//! the free functions `connect`, `connect_with`, `connect_expecting`, `dial` and
//! `connect_stream`, all over the runtime's [`Net`](crate::Net). Every async adapter thus
//! has the same names, signatures and documentation, and holds only its runtime's calls.

/// Declares an async adapter's `Listener`, `Dialer` and dial functions for the runtime
/// type `$net` (which implements [`Net`](crate::Net)); `$addrs` is the trait of the
/// addresses its `TcpListener::bind` takes.
#[macro_export]
macro_rules! async_adapter {
    ($net:ty, $addrs:path) => {
        /// Accepts palisade links; every handshake runs in its own task.
        #[derive(Debug)]
        pub struct Listener($crate::serve::Listener<$net>);

        impl Listener {
            /// Binds and starts accepting. Failed handshakes are logged (tracing).
            pub async fn bind(
                addr: impl $addrs,
                config: $crate::__core::Config,
            ) -> Result<Self, $crate::Error> {
                Self::bind_with(addr, $crate::__core::Endpoint::new(config)?, None).await
            }

            /// Binds with an endpoint of your own (shared replay cache, seeded
            /// randomness) and an optional hook called for every failed handshake.
            pub async fn bind_with(
                addr: impl $addrs,
                endpoint: $crate::__core::Endpoint,
                on_failure: Option<$crate::FailureHook>,
            ) -> Result<Self, $crate::Error> {
                let limits = $crate::AdmissionLimits::default();
                Self::bind_with_limits(addr, endpoint, on_failure, limits).await
            }

            /// [`Listener::bind_with`] with admission limits of your own (per-source caps
            /// and rates, backoff, the cap on connections that have not joined).
            pub async fn bind_with_limits(
                addr: impl $addrs,
                endpoint: $crate::__core::Endpoint,
                on_failure: Option<$crate::FailureHook>,
                limits: $crate::AdmissionLimits,
            ) -> Result<Self, $crate::Error> {
                // Limits that cannot work are refused before a port is taken.
                limits.validate()?;
                let socket = <<$net as $crate::Net>::TcpListener>::bind(addr).await?;
                <$net as $crate::Net>::widen_backlog(&socket)?;
                $crate::serve::Listener::start(socket, endpoint, on_failure, limits).map(Self)
            }

            /// The next joined link and its peer's address.
            pub async fn accept(&self) -> ($crate::Connection, ::std::net::SocketAddr) {
                self.0.accept().await
            }

            /// The bound address.
            pub fn local_addr(&self) -> ::std::net::SocketAddr {
                self.0.local_addr()
            }

            /// Handshakes in progress now (connections that have not joined).
            pub fn handshakes_in_progress(&self) -> usize {
                self.0.handshakes_in_progress()
            }

            /// New settings for the links accepted from now on: new handshakes use them,
            /// joined links and handshakes in progress keep theirs. Settings that cannot
            /// work are refused and the old ones stay.
            pub fn reconfigure(&self, config: $crate::__core::Config) -> Result<(), $crate::Error> {
                self.0.reconfigure(config)
            }

            /// The admission counters (refusals, evictions, backoffs, joins).
            pub fn stats(&self) -> $crate::AdmissionStats {
                self.0.stats()
            }

            /// The node's counters this listener counts in (joins, refusals, TLS
            /// failures, frames, bytes); give a clone to `Dialer::with_metrics`.
            pub fn metrics(&self) -> &$crate::Metrics {
                self.0.metrics()
            }
        }

        /// Dials and joins links with settings that can be replaced while it runs
        /// (`reconfigure`); cheap to clone and share between tasks.
        pub type Dialer = $crate::Dialer<$net>;

        /// Dials `addr` (`host:port`) and joins. With `verify_hostname` on (the default
        /// of settings in CA mode), TLS checks the acceptor's certificate for the host;
        /// use [`dial`] with `Dial::server_name` to check another name.
        ///
        /// A failed join is returned only once the refusal owed to the peer (REJECT or
        /// CLOSE, TLS close_notify, end of stream) is with the socket, or after at most
        /// `palisade_driver::REFUSAL_FLUSH` (1 s) for a peer that does not read; see
        /// `palisade_driver::establish`.
        pub async fn connect(
            addr: &str,
            config: $crate::__core::Config,
        ) -> Result<$crate::Connection, $crate::Error> {
            connect_with(&$crate::__core::Endpoint::new(config)?, addr).await
        }

        /// Dials `addr` with an endpoint of your own and joins.
        pub async fn connect_with(
            endpoint: &$crate::__core::Endpoint,
            addr: &str,
        ) -> Result<$crate::Connection, $crate::Error> {
            connect_expecting(endpoint, addr, None).await
        }

        /// Dials `addr` and joins only if the node answering there has node id
        /// `expected_peer` (when given): any other node is refused with reject code 9.
        pub async fn connect_expecting(
            endpoint: &$crate::__core::Endpoint,
            addr: &str,
            expected_peer: Option<&str>,
        ) -> Result<$crate::Connection, $crate::Error> {
            dial(
                endpoint,
                &$crate::Dial::new(addr).expect_peer_opt(expected_peer),
            )
            .await
        }

        /// Dials as `dial` says (the address, the name TLS checks, the node that must
        /// answer, the TCP connect timeout) and joins.
        pub async fn dial(
            endpoint: &$crate::__core::Endpoint,
            dial: &$crate::Dial,
        ) -> Result<$crate::Connection, $crate::Error> {
            $crate::dialer::dial::<$net>(endpoint, dial).await
        }

        /// Joins over a stream the caller connected (say, from a chosen source
        /// address); `dial` gives the name TLS checks and the node that must answer
        /// (its address and timeout are not used).
        pub async fn connect_stream(
            endpoint: &$crate::__core::Endpoint,
            stream: <$net as $crate::Net>::TcpStream,
            dial: &$crate::Dial,
        ) -> Result<$crate::Connection, $crate::Error> {
            $crate::dialer::connect_stream::<$net>(endpoint, stream, dial).await
        }
    };
}

/// Implements [`Net`](crate::Net) for the runtime type `$net` whose TCP types
/// `$listener` and `$stream` have the method names tokio, async-std and smol share
/// (`accept`, `local_addr`, `connect`, `set_nodelay`): `$current` is the runtime value to
/// spawn on now, and `$wrap` turns a stream into `$socket`, the `futures-io` view the
/// driver speaks. `backlog` (optional) widens a bound listener's accept queue
/// ([`backlog::widen`](crate::backlog::widen) where the listener exposes its descriptor).
#[macro_export]
macro_rules! tcp_net {
    (
        $net:ty,
        current: $current:expr,
        listener: $listener:ty,
        stream: $stream:ty,
        socket: $socket:ty = $wrap:expr
        $(, backlog: $widen:path)? $(,)?
    ) => {
        impl $crate::Net for $net {
            type TcpListener = $listener;
            type TcpStream = $stream;
            type Socket = $socket;

            fn current() -> Self {
                $current
            }

            fn accept(
                listener: &$listener,
            ) -> impl ::std::future::Future<
                Output = ::std::io::Result<($stream, ::std::net::SocketAddr)>,
            > + Send {
                listener.accept()
            }

            fn listener_addr(listener: &$listener) -> ::std::io::Result<::std::net::SocketAddr> {
                listener.local_addr()
            }

            fn connect(
                addr: &str,
            ) -> impl ::std::future::Future<Output = ::std::io::Result<$stream>> + Send {
                <$stream>::connect(addr)
            }

            fn set_nodelay(stream: &$stream) -> ::std::io::Result<()> {
                stream.set_nodelay(true)
            }

            fn socket(stream: $stream) -> $socket {
                $wrap(stream)
            }

            $(
                fn widen_backlog(listener: &$listener) -> ::std::io::Result<()> {
                    $widen(listener)
                }
            )?
        }
    };
}
