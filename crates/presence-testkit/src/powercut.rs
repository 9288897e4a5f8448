//! A file system that forgets what was never synced: a power cut for the tests.
//!
//! [`PowerCut::mount`] serves, through FUSE, the tree of a real *backing* directory. Every change made
//! through the mount (written bytes, truncations, new directory entries, removals, renames, links) is kept
//! in memory only, until the call that makes it durable on a real disk:
//! - `fsync`/`fdatasync` of a file makes that file's bytes and size durable;
//! - `fsync` of a directory makes that directory's entries durable: names added, removed or renamed in it.
//!
//! Only then is the change written to the backing directory, which therefore holds, at every moment, exactly
//! what a disk would still have after losing power. [`PowerCut::cut`] is the power cut: it unmounts and
//! drops everything in memory. Mounting the backing directory again is the reboot.
//!
//! The rules are those of a careful reading of POSIX, not of one file system's luck: a file created and
//! fsynced whose directory was never fsynced is gone after the cut (its name was never durable), and a name
//! made durable before its file's bytes were leaves an empty file (or the bytes as of its last fsync).
//! Metadata other than the size (times, a later `chmod`) is not modelled: a file keeps the mode it was
//! created with.
//!
//! Needs `/dev/fuse` and root (the tests mount with mount(2), as CI runs them).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// Pages of this size are what a sync copies.
const PAGE: u64 = 4096;

/// No attribute or entry is cached by the kernel: every look-up asks this file system.
const TTL: Duration = Duration::ZERO;

/// What the cuts so far have thrown away, and the syncs that kept the rest.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Losses {
    /// `fsync`/`fdatasync` calls on files.
    pub file_syncs: u64,
    /// `fsync` calls on directories.
    pub directory_syncs: u64,
    /// Bytes written but never synced, dropped by the cut (counted in pages).
    pub unsynced_bytes: u64,
    /// Files whose size changed without a sync, dropped by the cut.
    pub unsynced_sizes: u64,
    /// Directories whose entries changed without a sync, dropped by the cut.
    pub unsynced_directories: u64,
}

impl Losses {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: Losses) {
        self.file_syncs += other.file_syncs;
        self.directory_syncs += other.directory_syncs;
        self.unsynced_bytes += other.unsynced_bytes;
        self.unsynced_sizes += other.unsynced_sizes;
        self.unsynced_directories += other.unsynced_directories;
    }
}

/// A mounted power-cut file system.
pub struct PowerCut {
    session: Option<BackgroundSession>,
    tree: Arc<Mutex<Tree>>,
}

impl PowerCut {
    /// Mounts the durable tree of `backing` at `mountpoint` (both existing directories).
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<PowerCut> {
        let tree = Arc::new(Mutex::new(Tree::load(backing)?));
        let mut config = Config::default();
        // Mounted with mount(2) and unmounted with umount(2) directly: no `fusermount3` helper, whose
        // auto-unmount would leave the unmount to a process of its own and return before it is done.
        config.mount_options = vec![MountOption::FSName("presenced-powercut".into())];
        let session = fuser::spawn_mount(Mounted(Arc::clone(&tree)), mountpoint, &config)?;
        Ok(PowerCut { session: Some(session), tree })
    }

    /// Syncs counted so far on this mount.
    pub fn syncs(&self) -> Losses {
        lock(&self.tree).losses
    }

    /// Cuts the power: unmounts (every process using the mount must have exited) and forgets everything
    /// that was not synced. Returns what was forgotten. The backing directory is what a restart finds.
    pub fn cut(mut self) -> io::Result<Losses> {
        if let Some(session) = self.session.take() {
            unmount(session)?;
        }
        let tree = lock(&self.tree);
        Ok(tree.unsynced())
    }
}

impl Drop for PowerCut {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = unmount(session);
        }
    }
}

/// Unmounts and waits for the session's thread. The kernel may end the session by aborting the
/// connection rather than with a last request: that end is as normal as the other.
fn unmount(session: BackgroundSession) -> io::Result<()> {
    match session.umount_and_join() {
        Err(error) if error.kind() == io::ErrorKind::ConnectionAborted => Ok(()),
        ended => ended,
    }
}

fn lock(tree: &Mutex<Tree>) -> MutexGuard<'_, Tree> {
    tree.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A file's bytes as the programs see them, and as a disk would keep them.
#[derive(Debug)]
struct FileContent {
    data: Vec<u8>,
    synced: Vec<u8>,
    /// Pages written since the last sync.
    dirty: BTreeSet<u64>,
}

#[derive(Debug)]
enum Content {
    File(FileContent),
    Directory { entries: BTreeMap<OsString, u64>, synced: BTreeMap<OsString, u64> },
}

#[derive(Debug)]
struct Node {
    content: Content,
    /// Permission bits, as created.
    perm: u16,
    /// Names in the current tree.
    links: u32,
    modified: SystemTime,
}

#[derive(Debug)]
struct Tree {
    backing: PathBuf,
    /// Every node ever seen on this mount: a node stays while a durable name may still refer to it.
    nodes: HashMap<u64, Node>,
    next: u64,
    uid: u32,
    gid: u32,
    losses: Losses,
}

impl Tree {
    fn load(backing: &Path) -> io::Result<Tree> {
        let metadata = std::fs::metadata(backing)?;
        let mut tree = Tree {
            backing: backing.to_owned(),
            nodes: HashMap::new(),
            next: INodeNo::ROOT.0 + 1,
            uid: metadata.uid(),
            gid: metadata.gid(),
            losses: Losses::default(),
        };
        tree.load_directory(INodeNo::ROOT.0, backing)?;
        Ok(tree)
    }

    fn load_directory(&mut self, ino: u64, path: &Path) -> io::Result<()> {
        let mut entries = BTreeMap::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let metadata = entry.metadata()?;
            let child = self.next;
            self.next += 1;
            if metadata.is_dir() {
                self.load_directory(child, &entry.path())?;
            } else {
                let data = std::fs::read(entry.path())?;
                let content = FileContent { synced: data.clone(), data, dirty: BTreeSet::new() };
                self.nodes.insert(child, node(Content::File(content), metadata.permissions().mode()));
            }
            entries.insert(entry.file_name(), child);
        }
        let perm = std::fs::metadata(path)?.permissions().mode();
        self.nodes.insert(ino, node(Content::Directory { synced: entries.clone(), entries }, perm));
        if let Some(Content::Directory { entries, .. }) = self.nodes.get(&ino).map(|node| &node.content) {
            let children: Vec<u64> = entries.values().copied().collect();
            for child in children {
                if let Some(node) = self.nodes.get_mut(&child) {
                    node.links += 1;
                }
            }
        }
        Ok(())
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let node = self.nodes.get(&ino).ok_or(Errno::ENOENT)?;
        let (kind, size) = match &node.content {
            Content::File(file) => (FileType::RegularFile, file.data.len() as u64),
            Content::Directory { entries, .. } => (FileType::Directory, entries.len() as u64),
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: node.modified,
            mtime: node.modified,
            ctime: node.modified,
            crtime: node.modified,
            kind,
            perm: node.perm,
            nlink: node.links.max(1),
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        })
    }

    fn entries(&self, ino: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get(&ino).map(|node| &node.content) {
            Some(Content::Directory { entries, .. }) => Ok(entries),
            Some(Content::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn entries_mut(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        let node = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        node.modified = SystemTime::now();
        match &mut node.content {
            Content::Directory { entries, .. } => Ok(entries),
            Content::File(_) => Err(Errno::ENOTDIR),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut FileContent, Errno> {
        let node = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        node.modified = SystemTime::now();
        match &mut node.content {
            Content::File(file) => Ok(file),
            Content::Directory { .. } => Err(Errno::EISDIR),
        }
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.entries(parent)?.get(name).copied().ok_or(Errno::ENOENT)
    }

    /// Adds a new node named `name` in `parent`.
    fn add(&mut self, parent: u64, name: &OsStr, content: Content, perm: u32) -> Result<u64, Errno> {
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next;
        self.next += 1;
        let mut created = node(content, perm);
        created.links = 1;
        self.nodes.insert(ino, created);
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        Ok(ino)
    }

    /// Removes the name `name` from `parent` (the node stays: a durable name may still refer to it).
    fn remove(&mut self, parent: u64, name: &OsStr, directory: bool) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        match (&self.nodes[&ino].content, directory) {
            (Content::Directory { entries, .. }, true) if !entries.is_empty() => return Err(Errno::ENOTEMPTY),
            (Content::Directory { .. }, false) => return Err(Errno::EISDIR),
            (Content::File(_), true) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        self.entries_mut(parent)?.remove(name);
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.links = node.links.saturating_sub(1);
        }
        Ok(())
    }

    fn write(&mut self, ino: u64, offset: u64, bytes: &[u8]) -> Result<u32, Errno> {
        let file = self.file_mut(ino)?;
        let end = offset.checked_add(bytes.len() as u64).ok_or(Errno::EFBIG)?;
        let end_index = usize::try_from(end).map_err(|_| Errno::EFBIG)?;
        if end_index > file.data.len() {
            mark(&mut file.dirty, file.data.len() as u64, end);
            file.data.resize(end_index, 0);
        }
        file.data[offset as usize..end_index].copy_from_slice(bytes);
        mark(&mut file.dirty, offset, end);
        u32::try_from(bytes.len()).map_err(|_| Errno::EINVAL)
    }

    fn resize(&mut self, ino: u64, size: u64) -> Result<(), Errno> {
        let file = self.file_mut(ino)?;
        let size_index = usize::try_from(size).map_err(|_| Errno::EFBIG)?;
        let old = file.data.len() as u64;
        mark(&mut file.dirty, old.min(size), old.max(size));
        file.data.resize(size_index, 0);
        Ok(())
    }

    /// The backing paths at which `ino` is durable, found by walking the durable tree from the root.
    fn durable_paths(&self, ino: u64) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![(INodeNo::ROOT.0, self.backing.clone())];
        while let Some((at, path)) = stack.pop() {
            if at == ino {
                found.push(path.clone());
            }
            if let Some(Content::Directory { synced, .. }) = self.nodes.get(&at).map(|node| &node.content) {
                stack.extend(synced.iter().map(|(name, child)| (*child, path.join(name))));
            }
        }
        found
    }

    fn sync_file(&mut self, ino: u64) -> io::Result<()> {
        let paths = self.durable_paths(ino);
        self.losses.file_syncs += 1;
        let Some(Node { content: Content::File(file), .. }) = self.nodes.get_mut(&ino) else {
            return Ok(());
        };
        let length = file.data.len();
        file.synced.resize(length, 0);
        let pages = std::mem::take(&mut file.dirty);
        let ranges: Vec<(usize, usize)> = pages
            .into_iter()
            .map(|page| (page * PAGE) as usize)
            .filter(|start| *start < length)
            .map(|start| (start, (start + PAGE as usize).min(length)))
            .collect();
        for (start, end) in &ranges {
            file.synced[*start..*end].copy_from_slice(&file.data[*start..*end]);
        }
        for path in paths {
            let backing = std::fs::OpenOptions::new().write(true).open(&path)?;
            for (start, end) in &ranges {
                backing.write_all_at(&file.synced[*start..*end], *start as u64)?;
            }
            backing.set_len(length as u64)?;
        }
        Ok(())
    }

    fn sync_directory(&mut self, ino: u64) -> io::Result<()> {
        let paths = self.durable_paths(ino);
        self.losses.directory_syncs += 1;
        let Some(Node { content: Content::Directory { entries, synced }, .. }) = self.nodes.get(&ino) else {
            return Ok(());
        };
        let (now, before) = (entries.clone(), synced.clone());
        if let Some(Node { content: Content::Directory { synced, .. }, .. }) = self.nodes.get_mut(&ino) {
            synced.clone_from(&now);
        }
        for path in paths {
            for (name, child) in &before {
                if now.get(name) != Some(child) {
                    remove_backing(&path.join(name))?;
                }
            }
            for (name, child) in &now {
                if before.get(name) != Some(child) {
                    self.materialize(*child, &path.join(name))?;
                }
            }
        }
        Ok(())
    }

    /// Writes the durable state of `ino` at `path` in the backing directory.
    fn materialize(&self, ino: u64, path: &Path) -> io::Result<()> {
        let Some(node) = self.nodes.get(&ino) else { return Ok(()) };
        remove_backing(path)?;
        match &node.content {
            Content::File(file) => {
                std::fs::write(path, &file.synced)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(u32::from(node.perm)))?;
            }
            Content::Directory { synced, .. } => {
                std::fs::create_dir(path)?;
                for (name, child) in synced {
                    self.materialize(*child, &path.join(name))?;
                }
            }
        }
        Ok(())
    }

    /// What a cut now would lose.
    fn unsynced(&self) -> Losses {
        let mut losses = self.losses;
        for node in self.nodes.values() {
            match &node.content {
                Content::File(file) => {
                    let length = file.data.len() as u64;
                    losses.unsynced_bytes +=
                        file.dirty.iter().filter(|page| **page * PAGE < length).count() as u64 * PAGE;
                    losses.unsynced_sizes += u64::from(file.synced.len() != file.data.len());
                }
                Content::Directory { entries, synced } => {
                    losses.unsynced_directories += u64::from(entries != synced);
                }
            }
        }
        losses
    }
}

fn node(content: Content, mode: u32) -> Node {
    Node { content, perm: (mode & 0o7777) as u16, links: 0, modified: SystemTime::now() }
}

/// Marks the pages of `[start, end)` written.
fn mark(dirty: &mut BTreeSet<u64>, start: u64, end: u64) {
    if end > start {
        dirty.extend(start / PAGE..=(end - 1) / PAGE);
    }
}

fn remove_backing(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// The file system as FUSE calls it.
struct Mounted(Arc<Mutex<Tree>>);

impl Mounted {
    fn tree(&self) -> MutexGuard<'_, Tree> {
        lock(&self.0)
    }
}

fn reply_entry(reply: ReplyEntry, tree: &Tree, ino: Result<u64, Errno>) {
    match ino.and_then(|ino| tree.attr(ino)) {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(error) => reply.error(error),
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(error) => reply.error(error),
    }
}

impl Filesystem for Mounted {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let tree = self.tree();
        reply_entry(reply, &tree, tree.lookup(parent.0, name));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree().attr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(error) => reply.error(error),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
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
        let mut tree = self.tree();
        let changed = (|| {
            if let Some(size) = size {
                tree.resize(ino.0, size)?;
            }
            if let Some(mode) = mode {
                let node = tree.nodes.get_mut(&ino.0).ok_or(Errno::ENOENT)?;
                node.perm = (mode & 0o7777) as u16;
            }
            tree.attr(ino.0)
        })();
        match changed {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(error) => reply.error(error),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let mut tree = self.tree();
        let content = Content::Directory { entries: BTreeMap::new(), synced: BTreeMap::new() };
        let ino = tree.add(parent.0, name, content, mode & !umask);
        reply_entry(reply, &tree, ino);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.tree().remove(parent.0, name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.tree().remove(parent.0, name, true));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut tree = self.tree();
        let renamed = (|| {
            if flags.contains(RenameFlags::RENAME_EXCHANGE) || flags.contains(RenameFlags::RENAME_WHITEOUT) {
                return Err(Errno::EINVAL);
            }
            let ino = tree.lookup(parent.0, name)?;
            if let Ok(existing) = tree.lookup(newparent.0, newname) {
                if existing == ino {
                    return Ok(());
                }
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                let directory = matches!(tree.nodes[&existing].content, Content::Directory { .. });
                tree.remove(newparent.0, newname, directory)?;
            }
            tree.entries_mut(parent.0)?.remove(name);
            tree.entries_mut(newparent.0)?.insert(newname.to_owned(), ino);
            Ok(())
        })();
        reply_empty(reply, renamed);
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let mut tree = self.tree();
        let linked = (|| {
            if matches!(tree.nodes.get(&ino.0).ok_or(Errno::ENOENT)?.content, Content::Directory { .. }) {
                return Err(Errno::EPERM);
            }
            if tree.entries(newparent.0)?.contains_key(newname) {
                return Err(Errno::EEXIST);
            }
            tree.entries_mut(newparent.0)?.insert(newname.to_owned(), ino.0);
            if let Some(node) = tree.nodes.get_mut(&ino.0) {
                node.links += 1;
            }
            Ok(ino.0)
        })();
        reply_entry(reply, &tree, linked);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.tree().attr(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(error) => reply.error(error),
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
        let tree = self.tree();
        match tree.nodes.get(&ino.0).map(|node| &node.content) {
            Some(Content::File(file)) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(file.data.len());
                let end = start.saturating_add(size as usize).min(file.data.len());
                reply.data(&file.data[start..end]);
            }
            Some(Content::Directory { .. }) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
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
        match self.tree().write(ino.0, offset, data) {
            Ok(written) => reply.written(written),
            Err(error) => reply.error(error),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // Closing a file makes nothing durable.
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply_empty(reply, self.tree().sync_file(ino.0).map_err(Errno::from));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.tree().entries(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(error) => reply.error(error),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let tree = self.tree();
        let entries = match tree.entries(ino.0) {
            Ok(entries) => entries,
            Err(error) => return reply.error(error),
        };
        let listed = [(ino.0, FileType::Directory, OsString::from(".")), (ino.0, FileType::Directory, "..".into())];
        let children = entries.iter().map(|(name, child)| {
            let kind = match tree.nodes.get(child).map(|node| &node.content) {
                Some(Content::Directory { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            (*child, kind, name.clone())
        });
        for (index, (child, kind, name)) in listed.into_iter().chain(children).enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), index as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply_empty(reply, self.tree().sync_directory(ino.0).map_err(Errno::from));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, PAGE as u32, 255, PAGE as u32);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply_empty(reply, self.tree().attr(ino.0).map(|_| ()));
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        const O_EXCL: i32 = 0o200;
        let mut tree = self.tree();
        let created = match tree.lookup(parent.0, name) {
            Ok(_) if flags & O_EXCL != 0 => Err(Errno::EEXIST),
            Ok(existing) => Ok(existing),
            Err(_) => {
                let content = FileContent { data: Vec::new(), synced: Vec::new(), dirty: BTreeSet::new() };
                tree.add(parent.0, name, Content::File(content), mode & !umask)
            }
        };
        match created.and_then(|ino| tree.attr(ino)) {
            Ok(attr) => reply.created(&TTL, &attr, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(error) => reply.error(error),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut tree = self.tree();
        let allocated = (|| {
            if mode != 0 {
                return Err(Errno::EOPNOTSUPP);
            }
            let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
            let size = match tree.nodes.get(&ino.0).map(|node| &node.content) {
                Some(Content::File(file)) => file.data.len() as u64,
                _ => return Err(Errno::EINVAL),
            };
            if end > size {
                tree.resize(ino.0, end)?;
            }
            Ok(())
        })();
        reply_empty(reply, allocated);
    }
}
