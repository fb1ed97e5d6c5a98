//! The playout service's gRPC implementation.

use std::path::Path;
use std::pin::Pin;

use futures::Stream;
use onair_kit::auth::Caller;
use onair_kit::clock::timestamp_from_millis;
use onair_proto::clients::MediaClient;
use onair_proto::media::v1 as media;
use onair_proto::playout::v1 as pb;
use onair_proto::playout::v1::playout_service_server::PlayoutService;
use onair_proto::user::v1::Role;
use rand::Rng;
use tonic::{Request, Response, Status, Streaming};

use crate::error::PlayoutError;
use crate::ladder::CODECS;
use crate::playout::Playout;
use crate::tables::{AssetRecord, StreamKeyGrant};
use crate::transcode;

/// How many assets a list returns when the caller does not say.
pub const DEFAULT_PAGE_SIZE: i32 = 100;
/// The most assets one list or batch call returns.
pub const MAX_PAGE_SIZE: i32 = 1000;
/// The length of an issued stream key, in characters.
const STREAM_KEY_LENGTH: usize = 32;

/// The stream `WatchTranscodeJob` returns.
pub type TranscodeJobStream =
    Pin<Box<dyn Stream<Item = Result<pb::TranscodeJob, Status>> + Send + 'static>>;

impl Playout {
    /// The gRPC service.
    pub fn service(&self) -> PlayoutServiceImpl {
        PlayoutServiceImpl::new(self.clone())
    }
}

/// The playout service.
#[derive(Clone)]
pub struct PlayoutServiceImpl {
    playout: Playout,
}

/// Checks a client-given asset id: the ids the media service accepts for
/// programs (lowercase letters, digits, hyphens; 1 to 64).
fn validate_asset_id(id: &str) -> Result<(), PlayoutError> {
    let allowed = |byte: u8| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-';
    let valid = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(allowed)
        && !id.starts_with('-')
        && !id.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(PlayoutError::InvalidArgument(format!(
            "asset.id {id:?} is invalid: use 1 to 64 lowercase letters, digits and hyphens, e.g. \"news-1\""
        )))
    }
}

/// An asset id: the caller's, checked, or a new one.
fn asset_id_or_new(id: &str) -> Result<String, PlayoutError> {
    if id.is_empty() {
        return Ok(uuid::Uuid::now_v7().simple().to_string());
    }
    validate_asset_id(id)?;
    Ok(id.to_owned())
}

/// Writes an upload's bytes to `path`, refusing more than `limit`.
async fn receive(
    parts: &mut Streaming<pb::UploadAssetRequest>,
    first: Vec<u8>,
    path: &Path,
    limit: u64,
) -> Result<(), PlayoutError> {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::File::create(path).await?;
    let mut written = 0u64;
    let mut chunk = first;
    loop {
        written += chunk.len() as u64;
        if written > limit {
            return Err(PlayoutError::ResourceExhausted(format!(
                "the upload is larger than playout.max_upload_bytes ({limit} bytes)"
            )));
        }
        file.write_all(&chunk).await?;
        match parts.message().await {
            Ok(Some(next)) => chunk = next.data,
            Ok(None) => break,
            Err(status) => {
                return Err(PlayoutError::InvalidArgument(format!(
                    "the upload broke off: {}",
                    status.message()
                )));
            }
        }
    }
    file.flush().await?;
    Ok(())
}

impl PlayoutServiceImpl {
    /// The gRPC service over a running playout.
    pub fn new(playout: Playout) -> PlayoutServiceImpl {
        PlayoutServiceImpl { playout }
    }

    async fn operator<T>(&self, request: &Request<T>) -> Result<Caller, PlayoutError> {
        let caller = self
            .playout
            .authenticator()
            .authenticate(request.metadata())
            .await?;
        caller.require(Role::Operator)?;
        Ok(caller)
    }

    /// Public reads still refuse credentials that do not verify.
    async fn reader<T>(&self, request: &Request<T>) -> Result<(), PlayoutError> {
        if request.metadata().get("authorization").is_none() {
            return Ok(());
        }
        self.playout
            .authenticator()
            .authenticate(request.metadata())
            .await?;
        Ok(())
    }

    fn to_proto(&self, asset: &AssetRecord) -> pb::Asset {
        let settings = self.playout.settings();
        let ladder = &settings.encode.ladder;
        let renditions = asset
            .renditions
            .iter()
            .filter_map(|name| ladder.rendition(name))
            .map(|rendition| pb::Rendition {
                name: rendition.name.clone(),
                width: rendition.width as i32,
                height: rendition.height as i32,
                bandwidth: i32::try_from(rendition.bandwidth(ladder.audio_kbps))
                    .unwrap_or(i32::MAX),
                codecs: CODECS.to_owned(),
            })
            .collect();
        pb::Asset {
            id: asset.id.clone(),
            source_path: asset.source_path.clone(),
            state: asset.state as i32,
            duration: Some(prost_types::Duration {
                seconds: asset.duration_ms / 1000,
                nanos: ((asset.duration_ms % 1000) * 1_000_000) as i32,
            }),
            renditions,
            segment_duration: Some(prost_types::Duration {
                seconds: i64::from(settings.encode.segment_seconds),
                nanos: 0,
            }),
            error: asset.error.clone(),
            create_time: Some(timestamp_from_millis(asset.create_time_ms)),
        }
    }

    async fn create(
        &self,
        request: Request<pb::CreateAssetRequest>,
    ) -> Result<pb::Asset, PlayoutError> {
        self.operator(&request).await?;
        let Some(asset) = request.into_inner().asset else {
            return Err(PlayoutError::InvalidArgument(
                "asset is required: {\"sourcePath\": \"/path/to/file.mp4\"}".to_owned(),
            ));
        };
        let id = asset_id_or_new(&asset.id)?;
        let path = Path::new(&asset.source_path);
        if asset.source_path.is_empty() || !path.is_absolute() {
            return Err(PlayoutError::InvalidArgument(format!(
                "asset.source_path {:?} must be an absolute path on the playout node",
                asset.source_path
            )));
        }
        let is_file = tokio::fs::metadata(path)
            .await
            .map(|metadata| metadata.is_file())
            .unwrap_or(false);
        if !is_file {
            return Err(PlayoutError::InvalidArgument(format!(
                "no file at {}",
                asset.source_path
            )));
        }
        self.register(id, path).await
    }

    /// Probes a file the station can read, stores its asset and queues its
    /// transcode.
    async fn register(&self, id: String, path: &Path) -> Result<pb::Asset, PlayoutError> {
        if self.playout.store().asset(&id).await?.is_some() {
            return Err(PlayoutError::AlreadyExists(format!(
                "an asset with id {id:?} exists"
            )));
        }
        let probe = transcode::probe(&self.playout.settings().ffprobe, path)
            .await
            .map_err(PlayoutError::InvalidArgument)?;
        let record = AssetRecord::queued(
            id,
            path.display().to_string(),
            probe.duration_ms,
            self.playout.clock().now_ms(),
        );
        self.playout.store().insert_asset(&record).await?;
        self.playout.transcoder().enqueue(&record);
        tracing::info!(asset = %record.id, source = %record.source_path, duration_ms = record.duration_ms, "asset queued");
        Ok(self.to_proto(&record))
    }

    /// Receives an uploaded file into the upload folder, then registers it.
    async fn upload(
        &self,
        request: Request<Streaming<pb::UploadAssetRequest>>,
    ) -> Result<pb::Asset, PlayoutError> {
        self.operator(&request).await?;
        let mut parts = request.into_inner();
        let first = parts
            .message()
            .await
            .map_err(|status| PlayoutError::InvalidArgument(status.message().to_owned()))?
            .ok_or_else(|| PlayoutError::InvalidArgument("the upload is empty".to_owned()))?;
        let id = asset_id_or_new(&first.asset.map(|asset| asset.id).unwrap_or_default())?;
        let extension = Path::new(&first.file_name)
            .extension()
            .and_then(|extension| extension.to_str())
            .filter(|extension| {
                extension.len() <= 8 && extension.bytes().all(|byte| byte.is_ascii_alphanumeric())
            })
            .unwrap_or("bin")
            .to_ascii_lowercase();
        let settings = self.playout.settings();
        tokio::fs::create_dir_all(&settings.upload_dir).await?;
        let path = settings.upload_dir.join(format!("{id}.{extension}"));
        let partial = settings.upload_dir.join(format!("{id}.part"));
        let received = receive(&mut parts, first.data, &partial, settings.max_upload_bytes).await;
        if let Err(error) = received {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(error);
        }
        tokio::fs::rename(&partial, &path).await?;
        let registered = self.register(id, &path).await;
        if registered.is_err() {
            let _ = tokio::fs::remove_file(&path).await;
        }
        registered
    }

    async fn existing(&self, id: &str) -> Result<AssetRecord, PlayoutError> {
        self.playout
            .store()
            .asset(id)
            .await?
            .ok_or_else(|| PlayoutError::asset_not_found(id))
    }
}

#[tonic::async_trait]
impl PlayoutService for PlayoutServiceImpl {
    async fn create_asset(
        &self,
        request: Request<pb::CreateAssetRequest>,
    ) -> Result<Response<pb::Asset>, Status> {
        Ok(Response::new(self.create(request).await?))
    }

    async fn upload_asset(
        &self,
        request: Request<Streaming<pb::UploadAssetRequest>>,
    ) -> Result<Response<pb::Asset>, Status> {
        Ok(Response::new(self.upload(request).await?))
    }

    async fn get_asset(
        &self,
        request: Request<pb::GetAssetRequest>,
    ) -> Result<Response<pb::Asset>, Status> {
        self.operator(&request).await?;
        let asset = self.existing(&request.get_ref().asset_id).await?;
        Ok(Response::new(self.to_proto(&asset)))
    }

    async fn list_assets(
        &self,
        request: Request<pb::ListAssetsRequest>,
    ) -> Result<Response<pb::ListAssetsResponse>, Status> {
        self.operator(&request).await?;
        let request = request.into_inner();
        if request.page_size < 0 {
            return Err(
                PlayoutError::InvalidArgument("page_size must not be negative".to_owned()).into(),
            );
        }
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size => size.min(MAX_PAGE_SIZE),
        };
        // The token is the last id of the previous page: assets list by id.
        let page = self
            .playout
            .store()
            .assets_page(&request.page_token, i64::from(page_size) + 1)
            .await?;
        let has_more = page.len() > page_size as usize;
        let assets: Vec<pb::Asset> = page
            .iter()
            .take(page_size as usize)
            .map(|asset| self.to_proto(asset))
            .collect();
        let next_page_token = if has_more {
            assets
                .last()
                .map(|asset| asset.id.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListAssetsResponse {
            assets,
            next_page_token,
        }))
    }

    async fn batch_get_assets(
        &self,
        request: Request<pb::BatchGetAssetsRequest>,
    ) -> Result<Response<pb::BatchGetAssetsResponse>, Status> {
        self.operator(&request).await?;
        let ids = request.into_inner().asset_ids;
        if ids.len() > MAX_PAGE_SIZE as usize {
            return Err(PlayoutError::InvalidArgument(format!(
                "at most {MAX_PAGE_SIZE} asset ids per call"
            ))
            .into());
        }
        let mut answer = pb::BatchGetAssetsResponse::default();
        for id in ids {
            match self.playout.store().asset(&id).await? {
                Some(asset) => answer.assets.push(self.to_proto(&asset)),
                None => answer.missing_asset_ids.push(id),
            }
        }
        Ok(Response::new(answer))
    }

    type WatchTranscodeJobStream = TranscodeJobStream;

    async fn watch_transcode_job(
        &self,
        request: Request<pb::WatchTranscodeJobRequest>,
    ) -> Result<Response<Self::WatchTranscodeJobStream>, Status> {
        self.operator(&request).await?;
        let asset_id = request.into_inner().asset_id;
        let receiver = self.playout.transcoder().watch(&asset_id);
        let asset = self.existing(&asset_id).await?;
        let Some(mut receiver) = receiver else {
            // The job is over: its outcome is the asset's state.
            let job = pb::TranscodeJob {
                asset_id: asset.id.clone(),
                state: asset.state as i32,
                percent: if asset.state == pb::asset::State::Ready {
                    100.0
                } else {
                    0.0
                },
                attempt: asset.attempts as i32,
                error: asset.error.clone(),
            };
            let stream = futures::stream::once(async move { Ok(job) });
            return Ok(Response::new(Box::pin(stream)));
        };
        let stream = async_stream_of(move |sender| async move {
            loop {
                let job = receiver.borrow_and_update().clone();
                let over = job.state == pb::asset::State::Ready as i32
                    || job.state == pb::asset::State::Failed as i32;
                if sender.send(Ok(job)).await.is_err() || over {
                    return;
                }
                if receiver.changed().await.is_err() {
                    // The job ended between two updates; its last word was sent
                    // with `send_replace` before the sender went away.
                    let job = receiver.borrow().clone();
                    let _ = sender.send(Ok(job)).await;
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn issue_stream_key(
        &self,
        request: Request<pb::IssueStreamKeyRequest>,
    ) -> Result<Response<pb::StreamKey>, Status> {
        self.operator(&request).await?;
        let slot_id = request.into_inner().slot_id;
        let mut client = MediaClient::new(self.playout.media().clone());
        let slot = match client
            .get_slot(media::GetSlotRequest {
                slot_id: slot_id.clone(),
            })
            .await
        {
            Ok(slot) => slot.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => {
                return Err(PlayoutError::NotFound {
                    kind: "slot",
                    id: slot_id,
                }
                .into());
            }
            Err(status) => return Err(PlayoutError::from(status).into()),
        };
        if !slot.live {
            return Err(PlayoutError::FailedPrecondition(format!(
                "slot {slot_id} is not live: only a live slot takes ingest"
            ))
            .into());
        }
        let key: String = rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(STREAM_KEY_LENGTH)
            .map(char::from)
            .collect();
        let grant = StreamKeyGrant {
            slot_id: slot.id.clone(),
            channel_id: slot.channel_id.clone(),
        };
        self.playout
            .store()
            .put_stream_key(&key, &grant, self.playout.clock().now_ms())
            .await?;
        let ingest_url = format!(
            "{}/ingest/{key}/index.m3u8",
            self.playout.settings().public_url.trim_end_matches('/')
        );
        Ok(Response::new(pb::StreamKey {
            slot_id: slot.id,
            stream_key: key,
            ingest_url,
        }))
    }

    async fn get_playout_state(
        &self,
        request: Request<pb::GetPlayoutStateRequest>,
    ) -> Result<Response<pb::PlayoutState>, Status> {
        self.reader(&request).await?;
        let channel_id = request.into_inner().channel_id;
        let state = self.playout.linear().state(&channel_id).await?;
        Ok(Response::new(state))
    }
}

/// A stream fed by a task through a small channel.
fn async_stream_of<F, Fut>(body: F) -> TranscodeJobStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::TranscodeJob, Status>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    tokio::spawn(body(sender));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
}
