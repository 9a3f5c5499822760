//! Running one validator: state, blob store, API server and consensus in one process.

use std::path::Path;

use medledger_store::Blobs;
use medledger_types::limits::RECORD_CIPHERTEXT_BYTES_MAX;

use crate::api::{ApiState, router};
use crate::app::App;
use crate::config::{consensus_config, load_genesis, load_validator, validator_dir};

/// Runs validator `index` of the network in `dir` until the process is stopped.
pub fn run_validator(dir: &Path, index: u32) -> anyhow::Result<()> {
    let genesis = load_genesis(dir)?;
    let file = load_validator(dir, index)?;
    let cfg = consensus_config(dir, &genesis, &file)?;
    let share_key = crate::config::share_key(&genesis, &file)?;
    // Every validator of a network with threshold release has a share key of the network's suite
    // (a joined one's is in its Join proposal).
    let share_suite = genesis.share_keys.as_ref().and_then(|keys| keys.first()).map(|k| k.suite);
    let data = validator_dir(dir, index).join("data");
    let blobs = Blobs::open(&file.storage, dir, file.s3_endpoint.as_deref(), RECORD_CIPHERTEXT_BYTES_MAX)?;
    let scheme = if file.tls.is_some() { "https" } else { "http" };
    let validators: Vec<String> = genesis.validators.iter().map(|v| format!("{scheme}://{}", v.api_address)).collect();
    let tls = match &file.tls {
        Some(files) => Some(crate::tls::server_config(files, &validator_dir(dir, index))?),
        None => None,
    };
    let gc_cursor = data.join("blob-gc-height");
    // The names clients reach this validator's API by: its listen address, the address genesis
    // gives its peers and clients, `localhost`, and any the operator adds (a proxy's name).
    let port = file.api_listen.port();
    let mut authorities = vec![file.api_listen.to_string(), format!("localhost:{port}")];
    authorities.extend(genesis.validators.get(index as usize).map(|v| v.api_address.clone()));
    authorities.extend(file.api_authorities.iter().cloned());
    let authorities: Vec<String> = authorities.into_iter().map(|a| a.to_ascii_lowercase()).collect();
    let app = App::open(&data, genesis)?;
    // Whom state sync asks: every validator this validator's state knows of (genesis and those
    // that joined since, as far as it has applied), but itself. What they send is checked against
    // the validator-set history from genesis, so one that left can serve as well as any.
    let sync_peers: Vec<(u32, String)> = {
        let view = app.inner().db.view(&[])?;
        let mut known: Vec<(u32, String)> =
            validators.iter().enumerate().map(|(k, url)| (k as u32, url.clone())).collect();
        for v in medledger_ledger::governance::validators(&view) {
            if !known.iter().any(|(k, _)| *k == v.index) {
                known.push((v.index, format!("{scheme}://{}", v.api_address)));
            }
        }
        known.into_iter().filter(|(k, _)| *k != index).collect()
    };
    let keyring = match share_suite {
        Some(suite) => {
            let validator_json = validator_dir(dir, index).join("validator.json");
            let chain_id = app.inner().chain_id;
            let keyring =
                crate::keyring::Keyring::open(&data, &validator_json, chain_id, suite, share_key, &app.inner().db)
                    .map_err(anyhow::Error::msg)?;
            Some(std::sync::Arc::new(keyring))
        }
        None => None,
    };
    let runner = crate::consensus::tokio_runner(&cfg);
    use commonware_runtime::{Metrics as _, Runner as _, Supervisor as _};
    runner.start(|context| async move {
        let listener = tokio::net::TcpListener::bind(file.api_listen).await?;
        tracing::info!(validator = index, api = %file.api_listen, p2p = %file.p2p_listen, "validator starting");
        // Every validator of the current and any pending epoch, whichever leads the next view:
        // transactions are forwarded to them and the status polls them.
        let me = crate::consensus::validator_public_key(&cfg.signing_seed);
        let forwarder = {
            let app = app.clone();
            crate::forward::Forwarder::spawn(move || app.validator_apis(scheme, &me))
        };
        let peers = {
            let app = app.clone();
            crate::peers::Peers::spawn(move || app.validator_peers(scheme, &me))
        };
        let registry = context.child("metrics_encoder");
        let ops = crate::api::Ops {
            metrics: Some(std::sync::Arc::new(move || registry.encode())),
            consensus_running: Default::default(),
            nonces: std::sync::Arc::new(crate::replay::Nonces::new(file.signer_requests_per_window)),
            limiter: crate::ratelimit::RequestLimiter::new(file.api_requests_per_second, file.api_request_burst),
            authorities: std::sync::Arc::new(authorities),
        };
        if let Some(limiter) = ops.limiter.clone() {
            tokio::spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
                loop {
                    every.tick().await;
                    limiter.prune();
                }
            });
        }
        let _registered = app.inner().metrics.register(&context.child("medledger"));
        let janitor = crate::janitor::Janitor {
            app: app.clone(),
            blobs: blobs.clone(),
            keyring: keyring.clone(),
            index,
            consensus_key: medledger_crypto::sign::SigningKey::from_bytes(&cfg.signing_seed),
            forwarder: forwarder.clone(),
            cursor: gc_cursor,
            reshare: Default::default(),
        };
        tokio::spawn(janitor.run());
        let state =
            ApiState { app: app.clone(), blobs, validators, forwarder, index, peers, ops: ops.clone(), keyring };
        tokio::spawn(async move {
            let listener = match crate::tls::ApiListener::new(listener, tls) {
                Ok(l) => l,
                Err(e) => return tracing::error!(error = %e, "API listener failed"),
            };
            let service = router(state).into_make_service_with_connect_info::<crate::tls::ClientAddr>();
            if let Err(e) = axum::serve(listener, service).await {
                tracing::error!(error = %e, "API server stopped");
            }
        });
        let me =
            crate::sync::SyncIdentity { index, key: medledger_crypto::sign::SigningKey::from_bytes(&cfg.signing_seed) };
        match crate::sync::catch_up(&app, &me, &sync_peers, file.sync_gap_blocks).await {
            Ok(_) => {}
            // Replay from peers through consensus still works; a bad or unreachable peer only costs time.
            Err(e) => tracing::warn!(error = %e, "state sync failed; catching up by replay"),
        }
        ops.consensus_running.store(true, std::sync::atomic::Ordering::Release);
        crate::consensus::run_tokio(context, cfg, app).await?;
        Ok(())
    })
}
