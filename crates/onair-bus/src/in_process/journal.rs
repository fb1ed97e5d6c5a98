//! The append-only file that keeps one durable stream across restarts.
//!
//! Layout: the 8-byte [`MAGIC`], then records:
//!
//! ```text
//! u32 LE body length | u32 LE CRC-32 of body | body
//! body = u64 LE sequence | u32 LE subject length | subject (UTF-8) | payload
//! ```
//!
//! Every append is followed by `sync_data`, so an acknowledged message survives a crash.
//! A crash mid-append leaves a torn last record; loading stops at the first record that
//! is incomplete, fails its checksum or breaks the sequence, and truncates the file
//! there so later appends are readable again.
//!
//! Everything here blocks; callers run it under `spawn_blocking`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// Marks a file as an onair journal, version 1, so we never "repair" a foreign file by
/// truncating it.
const MAGIC: &[u8; 8] = b"ONAIRJ1\n";

/// Bytes before each body: length and checksum.
const RECORD_HEADER_LEN: usize = 8;

/// Bytes of the body before the subject: sequence and subject length.
const BODY_FIXED_LEN: usize = 12;

/// One stored message as read back from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JournalRecord {
    pub(crate) sequence: u64,
    pub(crate) subject: String,
    pub(crate) payload: Bytes,
}

/// What loading a journal found.
#[derive(Debug)]
pub(crate) struct LoadedJournal {
    pub(crate) journal: Journal,
    pub(crate) records: Vec<JournalRecord>,
    /// Bytes cut off the end because they did not form a whole, valid record.
    pub(crate) discarded_bytes: u64,
}

/// An open journal, positioned for appending.
#[derive(Debug)]
pub(crate) struct Journal {
    file: File,
    path: PathBuf,
    /// Length of the valid prefix; a failed append is cut back to it.
    len: u64,
    /// Set when a failed append could not be cut back: the file may end in garbage, so
    /// nothing more is appended until a reload repairs it.
    poisoned: bool,
}

impl Journal {
    /// Opens (creating if needed) the journal at `path` and reads every valid record.
    pub(crate) fn open(path: &Path) -> io::Result<LoadedJournal> {
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        if !existed {
            sync_parent_dir(path)?;
        }
        let mut contents = Vec::new();
        file.read_to_end(&mut contents)?;

        if contents.len() < MAGIC.len() {
            // A new file, or one whose header write was torn: both hold no records.
            if !MAGIC.starts_with(&contents) {
                return Err(not_a_journal(path));
            }
            file.set_len(0)?;
            file.write_all(MAGIC)?;
            file.sync_data()?;
            let discarded_bytes = contents.len() as u64;
            let journal = Journal {
                file,
                path: path.to_owned(),
                len: MAGIC.len() as u64,
                poisoned: false,
            };
            return Ok(LoadedJournal {
                journal,
                records: Vec::new(),
                discarded_bytes,
            });
        }
        if &contents[..MAGIC.len()] != MAGIC {
            return Err(not_a_journal(path));
        }

        let (records, valid_len) = decode_records(&contents);
        let discarded_bytes = (contents.len() - valid_len) as u64;
        if discarded_bytes > 0 {
            file.set_len(valid_len as u64)?;
            file.sync_data()?;
        }
        let journal = Journal {
            file,
            path: path.to_owned(),
            len: valid_len as u64,
            poisoned: false,
        };
        Ok(LoadedJournal {
            journal,
            records,
            discarded_bytes,
        })
    }

    /// Appends one record and waits until it is on disk.
    pub(crate) fn append(
        &mut self,
        sequence: u64,
        subject: &str,
        payload: &[u8],
    ) -> io::Result<()> {
        if self.poisoned {
            return Err(io::Error::other(format!(
                "journal {} is unusable after an earlier write failure; restart to repair it",
                self.path.display()
            )));
        }
        let record = encode_record(sequence, subject, payload)?;
        let written = self
            .file
            .write_all(&record)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += record.len() as u64;
                Ok(())
            }
            Err(err) => {
                // Cut off whatever part of the record made it, so the next append is not
                // stranded behind garbage; if even that fails, stop appending: the next
                // load drops the torn tail.
                if self.file.set_len(self.len).is_err() {
                    self.poisoned = true;
                }
                Err(err)
            }
        }
    }

    /// Where the journal lives, for log messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

fn not_a_journal(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{} is not an onair bus journal (unexpected header); move it out of the durable directory",
            path.display()
        ),
    )
}

/// Makes a newly created file's directory entry durable, not just its contents.
pub(crate) fn sync_parent_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => File::open(parent)?.sync_all(),
        _ => Ok(()),
    }
}

fn encode_record(sequence: u64, subject: &str, payload: &[u8]) -> io::Result<Vec<u8>> {
    let too_large = || io::Error::new(io::ErrorKind::InvalidInput, "record exceeds 4 GiB");
    let subject_len = u32::try_from(subject.len()).map_err(|_| too_large())?;
    let body_len = BODY_FIXED_LEN + subject.len() + payload.len();
    let body_len_field = u32::try_from(body_len).map_err(|_| too_large())?;

    let mut record = Vec::with_capacity(RECORD_HEADER_LEN + body_len);
    record.extend_from_slice(&body_len_field.to_le_bytes());
    record.extend_from_slice(&[0; 4]); // checksum, filled in below
    record.extend_from_slice(&sequence.to_le_bytes());
    record.extend_from_slice(&subject_len.to_le_bytes());
    record.extend_from_slice(subject.as_bytes());
    record.extend_from_slice(payload);
    let checksum = crc32(&record[RECORD_HEADER_LEN..]);
    record[4..8].copy_from_slice(&checksum.to_le_bytes());
    Ok(record)
}

/// Decodes records after the magic; returns them and the length of the valid prefix.
fn decode_records(contents: &[u8]) -> (Vec<JournalRecord>, usize) {
    let mut records = Vec::new();
    let mut offset = MAGIC.len();
    let mut expected_sequence = 1;
    while let Some((record, record_len)) = decode_record(&contents[offset..]) {
        if record.sequence != expected_sequence {
            break;
        }
        records.push(record);
        offset += record_len;
        expected_sequence += 1;
    }
    (records, offset)
}

/// Decodes the record at the start of `bytes`, or `None` if it is torn or corrupt.
fn decode_record(bytes: &[u8]) -> Option<(JournalRecord, usize)> {
    let body_len = read_u32(bytes, 0)? as usize;
    let checksum = read_u32(bytes, 4)?;
    let body = bytes.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN.checked_add(body_len)?)?;
    if crc32(body) != checksum {
        return None;
    }
    let sequence = u64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
    let subject_len = read_u32(body, 8)? as usize;
    let subject_end = BODY_FIXED_LEN.checked_add(subject_len)?;
    let subject = std::str::from_utf8(body.get(BODY_FIXED_LEN..subject_end)?).ok()?;
    let payload = body.get(subject_end..)?;
    let record = JournalRecord {
        sequence,
        subject: subject.to_owned(),
        payload: Bytes::copy_from_slice(payload),
    };
    Some((record, RECORD_HEADER_LEN + body_len))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let field = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(field.try_into().ok()?))
}

/// CRC-32 (IEEE) lookup table, built at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut index = 0;
    while index < 256 {
        let mut value = index as u32;
        let mut bit = 0;
        while bit < 8 {
            value = if value & 1 == 1 {
                (value >> 1) ^ 0xEDB8_8320
            } else {
                value >> 1
            };
            bit += 1;
        }
        table[index] = value;
        index += 1;
    }
    table
};

/// CRC-32 (IEEE), to tell a torn or scribbled record from a whole one.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc = CRC_TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// First line of a stream definition file, so a foreign file is never taken for one.
const DEFINITION_HEADER: &str = "onair-bus stream v1";

/// Writes the subjects a stream captures next to its journal, so that after a restart
/// durable publishes are routed before anyone declares the stream again (as JetStream
/// remembers its streams). Written to a temporary file and renamed, so a crash leaves
/// either the old or the new definition.
pub(crate) fn write_definition(path: &Path, subjects: &[String]) -> io::Result<()> {
    let mut contents = String::from(DEFINITION_HEADER);
    contents.push('\n');
    for subject in subjects {
        contents.push_str(subject);
        contents.push('\n');
    }
    let temporary = path.with_extension("stream.tmp");
    let mut file = File::create(&temporary)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    sync_parent_dir(path)
}

/// Reads the subjects written by [`write_definition`].
pub(crate) fn read_definition(path: &Path) -> io::Result<Vec<String>> {
    let contents = std::fs::read_to_string(path)?;
    let mut lines = contents.lines();
    if lines.next() != Some(DEFINITION_HEADER) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is not an onair bus stream definition (unexpected header)",
                path.display()
            ),
        ));
    }
    Ok(lines
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path) -> LoadedJournal {
        match Journal::open(path) {
            Ok(loaded) => loaded,
            Err(err) => panic!("journal should open: {err}"),
        }
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn records_survive_reopening_and_torn_tails_are_cut() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("ops.log");
        let mut loaded = open(&path);
        for sequence in 1..=3 {
            loaded
                .journal
                .append(sequence, "ops.ban", format!("event {sequence}").as_bytes())?;
        }
        drop(loaded);

        // A crash halfway through the fourth record.
        let whole = encode_record(4, "ops.ban", b"event 4")?;
        let mut file = OpenOptions::new().append(true).open(&path)?;
        file.write_all(&whole[..whole.len() / 2])?;
        drop(file);

        let mut reloaded = open(&path);
        assert_eq!(reloaded.records.len(), 3);
        assert_eq!(reloaded.discarded_bytes, (whole.len() / 2) as u64);
        assert_eq!(reloaded.records[2].payload, Bytes::from_static(b"event 3"));
        reloaded.journal.append(4, "ops.ban", b"event 4 again")?;
        drop(reloaded);

        let last = open(&path);
        assert_eq!(last.records.len(), 4);
        assert_eq!(last.discarded_bytes, 0);
        assert_eq!(
            last.records[3].payload,
            Bytes::from_static(b"event 4 again")
        );
        Ok(())
    }

    #[test]
    fn a_foreign_file_is_refused_not_truncated() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("notes.log");
        std::fs::write(&path, b"shopping list: milk, eggs")?;
        assert!(Journal::open(&path).is_err());
        assert_eq!(std::fs::read(&path)?, b"shopping list: milk, eggs");
        Ok(())
    }
}
