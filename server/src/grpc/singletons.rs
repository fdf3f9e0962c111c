//! `SingletonAdminService`: administration of the processor, scheduler and
//! diff singleton programs. It needs on-chain transactions to those
//! programs, which arrive with the chain adapter; until then every call
//! answers UNIMPLEMENTED rather than pretending to succeed.

use tonic::{Request, Response, Status};
use valence_lifecycle_api::v1::{
    singleton_admin_service_server::SingletonAdminService, GetSingletonsRequest,
    GetSingletonsResponse, InitializeSingletonsRequest, InitializeSingletonsResponse,
    PauseSingletonRequest, PauseSingletonResponse, ResumeSingletonRequest, ResumeSingletonResponse,
    UpdateSingletonConfigRequest, UpdateSingletonConfigResponse,
};

use crate::error::ApiError;

/// The SingletonAdminService implementation.
#[derive(Default)]
pub struct SingletonApi;

fn not_yet(rpc: &str) -> Status {
    ApiError::Unimplemented(format!(
        "{rpc} needs on-chain transactions to the singleton programs, which this release does not send yet"
    ))
    .into()
}

#[tonic::async_trait]
impl SingletonAdminService for SingletonApi {
    async fn initialize_singletons(
        &self,
        _request: Request<InitializeSingletonsRequest>,
    ) -> Result<Response<InitializeSingletonsResponse>, Status> {
        Err(not_yet("InitializeSingletons"))
    }

    async fn get_singletons(
        &self,
        _request: Request<GetSingletonsRequest>,
    ) -> Result<Response<GetSingletonsResponse>, Status> {
        Err(not_yet("GetSingletons"))
    }

    async fn pause_singleton(
        &self,
        _request: Request<PauseSingletonRequest>,
    ) -> Result<Response<PauseSingletonResponse>, Status> {
        Err(not_yet("PauseSingleton"))
    }

    async fn resume_singleton(
        &self,
        _request: Request<ResumeSingletonRequest>,
    ) -> Result<Response<ResumeSingletonResponse>, Status> {
        Err(not_yet("ResumeSingleton"))
    }

    async fn update_singleton_config(
        &self,
        _request: Request<UpdateSingletonConfigRequest>,
    ) -> Result<Response<UpdateSingletonConfigResponse>, Status> {
        Err(not_yet("UpdateSingletonConfig"))
    }
}
