//! Object storage on a real S3 server (s3s-fs on 127.0.0.1), through `object_store`.

mod common;

use bytes::Bytes;
use common::{Net, OBSERVATION, S3Server, contains, files_under};
use medledger_store::{BlobError, Blobs, S3Config};
use medledger_types::Digest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_on_s3_check_digests_and_credentials() {
    let s3 = S3Server::start(&["records"]);
    let config = |secret: &str| S3Config {
        endpoint: Some(s3.endpoint.clone()),
        access_key_id: Some(common::S3_ACCESS_KEY.into()),
        secret_access_key: Some(secret.into()),
        region: Some("us-east-1".into()),
    };
    let blobs =
        Blobs::open_with("s3://records", std::path::Path::new("/"), &config(common::S3_SECRET_KEY), 1 << 20).unwrap();
    let data = Bytes::from_static(b"ciphertext on s3");
    let digest = Digest::new(medledger_crypto::sha256(&data));
    assert!(matches!(blobs.put(&Digest::new([1; 32]), data.clone()).await, Err(BlobError::Integrity)));
    blobs.put(&digest, data.clone()).await.unwrap();
    blobs.put(&digest, data.clone()).await.unwrap();
    assert_eq!(blobs.get(&digest).await.unwrap(), data);
    assert!(matches!(blobs.get(&Digest::new([2; 32])).await, Err(BlobError::NotFound)));
    // The object key is the digest: no patient data; the server's file is the ciphertext.
    let stored = files_under(s3.root.path())
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&digest.to_hex()))
        .expect("object stored under its digest");
    let mut bytes = std::fs::read(&stored).unwrap();
    assert_eq!(bytes, data.as_ref());
    bytes[0] ^= 1;
    std::fs::write(&stored, &bytes).unwrap();
    assert!(matches!(blobs.get(&digest).await, Err(BlobError::Integrity)));
    // Wrong credentials are refused by the server.
    let wrong = Blobs::open_with("s3://records", std::path::Path::new("/"), &config("wrong"), 1 << 20).unwrap();
    assert!(matches!(wrong.get(&digest).await, Err(BlobError::Store(_))));
}

#[test]
fn network_on_s3_round_trips_and_verifies() {
    let s3 = S3Server::start(&["medledger-records"]);
    let net =
        Net::start_with_env(&["--storage", "s3://medledger-records", "--s3-endpoint", &s3.endpoint], s3.credentials());
    net.ok(&["id", "create", "alice", "--role", "patient", "--as", "org1-admin"]);
    let obs = net.file("obs.json", OBSERVATION.as_bytes());
    let record =
        net.ok(&["record", "put", "--as", "alice", "--patient", "alice", obs.to_str().unwrap()]).trim().to_string();
    assert_eq!(net.ok(&["record", "get", "--as", "alice", &record]), OBSERVATION);
    let objects = files_under(s3.root.path());
    assert!(!objects.is_empty());
    for object in &objects {
        let bytes = std::fs::read(object).unwrap();
        assert!(!contains(&bytes, b"MARKER-7f3a9c"), "plaintext in the bucket");
        assert!(!object.to_string_lossy().contains("alice"));
    }
    assert!(!net.blob_dir().exists(), "nothing went to the local folder");

    // An independent client (boto3, from PyPI) lists and reads the bucket over S3 and finds only
    // content-addressed medledger ciphertext: no plaintext marker, no member id in keys or bytes.
    let book = net.ok(&["--json", "id", "list"]);
    let mut args = vec![
        "scripts/s3_audit.py".to_string(),
        s3.endpoint.clone(),
        "medledger-records".to_string(),
        "MARKER-7f3a9c".to_string(),
    ];
    for line in book.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        args.push(entry["member"].as_str().unwrap().to_string());
    }
    let audit = std::process::Command::new("python3")
        .args(&args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .envs(s3.credentials())
        .output()
        .expect("python3");
    let report = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.status.success(), "{report}{}", String::from_utf8_lossy(&audit.stderr));
    assert!(report.contains("1 objects, all ciphertext"), "{report}");
}

/// Wrong credentials or an unreachable endpoint: writes and reads fail with one clear line, no
/// record is registered without its ciphertext, and everything committed before is intact once
/// the storage settings are right again.
#[test]
fn wrong_credentials_or_unreachable_endpoint_fail_clearly_and_lose_nothing() {
    let s3 = S3Server::start(&["medledger-records"]);
    let mut net =
        Net::start_with_env(&["--storage", "s3://medledger-records", "--s3-endpoint", &s3.endpoint], s3.credentials());
    net.ok(&["id", "create", "alice", "--role", "patient", "--as", "org1-admin"]);
    let obs = net.file("obs.json", OBSERVATION.as_bytes());
    let put = |net: &Net| net.cli(&["record", "put", "--as", "alice", "--patient", "alice", obs.to_str().unwrap()]);
    let first = put(&net);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let record = first.stdout.trim().to_string();
    let config = net.dir.join("validator-0").join("validator.json");
    let good_config = std::fs::read(&config).unwrap();

    let wrong_secret: Vec<(String, String)> = s3
        .credentials()
        .into_iter()
        .map(|(k, v)| if k == "AWS_SECRET_ACCESS_KEY" { (k, "not-the-secret".into()) } else { (k, v) })
        .collect();
    let mut unreachable: serde_json::Value = serde_json::from_slice(&good_config).unwrap();
    unreachable["s3_endpoint"] = "http://127.0.0.1:1".into();
    let unreachable = serde_json::to_vec_pretty(&unreachable).unwrap();
    for (env, config_bytes, what) in
        [(wrong_secret, good_config.clone(), "wrong credentials"), (s3.credentials(), unreachable, "unreachable")]
    {
        net.kill9_validator(0);
        net.node_env = env;
        std::fs::write(&config, &config_bytes).unwrap();
        net.start_validator(0);
        let height = net.height();
        let failed = put(&net);
        assert_eq!(failed.code, 1, "{what}: {}", failed.stderr);
        assert_eq!(failed.stderr.trim().lines().count(), 1, "{what}: {}", failed.stderr);
        assert!(failed.stderr.contains("object store"), "{what}: {}", failed.stderr);
        assert_eq!(net.height(), height, "{what}: nothing registered without its ciphertext");
        let read = net.cli(&["record", "get", "--as", "alice", &record]);
        assert_eq!(read.code, 1, "{what}: {}", read.stderr);
        assert!(read.stderr.contains("object store") && !read.stdout.contains("MARKER"), "{what}: {}", read.stderr);
    }

    // Right settings again: the first record is intact and the chain verifies.
    net.kill9_validator(0);
    net.node_env = s3.credentials();
    std::fs::write(&config, &good_config).unwrap();
    net.start_validator(0);
    assert_eq!(net.ok(&["record", "get", "--as", "alice", &record]), OBSERVATION);
    let listed = net.ok(&["record", "list", "--as", "alice"]);
    assert_eq!(listed.lines().filter(|l| l.contains(record.as_str())).count(), 1, "{listed}");
    // `verify` reads the bucket itself: without credentials that is a setup error (exit 1), not an
    // integrity finding (exit 4).
    let verify = net.cli(&["verify"]);
    assert_eq!(verify.code, 1, "{}", verify.stderr);
    assert!(verify.stderr.contains("cannot read the blob store"), "{}", verify.stderr);
}

/// A validator whose store is down when an erasure commits carries it out once the store is back,
/// on a network with nothing more to commit (its janitor tries again on a timer, not only at the
/// next block).
#[test]
fn an_erasure_missed_while_the_store_was_down_is_carried_out_when_it_returns() {
    let mut s3 = S3Server::start(&["medledger-records"]);
    let net =
        Net::start_with_env(&["--storage", "s3://medledger-records", "--s3-endpoint", &s3.endpoint], s3.credentials());
    net.ok(&["id", "create", "alice", "--role", "patient", "--as", "org1-admin"]);
    let obs = net.file("obs.json", OBSERVATION.as_bytes());
    let record =
        net.ok(&["record", "put", "--as", "alice", "--patient", "alice", obs.to_str().unwrap()]).trim().to_string();
    let root = s3.root.path().to_path_buf();
    let stored = || files_under(&root).into_iter().filter(|p| !p.to_string_lossy().contains(".s3s")).count();
    let before = stored();
    assert!(before >= 1, "the ciphertext is in the bucket");
    s3.stop();
    net.ok(&["record", "erase", "--as", "alice", &record]);
    common::wait_until("the validator fails to delete", || {
        std::fs::read_to_string(net.log_path()).is_ok_and(|log| log.contains("janitor work not done yet"))
    });
    s3.restart();
    // Nothing commits until the erasure is carried out (the validator's share-key replacement
    // comes after it), so only the janitor's own retry can get there.
    common::wait_until("the erased ciphertext leaves the bucket", || stored() < before);
}
