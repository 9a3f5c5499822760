//! Operator commands: write a network, run its validators, verify its files.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use medledger_ledger::{GenesisMember, GenesisOrg};
use medledger_node::config::{NetworkPlan, genesis_path, load_genesis, validator_dir, write_network};
use medledger_sdk::{ClientConfig, Home, Identity, Result, SdkError};
use medledger_types::{OrgId, Role};
use serde_json::json;

use crate::InitArgs;
use crate::commands::passphrase;

fn other(e: impl std::fmt::Display) -> SdkError {
    SdkError::Other(e.to_string())
}

pub fn init(args: &InitArgs, home_dir: &Path, json: bool) -> Result<()> {
    if args.validators == 0 || args.validators > medledger_types::limits::VALIDATORS_MAX {
        return Err(SdkError::Usage(format!("--validators must be 1 to {}", medledger_types::limits::VALIDATORS_MAX)));
    }
    if genesis_path(&args.dir).exists() {
        return Err(SdkError::Usage(format!("{} already holds a network", args.dir.display())));
    }
    let home = Home::open(home_dir)?;
    let orgs: Vec<String> = if args.orgs.is_empty() {
        (1..=args.validators).map(|k| format!("org{k}")).collect()
    } else {
        args.orgs.clone()
    };
    let mut admins = Vec::new();
    for org in &orgs {
        let id = OrgId::new(org)
            .map_err(|_| SdkError::Usage(format!("organisation ids are 1-32 of a-z, 0-9, '-', '_': {org}")))?;
        let alias = format!("{id}-admin");
        if home.has_identity(&alias) || home.book()?.contains_key(&alias) {
            return Err(SdkError::Usage(format!(
                "{alias} already exists in {}; use another --home",
                home_dir.display()
            )));
        }
        admins.push(Identity::generate(&alias, Role::Admin, id, Default::default()));
    }
    let pass = passphrase()?;
    let orgs = admins
        .iter()
        .map(|a| GenesisOrg {
            id: a.org.clone(),
            name: a.org.to_string(),
            admin: GenesisMember {
                member: a.member,
                signing_key: a.signing.verifying_key(),
                encryption_key: a.encryption.encryption_key().clone(),
            },
        })
        .collect();
    let plan = NetworkPlan {
        chain_name: "medledger-local".into(),
        orgs,
        validators: args.validators,
        base_port: args.base_port,
        storage: args.storage.clone(),
        s3_endpoint: args.s3_endpoint.clone(),
    };
    let genesis = write_network(&args.dir, plan).map_err(|e| SdkError::Usage(e.to_string()))?;
    for admin in &admins {
        home.save_identity(admin, pass.as_bytes())?;
    }
    let nodes = genesis.validators.iter().map(|v| format!("http://{}", v.api_address)).collect();
    let network_dir = args.dir.canonicalize().map_err(other)?;
    home.save_config(&ClientConfig { chain_id: genesis.chain_id(), nodes, network_dir: Some(network_dir) })?;
    if json {
        println!(
            "{}",
            json!({"chain_id": genesis.chain_id(), "validators": genesis.validators.len(), "admins": admins.iter().map(|a| a.alias.clone()).collect::<Vec<_>>()})
        );
    } else {
        let names: Vec<_> = admins.iter().map(|a| a.alias.as_str()).collect();
        println!(
            "network written to {}: {} validator(s), admins {}",
            args.dir.display(),
            genesis.validators.len(),
            names.join(", ")
        );
    }
    Ok(())
}

/// Runs every validator of `dir` as a child process, restarting any that dies, until Ctrl-C.
pub fn up(dir: &Path, home_dir: &Path) -> Result<()> {
    if !genesis_path(dir).exists() {
        let defaults = InitArgs {
            dir: dir.to_path_buf(),
            validators: 4,
            orgs: vec![],
            storage: None,
            s3_endpoint: None,
            base_port: 7400,
        };
        init(&defaults, home_dir, false)?;
    }
    let genesis = load_genesis(dir).map_err(|e| SdkError::Usage(e.to_string()))?;
    let exe = std::env::current_exe().map_err(other)?;
    let n = genesis.validators.len() as u32;
    let spawn = |k: u32| -> Result<Child> {
        let log_path = validator_dir(dir, k).join("node.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(other)?;
        Command::new(&exe)
            .args(["node", "--dir"])
            .arg(dir)
            .args(["--validator", &k.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(other)?)
            .stderr(log)
            .spawn()
            .map_err(other)
    };
    let mut children: Vec<Child> = (0..n).map(spawn).collect::<Result<_>>()?;
    let urls: Vec<String> = genesis.validators.iter().map(|v| format!("http://{}", v.api_address)).collect();
    wait_healthy(&urls, &mut children)?;
    println!(
        "medledger is up: {n} validator(s), API {}; logs in {}/validator-*/node.log; Ctrl-C stops",
        urls.join(" "),
        dir.display()
    );
    let mut restarts: Vec<Instant> = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        for (k, child) in children.iter_mut().enumerate() {
            if let Ok(Some(status)) = child.try_wait() {
                restarts.retain(|t| t.elapsed() < Duration::from_secs(60));
                if restarts.len() >= 5 {
                    return Err(SdkError::Other(format!("validator {k} keeps failing ({status}); see its node.log")));
                }
                eprintln!("validator {k} exited ({status}); restarting");
                restarts.push(Instant::now());
                *child = spawn(k as u32)?;
            }
        }
    }
}

fn wait_healthy(urls: &[String], children: &mut [Child]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for url in urls {
        let addr = url.trim_start_matches("http://");
        loop {
            if std::net::TcpStream::connect_timeout(&addr.parse().map_err(other)?, Duration::from_millis(200)).is_ok() {
                break;
            }
            for (k, child) in children.iter_mut().enumerate() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(SdkError::Other(format!("validator {k} exited at start ({status}); see its node.log")));
                }
            }
            if Instant::now() > deadline {
                return Err(SdkError::Other(format!("validator API {url} did not come up within 60s")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

pub fn node(dir: &Path, validator: u32) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("MEDLEDGER_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    medledger_node::run::run_validator(dir, validator)
}

pub fn verify(dir: Option<PathBuf>, home_dir: &Path, json: bool) -> Result<()> {
    let dir = match dir {
        Some(d) => d,
        None => Home::open(home_dir)?
            .config()?
            .network_dir
            .ok_or_else(|| SdkError::Usage("give --dir: this home does not know the network directory".into()))?,
    };
    let genesis = load_genesis(&dir).map_err(|e| SdkError::Usage(e.to_string()))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(other)?;
    for k in 0..genesis.validators.len() as u32 {
        let report = rt.block_on(medledger_node::verify::verify_dir(&dir, k)).map_err(|e| match e {
            medledger_node::verify::VerifyError::Setup(m) => SdkError::Other(m),
            other => SdkError::Integrity(format!("validator {k}: {other}")),
        })?;
        if json {
            println!(
                "{}",
                json!({"validator": k, "blocks": report.blocks, "transactions": report.transactions, "state_root": report.state_root, "ciphertexts": report.ciphertexts})
            );
        } else {
            println!(
                "validator {k}: chain ok, {} blocks, {} transactions, state root {}, {} ciphertexts ok",
                report.blocks, report.transactions, report.state_root, report.ciphertexts
            );
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<u64> {
    std::fs::create_dir_all(to)?;
    let mut bytes = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            bytes += copy_tree(&src, &dst)?;
        } else if kind.is_file() {
            bytes += std::fs::copy(&src, &dst)?;
        }
    }
    Ok(bytes)
}

/// Whether a validator process holds the folder (its state database is locked while it runs).
fn validator_running(vdir: &Path) -> bool {
    let state = vdir.join("data").join("state.redb");
    state.exists() && medledger_store::StateDb::open(&state).is_err()
}

pub fn backup(dir: &Path, validator: u32, to: &Path) -> Result<()> {
    let vdir = validator_dir(dir, validator);
    if !vdir.join("validator.json").exists() {
        return Err(SdkError::Usage(format!("no validator {validator} in {}", dir.display())));
    }
    if to.exists() {
        return Err(SdkError::Usage(format!("{} already exists", to.display())));
    }
    if validator_running(&vdir) {
        return Err(SdkError::Usage("stop the validator first: a backup copies its files while they are still".into()));
    }
    let bytes = copy_tree(&vdir, to).map_err(other)?;
    std::fs::copy(genesis_path(dir), to.join("genesis.json")).map_err(other)?;
    println!(
        "validator {validator} backed up to {} ({bytes} bytes; it holds the validator's key: keep it private)",
        to.display()
    );
    Ok(())
}

pub fn restore(dir: &Path, validator: u32, from: &Path) -> Result<()> {
    let vdir = validator_dir(dir, validator);
    let genesis = std::fs::read(genesis_path(dir)).map_err(|e| SdkError::Usage(format!("{}: {e}", dir.display())))?;
    let backed =
        std::fs::read(from.join("genesis.json")).map_err(|e| SdkError::Usage(format!("{}: {e}", from.display())))?;
    if genesis != backed {
        return Err(SdkError::Usage("the backup belongs to another network".into()));
    }
    if vdir.exists() {
        return Err(SdkError::Usage(format!("{} exists; move it away first", vdir.display())));
    }
    copy_tree(from, &vdir).map_err(other)?;
    std::fs::remove_file(vdir.join("genesis.json")).map_err(other)?;
    println!("validator {validator} restored; start it and it catches up from its peers");
    Ok(())
}
