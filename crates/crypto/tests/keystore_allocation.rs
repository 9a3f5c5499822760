//! A crafted keystore must be refused before Argon2 reserves its memory.
//!
//! The workspace forbids `unsafe`, so instead of a counting allocator this
//! watches the process's peak virtual size (`VmPeak`), which grows by the full
//! size of Argon2's block array as soon as it is allocated, touched or not.
//! Its own test binary, so no other test moves the peak.
#![cfg(target_os = "linux")]

use medledger_crypto::CryptoError;
use medledger_crypto::keystore;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs is mounted");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("the field is reported")
}

/// Runs `f` and returns how far the peak virtual size rose above the size
/// before it: at least the largest allocation `f` made, if that moved the
/// peak; at most the old peak's head-room otherwise.
fn reserved_kib<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let size_before = status_kib("VmSize:");
    let out = f();
    (out, status_kib("VmPeak:").saturating_sub(size_before))
}

/// Below any Argon2 run over the bound (≥ 256 MiB), above allocator noise.
const THRESHOLD_KIB: u64 = 200 * 1024;

#[test]
fn absurd_parameters_are_refused_before_allocating() {
    // Warm up: allocator arenas, Argon2 at the default 19 MiB.
    let blob = keystore::seal(b"pw", b"secret").unwrap();
    assert_eq!(keystore::open(b"pw", &blob).unwrap().as_slice(), b"secret");

    // Just over the bound: Argon2 would reserve 256 MiB and run for a while,
    // then fail as a wrong passphrase. Far over: it would fail to allocate.
    for (m, t, p) in [
        (keystore::M_COST_KIB_MAX + 1, 2u32, 1u32),
        (keystore::M_COST_KIB_MAX * 2, 2, 1),
        (u32::MAX, 2, 1),
        (keystore::M_COST_KIB, u32::MAX, 1),
        (keystore::M_COST_KIB, 2, 1000),
    ] {
        let mut bad = blob.clone();
        bad[6..10].copy_from_slice(&m.to_be_bytes());
        bad[10..14].copy_from_slice(&t.to_be_bytes());
        bad[14..18].copy_from_slice(&p.to_be_bytes());
        let (result, reserved) = reserved_kib(|| keystore::open(b"pw", &bad));
        assert!(reserved < THRESHOLD_KIB, "({m}, {t}, {p}) reserved {reserved} KiB");
        let err = result.unwrap_err();
        assert!(
            matches!(err, CryptoError::KdfParametersOutOfBounds { m_cost_kib, t_cost, p_cost }
                if (m_cost_kib, t_cost, p_cost) == (m, t, p)),
            "({m}, {t}, {p}): {err:?}"
        );
    }

    // Control: the probe sees an Argon2 run at the highest accepted cost.
    // (VmPeak is a high-water mark, so this comes last.)
    let params = keystore::KdfParams { m_cost_kib: keystore::M_COST_KIB_MAX, t_cost: 2, p_cost: 1 };
    let (strong, reserved) = reserved_kib(|| keystore::seal_with(b"pw", b"s", params));
    assert!(reserved >= THRESHOLD_KIB, "the probe must see a 256 MiB Argon2 allocation, saw {reserved} KiB");
    assert_eq!(keystore::open(b"pw", &strong.unwrap()).unwrap().as_slice(), b"s");
}
