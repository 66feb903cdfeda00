//! A CRI v1 client (feature `cri`): the Kubernetes Container Runtime Interface over a runtime's unix socket,
//! such as containerd's `grpc.address`.
//!
//! wonk's attribution is offline first and never waits on a daemon (see [`crate::owner`]). This client exists
//! to *enrich* what wonk already knows when the runtime answers in time, and to let the tests create pods the
//! way kubelet does. Every connection and every call is bounded by a timeout; a runtime that is slow or gone is
//! an [`Error`], never a hang.
//!
//! The messages are the subset of CRI v1 in `proto/cri.proto` (generated into [`api`] by build.rs).

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// The generated CRI v1 messages and clients (package `runtime.v1`).
#[allow(clippy::all, missing_docs)]
pub mod api {
    tonic::include_proto!("runtime.v1");
}

pub use api::image_service_client::ImageServiceClient;
pub use api::runtime_service_client::RuntimeServiceClient;

/// Why a CRI call failed.
#[derive(Debug)]
pub enum Error {
    /// The socket could not be reached (absent, refused, not a gRPC server).
    Connect(tonic::transport::Error),
    /// The runtime did not answer within the timeout.
    Timeout { what: &'static str, after: Duration },
    /// The runtime answered with an error.
    Status {
        what: &'static str,
        status: tonic::Status,
    },
    /// The local async runtime could not be built.
    Io(std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect(e) => {
                write!(f, "cannot connect to the CRI socket: {e}")?;
                let mut src = std::error::Error::source(e);
                while let Some(s) = src {
                    write!(f, ": {s}")?;
                    src = s.source();
                }
                Ok(())
            }
            Error::Timeout { what, after } => {
                write!(f, "CRI {what}: no answer within {} ms", after.as_millis())
            }
            Error::Status { what, status } => {
                write!(f, "CRI {what}: {:?}: {}", status.code(), status.message())
            }
            Error::Io(e) => write!(f, "CRI client: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// Connects to a CRI socket, giving up after `timeout`. The channel keeps `timeout` as the deadline of every
/// request made on it.
pub async fn connect(socket: &Path, timeout: Duration) -> Result<Channel, Error> {
    // tonic reads `unix:<path>` endpoints itself; the URI authority is not used on a unix socket.
    let endpoint = Endpoint::from_shared(format!("unix://{}", socket.display()))
        .map_err(Error::Connect)?
        .connect_timeout(timeout)
        .timeout(timeout);
    match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(r) => r.map_err(Error::Connect),
        Err(_) => Err(Error::Timeout {
            what: "connect",
            after: timeout,
        }),
    }
}

/// A blocking CRI client: a channel and the single-threaded async runtime that drives it. Cheap enough to
/// make one per use; not shared between threads.
pub struct Client {
    rt: tokio::runtime::Runtime,
    channel: Channel,
    /// The deadline of each call.
    pub timeout: Duration,
}

impl Client {
    /// Connects to the CRI socket at `socket`, waiting at most `timeout`; each later call also gets `timeout`.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Client, Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(Error::Io)?;
        let channel = rt.block_on(connect(socket, timeout))?;
        Ok(Client {
            rt,
            channel,
            timeout,
        })
    }

    /// A RuntimeService client on this connection, for calls not wrapped here (use with [`Client::block_on`]).
    pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    /// An ImageService client on this connection.
    pub fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone())
    }

    /// Runs one call to completion, bounded by the client's timeout.
    pub fn block_on<T, F>(&self, what: &'static str, call: F) -> Result<T, Error>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let after = self.timeout;
        // The timer must be made inside the runtime.
        match self
            .rt
            .block_on(async { tokio::time::timeout(after, call).await })
        {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status))
                if status.code() == tonic::Code::Cancelled
                    && status.message().contains("Timeout") =>
            {
                Err(Error::Timeout { what, after })
            }
            Ok(Err(status)) => Err(Error::Status { what, status }),
            Err(_) => Err(Error::Timeout { what, after }),
        }
    }

    /// The runtime's name and versions.
    pub fn version(&self) -> Result<api::VersionResponse, Error> {
        let mut c = self.runtime();
        self.block_on(
            "Version",
            c.version(api::VersionRequest {
                version: "v1".into(),
            }),
        )
    }

    /// Creates and starts a pod sandbox; returns its id. `handler` is a runtime handler name, or "" for the
    /// runtime's default.
    pub fn run_pod_sandbox(
        &self,
        config: api::PodSandboxConfig,
        handler: &str,
    ) -> Result<String, Error> {
        let mut c = self.runtime();
        let r = self.block_on(
            "RunPodSandbox",
            c.run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: handler.to_string(),
            }),
        )?;
        Ok(r.pod_sandbox_id)
    }

    pub fn stop_pod_sandbox(&self, id: &str) -> Result<(), Error> {
        let mut c = self.runtime();
        self.block_on(
            "StopPodSandbox",
            c.stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            }),
        )
        .map(drop)
    }

    pub fn remove_pod_sandbox(&self, id: &str) -> Result<(), Error> {
        let mut c = self.runtime();
        self.block_on(
            "RemovePodSandbox",
            c.remove_pod_sandbox(api::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            }),
        )
        .map(drop)
    }

    pub fn list_pod_sandbox(
        &self,
        filter: Option<api::PodSandboxFilter>,
    ) -> Result<Vec<api::PodSandbox>, Error> {
        let mut c = self.runtime();
        let r = self.block_on(
            "ListPodSandbox",
            c.list_pod_sandbox(api::ListPodSandboxRequest { filter }),
        )?;
        Ok(r.items)
    }

    /// Creates a container in a sandbox; returns its id. `sandbox_config` is the config the sandbox was run
    /// with, as kubelet sends it.
    pub fn create_container(
        &self,
        sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String, Error> {
        let mut c = self.runtime();
        let r = self.block_on(
            "CreateContainer",
            c.create_container(api::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            }),
        )?;
        Ok(r.container_id)
    }

    pub fn start_container(&self, id: &str) -> Result<(), Error> {
        let mut c = self.runtime();
        self.block_on(
            "StartContainer",
            c.start_container(api::StartContainerRequest {
                container_id: id.to_string(),
            }),
        )
        .map(drop)
    }

    /// Stops a container, killing it after `grace_seconds`.
    pub fn stop_container(&self, id: &str, grace_seconds: i64) -> Result<(), Error> {
        let mut c = self.runtime();
        self.block_on(
            "StopContainer",
            c.stop_container(api::StopContainerRequest {
                container_id: id.to_string(),
                timeout: grace_seconds,
            }),
        )
        .map(drop)
    }

    pub fn remove_container(&self, id: &str) -> Result<(), Error> {
        let mut c = self.runtime();
        self.block_on(
            "RemoveContainer",
            c.remove_container(api::RemoveContainerRequest {
                container_id: id.to_string(),
            }),
        )
        .map(drop)
    }

    pub fn list_containers(
        &self,
        filter: Option<api::ContainerFilter>,
    ) -> Result<Vec<api::Container>, Error> {
        let mut c = self.runtime();
        let r = self.block_on(
            "ListContainers",
            c.list_containers(api::ListContainersRequest { filter }),
        )?;
        Ok(r.containers)
    }

    pub fn list_images(&self) -> Result<Vec<api::Image>, Error> {
        let mut c = self.images();
        let r = self.block_on(
            "ListImages",
            c.list_images(api::ListImagesRequest { filter: None }),
        )?;
        Ok(r.images)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket nobody listens on is an error at once, and a listener that never speaks gRPC is a timeout:
    /// never a hang.
    #[test]
    fn absent_and_silent_sockets_fail_within_the_timeout() {
        let dir = std::env::temp_dir().join(format!("wonk-cri-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let absent = dir.join("absent.sock");
        let e = Client::connect(&absent, Duration::from_millis(300))
            .err()
            .unwrap();
        assert!(matches!(e, Error::Connect(_)), "{e}");
        assert!(e.to_string().contains("connect"), "{e}");

        // Accepts connections (the kernel's backlog does) but never answers.
        let silent = dir.join("silent.sock");
        let _l = std::os::unix::net::UnixListener::bind(&silent).unwrap();
        let r = Client::connect(&silent, Duration::from_millis(300)).and_then(|c| c.version());
        let e = r.err().unwrap();
        assert!(
            matches!(e, Error::Timeout { .. }) || matches!(e, Error::Connect(_)),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
