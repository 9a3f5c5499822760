//! Emergency access: break-glass.

use medledger_types::{PurposeOfUse, Role, Timestamp};

use super::run::{Applied, Run};
use crate::genesis::NetworkPolicy;
use crate::policy::Rejection;
use crate::sidecar::KeyHolder;
use crate::state::{AuditAction, BreakGlassEntry, keys, read};
use crate::tx::BreakGlass;

impl Run<'_, '_> {
    pub(super) fn break_glass(&mut self, b: &BreakGlass) -> Result<Applied, Rejection> {
        if !matches!(self.signer.role, Role::Doctor | Role::Emergency) {
            return Err(Rejection::BreakGlassRole);
        }
        self.chart(&b.patient)?;
        let reason = b.reason.ok_or(Rejection::BreakGlassReason)?;
        let policy: NetworkPolicy = read(self.state, keys::POLICY).unwrap_or_default();
        if b.duration_ms == 0 || b.duration_ms > policy.break_glass_max_ms {
            return Err(Rejection::BadExpiry);
        }
        // A note's key is wrapped for the patient and for auditors, nobody else.
        if let Some(note) = self.sidecar {
            let mut auditors = 0;
            let mut patient = false;
            for holder in &note.holders {
                match holder {
                    KeyHolder::Member { member } if *member == b.patient => patient = true,
                    KeyHolder::Member { member } if self.member(member).is_some_and(|m| m.role == Role::Auditor) => {
                        auditors += 1
                    }
                    _ => return Err(Rejection::BreakGlassNote),
                }
            }
            if !patient || auditors == 0 {
                return Err(Rejection::BreakGlassNote);
            }
        }
        let now = self.ctx.time;
        let day_ago = now.get().saturating_sub(24 * 3600 * 1000);
        let mut uses: Vec<Timestamp> = read(self.state, &keys::break_glass_uses(&self.signer.id)).unwrap_or_default();
        uses.retain(|t| t.get() > day_ago);
        if uses.len() >= policy.break_glass_per_day as usize {
            return Err(Rejection::BreakGlassRateLimited);
        }
        uses.push(now);
        self.state.put(keys::break_glass_uses(&self.signer.id), &uses);
        let until = now.checked_add_ms(b.duration_ms).ok_or(Rejection::BadExpiry)?;
        let entry = BreakGlassEntry { reason, opened_at: now, until, tx: self.tx_id };
        self.state.put(keys::break_glass(&b.patient, &self.signer.id), &entry);
        let action = AuditAction::BreakGlass { reason: Some(reason), until: Some(until) };
        Ok(self.audit(b.patient, action, Some(PurposeOfUse::Etreat)))
    }
}
