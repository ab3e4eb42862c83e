//! Randomness for the transports: the operating system's generator, read
//! a block at a time.

use std::cell::RefCell;

use crate::{OsRandom, RandomSource};

/// Bytes drawn from the operating system at a time, per thread.
const BLOCK: usize = 512;

thread_local! {
    /// Unused bytes from the operating system and where they start.
    static POOL: RefCell<(usize, [u8; BLOCK])> = const { RefCell::new((BLOCK, [0; BLOCK])) };
}

/// [`OsRandom`] with the system call amortised: each thread draws a block
/// of bytes from the operating system and hands them out once each, so a
/// response (an IV and a salt) costs no system call of its own.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BufferedOsRandom;

impl RandomSource for BufferedOsRandom {
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        if dest.len() > BLOCK / 4 {
            OsRandom.fill_bytes(dest);
            return;
        }
        POOL.with_borrow_mut(|(used, block)| {
            if BLOCK - *used < dest.len() {
                OsRandom.fill_bytes(block);
                *used = 0;
            }
            let end = *used + dest.len();
            if let Some(fresh) = block.get_mut(*used..end) {
                dest.copy_from_slice(fresh);
                // Never hand the same bytes out twice.
                fresh.fill(0);
            }
            *used = end;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_never_repeated_across_refills() {
        let mut rng = BufferedOsRandom;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut iv = [0u8; 16];
            rng.fill_bytes(&mut iv);
            assert!(seen.insert(iv), "an IV came out twice");
        }
        let mut big = [0u8; 400];
        rng.fill_bytes(&mut big);
        assert!(big.iter().any(|&b| b != 0));
    }
}
