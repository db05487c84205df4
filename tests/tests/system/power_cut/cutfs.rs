//! `CutFs`: an in-memory FUSE file system that behaves like a disk with a volatile write
//! cache. Every write lands in the "current" state, which processes read back at once; only
//! `fsync`/`fdatasync` of a file makes its data durable, and only `fsync` of a directory
//! makes that directory's entries (files created, renamed, removed) durable, as POSIX
//! promises and no more. [`Disk::cut`] is the power cut: everything not made durable is
//! gone. `sync_file_range` never reaches a FUSE file system, so it counts for nothing here,
//! as on a real disk that loses power.
//!
//! Files are opened with `FOPEN_DIRECT_IO` and attributes are never cached, so the kernel's
//! page cache holds nothing of this file system; after a cut the test still remounts it.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

const NO_CACHE: Duration = Duration::ZERO;

enum Node {
    File {
        data: Vec<u8>,
        durable: Vec<u8>,
        /// Byte ranges changed since the last fsync.
        dirty: Vec<Range<usize>>,
    },
    Dir {
        entries: BTreeMap<OsString, u64>,
        durable: BTreeMap<OsString, u64>,
    },
}

/// The state behind one or more mounts of [`CutFs`].
pub struct Disk {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// Bytes made durable by fsync, for the test's report.
    pub synced_bytes: u64,
}

impl Disk {
    pub fn new() -> Arc<Mutex<Self>> {
        let mut nodes = HashMap::new();
        nodes.insert(
            INodeNo::ROOT.0,
            Node::Dir {
                entries: BTreeMap::new(),
                durable: BTreeMap::new(),
            },
        );
        Arc::new(Mutex::new(Self {
            nodes,
            next_ino: INodeNo::ROOT.0 + 1,
            synced_bytes: 0,
        }))
    }

    /// The power cut: every file and directory goes back to what was last made durable.
    pub fn cut(&mut self) {
        for node in self.nodes.values_mut() {
            match node {
                Node::File {
                    data,
                    durable,
                    dirty,
                } => {
                    data.clone_from(durable);
                    dirty.clear();
                }
                Node::Dir { entries, durable } => entries.clone_from(durable),
            }
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, size, perm) = match self.nodes.get(&ino)? {
            Node::File { data, .. } => (FileType::RegularFile, data.len() as u64, 0o644),
            Node::Dir { .. } => (FileType::Directory, 0, 0o755),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: SystemTime::UNIX_EPOCH,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            crtime: SystemTime::UNIX_EPOCH,
            kind,
            perm,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn entries(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&dir) {
            Some(Node::Dir { entries, .. }) => Ok(entries),
            Some(Node::File { .. }) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn add(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<FileAttr, Errno> {
        let ino = self.next_ino;
        let entries = self.entries(parent)?;
        if entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        entries.insert(name.to_owned(), ino);
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        Ok(self.attr(ino).expect("just added"))
    }

    fn file(&mut self, ino: u64) -> Result<(&mut Vec<u8>, &mut Vec<Range<usize>>), Errno> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File { data, dirty, .. }) => Ok((data, dirty)),
            Some(Node::Dir { .. }) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn resize(&mut self, ino: u64, size: usize) -> Result<(), Errno> {
        let (data, dirty) = self.file(ino)?;
        dirty.push(size.min(data.len())..size.max(data.len()));
        data.resize(size, 0);
        Ok(())
    }

    fn write(&mut self, ino: u64, offset: usize, bytes: &[u8]) -> Result<(), Errno> {
        let (data, dirty) = self.file(ino)?;
        let end = offset + bytes.len();
        if data.len() < end {
            dirty.push(data.len()..end);
            data.resize(end, 0);
        }
        data[offset..end].copy_from_slice(bytes);
        dirty.push(offset..end);
        Ok(())
    }

    fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File {
                data,
                durable,
                dirty,
            }) => {
                durable.resize(data.len(), 0);
                for range in dirty.drain(..) {
                    let range = range.start.min(data.len())..range.end.min(data.len());
                    self.synced_bytes += range.len() as u64;
                    durable[range.clone()].copy_from_slice(&data[range]);
                }
                Ok(())
            }
            Some(Node::Dir { entries, durable }) => {
                durable.clone_from(entries);
                Ok(())
            }
            None => Err(Errno::ENOENT),
        }
    }
}

/// The FUSE side: each call locks the [`Disk`].
pub struct CutFs(pub Arc<Mutex<Disk>>);

impl CutFs {
    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.0.lock().expect("disk")
    }
}

/// Mounts a [`CutFs`] of `disk` on `mountpoint`, served by a background thread.
pub fn mount(disk: &Arc<Mutex<Disk>>, mountpoint: &Path) -> fuser::BackgroundSession {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("cutfs".into()),
        fuser::MountOption::DefaultPermissions,
    ];
    fuser::spawn_mount(CutFs(disk.clone()), mountpoint, &config).unwrap_or_else(|e| {
        panic!(
            "cannot mount the FUSE file system on {} (the power-cut test needs /dev/fuse and root, as in CI): {e}",
            mountpoint.display()
        )
    })
}

impl Filesystem for CutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut disk = self.disk();
        let found = disk
            .entries(parent.0)
            .and_then(|entries| entries.get(name).copied().ok_or(Errno::ENOENT));
        match found.map(|ino| disk.attr(ino)) {
            Ok(Some(attr)) => reply.entry(&NO_CACHE, &attr, Generation(0)),
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.disk().attr(ino.0) {
            Some(attr) => reply.attr(&NO_CACHE, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut disk = self.disk();
        if let Some(Err(e)) = size.map(|size| disk.resize(ino.0, size as usize)) {
            return reply.error(e);
        }
        match disk.attr(ino.0) {
            Some(attr) => reply.attr(&NO_CACHE, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.disk().add(parent.0, name, empty_file()));
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let dir = Node::Dir {
            entries: BTreeMap::new(),
            durable: BTreeMap::new(),
        };
        reply_entry(reply, self.disk().add(parent.0, name, dir));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.disk().entries(parent.0).map(|e| e.remove(name)) {
            Ok(Some(_)) => reply.ok(),
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.unlink(req, parent, name, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut disk = self.disk();
        let moved = disk
            .entries(parent.0)
            .and_then(|e| e.remove(name).ok_or(Errno::ENOENT));
        match moved.and_then(|ino| Ok(disk.entries(newparent.0)?.insert(newname.to_owned(), ino))) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.disk().add(parent.0, name, empty_file()) {
            Ok(attr) => reply.created(
                &NO_CACHE,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut disk = self.disk();
        match disk.file(ino.0) {
            Ok((data, _)) => {
                let start = (offset as usize).min(data.len());
                let end = (start + size as usize).min(data.len());
                reply.data(&data[start..end]);
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.disk().write(ino.0, offset as usize, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.disk().sync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut disk = self.disk();
        let listing: Vec<(u64, FileType, OsString)> = match disk.entries(ino.0) {
            Ok(entries) => entries
                .iter()
                .map(|(name, &child)| (child, name.clone()))
                .collect::<Vec<_>>()
                .into_iter()
                .map(|(child, name)| {
                    let kind = match disk.nodes.get(&child) {
                        Some(Node::Dir { .. }) => FileType::Directory,
                        _ => FileType::RegularFile,
                    };
                    (child, kind, name)
                })
                .collect(),
            Err(e) => return reply.error(e),
        };
        let dots = [
            (ino.0, FileType::Directory, OsString::from(".")),
            (ino.0, FileType::Directory, OsString::from("..")),
        ];
        for (i, (child, kind, name)) in dots
            .into_iter()
            .chain(listing)
            .enumerate()
            .skip(offset as usize)
        {
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.fsync(req, ino, fh, datasync, reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, 4096, 255, 4096);
    }
}

fn reply_entry(reply: ReplyEntry, added: Result<FileAttr, Errno>) {
    match added {
        Ok(attr) => reply.entry(&NO_CACHE, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn empty_file() -> Node {
    Node::File {
        data: Vec::new(),
        durable: Vec::new(),
        dirty: Vec::new(),
    }
}
