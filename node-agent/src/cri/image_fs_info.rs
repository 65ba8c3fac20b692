use k8s_cri::v1 as cri;

use crate::agent::Agent;
use crate::error::ReefError;

pub async fn handle(agent: &Agent, _req: cri::ImageFsInfoRequest) -> Result<cri::ImageFsInfoResponse, ReefError> {
    let store = agent.puller.store();
    let usage = store.usage();
    let fs = cri::FilesystemUsage {
        timestamp: reef_runtime::clock::now_nanos(),
        fs_id: Some(cri::FilesystemIdentifier { mountpoint: store.layers_dir().to_string_lossy().into_owned() }),
        used_bytes: Some(cri::UInt64Value { value: usage.bytes }),
        inodes_used: Some(cri::UInt64Value { value: usage.inodes }),
    };
    Ok(cri::ImageFsInfoResponse { image_filesystems: vec![fs.clone()], container_filesystems: vec![fs] })
}
