use serde::Serialize;

use crate::cli::{Format, FormatArgs};
use crate::client::{Clients, status_error};
use crate::output::{human_size, print_structured, print_table, table};

#[derive(Serialize)]
struct FsUsage {
    mountpoint: String,
    used_bytes: u64,
    inodes_used: u64,
    timestamp: i64,
}

pub async fn run(clients: &Clients, args: &FormatArgs) -> anyhow::Result<()> {
    let reply = clients
        .images()
        .image_fs_info(k8s_cri::v1::ImageFsInfoRequest {})
        .await
        .map_err(|s| status_error("image fs info", s))?
        .into_inner();
    let out: Vec<FsUsage> = reply
        .image_filesystems
        .into_iter()
        .map(|f| FsUsage {
            mountpoint: f.fs_id.map(|i| i.mountpoint).unwrap_or_default(),
            used_bytes: f.used_bytes.map(|u| u.value).unwrap_or_default(),
            inodes_used: f.inodes_used.map(|u| u.value).unwrap_or_default(),
            timestamp: f.timestamp,
        })
        .collect();
    if args.output != Format::Table {
        return print_structured(&out, args.output);
    }
    let mut t = table(&["MOUNTPOINT", "USED", "INODES", "TIMESTAMP"]);
    for f in &out {
        t.add_row(vec![
            f.mountpoint.clone(),
            human_size(f.used_bytes),
            f.inodes_used.to_string(),
            f.timestamp.to_string(),
        ]);
    }
    print_table(&t);
    Ok(())
}
