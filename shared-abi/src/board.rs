//! Board description: how many physical resources the accelerator has.
//!
//! The firmware sizes everything from a [`Board`], and publishes it in PF BAR0 so the host sees
//! the same numbers. [`Board::DEFAULT`] is the reference board.

/// The physical resources of one accelerator board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Board {
    /// Compute engines (at most 32: engine masks are 32 bits).
    pub engines: u8,
    /// Device memory granules.
    pub mem_granules: u32,
    /// log2 of the granule size in bytes.
    pub granule_shift: u8,
    /// Queue pairs (at most 256: the VF BAR0 queue window).
    pub queues: u16,
    /// MSI-X vectors available to VFs.
    pub vectors: u16,
    /// TotalVFs (at most [`crate::pci::MAX_VFS`]).
    pub total_vfs: u16,
}

/// Why a board description is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoardError {
    /// Engines outside 1..=32.
    Engines,
    /// Granule count zero or larger than the translation pool.
    Memory,
    /// Queue count outside 1..=256.
    Queues,
    /// Vector count outside 1..=2048*64.
    Vectors,
    /// TotalVFs outside 1..=64.
    TotalVfs,
}

impl Board {
    /// Reference board: 16 engines, 16 GiB in 2 MiB granules, 256 queue pairs, 2048 MSI-X
    /// vectors, TotalVFs 64.
    pub const DEFAULT: Board = Board {
        engines: 16,
        mem_granules: 8192,
        granule_shift: 21,
        queues: 256,
        vectors: 2048,
        total_vfs: 64,
    };

    /// Bytes in one granule.
    pub const fn granule_size(&self) -> u64 {
        1u64 << self.granule_shift
    }

    /// Total device memory in bytes.
    pub const fn mem_bytes(&self) -> u64 {
        (self.mem_granules as u64) << self.granule_shift
    }

    /// Checks the description fits the register map.
    pub const fn validate(&self) -> Result<(), BoardError> {
        if self.engines == 0 || self.engines > 32 {
            return Err(BoardError::Engines);
        }
        if self.mem_granules == 0 || self.mem_granules as usize > crate::regs::TT_POOL_ENTRIES {
            return Err(BoardError::Memory);
        }
        if self.queues == 0 || self.queues as usize > crate::regs::VF_MAX_QUEUES {
            return Err(BoardError::Queues);
        }
        if self.vectors == 0 {
            return Err(BoardError::Vectors);
        }
        if self.total_vfs == 0 || self.total_vfs as usize > crate::pci::MAX_VFS {
            return Err(BoardError::TotalVfs);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_board_is_the_documented_one() {
        let b = Board::DEFAULT;
        assert_eq!(b.validate(), Ok(()));
        assert_eq!(b.mem_bytes(), 16 << 30);
        assert_eq!(b.granule_size(), 2 << 20);
    }

    #[test]
    fn invalid_boards_are_rejected() {
        let mut b = Board::DEFAULT;
        b.engines = 33;
        assert_eq!(b.validate(), Err(BoardError::Engines));
        let mut b = Board::DEFAULT;
        b.total_vfs = 65;
        assert_eq!(b.validate(), Err(BoardError::TotalVfs));
        let mut b = Board::DEFAULT;
        b.mem_granules = 8193;
        assert_eq!(b.validate(), Err(BoardError::Memory));
    }
}
