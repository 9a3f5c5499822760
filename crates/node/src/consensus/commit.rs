//! Delivery of finalized blocks to the ledger: the marshal reports each finalized block, in height
//! order and at least once, with an acknowledgement; this module hands it to
//! [`Ledger::finalized`] together with its finalization certificate and acknowledges only after the
//! ledger has returned (its commit is durable).
//!
//! Invariant: a block is acknowledged only after `Ledger::finalized` returned for it, and blocks
//! are handed to the ledger in the order the marshal delivered them. After a crash the marshal
//! re-delivers every block not yet acknowledged, so nothing finalized is lost; the ledger skips the
//! re-deliveries it has already committed.

use commonware_actor::Feedback;
use commonware_codec::Encode as _;
use commonware_consensus::marshal::Update;
use commonware_consensus::marshal::core::Mailbox;
use commonware_consensus::marshal::standard::Standard;
use commonware_consensus::{Heightable, Reporter};
use commonware_cryptography::{Digested, Digestible};
use commonware_utils::Acknowledgement as _;
use commonware_utils::acknowledgement::Exact;
use futures::StreamExt as _;
use futures::channel::mpsc;
use tracing::{debug, info};

use super::block::ChainBlock;
use super::{Ledger, Schedule};

/// A finalized block and the acknowledgement the marshal waits for.
type Delivery = (Digested<ChainBlock>, Exact);

/// The marshal's reporter: queues finalized blocks for [`run_committer`].
///
/// The queue needs no bound of its own: the marshal dispatches at most `max_pending_acks` blocks
/// before it waits for acknowledgements.
#[derive(Clone)]
pub(crate) struct FinalizedQueue {
    sender: mpsc::UnboundedSender<Delivery>,
}

impl FinalizedQueue {
    pub(crate) fn new() -> (Self, mpsc::UnboundedReceiver<Delivery>) {
        let (sender, receiver) = mpsc::unbounded();
        (Self { sender }, receiver)
    }
}

impl Reporter for FinalizedQueue {
    type Activity = Update<ChainBlock>;

    fn report(&mut self, activity: Self::Activity) -> Feedback {
        match activity {
            Update::Block(block, ack) => match self.sender.unbounded_send((block, ack)) {
                Ok(()) => Feedback::Ok,
                // The committer has stopped (shutdown). Dropping the acknowledgement stops the
                // marshal too, and the block is re-delivered on the next start.
                Err(_) => Feedback::Closed,
            },
            // Tips arrive before the blocks are durable; only delivered blocks matter here.
            Update::Tip(..) => Feedback::Ok,
        }
    }
}

/// Hands finalized blocks to the ledger, one at a time and in order, until the marshal stops.
/// After each commit, and before its acknowledgement, `committed` gets the ledger's schedule (so
/// the epochs the marshal places the next heights in already count this block). After it, the
/// marshal is asked to drop the blocks more than `retention` below it (our chain log keeps them;
/// a peer that far behind installs a verified state instead of backfilling).
pub(crate) async fn run_committer<L: Ledger>(
    ledger: L,
    marshal: Mailbox<super::Scheme, Standard<ChainBlock>>,
    mut deliveries: mpsc::UnboundedReceiver<Delivery>,
    retention: u64,
    mut committed: impl FnMut(Schedule) + Send,
) {
    while let Some((block, ack)) = deliveries.next().await {
        let height = block.height();
        let digest = block.digest();
        // The marshal archives a block's finalization (when it has one) before delivering the
        // block. A block finalized only through a descendant's certificate has none of its own.
        let certificate = marshal
            .get_finalization(height)
            .await
            .filter(|finalization| finalization.proposal.payload == digest)
            .map(|finalization| finalization.encode().to_vec());
        debug!(height = height.get(), has_certificate = certificate.is_some(), "committing finalized block");
        ledger.finalized(block.inner().block().clone(), certificate).await;
        committed(ledger.schedule());
        ack.acknowledge();
        if let Some(floor) = height.get().checked_sub(retention).filter(|floor| *floor > 0) {
            marshal.prune(commonware_consensus::types::Height::new(floor));
        }
    }
    info!("finalized-block delivery stopped");
}
