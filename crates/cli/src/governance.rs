//! `medledger governance`: an organisation joins or leaves the consortium by a proposal that 2/3
//! of the member organisations approve (DESIGN §3); its validator joins or leaves the set at the
//! epoch the ledger schedules (`medledger_ledger::governance`).

use std::path::{Path, PathBuf};

use medledger_ledger::governance::{NewValidator, PROPOSAL_TTL_MS_MAX, Proposal};
use medledger_ledger::{GenesisMember, GenesisOrg, TxKind};
use medledger_node::config::{load_genesis, load_validator, write_joining_validator};
use medledger_sdk::{Identity, Result, SdkError, Session};
use medledger_types::{OrgId, Role, Timestamp};
use serde_json::{Value, json};

use crate::GovernanceCommand;
use crate::commands::passphrase;

/// Largest proposal file read.
const PROPOSAL_FILE_BYTES_MAX: u64 = 64 * 1024;

fn org_id(s: &str) -> Result<OrgId> {
    OrgId::new(s).map_err(|_| SdkError::Usage(format!("organisation ids are 1-32 of a-z, 0-9, '-', '_': {s}")))
}

/// When a proposal made now for `expires` (a duration, at most 7 days) closes.
fn expiry(expires: &str) -> Result<Timestamp> {
    let ttl = humantime::parse_duration(expires)
        .map_err(|_| SdkError::Usage("--expires takes a duration such as 24h or 3days".into()))?;
    let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    if ttl == 0 || ttl > PROPOSAL_TTL_MS_MAX {
        return Err(SdkError::Usage("a proposal stays open for up to 7 days".into()));
    }
    Ok(Timestamp::new(crate::commands::now_ms().saturating_add(ttl)))
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| SdkError::Usage(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(bytes).map_err(|e| SdkError::Other(format!("cannot write {}: {e}", path.display())))
}

fn read_proposal(path: &Path) -> Result<Proposal> {
    let unreadable = |e: String| SdkError::Usage(format!("{}: {e}", path.display()));
    let len = std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?.len();
    if len > PROPOSAL_FILE_BYTES_MAX {
        return Err(unreadable("not a proposal file (too large)".into()));
    }
    let bytes = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| unreadable(format!("not a proposal file: {e}")))
}

/// The stable index the next joining validator gets: one past every validator of every epoch.
fn next_validator_index(status: &Value) -> u32 {
    let indices = status["epochs"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["validators"].as_array().into_iter().flatten().filter_map(|v| v["index"].as_u64()));
    indices.max().map_or(0, |max| u32::try_from(max + 1).unwrap_or(u32::MAX))
}

pub fn run(command: GovernanceCommand, session: &Session, rt: &tokio::runtime::Runtime, json: bool) -> Result<()> {
    match command {
        GovernanceCommand::Join { org, name, p2p, api, dir, expires, out } => {
            let org = org_id(&org)?;
            let dir: PathBuf = match dir {
                Some(dir) => dir,
                None => session.home.config()?.network_dir.ok_or_else(|| {
                    SdkError::Usage(
                        "--dir: this home was not made by `medledger init`; name the network directory".into(),
                    )
                })?,
            };
            let genesis = load_genesis(&dir).map_err(|e| SdkError::Usage(e.to_string()))?;
            if genesis.chain_id() != session.chain_id {
                return Err(SdkError::Usage(format!("{} holds another network", dir.display())));
            }
            let alias = format!("{org}-admin");
            if session.home.has_identity(&alias) || session.home.book()?.contains_key(&alias) {
                return Err(SdkError::Usage(format!("{alias} already exists in this home")));
            }
            let expires_at = expiry(&expires)?;
            if out.exists() {
                return Err(SdkError::Usage(format!("{} already exists", out.display())));
            }
            let status = rt.block_on(session.client.governance())?;
            let index = next_validator_index(&status);
            // Blobs go where the other validators on this machine keep them.
            let (storage, s3_endpoint) = match load_validator(&dir, 0) {
                Ok(file) => (file.storage, file.s3_endpoint),
                Err(_) => (format!("file://{}", dir.join("blobs").display()), None),
            };
            let admin = Identity::generate(&alias, Role::Admin, org.clone(), Default::default());
            let pass = passphrase()?;
            let (public_key, share_key) =
                write_joining_validator(&dir, index, p2p, api, storage, s3_endpoint, genesis.share_keys.is_some())
                    .map_err(|e| SdkError::Usage(e.to_string()))?;
            let proposal = Proposal::Join {
                org: Box::new(GenesisOrg {
                    id: org.clone(),
                    name: name.unwrap_or_else(|| org.to_string()),
                    admin: GenesisMember {
                        member: admin.member,
                        signing_key: admin.signing.verifying_key(),
                        encryption_key: admin.encryption.encryption_key().clone(),
                    },
                }),
                validator: Box::new(NewValidator {
                    public_key,
                    p2p_address: p2p.to_string(),
                    api_address: api.to_string(),
                    share_key,
                }),
                expires_at,
            };
            let text = serde_json::to_vec_pretty(&proposal).map_err(|e| SdkError::Other(e.to_string()))?;
            write_new(&out, &text)?;
            session.home.save_identity(&admin, pass.as_bytes())?;
            let id = proposal.id();
            if json {
                println!("{}", json!({"proposal": id.to_hex(), "file": out, "admin": alias, "validator": index}));
            } else {
                println!(
                    "proposal {id} written to {}: {org} joins with validator {index} ({}); its admin is {alias}. \
                     Ask the member organisations' admins to run `medledger governance approve {}`, then start \
                     the validator with `medledger node --dir {} --validator {index}`.",
                    out.display(),
                    p2p,
                    out.display(),
                    dir.display()
                );
            }
        }
        GovernanceCommand::Leave { org, expires, out } => {
            let proposal = Proposal::Leave { org: org_id(&org)?, expires_at: expiry(&expires)? };
            let text = serde_json::to_vec_pretty(&proposal).map_err(|e| SdkError::Other(e.to_string()))?;
            write_new(&out, &text)?;
            let id = proposal.id();
            if json {
                println!("{}", json!({"proposal": id.to_hex(), "file": out}));
            } else {
                println!("proposal {id} written to {}: {org} leaves", out.display());
            }
        }
        GovernanceCommand::Approve { file, as_ } => {
            let proposal = read_proposal(&file)?;
            let admin = session.home.load_identity(&as_, passphrase()?.as_bytes())?;
            let id = proposal.id();
            let committed = rt.block_on(session.transact(&admin, TxKind::Governance(proposal), None))?;
            let entry = rt.block_on(session.client.proposal(&id))?.unwrap_or(Value::Null);
            let approvals: Vec<&str> =
                entry["approvals"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let adopted = entry["adopted_at"].as_u64();
            if json {
                println!(
                    "{}",
                    json!({"proposal": id.to_hex(), "tx": committed.tx, "height": committed.height.get(), "approvals": approvals, "adopted_at": adopted})
                );
            } else {
                match adopted {
                    Some(height) => println!(
                        "approved; proposal {id} adopted in block {height} (approved by {}): the validator set \
                         changes at the epoch `medledger governance status` shows",
                        approvals.join(", ")
                    ),
                    None => {
                        println!("approved (block {}); approvals so far: {}", committed.height, approvals.join(", "))
                    }
                }
            }
        }
        GovernanceCommand::Status { proposal } => {
            if let Some(file) = proposal {
                let id = read_proposal(&file)?.id();
                let entry = rt.block_on(session.client.proposal(&id))?;
                let entry = entry.unwrap_or_else(|| json!({"id": id.to_hex(), "approvals": []}));
                println!("{}", if json { entry.to_string() } else { describe_proposal(&entry) });
                return Ok(());
            }
            let status = rt.block_on(session.client.governance())?;
            if json {
                println!("{status}");
                return Ok(());
            }
            println!(
                "height {}, epoch {}, {} organisation(s)",
                status["height"],
                status["epoch"],
                status["orgs"].as_u64().unwrap_or(0)
            );
            let height = status["height"].as_u64().unwrap_or(0);
            for epoch in status["epochs"].as_array().into_iter().flatten() {
                let first = epoch["first_height"].as_u64().unwrap_or(0);
                let validators: Vec<String> = epoch["validators"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| format!("{} ({})", v["index"], v["org"].as_str().unwrap_or("?")))
                    .collect();
                let pending = if first > height + 1 { " (pending)" } else { "" };
                println!("epoch {} from block {first}{pending}: validators {}", epoch["epoch"], validators.join(", "));
            }
        }
    }
    Ok(())
}

fn describe_proposal(entry: &Value) -> String {
    let approvals: Vec<&str> = entry["approvals"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let adopted = match entry["adopted_at"].as_u64() {
        Some(height) => format!("adopted in block {height}"),
        None => "not adopted".into(),
    };
    format!(
        "proposal {} ({} {}): {adopted}; approved by {}",
        entry["id"].as_str().unwrap_or("?"),
        entry["kind"].as_str().unwrap_or("?"),
        entry["org"].as_str().unwrap_or("?"),
        if approvals.is_empty() { "none yet".into() } else { approvals.join(", ") }
    )
}
