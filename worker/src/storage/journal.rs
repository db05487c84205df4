//! The write-ahead journal: where a group of writes becomes durable. The committer encodes
//! a group as one [`Batch`] of puts (tree, key, value), appends it as one record and calls
//! `fdatasync` once; only then is the group applied to sled and answered. sled is made
//! durable only by checkpoints, off the hot path, after which the journal segments the
//! checkpoint covers are removed. On start, whatever segments remain are replayed into sled:
//! a put is idempotent, so replaying a record twice is harmless.
//!
//! Layout: `journal/{seq:020}.journal` segment files, each starting with a header: [`MAGIC`],
//! the number and final length of the segment before it (0 and 0 for none) and a CRC-32C of
//! those, written and synced when the segment is created. Then records `len: u32 LE | crc:
//! u32 LE | payload`, where `crc` is the CRC-32C of the length bytes and the payload. A
//! payload is a run of puts `tree: u8 | key_len: u16 LE | value_len: u32 LE | key | value`;
//! a removal is the same with the tree's number plus [`REMOVAL`] and no value. (Journals
//! written before removals existed hold none, so they read the same; a build older than
//! removals refuses a journal that holds one as corrupt rather than misreading it.)
//! Segments of the first format (`CUSJRNL1`) have only the magic as their header; they are
//! still read.
//!
//! Reading back: a record that fails its check is a **torn tail** when it is the last thing
//! in the last segment (its length runs past the end, or only zero bytes follow it): the
//! append it belonged to never completed, so it was never acknowledged, and it is cut. Any
//! other bad record means the journal is corrupt, and the worker refuses to start rather
//! than silently drop acknowledged writes that follow it. So does a journal shorter than
//! what is known to have been written: a segment whose successor's header says it was
//! longer (cut, even at a record boundary), a segment missing between two others, and a
//! segment that the last checkpoint recorded as created ([`Promise`]) but that is missing
//! or lacks its header. What nothing durable describes, the newest segment's end, cannot
//! be checked: a newest segment cut at a record boundary looks like one whose later
//! appends never happened.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

pub(crate) use crate::storage::schema::TreeId;

/// First bytes of every segment this version writes: names the format and its version.
pub(crate) const MAGIC: &[u8; 8] = b"CUSJRNL2";
/// The first format's magic, the whole of its header.
const MAGIC_V1: &[u8; 8] = b"CUSJRNL1";
/// Magic, the previous segment's number and length, and their checksum.
const SEGMENT_HEADER: usize = 8 + 8 + 8 + 4;
/// Length and checksum in front of every record.
const RECORD_HEADER: usize = 8;
const PUT_HEADER: usize = 7;
/// Added to the tree's number: the put removes its key.
const REMOVAL: u8 = 0x80;
const SEGMENT_SUFFIX: &str = ".journal";

/// One put of a batch: `key` gets `value`, or, without one, is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Put<'a> {
    pub(crate) tree: TreeId,
    pub(crate) key: &'a [u8],
    pub(crate) value: Option<&'a [u8]>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "journal segment {path} is corrupt at byte {offset}: {reason}; acknowledged writes may follow it, so the worker will not start (restore the data directory from a backup, or move the segment away to accept the loss)"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: &'static str,
    },
    #[error(
        "journal segment {path} {problem}: acknowledged writes are missing, so the worker will not start (restore the data directory from a backup, or move the journal away to accept the loss)"
    )]
    Short { path: PathBuf, problem: String },
}

/// What the last checkpoint recorded about the journal: the segments numbered from
/// `covered_below` to `created_through` were created whole (their headers synced), so each
/// must be there with its header. The default promises nothing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Promise {
    pub(crate) covered_below: u64,
    pub(crate) created_through: u64,
}

impl Promise {
    /// The numbers of the segments that must be there (segments are numbered from 1).
    fn promised(&self) -> std::ops::RangeInclusive<u64> {
        self.covered_below.max(1)..=self.created_through
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A group's puts, encoded as the journal stores them: the record header is reserved at the
/// front, so the whole record goes to disk in one `write`.
pub(crate) struct Batch {
    buf: Vec<u8>,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            buf: vec![0; RECORD_HEADER],
        }
    }
}

impl Batch {
    pub(crate) fn put(&mut self, tree: TreeId, key: &[u8], value: &[u8]) {
        let key_len = u16::try_from(key.len()).expect("keys are short");
        let value_len = u32::try_from(value.len()).expect("values are bounded");
        self.buf.push(tree as u8);
        self.buf.extend_from_slice(&key_len.to_le_bytes());
        self.buf.extend_from_slice(&value_len.to_le_bytes());
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(value);
    }

    /// Removes `key` from `tree` (nothing happens where it is absent).
    pub(crate) fn remove(&mut self, tree: TreeId, key: &[u8]) {
        let key_len = u16::try_from(key.len()).expect("keys are short");
        self.buf.push(tree as u8 | REMOVAL);
        self.buf.extend_from_slice(&key_len.to_le_bytes());
        self.buf.extend_from_slice(&0u32.to_le_bytes());
        self.buf.extend_from_slice(key);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.len() == RECORD_HEADER
    }

    /// Adds the puts of a payload that [`split_record`] accepted (a replicated group).
    pub(crate) fn extend_from_payload(&mut self, payload: &[u8]) {
        self.buf.extend_from_slice(payload);
    }

    /// Bytes of the record this batch makes.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn clear(&mut self) {
        self.buf.truncate(RECORD_HEADER);
    }

    pub(crate) fn puts(&self) -> Puts<'_> {
        Puts(&self.buf[RECORD_HEADER..])
    }

    /// The complete record: header (length, checksum) and payload.
    pub(crate) fn sealed(&mut self) -> &[u8] {
        let len = u32::try_from(self.buf.len() - RECORD_HEADER).expect("a group is under 4 GiB");
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), &self.buf[8..]);
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        &self.buf
    }
}

/// The puts of one record's payload, in order.
#[derive(Clone)]
pub(crate) struct Puts<'a>(&'a [u8]);

impl<'a> Puts<'a> {
    /// The puts of a payload that [`split_record`] accepted.
    pub(crate) fn from_payload(payload: &'a [u8]) -> Self {
        Self(payload)
    }
}

/// The payload of the good record at the start of `bytes` (checksum and puts checked) and
/// the bytes after it; `None` when it is not a good record.
pub(crate) fn split_record(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = check_record(bytes).ok()?;
    Some((&bytes[RECORD_HEADER..len], &bytes[len..]))
}

impl<'a> Iterator for Puts<'a> {
    type Item = Put<'a>;

    fn next(&mut self) -> Option<Put<'a>> {
        let (put, rest) = decode_put(self.0)?;
        self.0 = rest;
        Some(put)
    }
}

/// The first put of `bytes` and what follows it; `None` at the end or on malformed input
/// (which [`check_payload`] rules out before any payload is iterated).
fn decode_put(bytes: &[u8]) -> Option<(Put<'_>, &[u8])> {
    let header = bytes.get(..PUT_HEADER)?;
    let removal = header[0] & REMOVAL != 0;
    let tree = TreeId::from_byte(header[0] & !REMOVAL)?;
    let key_len = usize::from(u16::from_le_bytes([header[1], header[2]]));
    let value_len = u32::from_le_bytes([header[3], header[4], header[5], header[6]]) as usize;
    let body = &bytes[PUT_HEADER..];
    if body.len() < key_len + value_len || (removal && value_len != 0) {
        return None;
    }
    let (key, rest) = body.split_at(key_len);
    let (value, rest) = rest.split_at(value_len);
    let value = (!removal).then_some(value);
    Some((Put { tree, key, value }, rest))
}

fn check_payload(mut payload: &[u8]) -> bool {
    while !payload.is_empty() {
        match decode_put(payload) {
            Some((_, rest)) => payload = rest,
            None => return false,
        }
    }
    true
}

/// The journal's append side: the active segment. Owned by the committer, the only writer.
pub(crate) struct Journal {
    dir: PathBuf,
    active: File,
    active_path: PathBuf,
    active_seq: u64,
    /// Bytes in the active segment, its header included.
    active_len: u64,
}

impl Journal {
    /// Starts a new, empty segment numbered `seq` (after recovery has removed older ones).
    pub(crate) fn create(dir: &Path, seq: u64) -> Result<Self, JournalError> {
        Self::create_after(dir, seq, None)
    }

    /// Starts segment `seq`, whose header records `previous` (number and final length).
    fn create_after(
        dir: &Path,
        seq: u64,
        previous: Option<(u64, u64)>,
    ) -> Result<Self, JournalError> {
        let (active, active_path) = new_segment(dir, seq, previous)?;
        Ok(Self {
            dir: dir.to_owned(),
            active,
            active_path,
            active_seq: seq,
            active_len: SEGMENT_HEADER as u64,
        })
    }

    /// The number of the segment being appended to.
    pub(crate) fn active_seq(&self) -> u64 {
        self.active_seq
    }

    /// Appends `batch` as one record. Not durable until [`Journal::sync`].
    pub(crate) fn append(&mut self, batch: &mut Batch) -> Result<(), JournalError> {
        failpoint!("journal-write", |_| Err(JournalError::Io {
            path: self.active_path.clone(),
            source: io::Error::other("failpoint journal-write"),
        }));
        let record = batch.sealed();
        self.active
            .write_all(record)
            .map_err(io_error(&self.active_path))?;
        self.active_len += record.len() as u64;
        Ok(())
    }

    /// `fdatasync` of the active segment: everything appended so far is durable.
    pub(crate) fn sync(&mut self) -> Result<(), JournalError> {
        failpoint!("journal-sync", |_| Err(JournalError::Io {
            path: self.active_path.clone(),
            source: io::Error::other("failpoint journal-sync"),
        }));
        // The power-cut test's proof that it would notice a journal that is not synced.
        failpoint!("journal-skip-sync", |_| Ok(()));
        self.active.sync_data().map_err(io_error(&self.active_path))
    }

    /// Bytes in the active segment.
    pub(crate) fn active_len(&self) -> u64 {
        self.active_len
    }

    /// Closes the active segment and starts the next one, whose header records how long the
    /// closed one is; returns the new segment's number. Every segment numbered below it is
    /// complete and synced.
    pub(crate) fn rotate(&mut self) -> Result<u64, JournalError> {
        let previous = (self.active_seq, self.active_len);
        *self = Self::create_after(&self.dir, self.active_seq + 1, Some(previous))?;
        Ok(self.active_seq)
    }
}

/// A journal whose every write fails (its segment is the read end of a pipe), to show what a
/// disk error does to the commit path.
#[cfg(test)]
pub(crate) fn failing_journal(dir: &Path) -> Journal {
    fs::create_dir_all(dir).expect("a journal directory");
    let mut journal = Journal::create(dir, 1).expect("a journal");
    let (reader, _writer) = std::io::pipe().expect("a pipe");
    journal.active = File::from(std::os::fd::OwnedFd::from(reader));
    journal
}

/// Creates segment `seq` with its header, durably (file and directory entry).
fn new_segment(
    dir: &Path,
    seq: u64,
    previous: Option<(u64, u64)>,
) -> Result<(File, PathBuf), JournalError> {
    let path = segment_path(dir, seq);
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io_error(&path))?;
    file.write_all(&segment_header(previous))
        .and_then(|()| file.sync_all())
        .map_err(io_error(&path))?;
    sync_dir(dir).map_err(io_error(dir))?;
    Ok((file, path))
}

fn segment_header(previous: Option<(u64, u64)>) -> [u8; SEGMENT_HEADER] {
    let (seq, len) = previous.unwrap_or((0, 0));
    let mut header = [0; SEGMENT_HEADER];
    header[..8].copy_from_slice(MAGIC);
    header[8..16].copy_from_slice(&seq.to_le_bytes());
    header[16..24].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c(&header[8..24]);
    header[24..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// `fsync` of a directory: makes its entries (created, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The numbers of the segments in `dir`, ascending.
fn segments(dir: &Path) -> Result<Vec<u64>, JournalError> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let name = entry.map_err(io_error(dir))?.file_name();
        let seq = name
            .to_str()
            .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
            .and_then(|n| n.parse().ok());
        if let Some(seq) = seq {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// The one place a segment's file name is made.
pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}{SEGMENT_SUFFIX}"))
}

/// Removes the segments numbered below `seq`, oldest first, then syncs the directory. Used
/// once a checkpoint has made everything in them durable in sled.
pub(crate) fn remove_segments_before(dir: &Path, seq: u64) -> Result<(), JournalError> {
    for old in segments(dir)?.into_iter().filter(|&s| s < seq) {
        let path = segment_path(dir, old);
        fs::remove_file(&path).map_err(io_error(&path))?;
    }
    sync_dir(dir).map_err(io_error(dir))
}

/// What [`load`] found in a journal.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Replayed {
    pub(crate) segments: usize,
    pub(crate) records: u64,
    pub(crate) puts: u64,
    pub(crate) bytes: u64,
    /// Bytes of an incomplete last record that were cut.
    pub(crate) torn_tail_bytes: u64,
    /// The number for the next segment: above every segment found.
    pub(crate) next_seq: u64,
}

/// A journal read and checked by [`load`], to be replayed.
pub(crate) struct Loaded {
    /// Each segment's good bytes and where its records start.
    segments: Vec<(Vec<u8>, usize)>,
    replayed: Replayed,
}

impl Loaded {
    /// Every record's puts, in journal order. Cheap to walk more than once: a replay may
    /// walk it on several threads, each applying the puts of some trees.
    pub(crate) fn records(&self) -> impl Iterator<Item = Puts<'_>> {
        self.segments
            .iter()
            .flat_map(|(bytes, header_len)| records(&bytes[(*header_len).min(bytes.len())..]))
            .map(Puts)
    }

    /// What it holds.
    pub(crate) fn replayed(&self) -> &Replayed {
        &self.replayed
    }
}

/// Reads and checks every segment in `dir` (created if missing), in order. A torn tail of the
/// last segment is cut (truncated and synced); any other bad record is
/// [`JournalError::Corrupt`], and a journal shorter than its headers or `promise` say is
/// [`JournalError::Short`], before anything can be applied from it.
pub(crate) fn load(dir: &Path, promise: Promise) -> Result<Loaded, JournalError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let seqs = segments(dir)?;
    let short = |seq: u64, problem: String| JournalError::Short {
        path: segment_path(dir, seq),
        problem,
    };
    for seq in promise.promised() {
        if seqs.binary_search(&seq).is_err() {
            return Err(short(
                seq,
                "is missing, though the last checkpoint recorded it as created".into(),
            ));
        }
    }
    let mut replayed = Replayed {
        next_seq: seqs
            .last()
            .map_or(1, |last| last + 1)
            .max(promise.covered_below)
            .max(promise.created_through + 1),
        ..Replayed::default()
    };
    // Every segment is read and checked before anything is applied.
    let mut loaded = Vec::with_capacity(seqs.len());
    let mut previous: Option<(u64, u64)> = None;
    for (i, &seq) in seqs.iter().enumerate() {
        let path = segment_path(dir, seq);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io_error(&path))?;
        let last_segment = i + 1 == seqs.len();
        let scanned = scan_segment(&bytes);
        if let (Some(recorded), Some((before, before_len))) = (scanned.previous, previous) {
            if recorded.0 != before {
                return Err(short(
                    recorded.0,
                    format!("is missing: segment {seq} follows it, but only {before} is there"),
                ));
            }
            if recorded.1 != before_len {
                return Err(short(
                    before,
                    format!(
                        "holds {before_len} bytes, but the header of segment {seq} says it held {}",
                        recorded.1
                    ),
                ));
            }
        }
        let promised = promise.promised().contains(&seq);
        let end = match scanned.end {
            End::Clean => bytes.len(),
            End::Torn(0) if promised => {
                return Err(short(
                    seq,
                    format!(
                        "holds {} bytes, less than its header, though the last checkpoint recorded it as created whole",
                        bytes.len()
                    ),
                ));
            }
            End::Torn(offset) if last_segment => {
                replayed.torn_tail_bytes = (bytes.len() - offset) as u64;
                tracing::warn!(
                    segment = %path.display(),
                    offset,
                    cut_bytes = replayed.torn_tail_bytes,
                    "journal ends in an incomplete record (an append interrupted by a crash, never acknowledged); cutting it"
                );
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_error(&path))?;
                file.set_len(offset as u64)
                    .and_then(|()| file.sync_all())
                    .map_err(io_error(&path))?;
                offset
            }
            End::Torn(offset) | End::Corrupt(offset, _) => {
                let reason = match scanned.end {
                    End::Corrupt(_, reason) => reason,
                    _ => "incomplete record in a segment that is not the last",
                };
                return Err(JournalError::Corrupt {
                    path,
                    offset: offset as u64,
                    reason,
                });
            }
        };
        previous = Some((seq, bytes.len() as u64));
        bytes.truncate(end);
        loaded.push((bytes, scanned.header_len));
    }
    let mut loaded = Loaded {
        segments: loaded,
        replayed,
    };
    let (records, puts) = loaded.records().fold((0, 0), |(records, puts), record| {
        (records + 1, puts + record.count() as u64)
    });
    loaded.replayed.records = records;
    loaded.replayed.puts = puts;
    loaded.replayed.segments = loaded.segments.len();
    loaded.replayed.bytes = loaded.segments.iter().map(|(b, _)| b.len() as u64).sum();
    Ok(loaded)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Every byte belongs to a good record.
    Clean,
    /// The bytes from this offset are an incomplete last record (or zeros); 0 when even the
    /// header is incomplete.
    Torn(usize),
    /// A bad record at this offset with more data after it.
    Corrupt(usize, &'static str),
}

/// What a segment's header says and where its good records end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scan {
    /// The segment before it and that one's final length, as this one's header records them
    /// (none for the first segment written, or the first format).
    previous: Option<(u64, u64)>,
    header_len: usize,
    end: End,
}

/// Checks a segment's header and records; the good ones are the bytes before the end.
fn scan_segment(bytes: &[u8]) -> Scan {
    let unreadable = |end| Scan {
        previous: None,
        header_len: 0,
        end,
    };
    let (previous, header_len) = if bytes.starts_with(MAGIC_V1) {
        (None, MAGIC_V1.len())
    } else if bytes.len() < SEGMENT_HEADER {
        // Created but its header not (fully) written: a crash during the segment's creation.
        let torn = MAGIC.starts_with(&bytes[..bytes.len().min(MAGIC.len())])
            || bytes.iter().all(|&b| b == 0);
        return unreadable(if torn {
            End::Torn(0)
        } else {
            End::Corrupt(0, "not a journal segment")
        });
    } else if !bytes.starts_with(MAGIC) {
        return unreadable(End::Corrupt(0, "not a journal segment (wrong magic)"));
    } else {
        let crc = u32::from_le_bytes(bytes[24..28].try_into().expect("4 bytes"));
        if crc32c::crc32c(&bytes[8..24]) != crc {
            return unreadable(End::Corrupt(0, "the segment's header fails its checksum"));
        }
        let seq = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
        ((seq > 0).then_some((seq, len)), SEGMENT_HEADER)
    };
    let mut offset = header_len;
    while offset < bytes.len() {
        match check_record(&bytes[offset..]) {
            Ok(len) => offset += len,
            Err(reason) => {
                let rest = &bytes[offset..];
                let declared_end = rest
                    .get(..4)
                    .map(|l| RECORD_HEADER + u32::from_le_bytes(l.try_into().unwrap()) as usize);
                let torn = rest.len() < RECORD_HEADER
                    || declared_end.is_some_and(|end| end >= rest.len())
                    || rest.iter().all(|&b| b == 0);
                let end = if torn {
                    End::Torn(offset)
                } else {
                    End::Corrupt(offset, reason)
                };
                return Scan {
                    previous,
                    header_len,
                    end,
                };
            }
        }
    }
    Scan {
        previous,
        header_len,
        end: End::Clean,
    }
}

/// The length of the good record at the start of `bytes`, or why it is not one.
fn check_record(bytes: &[u8]) -> Result<usize, &'static str> {
    let header = bytes.get(..RECORD_HEADER).ok_or("incomplete header")?;
    let len_bytes: [u8; 4] = header[..4].try_into().unwrap();
    let len = u32::from_le_bytes(len_bytes) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().unwrap());
    if len == 0 {
        return Err("empty record");
    }
    let payload = bytes
        .get(RECORD_HEADER..RECORD_HEADER + len)
        .ok_or("record runs past the end of the segment")?;
    if crc32c::crc32c_append(crc32c::crc32c(&len_bytes), payload) != crc {
        return Err("checksum mismatch");
    }
    if !check_payload(payload) {
        return Err("malformed puts in a record whose checksum matches");
    }
    Ok(RECORD_HEADER + len)
}

/// The payloads of a run of good records (after the segment's header).
fn records(mut bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let len = check_record(bytes).ok()?;
        let payload = &bytes[RECORD_HEADER..len];
        bytes = &bytes[len..];
        Some(payload)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(puts: &[(TreeId, &str, &str)]) -> Batch {
        let mut batch = Batch::default();
        for (tree, key, value) in puts {
            batch.put(*tree, key.as_bytes(), value.as_bytes());
        }
        batch
    }

    type Seen = Vec<(TreeId, String, String)>;

    /// Every put replayed from `dir`, as (tree, key, value) strings; a removal's value is `-`.
    fn replay_all(dir: &Path) -> Result<(Seen, Replayed), JournalError> {
        replay_promised(dir, Promise::default())
    }

    fn replay_promised(dir: &Path, promise: Promise) -> Result<(Seen, Replayed), JournalError> {
        let loaded = load(dir, promise)?;
        let seen = loaded
            .records()
            .flatten()
            .map(|put| {
                (
                    put.tree,
                    String::from_utf8(put.key.to_vec()).unwrap(),
                    String::from_utf8(put.value.unwrap_or(b"-").to_vec()).unwrap(),
                )
            })
            .collect();
        Ok((seen, loaded.replayed().clone()))
    }

    fn active_path(dir: &Path) -> PathBuf {
        let seqs = segments(dir).unwrap();
        segment_path(dir, *seqs.last().unwrap())
    }

    #[test]
    fn records_come_back_in_order_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 1).unwrap();
        journal
            .append(&mut batch(&[
                (TreeId::Customers, "id1", "{}"),
                (TreeId::Emails, "a@x.com", "id1"),
            ]))
            .unwrap();
        journal.sync().unwrap();
        assert_eq!(journal.rotate().unwrap(), 2);
        let mut second = batch(&[(TreeId::Idempotency, "kk", "")]);
        second.remove(TreeId::Emails, b"a@x.com");
        journal.append(&mut second).unwrap();
        journal.sync().unwrap();
        let (puts, replayed) = replay_all(dir.path()).unwrap();
        assert_eq!(
            puts,
            [
                (TreeId::Customers, "id1".into(), "{}".into()),
                (TreeId::Emails, "a@x.com".into(), "id1".into()),
                (TreeId::Idempotency, "kk".into(), String::new()),
                (TreeId::Emails, "a@x.com".into(), "-".into()),
            ],
            "a removal comes back as one, after the put it undoes"
        );
        assert_eq!(
            (
                replayed.segments,
                replayed.records,
                replayed.puts,
                replayed.next_seq
            ),
            (2, 2, 4, 3)
        );
        remove_segments_before(dir.path(), 2).unwrap();
        assert_eq!(segments(dir.path()).unwrap(), [2]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_anything_else_bad_is_corruption() {
        let record = {
            let mut b = batch(&[(TreeId::Customers, "id", "value")]);
            b.sealed().to_vec()
        };
        let header = segment_header(None);
        let whole = [&header[..], &record, &record].concat();
        let cases: Vec<(&str, Vec<u8>, Result<u64, &str>)> = vec![
            ("clean", whole.clone(), Ok(2)),
            ("empty new segment", Vec::new(), Ok(0)),
            ("half-written magic", MAGIC[..3].to_vec(), Ok(0)),
            (
                "last record cut short",
                whole[..whole.len() - 3].to_vec(),
                Ok(1),
            ),
            (
                "only part of the last header",
                [&header[..], &record, &record[..5]].concat(),
                Ok(1),
            ),
            (
                "zeros after the last record (preallocated or lost pages)",
                [&header[..], &record, &[0; 100]].concat(),
                Ok(1),
            ),
            (
                "last record's bytes garbled",
                {
                    let mut b = whole.clone();
                    let n = b.len();
                    b[n - 2] ^= 0xff;
                    b
                },
                Ok(1),
            ),
            (
                "first record garbled, a good one after it",
                {
                    let mut b = whole.clone();
                    b[SEGMENT_HEADER + RECORD_HEADER + 2] ^= 0xff;
                    b
                },
                Err("checksum mismatch"),
            ),
            (
                "wrong magic",
                [&b"NOTAJRNL"[..], &record, &record].concat(),
                Err("not a journal segment (wrong magic)"),
            ),
            (
                "the first format, whose header is its magic",
                [&MAGIC_V1[..], &record, &record].concat(),
                Ok(2),
            ),
            (
                "a header whose checksum fails",
                {
                    let mut b = whole.clone();
                    b[12] ^= 1;
                    b
                },
                Err("the segment's header fails its checksum"),
            ),
        ];
        for (description, bytes, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = segment_path(dir.path(), 7);
            fs::write(&path, &bytes).unwrap();
            match (replay_all(dir.path()), expected) {
                (Ok((_, replayed)), Ok(records)) => {
                    assert_eq!(replayed.records, records, "{description}");
                    let kept = fs::metadata(&path).unwrap().len();
                    assert_eq!(
                        kept + replayed.torn_tail_bytes,
                        bytes.len() as u64,
                        "{description}: the torn tail is cut"
                    );
                    assert_eq!(
                        replay_all(dir.path()).unwrap().1.torn_tail_bytes,
                        0,
                        "{description}: nothing left to cut"
                    );
                }
                (Err(JournalError::Corrupt { reason, .. }), Err(expected)) => {
                    assert_eq!(reason, expected, "{description}")
                }
                (other, _) => panic!("{description}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_torn_tail_in_an_older_segment_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 1).unwrap();
        journal
            .append(&mut batch(&[(TreeId::Customers, "id", "value")]))
            .unwrap();
        let older = active_path(dir.path());
        journal.rotate().unwrap();
        let len = fs::metadata(&older).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&older)
            .unwrap()
            .set_len(len - 1)
            .unwrap();
        assert!(matches!(
            replay_all(dir.path()),
            Err(JournalError::Corrupt { .. })
        ));
    }

    /// Cuts the segment file `seq` in `dir` to `len` bytes.
    fn cut(dir: &Path, seq: u64, len: u64) {
        OpenOptions::new()
            .write(true)
            .open(segment_path(dir, seq))
            .unwrap()
            .set_len(len)
            .unwrap();
    }

    /// Three segments of two records each, as rotations leave them.
    fn three_segments(dir: &Path) {
        let mut journal = Journal::create(dir, 1).unwrap();
        for n in 0..6 {
            journal
                .append(&mut batch(&[(
                    TreeId::Customers,
                    &format!("id{n}"),
                    "value",
                )]))
                .unwrap();
            journal.sync().unwrap();
            if n % 2 == 1 && n < 5 {
                journal.rotate().unwrap();
            }
        }
    }

    #[test]
    fn a_journal_shorter_than_its_headers_or_the_checkpoint_say_is_refused() {
        // One record of `three_segments`: header, then a put of a 3-byte key and a 5-byte value.
        const RECORD: u64 = (RECORD_HEADER + PUT_HEADER + 3 + 5) as u64;
        let record_len = batch(&[(TreeId::Customers, "id0", "value")]).sealed().len();
        assert_eq!(record_len as u64, RECORD);
        let promised = Promise {
            covered_below: 1,
            created_through: 3,
        };
        type Case = (&'static str, fn(&Path), Promise, Result<u64, &'static str>);
        let cases: [Case; 7] = [
            ("whole", |_| {}, promised, Ok(6)),
            (
                "the newest cut at a record boundary (nothing durable says otherwise)",
                |dir| cut(dir, 3, SEGMENT_HEADER as u64 + RECORD),
                promised,
                Ok(5),
            ),
            (
                "an older segment cut at a record boundary",
                |dir| cut(dir, 2, SEGMENT_HEADER as u64 + RECORD),
                promised,
                Err("holds 51 bytes, but the header of segment 3 says it held 74"),
            ),
            (
                "a segment missing between two others",
                |dir| fs::remove_file(segment_path(dir, 2)).unwrap(),
                Promise::default(),
                Err("is missing: segment 3 follows it, but only 1 is there"),
            ),
            (
                "a segment the checkpoint recorded, missing",
                |dir| fs::remove_file(segment_path(dir, 3)).unwrap(),
                promised,
                Err("is missing, though the last checkpoint recorded it as created"),
            ),
            (
                "the newest, emptied, though the checkpoint recorded it",
                |dir| cut(dir, 3, 0),
                promised,
                Err("holds 0 bytes, less than its header, though the last checkpoint"),
            ),
            (
                "the newest, emptied, created after the checkpoint (a crash while creating it)",
                |dir| cut(dir, 3, 0),
                Promise {
                    covered_below: 1,
                    created_through: 2,
                },
                Ok(4),
            ),
        ];
        for (description, damage, promise, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            three_segments(dir.path());
            damage(dir.path());
            match (replay_promised(dir.path(), promise), expected) {
                (Ok((_, replayed)), Ok(records)) => {
                    assert_eq!(replayed.records, records, "{description}")
                }
                (Err(JournalError::Short { problem, .. }), Err(expected)) => {
                    assert!(problem.contains(expected), "{description}: {problem}")
                }
                (other, _) => panic!("{description}: {other:?}"),
            }
        }
    }
}
