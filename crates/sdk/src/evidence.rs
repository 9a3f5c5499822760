//! What the client believes of a validator's answer: the network's genesis only when it hashes to
//! the chain id the client was configured with, and an access bundle only with evidence that a
//! quorum of the validators certified the state it comes from (see [`medledger_proof::access`]).
//! A validator whose bundle does not check is passed over for the next one.

use std::sync::Arc;

use medledger_ledger::Genesis;
use medledger_ledger::api::AccessBundle;
use medledger_types::{RecordId, TxId};

use crate::error::{Result, SdkError};
use crate::home::Identity;
use crate::ops::Session;

impl Session {
    /// The network's genesis, fetched once and checked against this session's chain id.
    pub async fn genesis(&self) -> Result<Arc<Genesis>> {
        if let Some(genesis) = self.genesis.lock().expect("genesis lock").clone() {
            return Ok(genesis);
        }
        let genesis = self.client.genesis().await?;
        if genesis.chain_id() != self.chain_id || genesis.validate().is_err() {
            return Err(SdkError::Integrity("the validator served another network's genesis".into()));
        }
        let genesis = Arc::new(genesis);
        *self.genesis.lock().expect("genesis lock") = Some(genesis.clone());
        Ok(genesis)
    }

    /// The bundle of the allowed access `access` to version `version` of `record`, from the first
    /// validator whose bundle checks against the certified state. Its metadata and threshold
    /// commitments are the certified sidecar's, whatever the validator sent beside them.
    pub(crate) async fn verified_bundle(
        &self,
        me: &Identity,
        access: &TxId,
        record: RecordId,
        version: u32,
    ) -> Result<AccessBundle> {
        let genesis = self.genesis().await?;
        // The first refusal is kept: an honest refusal is every validator's answer, and one
        // validator's false refusal must not block a read the others serve.
        let (mut refused, mut last) = (None, None);
        for node in self.client.nodes() {
            let mut bundle = match self.client.access_bundle_from(node, me, access).await {
                Ok(bundle) => bundle,
                Err(e @ (SdkError::Denied(_) | SdkError::NotFound(_) | SdkError::Conflict(_))) => {
                    refused.get_or_insert(e);
                    continue;
                }
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            match medledger_proof::check_access(&genesis, &bundle, record, version) {
                Ok(verified) => {
                    self.client.observe_height(verified.height.get());
                    bundle.metadata = verified.metadata;
                    bundle.threshold = verified.threshold;
                    return Ok(bundle);
                }
                Err(e) => {
                    last = Some(SdkError::Integrity(format!("the record's keys do not check: {e}")));
                }
            }
        }
        Err(refused.or(last).unwrap_or_else(|| SdkError::Other("no validator answered".into())))
    }
}
