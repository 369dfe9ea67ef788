//! The interface between the server and an async runtime.
//!
//! The server is generic over [`Runtime`]; `io-tokio` and `io-smol` implement it. It holds only
//! what differs between runtimes: spawning, a blocking pool, timers and TCP (listening, and
//! connecting for replica catch-up). Everything above it
//! (connection handling, group commit, long polls) is written once.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// An async runtime the server can run on.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// A bound TCP listener.
    type Listener: Listener;

    /// Runtime name for the start-up log line.
    fn name(&self) -> &'static str;

    /// Runs a future to completion on this runtime (the process's main entry).
    fn block_on<F: Future>(&self, fut: F) -> F::Output;

    /// Runs a future in the background.
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, fut: F);

    /// Runs blocking work (fsync, file deletion) on a thread pool.
    fn spawn_blocking<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(
        &self,
        f: F,
    ) -> impl Future<Output = T> + Send;

    /// Completes after `d`.
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send;

    /// Binds a TCP listener.
    fn bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// Opens a TCP connection (a replica copying records from another), split into halves.
    #[allow(clippy::type_complexity)]
    fn connect(
        &self,
        addr: SocketAddr,
    ) -> impl Future<
        Output = io::Result<(
            <Self::Listener as Listener>::Reader,
            <Self::Listener as Listener>::Writer,
        )>,
    > + Send;
}

/// A TCP listener.
pub trait Listener: Send + 'static {
    /// A connection's reading half.
    type Reader: Reader;
    /// A connection's writing half.
    type Writer: Writer;
    /// Accepts one connection, split into halves.
    fn accept(
        &mut self,
    ) -> impl Future<Output = io::Result<(Self::Reader, Self::Writer, SocketAddr)>> + Send;
    /// The bound address (useful with port 0).
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// The reading half of a TCP connection.
pub trait Reader: Send + 'static {
    /// Reads some bytes; 0 means the peer closed.
    fn read(&mut self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;

    /// Reads some bytes and hands them to `sink`; 0 means the peer closed. `scratch` is where a
    /// socket read lands; a reader that already holds the bytes in a buffer of its own (TLS
    /// plaintext) hands that over instead and saves a copy.
    fn read_into<F: FnOnce(&[u8]) + Send>(
        &mut self,
        scratch: &mut [u8],
        sink: F,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        async move {
            let n = self.read(scratch).await?;
            sink(&scratch[..n]);
            Ok(n)
        }
    }
}

/// The writing half of a TCP connection.
pub trait Writer: Send + 'static {
    /// Writes all of `buf`.
    fn write_all(&mut self, buf: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
}
