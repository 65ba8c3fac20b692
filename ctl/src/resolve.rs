//! Containers and pods named as docker users name them: a full id, a name, or a unique id prefix, in that
//! order. What matches nothing is passed on unchanged, so reefd's own NotFound says what is missing.

use k8s_cri::v1 as cri;

use crate::client::{Clients, status_error};

/// The id `arg` means among `(id, name)` pairs; an error when a name or prefix fits more than one.
pub fn pick(arg: &str, candidates: &[(String, String)]) -> Result<Option<String>, String> {
    if let Some((id, _)) = candidates.iter().find(|(id, _)| id == arg) {
        return Ok(Some(id.clone()));
    }
    let ambiguous = |what: &str, ids: Vec<&String>| {
        let ids: Vec<String> = ids.iter().map(|i| i.chars().take(12).collect()).collect();
        format!("{what} {arg:?} is ambiguous: {}", ids.join(", "))
    };
    let named: Vec<&String> = candidates.iter().filter(|(_, n)| n == arg).map(|(id, _)| id).collect();
    match named.as_slice() {
        [one] => return Ok(Some((*one).clone())),
        [] => {}
        _ => return Err(ambiguous("name", named)),
    }
    let prefixed: Vec<&String> = candidates.iter().filter(|(id, _)| id.starts_with(arg)).map(|(id, _)| id).collect();
    match prefixed.as_slice() {
        [one] => Ok(Some((*one).clone())),
        [] => Ok(None),
        _ => Err(ambiguous("id prefix", prefixed)),
    }
}

pub async fn container(clients: &Clients, arg: &str) -> anyhow::Result<String> {
    let containers = clients
        .runtime()
        .list_containers(cri::ListContainersRequest { filter: None })
        .await
        .map_err(|s| status_error("list containers", s))?
        .into_inner()
        .containers;
    let candidates: Vec<(String, String)> =
        containers.into_iter().map(|c| (c.id, c.metadata.map(|m| m.name).unwrap_or_default())).collect();
    Ok(pick(arg, &candidates).map_err(anyhow::Error::msg)?.unwrap_or_else(|| arg.to_string()))
}

pub async fn pod(clients: &Clients, arg: &str) -> anyhow::Result<String> {
    let pods = clients
        .runtime()
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .map_err(|s| status_error("list pods", s))?
        .into_inner()
        .items;
    let candidates: Vec<(String, String)> =
        pods.into_iter().map(|p| (p.id, p.metadata.map(|m| m.name).unwrap_or_default())).collect();
    Ok(pick(arg, &candidates).map_err(anyhow::Error::msg)?.unwrap_or_else(|| arg.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_then_names_then_prefixes() {
        let c = |id: &str, name: &str| (id.to_string(), name.to_string());
        let all =
            [c("abc123", "web"), c("abd456", "db"), c("web999", "cache"), c("fff000", "twin"), c("eee000", "twin")];
        assert_eq!(pick("abc123", &all), Ok(Some("abc123".into())));
        assert_eq!(pick("web", &all), Ok(Some("abc123".into())), "a name before an id prefix");
        assert_eq!(pick("abd", &all), Ok(Some("abd456".into())));
        assert!(pick("ab", &all).unwrap_err().contains("ambiguous"));
        assert!(pick("twin", &all).unwrap_err().contains("name \"twin\" is ambiguous"));
        assert_eq!(pick("nope", &all), Ok(None));
    }
}
