//! TCP ingress and egress: `tcp` sources polled by their shard's own loop, `tcp` sinks served by
//! one edge thread per sink, and the reference clients behind `dirigo send` and `dirigo tail`.
//!
//! - [`ingress`]: [`TcpIngress`], the source instance: a non-blocking listener and its
//!   connections, read by the shard loop itself (no task, no thread per connection).
//! - [`conn`]: one client connection: bytes in, records out (binary frames or NDJSON lines),
//!   and what a bad input does to it (an error to the client, then close).
//! - [`limits`]: what a source lets its clients hold ([`Limits`]: connections, idle time, line
//!   and frame sizes), what it refuses, and its [`IngressCounts`].
//! - [`egress`]: [`EgressHub`] (the listener and its edge thread) and [`EgressSink`] (what each
//!   shard's sink instance encodes and hands over).
//! - [`readiness`]: [`Readiness`], the thread that rings a parked shard's doorbell when its tcp
//!   source has input (so a parked shard needs no timer to notice bytes).
//! - [`uring`]: [`UringRx`], the io_uring receive path (`tcp_io = "uring"`): multishot
//!   receive into a provided buffer ring, one small ring per tcp source.
//! - [`wire`]: what the TCP protocol adds to `dirigo-net`: the schema check, the Hello frame
//!   carrying a sink's schema, error frames and lines.
//! - [`client`]: the reference clients (`send`, `tail`).
//!
//! Why the shard polls its sockets instead of awaiting glommio futures, and what it costs, is in
//! `docs/why-tcp-ingress.md`.

pub mod client;
pub mod conn;
pub mod egress;
pub mod ingress;
pub mod limits;
pub mod readiness;
pub mod uring;
pub mod wire;

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

pub use client::{send, tail, ClientError, SendMode, SendReport};
pub use egress::{EgressCounts, EgressHub, EgressSink};
pub use ingress::{IngressSpec, TcpIngress};
pub use limits::{human_size, IngressCounts, Limits, Refusal};
pub use readiness::Readiness;
pub use uring::UringRx;

/// Record encoding on a TCP connection (`format` of a tcp source or sink).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WireFormat {
    /// One JSON object per line.
    Ndjson,
    /// Length-prefixed rkyv frames (see the crate root).
    Binary,
}

/// What a tcp sink does when its subscribers do not keep up (`delivery` of a tcp sink).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Nothing is dropped: output waits (bounded) for a subscriber, and when the slowest one is
    /// [`egress::MAX_LAG`] behind, the sink's shards wait for it (backpressure to the sources).
    Block,
    /// The engine never waits: output produced while no one subscribes is dropped, and a
    /// subscriber more than [`egress::MAX_LAG`] behind is disconnected; every dropped record is
    /// counted and logged at warn.
    Lossy,
}

/// How tcp sources receive (`tcp_io`): a non-blocking `recv` per read, or io_uring multishot
/// receive into a provided buffer ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TcpIo {
    Recv,
    Uring,
}

/// The config names of a closed set of modes.
macro_rules! config_names {
    ($ty:ident { $($variant:ident = $text:literal),+ }) => {
        impl $ty {
            /// Every valid config name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The config name.
            pub fn name(self) -> &'static str {
                match self { $($ty::$variant => $text,)+ }
            }

            /// Parses a config name.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($ty::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}
config_names!(WireFormat { Ndjson = "ndjson", Binary = "binary" });
config_names!(TcpIo { Recv = "recv", Uring = "uring" });
config_names!(Delivery { Block = "block", Lossy = "lossy" });

/// Bytes read from a socket per `read` call into a source's scratch buffer (a connection's own
/// buffer takes what its free room holds).
pub const READ_CHUNK: usize = 64 * 1024;
/// A parked shard re-polls a tcp source this often while it has open connections, if the source
/// has no readiness waker (it could not be set up) or is paused by backpressure (its readiness
/// is not armed then: unread bytes would ring at once).
pub const POLL_OPEN_NS: u64 = 1_000_000;
/// ... and this often while it only listens (new connections wait at most this long).
pub const POLL_LISTEN_NS: u64 = 10_000_000;

/// Errors setting up a TCP endpoint.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The address does not parse or resolve.
    #[error("`{addr}` is not an address to listen on: {source}")]
    BadAddress {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The address resolves to no socket address.
    #[error("`{addr}` is not an address to listen on: it resolves to nothing")]
    Unresolved { addr: String },
    /// The OS refused the listener.
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// Bind a non-blocking listener on `addr` (port 0 picks a free port).
/// Resolve `addr` to the address [`bind`] would listen on, binding nothing (what `dirigo check`
/// asks of a listen address: it must not fail because the engine it checks for is running).
pub fn resolve(addr: &str) -> Result<std::net::SocketAddr, BindError> {
    let resolved = addr.to_socket_addrs().map_err(|source| BindError::BadAddress { addr: addr.to_owned(), source })?;
    resolved.into_iter().next().ok_or_else(|| BindError::Unresolved { addr: addr.to_owned() })
}

pub fn bind(addr: &str) -> Result<TcpListener, BindError> {
    let resolved = resolve(addr)?;
    let listener = TcpListener::bind(resolved).map_err(|source| BindError::Listen { addr: resolved, source })?;
    listener.set_nonblocking(true).map_err(|source| BindError::Listen { addr: resolved, source })?;
    Ok(listener)
}
