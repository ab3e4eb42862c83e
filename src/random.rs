//! Where the engines get their randomness.
//!
//! The core draws no entropy of its own: initialisation vectors, the V5/V6
//! response salt and similar values come from a [`RandomSource`] the caller
//! supplies. Production code passes an OS-backed source; tests pass fixed
//! bytes so that output can be compared byte for byte with captured traffic.

/// A supplier of random bytes.
///
/// Implementations for real use must be cryptographically secure; the KMS
/// protocol itself only needs unpredictability for the IVs and salts, but a
/// weak source makes a host's replies predictable.
///
/// ```
/// use kms_activation::RandomSource;
///
/// /// Repeats one byte; for tests only.
/// struct Fill(u8);
/// impl RandomSource for Fill {
///     fn fill_bytes(&mut self, dest: &mut [u8]) {
///         dest.fill(self.0);
///     }
/// }
/// let mut iv = [0u8; 16];
/// Fill(7).fill_bytes(&mut iv);
/// assert_eq!(iv, [7; 16]);
/// ```
pub trait RandomSource {
    /// Fills `dest` entirely with random bytes.
    fn fill_bytes(&mut self, dest: &mut [u8]);
}

impl<R: RandomSource + ?Sized> RandomSource for &mut R {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        (**self).fill_bytes(dest);
    }
}

impl<R: RandomSource + ?Sized> RandomSource for Box<R> {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        (**self).fill_bytes(dest);
    }
}

/// A uniform-enough draw in `0..n` (`n > 0`; 0 when `n` is 0) from 8 random
/// bytes; the modulo bias of a 64-bit draw over the small ranges drawn here
/// (key IDs, LCIDs, days, SRV weights) is negligible.
pub(crate) fn below<R: RandomSource + ?Sized>(rng: &mut R, n: u64) -> u64 {
    let mut bytes = [0u8; 8];
    rng.fill_bytes(&mut bytes);
    u64::from_le_bytes(bytes).checked_rem(n).unwrap_or(0)
}

/// The operating system's cryptographically secure generator (`getrandom`):
/// the source to use in production.
///
/// ```
/// use kms_activation::{OsRandom, RandomSource};
///
/// let mut iv = [0u8; 16];
/// OsRandom.fill_bytes(&mut iv);
/// # let mut other = [0u8; 16];
/// # OsRandom.fill_bytes(&mut other);
/// # assert_ne!(iv, other);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    /// # Panics
    ///
    /// When the operating system has no randomness to give (on Linux, only
    /// before the kernel's pool is initialised at boot, where `getrandom`
    /// blocks instead); a host must not go on with predictable replies.
    #[expect(
        clippy::panic,
        reason = "continuing without entropy would make replies predictable"
    )]
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        if let Err(e) = getrandom::fill(dest) {
            panic!("the operating system gave no randomness: {e}");
        }
    }
}

/// A source that replays a fixed script of bytes, then zeros.
///
/// Meant for tests and for reproducing captured traffic: feed it the IVs
/// and salts recovered from a capture and the engines emit the same bytes.
///
/// ```
/// use kms_activation::{RandomSource, ScriptedRandom};
///
/// let mut r = ScriptedRandom::new([1, 2, 3]);
/// let mut buf = [0u8; 4];
/// r.fill_bytes(&mut buf);
/// assert_eq!(buf, [1, 2, 3, 0]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ScriptedRandom {
    script: Vec<u8>,
    pos: usize,
}

impl ScriptedRandom {
    /// A source that yields `script`, then zeros.
    #[must_use]
    pub fn new(script: impl Into<Vec<u8>>) -> Self {
        Self {
            script: script.into(),
            pos: 0,
        }
    }

    /// Appends more bytes to the script.
    pub fn push(&mut self, bytes: &[u8]) {
        self.script.extend_from_slice(bytes);
    }

    /// Bytes of the script not yet handed out.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.script.len().saturating_sub(self.pos)
    }
}

impl RandomSource for ScriptedRandom {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for byte in dest {
            *byte = self.script.get(self.pos).copied().unwrap_or(0);
            self.pos = self.pos.saturating_add(1);
        }
    }
}
