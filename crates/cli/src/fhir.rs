//! `medledger gateway` (FHIR R4 REST for local applications) and `medledger import` (bulk load of
//! FHIR files), both as one member, on this machine.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::Path;

use medledger_gateway::cache::Cache;
use medledger_gateway::{Gateway, import};
use medledger_sdk::{Home, Identity, Result, SdkError, Session};
use medledger_types::PurposeOfUse;

use crate::commands::passphrase;

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| SdkError::Other(e.to_string()))
}

/// The custodian's keystore passphrase: `MEDLEDGER_CUSTODIAN_PASSPHRASE`, else the member's.
fn custodian(home: &Home, alias: &str, member_pass: &[u8]) -> Result<Identity> {
    match std::env::var("MEDLEDGER_CUSTODIAN_PASSPHRASE") {
        Ok(p) => home.load_identity(alias, p.as_bytes()),
        Err(_) => home.load_identity(alias, member_pass),
    }
}

/// The admin whose organisation takes custody: `--custodian`, else `ORG-admin` when its keys are here.
fn custodian_alias(home: &Home, me: &Identity, given: Option<String>) -> Option<String> {
    given.or_else(|| {
        let alias = format!("{}-admin", me.org);
        home.has_identity(&alias).then_some(alias)
    })
}

fn open_gateway(
    home_dir: &Path,
    node: Option<String>,
    as_: &str,
    custodian_name: Option<String>,
    purpose: &str,
    need_custodian: bool,
) -> Result<Gateway> {
    let purpose: PurposeOfUse =
        purpose.parse().map_err(|_| SdkError::Usage("--purpose takes an HL7 PurposeOfUse code (TREAT, ...)".into()))?;
    let session = Session::open(home_dir, node)?;
    let pass = passphrase()?;
    let me = session.home.load_identity(as_, pass.as_bytes())?;
    let custodian = match custodian_alias(&session.home, &me, custodian_name) {
        Some(alias) => Some(custodian(&session.home, &alias, pass.as_bytes())?),
        None if need_custodian => {
            return Err(SdkError::Usage(
                "importing enrols patients in custody: pass --custodian ADMIN (an admin of your organisation)".into(),
            ));
        }
        None => None,
    };
    if let Some(admin) = &custodian
        && admin.org != me.org
    {
        return Err(SdkError::Usage("--custodian must be an admin of your own organisation".into()));
    }
    let cache = Cache::open(&session.home, &me)?;
    Ok(Gateway { session, me, custodian, cache, index: Default::default(), purpose })
}

pub fn gateway(
    home_dir: &Path,
    node: Option<String>,
    as_: &str,
    listen: &str,
    custodian_name: Option<String>,
    purpose: &str,
) -> Result<()> {
    let addr: SocketAddr =
        listen.parse().map_err(|_| SdkError::Usage("--listen takes ADDRESS:PORT, e.g. 127.0.0.1:8080".into()))?;
    if !addr.ip().is_loopback() {
        return Err(SdkError::Usage(
            "the gateway acts with your keys: --listen takes a loopback address (127.0.0.1 or [::1])".into(),
        ));
    }
    let gateway = open_gateway(home_dir, node, as_, custodian_name, purpose, false)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| SdkError::Usage(format!("cannot listen on {addr}: {e}")))?;
        let bound = listener.local_addr().map_err(|e| SdkError::Other(e.to_string()))?;
        // The local credential: only this home's owner reads the file it is in.
        let (credential, token) = medledger_gateway::http::Credential::generate();
        let token_file = token_path(home_dir, bound.port());
        if let Some(dir) = token_file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| SdkError::Usage(format!("{}: {e}", dir.display())))?;
        }
        crate::network::write_private(&token_file, token.as_bytes())?;
        println!("FHIR R4 gateway for {as_} at http://{bound}/ (bearer token in {})", token_file.display());
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        let served = medledger_gateway::http::serve(gateway, listener, credential, shutdown).await;
        let _ = std::fs::remove_file(&token_file);
        served.map_err(|e| SdkError::Other(e.to_string()))
    })
}

/// Where the gateway listening on `port` keeps its bearer token: `HOME/gateways/PORT.token`.
pub fn token_path(home_dir: &Path, port: u16) -> std::path::PathBuf {
    home_dir.join("gateways").join(format!("{port}.token"))
}

pub fn import(
    home_dir: &Path,
    node: Option<String>,
    as_: &str,
    custodian_name: Option<String>,
    input: &Path,
    batch: usize,
    json: bool,
) -> Result<()> {
    let gateway = open_gateway(home_dir, node, as_, custodian_name, "TREAT", true)?;
    let files = import::files_of(input)?;
    let total: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(total)
    } else {
        indicatif::ProgressBar::hidden()
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template("{wide_bar} {bytes}/{total_bytes} {msg}") {
        bar.set_style(style);
    }
    let rt = runtime()?;
    let summary = rt.block_on(import::import(&gateway, input, batch, |done, s| {
        bar.set_position(done);
        let rate = if s.seconds > 0.0 { s.resources_written as f64 / s.seconds } else { 0.0 };
        bar.set_message(format!("{} resources, {rate:.0}/s", s.resources_written));
    }))?;
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string(&summary).map_err(|e| SdkError::Other(e.to_string()))?);
    } else {
        println!(
            "imported {} resources from {} files in {:.1} s ({:.0}/s); {} already present, {} files done earlier",
            summary.resources_written,
            summary.files,
            summary.seconds,
            summary.resources_per_second,
            summary.resources_already_present,
            summary.files_already_done,
        );
        println!(
            "patients enrolled in custody: {}; not patient data (skipped): {}; invalid: {}; failed: {}",
            summary.patients_enrolled,
            summary.resources_not_patient_data,
            summary.resources_invalid,
            summary.resources_failed
        );
        for problem in &summary.problems {
            println!("  {problem}");
        }
    }
    if summary.resources_failed > 0 {
        return Err(SdkError::Other(format!(
            "{} resources could not be written; run the same import again to retry them",
            summary.resources_failed
        )));
    }
    Ok(())
}

pub fn export(
    home_dir: &Path,
    node: Option<String>,
    as_: &str,
    patient: Option<&str>,
    types: Option<&str>,
    out: &Path,
    json: bool,
) -> Result<()> {
    if out.exists() {
        return Err(SdkError::Usage(format!("{}: already exists (export writes a new folder)", out.display())));
    }
    let gateway = open_gateway(home_dir, node, as_, None, "TREAT", false)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let patients = match patient {
            Some(name) => vec![gateway.session.resolve(&gateway.me, name).await?.member],
            None if gateway.me.role == medledger_types::Role::Patient => vec![gateway.me.member],
            None => medledger_gateway::export::readable_charts(&gateway).await.map_err(fhir_error)?,
        };
        let types = types.map(|t| t.split(',').map(str::to_string).collect());
        let request = medledger_gateway::export::Request { patients, types, strict: patient.is_some() };
        let verbose = std::io::stderr().is_terminal();
        let outputs = medledger_gateway::export::export(&gateway, &request, out, |done, total| {
            if verbose {
                eprint!("\r{done}/{total} charts");
            }
        })
        .await
        .map_err(fhir_error)?;
        if verbose {
            eprintln!();
        }
        for o in &outputs {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"type": o.resource_type, "file": out.join(&o.file), "count": o.count})
                );
            } else {
                println!("{}\t{}\t{}", o.resource_type, o.count, out.join(&o.file).display());
            }
        }
        Ok(())
    })
}

/// A gateway error as the CLI reports it (its exit code follows the FHIR status).
fn fhir_error(e: medledger_gateway::fhir::FhirError) -> SdkError {
    match e.status {
        401 | 403 => SdkError::Denied(e.diagnostics),
        404 => SdkError::NotFound(e.diagnostics),
        400 | 405 | 409 | 412 | 415 | 422 => SdkError::Usage(e.diagnostics),
        502 => SdkError::Integrity(e.diagnostics),
        _ => SdkError::Other(e.diagnostics),
    }
}
