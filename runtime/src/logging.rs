//! In progress.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("placeholder")]
    Placeholder,
}
