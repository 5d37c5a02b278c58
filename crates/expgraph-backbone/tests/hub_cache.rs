//! Hugging Face hub access, offline, against a fake cache laid out like the real one:
//! `models--org--name/{refs/main, snapshots/<commit>/<file> -> ../../blobs/<etag>, blobs/<etag>}`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

mod common;

use candle_core::{DType, Device, Tensor};
use expgraph_backbone::{
    resolve_weights, resolve_weights_with, Backbone, BackboneError, HubConfig, Preprocess, Vgg16, WeightSource,
};

const REPO: &str = "timm/vgg16.tv_in1k";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Serializes the tests that change environment variables.
static ENV_LOCK: Mutex<()> = Mutex::new(());

/// Writes `tensors` as `filename` of `REPO` at `COMMIT` into the hub cache `cache`, the way the hub
/// client does (blob + snapshot symlink + ref). Returns the snapshot path.
fn add_to_fake_cache(cache: &Path, filename: &str, tensors: Vec<(String, Tensor)>) -> PathBuf {
    let repo_dir = cache.join("models--timm--vgg16.tv_in1k");
    let blob = repo_dir.join("blobs").join(format!("etag-{filename}"));
    std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
    let map: HashMap<String, Tensor> = tensors.into_iter().collect();
    candle_core::safetensors::save(&map, &blob).unwrap();
    let snapshot = repo_dir.join("snapshots").join(COMMIT).join(filename);
    std::fs::create_dir_all(snapshot.parent().unwrap()).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(Path::new("../../blobs").join(format!("etag-{filename}")), &snapshot).unwrap();
    #[cfg(not(unix))]
    std::fs::copy(&blob, &snapshot).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs").join("main"), COMMIT).unwrap();
    snapshot
}

fn tiny_tensors() -> Vec<(String, Tensor)> {
    vec![("probe".into(), Tensor::new(&[1f32, 2.0, 3.0], &Device::Cpu).unwrap())]
}

fn source(revision: Option<&str>, filename: &str) -> WeightSource {
    WeightSource::Hub { repo: REPO.into(), revision: revision.map(String::from), filename: filename.into() }
}

#[test]
fn cache_hit_by_branch_and_by_commit() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = add_to_fake_cache(dir.path(), "model.safetensors", tiny_tensors());
    let config = HubConfig::offline(dir.path());
    let found = resolve_weights_with(&WeightSource::hub(REPO), &config).unwrap();
    assert_eq!(found, snapshot);
    let probe = candle_core::safetensors::load(&found, &Device::Cpu).unwrap();
    assert_eq!(probe["probe"].to_vec1::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
    assert_eq!(resolve_weights_with(&source(Some(COMMIT), "model.safetensors"), &config).unwrap(), snapshot);
}

#[test]
fn offline_miss_says_where_the_file_is_expected() {
    let dir = tempfile::tempdir().unwrap();
    add_to_fake_cache(dir.path(), "model.safetensors", tiny_tensors());
    let config = HubConfig::offline(dir.path());

    let err = resolve_weights_with(&source(None, "other.safetensors"), &config).unwrap_err();
    let BackboneError::HubOffline { expected, .. } = &err else { panic!("{err:?}") };
    let snapshot_dir = dir.path().join("models--timm--vgg16.tv_in1k").join("snapshots").join(COMMIT);
    assert_eq!(expected, &snapshot_dir.join("other.safetensors"));
    let msg = err.to_string();
    assert!(msg.contains("HF_HUB_OFFLINE") && msg.contains("other.safetensors") && msg.contains(REPO), "{msg}");

    // Unknown branch: the message still points into the right repository folder.
    let err = resolve_weights_with(&source(Some("v2"), "model.safetensors"), &config).unwrap_err().to_string();
    assert!(err.contains("models--timm--vgg16.tv_in1k") && err.contains("refs/v2"), "{err}");
}

#[test]
fn dangling_snapshot_link_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = add_to_fake_cache(dir.path(), "model.safetensors", tiny_tensors());
    let blob = std::fs::canonicalize(&snapshot).unwrap();
    std::fs::remove_file(blob).unwrap();
    let err = resolve_weights_with(&WeightSource::hub(REPO), &HubConfig::offline(dir.path())).unwrap_err();
    assert!(matches!(err, BackboneError::HubOffline { .. }), "{err:?}");
}

#[test]
fn online_miss_goes_through_the_download_path() {
    // Nothing listens on port 9 of localhost: the real hf-hub client fails fast, and the error
    // names the repository, the file and the cache.
    let dir = tempfile::tempdir().unwrap();
    let config = HubConfig {
        cache_dir: dir.path().to_path_buf(),
        offline: false,
        endpoint: Some("http://127.0.0.1:9".into()),
        token: None,
        progress: Default::default(),
    };
    let err = resolve_weights_with(&WeightSource::hub(REPO), &config).unwrap_err();
    assert!(matches!(err, BackboneError::HubDownload { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(REPO) && msg.contains("model.safetensors") && msg.contains(&dir.path().display().to_string()),
        "{msg}"
    );
}

/// Sets (or removes) environment variables for the scope of one test, then restores them.
struct EnvGuard {
    saved: Vec<(&'static str, Option<std::ffi::OsString>)>,
}

impl EnvGuard {
    fn set(vars: &[(&'static str, Option<&Path>)]) -> Self {
        let saved = vars.iter().map(|(k, _)| (*k, std::env::var_os(k))).collect();
        for (k, v) in vars {
            match v {
                Some(v) => std::env::set_var(k, v),
                None => std::env::remove_var(k),
            }
        }
        EnvGuard { saved }
    }
}

impl Drop for EnvGuard {
    fn drop(&mut self) {
        for (k, v) in &self.saved {
            match v {
                Some(v) => std::env::set_var(k, v),
                None => std::env::remove_var(k),
            }
        }
    }
}

#[test]
fn env_precedence_hf_hub_cache_over_hf_home() {
    let _lock = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let home = tempfile::tempdir().unwrap();
    let hub_cache = tempfile::tempdir().unwrap();
    let one = Path::new("1");

    let _env = EnvGuard::set(&[("HF_HOME", Some(home.path())), ("HF_HUB_CACHE", None), ("HF_HUB_OFFLINE", Some(one))]);
    let config = HubConfig::from_env().unwrap();
    assert_eq!(config.cache_dir, home.path().join("hub"));
    assert!(config.offline);

    // HF_HOME/hub holds the file: found through the environment alone.
    let in_home = add_to_fake_cache(&home.path().join("hub"), "model.safetensors", tiny_tensors());
    assert_eq!(resolve_weights(&WeightSource::hub(REPO)).unwrap(), in_home);

    // HF_HUB_CACHE wins over HF_HOME: now the (empty) hub cache is searched, and offline it fails.
    let _env2 = EnvGuard::set(&[("HF_HUB_CACHE", Some(hub_cache.path()))]);
    assert_eq!(HubConfig::from_env().unwrap().cache_dir, hub_cache.path());
    let err = resolve_weights(&WeightSource::hub(REPO)).unwrap_err();
    let BackboneError::HubOffline { expected, .. } = &err else { panic!("{err:?}") };
    assert!(expected.starts_with(hub_cache.path()), "{}", expected.display());

    let _env3 = EnvGuard::set(&[("HF_HUB_OFFLINE", Some(Path::new("0")))]);
    assert!(!HubConfig::from_env().unwrap().offline);
}

#[test]
fn vgg16_loads_from_the_hub_cache() {
    let _lock = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let cache = tempfile::tempdir().unwrap();
    let model = Vgg16::random(1, 5, &Device::Cpu).unwrap();
    let mut tensors = model.named_weights();
    tensors.push(("head.fc.weight".into(), Tensor::zeros((1000, 4096), DType::F32, &Device::Cpu).unwrap()));
    add_to_fake_cache(cache.path(), "model.safetensors", tensors);
    let _env = EnvGuard::set(&[("HF_HUB_CACHE", Some(cache.path())), ("HF_HUB_OFFLINE", Some(Path::new("1")))]);

    let source = WeightSource::parse(REPO);
    assert_eq!(source.default_preprocess(), Preprocess::Torchvision);
    let loaded = Vgg16::load(&source, &Device::Cpu).unwrap();
    assert_eq!(loaded.name(), "vgg16");
    let x = Tensor::randn(0f32, 1.0, (1, 3, 16, 16), &Device::Cpu).unwrap();
    let a = model.forward_taps(&x, &["conv2_1"]).unwrap();
    let b = loaded.forward_taps(&x, &["conv2_1"]).unwrap();
    let d = common::max_abs_diff(&a[0], &b[0]);
    assert_eq!(d, 0.0);
}

/// A minimal stand-in for `huggingface.co/{repo}/resolve/{rev}/{file}` on localhost: answers every
/// GET with the hub's headers (`etag`, `x-repo-commit`, `content-range`) and the requested byte range.
fn spawn_fake_hub(body: Vec<u8>) -> (String, std::thread::JoinHandle<Vec<String>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        let mut requests = Vec::new();
        // The client makes two requests (metadata, then the download), possibly on one connection.
        while requests.len() < 2 {
            let Ok((stream, _)) = listener.accept() else {
                break;
            };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            while requests.len() < 2 {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let mut range_start = 0usize;
                let mut range_end = body.len() - 1;
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                        break;
                    }
                    let lower = header.to_ascii_lowercase();
                    if let Some(r) = lower.trim().strip_prefix("range: bytes=") {
                        let (a, b) = r.split_once('-').unwrap();
                        range_start = a.parse().unwrap();
                        if !b.is_empty() {
                            range_end = b.parse().unwrap();
                        }
                    }
                }
                requests.push(line.trim().to_string());
                let part = &body[range_start..=range_end];
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\netag: \"blobetag\"\r\nx-repo-commit: {COMMIT}\r\n\
                     content-range: bytes {range_start}-{range_end}/{}\r\ncontent-length: {}\r\n\r\n",
                    body.len(),
                    part.len()
                );
                writer.write_all(head.as_bytes()).unwrap();
                writer.write_all(part).unwrap();
                writer.flush().unwrap();
            }
        }
        requests
    });
    (url, handle)
}

#[test]
fn download_fills_the_cache_like_the_hub_client() {
    let dir = tempfile::tempdir().unwrap();
    let payload_path = dir.path().join("payload.safetensors");
    let map: HashMap<String, Tensor> = tiny_tensors().into_iter().collect();
    candle_core::safetensors::save(&map, &payload_path).unwrap();
    let body = std::fs::read(&payload_path).unwrap();
    let (url, server) = spawn_fake_hub(body.clone());

    let cache = dir.path().join("cache");
    let config = HubConfig {
        cache_dir: cache.clone(),
        offline: false,
        endpoint: Some(url),
        token: None,
        progress: Default::default(),
    };
    let path = resolve_weights_with(&WeightSource::hub(REPO), &config).unwrap();
    let requests = server.join().unwrap();
    assert!(
        requests.iter().all(|r| r.starts_with("GET /timm/vgg16.tv_in1k/resolve/main/model.safetensors")),
        "{requests:?}"
    );

    // The standard layout: blob by etag, snapshot link by commit, ref for the branch.
    let repo_dir = cache.join("models--timm--vgg16.tv_in1k");
    assert_eq!(std::fs::read(repo_dir.join("blobs").join("blobetag")).unwrap(), body);
    assert_eq!(path, repo_dir.join("snapshots").join(COMMIT).join("model.safetensors"));
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert_eq!(std::fs::read_to_string(repo_dir.join("refs").join("main")).unwrap(), COMMIT);

    // Later, offline, the same file is found in the cache without a server.
    assert_eq!(resolve_weights_with(&WeightSource::hub(REPO), &HubConfig::offline(&cache)).unwrap(), path);
}
