//! In progress.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("placeholder")]
    Placeholder,
}
