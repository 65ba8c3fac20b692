//! Pull with streamed progress. The pull runs in its own task so that a client that goes away does not waste the
//! download: the image lands in the store either way.

use std::sync::Arc;

use reef_api::v1 as api;
use reef_images::pull::{LayerState, Progress};
use reef_images::registry::Credentials;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::ReefApi;
use crate::agent::Agent;
use crate::cri::image_pull::{parse, publish_image};
use crate::error::ReefError;
use crate::events::Action;

type Item = Result<api::PullImageProgress, tonic::Status>;

pub async fn handle(
    agent: Arc<Agent>,
    req: api::PullImageRequest,
) -> Result<<ReefApi as api::reef_server::Reef>::PullImageStream, ReefError> {
    let reference = parse(&req.image)?;
    let credentials = Credentials {
        username: req.username,
        password: req.password,
        auth: req.auth,
        identity_token: req.identity_token,
        registry_token: req.registry_token,
    };
    let (out_tx, out_rx) = mpsc::channel::<Item>(64);
    let (progress_tx, mut progress_rx) = mpsc::channel::<Progress>(256);
    let forward = {
        let out_tx = out_tx.clone();
        tokio::spawn(async move {
            while let Some(p) = progress_rx.recv().await {
                let _ = out_tx.send(Ok(to_api(p))).await;
            }
        })
    };
    tokio::spawn(async move {
        // Never cancelled: the image lands in the store even when rctl stops listening.
        let result = agent.puller.pull(&reference, &credentials, Some(progress_tx), &Default::default()).await;
        // All progress goes out before the final message.
        let _ = forward.await;
        let last = match result {
            Ok(record) => {
                tracing::info!(image = %reference, id = %record.id, "pulled");
                publish_image(&agent, Action::Pulled, &record.id, &reference.to_string());
                Ok(api::PullImageProgress {
                    event: Some(api::pull_image_progress::Event::Done(api::PullDone {
                        image_id: record.id,
                        reference: reference.to_string(),
                    })),
                })
            }
            Err(source) => {
                let e = ReefError::Pull { image: reference.to_string(), source };
                tracing::warn!(error = %crate::error::chain(&e), "pull failed");
                Err(e.into())
            }
        };
        let _ = out_tx.send(last).await;
    });
    Ok(Box::pin(ReceiverStream::new(out_rx)))
}

fn to_api(p: Progress) -> api::PullImageProgress {
    use api::pull_image_progress::Event;
    let event = match p {
        Progress::Resolved { reference, manifest_digest, layers } => Event::Resolved(api::Resolved {
            reference,
            manifest_digest,
            layers: layers.into_iter().map(|(digest, size)| api::LayerRef { digest, size }).collect(),
        }),
        Progress::Layer { digest, state, current, total } => Event::Layer(api::LayerProgress {
            digest,
            state: match state {
                LayerState::Waiting => api::LayerState::Waiting,
                LayerState::Downloading => api::LayerState::Downloading,
                LayerState::AlreadyExists => api::LayerState::AlreadyExists,
                LayerState::Done => api::LayerState::Done,
            } as i32,
            current,
            total,
        }),
    };
    api::PullImageProgress { event: Some(event) }
}
