//! What the client believes of a validator's answer: the network's genesis only when it hashes to
//! the chain id the client was configured with, and an access bundle only with evidence that a
//! quorum of the validators certified the state it comes from (see [`medledger_proof::access`]),
//! and the keys a writer wraps for (a chart's, a care team's, a member's) only as certified state
//! entries (see [`medledger_proof::check_state`]). A validator whose answer does not check is
//! passed over for the next one.

use std::sync::Arc;

use medledger_ledger::Genesis;
use medledger_ledger::api::{AccessBundle, ProvedState};
use medledger_ledger::state::{MemberEntry, TeamEntry, keys};
use medledger_proof::ProvedEntries;
use medledger_types::{MemberId, RecordId, TxId};

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
        self.first_checked(
            |node| self.client.access_bundle_from(node, me, access),
            |mut bundle: AccessBundle| {
                let verified = medledger_proof::check_access(&genesis, &bundle, record, version)
                    .map_err(|e| format!("the record's keys do not check: {e}"))?;
                self.client.observe_height(verified.height.get());
                bundle.metadata = verified.metadata;
                bundle.threshold = verified.threshold;
                Ok(bundle)
            },
        )
        .await
    }

    /// The certified state entries a `/proof` endpoint (`path`) serves, from the first validator
    /// whose evidence checks against the genesis and is no older than what this client has seen.
    pub(crate) async fn proved_state(&self, me: &Identity, path: &str) -> Result<ProvedEntries> {
        let genesis = self.genesis().await?;
        let seen = self.client.min_height();
        self.first_checked(
            |node| self.client.get_json_from::<ProvedState>(node, path, me),
            |proved| {
                let entries = medledger_proof::check_state(&genesis, &proved.evidence, seen)
                    .map_err(|e| format!("the keys to wrap for do not check: {e}"))?;
                self.client.observe_height(entries.height.get());
                Ok(entries)
            },
        )
        .await
    }

    /// Member `id`'s entry (its public keys are what a writer wraps for), certified.
    pub async fn proved_member(&self, me: &Identity, id: &MemberId) -> Result<MemberEntry> {
        let entries = self.proved_state(me, &format!("/v1/members/{id}/proof")).await?;
        entries.require(&keys::member(id)).map_err(|e| SdkError::Integrity(format!("the member's keys: {e}")))
    }

    /// Care team `id`'s entry (its current epoch and public key), certified; `patient` is the
    /// chart the team is asked for (in whose care, or whose patient is granting it).
    pub async fn proved_team(&self, me: &Identity, id: &MemberId, patient: &MemberId) -> Result<TeamEntry> {
        let entries = self.proved_state(me, &format!("/v1/teams/{id}/proof?patient={patient}")).await?;
        entries.require(&keys::team(id)).map_err(|e| SdkError::Integrity(format!("the team's keys: {e}")))
    }

    /// What a validator answers from `fetch(node)`, from the first validator whose answer
    /// `check` accepts (a rejection is an integrity failure, and the next validator is asked).
    async fn first_checked<'a, B, T, F>(
        &'a self,
        fetch: impl Fn(&'a str) -> F,
        check: impl Fn(B) -> std::result::Result<T, String>,
    ) -> Result<T>
    where
        F: std::future::Future<Output = Result<B>>,
    {
        // The first refusal is kept: an honest refusal is every validator's answer, and one
        // validator's false refusal must not block an answer the others give.
        let (mut refused, mut last) = (None, None);
        for node in self.client.nodes() {
            match fetch(node).await {
                Ok(answer) => match check(answer) {
                    Ok(checked) => return Ok(checked),
                    Err(e) => last = Some(SdkError::Integrity(e)),
                },
                Err(e @ (SdkError::Denied(_) | SdkError::NotFound(_) | SdkError::Conflict(_))) => {
                    refused.get_or_insert(e);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(refused.or(last).unwrap_or_else(|| SdkError::Other("no validator answered".into())))
    }
}
