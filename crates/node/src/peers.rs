//! What this validator sees of its peers: whether each one's API answers, and at what height.
//! Polled every few seconds for `GET /v1/status` and `medledger status`; the peers are the
//! validators of the current and any pending epoch (governance changes them).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

const POLL_INTERVAL: Duration = Duration::from_secs(2);
const POLL_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PeerState {
    pub validator: u32,
    pub api: String,
    pub up: bool,
    pub height: Option<u64>,
}

#[derive(Clone, Default)]
pub struct Peers {
    states: Arc<Mutex<Vec<PeerState>>>,
}

impl Peers {
    /// Starts polling, on the current tokio runtime, the peers `peers` names (validator index, API
    /// URL) at the time of each round.
    pub fn spawn(peers: impl Fn() -> Vec<(u32, String)> + Send + 'static) -> Self {
        let this = Peers { states: Arc::new(Mutex::new(Self::fresh(&peers(), &[]))) };
        let Ok(http) = crate::tls::peer_client().timeout(POLL_TIMEOUT).build() else { return this };
        let shared = this.clone();
        tokio::spawn(async move {
            loop {
                let peers = peers();
                {
                    let mut states = shared.states.lock().expect("peers lock");
                    *states = Self::fresh(&peers, &states);
                }
                for (i, (_, api)) in peers.iter().enumerate() {
                    let reply = http.get(format!("{api}/v1/status")).send().await;
                    let height = match reply {
                        Ok(r) if r.status().is_success() => r
                            .json::<serde_json::Value>()
                            .await
                            .ok()
                            .and_then(|v| v.get("height").and_then(serde_json::Value::as_u64)),
                        _ => None,
                    };
                    if let Some(state) = shared.states.lock().expect("peers lock").get_mut(i) {
                        state.up = height.is_some();
                        state.height = height;
                    }
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        });
        this
    }

    /// The states of `peers`, keeping what `known` says of those already polled.
    fn fresh(peers: &[(u32, String)], known: &[PeerState]) -> Vec<PeerState> {
        peers
            .iter()
            .map(|(validator, api)| {
                known.iter().find(|s| s.validator == *validator && &s.api == api).cloned().unwrap_or(PeerState {
                    validator: *validator,
                    api: api.clone(),
                    up: false,
                    height: None,
                })
            })
            .collect()
    }

    pub fn snapshot(&self) -> Vec<PeerState> {
        self.states.lock().expect("peers lock").clone()
    }
}
