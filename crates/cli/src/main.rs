//! `medledger`: one binary for operators (init, up, node, verify) and members (id, record, grant,
//! revoke, audit). Exit codes: 0 ok, 1 other error, 2 usage, 3 access denied, 4 integrity failure.
//! Errors are one line on stderr and never carry patient data.

mod ceremony;
mod commands;
mod fhir;
mod governance;
mod network;
mod receipt;
mod tty;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use medledger_sdk::SdkError;

#[derive(Parser)]
#[command(name = "medledger", version, about = "Encrypted patient records on a permissioned BFT ledger")]
struct Cli {
    /// Client home: keystores, address book and client config.
    #[arg(long, global = true, env = "MEDLEDGER_HOME")]
    home: Option<PathBuf>,
    /// A validator's API URL (default: every validator in the client config, with fail-over).
    #[arg(long, global = true, env = "MEDLEDGER_NODE")]
    node: Option<String>,
    /// Print data as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a new local network: genesis, every validator's keys and configs, and the admins'
    /// identities, all made on this machine (for a network on separate hosts, `genesis`).
    Init(InitArgs),
    /// The genesis ceremony of a network on separate hosts: each organisation makes its keys on
    /// its own host (`contribute`), genesis is assembled from the public parts (`assemble`), each
    /// host installs it (`install`).
    #[command(subcommand)]
    Genesis(GenesisCommand),
    /// Run every validator of DIR (initialising DIR with the defaults if it is empty), and the
    /// web portal.
    Up {
        #[arg(long)]
        dir: PathBuf,
        /// Where the web portal listens ("off": no portal).
        #[arg(long, default_value = "127.0.0.1:7480")]
        portal: String,
        /// Minutes without activity after which the portal wipes a member's keys (1 to 480).
        #[arg(long, default_value_t = medledger_portal::IDLE_MINUTES_DEFAULT)]
        idle_minutes: u32,
    },
    /// Serve the web portal (a browser client: keys, encryption and signatures stay in the
    /// browser) for this home's network, forwarding its requests to the validators.
    Portal {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7480")]
        listen: String,
        /// Minutes without activity after which the page wipes a member's keys (1 to 480).
        #[arg(long, default_value_t = medledger_portal::IDLE_MINUTES_DEFAULT)]
        idle_minutes: u32,
    },
    /// Run one validator of DIR (for multi-host deployments).
    Node {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        validator: u32,
    },
    /// Copy a stopped validator's keys, state, chain and consensus journal to a folder.
    Backup {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        validator: u32,
        /// Destination folder (must not exist).
        #[arg(long)]
        to: PathBuf,
    },
    /// Put a validator back from a backup (its folder must not exist); it catches up from peers.
    Restore {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        validator: u32,
        #[arg(long)]
        from: PathBuf,
    },
    /// Identities.
    #[command(subcommand)]
    Id(IdCommand),
    /// Records.
    #[command(subcommand)]
    Record(RecordCommand),
    /// Grant a member access to your records (as the patient).
    Grant(GrantArgs),
    /// Revoke a member's access (as the patient).
    Revoke(RevokeArgs),
    /// Read a patient's audit trail, or (auditors) the review queue of flagged events.
    Audit {
        #[arg(long = "as")]
        as_: String,
        #[arg(long, required_unless_present = "flagged", conflicts_with = "flagged")]
        patient: Option<String>,
        /// The auditors' review queue: break-glass openings and attempts, emergency reads.
        #[arg(long)]
        flagged: bool,
        /// `fhir`: one FHIR R4 AuditEvent per line (NDJSON), for SIEM and compliance tools.
        #[arg(long, value_parser = ["text", "fhir"], default_value = "text")]
        format: String,
        /// Also save each event's receipt as DIR/TX.receipt (check offline with `receipt verify`).
        #[arg(long, value_name = "DIR")]
        receipts: Option<PathBuf>,
    },
    /// Appoint a delegate (a guardian, a proxy) who acts for you in grants, revocations, reads and
    /// your audit trail (as the patient); `--dismiss` ends it and moves your chart key on.
    Delegate {
        #[arg(long = "as")]
        as_: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        dismiss: bool,
    },
    /// Patients held in an organisation's custody.
    #[command(subcommand)]
    Custody(CustodyCommand),
    /// The consortium: organisations join or leave by a proposal 2/3 of them approve; the
    /// validator set changes at a new epoch.
    #[command(subcommand)]
    Governance(GovernanceCommand),
    /// Care teams: key holders like members, whose key is wrapped for each member; grants can go
    /// to a team (`grant --to TEAM`).
    #[command(subcommand)]
    Team(TeamCommand),
    /// The organisation's directory: records that describe no patient (Practitioner,
    /// Organization, Location, Medication...), under a key its staff hold.
    #[command(subcommand)]
    Directory(DirectoryCommand),
    /// Receipts: proof that a transaction and its outcome are in a finalized block.
    #[command(subcommand)]
    Receipt(ReceiptCommand),
    /// Emergency access to a patient's records (doctor or emergency role): time-boxed,
    /// rate-limited, flagged to the patient and the auditors. Then read with `--purpose ETREAT`.
    BreakGlass {
        #[arg(long = "as")]
        as_: String,
        #[arg(long)]
        patient: String,
        /// unconscious, life-threatening, unable-to-consent or mass-casualty.
        #[arg(long)]
        reason: String,
        /// How long the records stay open (at most 24h).
        #[arg(long = "for", default_value = "24h")]
        duration: String,
        /// Free text (at most 1 KiB), encrypted for the patient and the auditors only.
        #[arg(long)]
        note: Option<String>,
    },
    /// Place or lift a legal hold (auditors): erasure of what it covers is refused until lifted.
    LegalHold {
        #[arg(long = "as")]
        as_: String,
        #[arg(long)]
        patient: String,
        /// One record only (default: all of the patient's records).
        #[arg(long)]
        record: Option<String>,
        /// Lift the hold instead of placing it.
        #[arg(long)]
        lift: bool,
    },
    /// Verify the whole chain (blocks, certificates, re-execution, state roots) and every ciphertext.
    Verify {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Show the network's height and state root.
    Status,
    /// Serve FHIR R4 REST on a loopback address as USER: resources are validated, encrypted and
    /// registered here; every read is an audited access first.
    Gateway {
        #[arg(long = "as")]
        as_: String,
        /// Loopback address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// An admin of your organisation, to enrol new patients (POST /Patient) in its custody
        /// (default: ORG-admin when its keys are in this home).
        #[arg(long)]
        custodian: Option<String>,
        /// HL7 PurposeOfUse of the reads made for applications.
        #[arg(long, default_value = "TREAT")]
        purpose: String,
    },
    /// Import FHIR R4 files (NDJSON, Bundles, single resources; a file or a folder) as USER (a
    /// doctor); patients not enrolled yet are enrolled in your organisation's custody with your
    /// treatment grant. Resumable: run it again after an interruption.
    Import {
        #[arg(long = "as")]
        as_: String,
        /// An admin of your organisation (default: ORG-admin when its keys are in this home).
        #[arg(long)]
        custodian: Option<String>,
        /// Resources planned, sealed and registered together (files are never split).
        #[arg(long, default_value_t = medledger_gateway::import::BATCH_DEFAULT)]
        batch: usize,
        input: PathBuf,
    },
    /// Export charts as FHIR NDJSON (one `Type.ndjson` per resource type) into a new folder: a
    /// patient's own chart (right of access and portability), or as a clinician every chart you
    /// may read (or `--patient`). Every resource is an audited read.
    Export {
        #[arg(long = "as")]
        as_: String,
        /// One patient's chart (default: a patient's own; a clinician's every readable chart).
        #[arg(long)]
        patient: Option<String>,
        /// Only these resource types (comma-separated).
        #[arg(long = "type")]
        types: Option<String>,
        /// The folder to write (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
pub struct InitArgs {
    #[arg(long)]
    pub dir: PathBuf,
    /// Validators (n = 3f + 1 tolerates f faulty ones; 1 is development mode).
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// Organisations, comma separated (ids: lowercase letters, digits, '-', '_'); default one
    /// per validator, org1..orgN, so no organisation holds more than f validators.
    #[arg(long, value_delimiter = ',')]
    pub orgs: Vec<String>,
    /// Object store: file://PATH (default: DIR/blobs), s3://BUCKET, memory://.
    #[arg(long)]
    pub storage: Option<String>,
    /// Endpoint of a non-AWS S3 server, e.g. http://127.0.0.1:9000.
    #[arg(long)]
    pub s3_endpoint: Option<String>,
    /// First API port; validator K listens on BASE+K (API) and BASE+100+K (p2p).
    #[arg(long, default_value_t = 7400)]
    pub base_port: u16,
    /// Serve the APIs over HTTPS: writes a local CA (DIR/tls/ca.pem, its key beside it) and a
    /// certificate per validator, and has clients and validators trust that CA only.
    #[arg(long)]
    pub tls: bool,
    /// Make a network without threshold release: any one validator that serves a read hands out
    /// the whole record key (the suite of networks made before threshold release existed).
    /// By default each validator gets a share key and f + 1 of them must release their shares.
    #[arg(long)]
    pub no_threshold: bool,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// The limits a consortium sets for itself at genesis.
#[derive(Args, Default)]
pub struct PolicyArgs {
    /// The longest break-glass window this network allows (default 24h; 1m to 7d).
    #[arg(long)]
    pub break_glass_max: Option<String>,
    /// Break-glass openings per member per 24 hours (default 3; 1 to 100).
    #[arg(long)]
    pub break_glass_per_day: Option<u32>,
    /// How long an admin-approved key recovery waits, so the member can object (default 72h;
    /// 1s to 30d).
    #[arg(long)]
    pub recovery_delay: Option<String>,
}

#[derive(Subcommand)]
pub enum GenesisCommand {
    /// On an organisation's own host: makes its admin's keys (in this home, as ORG-admin) and its
    /// validator's consensus and share keys (secrets in DIR/validator.pending.json, 0600), and
    /// writes the public part to hand over.
    Contribute {
        /// This host's network directory.
        #[arg(long)]
        dir: PathBuf,
        /// The organisation's id (1-32 of a-z, 0-9, '-', '_').
        #[arg(long)]
        org: String,
        /// Its display name (defaults to the id).
        #[arg(long)]
        name: Option<String>,
        /// Where its validator accepts p2p connections (IP:port, as its peers reach it).
        #[arg(long)]
        p2p: std::net::SocketAddr,
        /// Where its validator serves the API (IP:port, as clients reach it).
        #[arg(long)]
        api: std::net::SocketAddr,
        /// Object store: file://PATH (default DIR/blobs), s3://BUCKET, memory://.
        #[arg(long)]
        storage: Option<String>,
        /// Endpoint of a non-AWS S3 server.
        #[arg(long)]
        s3_endpoint: Option<String>,
        /// For a network without threshold release (no share key).
        #[arg(long)]
        no_threshold: bool,
        /// The public part to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Anywhere (public data only): genesis from the organisations' parts, validators in the
    /// order given.
    Assemble {
        #[arg(long, default_value = "medledger")]
        chain_name: String,
        #[command(flatten)]
        policy: PolicyArgs,
        /// The genesis file to write.
        #[arg(long)]
        out: PathBuf,
        /// The organisations' contribution files.
        #[arg(required = true)]
        parts: Vec<PathBuf>,
    },
    /// On each organisation's host: installs the assembled genesis beside the secrets
    /// `contribute` kept, as validator K of DIR, and points this home's client at the network.
    Install {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        genesis: PathBuf,
    },
}

#[derive(Subcommand)]
enum IdCommand {
    /// Make a member's keys here and have an admin of their organisation enrol them (the admin's
    /// machine then makes the member's keys: for local demos; members make their own with
    /// `id request`).
    Create {
        /// Local alias (never leaves this machine).
        name: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        org: Option<String>,
        #[arg(long = "as")]
        as_: String,
        /// Public display name for staff (provider directory); never for patients.
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Make your keys on this device and write an enrolment request (public keys only, signed
    /// with them; for a patient also the first chart key, wrapped for you alone) for an admin of
    /// your organisation to approve with `id approve`. Prints your recovery code.
    Request {
        /// Local alias (never leaves this machine).
        name: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        org: String,
        /// Public display name for staff (provider directory); never for patients.
        #[arg(long)]
        display_name: Option<String>,
        /// Where to write the request.
        #[arg(long)]
        out: PathBuf,
    },
    /// Enrol the member of an enrolment request (as an admin of their organisation), once its
    /// signature shows the keys are the requester's and nothing was changed.
    Approve {
        #[arg(long = "as")]
        as_: String,
        request: PathBuf,
    },
    /// List the identities and contacts of this home.
    List,
    /// Suspend a member of your organisation (as its admin): they can do nothing until reinstated,
    /// and every attempt on a patient's chart is audited.
    Suspend {
        name: String,
        #[arg(long = "as")]
        as_: String,
    },
    /// Lift a member's suspension (as an admin of their organisation).
    Reinstate {
        name: String,
        #[arg(long = "as")]
        as_: String,
    },
    /// Replace your keys (signed with the current ones); prints the new recovery code.
    Rotate { name: String },
    /// Restore your keys from the recovery code shown when they were made, and replace them at
    /// once (the lost device holds them too); prints the new recovery code.
    Recover {
        name: String,
        #[arg(long)]
        code: String,
        /// Your member id, when this home does not know NAME.
        #[arg(long)]
        member: Option<String>,
    },
    /// Claim your identity from your organisation's custody with the claim file and the one-time
    /// code handed to you; prints your recovery code.
    Claim {
        name: String,
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        code: String,
    },
    /// On a new device, without your old keys or recovery code: make new keys and a recovery
    /// request for an admin of your organisation to approve.
    RecoveryStart {
        name: String,
        #[arg(long)]
        member: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Approve a member's recovery request (as an admin of their organisation): it takes effect
    /// after the network's delay, unless the member cancels it; the member and the auditors see it.
    RecoveryApprove {
        #[arg(long = "as")]
        as_: String,
        request: PathBuf,
    },
    /// Complete your recovery on the new device, once the delay has passed.
    RecoveryFinish { name: String },
    /// Cancel a recovery you did not ask for (with your current keys).
    RecoveryCancel { name: String },
}

#[derive(Subcommand)]
enum GovernanceCommand {
    /// For an organisation joining: makes its admin's keys (in this home, as ORG-admin), its
    /// validator's keys and files (in the network directory), and the proposal file the member
    /// organisations' admins approve. Then start the validator with `medledger node`.
    Join {
        /// The new organisation's id (1-32 of a-z, 0-9, '-', '_').
        #[arg(long)]
        org: String,
        /// Its display name (defaults to the id).
        #[arg(long)]
        name: Option<String>,
        /// Where its validator accepts p2p connections (IP:port).
        #[arg(long)]
        p2p: std::net::SocketAddr,
        /// Where its validator serves the API (IP:port).
        #[arg(long)]
        api: std::net::SocketAddr,
        /// The network directory (defaults to the one `init` recorded in this home).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// How long the proposal stays open for approvals (up to 7 days).
        #[arg(long, default_value = "24h")]
        expires: String,
        /// The proposal file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Writes the proposal that organisation ORG leaves (its validators leave the set; its staff
    /// can sign nothing after; its patients keep their records).
    Leave {
        org: String,
        #[arg(long, default_value = "24h")]
        expires: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Approves a proposal (as an admin of a member organisation; the first approval proposes
    /// it). Adopted once 2/3 of the organisations approved.
    Approve {
        file: PathBuf,
        #[arg(long = "as")]
        as_: String,
    },
    /// The validator-set epochs, and a proposal's approvals (`--proposal FILE`).
    Status {
        #[arg(long)]
        proposal: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CustodyCommand {
    /// Release a patient from your organisation's custody (as its admin): writes the claim file
    /// and prints the one-time code to hand the patient in person; the custody copy is destroyed.
    Release {
        patient: String,
        #[arg(long = "as")]
        as_: String,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum TeamCommand {
    /// Create a care team (as a doctor, its first member) with MEMBERS; NAME is a local alias.
    Create {
        name: String,
        #[arg(long = "as")]
        as_: String,
        /// Doctors, nurses or emergency members, comma-separated.
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
    },
    /// Add a member (as a doctor of the team).
    Add {
        team: String,
        #[arg(long = "as")]
        as_: String,
        #[arg(long)]
        member: String,
    },
    /// Remove a member (as a doctor of the team), or leave (`--member` yourself): the team's key
    /// moves on for the others.
    Remove {
        team: String,
        #[arg(long = "as")]
        as_: String,
        #[arg(long)]
        member: String,
    },
    /// The care teams this home names, with their key epoch and (for their members and their
    /// organisation's staff) their members.
    List {
        #[arg(long = "as")]
        as_: String,
    },
}

#[derive(Subcommand)]
enum DirectoryCommand {
    /// Pass the directory key on to a staff member of your organisation who has none (one who
    /// joined before an admin who holds it enrolled them); made first if no one has yet.
    Add {
        #[arg(long = "as")]
        as_: String,
        member: String,
    },
    /// The directory's records (ids and versions; staff only).
    List {
        #[arg(long = "as")]
        as_: String,
    },
}

#[derive(Subcommand)]
enum ReceiptCommand {
    /// Fetch the receipt of a committed transaction you signed, or whose event is in an audit
    /// trail you read (then name its patient).
    Get {
        #[arg(long = "as")]
        as_: String,
        /// Transaction id (64 hex).
        tx: String,
        #[arg(long)]
        patient: Option<String>,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Check a receipt offline, from the network's genesis file alone (exit 4 if it does not hold).
    Verify {
        file: PathBuf,
        #[arg(long)]
        genesis: PathBuf,
    },
}

#[derive(Subcommand)]
enum RecordCommand {
    /// Encrypt FILE for PATIENT, upload it and register it; prints the record id.
    Put {
        #[arg(long = "as")]
        as_: String,
        #[arg(long)]
        patient: String,
        file: PathBuf,
        /// Keep it outside chart-wide grants (42 CFR Part 2, HIV, mental health...): readable by
        /// the patient, you, per-record grantees and `--include-sensitive` grantees. A FHIR
        /// resource labelled so in `meta.security` always is.
        #[arg(long)]
        sensitive: bool,
    },
    /// Read a record (the access is audited on the ledger first).
    Get {
        #[arg(long = "as")]
        as_: String,
        record: String,
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// HL7 PurposeOfUse code.
        #[arg(long, default_value = "TREAT")]
        purpose: String,
        /// An earlier version (default: the current one); one a rotation replaced is gone.
        #[arg(long)]
        version: Option<u32>,
    },
    /// List a patient's records (ledger entries; contents stay encrypted).
    List {
        #[arg(long = "as")]
        as_: String,
        #[arg(long)]
        patient: Option<String>,
    },
    /// Re-encrypt a record under fresh keys as its next version; the validators delete the
    /// replaced ciphertext from the store. For when a reader who lost access may have kept a key.
    Rotate {
        #[arg(long = "as")]
        as_: String,
        record: String,
        /// HL7 PurposeOfUse code of the (audited) read of the current version.
        #[arg(long, default_value = "PATRQT")]
        purpose: String,
    },
    /// Erase a record (its patient): every version's ciphertext, envelopes and key shares are
    /// deleted by the validators; the chain keeps digests and the erasure event. Refused under a
    /// legal hold.
    Erase {
        #[arg(long = "as")]
        as_: String,
        record: String,
    },
}

#[derive(Args)]
pub struct GrantArgs {
    #[arg(long = "as")]
    pub as_: String,
    /// Act for this patient, as their delegate (default: yourself).
    #[arg(long)]
    pub patient: Option<String>,
    #[arg(long)]
    pub to: String,
    #[arg(long, conflicts_with = "all", required_unless_present = "all")]
    pub record: Option<String>,
    #[arg(long)]
    pub all: bool,
    /// With --all: the sensitive records too (those outside chart-wide grants), written before
    /// and after.
    #[arg(long, requires = "all")]
    pub include_sensitive: bool,
    /// Also lets a doctor add records for the patient (with --all).
    #[arg(long)]
    pub write: bool,
    /// RFC 3339 time (e.g. 2026-12-31T23:59:59Z) or a duration from now (e.g. 8h).
    #[arg(long)]
    pub expires: Option<String>,
}

#[derive(Args)]
pub struct RevokeArgs {
    #[arg(long = "as")]
    pub as_: String,
    /// Act for this patient, as their delegate (default: yourself).
    #[arg(long)]
    pub patient: Option<String>,
    #[arg(long)]
    pub from: String,
    #[arg(long, conflicts_with = "all", required_unless_present = "all")]
    pub record: Option<String>,
    #[arg(long)]
    pub all: bool,
    /// With --all: the grant on sensitive records too.
    #[arg(long, requires = "all")]
    pub include_sensitive: bool,
}

fn main() {
    let cli = Cli::parse();
    let home = cli.home.clone().unwrap_or_else(default_home);
    let result = match cli.command {
        Command::Node { dir, validator } => network::node(&dir, validator).map_err(|e| SdkError::Other(e.to_string())),
        Command::Up { dir, portal, idle_minutes } => network::up(&dir, &home, &portal, idle_minutes),
        Command::Portal { listen, idle_minutes } => network::portal(&home, &listen, idle_minutes),
        Command::Init(args) => network::init(&args, &home, cli.json),
        Command::Genesis(command) => ceremony::run(command, &home, cli.json),
        Command::Verify { dir } => network::verify(dir, &home, cli.json),
        Command::Receipt(ReceiptCommand::Verify { file, genesis }) => receipt::verify(&file, &genesis, cli.json),
        Command::Backup { dir, validator, to } => network::backup(&dir, validator, &to),
        Command::Restore { dir, validator, from } => network::restore(&dir, validator, &from),
        Command::Gateway { as_, listen, custodian, purpose } => {
            fhir::gateway(&home, cli.node, &as_, &listen, custodian, &purpose)
        }
        Command::Import { as_, custodian, batch, input } => {
            fhir::import(&home, cli.node, &as_, custodian, &input, batch, cli.json)
        }
        Command::Export { as_, patient, types, out } => {
            fhir::export(&home, cli.node, &as_, patient.as_deref(), types.as_deref(), &out, cli.json)
        }
        command => commands::run(command, &home, cli.node, cli.json),
    };
    if let Err(e) = result {
        let line = e.to_string().replace('\n', " ");
        eprintln!("error: {line}");
        std::process::exit(e.exit_code());
    }
}

fn default_home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from(".medledger"), |h| PathBuf::from(h).join(".medledger"))
}
