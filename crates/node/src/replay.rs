//! The nonces of signed API requests seen within the signature window, so that a captured
//! request is answered once: a second use of a (member, nonce) pair is refused.

use std::collections::HashMap;
use std::sync::Mutex;

use medledger_types::limits::REQUEST_SKEW_MS_MAX;

/// Most nonces remembered at once; beyond it, and with none expired, requests wait (503).
pub const NONCES_MAX: usize = 200_000;
/// Most live nonces of one signer (requests within the signature window) by default: beyond it
/// that signer's requests are refused (429, `Retry-After`) until some expire, so no one member can
/// fill the cache for all.
pub const NONCES_PER_SIGNER_MAX: usize = 4_096;

#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// This (member, nonce) was used before.
    Replayed,
    /// The cache is full of live nonces: a flood; the client retries later.
    Busy,
    /// This signer has [`NONCES_PER_SIGNER_MAX`] live nonces: it retries after this many
    /// milliseconds (when its oldest one expires).
    SignerBusy { retry_after_ms: u64 },
}

pub struct Nonces {
    /// (member, nonce) → when it can be forgotten (ms): its signature is stale by then.
    seen: Mutex<Seen>,
    /// Most live nonces of one signer (`signer_requests_per_window` in validator.json).
    per_signer_max: usize,
}

impl Default for Nonces {
    fn default() -> Self {
        Nonces::new(NONCES_PER_SIGNER_MAX)
    }
}

#[derive(Default)]
struct Seen {
    nonces: HashMap<(String, String), u64>,
    /// Live nonces per signer (as counted in `nonces`).
    per_signer: HashMap<String, usize>,
}

impl Seen {
    fn prune(&mut self, now_ms: u64) {
        let per_signer = &mut self.per_signer;
        self.nonces.retain(|(signer, _), forget_at| {
            let live = *forget_at > now_ms;
            if !live && let Some(n) = per_signer.get_mut(signer) {
                *n -= 1;
            }
            live
        });
        per_signer.retain(|_, n| *n > 0);
    }
}

impl Nonces {
    /// A cache that admits at most `per_signer_max` live requests of one signer.
    pub fn new(per_signer_max: usize) -> Nonces {
        Nonces { seen: Mutex::default(), per_signer_max: per_signer_max.clamp(1, NONCES_MAX) }
    }

    /// Admits a request signed at `created_ms` with `nonce`, once.
    pub fn admit(&self, signer: &str, nonce: &str, created_ms: u64, now_ms: u64) -> Result<(), Refused> {
        let mut seen = self.seen.lock().expect("nonce lock");
        if seen.nonces.contains_key(&(signer.to_string(), nonce.to_string())) {
            return Err(Refused::Replayed);
        }
        let mine = |seen: &Seen| seen.per_signer.get(signer).copied().unwrap_or(0);
        if seen.nonces.len() >= NONCES_MAX || mine(&seen) >= self.per_signer_max {
            seen.prune(now_ms);
            if mine(&seen) >= self.per_signer_max {
                let oldest = seen.nonces.iter().filter(|((s, _), _)| s == signer).map(|(_, at)| *at).min();
                return Err(Refused::SignerBusy { retry_after_ms: oldest.unwrap_or(now_ms).saturating_sub(now_ms) });
            }
            if seen.nonces.len() >= NONCES_MAX {
                return Err(Refused::Busy);
            }
        }
        let forget_at = created_ms.saturating_add(REQUEST_SKEW_MS_MAX).max(now_ms.saturating_add(REQUEST_SKEW_MS_MAX));
        seen.nonces.insert((signer.to_string(), nonce.to_string()), forget_at);
        *seen.per_signer.entry(signer.to_string()).or_default() += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_admitted_once_per_member_and_forgotten_after_the_window() {
        let nonces = Nonces::default();
        let (alice, bob) = ("alice", "bob");
        assert_eq!(nonces.admit(alice, "n1", 1_000, 1_000), Ok(()));
        assert_eq!(nonces.admit(alice, "n1", 1_000, 2_000), Err(Refused::Replayed));
        assert_eq!(nonces.admit(bob, "n1", 1_000, 2_000), Ok(()));
        assert_eq!(nonces.admit(alice, "n2", 1_000, 2_000), Ok(()));
        // Fill to the bound with many signers: with every nonce still live, more are refused as
        // busy; once the window has passed they are pruned and admission resumes (a replay of an
        // old nonce is then stale for its signature's time anyway).
        for i in 0..NONCES_MAX - 3 {
            nonces.admit(&format!("m{}", i % 100), &format!("fill{i}"), 1_000, 2_000).unwrap();
        }
        assert_eq!(nonces.admit(alice, "late", 1_000, 2_000), Err(Refused::Busy));
        let later = 2_000 + 2 * REQUEST_SKEW_MS_MAX + 1;
        assert_eq!(nonces.admit(alice, "late", later, later), Ok(()));
        assert_eq!(nonces.admit(alice, "late", later, later), Err(Refused::Replayed));
    }

    /// Finding 7 of the security review: one member filled the whole cache in seconds and every
    /// signed request then got 503. A signer's live nonces are bounded; others go on.
    #[test]
    fn one_signer_cannot_fill_the_cache_for_everyone() {
        let nonces = Nonces::default();
        for i in 0..NONCES_PER_SIGNER_MAX {
            nonces.admit("mallory", &format!("n{i}"), 1_000, 1_000).unwrap();
        }
        // She is told when her oldest request leaves the window (the signature window from then).
        let wait = REQUEST_SKEW_MS_MAX - 500;
        assert_eq!(
            nonces.admit("mallory", "one more", 1_500, 1_500),
            Err(Refused::SignerBusy { retry_after_ms: wait })
        );
        assert_eq!(nonces.admit("mallory", "n7", 1_000, 1_000), Err(Refused::Replayed), "replays stay replays");
        for member in ["alice", "bob"] {
            assert_eq!(nonces.admit(member, "n1", 1_000, 1_000), Ok(()), "{member} is refused because of mallory");
        }
        // Once her window has passed, mallory is admitted again.
        let later = 1_000 + 2 * REQUEST_SKEW_MS_MAX + 1;
        assert_eq!(nonces.admit("mallory", "one more", later, later), Ok(()));
    }
}
