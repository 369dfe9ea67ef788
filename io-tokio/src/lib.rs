//! Sluice's tokio adapter: [`TokioRuntime`] implements [`sluice_proto::runtime::Runtime`].
//!
//! Thin on purpose: every method forwards to tokio. The server built on it is identical to the
//! one built on `io-smol`.
#![deny(missing_docs)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use sluice_proto::runtime::{Listener, Reader, Runtime, Writer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A handle to a multi-threaded tokio runtime.
#[derive(Clone)]
pub struct TokioRuntime {
    handle: tokio::runtime::Handle,
    // Keeps the runtime alive as long as any handle exists.
    _rt: std::sync::Arc<tokio::runtime::Runtime>,
}

impl TokioRuntime {
    /// Builds a multi-threaded runtime with `workers` threads (0: one per core).
    pub fn new(workers: usize) -> io::Result<Self> {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.enable_all().thread_name("sluice-worker");
        if workers > 0 {
            b.worker_threads(workers);
        }
        let rt = std::sync::Arc::new(b.build()?);
        Ok(TokioRuntime {
            handle: rt.handle().clone(),
            _rt: rt,
        })
    }
}

impl Runtime for TokioRuntime {
    type Listener = TokioListener;

    fn name(&self) -> &'static str {
        "tokio"
    }

    fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.handle.block_on(fut)
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, fut: F) {
        self.handle.spawn(fut);
    }

    fn spawn_blocking<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(
        &self,
        f: F,
    ) -> impl Future<Output = T> + Send {
        let task = self.handle.spawn_blocking(f);
        async move {
            match task.await {
                Ok(v) => v,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(d)
    }

    async fn bind(&self, addr: SocketAddr) -> io::Result<TokioListener> {
        Ok(TokioListener {
            inner: tokio::net::TcpListener::bind(addr).await?,
        })
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<(TokioReader, TokioWriter)> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        Ok((TokioReader(r), TokioWriter(w)))
    }
}

/// A tokio TCP listener.
pub struct TokioListener {
    inner: tokio::net::TcpListener,
}

impl Listener for TokioListener {
    type Reader = TokioReader;
    type Writer = TokioWriter;

    async fn accept(&mut self) -> io::Result<(TokioReader, TokioWriter, SocketAddr)> {
        let (stream, addr) = self.inner.accept().await?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        Ok((TokioReader(r), TokioWriter(w), addr))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Reading half of a tokio TCP stream.
pub struct TokioReader(OwnedReadHalf);

impl Reader for TokioReader {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).await
    }
}

/// Writing half of a tokio TCP stream.
pub struct TokioWriter(OwnedWriteHalf);

impl Writer for TokioWriter {
    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf).await
    }
}
