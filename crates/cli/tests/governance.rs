//! Governance on real validator processes over TCP (DESIGN §3, §5a.6): an organisation joins with
//! its validator (4 -> 5 validators) and leaves (5 -> 4), each by a proposal 2/3 of the member
//! organisations approve; the joining validator catches up, takes part in its epoch, and the
//! network keeps serving records across both changes.

mod common;

use common::{Net, http_get, wait_until};
use medledger_crypto::threshold::{SHARE_BYTES, Share, combine};
use medledger_ledger::threshold::release_context;
use medledger_sdk::Session;
use medledger_types::{RecordId, TxId};
use serde_json::Value;

/// `GET /v1/governance` through the CLI.
fn governance(net: &Net) -> Value {
    serde_json::from_str(net.ok(&["--json", "governance", "status"]).trim()).unwrap()
}

/// The proposer of each committed block in `from..=to` on validator `k`.
fn proposers(net: &Net, k: usize, from: u64, to: u64) -> Vec<u64> {
    (from..=to)
        .map(|height| {
            let (code, body) = http_get(&net.apis[k], &format!("/v1/blocks/{height}"));
            assert_eq!(code, 200, "block {height}: {body}");
            serde_json::from_str::<Value>(&body).unwrap()["proposer"].as_u64().unwrap()
        })
        .collect()
}

/// The validators whose APIs validator `k` polls (its status' peers) and finds up.
/// Who holds shares of `record`'s key, and how many are needed: as the access bundle of a read
/// by drbob (an --all grantee) states them, from validator 0.
fn shareholders(net: &Net, record: &str) -> (Vec<u64>, u64) {
    let out = net.root.path().join("read.out");
    let read = net.ok(&["--json", "record", "get", "--as", "drbob", record, "--output", out.to_str().unwrap()]);
    let read: Value = serde_json::from_str(read.trim()).unwrap();
    let tx = read["access_tx"].as_str().unwrap();
    let (status, body) = common::api_get(net, 0, Some("drbob"), &format!("/v1/access/{tx}/bundle"));
    assert_eq!(status, 200, "{body}");
    let bundle: Value = serde_json::from_str(&body).unwrap();
    let threshold = &bundle["threshold"];
    let holders = threshold["validators"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    (holders, threshold["threshold"].as_u64().unwrap())
}

/// The `k_thr` shares of `record` (version 1) that the validators at `apis` (stable index, API)
/// release to drbob for a fresh read of his, each with the stable index of the validator that
/// released it: what an authorised reader gets, and what a validator's operator holds.
fn released_shares(net: &Net, record: &str, apis: &[(u32, String)]) -> Vec<(u32, Share)> {
    let out = net.root.path().join("read.out");
    let read = net.ok(&["--json", "record", "get", "--as", "drbob", record, "--output", out.to_str().unwrap()]);
    let read: Value = serde_json::from_str(read.trim()).unwrap();
    let tx: TxId = read["access_tx"].as_str().unwrap().parse().unwrap();
    let record: RecordId = record.parse().unwrap();
    let session = Session::open(&net.home, None).unwrap();
    let drbob = session.home.load_identity("drbob", b"correct horse battery staple").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    apis.iter()
        .map(|(index, api)| {
            let released = runtime
                .block_on(session.client.access_share(api, &drbob, &tx))
                .unwrap_or_else(|e| panic!("validator {index}'s share of {record}: {e}"));
            let context =
                release_context(session.chain_id, record, 1, released.epoch, released.validator, drbob.member);
            let bytes = medledger_crypto::wrap::open(&drbob.encryption, &released.envelope, &context).unwrap();
            (*index, Share::from_slice(&bytes[..SHARE_BYTES]).unwrap())
        })
        .collect()
}

/// Waits until `record`'s shares are held by `holders` (a re-sharing to that set finished).
fn wait_reshared(net: &Net, record: &str, holders: &[u64]) {
    wait_until(&format!("record {record} re-shared to {holders:?}"), || shareholders(net, record).0 == holders);
}

fn peers_up(net: &Net, k: usize) -> Vec<u64> {
    let status = net.status_of(k);
    let peers = status["peers"].as_array().cloned().unwrap_or_default();
    peers.iter().filter(|p| p["up"] == true).filter_map(|p| p["validator"].as_u64()).collect()
}

/// Waits until every running validator in `validators` has committed `height`.
fn wait_all(net: &Net, validators: &[usize], height: u64) {
    for k in validators {
        wait_until(&format!("validator {k} commits {height}"), || net.status_of(*k)["height"].as_u64() >= Some(height));
    }
}

#[test]
fn an_organisation_joins_with_its_validator_and_leaves() {
    let mut net = Net::start_n(4);
    net.cast();
    let put = |net: &Net, n: u32| {
        let text = common::OBSERVATION.replace("\"value\":72", &format!("\"value\":{n}"));
        let file = net.file("r.json", text.as_bytes());
        let id = net.ok(&["record", "put", "--as", "alice", "--patient", "alice", file.to_str().unwrap()]);
        (id.trim().to_string(), text)
    };
    let (r1, t1) = put(&net, 61);
    net.ok(&["grant", "--as", "alice", "--to", "drbob", "--all"]);

    // The joining organisation makes its keys, its validator's files and the proposal.
    let (api, p2p) = Net::free_addresses();
    let join = net.root.path().join("join.json");
    let join_s = join.to_str().unwrap();
    let out = net.ok(&[
        "--json",
        "governance",
        "join",
        "--org",
        "h5",
        "--name",
        "Hospital 5",
        "--p2p",
        &p2p,
        "--api",
        &api,
        "--out",
        join_s,
    ]);
    let made: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(made["validator"], 4, "{made}");
    assert!(net.dir.join("validator-4").join("validator.json").exists());
    let again = net.cli(&["governance", "join", "--org", "h5", "--p2p", &p2p, "--api", &api, "--out", join_s]);
    assert_eq!(again.code, 2, "the same organisation twice: {}", again.stderr);

    // Denied: staff, and the joining admin (not a member yet). Approvals count once per organisation.
    let refused = net.cli(&["governance", "approve", join_s, "--as", "drbob"]);
    assert_eq!(refused.code, 3, "a doctor does not vote: {}", refused.stderr);
    assert_ne!(net.cli(&["governance", "approve", join_s, "--as", "h5-admin"]).code, 0, "not a member yet");
    net.ok(&["governance", "approve", join_s, "--as", "h1-admin"]);
    let twice = net.cli(&["governance", "approve", join_s, "--as", "h1-admin"]);
    assert_ne!(twice.code, 0, "one approval per organisation");
    assert!(twice.stderr.contains("already approved"), "{}", twice.stderr);
    net.ok(&["governance", "approve", join_s, "--as", "h2-admin"]);
    assert_eq!(governance(&net)["epochs"].as_array().unwrap().len(), 1, "2 of 4 is not 2/3");
    let adopted = net.ok(&["governance", "approve", join_s, "--as", "h3-admin"]);
    assert!(adopted.contains("adopted"), "{adopted}");
    let status = governance(&net);
    let epoch1 = &status["epochs"][1];
    let joined_at = epoch1["first_height"].as_u64().unwrap();
    let indices: Vec<u64> =
        epoch1["validators"].as_array().unwrap().iter().map(|v| v["index"].as_u64().unwrap()).collect();
    assert_eq!(indices, [0, 1, 2, 3, 4], "{status}");
    assert_eq!(epoch1["validators"][4]["org"], "h5");
    assert_eq!(status["epoch"], 0, "the new set waits for its epoch");

    // The joining validator starts from genesis and catches up; the chain reaches the epoch even
    // with nothing to do (empty blocks while the change is pending).
    let joiner = net.add_validator(&api);
    net.start_validator(joiner);
    wait_all(&net, &[0, 1, 2, 3, 4], joined_at - 1);
    assert_eq!(governance(&net)["epoch"], 1);
    // The validators' status follows the set: each lists the other four as peers.
    wait_until("validator 0 sees validator 4 up", || peers_up(&net, 0) == [1, 2, 3, 4]);
    wait_until("validator 4 sees the others up", || peers_up(&net, 4) == [0, 1, 2, 3]);
    let (r2, t2) = put(&net, 62);
    // Its organisation's admin acts at once; its validator proposes blocks the others finalize
    // (whichever validator leads a view with work proposes; each admitted transaction is
    // forwarded to every validator of the epoch).
    net.ok(&["id", "create", "drdan", "--role", "doctor", "--as", "h5-admin"]);
    net.ok(&["grant", "--as", "alice", "--to", "drdan", "--all"]);
    assert_eq!(net.ok(&["record", "get", "--as", "drdan", &r1]), t1);
    let mut by_epoch1 = vec![];
    for n in 0..30 {
        let height = net.status_of(0)["height"].as_u64().unwrap();
        by_epoch1 = proposers(&net, 0, joined_at, height);
        if by_epoch1.contains(&4) {
            break;
        }
        net.ok(&["record", "get", "--as", "drdan", &r1]);
        if n == 29 {
            let heights: Vec<Value> = (0..5).map(|k| net.status_of(k)["height"].clone()).collect();
            panic!("validator 4 proposed none of blocks {joined_at}..{height}: {by_epoch1:?}; heights {heights:?}");
        }
    }
    assert!(proposers(&net, 0, 1, joined_at - 1).iter().all(|p| *p < 4), "validator 4 proposed before its epoch");
    println!("epoch 1 from block {joined_at}: proposers {by_epoch1:?}");
    // With 5 validators one may fail (f = 1): the others go on.
    net.kill9_validator(3);
    let (r3, t3) = put(&net, 63);
    net.start_validator(3);
    // Threshold release follows the set: a record written in epoch 1 is dealt to all five
    // validators with the threshold of five (f + 1 = 2), the joined one included; the record of
    // epoch 0 is re-shared to the five.
    assert_eq!(shareholders(&net, &r2), ([0, 1, 2, 3, 4].to_vec(), 2), "dealt in epoch 1");
    wait_reshared(&net, &r1, &[0, 1, 2, 3, 4]);
    assert_eq!(net.ok(&["record", "get", "--as", "drbob", &r1]), t1, "read from its re-shared generation");
    assert_eq!(shareholders(&net, &r3), ([0, 1, 2, 3, 4].to_vec(), 2));

    // What validator 3's operator holds of the records of epochs 0 and 1, before it leaves.
    let apis: Vec<(u32, String)> = (0..5).map(|k| (k as u32, format!("http://{}", net.apis[k]))).collect();
    let before: Vec<Vec<(u32, Share)>> = [&r1, &r2, &r3].iter().map(|r| released_shares(&net, r, &apis)).collect();
    let k_thr: Vec<_> =
        before.iter().map(|shares| combine(&[shares[0].1.clone(), shares[1].1.clone()]).unwrap()).collect();
    // A founding organisation leaves (its validator, 3, held shares since genesis): 4 of 5
    // approve (3 is not enough). Its doctor read alice's records through an --all grant.
    net.ok(&["id", "create", "dreve", "--role", "doctor", "--as", "h4-admin"]);
    net.ok(&["grant", "--as", "alice", "--to", "dreve", "--all"]);
    assert_eq!(net.ok(&["record", "get", "--as", "dreve", &r1]), t1);
    let leave = net.root.path().join("leave.json");
    let leave_s = leave.to_str().unwrap();
    net.ok(&["governance", "leave", "h4", "--out", leave_s]);
    for admin in ["h4-admin", "h1-admin", "h2-admin"] {
        net.ok(&["governance", "approve", leave_s, "--as", admin]);
    }
    assert_eq!(governance(&net)["epochs"].as_array().unwrap().len(), 2, "3 of 5 is not 2/3");
    net.ok(&["governance", "approve", leave_s, "--as", "h5-admin"]);
    let status = governance(&net);
    let left_at = status["epochs"][2]["first_height"].as_u64().unwrap();
    let indices: Vec<u64> =
        status["epochs"][2]["validators"].as_array().unwrap().iter().map(|v| v["index"].as_u64().unwrap()).collect();
    assert_eq!(indices, [0, 1, 2, 4], "{status}");
    // Its staff sign nothing from the adoption on (the attempt is refused as access denied).
    assert_eq!(net.cli(&["record", "get", "--as", "dreve", &r1]).code, 3);
    // The validators' API refuses the staff of an organisation that left too (a signed read he
    // was entitled to as alice's --all grantee: 403 at authentication).
    let list = net.cli(&["record", "list", "--as", "dreve", "--patient", "alice"]);
    assert_eq!(list.code, 3, "{}", list.stderr);
    assert!(list.stderr.contains("organisation has left"), "{}", list.stderr);
    wait_all(&net, &[0, 1, 2, 3, 4], left_at - 1);
    assert_eq!(governance(&net)["epoch"], 2);
    // The chain is served to validators of the current or a pending epoch only: the one that
    // left is refused (403), one that stays is served.
    let sync_as = |k: usize| {
        use medledger_ledger::httpsig;
        let file: Value = serde_json::from_str(
            &std::fs::read_to_string(net.dir.join(format!("validator-{k}")).join("validator.json")).unwrap(),
        )
        .unwrap();
        let seed: [u8; 32] = hex::decode(file["signing_seed"].as_str().unwrap()).unwrap().try_into().unwrap();
        let key = medledger_crypto::sign::SigningKey::from_bytes(&seed);
        let path = format!("/v1/sync/chain?from={left_at}");
        let url = format!("http://{}{path}", net.apis[0]);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let parts = httpsig::RequestParts::of_url("GET", &url, b"").unwrap();
        let headers = httpsig::sign(&key, &format!("validator-{k}"), &parts, now, &httpsig::new_nonce());
        let headers: Vec<(&str, &str)> = headers.iter().map(|(h, v)| (*h, v.as_str())).collect();
        common::http_request(&net.apis[0], "GET", &path, &headers, b"").0
    };
    assert_eq!(sync_as(3), 403, "a validator that left reads the chain");
    assert_eq!(sync_as(1), 200);
    // The four go on without it. A record written now is dealt to them alone: the validator
    // that left holds no share of it.
    net.kill9_validator(3);
    let (r4, t4) = put(&net, 64);
    assert_eq!(shareholders(&net, &r4), ([0, 1, 2, 4].to_vec(), 2), "dealt in epoch 2");
    // Every earlier record is re-shared to the four (proactive re-sharing): the key stays the
    // same, and the shares validator 3 kept, with those of any f = 1 validator that stays,
    // recover nothing.
    let staying: Vec<(u32, String)> =
        [0usize, 1, 2, 4].iter().map(|&k| (k as u32, format!("http://{}", net.apis[k]))).collect();
    for (i, record) in [&r1, &r2, &r3].into_iter().enumerate() {
        wait_reshared(&net, record, &[0, 1, 2, 4]);
        let now = released_shares(&net, record, &staying);
        assert_eq!(combine(&[now[0].1.clone(), now[3].1.clone()]).unwrap(), k_thr[i], "the key is kept");
        let left = before[i].iter().find(|(v, _)| *v == 3).unwrap().1.clone();
        for (v, share) in &now {
            if share.id() != left.id() {
                assert_ne!(combine(&[left.clone(), share.clone()]).unwrap(), k_thr[i], "3 with {v} recovered k_thr");
            }
        }
        // (Before re-sharing, the staying validators' shares were of the same polynomial as
        // validator 3's: any one of them with its share recovered the key.)
        let old0 = before[i].iter().find(|(v, _)| *v == 0).unwrap().1.clone();
        assert_eq!(combine(&[left, old0]).unwrap(), k_thr[i]);
    }
    let height = net.status_of(0)["height"].as_u64().unwrap();
    assert!(height >= left_at, "a block of epoch 2");
    assert!(!proposers(&net, 0, left_at, height).contains(&3), "validator 3 proposed after leaving");
    wait_until("validator 0 no longer lists validator 3", || peers_up(&net, 0) == [1, 2, 4]);
    // Every record written in any epoch still reads with one more validator down (f = 1 of the
    // four): each has f + 1 live holders among those that stay.
    net.kill9_validator(2);
    for (record, text) in [(&r1, &t1), (&r2, &t2), (&r3, &t3), (&r4, &t4)] {
        assert_eq!(&net.ok(&["record", "get", "--as", "drbob", record]), text);
    }
    net.start_validator(2);
    // A validator that lost its disk catches up from a peer's state, checked against the
    // validator-set history from genesis: the chain it downloads is certified by epoch 2's set.
    net.kill9_validator(1);
    let dir1 = net.dir.join("validator-1");
    std::fs::remove_dir_all(dir1.join("data")).unwrap();
    let file = dir1.join("validator.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    config["sync_gap_blocks"] = 4.into();
    std::fs::write(&file, config.to_string()).unwrap();
    net.start_validator(1);
    let log = || std::fs::read_to_string(dir1.join("node.log")).unwrap();
    wait_until("validator 1 syncs or gives up", || {
        log().contains("state synced from a peer") || log().contains("state sync failed")
    });
    assert!(
        log().contains("state synced from a peer"),
        "{}",
        log().lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    let tip = net.status_of(0)["height"].as_u64().unwrap();
    wait_all(&net, &[1], tip);
    assert_eq!(&net.ok(&["record", "get", "--as", "drbob", &r4]), &t4);

    // Receipts of the patient's trail, from all three epochs, check offline from genesis alone:
    // those certified after a change carry the validator-set history.
    let receipts = net.root.path().join("receipts");
    net.ok(&["audit", "--as", "alice", "--patient", "alice", "--receipts", receipts.to_str().unwrap()]);
    let genesis = net.dir.join("genesis.json");
    let mut epochs = std::collections::BTreeSet::new();
    let mut latest = None;
    for entry in std::fs::read_dir(&receipts).unwrap() {
        let path = entry.unwrap().path();
        let out =
            net.ok(&["--json", "receipt", "verify", path.to_str().unwrap(), "--genesis", genesis.to_str().unwrap()]);
        let checked: Value = serde_json::from_str(out.trim()).unwrap();
        let epoch = checked["epoch"].as_u64().unwrap();
        epochs.insert(epoch);
        if epoch == 2 {
            latest = Some(path);
        }
    }
    assert_eq!(epochs.into_iter().collect::<Vec<_>>(), [0, 1, 2], "events of every epoch");
    // Any changed byte of the history fails (the history is the receipt's tail).
    let latest = std::fs::read(latest.unwrap()).unwrap();
    println!("a receipt certified in epoch 2 (two links of history): {} bytes", latest.len());
    for offset in [latest.len() - 1, latest.len() - 200, latest.len() - 2_000, latest.len() / 2] {
        let mut bad = latest.clone();
        bad[offset] ^= 0x01;
        let bad = net.file("bad.receipt", &bad);
        let run = net.cli(&["receipt", "verify", bad.to_str().unwrap(), "--genesis", genesis.to_str().unwrap()]);
        assert_eq!(run.code, 4, "byte {offset} of {}: {}", latest.len(), run.stdout);
    }
    // The browser's client follows the same history (portal/packages/protocol/src/epochs.ts): a
    // read in epoch 2, its evidence certified by epoch 2's set through two links from genesis,
    // the shares of validator 4 (which joined) asked at the address governance gives it; the
    // receipt verifies, and a changed byte of its history does not.
    let (code, out, err) = common::ts_read(&net, "drbob", &r4);
    assert_eq!(code, 0, "{err}");
    let read: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(hex::decode(read["plaintext"].as_str().unwrap()).unwrap(), t4.as_bytes());
    let latest_file = net.file("latest.receipt", &latest);
    let (code, out, err) = common::ts_client(&net, "-", &["verify-receipt", latest_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(out.trim()).unwrap()["epoch"], 2, "{out}");
    let mut bad = latest.clone();
    let at = latest.len() - 2_000;
    bad[at] ^= 0x01;
    let bad = net.file("bad.receipt", &bad);
    assert_eq!(
        common::ts_client(&net, "-", &["verify-receipt", bad.to_str().unwrap()]).0,
        4,
        "a changed byte of the history"
    );
    // The portal forwards to the validator that joined once the validators it knows agree on its
    // address, and to no index the network does not have.
    let portal = common::start_portal(&net);
    let base = portal.url.trim_start_matches("http://").trim_end_matches('/').to_string();
    let (status, body) = common::http_get(&base, "/api/4/v1/status");
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["validator"], 4, "{body}");
    assert_eq!(common::http_get(&base, "/api/7/v1/status").0, 404);

    // Every validator's files verify offline: each block's certificate against its epoch's set.
    let verified = net.ok(&["verify", "--dir", net.dir.to_str().unwrap()]);
    assert_eq!(verified.lines().filter(|l| l.contains("chain ok")).count(), 5, "{verified}");
}
