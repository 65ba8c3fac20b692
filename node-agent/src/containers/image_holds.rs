//! Images held by containers. A container's rootfs uses its image's layers as overlay lowerdirs, so the image stays
//! while a container of it exists (its record says so) and while one is being created: between resolving the
//! image and saving the container's record, which the records alone do not show.
//!
//! RemoveImage checks and removes under the gate's write side; CreateContainer resolves and takes its hold under
//! the read side, so neither can slip between the other's two steps.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use reef_images::store::{ImageRecord, Store};

#[derive(Default)]
pub struct ImageHolds {
    gate: RwLock<()>,
    creating: Mutex<HashMap<String, usize>>,
}

/// A creation's hold on its image, given back when dropped (once the container's record is in place, or on
/// failure).
pub struct Hold<'a> {
    holds: &'a ImageHolds,
    id: String,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let mut creating = self.holds.creating.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = creating.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                creating.remove(&self.id);
            }
        }
    }
}

impl ImageHolds {
    /// Resolves `name` and holds the image for a container being created.
    pub fn resolve<'a>(&'a self, store: &Store, name: &str) -> Option<(ImageRecord, Hold<'a>)> {
        let _gate = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let image = store.resolve(name)?;
        *self.creating.lock().unwrap_or_else(|p| p.into_inner()).entry(image.id.clone()).or_default() += 1;
        let hold = Hold { holds: self, id: image.id.clone() };
        Some((image, hold))
    }

    /// Runs `remove` unless `in_use` names a user of the image `name` resolves to, or a creation holds it.
    pub fn remove_unless_used<T, E>(
        &self,
        store: &Store,
        name: &str,
        in_use: impl FnOnce(&str) -> Option<String>,
        remove: impl FnOnce() -> Result<T, E>,
    ) -> Result<Result<T, E>, String> {
        let _gate = self.gate.write().unwrap_or_else(|p| p.into_inner());
        if let Some(image) = store.resolve(name) {
            if let Some(user) = in_use(&image.id) {
                return Err(user);
            }
            if self.creating.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&image.id) {
                return Err("a container being created".into());
            }
        }
        Ok(remove())
    }
}
