//! `edge-agent health`: one probe of a running agent, `/readyz` or `/healthz`, for container
//! health checks and monitoring. The answer is the agent's own JSON body.

use std::time::Duration;

use super::{refusal, unreachable, Base, Client, ClientError};

/// Which of the agent's probes to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `/readyz`: connected to the broker, synced, serving writes.
    Ready,
    /// `/healthz`: the process answers.
    Live,
}

impl Probe {
    fn path(self) -> &'static str {
        match self {
            Probe::Ready => "readyz",
            Probe::Live => "healthz",
        }
    }
}

impl Client {
    /// The probe's body when the agent answers 200; its refusal (503 with the reason while it is
    /// not ready) or the transport failure otherwise. Bounded by `timeout` as a whole.
    pub async fn health(
        &self,
        base: &Base,
        probe: Probe,
        timeout: Duration,
    ) -> Result<String, ClientError> {
        let url = base.route_url(probe.path(), &[]);
        let response = self
            .http
            .get(url.clone())
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| unreachable(&url, &e))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(refusal("GET", &url, response).await);
        }
        response.text().await.map_err(|e| unreachable(&url, &e))
    }
}
