//! Pulling an image: resolve the reference over the configured endpoints, fetch the config, then fetch and unpack
//! the layers in parallel while they stream, and record the image last.
//!
//! Each layer streams from the registry straight into the unpacker (a blocking thread fed through a bounded
//! channel): no temporary file per layer, no second pass. Two digests guard every layer: the client verifies the
//! compressed digest before it signals the end of the stream, and the unpacker's input is hashed against the
//! config's diff_id before the layer is renamed into place. A layer is unpacked under tmp/ and becomes visible only
//! by that rename, so a failure or a crash at any point leaves nothing half-made in layers/.
//!
//! A pull that fails or is cancelled by its caller stops its downloads, waits for its unpackers to remove their
//! temporary directories, and deletes the layers it unpacked that nothing else uses: it leaves nothing behind.

use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sha2::Digest as _;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::error::{ImageError, Result};
use crate::manifest::{self, Fetched, Platform};
use crate::reference::ImageRef;
use crate::registry::{Credentials, Registries, Session};
use crate::store::{ImageRecord, LayerRecord, Store};
use crate::unpack::{UnpackOptions, UnpackStats, unpack_layer};

/// Image configs are small; anything bigger than this is not one.
const MAX_CONFIG_SIZE: usize = 8 << 20;
/// Chunks in flight between the network and the unpacker, per layer.
const CHANNEL_DEPTH: usize = 32;
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerState {
    Waiting,
    Downloading,
    AlreadyExists,
    Done,
}

#[derive(Debug, Clone)]
pub enum Progress {
    Resolved { reference: String, manifest_digest: String, layers: Vec<(String, i64)> },
    Layer { digest: String, state: LayerState, current: i64, total: i64 },
}

pub type ProgressSink = Option<mpsc::Sender<Progress>>;

fn report(sink: &ProgressSink, p: Progress) {
    if let Some(tx) = sink {
        // Progress is advisory: a slow reader loses updates rather than slowing the pull.
        let _ = tx.try_send(p);
    }
}

pub struct Puller {
    store: Arc<Store>,
    registries: Registries,
    unpack: UnpackOptions,
    max_concurrent_downloads: usize,
    layer_locks: KeyedLocks,
    /// Sizes of layers unpacked by this process, for images that reuse them before any record lists them.
    layer_stats: Mutex<HashMap<String, UnpackStats>>,
}

impl Puller {
    pub fn new(
        store: Arc<Store>,
        registries: Registries,
        unpack: UnpackOptions,
        max_concurrent_downloads: usize,
    ) -> Self {
        Puller {
            store,
            registries,
            unpack,
            max_concurrent_downloads: max_concurrent_downloads.max(1),
            layer_locks: KeyedLocks::default(),
            layer_stats: Mutex::default(),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn registries(&self) -> &Registries {
        &self.registries
    }

    /// Pulls `image` and returns its record. Endpoints are tried in order while the manifest cannot be had from
    /// one (not found, unreachable, refused); once content flows, its errors are final. When `cancel` fires, the
    /// pull stops, cleans up and answers `Cancelled` (unless the image was already committed).
    pub async fn pull(
        &self,
        image: &ImageRef,
        credentials: &Credentials,
        progress: ProgressSink,
        cancel: &CancellationToken,
    ) -> Result<ImageRecord> {
        let mut last_err = None;
        for endpoint in self.registries.endpoints(image) {
            if endpoint.fallback && !matches!(last_err, Some(ImageError::Unreachable { .. })) {
                continue;
            }
            let session = self.registries.session(image, &endpoint, credentials)?;
            let resolved = tokio::select! {
                resolved = self.resolve(image, &session) => resolved,
                _ = cancel.cancelled() => return Err(cancelled()),
            };
            match resolved {
                Ok(resolved) => return self.fetch(image, &session, resolved, progress, cancel).await,
                Err(e) => {
                    tracing::debug!(endpoint = %endpoint.host, error = %e, "endpoint failed, trying the next");
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| ImageError::Config(format!("no endpoint serves {}", image.registry))))
    }

    async fn resolve(&self, image: &ImageRef, session: &Session) -> Result<Resolved> {
        session.authenticate().await?;
        let (body, top_digest) = session.manifest(None).await?;
        let repo_digest = image.with_digest(&top_digest);
        // Already stored under this exact manifest: the one manifest request was all it took.
        if let Some(record) = self.store.by_repo_digest(&repo_digest)
            && record.layers.iter().all(|l| self.store.layer_path(&l.chain_id).is_dir())
        {
            return Ok(Resolved::Present { record, repo_digest });
        }
        let mut blobs = vec![(top_digest.clone(), body.to_vec())];
        let (manifest, manifest_digest) = match manifest::parse_document(&body, None)? {
            Fetched::Manifest(m) => (m, top_digest),
            Fetched::Index(list) => {
                let want = Platform::host();
                let chosen = manifest::choose_platform(&list, &want)
                    .ok_or_else(|| ImageError::NoMatchingPlatform { platform: want.to_string() })?;
                let (body, digest) = session.manifest(Some(&chosen.digest)).await?;
                let Fetched::Manifest(m) = manifest::parse_document(&body, None)? else {
                    return Err(ImageError::MalformedManifest {
                        reason: "an index entry points at another index".into(),
                    });
                };
                blobs.push((digest.clone(), body.to_vec()));
                (m, digest)
            }
        };
        Ok(Resolved::Fetch { manifest, manifest_digest, repo_digest, blobs })
    }

    async fn fetch(
        &self,
        image: &ImageRef,
        session: &Arc<Session>,
        resolved: Resolved,
        progress: ProgressSink,
        cancel: &CancellationToken,
    ) -> Result<ImageRecord> {
        let (manifest, manifest_digest, repo_digest, mut blobs) = match resolved {
            Resolved::Present { record, repo_digest } => return self.name(image, record, repo_digest).await,
            Resolved::Fetch { manifest, manifest_digest, repo_digest, blobs } => {
                (manifest, manifest_digest, repo_digest, blobs)
            }
        };
        let config_body = tokio::select! {
            body = session.blob(&manifest.config.digest, MAX_CONFIG_SIZE) => body?,
            _ = cancel.cancelled() => return Err(cancelled()),
        };
        let config = manifest::parse_config(&config_body, manifest.layers.len())?;
        let id = manifest.config.digest.clone();
        if let Some(record) = self.store.resolve(&id).filter(|r| r.id == id)
            && record.layers.iter().all(|l| self.store.layer_path(&l.chain_id).is_dir())
        {
            return self.name(image, record, repo_digest).await;
        }
        blobs.push((id.clone(), config_body));
        let chain_ids = manifest::chain_ids(&config.rootfs.diff_ids);
        report(
            &progress,
            Progress::Resolved {
                reference: image.to_string(),
                manifest_digest: manifest_digest.clone(),
                layers: manifest.layers.iter().map(|l| (l.digest.clone(), l.size)).collect(),
            },
        );

        let permits = Arc::new(Semaphore::new(self.max_concurrent_downloads));
        // The first failing layer stops the others, as does the caller's cancel; every layer task still runs to its
        // end (cleanup included) before the pull answers, so no temporary directory outlives a failed pull.
        let stop_layers = cancel.child_token();
        let jobs =
            manifest.layers.iter().zip(&config.rootfs.diff_ids).zip(&chain_ids).map(|((layer, diff_id), chain_id)| {
                let job = LayerJob {
                    digest: layer.digest.clone(),
                    size: layer.size,
                    diff_id: diff_id.clone(),
                    chain_id: chain_id.clone(),
                };
                let permits = Arc::clone(&permits);
                let progress = progress.clone();
                let stop_layers = &stop_layers;
                async move {
                    let hold = self.store.hold_layer(&job.chain_id);
                    report(&progress, job.progress(LayerState::Waiting, 0));
                    let permit = tokio::select! {
                        permit = permits.acquire() => permit.ok(),
                        _ = stop_layers.cancelled() => None,
                    };
                    let result = match permit {
                        Some(_permit) => self.ensure_layer(session, &job, &progress, stop_layers).await,
                        None => Err(cancelled()),
                    };
                    if result.is_err() {
                        stop_layers.cancel();
                    }
                    result.map(|(record, fresh)| (record, fresh, hold))
                }
            });
        let results = futures::future::join_all(jobs).await;
        let wanted = results.len();
        let mut layers = Vec::with_capacity(wanted);
        let mut first_error = None;
        for r in results {
            match r {
                Ok(l) => layers.push(l),
                // Layers stopped because another failed say only that; the original cause is the one to report.
                Err(ImageError::Cancelled) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let mut layer_records = Vec::with_capacity(wanted);
        let mut fresh = Vec::new();
        let mut holds = Vec::with_capacity(wanted);
        for (record, is_fresh, hold) in layers {
            if is_fresh {
                fresh.push(record.chain_id.clone());
            }
            layer_records.push(record);
            holds.push(hold);
        }
        let stored = match first_error {
            Some(e) => Err(e),
            // Every layer stopped without a cause of its own: the caller cancelled.
            None if layer_records.len() < wanted || cancel.is_cancelled() => Err(cancelled()),
            None => {
                let user = config.config.as_ref().and_then(|c| c.user.clone()).unwrap_or_default();
                let record = ImageRecord {
                    id,
                    repo_tags: image.tagged().into_iter().collect(),
                    repo_digests: vec![repo_digest],
                    manifest_digest,
                    size: layer_records.iter().map(|l| l.size).sum(),
                    layers: layer_records,
                    user,
                    created_at: now_nanos(),
                    pinned: false,
                };
                self.store_image(record, blobs).await
            }
        };
        drop(holds);
        if stored.is_err() {
            // Layers this pull unpacked are of no use without its record; others' pulls and images keep theirs.
            self.store.discard_layers(&fresh);
        }
        stored
    }

    /// The disk flushes (syncfs, fsynced blobs, redb's commit) run on a blocking thread: on an async worker they
    /// would stall every other call for as long as the disk takes.
    async fn store_image(&self, record: ImageRecord, blobs: Vec<(String, Vec<u8>)>) -> Result<ImageRecord> {
        let store = Arc::clone(&self.store);
        on_blocking_thread(move || {
            // One syncfs makes every unpacked file durable before the record that lists them is committed.
            sync_filesystem(&store.layers_dir())?;
            for (digest, body) in &blobs {
                store.write_blob(digest, body)?;
            }
            store.commit(record)
        })
        .await
    }

    /// Adds this reference's names to an image already stored.
    async fn name(&self, image: &ImageRef, mut record: ImageRecord, repo_digest: String) -> Result<ImageRecord> {
        record.repo_tags = image.tagged().into_iter().collect();
        record.repo_digests = vec![repo_digest];
        let store = Arc::clone(&self.store);
        on_blocking_thread(move || store.commit(record)).await
    }

    /// Makes sure the layer is unpacked under layers/, downloading it unless it is already there, and says
    /// whether this call unpacked it. Concurrent pulls that need one layer serialize on it, so it is downloaded
    /// once.
    async fn ensure_layer(
        &self,
        session: &Arc<Session>,
        job: &LayerJob,
        progress: &ProgressSink,
        cancel: &CancellationToken,
    ) -> Result<(LayerRecord, bool)> {
        let _guard = tokio::select! {
            guard = self.layer_locks.lock(&job.chain_id) => guard,
            _ = cancel.cancelled() => return Err(cancelled()),
        };
        let dest = self.store.layer_path(&job.chain_id);
        if dest.is_dir() {
            report(progress, job.progress(LayerState::AlreadyExists, job.size));
            let stats = self.known_stats(&job.chain_id);
            return Ok((job.record(stats), false));
        }
        report(progress, job.progress(LayerState::Downloading, 0));
        let stats = self.download_layer(session, job, &dest, progress, cancel).await?;
        self.layer_stats.lock().unwrap_or_else(|p| p.into_inner()).insert(job.chain_id.clone(), stats);
        report(progress, job.progress(LayerState::Done, job.size));
        Ok((job.record(stats), true))
    }

    fn known_stats(&self, chain_id: &str) -> UnpackStats {
        if let Some(s) = self.layer_stats.lock().unwrap_or_else(|p| p.into_inner()).get(chain_id) {
            return *s;
        }
        self.store
            .list()
            .iter()
            .flat_map(|r| &r.layers)
            .find(|l| l.chain_id == chain_id)
            .map(|l| UnpackStats { bytes: l.size, inodes: l.inodes })
            .unwrap_or_default()
    }

    async fn download_layer(
        &self,
        session: &Arc<Session>,
        job: &LayerJob,
        dest: &Path,
        progress: &ProgressSink,
        cancel: &CancellationToken,
    ) -> Result<UnpackStats> {
        let mut stream = tokio::select! {
            stream = session.blob_stream(&job.digest) => stream?,
            _ = cancel.cancelled() => return Err(cancelled()),
        };
        let tmp = self.store.temp_dir("layer")?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(CHANNEL_DEPTH);
        let unpacker = {
            let (tmp, dest, job, opts) = (tmp.clone(), dest.to_path_buf(), job.clone(), self.unpack.clone());
            tokio::task::spawn_blocking(move || unpack_verified(rx, &tmp, &dest, &job, &opts))
        };
        let mut received: i64 = 0;
        let mut last_report = Instant::now();
        let mut stream_error = None;
        let mut unpacker_gone = false;
        loop {
            let chunk = tokio::select! {
                chunk = stream.next() => chunk,
                _ = cancel.cancelled() => {
                    stream_error = Some(cancelled());
                    break;
                }
            };
            let Some(chunk) = chunk else { break };
            match chunk {
                Ok(bytes) => {
                    received += bytes.len() as i64;
                    if unpacker_gone {
                        continue;
                    }
                    // A closed channel means the unpacker failed. Reading on to the end lets the digest check
                    // tell corrupted transfers (data loss) from layers that are bad as published.
                    if send(&tx, Chunk::Data(bytes)).await.is_err() {
                        unpacker_gone = true;
                        continue;
                    }
                    if last_report.elapsed() >= PROGRESS_INTERVAL {
                        last_report = Instant::now();
                        report(progress, job.progress(LayerState::Downloading, received));
                    }
                }
                Err(e) => {
                    stream_error = Some(session.classify_stream(&format!("layer {}", job.digest), e));
                    break;
                }
            }
        }
        let _ = send(&tx, if stream_error.is_some() { Chunk::Failed } else { Chunk::End }).await;
        drop(tx);
        let unpacked = unpacker.await.map_err(|e| ImageError::BadArchive { reason: format!("unpacker failed: {e}") });
        match (stream_error, unpacked) {
            (Some(e), _) => Err(e),
            (None, Ok(result)) => result,
            (None, Err(e)) => Err(e),
        }
    }
}

enum Resolved {
    Present { record: ImageRecord, repo_digest: String },
    Fetch { manifest: manifest::Manifest, manifest_digest: String, repo_digest: String, blobs: Vec<(String, Vec<u8>)> },
}

#[derive(Debug, Clone)]
struct LayerJob {
    digest: String,
    size: i64,
    diff_id: String,
    chain_id: String,
}

impl LayerJob {
    fn progress(&self, state: LayerState, current: i64) -> Progress {
        Progress::Layer { digest: self.digest.clone(), state, current, total: self.size }
    }

    fn record(&self, stats: UnpackStats) -> LayerRecord {
        LayerRecord {
            digest: self.digest.clone(),
            diff_id: self.diff_id.clone(),
            chain_id: self.chain_id.clone(),
            size: stats.bytes,
            inodes: stats.inodes,
        }
    }
}

enum Chunk {
    Data(bytes::Bytes),
    /// The stream ended and the client verified its digest.
    End,
    Failed,
}

/// Sends without blocking the async runtime: the channel is bounded so a slow disk pushes back on the network.
async fn send(tx: &std::sync::mpsc::SyncSender<Chunk>, mut chunk: Chunk) -> std::result::Result<(), ()> {
    loop {
        match tx.try_send(chunk) {
            Ok(()) => return Ok(()),
            Err(std::sync::mpsc::TrySendError::Full(c)) => {
                chunk = c;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(()),
        }
    }
}

/// Runs on a blocking thread: decompress, hash, unpack into `tmp`, check the diff_id, rename to `dest`.
/// Removes `tmp` on any failure, including when the pull that started it was cancelled.
fn unpack_verified(
    rx: std::sync::mpsc::Receiver<Chunk>,
    tmp: &Path,
    dest: &Path,
    job: &LayerJob,
    opts: &UnpackOptions,
) -> Result<UnpackStats> {
    let result = (|| {
        let mut input =
            std::io::BufReader::with_capacity(256 << 10, ChannelReader { rx, current: bytes::Bytes::new() });
        let magic = input.fill_buf().map_err(|e| stream_io(job, e))?.to_vec();
        let decompressed: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::bufread::MultiGzDecoder::new(input))
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(|e| stream_io(job, e))?)
        } else {
            Box::new(input)
        };
        let mut hashed = HashingReader { inner: decompressed, hasher: sha2::Sha256::new() };
        let stats = unpack_layer(&mut hashed, tmp, opts)?;
        let actual = format!("sha256:{}", hex::encode(hashed.hasher.finalize()));
        if actual != job.diff_id {
            return Err(ImageError::DigestMismatch {
                what: format!("uncompressed layer {}", job.digest),
                expected: job.diff_id.clone(),
                actual,
            });
        }
        std::fs::rename(tmp, dest).map_err(|e| ImageError::io("rename layer", dest, e))?;
        Ok(stats)
    })();
    if result.is_err()
        && let Err(e) = std::fs::remove_dir_all(tmp)
    {
        tracing::warn!(path = %tmp.display(), error = %e, "cannot remove a failed layer's temporary directory");
    }
    result
}

fn cancelled() -> ImageError {
    ImageError::Cancelled
}

fn stream_io(job: &LayerJob, e: std::io::Error) -> ImageError {
    ImageError::BadArchive { reason: format!("layer {}: {e}", job.digest) }
}

struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Chunk>,
    current: bytes::Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(Chunk::Data(b)) => self.current = b,
                Ok(Chunk::End) => return Ok(0),
                // A dropped sender without End is a cancelled pull: never let it look like a complete layer.
                Ok(Chunk::Failed) | Err(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "layer download did not complete",
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Async mutexes by key, created on demand.
#[derive(Default)]
struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, l| Arc::strong_count(l) > 1);
            Arc::clone(map.entry(key.to_string()).or_default())
        };
        lock.lock_owned().await
    }
}

async fn on_blocking_thread<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|_| ImageError::Panicked("storing the image"))?
}

fn sync_filesystem(path: &Path) -> Result<()> {
    let dir = std::fs::File::open(path).map_err(|e| ImageError::io("open", path, e))?;
    nix::unistd::syncfs(&dir).map_err(|e| ImageError::io("syncfs", path, e.into()))
}

pub(crate) fn now_nanos() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or_default()
}
