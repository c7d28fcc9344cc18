//! Room in the kernel's accept queue for a reconnect storm.
//!
//! The runtimes' `TcpListener::bind` (and std's) listen with a backlog of 128 (tokio:
//! 1024). When a partition heals or a cluster restarts, hundreds of peers dial one node
//! in the same millisecond; every connection past the backlog has its SYN dropped, and
//! the kernel retries it only after a second. The storm bench (`benches/storm.rs`) saw
//! exactly that: the whole storm waiting on a few peers' one-second retransmit. Calling
//! `listen` again on a listening socket only changes its backlog (Linux and the BSDs),
//! so the listener is widened right after it is bound; the kernel still caps the value
//! at `net.core.somaxconn` (4096 by default since Linux 5.4). Admission control, not
//! the accept queue, is what bounds the connections palisade holds.

/// The backlog every palisade listener asks for.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Widens a bound listener's accept queue to [`LISTEN_BACKLOG`].
#[cfg(unix)]
pub fn widen(listener: &impl std::os::fd::AsFd) -> std::io::Result<()> {
    rustix::net::listen(listener, LISTEN_BACKLOG).map_err(std::io::Error::from)
}

/// Widens a bound listener's accept queue (not done on this platform).
#[cfg(not(unix))]
pub fn widen<T>(_listener: &T) -> std::io::Result<()> {
    Ok(())
}
