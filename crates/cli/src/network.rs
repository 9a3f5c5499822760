//! Operator commands: write a network, run its validators, verify its files.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use medledger_ledger::{GenesisMember, GenesisOrg};
use medledger_node::config::{NetworkPlan, genesis_path, load_genesis, load_validator, validator_dir, write_network};
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
        threshold_release: !args.no_threshold,
        policy: network_policy(&args.policy)?,
    };
    let genesis = write_network(&args.dir, plan).map_err(|e| SdkError::Usage(e.to_string()))?;
    for admin in &admins {
        home.save_identity(admin, pass.as_bytes())?;
    }
    let ca_pem = if args.tls { Some(write_tls(&args.dir, &genesis)?) } else { None };
    let scheme = if args.tls { "https" } else { "http" };
    let nodes = genesis.validators.iter().map(|v| format!("{scheme}://{}", v.api_address)).collect();
    let network_dir = args.dir.canonicalize().map_err(other)?;
    home.save_config(&ClientConfig { chain_id: genesis.chain_id(), nodes, network_dir: Some(network_dir), ca_pem })?;
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

/// A local CA and a certificate per validator (for its API address and `localhost`), each
/// validator's `validator.json` pointed at them. Returns the CA certificate (PEM) for clients.
fn write_tls(dir: &Path, genesis: &medledger_ledger::Genesis) -> Result<String> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let tls = |e: rcgen::Error| SdkError::Other(format!("making TLS certificates: {e}"));
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(DnType::CommonName, format!("medledger {} CA", genesis.chain_name));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(tls)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = CertifiedIssuer::self_signed(ca, ca_key).map_err(tls)?;
    let ca_pem = issuer.pem();
    let tls_dir = dir.join("tls");
    std::fs::create_dir_all(&tls_dir).map_err(other)?;
    write_private(&tls_dir.join("ca.pem"), ca_pem.as_bytes())?;
    // Kept to issue certificates for validators added later; as private as a validator key.
    write_private(&tls_dir.join("ca.key"), ca_key_pem.as_bytes())?;
    for (k, v) in genesis.validators.iter().enumerate() {
        let host = v.api_address.rsplit_once(':').map_or(v.api_address.as_str(), |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let mut params = CertificateParams::new(vec![host, "localhost".to_string()]).map_err(tls)?;
        params.distinguished_name.push(DnType::CommonName, format!("medledger validator {k}"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(tls)?;
        let cert = params.signed_by(&key, &issuer).map_err(tls)?;
        let vdir = validator_dir(dir, k as u32);
        write_private(&vdir.join("tls-cert.pem"), cert.pem().as_bytes())?;
        write_private(&vdir.join("tls-key.pem"), key.serialize_pem().as_bytes())?;
        let config_path = vdir.join("validator.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config_path).map_err(other)?).map_err(other)?;
        config["tls"] = json!({"cert": "tls-cert.pem", "key": "tls-key.pem", "ca": "../tls/ca.pem"});
        write_private(&config_path, &serde_json::to_vec_pretty(&config).map_err(other)?)?;
    }
    Ok(ca_pem)
}

/// Writes `bytes` to `path` (created or truncated) with mode 0600.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| SdkError::Other(format!("{}: {e}", path.display())))?;
    // An existing file keeps its mode through `open`: narrow it before writing.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(other)?;
    file.write_all(bytes).map_err(other)
}

/// Runs every validator of `dir` as a child process, restarting any that dies, and the web
/// portal on `portal` (unless "off"), until Ctrl-C.
pub fn up(dir: &Path, home_dir: &Path, portal: &str, idle_minutes: u32) -> Result<()> {
    check_idle(idle_minutes)?;
    let portal_addr = match portal {
        "off" => None,
        addr => Some(
            addr.parse::<std::net::SocketAddr>()
                .map_err(|_| SdkError::Usage("--portal takes ADDRESS:PORT (e.g. 127.0.0.1:7480) or off".into()))?,
        ),
    };
    if !genesis_path(dir).exists() {
        let defaults = InitArgs {
            dir: dir.to_path_buf(),
            validators: 4,
            orgs: vec![],
            storage: None,
            s3_endpoint: None,
            base_port: 7400,
            tls: false,
            no_threshold: false,
            policy: Default::default(),
        };
        init(&defaults, home_dir, false)?;
    }
    let genesis = load_genesis(dir).map_err(|e| SdkError::Usage(e.to_string()))?;
    let exe = std::env::current_exe().map_err(other)?;
    let n = validator_count(dir, &genesis);
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
    let mut addrs: Vec<String> = genesis.validators.iter().map(|v| v.api_address.to_string()).collect();
    for k in genesis.validators.len() as u32..n {
        addrs.push(load_validator(dir, k).map_err(|e| SdkError::Usage(e.to_string()))?.api_listen.to_string());
    }
    wait_healthy(&addrs, &mut children)?;
    let scheme = if dir.join("tls").join("ca.pem").exists() { "https" } else { "http" };
    let urls: Vec<String> = addrs.iter().map(|a| format!("{scheme}://{a}")).collect();
    println!(
        "medledger is up: {n} validator(s), API {}; logs in {}/validator-*/node.log; Ctrl-C stops",
        urls.join(" "),
        dir.display()
    );
    if let Some(addr) = portal_addr {
        let config = medledger_portal::PortalConfig {
            chain_id: genesis.chain_id().to_hex(),
            validators: urls.clone(),
            idle_minutes,
        };
        let listener =
            std::net::TcpListener::bind(addr).map_err(|e| SdkError::Usage(format!("cannot listen on {addr}: {e}")))?;
        println!("{}", portal_banner(&listener, &config)?);
        std::thread::spawn(move || {
            if let Err(e) = serve_portal(listener, config) {
                eprintln!("the web portal stopped: {e}");
            }
        });
    }
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

/// `medledger portal`: serves the web portal for the network in this home's client config.
pub fn portal(home_dir: &Path, listen: &str, idle_minutes: u32) -> Result<()> {
    check_idle(idle_minutes)?;
    let addr: std::net::SocketAddr =
        listen.parse().map_err(|_| SdkError::Usage("--listen takes ADDRESS:PORT, e.g. 127.0.0.1:7480".into()))?;
    let config = medledger_sdk::Home::open(home_dir)?.config()?;
    if config.ca_pem.is_some() {
        return Err(SdkError::Usage(
            "the portal forwards to validators over plain HTTP only for now (this network serves HTTPS)".into(),
        ));
    }
    let portal =
        medledger_portal::PortalConfig { chain_id: config.chain_id.to_hex(), validators: config.nodes, idle_minutes };
    let listener =
        std::net::TcpListener::bind(addr).map_err(|e| SdkError::Usage(format!("cannot listen on {addr}: {e}")))?;
    println!("{}", portal_banner(&listener, &portal)?);
    serve_portal(listener, portal)
}

fn check_idle(minutes: u32) -> Result<()> {
    if (1..=medledger_portal::IDLE_MINUTES_MAX).contains(&minutes) {
        Ok(())
    } else {
        Err(SdkError::Usage(format!("--idle-minutes is 1 to {}", medledger_portal::IDLE_MINUTES_MAX)))
    }
}

fn portal_banner(listener: &std::net::TcpListener, config: &medledger_portal::PortalConfig) -> Result<String> {
    let bound = listener.local_addr().map_err(other)?;
    Ok(format!(
        "web portal at http://{bound}/ for {} validator(s); its script's SHA-256: {}",
        config.validators.len(),
        medledger_portal::bundle_sha256()
    ))
}

/// Serves the portal on `listener` (blocking the calling thread).
fn serve_portal(listener: std::net::TcpListener, config: medledger_portal::PortalConfig) -> Result<()> {
    listener.set_nonblocking(true).map_err(other)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(other)?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).map_err(other)?;
        medledger_portal::serve(listener, config).await.map_err(other)
    })
}

/// Waits until every API address accepts connections (or a validator exits).
fn wait_healthy(addrs: &[String], children: &mut [Child]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for addr in addrs {
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
                return Err(SdkError::Other(format!("validator API {addr} did not come up within 60s")));
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

/// The genesis validators and those that joined by governance on this machine (`governance join`
/// writes their directories after the genesis ones).
fn validator_count(dir: &Path, genesis: &medledger_ledger::Genesis) -> u32 {
    let genesis_count = genesis.validators.len() as u32;
    let joined = (genesis_count..).take_while(|k| validator_dir(dir, *k).join("validator.json").exists()).count();
    genesis_count + joined as u32
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
    for k in 0..validator_count(&dir, &genesis) {
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

/// The network's limits from `init`'s flags; `None` keeps the defaults.
pub fn network_policy(args: &crate::PolicyArgs) -> Result<Option<medledger_ledger::NetworkPolicy>> {
    if args.break_glass_max.is_none() && args.break_glass_per_day.is_none() && args.recovery_delay.is_none() {
        return Ok(None);
    }
    let mut policy = medledger_ledger::NetworkPolicy::default();
    if let Some(max) = &args.break_glass_max {
        let max = humantime::parse_duration(max)
            .map_err(|_| SdkError::Usage("--break-glass-max is a duration such as 12h".into()))?;
        policy.break_glass_max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    }
    if let Some(per_day) = args.break_glass_per_day {
        policy.break_glass_per_day = per_day;
    }
    if let Some(delay) = &args.recovery_delay {
        let delay = humantime::parse_duration(delay)
            .map_err(|_| SdkError::Usage("--recovery-delay is a duration such as 72h".into()))?;
        policy.recovery_delay_ms = Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)).into();
    }
    if !policy.check() {
        return Err(SdkError::Usage(
            "network limits: --break-glass-max 1m to 7d, --break-glass-per-day 1 to 100, --recovery-delay 1s to 30d"
                .into(),
        ));
    }
    Ok(Some(policy))
}
