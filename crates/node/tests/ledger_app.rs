//! The validator application against a Byzantine leader: blocks whose time, state root, results
//! or signatures are wrong are refused by an honest validator, which re-executes everything.

use medledger_crypto::sign::SigningKey;
use medledger_crypto::suite::KemSuite;
use medledger_crypto::wrap;
use medledger_ledger::{
    Block, Enroll, Genesis, GenesisMember, GenesisOrg, GenesisValidator, Transaction, TxBody, TxKind, tx_root,
};
use medledger_node::app::{App, wall_clock_ms};
use medledger_node::consensus::Ledger;
use medledger_types::limits::BLOCK_TIME_DRIFT_MAX_MS;
use medledger_types::{Digest, MemberId, Nonce, OrgId, Role, Timestamp};

struct Fixture {
    _dirs: Vec<tempfile::TempDir>,
    leader: App,
    honest: App,
    admin: SigningKey,
    genesis: Genesis,
}

fn fixture() -> Fixture {
    let admin = SigningKey::generate();
    let genesis = Genesis {
        chain_name: "byzantine-test".into(),
        created_at: Timestamp::new(wall_clock_ms() - 60_000),
        orgs: vec![GenesisOrg {
            id: OrgId::new("org1").unwrap(),
            name: "org1".into(),
            admin: GenesisMember {
                member: MemberId::new([1; 16]),
                signing_key: admin.verifying_key(),
                encryption_key: wrap::generate(KemSuite::X25519).encryption_key().clone(),
            },
        }],
        validators: (0..4)
            .map(|k| GenesisValidator {
                org: OrgId::new("org1").unwrap(),
                public_key: SigningKey::generate().verifying_key(),
                p2p_address: format!("127.0.0.1:{}", 1000 + k),
                api_address: format!("127.0.0.1:{}", 2000 + k),
            })
            .collect(),
        share_keys: None,
        policy: None,
    };
    let dirs = vec![tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let leader = App::open(dirs[0].path(), genesis.clone()).unwrap();
    let honest = App::open(dirs[1].path(), genesis.clone()).unwrap();
    Fixture { _dirs: dirs, leader, honest, admin, genesis }
}

fn enroll_tx(f: &Fixture, n: u8, nonce: u64) -> Transaction {
    let key = SigningKey::generate();
    let kind = TxKind::Enroll(Enroll {
        member: MemberId::new([n; 16]),
        org: OrgId::new("org1").unwrap(),
        role: Role::Nurse,
        signing_key: key.verifying_key(),
        encryption_key: wrap::generate(KemSuite::X25519).encryption_key().clone(),
        display_name: Some("Nurse".into()),
        chart_key: None,
        custodial: false,
    });
    let body = TxBody {
        chain_id: f.genesis.chain_id(),
        signer: MemberId::new([1; 16]),
        nonce: Nonce::new(nonce),
        kind,
        sidecar_digest: None,
    };
    Transaction::sign(body, &f.admin)
}

/// The leader builds a block at `leader_now` with one enrolment.
async fn leader_block(f: &Fixture, leader_now: u64) -> (Block, Block) {
    let genesis = f.leader.genesis();
    f.leader.submit(enroll_tx(f, 2, 1), None).unwrap();
    let block = f.leader.propose(&genesis, 1, 0, leader_now).await.expect("a block");
    (genesis, block)
}

#[tokio::test]
async fn an_honest_block_verifies() {
    let f = fixture();
    let (genesis, block) = leader_block(&f, wall_clock_ms()).await;
    assert!(f.honest.verify(&genesis, &block, 0, wall_clock_ms()).await);
}

#[tokio::test]
async fn a_leader_cannot_move_block_time_beyond_the_validators_clocks() {
    let f = fixture();
    let now = wall_clock_ms();
    // A leader whose clock runs 10 s ahead builds a self-consistent block (state root included).
    let (genesis, block) = leader_block(&f, now + 10_000).await;
    assert!(!f.honest.verify(&genesis, &block, 0, wall_clock_ms()).await, "10 s ahead is refused");
    // The same block is fine for a validator whose clock is within the bound of it.
    assert!(f.honest.verify(&genesis, &block, 0, now + 10_000 - BLOCK_TIME_DRIFT_MAX_MS + 100).await);
}

#[tokio::test]
async fn block_time_must_follow_the_parent() {
    let f = fixture();
    let (genesis, mut block) = leader_block(&f, wall_clock_ms()).await;
    block.header.time = genesis.header.time;
    assert!(!f.honest.verify(&genesis, &block, 0, wall_clock_ms()).await, "time equal to the parent's");
    block.header.time = Timestamp::new(genesis.header.time.get() - 1);
    assert!(!f.honest.verify(&genesis, &block, 0, wall_clock_ms()).await, "time before the parent's");
}

#[tokio::test]
async fn wrong_roots_and_forged_transactions_are_refused() {
    let f = fixture();
    let (genesis, block) = leader_block(&f, wall_clock_ms()).await;
    let now = wall_clock_ms();

    let mut bad_state = block.clone();
    bad_state.header.state_root = Digest::new([0xaa; 32]);
    assert!(!f.honest.verify(&genesis, &bad_state, 0, now).await, "state root");

    let mut bad_results = block.clone();
    bad_results.header.results_root = Digest::new([0xbb; 32]);
    assert!(!f.honest.verify(&genesis, &bad_results, 0, now).await, "results root");

    let mut forged = block.clone();
    forged.txs[0].signature.0[10] ^= 1;
    forged.header.tx_root = tx_root(&forged.txs);
    assert!(!f.honest.verify(&genesis, &forged, 0, now).await, "bad signature");

    let mut stranger = block.clone();
    let mut tx = enroll_tx(&f, 3, 1);
    tx = Transaction::sign(tx.body, &SigningKey::generate());
    stranger.txs.push(tx);
    stranger.sidecars.push(None);
    stranger.header.tx_root = tx_root(&stranger.txs);
    assert!(!f.honest.verify(&genesis, &stranger, 0, now).await, "transaction signed by a key not enrolled");

    let mut wrong_parent = block.clone();
    wrong_parent.header.height = medledger_types::Height::new(5);
    assert!(!f.honest.verify(&genesis, &wrong_parent, 0, now).await, "height does not follow the parent");

    let mut unknown_proposer = block.clone();
    unknown_proposer.header.proposer = 9;
    assert!(!f.honest.verify(&genesis, &unknown_proposer, 0, now).await, "proposer outside the validator set");

    // And the untouched block still verifies: the refusals were for the changes.
    assert!(f.honest.verify(&genesis, &block, 0, now).await);
}

#[tokio::test]
async fn finalized_blocks_commit_once_and_survive_reopen() {
    let f = fixture();
    let (_, block) = leader_block(&f, wall_clock_ms()).await;
    f.leader.finalized(block.clone(), None).await;
    f.leader.finalized(block.clone(), None).await;
    let last = f.leader.last_applied();
    assert_eq!(last.height.get(), 1);
    assert_eq!(last.state_root, block.header.state_root);
    assert_eq!(f.leader.mempool_len(), 0, "committed transactions leave the mempool");
    // The honest validator, never having seen the proposal, executes the finalized block itself.
    f.honest.finalized(block.clone(), None).await;
    assert_eq!(f.honest.last_applied().state_root, block.header.state_root);
}
