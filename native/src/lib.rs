//! Pantheon's compiled hot paths: Ed25519 verification under the ZIP-215 rules.
//!
//! `ed25519-zebra` implements ZIP-215 (non-canonical point encodings accepted and reduced,
//! canonical S required, the cofactored equation), so a batch accepts exactly the signatures
//! that single verification accepts. The Python reference is `ledger/ed25519_zip215.py`;
//! the tests require both to agree on every vector.

use ed25519_zebra::batch;
use ed25519_zebra::{Signature, VerificationKey, VerificationKeyBytes};
use getrandom::rand_core::UnwrapErr;
use getrandom::SysRng;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;

const PUBLIC_KEY_BYTES: usize = 32;
const SIGNATURE_BYTES: usize = 64;

/// The key and signature as fixed arrays, or None if either has the wrong length.
fn parts(public_key: &[u8], signature: &[u8]) -> Option<([u8; 32], Signature)> {
    let key: [u8; PUBLIC_KEY_BYTES] = public_key.try_into().ok()?;
    let sig: [u8; SIGNATURE_BYTES] = signature.try_into().ok()?;
    Some((key, Signature::from_bytes(&sig)))
}

fn verify_one(public_key: &[u8], signature: &[u8], message: &[u8]) -> bool {
    let Some((key, sig)) = parts(public_key, signature) else {
        return false;
    };
    VerificationKey::try_from(key).is_ok_and(|vk| vk.verify(&sig, message).is_ok())
}

/// One answer per item: a single batch equation first; if it fails (or a point does not
/// decode), each item alone, so the answers are exactly those of `verify_one`.
fn verify_many(items: &[(PyBackedBytes, PyBackedBytes, PyBackedBytes)]) -> Vec<bool> {
    if items.len() < 2 {
        return items.iter().map(|(k, s, m)| verify_one(k, s, m)).collect();
    }
    let mut out = vec![false; items.len()];
    let mut queued = Vec::with_capacity(items.len());
    let mut verifier = batch::Verifier::new();
    for (i, (k, s, m)) in items.iter().enumerate() {
        if let Some((key, sig)) = parts(k, s) {
            verifier.queue((VerificationKeyBytes::from(key), sig, &m[..]));
            queued.push(i);
        }
    }
    if verifier.verify(UnwrapErr(SysRng)).is_ok() {
        for i in queued {
            out[i] = true;
        }
    } else {
        for i in queued {
            let (k, s, m) = &items[i];
            out[i] = verify_one(k, s, m);
        }
    }
    out
}

/// Pantheon's native module.
#[pymodule]
mod pantheon_native {
    use super::*;

    /// True iff `signature` is a valid ZIP-215 Ed25519 signature of `message` by `public_key`.
    #[pyfunction]
    fn verify(
        py: Python<'_>,
        public_key: PyBackedBytes,
        signature: PyBackedBytes,
        message: PyBackedBytes,
    ) -> bool {
        py.detach(|| verify_one(&public_key, &signature, &message))
    }

    /// One boolean per `(public_key, signature, message)` item, each equal to `verify`'s.
    #[pyfunction]
    fn verify_batch(
        py: Python<'_>,
        items: Vec<(PyBackedBytes, PyBackedBytes, PyBackedBytes)>,
    ) -> Vec<bool> {
        py.detach(|| verify_many(&items))
    }
}
