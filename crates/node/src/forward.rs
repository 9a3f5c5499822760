//! Transaction forwarding: a validator passes each newly admitted transaction to its peers, in
//! batches, so that whichever validator leads the next view can propose it. Forwarding only
//! speeds things up: a transaction that is not forwarded is still proposed by the validator that
//! admitted it, when that one leads.

use std::time::Duration;

use medledger_ledger::api::SubmitRequest;
use medledger_types::encode;
use tokio::sync::mpsc;

/// Header marking a forwarded submission (never forwarded again).
pub const HEADER_FORWARDED: &str = "x-medledger-forwarded";
/// Most transactions in one forwarded batch (and in one `POST /v1/tx/batch`).
pub const BATCH_TXS_MAX: usize = 1_000;
/// Transactions waiting to be forwarded; beyond this, forwarding is skipped.
const QUEUE_TXS_MAX: usize = 20_000;
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Forwarder {
    queue: mpsc::Sender<SubmitRequest>,
}

impl Forwarder {
    /// Starts the forwarding task on the current tokio runtime. `peers` names the peers' API
    /// URLs at the time of each batch (the validator set changes by governance).
    pub fn spawn(peers: impl Fn() -> Vec<String> + Send + 'static) -> Option<Self> {
        let (queue, mut rx) = mpsc::channel::<SubmitRequest>(QUEUE_TXS_MAX);
        let http = crate::tls::peer_client().timeout(PEER_TIMEOUT).build().ok()?;
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < BATCH_TXS_MAX {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let body = encode(&batch);
                let peers = peers();
                let sends = peers.iter().map(|peer| {
                    let request = http
                        .post(format!("{peer}/v1/tx/batch"))
                        .header(HEADER_FORWARDED, "1")
                        .header("content-type", "application/octet-stream")
                        .body(body.clone());
                    async move {
                        match request.send().await {
                            Err(e) => tracing::debug!(error = %e, "forwarding to a peer failed"),
                            // Reading each reply costs a parse per batch: only when it is logged.
                            Ok(response) if tracing::enabled!(tracing::Level::DEBUG) => {
                                let status = response.status();
                                let body = response.bytes().await.unwrap_or_default();
                                let refused = serde_json::from_slice::<Vec<serde_json::Value>>(&body)
                                    .map_or(0, |results| results.iter().filter(|r| r.get("error").is_some()).count());
                                if !status.is_success() || refused > 0 {
                                    tracing::debug!(%status, refused, "a peer refused forwarded transactions");
                                }
                            }
                            Ok(_) => {}
                        }
                    }
                });
                futures::future::join_all(sends).await;
            }
        });
        Some(Self { queue })
    }

    /// Queues a transaction for the peers; drops it if the queue is full.
    pub fn forward(&self, request: SubmitRequest) {
        let _ = self.queue.try_send(request);
    }
}
