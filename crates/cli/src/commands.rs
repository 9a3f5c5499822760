//! Member commands: identities, records, grants, audit.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use medledger_crypto::suite::KemSuite;
use medledger_ledger::state::{AuditAction, AuditEvent, Decision, RecordEntry};
use medledger_ledger::{EmergencyReason, GrantScope};
use medledger_sdk::recovery::{ClaimCode, RecoveryCode};
use medledger_sdk::{Contact, Home, Identity, Result, SdkError, Session, check_alias};
use medledger_types::{MemberId, OrgId, PurposeOfUse, RecordId, Role, Timestamp, TxId};
use serde_json::json;
use zeroize::Zeroizing;

use crate::{Command, CustodyCommand, DirectoryCommand, IdCommand, ReceiptCommand, RecordCommand, TeamCommand};

/// The keystore passphrase: `MEDLEDGER_PASSPHRASE`, or a prompt on a terminal.
pub fn passphrase() -> Result<Zeroizing<String>> {
    let pass = match std::env::var("MEDLEDGER_PASSPHRASE") {
        Ok(p) => Zeroizing::new(p),
        Err(_) if !std::io::stdin().is_terminal() => {
            return Err(SdkError::Usage(
                "set MEDLEDGER_PASSPHRASE or run on a terminal to be asked for the passphrase".into(),
            ));
        }
        // Read from the terminal with echo off (never shown, never in the scrollback).
        Err(_) => crate::tty::read_hidden("keystore passphrase: ").map_err(|e| SdkError::Other(e.to_string()))?,
    };
    if pass.is_empty() {
        return Err(SdkError::Usage("the keystore passphrase must not be empty".into()));
    }
    Ok(pass)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| SdkError::Other(e.to_string()))
}

fn load(home: &Home, alias: &str) -> Result<Identity> {
    home.load_identity(alias, passphrase()?.as_bytes())
}

/// A member named by their own alias in this home's address book, or by their id (on a device
/// that has none): for the commands a member runs without keys the ledger knows.
fn own_member(home: &Home, name: &str) -> Result<MemberId> {
    match home.resolve(name) {
        Ok(contact) => Ok(contact.member),
        Err(e) => name.parse().map_err(|_| e),
    }
}

fn parse_purpose(s: &str) -> Result<PurposeOfUse> {
    s.parse().map_err(|_| {
        SdkError::Usage(
            "--purpose is an HL7 PurposeOfUse code: TREAT, ETREAT, HPAYMT, HOPERAT, PATRQT, HRESCH, LEGAL".into(),
        )
    })
}

fn parse_record(s: &str) -> Result<RecordId> {
    s.parse().map_err(|_| SdkError::Usage("a record id is 32 hex digits".into()))
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn rfc3339(t: Timestamp) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(t.get())).to_string()
}

fn parse_expiry(s: &str) -> Result<Timestamp> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        let ms = t.duration_since(UNIX_EPOCH).map_err(|_| SdkError::Usage("expiry before 1970".into()))?.as_millis();
        return Ok(Timestamp::new(ms as u64));
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(Timestamp::new(now_ms().saturating_add(d.as_millis() as u64)));
    }
    Err(SdkError::Usage("--expires takes an RFC 3339 time (2026-12-31T23:59:59Z) or a duration (8h)".into()))
}

fn name_of(home: &Home, member: &MemberId) -> String {
    home.alias_of(member).unwrap_or_else(|| member.to_hex())
}

pub fn run(command: Command, home_dir: &Path, node: Option<String>, json: bool) -> Result<()> {
    let rt = runtime()?;
    if let Command::Id(IdCommand::List) = command {
        let home = Home::open(home_dir)?;
        for (alias, c) in home.book()? {
            if json {
                println!(
                    "{}",
                    json!({"name": alias, "member": c.member, "role": c.role.as_str(), "org": c.org.as_str(), "keys_here": home.has_identity(&alias)})
                );
            } else {
                let mine = if home.has_identity(&alias) { " (keys here)" } else { "" };
                println!("{alias}\t{}\t{}\t{}{mine}", c.role.as_str(), c.org, c.member);
            }
        }
        return Ok(());
    }
    let session = Session::open(home_dir, node)?;
    let home = &session.home;
    match command {
        Command::Id(IdCommand::Create { name, role, org, as_, display_name }) => {
            let role: Role = role.parse().map_err(|_| {
                SdkError::Usage("--role is one of patient, doctor, nurse, admin, auditor, emergency".into())
            })?;
            let pass = passphrase()?;
            let admin = home.load_identity(&as_, pass.as_bytes())?;
            let org = match org {
                Some(o) => OrgId::new(&o).map_err(|_| SdkError::Usage("malformed organisation id".into()))?,
                None => admin.org.clone(),
            };
            let (identity, code) =
                rt.block_on(session.create_identity(&admin, &name, role, org, display_name, pass.as_bytes()))?;
            if json {
                println!(
                    "{}",
                    json!({"name": name, "member": identity.member, "role": role.as_str(), "org": identity.org.as_str(), "recovery_code": code.reveal().as_str()})
                );
            } else {
                println!("{name} enrolled as {} of {} (member {})", role.as_str(), identity.org, identity.member);
                show_recovery_code(&name, &code);
            }
        }
        Command::Id(IdCommand::Request { name, role, org, display_name, out }) => {
            let role: Role = role.parse().map_err(|_| {
                SdkError::Usage("--role is one of patient, doctor, nurse, admin, auditor, emergency".into())
            })?;
            let org = OrgId::new(&org).map_err(|_| SdkError::Usage("malformed organisation id".into()))?;
            if out.exists() {
                return Err(SdkError::Usage(format!("{} exists; choose another --out", out.display())));
            }
            let pass = passphrase()?;
            let (identity, code, request) =
                session.request_enrolment(&name, role, org, display_name, pass.as_bytes())?;
            let text = serde_json::to_vec_pretty(&request).map_err(|e| SdkError::Other(e.to_string()))?;
            std::fs::write(&out, text).map_err(|e| SdkError::Usage(format!("cannot write {}: {e}", out.display())))?;
            if json {
                println!(
                    "{}",
                    json!({"name": name, "member": identity.member, "request": out, "recovery_code": code.reveal().as_str()})
                );
            } else {
                println!(
                    "enrolment request for {name} (member {}) written to {}: an admin of {} approves it with `id approve`",
                    identity.member,
                    out.display(),
                    identity.org
                );
                show_recovery_code(&name, &code);
            }
        }
        Command::Id(IdCommand::Approve { as_, request }) => {
            let bytes = read_small(&request, medledger_sdk::ENROLMENT_REQUEST_BYTES_MAX, "enrolment request")?;
            let request = medledger_sdk::EnrolmentRequest::parse(&bytes)?;
            let c = rt.block_on(session.approve_enrolment(&load(home, &as_)?, &request))?;
            let e = &request.enroll;
            if json {
                println!("{}", json!({"member": e.member, "role": e.role.as_str(), "org": e.org.as_str(), "tx": c.tx}));
            } else {
                println!("enrolled member {} as {} of {} (tx {})", e.member, e.role.as_str(), e.org, c.tx);
            }
        }
        Command::Id(IdCommand::Rotate { name }) => {
            let pass = passphrase()?;
            let me = home.load_identity(&name, pass.as_bytes())?;
            let (next, code, c) = rt.block_on(session.rotate_keys(&me, medledger_ledger::KeyChange::Routine))?;
            home.replace_identity(&next, pass.as_bytes())?;
            keys_changed(json, "keys rotated", &name, &code, &c);
        }
        Command::Id(IdCommand::Recover { name, code, member }) => {
            let code = RecoveryCode::parse(&code)?;
            let member = own_member(home, member.as_deref().unwrap_or(&name))?;
            let pass = passphrase()?;
            let (next, code, c) = rt.block_on(session.recover_with_code(&name, &member, &code))?;
            home.replace_identity(&next, pass.as_bytes())?;
            keys_changed(json, "keys restored and rotated", &name, &code, &c);
        }
        Command::Id(IdCommand::Claim { name, file, code }) => {
            check_alias(&name)?;
            if home.has_identity(&name) {
                return Err(SdkError::Usage("that name is already taken in this home".into()));
            }
            let code = ClaimCode::parse(&code)?;
            let bytes = read_small(&file, medledger_sdk::CLAIM_FILE_BYTES_MAX, "claim file")?;
            let pass = passphrase()?;
            let (next, recovery, c) = rt.block_on(session.claim(&name, &bytes, &code))?;
            home.save_identity(&next, pass.as_bytes())?;
            keys_changed(json, "identity claimed", &name, &recovery, &c);
        }
        Command::Id(IdCommand::RecoveryStart { name, member, out }) => {
            // A new device: nothing signs for the member yet, so the ledger tells it nothing; the
            // address book (if it came along) names the role and organisation, else the member's
            // own entry does once the recovery is complete.
            let pending = format!("{name}.recovery");
            let code = RecoveryCode::generate();
            let next = match home.resolve(&member) {
                Ok(c) => Identity::from_recovery_code(&pending, c.member, c.role, c.org, KemSuite::default(), &code)?,
                Err(_) => Identity::unplaced(&pending, own_member(home, &member)?, &code)?,
            };
            let request = medledger_sdk::RecoveryRequest::of(&next);
            let text = serde_json::to_vec_pretty(&request).map_err(|e| SdkError::Other(e.to_string()))?;
            std::fs::write(&out, text).map_err(|e| SdkError::Usage(format!("cannot write {}: {e}", out.display())))?;
            home.save_identity(&next, passphrase()?.as_bytes())?;
            if json {
                println!("{}", json!({"request": out, "recovery_code": code.reveal().as_str()}));
            } else {
                println!("recovery request written to {}: an admin of your organisation approves it", out.display());
                show_recovery_code(&name, &code);
            }
        }
        Command::Id(IdCommand::RecoveryApprove { as_, request }) => {
            let request = medledger_sdk::RecoveryRequest::parse(&read_small(&request, 16 * 1024, "recovery request")?)?;
            let c = rt.block_on(session.request_recovery(&load(home, &as_)?, &request))?;
            report(json, "recovery requested (the member is notified and may cancel it during the delay)", &c);
        }
        Command::Id(IdCommand::RecoveryFinish { name }) => {
            let pass = passphrase()?;
            let pending = home.load_identity(&format!("{name}.recovery"), pass.as_bytes())?;
            let c = rt.block_on(session.finish_recovery(&pending, true))?;
            // The keys are the member's now: their entry says who they are.
            let entry = rt.block_on(session.client.member(&pending, &pending.member))?;
            let mut next = pending.placed(&entry);
            next.alias = name.clone();
            home.replace_identity(&next, pass.as_bytes())?;
            home.remove_identity(&format!("{name}.recovery"))?;
            report(json, "recovery completed", &c);
        }
        Command::Id(IdCommand::RecoveryCancel { name }) => {
            let c = rt.block_on(session.finish_recovery(&load(home, &name)?, false))?;
            report(json, "recovery cancelled", &c);
        }
        Command::Governance(command) => crate::governance::run(command, &session, &rt, json)?,
        Command::Custody(CustodyCommand::Release { patient, as_, out }) => {
            let admin = load(home, &as_)?;
            let patient = rt.block_on(session.resolve(&admin, &patient))?;
            let custody = medledger_sdk::Custody::open(home, &admin)?;
            let (code, file, c) = rt.block_on(session.release_custody(&admin, &custody, &patient.member))?;
            // Readable by its owner only (finding 11 of the security review): with the code it
            // opens the patient's identity.
            crate::network::write_private(&out, &file)?;
            if json {
                println!("{}", json!({"claim_file": out, "code": code.reveal(), "tx": c.tx, "height": c.height.get()}));
            } else {
                println!(
                    "claim file written to {}; hand it and this one-time code to the patient in person:",
                    out.display()
                );
                println!("{}", code.reveal());
            }
        }
        Command::Id(IdCommand::Suspend { name, as_ }) => {
            let admin = load(home, &as_)?;
            let member = rt.block_on(session.resolve(&admin, &name))?;
            let c = rt.block_on(session.suspend(&admin, &member, true))?;
            report(json, "suspended", &c);
        }
        Command::Id(IdCommand::Reinstate { name, as_ }) => {
            let admin = load(home, &as_)?;
            let member = rt.block_on(session.resolve(&admin, &name))?;
            let c = rt.block_on(session.suspend(&admin, &member, false))?;
            report(json, "reinstated", &c);
        }
        Command::Record(RecordCommand::Put { as_, patient, file, sensitive }) => {
            let me = load(home, &as_)?;
            let patient = rt.block_on(session.resolve(&me, &patient))?;
            let meta = std::fs::metadata(&file).map_err(|e| SdkError::Usage(format!("{}: {e}", file.display())))?;
            if meta.len() > medledger_sdk::RECORD_PLAINTEXT_MAX as u64 {
                return Err(SdkError::Usage(format!(
                    "records are limited to {} MiB",
                    medledger_sdk::RECORD_PLAINTEXT_MAX >> 20
                )));
            }
            let plaintext =
                Zeroizing::new(std::fs::read(&file).map_err(|e| SdkError::Usage(format!("{}: {e}", file.display())))?);
            let (record, committed) = rt.block_on(session.put_record_marked(&me, &patient, &plaintext, sensitive))?;
            if json {
                println!("{}", json!({"record": record, "tx": committed.tx, "height": committed.height.get()}));
            } else {
                println!("{record}");
            }
        }
        Command::Record(RecordCommand::Get { as_, record, output, purpose, version }) => {
            let record = parse_record(&record)?;
            let purpose = parse_purpose(&purpose)?;
            let me = load(home, &as_)?;
            let opened = match version {
                Some(version) => rt.block_on(session.get_record_version(&me, record, version, purpose))?,
                None => rt.block_on(session.get_record(&me, record, purpose))?,
            };
            // Nothing is written until the whole record has authenticated.
            match output {
                Some(path) => {
                    write_output(&path, &opened.plaintext)
                        .map_err(|e| SdkError::Other(format!("{}: {e}", path.display())))?;
                    if json {
                        println!(
                            "{}",
                            json!({"record": record, "access_tx": opened.access.tx, "height": opened.access.height.get(), "bytes": opened.plaintext.len(), "metadata": opened.metadata})
                        );
                    }
                }
                None => {
                    std::io::stdout().write_all(&opened.plaintext).map_err(|e| SdkError::Other(e.to_string()))?;
                }
            }
        }
        Command::Record(RecordCommand::Rotate { as_, record, purpose }) => {
            let record = parse_record(&record)?;
            let purpose = parse_purpose(&purpose)?;
            let me = load(home, &as_)?;
            let committed = rt.block_on(session.rotate(&me, record, purpose))?;
            report(json, "rotated (the replaced ciphertext is deleted by the validators)", &committed);
        }
        Command::Record(RecordCommand::Erase { as_, record }) => {
            let record = parse_record(&record)?;
            let me = load(home, &as_)?;
            let committed = rt.block_on(session.erase(&me, record))?;
            report(json, "erased (the validators delete its ciphertext, envelopes and key shares)", &committed);
        }
        Command::LegalHold { as_, patient, record, lift } => {
            let me = load(home, &as_)?;
            let patient: Contact = rt.block_on(session.resolve(&me, &patient))?;
            let record = record.as_deref().map(parse_record).transpose()?;
            let committed = rt.block_on(session.legal_hold(&me, &patient, record, !lift))?;
            report(json, if lift { "legal hold lifted" } else { "legal hold placed" }, &committed);
        }
        Command::Record(RecordCommand::List { as_, patient }) => {
            let me = load(home, &as_)?;
            let patient = rt.block_on(session.resolve(&me, patient.as_deref().unwrap_or(&as_)))?;
            // Page by page, so any number of records prints in bounded memory.
            let mut after = None;
            loop {
                let (records, next) = rt.block_on(session.list_page(&me, &patient, after.as_deref()))?;
                print_records(home, &records, json);
                match next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        Command::Grant(args) => {
            let me = load(home, &args.as_)?;
            let to = rt.block_on(session.resolve_grantee(&me, &args.to))?;
            let scope = scope(args.record.as_deref(), args.all)?;
            let expires = args.expires.as_deref().map(parse_expiry).transpose()?;
            let patient = rt.block_on(session.resolve(&me, args.patient.as_deref().unwrap_or(&args.as_)))?;
            if args.include_sensitive && patient.member != me.member {
                return Err(SdkError::Denied("only the patient grants their sensitive records".into()));
            }
            let mut c = rt.block_on(session.grant_for(&me, &patient.member, &to, scope, args.write, expires))?;
            if args.include_sensitive {
                c = rt.block_on(session.grant_for(&me, &patient.member, &to, GrantScope::Sensitive, false, expires))?;
            }
            report(json, "granted", &c);
        }
        Command::Revoke(args) => {
            let me = load(home, &args.as_)?;
            let from = rt.block_on(session.resolve_grantee(&me, &args.from))?;
            let scope = scope(args.record.as_deref(), args.all)?;
            let patient = rt.block_on(session.resolve(&me, args.patient.as_deref().unwrap_or(&args.as_)))?;
            let mut c = rt.block_on(session.revoke_for(&me, &patient.member, &from, scope))?;
            if args.include_sensitive {
                c = rt.block_on(session.revoke_for(&me, &patient.member, &from, GrantScope::Sensitive))?;
            }
            report(json, "revoked", &c);
        }
        Command::Team(TeamCommand::Create { name, as_, members }) => {
            check_alias(&name)?;
            if home.teams()?.contains_key(&name) || home.book()?.contains_key(&name) {
                return Err(SdkError::Usage("that name is already taken in this address book".into()));
            }
            let me = load(home, &as_)?;
            let mut ids = Vec::with_capacity(members.len());
            for member in members.iter().filter(|m| !m.is_empty()) {
                ids.push(rt.block_on(session.resolve(&me, member))?.member);
            }
            let (team, c) = rt.block_on(session.team_create(&me, &ids))?;
            home.add_team(&name, team)?;
            if json {
                println!("{}", json!({"team": team, "tx": c.tx, "height": c.height.get()}));
            } else {
                println!("{team}");
            }
        }
        Command::Team(TeamCommand::Add { team, as_, member }) => {
            let me = load(home, &as_)?;
            let team = rt.block_on(session.resolve_grantee(&me, &team))?;
            let member = rt.block_on(session.resolve(&me, &member))?;
            report(json, "added", &rt.block_on(session.team_add(&me, &team, &member.member))?);
        }
        Command::Team(TeamCommand::Remove { team, as_, member }) => {
            let me = load(home, &as_)?;
            let team = rt.block_on(session.resolve_grantee(&me, &team))?;
            let member = rt.block_on(session.resolve(&me, &member))?;
            report(json, "removed", &rt.block_on(session.team_remove(&me, &team, &member.member))?);
        }
        Command::Directory(DirectoryCommand::Add { as_, member }) => {
            let me = load(home, &as_)?;
            let member = rt.block_on(session.resolve(&me, &member))?;
            rt.block_on(session.directory(&me))?;
            report(json, "added", &rt.block_on(session.directory_add(&me, &member.member))?);
        }
        Command::Directory(DirectoryCommand::List { as_ }) => {
            let me = load(home, &as_)?;
            for entry in rt.block_on(session.directory_records(&me))? {
                if json {
                    println!(
                        "{}",
                        json!({"record": entry.record, "version": entry.version, "author": name_of(home, &entry.author)})
                    );
                } else {
                    println!("{}  v{}  {}", entry.record, entry.version, name_of(home, &entry.author));
                }
            }
        }
        Command::Team(TeamCommand::List { as_ }) => {
            let me = load(home, &as_)?;
            for (name, id) in home.teams()? {
                let Some(team) = rt.block_on(session.client.team(&me, &id))? else { continue };
                let members: Vec<String> = team.members.iter().map(|m| name_of(home, m)).collect();
                if json {
                    println!("{}", json!({"name": name, "team": id, "epoch": team.epoch, "members": members}));
                } else {
                    println!("{name}\t{id}\tepoch {}\t{}", team.epoch, members.join(","));
                }
            }
        }
        Command::Delegate { as_, to, dismiss } => {
            let me = load(home, &as_)?;
            let to = rt.block_on(session.resolve(&me, &to))?;
            let c = rt.block_on(session.delegate(&me, &to, !dismiss))?;
            report(json, if dismiss { "delegate dismissed" } else { "delegate appointed" }, &c);
        }
        Command::Receipt(ReceiptCommand::Get { as_, tx, patient, output }) => {
            let me = load(home, &as_)?;
            let tx: TxId = tx.parse().map_err(|_| SdkError::Usage("a transaction id is 64 hex digits".into()))?;
            let patient = match patient {
                Some(p) => Some(rt.block_on(session.resolve(&me, &p))?.member),
                None => None,
            };
            rt.block_on(crate::receipt::save(&session, &me, &tx, patient.as_ref(), &output))?;
        }
        Command::Receipt(ReceiptCommand::Verify { .. }) => unreachable!("handled offline in main"),
        Command::Audit { as_, patient, flagged, format, receipts } => {
            if let Some(dir) = &receipts {
                std::fs::create_dir_all(dir)
                    .map_err(|e| SdkError::Usage(format!("cannot create {}: {e}", dir.display())))?;
            }
            let me = load(home, &as_)?;
            let patient: Option<Contact> = match patient {
                Some(patient) if !flagged => Some(rt.block_on(session.resolve(&me, &patient))?),
                _ => None,
            };
            // Page by page (1,000 events each), so a trail of any length prints in bounded memory.
            let mut after: Option<String> = None;
            loop {
                let (entries, next): (Vec<(MemberId, AuditEvent)>, Option<String>) = match &patient {
                    Some(patient) => {
                        let (events, next) = rt.block_on(session.audit_page(&me, patient, after.as_deref()))?;
                        (events.into_iter().map(|e| (patient.member, e)).collect(), next)
                    }
                    None => {
                        let (page, next) = rt.block_on(session.flagged_page(&me, after.as_deref()))?;
                        (page.into_iter().map(|f| (f.patient, f.event)).collect(), next)
                    }
                };
                for (patient, event) in &entries {
                    if let Some(dir) = &receipts {
                        let path = dir.join(format!("{}.receipt", event.tx));
                        rt.block_on(crate::receipt::save(&session, &me, &event.tx, Some(patient), &path))?;
                    }
                    if format == "fhir" {
                        println!("{}", medledger_gateway::audit::audit_event(&session.chain_id, patient, event));
                        continue;
                    }
                    if flagged && !json {
                        print!("patient {}  ", patient.to_hex());
                    }
                    // A break-glass note, for its readers (the patient and the auditors).
                    let mut note = None;
                    if matches!(event.action, AuditAction::BreakGlass { .. }) && event.decision == Decision::Allowed {
                        match rt.block_on(session.break_glass_note(&me, &event.tx)) {
                            Ok(text) => note = Some(text),
                            Err(SdkError::NotFound(_) | SdkError::Denied(_)) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    print_audit(home, event, note.as_deref(), json);
                }
                match next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        Command::BreakGlass { as_, patient, reason, duration, note } => {
            let reason: EmergencyReason = reason.parse().map_err(|()| {
                SdkError::Usage(
                    "--reason is one of unconscious, life-threatening, unable-to-consent, mass-casualty".into(),
                )
            })?;
            let duration = humantime::parse_duration(&duration)
                .map_err(|_| SdkError::Usage("--for is a duration such as 30m or 24h".into()))?;
            let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
            let me = load(home, &as_)?;
            let patient: Contact = rt.block_on(session.resolve(&me, &patient))?;
            let committed =
                rt.block_on(session.break_glass(&me, &patient, Some(reason), duration_ms, note.as_deref()))?;
            let until = committed.time.checked_add_ms(duration_ms).unwrap_or(committed.time);
            if json {
                println!("{}", json!({"tx": committed.tx, "height": committed.height.get(), "until": rfc3339(until)}));
            } else {
                println!("break-glass open until {} (flagged to the patient and the auditors)", rfc3339(until));
            }
        }
        Command::Status => {
            let statuses = rt.block_on(session.client.statuses());
            if statuses.iter().all(|(_, s)| s.is_none()) {
                return Err(SdkError::Other("no validator answered".into()));
            }
            for (k, (url, status)) in statuses.iter().enumerate() {
                match status {
                    Some(s) if json => println!("{s}"),
                    Some(s) => {
                        let peers = s["peers"].as_array().cloned().unwrap_or_default();
                        let up = peers.iter().filter(|p| p["up"] == true).count();
                        println!(
                            "validator {k}  {url}  height {}  state root {}  block {}  mempool {}  peers up {up}/{}",
                            s["height"],
                            s["state_root"].as_str().unwrap_or_default(),
                            s["block"].as_str().unwrap_or_default(),
                            s["mempool"],
                            peers.len()
                        )
                    }
                    None if json => println!("{}", json!({"validator": k, "url": url, "down": true})),
                    None => println!("validator {k}  {url}  down"),
                }
            }
        }
        Command::Backup { .. }
        | Command::Restore { .. }
        | Command::Gateway { .. }
        | Command::Import { .. }
        | Command::Export { .. } => {
            unreachable!("handled in main")
        }
        Command::Init(_)
        | Command::Genesis(_)
        | Command::Up { .. }
        | Command::Portal { .. }
        | Command::Node { .. }
        | Command::Verify { .. }
        | Command::Id(IdCommand::List) => {
            unreachable!("handled in main")
        }
    }
    Ok(())
}

/// Writes a decrypted record to `path`. A regular file (or a new one) is replaced atomically
/// through a private (0600) temporary file beside it, so a reader never sees half a record and
/// a failure leaves the old file; anything else that exists (a FIFO, a terminal, `/dev/null`)
/// is written in place, never replaced: renaming over `/dev/null` as root would turn the
/// machine's null device into a file that collects every process's discarded output.
fn write_output(path: &Path, plaintext: &[u8]) -> std::io::Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => {
            if meta.is_dir() {
                return Err(std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory"));
            }
            std::fs::OpenOptions::new().write(true).open(path)?.write_all(plaintext)
        }
        _ => {
            let dir = match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            let mut tmp = tempfile::Builder::new().prefix(".medledger-").tempfile_in(dir)?;
            tmp.write_all(plaintext)?;
            tmp.as_file().sync_all()?;
            tmp.persist(path).map(drop).map_err(|e| e.error)
        }
    }
}

fn scope(record: Option<&str>, all: bool) -> Result<GrantScope> {
    match (record, all) {
        (Some(r), false) => Ok(GrantScope::Record(parse_record(r)?)),
        (None, true) => Ok(GrantScope::All),
        _ => Err(SdkError::Usage("give exactly one of --record RECORD or --all".into())),
    }
}

/// The recovery code, shown once, on the terminal (stderr), never stored.
fn show_recovery_code(name: &str, code: &RecoveryCode) {
    eprintln!("recovery code for {name} (shown once; keep it offline, it restores these keys):");
    eprintln!("{}", code.reveal().as_str());
}

fn keys_changed(json: bool, what: &str, name: &str, code: &RecoveryCode, c: &medledger_sdk::Committed) {
    if json {
        println!("{}", json!({"tx": c.tx, "height": c.height.get(), "recovery_code": code.reveal().as_str()}));
    } else {
        println!("{what} (block {})", c.height);
        show_recovery_code(name, code);
    }
}

fn read_small(path: &Path, max: usize, what: &str) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| SdkError::Usage(format!("cannot read the {what}: {e}")))?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1).read_to_end(&mut bytes).map_err(|e| SdkError::Other(e.to_string()))?;
    if bytes.len() > max {
        return Err(SdkError::Usage(format!("the {what} is too large")));
    }
    Ok(bytes)
}

fn report(json: bool, what: &str, c: &medledger_sdk::Committed) {
    if json {
        println!("{}", json!({"tx": c.tx, "height": c.height.get(), "time": rfc3339(c.time)}));
    } else {
        println!("{what} (block {})", c.height);
    }
}

fn print_records(home: &Home, records: &[RecordEntry], json: bool) {
    for r in records {
        if json {
            println!(
                "{}",
                json!({"record": r.record, "version": r.version, "author": r.author, "size_bytes": r.size_bytes, "digest": r.digest, "height": r.created_height.get(), "created": rfc3339(r.created_at)})
            );
        } else {
            println!(
                "{}  v{}  by {}  {} bytes  block {}  {}",
                r.record,
                r.version,
                name_of(home, &r.author),
                r.size_bytes,
                r.created_height,
                rfc3339(r.created_at)
            );
        }
    }
}

fn print_audit(home: &Home, e: &AuditEvent, note: Option<&str>, json: bool) {
    let (action, record) = match &e.action {
        AuditAction::Read { record, .. } => ("read".to_string(), Some(*record)),
        AuditAction::ReadRestricted { record, .. } => ("read (outside chart-wide grants)".to_string(), Some(*record)),
        AuditAction::Write { record, .. } => ("write".to_string(), Some(*record)),
        AuditAction::Grant { grantee, scope, write, .. } => {
            let w = if *write { "+write" } else { "" };
            (format!("grant{w} to {}", name_of(home, grantee)), scope_record(scope))
        }
        AuditAction::Revoke { grantee, scope } => {
            (format!("revoke from {}", name_of(home, grantee)), scope_record(scope))
        }
        AuditAction::BreakGlass { reason, until } => {
            let reason = reason.map_or("no reason", EmergencyReason::code);
            let until = until.map(|t| format!(" until {}", rfc3339(t))).unwrap_or_default();
            (format!("break-glass ({reason}){until}"), None)
        }
        AuditAction::Erase { record, versions } => (format!("erase ({versions} versions)"), Some(*record)),
        AuditAction::Keys { event } => (event.as_str().to_string(), None),
        AuditAction::Delegate { delegate, appoint } => {
            let what = if *appoint { "delegate appointed" } else { "delegate dismissed" };
            (format!("{what}: {}", name_of(home, delegate)), None)
        }
        AuditAction::LegalHold { record, hold } => {
            (if *hold { "legal hold placed" } else { "legal hold lifted" }.to_string(), *record)
        }
        AuditAction::ChartReview => ("chart review (record list)".to_string(), None),
    };
    let flag = if e.is_flagged() { "  FLAGGED" } else { "" };
    let decision = match &e.decision {
        Decision::Allowed => "allowed".to_string(),
        Decision::Denied { reason } => format!("denied ({reason})"),
    };
    let purpose = e.purpose.map(|p| p.as_str()).unwrap_or("-");
    if json {
        println!(
            "{}",
            json!({"height": e.height.get(), "time": rfc3339(e.time), "actor": e.actor, "actor_name": home.alias_of(&e.actor), "role": e.actor_role.as_str(), "org": e.actor_org.as_str(), "action": e.action, "purpose": e.purpose.map(|p| p.as_str()), "decision": e.decision, "tx": e.tx, "flagged": e.is_flagged(), "note": note, "delegate_of": e.delegate_of, "delegate_of_name": e.delegate_of.and_then(|p| home.alias_of(&p))})
        );
    } else {
        // What the event covers: a record, the whole chart, or (a change of keys) no record.
        let record = match (&e.action, record) {
            (_, Some(r)) => r.to_hex(),
            (AuditAction::Keys { .. }, None) => "-".to_string(),
            (_, None) => "all records".to_string(),
        };
        let delegate = e.delegate_of.map(|p| format!(" as delegate of {}", name_of(home, &p))).unwrap_or_default();
        println!(
            "block {}  {}  {} ({}){delegate}  {}  {}  {}  {}{flag}",
            e.height,
            rfc3339(e.time),
            name_of(home, &e.actor),
            e.actor_role.as_str(),
            action,
            record,
            purpose,
            decision
        );
        if let Some(note) = note {
            println!("    note: {}", note.replace(char::is_control, " "));
        }
    }
}

fn scope_record(scope: &GrantScope) -> Option<RecordId> {
    match scope {
        GrantScope::Record(r) => Some(*r),
        GrantScope::All | GrantScope::Sensitive => None,
    }
}
