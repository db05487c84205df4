//! The write-ahead journal: where a group of writes becomes durable. The committer encodes
//! a group as one [`Batch`] of puts (tree, key, value), appends it as one record and calls
//! `fdatasync` once; only then is the group applied to sled and answered. sled is made
//! durable only by checkpoints, off the hot path, after which the journal segments the
//! checkpoint covers are removed. On start, whatever segments remain are replayed into sled:
//! a put is idempotent, so replaying a record twice is harmless.
//!
//! Layout: `journal/{seq:020}.journal` segment files, each starting with [`MAGIC`], then
//! records `len: u32 LE | crc: u32 LE | payload`, where `crc` is the CRC-32C of the length
//! bytes and the payload. A payload is a run of puts `tree: u8 | key_len: u16 LE |
//! value_len: u32 LE | key | value`.
//!
//! Reading back: a record that fails its check is a **torn tail** when it is the last thing
//! in the last segment (its length runs past the end, or only zero bytes follow it): the
//! append it belonged to never completed, so it was never acknowledged, and it is cut. Any
//! other bad record means the journal is corrupt, and the worker refuses to start rather
//! than silently drop acknowledged writes that follow it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// First bytes of every segment: names the format and its version.
pub const MAGIC: &[u8; 8] = b"CUSJRNL1";
/// Length and checksum in front of every record.
const RECORD_HEADER: usize = 8;
const PUT_HEADER: usize = 7;
const SEGMENT_SUFFIX: &str = ".journal";

/// The sled tree a journaled put goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeId {
    Customers = 1,
    Emails = 2,
    Idempotency = 3,
    Relayed = 4,
    Replication = 5,
}

impl TreeId {
    /// Every tree, in a fixed order.
    pub const ALL: [Self; 5] = [
        Self::Customers,
        Self::Emails,
        Self::Idempotency,
        Self::Relayed,
        Self::Replication,
    ];

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Customers),
            2 => Some(Self::Emails),
            3 => Some(Self::Idempotency),
            4 => Some(Self::Relayed),
            5 => Some(Self::Replication),
            _ => None,
        }
    }
}

/// One put of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Put<'a> {
    pub tree: TreeId,
    pub key: &'a [u8],
    pub value: &'a [u8],
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
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A group's puts, encoded as the journal stores them: the record header is reserved at the
/// front, so the whole record goes to disk in one `write`.
pub struct Batch {
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
    pub fn put(&mut self, tree: TreeId, key: &[u8], value: &[u8]) {
        let key_len = u16::try_from(key.len()).expect("keys are short");
        let value_len = u32::try_from(value.len()).expect("values are bounded");
        self.buf.push(tree as u8);
        self.buf.extend_from_slice(&key_len.to_le_bytes());
        self.buf.extend_from_slice(&value_len.to_le_bytes());
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(value);
    }

    pub fn is_empty(&self) -> bool {
        self.buf.len() == RECORD_HEADER
    }

    /// Adds the puts of a payload that [`split_record`] accepted (a replicated group).
    pub fn extend_from_payload(&mut self, payload: &[u8]) {
        self.buf.extend_from_slice(payload);
    }

    /// Bytes of the record this batch makes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn clear(&mut self) {
        self.buf.truncate(RECORD_HEADER);
    }

    pub fn puts(&self) -> Puts<'_> {
        Puts(&self.buf[RECORD_HEADER..])
    }

    /// The complete record: header (length, checksum) and payload.
    pub fn sealed(&mut self) -> &[u8] {
        let len = u32::try_from(self.buf.len() - RECORD_HEADER).expect("a group is under 4 GiB");
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), &self.buf[8..]);
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        &self.buf
    }
}

/// The puts of one record's payload, in order.
#[derive(Clone)]
pub struct Puts<'a>(&'a [u8]);

impl<'a> Puts<'a> {
    /// The puts of a payload that [`split_record`] accepted.
    pub fn from_payload(payload: &'a [u8]) -> Self {
        Self(payload)
    }
}

/// The payload of the good record at the start of `bytes` (checksum and puts checked) and
/// the bytes after it; `None` when it is not a good record.
pub fn split_record(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
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
    let tree = TreeId::from_byte(header[0])?;
    let key_len = usize::from(u16::from_le_bytes([header[1], header[2]]));
    let value_len = u32::from_le_bytes([header[3], header[4], header[5], header[6]]) as usize;
    let body = &bytes[PUT_HEADER..];
    if body.len() < key_len + value_len {
        return None;
    }
    let (key, rest) = body.split_at(key_len);
    let (value, rest) = rest.split_at(value_len);
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
pub struct Journal {
    dir: PathBuf,
    active: File,
    active_path: PathBuf,
    active_seq: u64,
    /// Bytes appended to the active segment.
    active_len: u64,
}

impl Journal {
    /// Starts a new, empty segment numbered `seq` (after recovery has removed older ones).
    pub fn create(dir: &Path, seq: u64) -> Result<Self, JournalError> {
        let (active, active_path) = new_segment(dir, seq)?;
        Ok(Self {
            dir: dir.to_owned(),
            active,
            active_path,
            active_seq: seq,
            active_len: MAGIC.len() as u64,
        })
    }

    /// Appends `batch` as one record. Not durable until [`Journal::sync`].
    pub fn append(&mut self, batch: &mut Batch) -> Result<(), JournalError> {
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
    pub fn sync(&mut self) -> Result<(), JournalError> {
        failpoint!("journal-sync", |_| Err(JournalError::Io {
            path: self.active_path.clone(),
            source: io::Error::other("failpoint journal-sync"),
        }));
        // The power-cut test's proof that it would notice a journal that is not synced.
        failpoint!("journal-skip-sync", |_| Ok(()));
        self.active.sync_data().map_err(io_error(&self.active_path))
    }

    /// Bytes in the active segment.
    pub fn active_len(&self) -> u64 {
        self.active_len
    }

    /// Closes the active segment and starts the next one; returns the new segment's number.
    /// Every segment numbered below it is complete and synced.
    pub fn rotate(&mut self) -> Result<u64, JournalError> {
        *self = Self::create(&self.dir, self.active_seq + 1)?;
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

/// Creates segment `seq` with its magic, durably (file and directory entry).
fn new_segment(dir: &Path, seq: u64) -> Result<(File, PathBuf), JournalError> {
    let path = dir.join(format!("{seq:020}{SEGMENT_SUFFIX}"));
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io_error(&path))?;
    file.write_all(MAGIC)
        .and_then(|()| file.sync_all())
        .map_err(io_error(&path))?;
    sync_dir(dir).map_err(io_error(dir))?;
    Ok((file, path))
}

/// `fsync` of a directory: makes its entries (created, renamed, removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
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

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}{SEGMENT_SUFFIX}"))
}

/// Removes the segments numbered below `seq`, oldest first, then syncs the directory. Used
/// once a checkpoint has made everything in them durable in sled.
pub fn remove_segments_before(dir: &Path, seq: u64) -> Result<(), JournalError> {
    for old in segments(dir)?.into_iter().filter(|&s| s < seq) {
        let path = segment_path(dir, old);
        fs::remove_file(&path).map_err(io_error(&path))?;
    }
    sync_dir(dir).map_err(io_error(dir))
}

/// What [`replay`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub segments: usize,
    pub records: u64,
    pub puts: u64,
    pub bytes: u64,
    /// Bytes of an incomplete last record that were cut.
    pub torn_tail_bytes: u64,
    /// The number for the next segment: above every segment found.
    pub next_seq: u64,
}

/// Reads every segment in `dir` (created if missing) in order and hands each record's puts
/// to `apply`. A torn tail of the last segment is cut (truncated and synced); any other bad
/// record is [`JournalError::Corrupt`].
pub fn replay<E>(
    dir: &Path,
    mut apply: impl FnMut(Puts<'_>) -> Result<(), E>,
) -> Result<Result<Replayed, E>, JournalError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let seqs = segments(dir)?;
    let mut replayed = Replayed {
        next_seq: seqs.last().map_or(1, |last| last + 1),
        ..Replayed::default()
    };
    for (i, &seq) in seqs.iter().enumerate() {
        let path = segment_path(dir, seq);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io_error(&path))?;
        let last_segment = i + 1 == seqs.len();
        let scanned = scan_segment(&bytes);
        let end = match scanned {
            End::Clean => bytes.len(),
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
                let reason = match scanned {
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
        for payload in records(&bytes[..end]) {
            replayed.records += 1;
            replayed.puts += Puts(payload).count() as u64;
            if let Err(e) = apply(Puts(payload)) {
                return Ok(Err(e));
            }
        }
        replayed.segments += 1;
        replayed.bytes += end as u64;
    }
    Ok(Ok(replayed))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Every byte belongs to a good record.
    Clean,
    /// The bytes from this offset are an incomplete last record (or zeros).
    Torn(usize),
    /// A bad record at this offset with more data after it.
    Corrupt(usize, &'static str),
}

/// Checks a segment's records; the good ones are the bytes before the returned end.
fn scan_segment(bytes: &[u8]) -> End {
    if bytes.len() < MAGIC.len() {
        // Created but its magic not (fully) written: a crash during the segment's creation.
        return if MAGIC.starts_with(bytes) || bytes.iter().all(|&b| b == 0) {
            End::Torn(0)
        } else {
            End::Corrupt(0, "not a journal segment")
        };
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return End::Corrupt(0, "not a journal segment (wrong magic)");
    }
    let mut offset = MAGIC.len();
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
                return if torn {
                    End::Torn(offset)
                } else {
                    End::Corrupt(offset, reason)
                };
            }
        }
    }
    End::Clean
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

/// The payloads of a run of good records.
fn records(mut bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes = &bytes[MAGIC.len().min(bytes.len())..];
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

    /// Every put replayed from `dir`, as (tree, key, value) strings.
    fn replay_all(dir: &Path) -> Result<(Seen, Replayed), JournalError> {
        let mut seen = Vec::new();
        let replayed = replay(dir, |puts| {
            for put in puts {
                seen.push((
                    put.tree,
                    String::from_utf8(put.key.to_vec()).unwrap(),
                    String::from_utf8(put.value.to_vec()).unwrap(),
                ));
            }
            Ok::<_, ()>(())
        })?
        .unwrap();
        Ok((seen, replayed))
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
        journal
            .append(&mut batch(&[(TreeId::Idempotency, "kk", "")]))
            .unwrap();
        journal.sync().unwrap();
        let (puts, replayed) = replay_all(dir.path()).unwrap();
        assert_eq!(
            puts,
            [
                (TreeId::Customers, "id1".into(), "{}".into()),
                (TreeId::Emails, "a@x.com".into(), "id1".into()),
                (TreeId::Idempotency, "kk".into(), String::new()),
            ]
        );
        assert_eq!(
            (
                replayed.segments,
                replayed.records,
                replayed.puts,
                replayed.next_seq
            ),
            (2, 2, 3, 3)
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
        let whole = [&MAGIC[..], &record, &record].concat();
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
                [&MAGIC[..], &record, &record[..5]].concat(),
                Ok(1),
            ),
            (
                "zeros after the last record (preallocated or lost pages)",
                [&MAGIC[..], &record, &[0; 100]].concat(),
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
                    b[MAGIC.len() + RECORD_HEADER + 2] ^= 0xff;
                    b
                },
                Err("checksum mismatch"),
            ),
            (
                "wrong magic",
                [&b"NOTAJRNL"[..], &record].concat(),
                Err("not a journal segment (wrong magic)"),
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

    #[test]
    fn an_apply_error_stops_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), 1).unwrap();
        for _ in 0..3 {
            journal
                .append(&mut batch(&[(TreeId::Customers, "id", "value")]))
                .unwrap();
        }
        let mut applied = 0;
        let result = replay(dir.path(), |_| {
            applied += 1;
            if applied == 2 {
                Err("apply failed")
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert_eq!((result, applied), (Err("apply failed"), 2));
    }
}
