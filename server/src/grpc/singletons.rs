//! `SingletonAdminService`: administration of the processor, scheduler and
//! diff singleton programs. The logic lives in [`crate::singletons`]; this
//! file maps requests and responses.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use valence_lifecycle_api::v1::{
    singleton_admin_service_server::SingletonAdminService, GetSingletonsRequest,
    GetSingletonsResponse, InitializeSingletonsRequest, InitializeSingletonsResponse,
    PauseSingletonRequest, PauseSingletonResponse, ResumeSingletonRequest, ResumeSingletonResponse,
    UpdateSingletonConfigRequest, UpdateSingletonConfigResponse,
};

use crate::{
    error::{ApiError, ApiResult},
    singletons::Kind,
    AppState,
};

/// The SingletonAdminService implementation.
pub(crate) struct SingletonApi {
    state: Arc<AppState>,
}

impl SingletonApi {
    /// The service over the shared state.
    pub(crate) fn new(state: Arc<AppState>) -> Self {
        SingletonApi { state }
    }
}

/// One singleton, or None for all; `singleton` is ignored when `all` is set.
fn target(singleton: i32, all: bool) -> ApiResult<Option<Kind>> {
    if all {
        return Ok(None);
    }
    Kind::from_proto("singleton", singleton).map(Some)
}

#[tonic::async_trait]
impl SingletonAdminService for SingletonApi {
    async fn initialize_singletons(
        &self,
        request: Request<InitializeSingletonsRequest>,
    ) -> Result<Response<InitializeSingletonsResponse>, Status> {
        let singletons = self.state.singletons.initialize(request.get_ref()).await?;
        Ok(Response::new(InitializeSingletonsResponse { singletons }))
    }

    async fn get_singletons(
        &self,
        _request: Request<GetSingletonsRequest>,
    ) -> Result<Response<GetSingletonsResponse>, Status> {
        let singletons = self.state.singletons.get().await?;
        Ok(Response::new(GetSingletonsResponse { singletons }))
    }

    async fn pause_singleton(
        &self,
        request: Request<PauseSingletonRequest>,
    ) -> Result<Response<PauseSingletonResponse>, Status> {
        let r = request.get_ref();
        let (singletons, message) = self
            .state
            .singletons
            .pause(target(r.singleton, r.all)?)
            .await?;
        Ok(Response::new(PauseSingletonResponse {
            singletons,
            message,
        }))
    }

    async fn resume_singleton(
        &self,
        request: Request<ResumeSingletonRequest>,
    ) -> Result<Response<ResumeSingletonResponse>, Status> {
        let r = request.get_ref();
        let (singletons, message) = self
            .state
            .singletons
            .resume(target(r.singleton, r.all)?)
            .await?;
        Ok(Response::new(ResumeSingletonResponse {
            singletons,
            message,
        }))
    }

    async fn update_singleton_config(
        &self,
        request: Request<UpdateSingletonConfigRequest>,
    ) -> Result<Response<UpdateSingletonConfigResponse>, Status> {
        let update = request.get_ref().update.as_ref().ok_or_else(|| {
            ApiError::invalid("update", "give a processor, scheduler or diff update")
        })?;
        let singleton = self.state.singletons.update(update).await?;
        Ok(Response::new(UpdateSingletonConfigResponse {
            singleton: Some(singleton),
        }))
    }
}
