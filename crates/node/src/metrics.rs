//! A validator's Prometheus metrics, served at `GET /metrics` together with the consensus engine's
//! and the runtime's own (commonware registers those in the same registry). Only counts, heights
//! and durations: no identifier of a patient, member or record ever becomes a label.

use std::any::Any;

use commonware_runtime::Metrics;
use commonware_runtime::telemetry::metrics::raw::{Counter, Family, Gauge, Histogram};

/// Labels of the transaction counter: kind (`grant`, `record_access`...) and result (`applied`, or
/// the rejection code).
pub type TxLabels = Vec<(&'static str, &'static str)>;

#[derive(Clone)]
pub struct NodeMetrics {
    /// Finalized blocks committed to the state.
    pub blocks: Counter,
    /// Committed transactions by kind and result.
    pub txs: Family<TxLabels, Counter>,
    /// Time to commit a finalized block (chain log append and state transaction), in seconds.
    pub commit_seconds: Histogram,
    /// From a block's time to its commit here, in seconds (the commit latency clients see).
    pub finality_seconds: Histogram,
    /// The last committed height.
    pub height: Gauge,
    /// Transactions waiting in the mempool.
    pub mempool: Gauge,
    /// Object store and state database errors met while serving requests.
    pub storage_errors: Counter,
    /// Key shares released to readers of allowed accesses (threshold release).
    pub shares_released: Counter,
    /// Erasures this validator has carried out (ciphertext, sidecars and shares deleted).
    pub erasures: Counter,
    /// Signed requests refused because their signer had too many within the signature window.
    pub signer_busy: Counter,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self {
            blocks: Counter::default(),
            txs: Family::default(),
            commit_seconds: Histogram::new((0..14).map(|i| 0.000_5 * 2f64.powi(i))),
            finality_seconds: Histogram::new((0..12).map(|i| 0.005 * 2f64.powi(i))),
            height: Gauge::default(),
            mempool: Gauge::default(),
            storage_errors: Counter::default(),
            shares_released: Counter::default(),
            erasures: Counter::default(),
            signer_busy: Counter::default(),
        }
    }
}

impl NodeMetrics {
    /// Registers every metric under `context`; the returned handles keep them exposed.
    pub fn register(&self, context: &impl Metrics) -> Vec<Box<dyn Any + Send>> {
        vec![
            Box::new(context.register("blocks_committed", "finalized blocks committed", self.blocks.clone())),
            Box::new(context.register("transactions", "committed transactions by kind and result", self.txs.clone())),
            Box::new(context.register(
                "block_commit_seconds",
                "time to commit a finalized block",
                self.commit_seconds.clone(),
            )),
            Box::new(context.register(
                "finality_seconds",
                "from a block's time to its commit on this validator",
                self.finality_seconds.clone(),
            )),
            Box::new(context.register("height", "last committed height", self.height.clone())),
            Box::new(context.register("mempool_transactions", "transactions in the mempool", self.mempool.clone())),
            Box::new(context.register(
                "storage_errors",
                "storage errors met while serving requests",
                self.storage_errors.clone(),
            )),
            Box::new(context.register(
                "shares_released",
                "key shares released to readers of allowed accesses",
                self.shares_released.clone(),
            )),
            Box::new(context.register(
                "erasures",
                "erasures carried out (ciphertext, sidecars and shares deleted)",
                self.erasures.clone(),
            )),
            Box::new(context.register(
                "signer_busy_refusals",
                "signed requests refused: their signer had too many within the signature window",
                self.signer_busy.clone(),
            )),
        ]
    }
}
