//! Simulation tests of the consensus glue: the deterministic runtime with the simulated network
//! (seeded, replayable), plus one real tokio run over TCP on 127.0.0.1.
//!
//! The toy ledger (in `common`) decides validity itself: its blocks carry no transactions, and
//! each header commits to the toy state after it (a hash chain over height, time and proposer), so
//! a block the glue invented (or a corrupted one) is caught. The fault tests (crashes, partitions,
//! lossy links, Byzantine validators) are in `consensus_faults.rs`.

mod common;

use std::time::Instant;

use common::{
    CHAIN, ToyLedger, assert_same_chain, check_certificates, configs, runner, simulated_network, start_validator,
    validator_keys,
};
use commonware_runtime::{Clock, Runner as _, Spawner as _, Supervisor as _, deterministic};
use medledger_node::consensus::{self, Timeouts, namespace_for_chain, verify_certificate};
use medledger_types::ChainId;

#[test]
fn one_validator_finalizes_and_idle_views_do_not_stall() {
    let started = Instant::now();
    let ledger = ToyLedger::new(1, 3);
    let observed = ledger.clone();
    let virtual_elapsed = runner(1).start(|context| async move {
        let oracle = simulated_network(&context, 1).await;
        let cfg = configs(1, Timeouts::default()).remove(0);
        let _validator = start_validator(&context, &oracle, cfg, ledger.clone(), 0).await;
        ledger.wait_for(25).await;
        context.current().duration_since(std::time::UNIX_EPOCH).expect("after the epoch")
    });
    observed.check();
    let state = observed.state.lock().unwrap();
    println!(
        "one validator: 25 blocks, {} declined views, {:?} virtual, {:?} wall, {} re-deliveries",
        state.declined,
        virtual_elapsed,
        started.elapsed(),
        state.redelivered
    );
    assert!(state.declined >= 5, "the ledger declined {} views", state.declined);
    // A declined view ends by the leader time-out: no spinning through empty views.
    let leader_timeout = Timeouts::default().leader;
    let declined = u32::try_from(state.declined).expect("few");
    assert!(virtual_elapsed >= leader_timeout * declined, "declined views ended early");
    // Every finalized block is one the ledger built: the glue invents no (empty) blocks.
    for (height, (block, _)) in state.committed.iter().skip(1) {
        assert!(state.proposed.contains(&block.digest().0), "block {height} was not built by the ledger");
    }
    drop(state);
    // A lone validator finalizes each block with its own certificate.
    assert!(check_certificates(&observed, 1) >= 25);
}

/// Runs four validators with `seed` until each has committed `target` blocks; returns the chains.
fn four_validators(seed: u64, target: u64) -> Vec<ToyLedger> {
    run_four(seed, (0..4).map(|_| ToyLedger::new(4, 0)).collect(), target)
}

/// Runs four validators on `ledgers` with `seed` until each has committed `target` blocks.
fn run_four(seed: u64, ledgers: Vec<ToyLedger>, target: u64) -> Vec<ToyLedger> {
    let observed = ledgers.clone();
    runner(seed).start(|context| async move {
        let oracle = simulated_network(&context, 4).await;
        let mut handles = vec![];
        for (cfg, ledger) in configs(4, Timeouts::default()).into_iter().zip(&ledgers) {
            handles.push(start_validator(&context, &oracle, cfg, ledger.clone(), 0).await);
        }
        for ledger in &ledgers {
            ledger.wait_for(target).await;
        }
    });
    observed
}

#[test]
fn four_validators_finalize_the_same_chain() {
    for seed in [11, 12] {
        let started = Instant::now();
        println!("four validators: seed {seed}");
        let ledgers = four_validators(seed, 20);
        assert_same_chain(&ledgers, 20);
        for ledger in &ledgers {
            check_certificates(ledger, 4);
        }
        // Leadership rotates: every validator proposed some of the finalized blocks.
        let state = ledgers[0].state.lock().unwrap();
        let proposers: std::collections::BTreeSet<u32> =
            state.committed.values().skip(1).map(|(block, _)| block.header.proposer).collect();
        assert_eq!(proposers.len(), 4, "proposers {proposers:?}");
        drop(state);
        println!("four validators: seed {seed}: 20 blocks in {:?} wall", started.elapsed());
    }
    // The same seed replays the same run, block for block.
    let first = four_validators(11, 20);
    let second = four_validators(11, 20);
    assert_eq!(first[0].chain()[..=20], second[0].chain()[..=20], "seed 11 did not replay");
}

#[test]
fn crashed_validator_restarts_and_catches_up() {
    let seed = 21;
    println!("crash and restart: seed {seed}");
    let started = Instant::now();
    let ledgers: Vec<ToyLedger> = (0..4).map(|_| ToyLedger::new(4, 0)).collect();
    let observed = ledgers.clone();
    runner(seed).start(|context| async move {
        let oracle = simulated_network(&context, 4).await;
        let cfgs = configs(4, Timeouts::default());
        let mut handles = vec![];
        for (cfg, ledger) in cfgs.iter().cloned().zip(&ledgers) {
            handles.push(start_validator(&context, &oracle, cfg, ledger.clone(), 0).await);
        }
        ledgers[3].wait_for(5).await;
        // Crash validator 3 (its whole task tree); the other three are still a quorum.
        let crashed = handles.pop().expect("four handles");
        crashed.abort();
        let _ = crashed.await;
        let at_crash = ledgers[3].height();
        ledgers[0].wait_for(at_crash + 15).await;
        assert!(ledgers[3].height() == at_crash, "a crashed validator commits nothing");
        // Restart it from the same storage partitions and the same (durable) ledger.
        let target = ledgers[0].height() + 5;
        handles.push(start_validator(&context, &oracle, cfgs[3].clone(), ledgers[3].clone(), 1).await);
        for ledger in &ledgers {
            ledger.wait_for(target).await;
        }
        println!("crash and restart: crashed at {at_crash}, all reached {target}");
    });
    let through = observed.iter().map(ToyLedger::height).min().expect("four");
    assert_same_chain(&observed, through);
    println!("crash and restart: done in {:?} wall", started.elapsed());
}

#[test]
fn whole_process_kill_and_restart_resumes() {
    // kill -9 of a lone validator: the deterministic runtime drops every task and the writes
    // that were not synced, then a new run recovers from the same storage.
    let ledger = ToyLedger::new(1, 0);
    let (first_height, checkpoint) = runner(31).start_and_recover({
        let ledger = ledger.clone();
        |context| async move {
            let oracle = simulated_network(&context, 1).await;
            let cfg = configs(1, Timeouts::default()).remove(0);
            let _validator = start_validator(&context, &oracle, cfg, ledger.clone(), 0).await;
            ledger.wait_for(10).await;
            ledger.height()
        }
    });
    let chain_before = ledger.chain();
    deterministic::Runner::from(checkpoint).start({
        let ledger = ledger.clone();
        |context| async move {
            let oracle = simulated_network(&context, 1).await;
            let cfg = configs(1, Timeouts::default()).remove(0);
            let _validator = start_validator(&context, &oracle, cfg, ledger.clone(), 0).await;
            ledger.wait_for(first_height + 10).await;
        }
    });
    ledger.check();
    let chain_after = ledger.chain();
    assert_eq!(chain_after[..chain_before.len()], chain_before[..], "history changed across the restart");
    let certified = check_certificates(&ledger, 1);
    println!("kill and restart: resumed at {first_height}, {certified} own certificates");
}

#[test]
fn certificates_verify_offline_and_reject_tampering() {
    let ledgers = four_validators(41, 5);
    let keys = validator_keys(4);
    let namespace = namespace_for_chain(&CHAIN);
    let state = ledgers[0].state.lock().unwrap();
    let (block, certificate) = state
        .committed
        .values()
        .skip(1)
        .find_map(|(block, certificate)| certificate.as_ref().map(|certificate| (block, certificate)))
        .expect("some block has its own certificate");
    let digest = block.digest().0;
    assert!(verify_certificate(&namespace, &keys, digest, certificate));

    // Any flipped byte breaks it (the round, the digest, the signer set or a signature).
    for position in [0, certificate.len() / 2, certificate.len() - 1] {
        let mut tampered = certificate.clone();
        tampered[position] ^= 0x01;
        assert!(!verify_certificate(&namespace, &keys, digest, &tampered), "flip at {position} accepted");
    }
    let mut wrong_digest = digest;
    wrong_digest[0] ^= 0x01;
    assert!(!verify_certificate(&namespace, &keys, wrong_digest, certificate));
    assert!(!verify_certificate(&namespace_for_chain(&ChainId([8; 32])), &keys, digest, certificate));
    assert!(!verify_certificate(&namespace, &validator_keys(3), digest, certificate));
    assert!(!verify_certificate(&namespace, &keys, digest, &certificate[..certificate.len() - 1]));
    let mut trailing = certificate.clone();
    trailing.push(0);
    assert!(!verify_certificate(&namespace, &keys, digest, &trailing));
    assert!(!verify_certificate(&namespace, &keys, digest, &[]));
    assert!(!verify_certificate(&namespace, &[], digest, certificate));
}

#[test]
fn tokio_validator_over_tcp_restarts_from_its_storage() {
    let started = Instant::now();
    let storage = tempfile::tempdir().expect("a temp dir");
    let mut cfg = configs(1, Timeouts::default()).remove(0);
    cfg.listen = "127.0.0.1:0".parse().expect("a socket address");
    cfg.validators[0].address = cfg.listen;
    cfg.storage_dir = storage.path().to_path_buf();
    let prefix = cfg.partition_prefix();
    let ledger = ToyLedger::new(1, 0);

    let first_height = consensus::tokio_runner(&cfg).start({
        let (cfg, ledger) = (cfg.clone(), ledger.clone());
        |context| async move {
            let validator = context.child("validator").spawn({
                let ledger = ledger.clone();
                move |context| async move {
                    consensus::run_tokio(context, cfg, ledger)
                        .await
                        .expect("validator starts")
                }
            });
            ledger.wait_for(5).await;
            validator.abort();
            ledger.height()
        }
    });
    let chain_before = ledger.chain();
    println!("tokio: first run committed {first_height} blocks in {:?}", started.elapsed());

    consensus::tokio_runner(&cfg).start({
        let ledger = ledger.clone();
        |context| async move {
            let _validator = context.child("validator").spawn({
                let ledger = ledger.clone();
                move |context| async move {
                    consensus::run_tokio(context, cfg, ledger)
                        .await
                        .expect("validator starts")
                }
            });
            ledger.wait_for(first_height + 5).await;
        }
    });
    // Every partition carries the validator's prefix, so validators can share one runtime's
    // storage. (`.hold` is the runtime's exclusive lock on the directory.)
    let mut partitions: Vec<String> = std::fs::read_dir(storage.path())
        .expect("the storage directory")
        .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name != ".hold")
        .collect();
    partitions.sort();
    assert!(!partitions.is_empty());
    assert!(partitions.iter().all(|partition| partition.starts_with(&prefix)), "{partitions:?}");
    ledger.check();
    let chain_after = ledger.chain();
    assert_eq!(chain_after[..chain_before.len()], chain_before[..], "history changed across the restart");
    assert!(chain_after.len() > chain_before.len());
    // Blocks may lack their own certificate across the restart; the hash chain covers them.
    let certified = check_certificates(&ledger, 1);
    let redelivered = ledger.state.lock().unwrap().redelivered;
    println!(
        "tokio: second run reached {} in {:?} total ({redelivered} re-deliveries skipped, {certified} own certificates)",
        ledger.height(),
        started.elapsed()
    );
}

/// A validator that votes for no block (its ledger refuses each block the first time it sees it,
/// as if every block reached it too late; the other three notarize and finalize without it) still
/// leads its views: before building, the glue executes the parent it never voted for, and the
/// ancestors behind it, fetched through the marshal. Its ledger, like the real one, builds only on
/// a parent it executed.
#[test]
fn a_leader_builds_on_parents_it_did_not_vote_for() {
    let seed = 41;
    println!("late voter: seed {seed}");
    let ledgers: Vec<ToyLedger> =
        (0..4).map(|k| if k == 3 { ToyLedger::new(4, 0).late_to_vote() } else { ToyLedger::new(4, 0) }).collect();
    let observed = run_four(seed, ledgers, 40);
    assert_same_chain(&observed, 40);
    for ledger in &observed {
        ledger.check();
    }
    let late = observed[3].state.lock().unwrap();
    let by_late = late.committed.values().filter(|(block, _)| block.header.proposer == 3).count();
    println!(
        "late voter: missed {} blocks at first sight, proposed {by_late} of 40 finalized blocks, {} proposals on an unexecuted parent",
        late.missed.len(),
        late.proposed_on_unexecuted
    );
    assert!(late.missed.len() >= 20, "the late voter refused {} blocks at first sight", late.missed.len());
    assert_eq!(late.proposed_on_unexecuted, 0, "asked to build on a parent it never executed");
    assert!(by_late >= 5, "the late voter proposed {by_late} of 40 blocks");
}

/// Governance: validator 4 joins at epoch 1 and leaves at epoch 2 (4 -> 5 -> 4), each change
/// adopted in a block as the ledger's governance transaction would be. Validator 4 runs from
/// genesis, follows the chain without voting until its epoch, takes part in it (proposes blocks
/// that are finalized), then follows again.
#[test]
fn a_validator_joins_at_an_epoch_and_leaves_at_the_next() {
    use medledger_ledger::governance::EPOCH_SWITCH_BLOCKS;
    use medledger_node::consensus::verify_certificate_in;

    let changes = vec![(20, vec![0, 1, 2, 3, 4]), (120, vec![0, 1, 2, 3])];
    let (joined, left) = (20 + EPOCH_SWITCH_BLOCKS + 1, 120 + EPOCH_SWITCH_BLOCKS + 1);
    let target = left + 40;
    let ledgers: Vec<ToyLedger> = (0..5).map(|_| ToyLedger::with_changes(4, 0, changes.clone())).collect();
    let observed = ledgers.clone();
    runner(41).start(|context| async move {
        let oracle = simulated_network(&context, 5).await;
        let mut cfgs = configs(5, Timeouts::default());
        for cfg in &mut cfgs {
            // Genesis lists validators 0..4; validator 4 comes by governance.
            cfg.validators.truncate(4);
        }
        let mut handles = vec![];
        for (cfg, ledger) in cfgs.into_iter().zip(&ledgers) {
            handles.push(start_validator(&context, &oracle, cfg, ledger.clone(), 0).await);
        }
        for ledger in &ledgers {
            ledger.wait_for(target).await;
        }
    });
    assert_same_chain(&observed, target);
    let namespace = namespace_for_chain(&CHAIN);
    let keys = validator_keys(5);
    let state = observed[0].state.lock().unwrap();
    let mut proposed_by_4 = 0;
    let mut certified = [0; 3];
    for (height, (block, certificate)) in state.committed.iter().skip(1) {
        let (epoch, set) = observed[0].epoch_of(*height);
        let expected = if *height < joined {
            0
        } else if *height < left {
            1
        } else {
            2
        };
        assert_eq!(epoch, expected, "height {height}");
        assert!(set.contains(&block.header.proposer), "block {height} proposed outside its epoch's set");
        proposed_by_4 += u32::from(block.header.proposer == 4);
        if let Some(certificate) = certificate {
            let set_keys: Vec<[u8; 32]> = set.iter().map(|i| keys[*i as usize]).collect();
            assert!(
                verify_certificate_in(&namespace, epoch, &set_keys, block.digest().0, certificate),
                "certificate of {height} (epoch {epoch})"
            );
            // The same signatures under another epoch number, or another epoch's set, do not verify.
            assert!(!verify_certificate_in(&namespace, epoch + 1, &set_keys, block.digest().0, certificate));
            if epoch == 1 {
                assert!(!verify_certificate(&namespace, &keys[..4], block.digest().0, certificate));
            }
            certified[epoch as usize] += 1;
        }
    }
    println!(
        "governance: {proposed_by_4} blocks proposed by the validator that joined; certificates per epoch {certified:?}"
    );
    assert!(proposed_by_4 > 0, "the joining validator took part in its epoch");
    assert!(certified.iter().all(|count| *count > 10), "each epoch finalized blocks with certificates: {certified:?}");
}
