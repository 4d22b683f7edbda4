//! `WorkerService`: the bidirectional stream each worker keeps open.

use std::sync::Arc;

use presswork_proto::v1::ConnectRequest;
use presswork_proto::v1::worker_service_server::WorkerService;
use tonic::{Request, Response, Status, Streaming};

use crate::dispatch::{Dispatcher, serve_worker_stream};

pub struct WorkerApi {
    pub dispatcher: Arc<Dispatcher>,
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    type ConnectStream = crate::dispatch::WorkerStream;

    async fn connect(
        &self,
        request: Request<Streaming<ConnectRequest>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let stream =
            serve_worker_stream(Arc::clone(&self.dispatcher), request.into_inner()).await?;
        Ok(Response::new(stream))
    }
}
