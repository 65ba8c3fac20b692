use k8s_cri::v1 as cri;
use serde::Serialize;

use super::image_spec;
use crate::cli::{Format, ImagesArgs};
use crate::client::{Clients, status_error};
use crate::output::{human_size, print_structured, print_table, short_id, split_repo_tag, table};

#[derive(Debug, Serialize, PartialEq)]
pub struct ImageOut {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub size: u64,
    pub uid: Option<i64>,
    pub username: String,
    pub pinned: bool,
}

impl From<cri::Image> for ImageOut {
    fn from(i: cri::Image) -> Self {
        ImageOut {
            id: i.id,
            repo_tags: i.repo_tags,
            repo_digests: i.repo_digests,
            size: i.size,
            uid: i.uid.map(|u| u.value),
            username: i.username,
            pinned: i.pinned,
        }
    }
}

/// One table row per repo tag, like docker; an image without tags is one `<none>` row.
pub fn rows(image: &ImageOut, digests: bool, no_trunc: bool) -> Vec<Vec<String>> {
    let id = if no_trunc { image.id.clone() } else { short_id(&image.id) };
    let size = human_size(image.size);
    let digest_of = |repo: &str| {
        image
            .repo_digests
            .iter()
            .map(|d| split_repo_tag(d))
            .find(|(r, _)| *r == repo)
            .map(|(_, d)| d.to_string())
            .unwrap_or_else(|| "<none>".into())
    };
    let mut out = Vec::new();
    let names: Vec<(String, String)> = if image.repo_tags.is_empty() {
        let repo =
            image.repo_digests.first().map(|d| split_repo_tag(d).0.to_string()).unwrap_or_else(|| "<none>".into());
        vec![(repo, "<none>".into())]
    } else {
        image.repo_tags.iter().map(|t| split_repo_tag(t)).map(|(r, t)| (r.to_string(), t.to_string())).collect()
    };
    for (repo, tag) in names {
        let mut row = vec![repo.clone(), tag];
        if digests {
            row.push(digest_of(&repo));
        }
        row.push(id.clone());
        row.push(size.clone());
        out.push(row);
    }
    out
}

pub async fn run(clients: &Clients, args: &ImagesArgs) -> anyhow::Result<()> {
    let filter = args.image.as_deref().map(|i| cri::ImageFilter { image: image_spec(i) });
    let images: Vec<ImageOut> = clients
        .images()
        .list_images(cri::ListImagesRequest { filter })
        .await
        .map_err(|s| status_error("list images", s))?
        .into_inner()
        .images
        .into_iter()
        .map(ImageOut::from)
        .collect();
    if args.output != Format::Table {
        return print_structured(&images, args.output);
    }
    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for i in &images {
            let id = if args.no_trunc { i.id.clone() } else { short_id(&i.id) };
            if seen.insert(id.clone()) {
                println!("{id}");
            }
        }
        return Ok(());
    }
    let mut header = vec!["IMAGE", "TAG"];
    if args.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "SIZE"]);
    let mut t = table(&header);
    for i in &images {
        for row in rows(i, args.digests, args.no_trunc) {
            t.add_row(row);
        }
    }
    print_table(&t);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(tags: &[&str]) -> ImageOut {
        ImageOut {
            id: format!("sha256:{}", "ab".repeat(32)),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: vec!["127.0.0.1:5000/x@sha256:dd".into()],
            size: 4_300_000,
            uid: None,
            username: String::new(),
            pinned: false,
        }
    }

    #[test]
    fn one_row_per_tag_and_none_for_untagged() {
        assert_eq!(rows(&image(&[]), false, false), vec![vec!["127.0.0.1:5000/x", "<none>", "abababababab", "4.3MB"]]);
        assert_eq!(rows(&image(&["127.0.0.1:5000/x:1"]), false, false).len(), 1);
        let two = rows(&image(&["127.0.0.1:5000/x:1", "127.0.0.1:5000/x:2"]), true, false);
        assert_eq!(two.len(), 2);
        assert_eq!(two[1], vec!["127.0.0.1:5000/x", "2", "sha256:dd", "abababababab", "4.3MB"]);
    }
}
