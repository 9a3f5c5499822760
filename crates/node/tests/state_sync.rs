//! State sync between two in-process validators' apps over real HTTP: a far-behind app installs a
//! peer's state only when the chain and its finalization certificate vouch for it, and a peer that
//! forges state, drops a block, or swaps a certificate changes nothing.

use axum::extract::Query;
use axum::routing::get;
use commonware_codec::{Copying, DecodeExt as _, Encode as _};
use commonware_consensus::simplex::types::{Finalize, Proposal};
use commonware_consensus::types::{Epoch, Round, View};
use commonware_cryptography::ed25519::PrivateKey;
use commonware_cryptography::{Signer as _, sha256};
use commonware_parallel::Sequential;
use commonware_utils::non_empty;
use commonware_utils::ordered::Set;
use medledger_crypto::sign::{SigningKey, VerifyingKey};
use medledger_ledger::{
    Block, BlockContext, BlockHeader, Genesis, GenesisMember, GenesisOrg, GenesisValidator, execute_block,
    results_root, tx_root,
};
use medledger_node::api::{ApiState, router};
use medledger_node::app::App;
use medledger_node::consensus::{Finalization, Ledger as _, Scheme, namespace_for_chain, validator_public_key};
use medledger_node::sync::{SyncError, SyncIdentity, catch_up};
use medledger_store::Blobs;
use medledger_types::{Height, MemberId, OrgId, Timestamp};

const SEEDS: [[u8; 32]; 4] = [[1; 32], [2; 32], [3; 32], [4; 32]];
/// Blocks the source commits; the snapshot is taken at SNAPSHOT, whose block (like the next one)
/// has no certificate of its own, so the syncing app must fetch and execute a tail up to TIP.
const SNAPSHOT: u64 = 10;
const TIP: u64 = 12;

fn genesis() -> Genesis {
    let admin = GenesisMember {
        member: MemberId::new([1; 16]),
        signing_key: SigningKey::generate().verifying_key(),
        encryption_key: medledger_crypto::wrap::generate(medledger_crypto::suite::KemSuite::X25519)
            .encryption_key()
            .clone(),
    };
    let org = OrgId::new("org1").unwrap();
    Genesis {
        chain_name: "sync-test".into(),
        created_at: Timestamp::new(1_000_000),
        orgs: vec![GenesisOrg { id: org.clone(), name: "org1".into(), admin }],
        validators: SEEDS
            .iter()
            .enumerate()
            .map(|(k, seed)| GenesisValidator {
                org: org.clone(),
                public_key: VerifyingKey(validator_public_key(seed)),
                p2p_address: format!("127.0.0.1:{}", 1000 + k),
                api_address: format!("127.0.0.1:{}", 2000 + k),
            })
            .collect(),
        share_keys: None,
        policy: None,
    }
}

/// A finalization of `digest` at view `view`, signed by validators 0..3 as the engine would.
fn certify(genesis: &Genesis, view: u64, digest: [u8; 32]) -> Vec<u8> {
    let namespace = namespace_for_chain(&genesis.chain_id());
    let keys: Vec<PrivateKey> = SEEDS.iter().map(|s| PrivateKey::decode(Copying(&s[..])).unwrap()).collect();
    let participants = Set::try_from(keys.iter().map(|k| k.public_key()).collect::<Vec<_>>()).unwrap();
    let schemes: Vec<Scheme> =
        keys.iter().map(|k| Scheme::signer(&namespace, participants.clone(), k.clone()).unwrap()).collect();
    let proposal =
        Proposal::new(Round::new(Epoch::zero(), View::new(view)), View::new(view - 1), sha256::Digest(digest));
    let finalizes: Vec<_> = schemes[..3].iter().map(|s| Finalize::sign(s, proposal.clone()).unwrap()).collect();
    let finalization: Finalization =
        Finalization::from_finalizes(&schemes[0], non_empty![@&finalizes], &Sequential).unwrap();
    finalization.encode().to_vec()
}

/// The next (empty) block on top of `app`'s committed state.
fn next_block(app: &App) -> Block {
    let last = app.last_applied();
    let chain_id = app.inner().chain_id;
    let height = Height::new(last.height.get() + 1);
    let time = Timestamp::new(1_000_000 + height.get() * 1_000);
    let view = app.inner().db.view(&[]).unwrap();
    let execution = execute_block(&view, BlockContext { chain_id, height, time, validators: &[] }, &[], &[]).unwrap();
    let root = app.inner().db.compute(&[], height, execution.writes).unwrap().root;
    drop(view);
    let header = BlockHeader {
        chain_id,
        height,
        parent: last.digest,
        time,
        tx_root: tx_root(&[]),
        results_root: results_root(&execution.results),
        state_root: root,
        proposer: (height.get() % 4) as u32,
    };
    Block { header, txs: vec![], sidecars: vec![] }
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

fn api(app: &App, dir: &std::path::Path) -> axum::Router {
    router(ApiState {
        app: app.clone(),
        blobs: Blobs::open("memory://", dir, None, 1 << 20).unwrap(),
        validators: vec![],
        forwarder: None,
        index: 0,
        peers: Default::default(),
        ops: Default::default(),
        keyring: None,
    })
}

fn frames(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        out.push(bytes[4..4 + len].to_vec());
        bytes = &bytes[4 + len..];
    }
    out
}

fn framed(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// A peer serving canned sync data: a state stream and chain entries (index = height - 1).
fn fake_peer(height: u64, state: Vec<u8>, chain: Vec<(Vec<u8>, Vec<u8>)>) -> axum::Router {
    #[derive(serde::Deserialize)]
    struct From {
        from: u64,
    }
    axum::Router::new()
        .route("/v1/status", get(move || async move { axum::Json(serde_json::json!({ "height": height })) }))
        .route(
            "/v1/sync/state",
            get(move || {
                let state = state.clone();
                async move { state }
            }),
        )
        .route(
            "/v1/sync/chain",
            get(move |Query(q): Query<From>| {
                let page: Vec<Vec<u8>> = chain
                    .iter()
                    .skip(q.from.saturating_sub(1) as usize)
                    .map(|pair| borsh::to_vec(pair).unwrap())
                    .collect();
                async move { framed(&page) }
            }),
        )
}

fn me(index: u32) -> SyncIdentity {
    SyncIdentity { index, key: SigningKey::from_bytes(&SEEDS[index as usize]) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_behind_app_installs_only_a_state_the_chain_vouches_for() {
    let dir = tempfile::tempdir().unwrap();
    let genesis = genesis();
    let source = App::open(&dir.path().join("source"), genesis.clone()).unwrap();
    let source_url = serve(api(&source, dir.path())).await;
    let http = reqwest::Client::new();

    // The source commits blocks 1..=TIP; the state stream is captured when it stands at SNAPSHOT.
    let mut state_at_snapshot = Vec::new();
    for height in 1..=TIP {
        let block = next_block(&source);
        let certificate = match height {
            SNAPSHOT | 11 => None,
            _ => Some(certify(&genesis, height + 3, block.digest().0)),
        };
        source.finalized(block, certificate).await;
        if height == SNAPSHOT {
            let url = format!("{source_url}/v1/sync/state");
            let parts = medledger_ledger::httpsig::RequestParts::of_url("GET", &url, &[]).unwrap();
            let now = medledger_node::app::wall_clock_ms();
            let headers =
                medledger_ledger::httpsig::sign(&SigningKey::from_bytes(&SEEDS[3]), "validator-3", &parts, now, "n1");
            let send = || {
                let mut request = http.get(&url);
                for (name, value) in &headers {
                    request = request.header(*name, value);
                }
                request.send()
            };
            let reply = send().await.unwrap();
            assert_eq!(reply.status(), 200);
            state_at_snapshot = reply.bytes().await.unwrap().to_vec();
            // The same signed request again is a replay.
            let replay = send().await.unwrap();
            assert_eq!(replay.status(), 401);
            assert!(replay.text().await.unwrap().contains("replayed"));
        }
    }
    let chain: Vec<(Vec<u8>, Vec<u8>)> = (1..=TIP)
        .map(|h| {
            let entry = source.chain_entry(Height::new(h)).unwrap().unwrap();
            (entry.block, entry.certificate)
        })
        .collect();

    // Sync data is only for validators: unsigned, or signed by a key that is not a validator's, is 401.
    let unsigned = http.get(format!("{source_url}/v1/sync/chain?from=1")).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);
    let outsider = SyncIdentity { index: 2, key: SigningKey::generate() };
    let forged = catch_up(
        &App::open(&dir.path().join("outsider"), genesis.clone()).unwrap(),
        &outsider,
        &[(0, source_url.clone())],
        2,
    )
    .await;
    assert!(matches!(forged, Err(SyncError::Peer { .. })), "{forged:?}");

    let target = App::open(&dir.path().join("target"), genesis.clone()).unwrap();
    let fresh = target.last_applied();
    let unchanged = |target: &App| {
        assert_eq!(target.last_applied(), fresh);
        assert!(target.chain_entry(Height::new(1)).unwrap().is_none());
        assert_eq!(std::fs::metadata(dir.path().join("target").join("chain.log")).unwrap().len(), 0);
        assert!(target.floor().is_none() && target.synced_at().is_none());
    };

    // A forged value in the state: its tree root is not the certified block's state root.
    let mut parts = frames(&state_at_snapshot);
    let mut batch: Vec<(Vec<u8>, Vec<u8>)> = borsh::from_slice(&parts[1]).unwrap();
    batch[0].1.push(0);
    parts[1] = borsh::to_vec(&batch).unwrap();
    let url = serve(fake_peer(TIP, framed(&parts), chain.clone())).await;
    let result = catch_up(&target, &me(3), &[(1, url)], 2).await;
    assert!(matches!(&result, Err(SyncError::Rejected { reason, .. }) if reason.contains("state root")), "{result:?}");
    unchanged(&target);

    // A block left out of the chain.
    let mut gapped = chain.clone();
    gapped.remove(4);
    let url = serve(fake_peer(TIP, state_at_snapshot.clone(), gapped)).await;
    let result = catch_up(&target, &me(3), &[(1, url)], 2).await;
    assert!(
        matches!(&result, Err(SyncError::Rejected { reason, .. }) if reason.contains("does not extend")),
        "{result:?}"
    );
    unchanged(&target);

    // The tip's certificate swapped for another block's.
    let mut swapped = chain.clone();
    swapped[TIP as usize - 1].1 = chain[0].1.clone();
    let url = serve(fake_peer(TIP, state_at_snapshot.clone(), swapped)).await;
    let result = catch_up(&target, &me(3), &[(1, url)], 2).await;
    assert!(matches!(&result, Err(SyncError::Rejected { reason, .. }) if reason.contains("certificate")), "{result:?}");
    unchanged(&target);

    // A state that claims to be at a height no certificate reaches.
    let url = serve(fake_peer(TIP, state_at_snapshot.clone(), chain[..SNAPSHOT as usize + 1].to_vec())).await;
    let result = catch_up(&target, &me(3), &[(1, url)], 2).await;
    assert!(matches!(&result, Err(SyncError::Peer { .. })), "{result:?}");
    unchanged(&target);

    // Close enough to replay: no sync.
    assert!(catch_up(&target, &me(3), &[(0, source_url.clone())], TIP).await.unwrap().is_none());
    unchanged(&target);

    // The honest peer (the real API, at TIP with a certificate there): installed, and equal to the source.
    let synced = catch_up(&target, &me(3), &[(0, source_url.clone())], 2).await.unwrap();
    assert_eq!(synced, Some(Height::new(TIP)));
    assert_eq!(target.last_applied().state_root, source.last_applied().state_root);
    assert_eq!(target.last_applied().digest, source.last_applied().digest);
    for h in 1..=TIP {
        assert_eq!(target.chain_entry(Height::new(h)).unwrap(), source.chain_entry(Height::new(h)).unwrap());
    }
    assert_eq!(target.floor(), Some(chain[TIP as usize - 1].1.clone()));
    assert_eq!(target.synced_at(), Some(Height::new(TIP)));

    // The canned snapshot at SNAPSHOT (certified only through TIP) installs too, with the tail executed.
    let other = App::open(&dir.path().join("other"), genesis.clone()).unwrap();
    let url = serve(fake_peer(TIP, state_at_snapshot, chain.clone())).await;
    assert_eq!(catch_up(&other, &me(3), &[(1, url)], 2).await.unwrap(), Some(Height::new(TIP)));
    assert_eq!(other.last_applied(), target.last_applied());
    // And both take the next block like the source does.
    let block = next_block(&source);
    let certificate = certify(&genesis, TIP + 4, block.digest().0);
    for app in [&source, &target, &other] {
        app.finalized(block.clone(), Some(certificate.clone())).await;
    }
    assert_eq!(target.last_applied(), source.last_applied());
    assert_eq!(other.last_applied().state_root, source.last_applied().state_root);
}
