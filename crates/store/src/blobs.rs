//! The blob store: record ciphertexts, content-addressed by their SHA-256, through `object_store`.
//!
//! Object keys are `c/<hex digest>`: they carry no patient, record or member data. The digest is
//! checked before an upload (a client cannot store bytes under another object's name) and after a
//! download (a storage provider that alters a byte is caught; the caller gets [`BlobError::Integrity`]).

use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use medledger_types::Digest;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig};

/// Retries of a failed S3 request, and the longest they may take together.
const S3_RETRIES: usize = 3;
/// Attempts of one blob PUT that fails in transport, and the pause before the next (times the
/// attempt number).
const PUT_ATTEMPTS: u32 = 3;
const PUT_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);
const S3_RETRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// Longest to open a connection to the S3 endpoint, and to complete one request (64 MiB at most).
const S3_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
const S3_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    #[error("storage URL must be file://PATH, s3://BUCKET or memory://: {0}")]
    Url(String),
    #[error("blob not found")]
    NotFound,
    #[error("blob does not match its digest")]
    Integrity,
    #[error("blob is over the size limit")]
    TooLarge,
    #[error("object store: {0}")]
    Store(String),
}

/// S3 settings; what is unset comes from the usual `AWS_*` environment variables. Credentials
/// are never written to medledger's config files.
#[derive(Clone, Default)]
pub struct S3Config {
    /// Endpoint of a non-AWS server, e.g. `http://127.0.0.1:9000` (path-style requests).
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub region: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    max_bytes: u64,
}

fn store_err(e: object_store::Error) -> BlobError {
    match e {
        object_store::Error::NotFound { .. } => BlobError::NotFound,
        other => BlobError::Store(other.to_string()),
    }
}

impl Blobs {
    /// Opens a store from a URL: `file://PATH` (relative paths under `base`), `s3://BUCKET` (with
    /// `s3_endpoint` for a non-AWS server; credentials and region from the usual AWS_* variables),
    /// or `memory://` (tests).
    pub fn open(url: &str, base: &FsPath, s3_endpoint: Option<&str>, max_bytes: u64) -> Result<Self, BlobError> {
        Self::open_with(
            url,
            base,
            &S3Config { endpoint: s3_endpoint.map(str::to_string), ..S3Config::default() },
            max_bytes,
        )
    }

    /// As [`Blobs::open`], with S3 settings given explicitly (unset ones come from the environment).
    pub fn open_with(url: &str, base: &FsPath, s3: &S3Config, max_bytes: u64) -> Result<Self, BlobError> {
        let store: Arc<dyn ObjectStore> = if let Some(path) = url.strip_prefix("file://") {
            let path = if FsPath::new(path).is_absolute() { FsPath::new(path).to_path_buf() } else { base.join(path) };
            std::fs::create_dir_all(&path).map_err(|e| BlobError::Store(e.to_string()))?;
            Arc::new(LocalFileSystem::new_with_prefix(&path).map_err(store_err)?)
        } else if let Some(bucket) = url.strip_prefix("s3://") {
            let bucket = bucket.trim_end_matches('/');
            if bucket.is_empty() || bucket.contains('/') {
                return Err(BlobError::Url(url.to_string()));
            }
            // Bounded: a wrong endpoint or an outage fails a request within seconds, not minutes.
            // (Client options first: `with_allow_http` below writes into them.)
            let retry = RetryConfig { max_retries: S3_RETRIES, retry_timeout: S3_RETRY_TIMEOUT, ..Default::default() };
            let client = ClientOptions::new().with_connect_timeout(S3_CONNECT_TIMEOUT).with_timeout(S3_REQUEST_TIMEOUT);
            let mut builder =
                AmazonS3Builder::from_env().with_client_options(client).with_retry(retry).with_bucket_name(bucket);
            if let Some(key) = &s3.access_key_id {
                builder = builder.with_access_key_id(key);
            }
            if let Some(secret) = &s3.secret_access_key {
                builder = builder.with_secret_access_key(secret);
            }
            if let Some(region) = &s3.region {
                builder = builder.with_region(region);
            }
            if let Some(endpoint) = s3.endpoint.as_deref() {
                builder = builder
                    .with_endpoint(endpoint)
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_virtual_hosted_style_request(false);
            }
            Arc::new(builder.build().map_err(store_err)?)
        } else if url == "memory://" {
            Arc::new(InMemory::new())
        } else {
            return Err(BlobError::Url(url.to_string()));
        };
        Ok(Self { store, max_bytes })
    }

    fn path(digest: &Digest) -> Path {
        Path::from(format!("c/{}", digest.to_hex()))
    }

    /// Stores `bytes` under `digest` after checking that they hash to it. Idempotent.
    pub async fn put(&self, digest: &Digest, bytes: Bytes) -> Result<(), BlobError> {
        if bytes.len() as u64 > self.max_bytes {
            return Err(BlobError::TooLarge);
        }
        if Digest::new(medledger_crypto::sha256(&bytes)) != *digest {
            return Err(BlobError::Integrity);
        }
        let path = Self::path(digest);
        let mut attempt = 1;
        loop {
            let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
            match self.store.put_opts(&path, PutPayload::from_bytes(bytes.clone()), opts).await {
                Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => return Ok(()),
                // Some S3 servers lack create-if-absent; content addressing makes an overwrite harmless.
                Err(object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }) => {
                    return self.store.put(&path, PutPayload::from_bytes(bytes)).await.map(|_| ()).map_err(store_err);
                }
                // object_store does not retry a conditional PUT that failed in transport (a reset
                // connection, one refused while the server restarts): it cannot know the request
                // is idempotent. Content addressing makes it so: sent again, it is created, or is
                // there already. (Seen: "error sending request" on a test's first PUT.)
                Err(object_store::Error::Generic { .. }) if attempt < PUT_ATTEMPTS => {
                    tokio::time::sleep(PUT_RETRY_PAUSE * attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(store_err(e)),
            }
        }
    }

    /// Fetches the blob and checks it against `digest`.
    pub async fn get(&self, digest: &Digest) -> Result<Bytes, BlobError> {
        let result = self.store.get(&Self::path(digest)).await.map_err(store_err)?;
        if result.meta.size > self.max_bytes {
            return Err(BlobError::TooLarge);
        }
        let bytes = result.bytes().await.map_err(store_err)?;
        if Digest::new(medledger_crypto::sha256(&bytes)) != *digest {
            return Err(BlobError::Integrity);
        }
        Ok(bytes)
    }

    /// Deletes the blob; one already gone is not an error. (On a versioned S3 bucket this removes
    /// the current version only: a lifecycle rule must expire noncurrent versions.)
    pub async fn delete(&self, digest: &Digest) -> Result<(), BlobError> {
        match self.store.delete(&Self::path(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_err(e)),
        }
    }

    pub async fn exists(&self, digest: &Digest) -> Result<bool, BlobError> {
        match self.store.head(&Self::path(digest)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(store_err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::stream::BoxStream;
    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, PutMultipartOptions, PutResult,
    };

    use super::*;

    /// An in-memory store whose first `failing` PUTs fail in transport, after storing nothing.
    #[derive(Debug)]
    struct Flaky {
        inner: InMemory,
        failing: AtomicUsize,
        puts: AtomicUsize,
    }

    impl std::fmt::Display for Flaky {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Flaky")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Flaky {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.puts.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) > 0 {
                self.failing.fetch_sub(1, Ordering::SeqCst);
                let source = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "error sending request").into();
                return Err(object_store::Error::Generic { store: "Flaky", source });
            }
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }
        fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    fn flaky(failing: usize) -> (Arc<Flaky>, Blobs) {
        let store =
            Arc::new(Flaky { inner: InMemory::new(), failing: AtomicUsize::new(failing), puts: AtomicUsize::new(0) });
        let blobs = Blobs { store: Arc::clone(&store) as Arc<dyn ObjectStore>, max_bytes: 1 << 20 };
        (store, blobs)
    }

    /// A PUT that fails in transport is sent again (object_store does not retry a conditional
    /// PUT); one that keeps failing is an error after the last attempt.
    #[tokio::test]
    async fn a_put_lost_in_transport_is_sent_again() {
        let data = Bytes::from_static(b"ciphertext");
        let digest = Digest::new(medledger_crypto::sha256(&data));
        let (store, blobs) = flaky(2);
        blobs.put(&digest, data.clone()).await.unwrap();
        assert_eq!(store.puts.load(Ordering::SeqCst), 3, "two lost, the third stored");
        assert_eq!(blobs.get(&digest).await.unwrap(), data);
        let (store, blobs) = flaky(usize::MAX);
        assert!(matches!(blobs.put(&digest, data).await, Err(BlobError::Store(_))));
        assert_eq!(store.puts.load(Ordering::SeqCst), PUT_ATTEMPTS as usize, "no more than the attempts");
    }
}
