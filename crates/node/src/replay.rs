//! The nonces of signed API requests seen within the signature window, so that a captured
//! request is answered once: a second use of a (member, nonce) pair is refused.

use std::collections::HashMap;
use std::sync::Mutex;

use medledger_types::limits::REQUEST_SKEW_MS_MAX;

/// Most nonces remembered at once; beyond it, and with none expired, requests wait (503).
pub const NONCES_MAX: usize = 200_000;

#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// This (member, nonce) was used before.
    Replayed,
    /// The cache is full of live nonces: a flood; the client retries later.
    Busy,
}

#[derive(Default)]
pub struct Nonces {
    /// (member, nonce) → when it can be forgotten (ms): its signature is stale by then.
    seen: Mutex<HashMap<(String, String), u64>>,
}

impl Nonces {
    /// Admits a request signed at `created_ms` with `nonce`, once.
    pub fn admit(&self, signer: &str, nonce: &str, created_ms: u64, now_ms: u64) -> Result<(), Refused> {
        let mut seen = self.seen.lock().expect("nonce lock");
        if seen.len() >= NONCES_MAX {
            seen.retain(|_, forget_at| *forget_at > now_ms);
            if seen.len() >= NONCES_MAX {
                return Err(Refused::Busy);
            }
        }
        let forget_at = created_ms.saturating_add(REQUEST_SKEW_MS_MAX).max(now_ms.saturating_add(REQUEST_SKEW_MS_MAX));
        match seen.entry((signer.to_string(), nonce.to_string())) {
            std::collections::hash_map::Entry::Occupied(_) => Err(Refused::Replayed),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(forget_at);
                Ok(())
            }
        }
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
        // Fill to the bound: with every nonce still live, more are refused as busy; once the
        // window has passed they are pruned and admission resumes (a replay of an old nonce is
        // then stale for its signature's time anyway).
        for i in 0..NONCES_MAX - 3 {
            nonces.admit(alice, &format!("fill{i}"), 1_000, 2_000).unwrap();
        }
        assert_eq!(nonces.admit(alice, "late", 1_000, 2_000), Err(Refused::Busy));
        let later = 2_000 + 2 * REQUEST_SKEW_MS_MAX + 1;
        assert_eq!(nonces.admit(alice, "late", later, later), Ok(()));
        assert_eq!(nonces.admit(alice, "late", later, later), Err(Refused::Replayed));
    }
}
