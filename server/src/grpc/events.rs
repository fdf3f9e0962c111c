//! `EventStreamService.Subscribe`: server-streaming, resumable subscription
//! to the lifecycle event log (see `events::subscription`).

use std::{pin::Pin, sync::Arc};

use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use valence_lifecycle_api::v1::{
    event_stream_service_server::EventStreamService, SubscribeRequest, SubscribeResponse,
};

use crate::{service::events, AppState};

/// The EventStreamService implementation.
pub(crate) struct EventStreamApi {
    state: Arc<AppState>,
}

impl EventStreamApi {
    /// Serves from `state`.
    pub(crate) fn new(state: Arc<AppState>) -> Self {
        EventStreamApi { state }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EventStreamService for EventStreamApi {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let rx = events::subscribe(&self.state, request.get_ref()).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
