//! Sluice's smol adapter: [`SmolRuntime`] implements [`sluice_proto::runtime::Runtime`].
//!
//! Thin on purpose: every method forwards to a piece of smol (an `async-executor` driven by
//! worker threads, the `blocking` thread pool, `async-io` timers, `async-net` TCP). The server
//! built on it is identical to the one built on `io-tokio`.
#![deny(missing_docs)]

use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use sluice_proto::runtime::{Listener, Reader, Runtime, Writer};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use smol::{Executor, Timer, channel};

/// A handle to a smol executor run by a pool of worker threads.
#[derive(Clone)]
pub struct SmolRuntime {
    ex: Arc<Executor<'static>>,
    // The workers run until every sender is gone: dropping the last handle stops them.
    _stop: channel::Sender<()>,
}

impl SmolRuntime {
    /// Starts an executor with `workers` threads (0: one per core).
    pub fn new(workers: usize) -> io::Result<Self> {
        let workers = match workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let ex = Arc::new(Executor::new());
        let (stop_tx, stop_rx) = channel::bounded::<()>(1);
        for _ in 0..workers {
            let ex = ex.clone();
            let stop = stop_rx.clone();
            std::thread::Builder::new()
                .name("sluice-worker".into())
                .spawn(move || smol::block_on(ex.run(stop.recv())))?;
        }
        Ok(SmolRuntime { ex, _stop: stop_tx })
    }
}

impl Runtime for SmolRuntime {
    type Listener = SmolListener;

    fn name(&self) -> &'static str {
        "smol"
    }

    fn block_on<F: Future>(&self, fut: F) -> F::Output {
        // The calling thread helps run spawned tasks while it waits.
        smol::block_on(self.ex.run(fut))
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, fut: F) {
        self.ex.spawn(fut).detach();
    }

    fn spawn_blocking<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(
        &self,
        f: F,
    ) -> impl Future<Output = T> + Send {
        // A panic in `f` resumes in the awaiting task, as with tokio's adapter.
        smol::unblock(f)
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        let timer = Timer::after(d);
        async move {
            timer.await;
        }
    }

    async fn bind(&self, addr: SocketAddr) -> io::Result<SmolListener> {
        Ok(SmolListener {
            inner: TcpListener::bind(addr).await?,
        })
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<(SmolReader, SmolWriter)> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok((SmolReader(stream.clone()), SmolWriter(stream)))
    }
}

/// A smol TCP listener.
pub struct SmolListener {
    inner: TcpListener,
}

impl Listener for SmolListener {
    type Reader = SmolReader;
    type Writer = SmolWriter;

    async fn accept(&mut self) -> io::Result<(SmolReader, SmolWriter, SocketAddr)> {
        let (stream, addr) = self.inner.accept().await?;
        stream.set_nodelay(true)?;
        // An async-net stream is a shared handle: the halves are two clones of it.
        Ok((SmolReader(stream.clone()), SmolWriter(stream), addr))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Reading half of a smol TCP stream.
pub struct SmolReader(TcpStream);

impl Reader for SmolReader {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).await
    }
}

/// Writing half of a smol TCP stream.
pub struct SmolWriter(TcpStream);

impl Writer for SmolWriter {
    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf).await
    }
}

impl Drop for SmolWriter {
    // Tokio's write half shuts down writing when dropped, so the peer sees end-of-stream even
    // while the reading half lives on; a clone would not. Do the same.
    fn drop(&mut self) {
        let _ = self.0.shutdown(Shutdown::Write);
    }
}
