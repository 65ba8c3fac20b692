//! The CRI's list filters, one rule for ListContainers, ListContainerStats, ListPodSandbox and
//! ListPodSandboxStats: an id prefix, a pod id prefix (containers), and labels that must all match. State filters
//! need an observation and stay with the RPCs that have one.

use std::collections::{BTreeMap, HashMap};

use k8s_cri::v1 as cri;

use crate::containers::ContainerRecord;
use crate::pods::PodRecord;

#[derive(Default)]
pub struct Selector {
    id: String,
    pod_id: String,
    labels: HashMap<String, String>,
}

impl Selector {
    pub fn container(&self, c: &ContainerRecord) -> bool {
        self.selects(&c.id, &c.labels) && (self.pod_id.is_empty() || c.pod_id.starts_with(&self.pod_id))
    }

    pub fn pod(&self, p: &PodRecord) -> bool {
        self.selects(&p.id, &p.labels)
    }

    fn selects(&self, id: &str, labels: &BTreeMap<String, String>) -> bool {
        id.starts_with(&self.id) && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

impl From<&cri::ContainerFilter> for Selector {
    fn from(f: &cri::ContainerFilter) -> Self {
        Selector { id: f.id.clone(), pod_id: f.pod_sandbox_id.clone(), labels: f.label_selector.clone() }
    }
}

impl From<&cri::ContainerStatsFilter> for Selector {
    fn from(f: &cri::ContainerStatsFilter) -> Self {
        Selector { id: f.id.clone(), pod_id: f.pod_sandbox_id.clone(), labels: f.label_selector.clone() }
    }
}

impl From<&cri::PodSandboxFilter> for Selector {
    fn from(f: &cri::PodSandboxFilter) -> Self {
        Selector { id: f.id.clone(), labels: f.label_selector.clone(), ..Default::default() }
    }
}

impl From<&cri::PodSandboxStatsFilter> for Selector {
    fn from(f: &cri::PodSandboxStatsFilter) -> Self {
        Selector { id: f.id.clone(), labels: f.label_selector.clone(), ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixes_and_every_label_must_match() {
        let selector = Selector::from(&cri::ContainerFilter {
            id: "ab".into(),
            pod_sandbox_id: "p1".into(),
            label_selector: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        });
        let mut c = ContainerRecord::for_tests("abc", "p123");
        c.labels = [("app".to_string(), "web".to_string()), ("tier".to_string(), "x".to_string())].into();
        assert!(selector.container(&c));
        c.pod_id = "p2".into();
        assert!(!selector.container(&c), "another pod");
        c.pod_id = "p1".into();
        c.labels.insert("app".into(), "db".into());
        assert!(!selector.container(&c), "a label differs");
        assert!(Selector::default().container(&c), "no filter selects all");
    }
}
