//! Requests in flight per connection: a [`Busy`] guard lives from a
//! request's arrival until its response body is done (a subscription's
//! stream included), and a connection with one is neither idle nor evicted.

use std::{
    future::Future,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll},
};

use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service, ServiceExt as _};

use super::{io::ConnInfo, ms_since, Slot};

/// A request in flight on a connection.
pub(crate) struct Busy {
    slot: Arc<Slot>,
}

impl Busy {
    pub(super) fn new(slot: Arc<Slot>) -> Self {
        slot.in_flight.fetch_add(1, Ordering::AcqRel);
        slot.served.store(true, Ordering::Release);
        Busy { slot }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.slot.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.slot
                .idle_since_ms
                .store(ms_since(self.slot.epoch), Ordering::Release);
        }
    }
}

/// A response body that holds its request's [`Busy`] until it is done.
pub(crate) struct Tracked<B> {
    inner: B,
    _busy: Option<Busy>,
}

impl<B> Tracked<B> {
    /// `inner`, keeping `busy` until it is dropped.
    pub(crate) fn new(inner: B, busy: Option<Busy>) -> Self {
        Tracked { inner, _busy: busy }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Marks gRPC requests busy on their connection (found in the request's
/// extensions, where tonic puts [`ConnInfo`]).
#[derive(Clone, Copy, Default)]
pub(crate) struct TrackBusyLayer;

impl<S> Layer<S> for TrackBusyLayer {
    type Service = TrackBusy<S>;

    fn layer(&self, inner: S) -> TrackBusy<S> {
        TrackBusy { inner }
    }
}

/// See [`TrackBusyLayer`].
#[derive(Clone)]
pub(crate) struct TrackBusy<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B, R> Service<http::Request<B>> for TrackBusy<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Tracked<R>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    /// Always ready: the inner readiness (a concurrency limit) is awaited
    /// inside the call, after the request counts as in flight, so a request
    /// queued for a permit keeps its connection from looking idle.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let busy = request
            .extensions()
            .get::<ConnInfo>()
            .map(|c| c.slot.busy());
        let inner = self.inner.clone();
        Box::pin(async move {
            let response = inner.oneshot(request).await?;
            Ok(response.map(|body| Tracked::new(body, busy)))
        })
    }
}
