//! Replayed and forged transactions, submitted straight to the API.

mod common;

use common::Net;
use medledger_ledger::api::TxStatus;
use medledger_ledger::{RecordAccess, Transaction, TxBody, TxKind, TxOutcome};
use medledger_sdk::{COMMIT_TIMEOUT, Client, Home, SdkError};
use medledger_types::{Nonce, PurposeOfUse, RecordId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_and_forged_transactions_are_rejected() {
    let net = Net::start();
    net.ok(&["id", "create", "alice", "--role", "patient", "--as", "org1-admin"]);
    net.ok(&["id", "create", "drbob", "--role", "doctor", "--as", "org1-admin"]);
    let home = Home::open(&net.home).unwrap();
    let config = home.config().unwrap();
    let alice = home.load_identity("alice", b"correct horse battery staple").unwrap();
    let bob = home.load_identity("drbob", b"correct horse battery staple").unwrap();
    let client = Client::new(config.nodes.clone()).unwrap();
    let kind =
        TxKind::RecordAccess(RecordAccess { record: RecordId::new([1; 16]), version: 1, purpose: PurposeOfUse::Treat });
    let body = |signer: &medledger_sdk::Identity, nonce: u64| TxBody {
        chain_id: config.chain_id,
        signer: signer.member,
        nonce: Nonce::new(nonce),
        kind: kind.clone(),
        sidecar_digest: None,
    };

    // A valid transaction (about an unknown record: rejected by policy, but committed).
    let nonce = client.next_nonce(&alice.member).await.unwrap().get();
    let tx = Transaction::sign(body(&alice, nonce), &alice.signing);
    let id = client.submit(tx.clone(), None).await.unwrap();
    let status = client.wait(&id, COMMIT_TIMEOUT).await.unwrap();
    assert!(matches!(status, TxStatus::Committed { outcome: TxOutcome::Rejected { .. }, .. }), "{status:?}");
    let height = net.height();

    // Replay: refused at the door, nothing committed.
    let replay = client.submit(tx, None).await;
    assert!(matches!(&replay, Err(SdkError::Usage(m)) if m.contains("nonce")), "{replay:?}");
    // Forged: alice's body signed with bob's key; a zero signature; another chain.
    let forged = Transaction::sign(body(&alice, nonce + 10), &bob.signing);
    assert!(matches!(client.submit(forged, None).await, Err(SdkError::Usage(m)) if m.contains("signature")));
    let mut zero = Transaction::sign(body(&alice, nonce + 11), &alice.signing);
    zero.signature = medledger_crypto::sign::Signature([0; 64]);
    assert!(client.submit(zero, None).await.is_err());
    let mut other_chain = body(&alice, nonce + 12);
    other_chain.chain_id = medledger_types::ChainId::new([9; 32]);
    let other = Transaction::sign(other_chain, &alice.signing);
    assert!(matches!(client.submit(other, None).await, Err(SdkError::Usage(m)) if m.contains("chain")));
    assert_eq!(net.height(), height, "nothing was committed");
}
