//! In progress.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("placeholder")]
    Placeholder,
}
