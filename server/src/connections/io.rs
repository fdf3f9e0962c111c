//! The socket a [`Gate`] hands out: it fails every read and write once the
//! gate closes it, counts the client's greeting, and leaves the gate's
//! books when dropped.

use std::{
    future::Future as _,
    io,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{ready, Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::{Gate, Slot};

/// An admitted connection's socket.
pub(crate) struct Guarded<T> {
    inner: T,
    slot: Arc<Slot>,
    gate: Arc<Gate>,
    /// Registers the task's waker, so closing wakes a connection that
    /// waits on the client.
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Greeting bytes still to come.
    greeting_left: usize,
}

impl<T> Guarded<T> {
    pub(super) fn new(inner: T, slot: Arc<Slot>, gate: Arc<Gate>, greeting: usize) -> Self {
        if greeting == 0 {
            slot.greeted.store(true, Ordering::Release);
        }
        Guarded {
            inner,
            closed: Box::pin(slot.close.clone().cancelled_owned()),
            slot,
            gate,
            greeting_left: greeting,
        }
    }

    /// The gate's record of this connection.
    pub(crate) fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }

    /// An error once the gate closed the connection.
    fn check_open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.slot.close.is_cancelled() || self.closed.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed by the server (connection limits)",
            ));
        }
        Ok(())
    }

    fn note_read(&mut self, bytes: usize) {
        if self.greeting_left == 0 {
            return;
        }
        self.greeting_left = self.greeting_left.saturating_sub(bytes);
        if self.greeting_left == 0 {
            self.slot.greeted.store(true, Ordering::Release);
        }
    }
}

impl<T> Drop for Guarded<T> {
    fn drop(&mut self) {
        self.gate.release(self.slot.id);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.check_open(cx)?;
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.note_read(buf.filled().len() - before);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_open(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check_open(cx)?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_open(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What tonic puts in a gRPC request's extensions: its connection.
#[derive(Clone)]
pub(crate) struct ConnInfo {
    pub(super) slot: Arc<Slot>,
}
