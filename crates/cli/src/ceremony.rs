//! `medledger genesis`: the genesis ceremony of a network whose validators run on separate hosts
//! (DESIGN §10). Each organisation makes its admin's and its validator's keys on its own host and
//! hands over only the public part; anyone assembles genesis from the public parts; each host then
//! installs that genesis beside the secrets it kept. No one ever holds another organisation's
//! secrets (`init`, which makes every key on one machine, is for local networks only).

use std::path::{Path, PathBuf};

use medledger_ledger::{GenesisMember, GenesisOrg};
use medledger_node::config::{Contribution, assemble, contribute, install, load_genesis};
use medledger_sdk::{ClientConfig, Home, Identity, Result, SdkError};
use medledger_types::{OrgId, Role};

use crate::GenesisCommand;
use crate::commands::passphrase;

/// The largest contribution file `assemble` reads.
const CONTRIBUTION_BYTES_MAX: u64 = 64 * 1024;
/// The largest genesis file `install` reads.
const GENESIS_BYTES_MAX: u64 = 4 * 1024 * 1024;

pub fn run(command: GenesisCommand, home_dir: &Path, json: bool) -> Result<()> {
    match command {
        GenesisCommand::Contribute { dir, org, name, p2p, api, storage, s3_endpoint, no_threshold, out } => {
            let id = OrgId::new(&org)
                .map_err(|_| SdkError::Usage(format!("organisation ids are 1-32 of a-z, 0-9, '-', '_': {org}")))?;
            let home = Home::open(home_dir)?;
            let alias = format!("{id}-admin");
            if home.has_identity(&alias) || home.book()?.contains_key(&alias) {
                return Err(SdkError::Usage(format!("{alias} already exists in {}", home_dir.display())));
            }
            if out.exists() {
                return Err(SdkError::Usage(format!("{} already exists", out.display())));
            }
            let pass = passphrase()?;
            let admin = Identity::generate(&alias, Role::Admin, id.clone(), Default::default());
            let org = GenesisOrg {
                id,
                name: name.unwrap_or_else(|| org.clone()),
                admin: GenesisMember {
                    member: admin.member,
                    signing_key: admin.signing.verifying_key(),
                    encryption_key: admin.encryption.encryption_key().clone(),
                },
            };
            let storage = storage.unwrap_or_else(|| format!("file://{}", dir.join("blobs").display()));
            let part = contribute(&dir, org, p2p, api, storage, s3_endpoint, !no_threshold)
                .map_err(|e| SdkError::Usage(e.to_string()))?;
            home.save_identity(&admin, pass.as_bytes())?;
            let text = serde_json::to_string_pretty(&part).map_err(|e| SdkError::Other(e.to_string()))?;
            std::fs::write(&out, text).map_err(|e| SdkError::Other(format!("{}: {e}", out.display())))?;
            if json {
                println!("{}", serde_json::json!({"contribution": out, "admin": alias}));
            } else {
                println!(
                    "contribution written to {} (public keys and addresses only; hand it to whoever assembles \
                     genesis); the validator's secrets stay in {}, the admin's in this home as {alias}",
                    out.display(),
                    dir.display()
                );
            }
            Ok(())
        }
        GenesisCommand::Assemble { chain_name, policy, out, parts } => {
            if out.exists() {
                return Err(SdkError::Usage(format!("{} already exists", out.display())));
            }
            let parts = parts.iter().map(read_part).collect::<Result<Vec<_>>>()?;
            let genesis = assemble(chain_name, parts, crate::network::network_policy(&policy)?)
                .map_err(|e| SdkError::Usage(e.to_string()))?;
            std::fs::write(&out, genesis.to_json()).map_err(|e| SdkError::Other(format!("{}: {e}", out.display())))?;
            if json {
                println!("{}", serde_json::json!({"genesis": out, "chain_id": genesis.chain_id()}));
            } else {
                println!(
                    "genesis written to {}: chain {}, {} validator(s); every organisation installs it",
                    out.display(),
                    genesis.chain_id(),
                    genesis.validators.len()
                );
            }
            Ok(())
        }
        GenesisCommand::Install { dir, genesis } => {
            let text = read_bounded(&genesis, GENESIS_BYTES_MAX)?;
            let parsed = medledger_ledger::Genesis::from_json(&text)
                .map_err(|e| SdkError::Usage(format!("{}: {e}", genesis.display())))?;
            parsed.validate().map_err(|e| SdkError::Usage(format!("{}: {e}", genesis.display())))?;
            let index = install(&dir, &parsed).map_err(|e| SdkError::Usage(e.to_string()))?;
            let installed = load_genesis(&dir).map_err(|e| SdkError::Usage(e.to_string()))?;
            let home = Home::open(home_dir)?;
            let nodes = installed.validators.iter().map(|v| format!("http://{}", v.api_address)).collect();
            let network_dir = dir.canonicalize().map_err(|e| SdkError::Other(e.to_string()))?;
            home.save_config(&ClientConfig {
                chain_id: installed.chain_id(),
                nodes,
                network_dir: Some(network_dir),
                ca_pem: None,
            })?;
            if json {
                println!("{}", serde_json::json!({"validator": index, "chain_id": installed.chain_id()}));
            } else {
                println!(
                    "genesis installed: this host runs validator {index} (medledger node --dir {} --validator {index})",
                    dir.display()
                );
            }
            Ok(())
        }
    }
}

fn read_bounded(path: &PathBuf, max: u64) -> Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| SdkError::Usage(format!("{}: {e}", path.display())))?;
    let mut text = String::new();
    file.take(max + 1).read_to_string(&mut text).map_err(|e| SdkError::Usage(format!("{}: {e}", path.display())))?;
    if text.len() as u64 > max {
        return Err(SdkError::Usage(format!("{}: larger than {max} bytes", path.display())));
    }
    Ok(text)
}

fn read_part(path: &PathBuf) -> Result<Contribution> {
    let text = read_bounded(path, CONTRIBUTION_BYTES_MAX)?;
    serde_json::from_str(&text)
        .map_err(|e| SdkError::Usage(format!("{}: not a genesis contribution: {e}", path.display())))
}
