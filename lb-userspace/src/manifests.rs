//! Reading Kubernetes manifests: files or directories of YAML/JSON, many documents each.
//!
//! Objects are decoded into the community API types (k8s-openapi). Every error names the
//! file, the document (1-based, as an editor would count `---` sections) and, for type
//! errors, the field path.

use std::{
    collections::HashMap,
    fmt,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use k8s_openapi::api::{
    core::v1::{Endpoints, Pod, Service},
    discovery::v1::EndpointSlice,
};
use serde::Deserialize;

/// An object the agent understands. Shared, so a [`ManifestCache`] hands out the objects
/// of unchanged files without copying them.
#[derive(Clone, Debug)]
pub enum Object {
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    Endpoints(Arc<Endpoints>),
    Pod(Arc<Pod>),
}

/// Where a document came from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    pub file: PathBuf,
    /// 1-based document number in the file.
    pub doc: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file.display(), self.doc)
    }
}

#[derive(Clone, Debug)]
pub struct Located {
    pub origin: Origin,
    pub object: Object,
}

/// An input problem, with where it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{reason}", origin_prefix(.file, *.doc), field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct ManifestError {
    pub file: PathBuf,
    pub doc: Option<usize>,
    /// Field path such as `spec.ports[0].nodePort`.
    pub field: Option<String>,
    pub reason: String,
}

fn origin_prefix(file: &Path, doc: Option<usize>) -> String {
    match doc {
        Some(d) => format!("{}: document {d}: ", file.display()),
        None => format!("{}: ", file.display()),
    }
}

impl ManifestError {
    pub fn at(origin: &Origin, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            file: origin.file.clone(),
            doc: Some(origin.doc),
            field: Some(field.into()),
            reason: reason.into(),
        }
    }
}

/// What reading a set of inputs produced: everything valid, and every problem.
#[derive(Debug, Default)]
pub struct Loaded {
    pub objects: Vec<Located>,
    pub errors: Vec<ManifestError>,
    /// Documents of kinds the agent does not handle (`kind` and where), for a log line.
    pub skipped: Vec<(String, Origin)>,
}

/// Reads a file, or every `*.yaml`, `*.yml` and `*.json` file in a directory (sorted, not
/// recursive).
pub fn load_path(path: &Path) -> Loaded {
    ManifestCache::default().load(path)
}

/// Parsed files kept between syncs: a file whose inode, size and modification time are
/// unchanged is neither read nor parsed again, so one edited file among thousands costs
/// the parse of that file only. Modification times are coarse (a clock tick), so a file
/// modified in the last [`RACY_WINDOW`] is not trusted to the cache yet: a same-size
/// rewrite within the same tick would look unchanged.
#[derive(Default)]
pub struct ManifestCache {
    files: HashMap<PathBuf, (FileStamp, Loaded)>,
    /// The last `load` could not list `path` (so an unchanged failure is "current").
    listing_failed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    fn of(file: &Path) -> Option<Self> {
        let meta = std::fs::metadata(file).ok()?;
        Some(Self { inode: meta.ino(), len: meta.len(), modified: meta.modified().ok() })
    }
}

const RACY_WINDOW: std::time::Duration = std::time::Duration::from_secs(2);

impl ManifestCache {
    /// Like [`load_path`], re-reading only files that changed since the last call.
    pub fn load(&mut self, path: &Path) -> Loaded {
        let files = match manifest_files(path) {
            Ok(f) => f,
            Err(e) => {
                self.files.clear();
                self.listing_failed = true;
                return Loaded {
                    errors: vec![unreadable(path, e.to_string())],
                    ..Loaded::default()
                };
            }
        };
        self.listing_failed = false;
        let present: std::collections::HashSet<&PathBuf> = files.iter().collect();
        self.files.retain(|f, _| present.contains(f));
        let mut loaded = Loaded::default();
        for file in files {
            let stamp = FileStamp::of(&file);
            let cached = self.files.get(&file).filter(|(s, _)| Some(*s) == stamp);
            let parsed = match cached {
                Some((_, parsed)) => parsed,
                None => {
                    let parsed = load_file(&file);
                    let settled = |s: &FileStamp| {
                        s.modified
                            .and_then(|m| SystemTime::now().duration_since(m).ok())
                            .is_some_and(|age| age > RACY_WINDOW)
                    };
                    match stamp.filter(settled) {
                        Some(stamp) => {
                            &self.files.entry(file).insert_entry((stamp, parsed)).into_mut().1
                        }
                        None => {
                            self.files.remove(&file);
                            loaded.extend(&parsed);
                            continue;
                        }
                    }
                }
            };
            loaded.extend(parsed);
        }
        loaded
    }
}

impl ManifestCache {
    /// Whether `load(path)` would parse nothing again: the same files, each cached with
    /// its current stamp (a file still in the racy window is never cached, so not current).
    pub fn is_current(&self, path: &Path) -> bool {
        match manifest_files(path) {
            Err(_) => self.listing_failed,
            Ok(files) => {
                !self.listing_failed
                    && files.len() == self.files.len()
                    && files.iter().all(|f| {
                        self.files.get(f).is_some_and(|(s, _)| Some(*s) == FileStamp::of(f))
                    })
            }
        }
    }
}

impl Loaded {
    fn extend(&mut self, other: &Loaded) {
        self.objects.extend_from_slice(&other.objects);
        self.errors.extend_from_slice(&other.errors);
        self.skipped.extend_from_slice(&other.skipped);
    }
}

fn unreadable(file: &Path, reason: String) -> ManifestError {
    ManifestError { file: file.to_owned(), doc: None, field: None, reason }
}

fn load_file(file: &Path) -> Loaded {
    let mut loaded = Loaded::default();
    match std::fs::read_to_string(file) {
        Ok(text) => load_text(file, &text, &mut loaded),
        Err(e) => loaded.errors.push(unreadable(file, format!("cannot read: {e}"))),
    }
    loaded
}

/// The manifest files `path` names, in a stable order.
pub fn manifest_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        std::fs::metadata(path)?;
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(Result::ok)
        .filter(|e| {
            let manifest = Path::new(&e.file_name())
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
            // The directory entry's type needs no stat; a symlink is followed.
            manifest
                && e.file_type()
                    .is_ok_and(|t| t.is_file() || (t.is_symlink() && e.path().is_file()))
        })
        .map(|e| e.path())
        .collect();
    // Byte order: as stable as Path's component order and far cheaper for 10,000 names.
    files.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    Ok(files)
}

/// Parses one file's text (YAML or JSON; JSON is read as YAML, its superset).
pub fn load_text(file: &Path, text: &str, out: &mut Loaded) {
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let origin = Origin { file: file.to_owned(), doc: i + 1 };
        let value = match serde_yaml_ng::Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                out.errors.push(ManifestError {
                    file: file.to_owned(),
                    doc: Some(i + 1),
                    field: None,
                    reason: format!("not valid YAML: {e}"),
                });
                // The parser cannot resynchronise after a syntax error.
                return;
            }
        };
        decode_value(value, &origin, "", out);
    }
}

fn decode_value(value: serde_yaml_ng::Value, origin: &Origin, prefix: &str, out: &mut Loaded) {
    if value.is_null() {
        return; // an empty document
    }
    let str_field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    let (Some(api_version), Some(kind)) = (str_field("apiVersion"), str_field("kind")) else {
        out.errors.push(ManifestError::at(
            origin,
            format!("{prefix}kind"),
            "a Kubernetes object needs apiVersion and kind",
        ));
        return;
    };
    let object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Service") => {
            typed(value, origin, prefix, out).map(|s| Object::Service(Arc::new(s)))
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            typed(value, origin, prefix, out).map(|s| Object::EndpointSlice(Arc::new(s)))
        }
        ("v1", "Endpoints") => {
            typed(value, origin, prefix, out).map(|s| Object::Endpoints(Arc::new(s)))
        }
        ("v1", "Pod") => typed(value, origin, prefix, out).map(|s| Object::Pod(Arc::new(s))),
        (_, "List") => {
            let items =
                value.get("items").and_then(|v| v.as_sequence()).cloned().unwrap_or_default();
            for (i, item) in items.into_iter().enumerate() {
                decode_value(item, origin, &format!("{prefix}items[{i}]."), out);
            }
            None
        }
        (_, "Service" | "EndpointSlice" | "Endpoints" | "Pod") => {
            out.errors.push(ManifestError::at(
                origin,
                format!("{prefix}apiVersion"),
                format!("{kind} with unsupported apiVersion {api_version:?}"),
            ));
            None
        }
        _ => {
            out.skipped.push((kind, origin.clone()));
            None
        }
    };
    if let Some(object) = object {
        out.objects.push(Located { origin: origin.clone(), object });
    }
}

fn typed<T: serde::de::DeserializeOwned>(
    value: serde_yaml_ng::Value,
    origin: &Origin,
    prefix: &str,
    out: &mut Loaded,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(t) => Some(t),
        Err(e) => {
            let path = e.path().to_string();
            out.errors.push(ManifestError::at(
                origin,
                format!("{prefix}{}", if path == "." { String::new() } else { path }),
                e.into_inner().to_string(),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Loaded {
        let mut out = Loaded::default();
        load_text(Path::new("svc.yaml"), text, &mut out);
        out
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("lb-manifests-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("scratch dir");
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn service(name: &str, port: u16) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: {port}}}]}}\n"
        )
    }

    fn port_of(loaded: &Loaded, name: &str) -> Option<i32> {
        loaded.objects.iter().find_map(|o| match &o.object {
            Object::Service(s) if s.metadata.name.as_deref() == Some(name) => {
                Some(s.spec.as_ref()?.ports.as_ref()?[0].port)
            }
            _ => None,
        })
    }

    fn service_arc(loaded: &Loaded, name: &str) -> Arc<Service> {
        loaded
            .objects
            .iter()
            .find_map(|o| match &o.object {
                Object::Service(s) if s.metadata.name.as_deref() == Some(name) => Some(s.clone()),
                _ => None,
            })
            .expect("service present")
    }

    #[test]
    fn cache_reparses_only_changed_files_and_forgets_removed_ones() {
        let dir = Scratch::new("cache");
        let settled = |name: &str, text: String| {
            let path = dir.0.join(name);
            std::fs::write(&path, text).expect("write");
            let past = SystemTime::now() - std::time::Duration::from_secs(60);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(past))
                .expect("set mtime");
        };
        settled("a.yaml", service("a", 80));
        std::fs::write(dir.0.join("b.yaml"), service("b", 81)).expect("write");
        let mut cache = ManifestCache::default();
        let first = cache.load(&dir.0);
        assert_eq!((port_of(&first, "a"), port_of(&first, "b")), (Some(80), Some(81)));

        assert_eq!(cache.files.len(), 1, "a file written just now is not cached yet");
        // Same size, same inode, within the same clock tick: only the racy rule sees it.
        std::fs::write(dir.0.join("b.yaml"), service("b", 82)).expect("write");
        let second = cache.load(&dir.0);
        assert!(
            Arc::ptr_eq(&service_arc(&first, "a"), &service_arc(&second, "a")),
            "the unchanged file was parsed again"
        );
        assert_eq!(port_of(&second, "b"), Some(82), "the changed file was not re-read");

        std::fs::remove_file(dir.0.join("a.yaml")).expect("remove");
        std::fs::write(dir.0.join("b.yaml"), "kind: [").expect("write");
        let third = cache.load(&dir.0);
        assert_eq!(port_of(&third, "a"), None, "a removed file's objects stay gone");
        assert_eq!(third.errors.len(), 1, "{:?}", third.errors);
        assert_eq!(third.errors[0].file, dir.0.join("b.yaml"));
        assert!(cache.files.is_empty(), "the removed file is dropped from the cache");
    }

    #[test]
    fn cache_is_current_until_a_file_changes_appears_or_goes() {
        let dir = Scratch::new("current");
        let settled = |name: &str, text: String, age_s: u64| {
            let path = dir.0.join(name);
            std::fs::write(&path, text).expect("write");
            let past = SystemTime::now() - std::time::Duration::from_secs(age_s);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(past))
                .expect("set mtime");
        };
        settled("a.yaml", service("a", 80), 60);
        let mut cache = ManifestCache::default();
        assert!(!cache.is_current(&dir.0), "nothing loaded yet");
        cache.load(&dir.0);
        assert!(cache.is_current(&dir.0));

        settled("a.yaml", service("a", 81), 30);
        assert!(!cache.is_current(&dir.0), "a changed file");
        cache.load(&dir.0);
        assert!(cache.is_current(&dir.0));

        std::fs::write(dir.0.join("b.yaml"), service("b", 80)).expect("write");
        assert!(!cache.is_current(&dir.0), "a new file");
        cache.load(&dir.0);
        assert!(!cache.is_current(&dir.0), "a file written just now stays uncached");

        std::fs::remove_file(dir.0.join("b.yaml")).expect("remove");
        cache.load(&dir.0);
        assert!(cache.is_current(&dir.0));
        std::fs::remove_file(dir.0.join("a.yaml")).expect("remove");
        assert!(!cache.is_current(&dir.0), "a removed file");
    }

    #[test]
    fn multi_document_yaml_and_json() {
        let out = load(
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n---\n\
             {\"apiVersion\": \"discovery.k8s.io/v1\", \"kind\": \"EndpointSlice\", \"metadata\": {\"name\": \"a-1\"}, \"addressType\": \"IPv4\", \"endpoints\": []}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: x}\n",
        );
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.objects.len(), 2);
        assert!(matches!(out.objects[0].object, Object::Service(_)));
        assert!(matches!(out.objects[1].object, Object::EndpointSlice(_)));
        assert_eq!(out.objects[1].origin.doc, 2);
        assert_eq!(
            out.skipped,
            vec![("Ingress".into(), Origin { file: "svc.yaml".into(), doc: 3 })]
        );
    }

    #[test]
    fn type_errors_name_file_document_and_field() {
        let out = load(
            "apiVersion: v1\nkind: Service\nmetadata: {name: ok}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec:\n  ports:\n  - port: eighty\n",
        );
        assert_eq!(out.objects.len(), 1, "the valid document still loads");
        let e = &out.errors[0];
        assert_eq!((e.doc, e.field.as_deref()), (Some(2), Some("spec.ports[0].port")));
        assert!(e.to_string().starts_with("svc.yaml: document 2: spec.ports[0].port: "), "{e}");
    }

    #[test]
    fn yaml_syntax_errors_and_missing_kind() {
        let out = load("apiVersion: v1\nkind: Service\nmetadata: {name: [unclosed\n");
        assert!(out.errors[0].reason.contains("not valid YAML"), "{:?}", out.errors);
        let out = load("metadata: {name: x}\n");
        assert_eq!(out.errors[0].field.as_deref(), Some("kind"));
    }

    #[test]
    fn lists_are_unpacked() {
        let out = load(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: p}\n",
        );
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        assert_eq!(out.objects.len(), 2);
    }
}
