//! Every limit of the system, named once. Decoders, the mempool, the API and the CLI all refer here.

/// Largest encoded transaction (body + signature), sidecar excluded.
pub const TX_BYTES_MAX: usize = 16 * 1024;
/// Largest encoded sidecar (wrapped keys and encrypted metadata of one transaction).
pub const SIDECAR_BYTES_MAX: usize = 256 * 1024;
/// Most envelopes one sidecar may carry.
pub const SIDECAR_ENVELOPES_MAX: usize = 64;
/// Largest encrypted metadata blob in a sidecar.
pub const METADATA_BYTES_MAX: usize = 16 * 1024;
/// Most transactions in one block.
pub const BLOCK_TXS_MAX: usize = 2_000;
/// Largest encoded block.
pub const BLOCK_BYTES_MAX: usize = 8 * 1024 * 1024;
/// How far a block's time may run ahead of a validator's clock.
pub const BLOCK_TIME_DRIFT_MAX_MS: u64 = 2_000;
/// How far a proposed block's time may lag behind a voting validator's clock: a Byzantine leader
/// cannot backdate a block (to stretch an expired grant or break-glass window) by more.
pub const BLOCK_TIME_LAG_MAX_MS: u64 = 30_000;

/// Whether a proposal's `time` lags more than [`BLOCK_TIME_LAG_MAX_MS`] behind a voting
/// validator's clock at `now`: such a proposal is backdated, and no honest validator votes for it.
/// (Blocks finalized earlier and replayed later are not held to it: they were voted on in time.
/// The bound ahead, [`BLOCK_TIME_DRIFT_MAX_MS`], is checked with the rest of a block.)
pub fn proposal_backdated(time_ms: u64, now_ms: u64) -> bool {
    time_ms.saturating_add(BLOCK_TIME_LAG_MAX_MS) < now_ms
}

/// Longest display name a staff member may carry on the ledger.
pub const DISPLAY_NAME_BYTES_MAX: usize = 64;
/// Longest organisation id.
pub const ORG_ID_BYTES_MAX: usize = 32;
/// Most organisations in a genesis.
pub const ORGS_MAX: usize = 64;
/// Most validators in a genesis.
pub const VALIDATORS_MAX: usize = 64;
/// Longest public encryption key (X-Wing: 1,216 bytes).
pub const ENCRYPTION_KEY_BYTES_MAX: usize = 1_216;
/// Largest record ciphertext accepted by the blob store.
pub const RECORD_CIPHERTEXT_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Longest a grant may run.
pub const GRANT_TTL_MS_MAX: u64 = 10 * 365 * 24 * 3600 * 1000;
/// Transactions waiting in one validator's mempool.
pub const MEMPOOL_TXS_MAX: usize = 50_000;
/// Page size of list and audit queries.
pub const PAGE_ITEMS_MAX: usize = 1_000;
/// Window in which a signed API request is accepted.
pub const REQUEST_SKEW_MS_MAX: u64 = 60_000;
/// How long after a committed RecordAccess its reader may fetch the ciphertext and envelopes.
pub const ACCESS_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Longest break-glass window (and the CLI's default): 24 hours.
pub const BREAK_GLASS_MS_MAX: u64 = 24 * 3600 * 1000;
/// Break-glass openings one member may make in any 24 hours; more are refused and audited.
pub const BREAK_GLASS_PER_DAY: usize = 3;
/// The least time between two share-key replacements by one validator (each one moves the share
/// epoch, and clients reseal writes dealt for the old keys: a Byzantine validator must not be able
/// to do that at will). Erasures within it are covered by the next replacement.
pub const SHARE_KEY_INTERVAL_MS: u64 = 10_000;
/// The longest break-glass note (free text, encrypted for the patient and the auditors).
pub const BREAK_GLASS_NOTE_BYTES_MAX: usize = 1024;
/// The most auditors a break-glass note is wrapped for.
pub const NOTE_READERS_MAX: usize = 64;
/// Delegates a patient may appoint at once (guardians, proxies).
pub const DELEGATES_MAX: usize = 4;
/// Members of a care team: its next key after a removal is wrapped for every remaining member in
/// one sidecar (with the link to the previous key).
pub const TEAM_MEMBERS_MAX: usize = SIDECAR_ENVELOPES_MAX - 1;
/// Care teams one member belongs to.
pub const TEAMS_PER_MEMBER_MAX: usize = 64;
/// Key epochs of a care team (a reader walks back from the current key to the one a record's key
/// was wrapped for, one envelope per epoch); a team past it is replaced by a new one.
pub const TEAM_EPOCHS_MAX: u32 = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    /// Finding 11 of the security review: no lower bound on a proposal's time.
    #[test]
    fn a_proposal_may_not_be_backdated() {
        let now = 1_000_000;
        assert!(!proposal_backdated(now, now));
        assert!(!proposal_backdated(now + BLOCK_TIME_DRIFT_MAX_MS, now), "ahead is the other bound's business");
        assert!(!proposal_backdated(now - BLOCK_TIME_LAG_MAX_MS, now));
        assert!(proposal_backdated(now - BLOCK_TIME_LAG_MAX_MS - 1, now), "a backdated proposal");
        assert!(proposal_backdated(0, now));
    }
}
