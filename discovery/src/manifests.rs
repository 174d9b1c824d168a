//! The manifests source: Kubernetes objects from YAML files on disk (`--manifests`).
//!
//! Owns reading and re-reading files, and remembering each file's last good content: a
//! file that becomes unreadable or invalid YAML keeps contributing what it had, so one bad
//! edit never takes routes down. A reload parses only files whose [`FileVersion`] changed
//! (re-parsing 1,000 unchanged routes' YAML was ~80 % of a reload's cost). A file that
//! disappears from a watched directory is a deletion and its objects go. [`ManifestWatcher`] turns file-system events into debounced
//! "something changed" signals; it does not read files itself.
//!
//! Must not: translate objects into routes (that is [`crate::translate()`]) or touch the
//! proxy.

use crate::objects::{parse_manifest, ClusterObjects, ParsedManifest};
use crate::snapshot::Rejection;
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// A manifests problem that stops weir from starting.
#[derive(Debug, thiserror::Error)]
#[error("--manifests {path}: {reason}")]
pub struct ManifestError {
    pub path: String,
    pub reason: String,
}

/// What one (re)load found.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Files whose current content is loaded (parsed now or unchanged since last time).
    pub files: usize,
    /// Of those, files parsed by this load (new or changed).
    pub parsed: usize,
    /// Files that could not be read or parsed; their last good content was kept.
    pub failed: Vec<(PathBuf, String)>,
}

impl LoadReport {
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty()
    }
}

#[derive(Debug)]
pub struct ManifestSource {
    roots: Vec<PathBuf>,
    files: BTreeMap<PathBuf, LoadedFile>,
}

#[derive(Debug)]
struct LoadedFile {
    /// The version `parsed` was read from; `None` after a failed read (the content kept is
    /// an older version's), so the file is read again at the next reload.
    version: Option<FileVersion>,
    parsed: ParsedManifest,
}

/// What tells one version of a file from another without reading it. Any write changes
/// size, mtime or ctime; a rename over it (editors, `kubectl`-style tools, ConfigMap
/// symlink swaps) changes the inode. ctime is in the key because tools that preserve mtime
/// (`cp -p`, `touch -d`) cannot set it back.
///
/// File times come from the kernel's coarse clock (one tick, up to 10 ms): two writes of
/// the same size within one tick can carry the same times. A file changed less than
/// [`RACY_WINDOW`] ago therefore has no trusted version and is read at every reload until
/// it has been still for that long (git's "racily clean" rule).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileVersion {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

const RACY_WINDOW: Duration = Duration::from_secs(1);

impl FileVersion {
    fn of(path: &Path) -> Option<FileVersion> {
        let m = std::fs::metadata(path).ok()?;
        let changed = std::time::UNIX_EPOCH
            + Duration::new(
                u64::try_from(m.ctime()).ok()?,
                u32::try_from(m.ctime_nsec()).ok()?,
            );
        // An error here means a ctime in the future (clock skew): not trusted either.
        let age = std::time::SystemTime::now().duration_since(changed).ok()?;
        if age < RACY_WINDOW {
            return None;
        }
        Some(FileVersion {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// Reads a file, recording `version`, which must be taken before the read: a change during
/// the read then shows as a newer version at the next reload, never the other way round.
fn load_file(path: &Path, version: Option<FileVersion>) -> Result<LoadedFile, String> {
    let parsed = read_manifest(path)?;
    Ok(LoadedFile { version, parsed })
}

impl ManifestSource {
    /// Loads every manifest under `roots`, strictly: a missing path, an unreadable file or
    /// invalid YAML is an error here, because at start there is no last good config to
    /// fall back on and the operator is watching.
    pub fn open(roots: Vec<PathBuf>) -> Result<Self, ManifestError> {
        let mut files = BTreeMap::new();
        for root in &roots {
            let listed = list_manifest_files(root).map_err(|reason| ManifestError {
                path: root.display().to_string(),
                reason,
            })?;
            for file in listed {
                let loaded =
                    load_file(&file, FileVersion::of(&file)).map_err(|reason| ManifestError {
                        path: file.display().to_string(),
                        reason,
                    })?;
                files.insert(file, loaded);
            }
        }
        Ok(ManifestSource { roots, files })
    }

    /// Lists every root again and reads the files that are new or changed, keeping the
    /// last good content of files that fail. Files no longer listed are dropped.
    pub fn reload(&mut self) -> LoadReport {
        let mut report = LoadReport::default();
        let mut previous = std::mem::take(&mut self.files);
        let mut next = BTreeMap::new();
        for root in &self.roots {
            let listed = match list_manifest_files(root) {
                Ok(listed) => listed,
                Err(reason) => {
                    // The root itself is gone or unreadable: keep all it had.
                    report.failed.push((root.clone(), reason));
                    let kept: Vec<PathBuf> = previous
                        .keys()
                        .filter(|path| path.starts_with(root))
                        .cloned()
                        .collect();
                    for path in kept {
                        if let Some(loaded) = previous.remove(&path) {
                            next.insert(path, loaded);
                        }
                    }
                    continue;
                }
            };
            for file in listed {
                let old = previous.remove(&file);
                let version = FileVersion::of(&file);
                let unchanged = old
                    .as_ref()
                    .is_some_and(|old| version.is_some() && old.version == version);
                match old {
                    Some(old) if unchanged => {
                        report.files += 1;
                        next.insert(file, old);
                    }
                    old => match load_file(&file, version) {
                        Ok(loaded) => {
                            report.files += 1;
                            report.parsed += 1;
                            next.insert(file, loaded);
                        }
                        Err(reason) => {
                            if let Some(old) = old {
                                let kept = LoadedFile {
                                    version: None,
                                    parsed: old.parsed,
                                };
                                next.insert(file.clone(), kept);
                            }
                            report.failed.push((file, reason));
                        }
                    },
                }
            }
        }
        self.files = next;
        report
    }

    /// All objects of all files.
    pub fn objects(&self) -> ClusterObjects {
        let mut all = ClusterObjects::default();
        for loaded in self.files.values() {
            all.extend(loaded.parsed.objects.clone());
        }
        all
    }

    /// Documents rejected while parsing (not valid objects of a kind weir reads).
    pub fn rejected(&self) -> Vec<Rejection> {
        self.files
            .values()
            .flat_map(|loaded| loaded.parsed.rejected.iter().cloned())
            .collect()
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }
}

fn read_manifest(path: &Path) -> Result<ParsedManifest, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    parse_manifest(&text).map_err(|e| e.to_string())
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// The manifest files under `root`: the file itself, or every `*.yaml`, `*.yml` and
/// `*.json` below a directory, skipping hidden entries (editor swap files, and the
/// `..data` folders of mounted ConfigMaps, whose files are also linked from the top).
pub fn list_manifest_files(root: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(root).map_err(|e| format!("cannot read: {e}"))?;
    if meta.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry
                .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
                .path();
            if is_hidden(&path) {
                continue;
            }
            // Follows symlinks; a dangling one is skipped.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                pending.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Debounced change notifications for a set of manifest roots.
pub struct ManifestWatcher {
    _watcher: notify::RecommendedWatcher,
    events: mpsc::Receiver<()>,
    debounce: Duration,
}

impl std::fmt::Debug for ManifestWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestWatcher")
            .field("debounce", &self.debounce)
            .finish()
    }
}

impl ManifestWatcher {
    /// Watches directories recursively and files through their parent directory (so
    /// editors and ConfigMap updates that replace a file by renaming are seen).
    pub fn new(roots: &[PathBuf], debounce: Duration) -> Result<Self, String> {
        let (tx, events) = mpsc::channel(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let relevant = match &event {
                    Ok(e) => !e.kind.is_access(),
                    Err(_) => true, // a watch error: re-read to be safe
                };
                if relevant {
                    // Full channel = a change is already pending: coalesce.
                    let _ = tx.try_send(());
                }
            })
            .map_err(|e| format!("cannot watch files: {e}"))?;
        for root in roots {
            let (target, mode) = if root.is_dir() {
                (root.clone(), RecursiveMode::Recursive)
            } else {
                let parent = root
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf();
                (parent, RecursiveMode::NonRecursive)
            };
            watcher
                .watch(&target, mode)
                .map_err(|e| format!("cannot watch {}: {e}", target.display()))?;
        }
        Ok(ManifestWatcher {
            _watcher: watcher,
            events,
            debounce,
        })
    }

    /// Waits for a change, then for the files to settle: returns once no event arrived
    /// for `debounce`, or after `4 x debounce` of continuous writing. `None` when the
    /// watcher is gone.
    pub async fn changed(&mut self) -> Option<()> {
        self.events.recv().await?;
        let deadline = tokio::time::Instant::now() + self.debounce * 4;
        loop {
            let quiet = tokio::time::sleep(self.debounce);
            tokio::select! {
                _ = quiet => return Some(()),
                _ = tokio::time::sleep_until(deadline) => return Some(()),
                more = self.events.recv() => more?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INGRESS: &str = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: a}\nspec: {defaultBackend: {service: {name: s, port: {number: 80}}}}\n";

    #[test]
    fn directory_listing_skips_hidden_and_other_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.yaml"), INGRESS).expect("write");
        std::fs::write(dir.path().join("notes.txt"), "x").expect("write");
        std::fs::write(dir.path().join(".a.yaml.swp"), "x").expect("write");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/b.yml"), INGRESS).expect("write");
        let files = list_manifest_files(dir.path()).expect("list");
        let names: Vec<_> = files
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .expect("prefix")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names, vec!["a.yaml", "sub/b.yml"]);
    }

    #[test]
    fn open_is_strict() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        let err = ManifestSource::open(vec![missing]).expect_err("missing");
        assert!(err.to_string().contains("cannot read"), "{err}");
        std::fs::write(dir.path().join("bad.yaml"), "a: [").expect("write");
        let err = ManifestSource::open(vec![dir.path().to_path_buf()]).expect_err("bad");
        assert!(err.to_string().contains("bad.yaml"), "{err}");
        assert!(err.to_string().contains("invalid YAML"), "{err}");
    }

    #[test]
    fn reload_keeps_last_good_content_of_a_broken_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, INGRESS).expect("write");
        let mut source = ManifestSource::open(vec![dir.path().to_path_buf()]).expect("open");
        assert_eq!(source.objects().ingresses.len(), 1);
        std::fs::write(&file, "kind: [broken").expect("write");
        let report = source.reload();
        assert_eq!(report.failed.len(), 1);
        assert_eq!(source.objects().ingresses.len(), 1, "last good kept");
        std::fs::remove_file(&file).expect("rm");
        let report = source.reload();
        assert!(report.is_clean());
        assert_eq!(source.objects().ingresses.len(), 0, "deletion applies");
    }

    #[test]
    fn reload_parses_only_new_and_changed_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
        std::fs::write(&a, INGRESS).expect("write");
        std::fs::write(&b, INGRESS.replace("name: a", "name: b")).expect("write");
        // Files changed within RACY_WINDOW are read again whatever their times say.
        let mut source = ManifestSource::open(vec![dir.path().to_path_buf()]).expect("open");
        assert_eq!(source.reload().parsed, 2, "just written: not trusted yet");
        std::thread::sleep(RACY_WINDOW + Duration::from_millis(100));
        let mut source = ManifestSource::open(vec![dir.path().to_path_buf()]).expect("open");
        let report = source.reload();
        assert_eq!((report.files, report.parsed), (2, 0), "nothing changed");

        // Same length, written in place.
        std::fs::write(&b, INGRESS.replace("name: a", "name: c")).expect("write");
        let report = source.reload();
        assert_eq!((report.files, report.parsed), (2, 1), "a unchanged, b read");
        let names = |source: &ManifestSource| -> Vec<String> {
            let mut names: Vec<String> = (source.objects().ingresses.iter())
                .filter_map(|i| i.metadata.name.clone())
                .collect();
            names.sort();
            names
        };
        assert_eq!(names(&source), ["a", "c"]);

        // Renamed over (a new inode), as tools that write atomically do.
        let tmp = dir.path().join("b.tmp");
        std::fs::write(&tmp, INGRESS.replace("name: a", "name: d")).expect("write");
        std::fs::rename(&tmp, &b).expect("rename");
        assert_eq!(source.reload().parsed, 1);
        assert_eq!(names(&source), ["a", "d"]);

        // A failed read keeps the old content and is retried at the next reload.
        std::fs::write(&b, "kind: [broken").expect("write");
        assert_eq!(source.reload().failed.len(), 1);
        assert_eq!(source.reload().failed.len(), 1, "read again, still broken");
        std::fs::write(&b, INGRESS.replace("name: a", "name: e")).expect("write");
        assert!(source.reload().is_clean());
        assert_eq!(names(&source), ["a", "e"]);
    }

    #[test]
    fn reload_keeps_everything_when_a_root_file_vanishes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, INGRESS).expect("write");
        let mut source = ManifestSource::open(vec![file.clone()]).expect("open");
        std::fs::remove_file(&file).expect("rm");
        let report = source.reload();
        assert_eq!(report.failed.len(), 1);
        assert_eq!(source.objects().ingresses.len(), 1);
    }

    #[tokio::test]
    async fn watcher_reports_a_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, INGRESS).expect("write");
        let mut watcher =
            ManifestWatcher::new(std::slice::from_ref(&file), Duration::from_millis(50))
                .expect("watch");
        std::fs::write(&file, INGRESS.replace("name: a", "name: b")).expect("write");
        let changed = tokio::time::timeout(Duration::from_secs(5), watcher.changed()).await;
        assert_eq!(changed.ok().flatten(), Some(()));
    }

    #[tokio::test]
    async fn watcher_sees_changes_in_a_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, "x: 1\n").expect("write");
        let mut watcher =
            ManifestWatcher::new(&[dir.path().to_path_buf()], Duration::from_millis(50))
                .expect("watch");
        std::fs::write(&file, "x: 2\n").expect("write");
        let changed = tokio::time::timeout(Duration::from_secs(5), watcher.changed()).await;
        assert_eq!(changed.ok().flatten(), Some(()));
        std::fs::write(dir.path().join("new.yaml"), "x: 3\n").expect("write");
        let changed = tokio::time::timeout(Duration::from_secs(5), watcher.changed()).await;
        assert_eq!(changed.ok().flatten(), Some(()), "second change");
    }
}
