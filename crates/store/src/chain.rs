//! The chain log: finalized blocks and their finality certificates, appended in height order.
//!
//! Entry layout: magic `MLB1`, height (u64 LE), block length (u32 LE), block bytes, certificate
//! length (u32 LE), certificate bytes. The file is appended and fsynced before the state commit
//! that names its new length; on open, anything after that length (a crash between the two) is
//! cut off and the engine re-delivers the block.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use medledger_types::Height;
use medledger_types::limits::BLOCK_BYTES_MAX;

const MAGIC: &[u8; 4] = b"MLB1";
const CERT_BYTES_MAX: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    #[error("chain log: {0}")]
    Io(#[from] std::io::Error),
    #[error("chain log entry at byte {offset} is malformed")]
    Malformed { offset: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainEntry {
    pub height: Height,
    pub block: Vec<u8>,
    pub certificate: Vec<u8>,
}

pub struct ChainLog {
    path: PathBuf,
    file: File,
    len: u64,
}

impl ChainLog {
    /// Opens (or creates) the log and cuts it to `committed_len`, the length the state knows.
    pub fn open(path: &Path, committed_len: u64) -> Result<Self, ChainError> {
        let file = OpenOptions::new().create(true).read(true).append(true).open(path)?;
        let actual = file.metadata()?.len();
        if actual > committed_len {
            file.set_len(committed_len)?;
            file.sync_all()?;
        }
        let len = actual.min(committed_len);
        Ok(Self { path: path.to_path_buf(), file, len })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends an entry and makes it durable; returns its (offset, length).
    pub fn append(&mut self, height: Height, block: &[u8], certificate: &[u8]) -> Result<(u64, u64), ChainError> {
        Ok(self.append_batch(&[(height, block, certificate)])?[0])
    }

    /// Appends several entries and makes them durable with one sync (state sync from a peer);
    /// returns each one's (offset, length).
    pub fn append_batch(&mut self, entries: &[(Height, &[u8], &[u8])]) -> Result<Vec<(u64, u64)>, ChainError> {
        let mut buffer = Vec::new();
        let mut locations = Vec::with_capacity(entries.len());
        for (height, block, certificate) in entries {
            let offset = self.len + buffer.len() as u64;
            encode_entry(&mut buffer, *height, block, certificate);
            locations.push((offset, self.len + buffer.len() as u64 - offset));
        }
        self.file.write_all(&buffer)?;
        self.file.sync_data()?;
        self.len += buffer.len() as u64;
        Ok(locations)
    }

    /// Rewrites the block of the entry at `offset` in place with `block`, which must have the same
    /// length (erasure replaces purged sidecars with same-length slots; see
    /// `medledger_ledger::purged_slot`), and makes it durable.
    pub fn rewrite_block(&self, offset: u64, block: &[u8]) -> Result<(), ChainError> {
        use std::os::unix::fs::FileExt;
        let entry = self.read_at(offset)?;
        if entry.block.len() != block.len() {
            return Err(ChainError::Malformed { offset });
        }
        let file = OpenOptions::new().write(true).open(&self.path)?;
        file.write_all_at(block, offset + 16)?;
        file.sync_data()?;
        Ok(())
    }

    /// Reads the entry at `offset`.
    pub fn read_at(&self, offset: u64) -> Result<ChainEntry, ChainError> {
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(offset))?;
        read_entry(&mut BufReader::new(file), offset)?.ok_or(ChainError::Malformed { offset })
    }

    /// Every entry from the start, for verification; stops at the first malformed one.
    pub fn entries(path: &Path) -> Result<ChainEntries, ChainError> {
        Ok(ChainEntries { reader: BufReader::new(File::open(path)?), offset: 0, done: false })
    }
}

pub struct ChainEntries {
    reader: BufReader<File>,
    offset: u64,
    done: bool,
}

impl Iterator for ChainEntries {
    type Item = Result<ChainEntry, ChainError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match read_entry(&mut self.reader, self.offset) {
            Ok(Some(entry)) => {
                self.offset += 24 + (entry.block.len() + entry.certificate.len()) as u64 - 4;
                Some(Ok(entry))
            }
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

fn encode_entry(out: &mut Vec<u8>, height: Height, block: &[u8], certificate: &[u8]) {
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&height.get().to_le_bytes());
    out.extend_from_slice(&u32::try_from(block.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(block);
    out.extend_from_slice(&u32::try_from(certificate.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(certificate);
}

/// Reads one entry; `None` at a clean end of file.
fn read_entry(reader: &mut impl Read, offset: u64) -> Result<Option<ChainEntry>, ChainError> {
    let malformed = || ChainError::Malformed { offset };
    let mut magic = [0u8; 4];
    match reader.read(&mut magic[..1])? {
        0 => return Ok(None),
        _ => reader.read_exact(&mut magic[1..]).map_err(|_| malformed())?,
    }
    if &magic != MAGIC {
        return Err(malformed());
    }
    let mut u64buf = [0u8; 8];
    reader.read_exact(&mut u64buf).map_err(|_| malformed())?;
    let height = Height::new(u64::from_le_bytes(u64buf));
    let block = read_chunk(reader, BLOCK_BYTES_MAX).ok_or_else(malformed)?;
    let certificate = read_chunk(reader, CERT_BYTES_MAX).ok_or_else(malformed)?;
    Ok(Some(ChainEntry { height, block, certificate }))
}

fn read_chunk(reader: &mut impl Read, max: usize) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len).ok()?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return None;
    }
    let mut bytes = vec![0u8; len];
    reader.read_exact(&mut bytes).ok()?;
    Some(bytes)
}
