//! The engine-facing application: turns the marshal's propose and verify requests into calls on
//! the [`Ledger`], and checks what only consensus knows (who led the view) before the ledger sees a
//! block.
//!
//! The marshal's [`Inline`](commonware_consensus::marshal::standard::Inline) wrapper has already
//! checked, before `verify` is called, that the block's parent is the one consensus names and that
//! its height is the parent's plus one; this module re-checks both (cheaply) so the ledger can rely
//! on them, and adds the proposer and chain-id checks.

use std::time::{Duration, UNIX_EPOCH};

use commonware_consensus::marshal::ancestry::Ancestry;
use commonware_consensus::simplex::types::Context;
use commonware_consensus::{Application, Epochable as _};
use commonware_cryptography::{Digested, Digestible, ed25519};
use commonware_runtime::Clock;
use futures::StreamExt as _;
use futures::future::{Either, select};
use medledger_ledger::Block;
use tracing::{debug, warn};

use super::Ledger;
use super::block::{ChainBlock, Digest};
use super::epochs::Known;

/// The engine's per-view context: round, leader and the parent (view, digest) to build on.
pub(crate) type ViewContext = Context<Digest, ed25519::PublicKey>;

/// Adapter from the marshal's [`Application`] to a [`Ledger`].
#[derive(Clone)]
pub(crate) struct Glue<L> {
    ledger: L,
    /// The validator sets; a block's `proposer` is a validator's stable index.
    known: Known,
    /// This validator's consensus key (its stable index comes from the validator sets, so a
    /// validator that joined by governance proposes under the index its adoption gave it).
    me: ed25519::PublicKey,
    /// Longest the ledger may take to build a proposal before the glue declines the view.
    propose_budget: Duration,
}

impl<L: Ledger> Glue<L> {
    pub(crate) fn new(ledger: L, known: Known, me: ed25519::PublicKey, propose_budget: Duration) -> Self {
        Self { ledger, known, me, propose_budget }
    }

    /// Executes, oldest first, the blocks of `chain` (newest first, each the child of the next)
    /// and the ancestors behind them this ledger has not executed: blocks notarized without this
    /// validator's vote. Stops at the first ancestor it knows, or after [`ANCESTORS_MAX`]. Returns
    /// whether every execution succeeded.
    async fn execute_with_ancestors(
        &self,
        mut chain: Vec<Block>,
        ancestry: &mut impl Ancestry<ChainBlock>,
        epoch: u64,
        now: u64,
    ) -> bool {
        while chain.len() <= ANCESTORS_MAX {
            let Some(oldest) = chain.last() else { return true };
            if self.ledger.knows(&oldest.digest().0) {
                break;
            }
            match ancestry.next().await {
                Some(ancestor) if links_to(ancestor.inner().block(), oldest) => {
                    chain.push(ancestor.inner().block().clone());
                }
                _ => break,
            }
        }
        for pair in chain.windows(2).rev() {
            if !self.ledger.verify(&pair[1], &pair[0], epoch, now).await {
                return false;
            }
        }
        true
    }

    /// The stable index of the validator holding `key`.
    fn index_of(&self, key: &ed25519::PublicKey) -> Option<u32> {
        let key: &[u8] = key.as_ref();
        let key: [u8; 32] = key.try_into().ok()?;
        self.known.get().validator(&key).map(|v| v.index)
    }
}

/// Most unexecuted ancestors re-verified before a block (beyond, the block is refused; the marshal
/// delivers finalized ones meanwhile).
const ANCESTORS_MAX: usize = 32;

/// Milliseconds since the Unix epoch on the runtime's clock (virtual in simulations).
pub(crate) fn now_ms(clock: &impl Clock) -> u64 {
    let since_epoch = clock.current().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// Checks the linkage a child must have to its parent, independent of ledger state.
fn links_to(parent: &Block, child: &Block) -> bool {
    parent.header.height.checked_next() == Some(child.header.height)
        && child.header.parent == parent.digest()
        && child.header.chain_id == parent.header.chain_id
}

impl<E, L> Application<E> for Glue<L>
where
    E: Clock,
    L: Ledger,
{
    type SigningScheme = super::Scheme;
    type Context = ViewContext;
    type Block = ChainBlock;
    type Input = ();

    async fn propose(
        &mut self,
        (runtime, context): (E, ViewContext),
        mut ancestry: impl Ancestry<ChainBlock>,
        _: (),
    ) -> Option<Digested<ChainBlock>> {
        let Some(parent) = ancestry.peek().cloned() else {
            // The marshal builds the proposal ancestry from the fetched parent, so it is never empty.
            warn!(round = %context.round, "proposal ancestry has no parent; declining the view");
            return None;
        };
        if context.leader != self.me {
            warn!(round = %context.round, "asked to propose in a view led by another validator; declining");
            return None;
        }
        let Some(index) = self.index_of(&self.me) else {
            warn!(round = %context.round, "this validator is in no validator set; declining");
            return None;
        };
        let built = {
            let ledger = self.ledger.clone();
            let parent = parent.inner().block().clone();
            let epoch = context.epoch().get();
            let now = now_ms(&runtime);
            let budget = Box::pin(runtime.sleep(self.propose_budget));
            // A parent notarized without this validator's vote is executed first (with any such
            // ancestors), so the leader builds on it without waiting for its finalization. Best
            // effort: if that fails (the parent committed meanwhile), the ledger still decides.
            let ancestors = Box::pin(async {
                let _ = ancestry.next().await;
                self.execute_with_ancestors(vec![parent.clone()], &mut ancestry, epoch, now).await
            });
            let budget = match select(ancestors, budget).await {
                Either::Left((_, budget)) => budget,
                Either::Right(((), _)) => {
                    warn!(round = %context.round, "executing the parent took longer than the propose budget; declining the view");
                    return None;
                }
            };
            let build = Box::pin(async move { ledger.propose(&parent, index, epoch, now).await });
            match select(build, budget).await {
                Either::Left((built, _)) => built,
                Either::Right(((), _)) => {
                    warn!(round = %context.round, "ledger took longer than the propose budget; declining the view");
                    None
                }
            }
        };
        let Some(block) = built else {
            // Nothing to propose: the view times out (the leader time-out) with no block.
            debug!(round = %context.round, "nothing to propose; declining the view");
            return None;
        };
        let parent_block = parent.inner().block();
        if !links_to(parent_block, &block) || block.header.proposer != index {
            warn!(
                round = %context.round,
                height = block.header.height.get(),
                "ledger built a block that is not a child of the requested parent; declining"
            );
            return None;
        }
        match ChainBlock::new(block) {
            Ok(block) => {
                let digest = block.digest();
                Some(Digested::precomputed(block, digest))
            }
            Err(error) => {
                warn!(round = %context.round, %error, "ledger built a block peers would refuse; declining");
                None
            }
        }
    }

    async fn verify(&mut self, (runtime, context): (E, ViewContext), mut ancestry: impl Ancestry<ChainBlock>) -> bool {
        // The marshal hands verification the block followed by its parent. If it ever did not, the
        // glue abstains (never resolves) rather than vote on something it has not checked.
        let (Some(block), Some(parent)) = (ancestry.next().await, ancestry.next().await) else {
            warn!(round = %context.round, "verify ancestry lacks the block or its parent; abstaining");
            return futures::future::pending().await;
        };
        let (block, parent) = (block.inner().block().clone(), parent.inner().block().clone());
        if !links_to(&parent, &block) {
            debug!(round = %context.round, "block does not extend its parent");
            return false;
        }
        if self.index_of(&context.leader) != Some(block.header.proposer) {
            debug!(round = %context.round, proposer = block.header.proposer, "block names a proposer other than the view's leader");
            return false;
        }
        // With the ancestors this ledger has not executed (notarized without its vote).
        let (epoch, now) = (context.epoch().get(), now_ms(&runtime));
        // The proposal itself (not ancestors notarized earlier) must be timed now: a leader
        // cannot backdate it to stretch an expired grant or break-glass window.
        if medledger_types::limits::proposal_backdated(block.header.time.get(), now) {
            debug!(round = %context.round, "backdated proposal");
            return false;
        }
        self.execute_with_ancestors(vec![block, parent], &mut ancestry, epoch, now).await
    }
}
