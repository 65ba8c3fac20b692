//! Single-use tokens for streaming URLs, as kubelet's streaming library keeps them: a CRI Exec, Attach or
//! PortForward call stores its request under a random token; the first connection to the URL takes it, and a
//! token nobody uses expires. A bounded number may be pending, so a caller that never connects cannot make reefd
//! hold unbounded requests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;

/// Kubelet's limit on requests waiting for their connection.
pub const MAX_PENDING: usize = 1000;

pub struct Tokens<T> {
    ttl: Duration,
    pending: Mutex<HashMap<String, (Instant, T)>>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl<T> Tokens<T> {
    pub fn new(ttl: Duration) -> Tokens<T> {
        Tokens { ttl, pending: Mutex::new(HashMap::new()) }
    }

    /// Stores `value` under a new token (16 random bytes, URL-safe base64).
    pub fn insert(&self, value: T) -> Result<String, Full> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        pending.retain(|_, (expires, _)| *expires > now);
        if pending.len() >= MAX_PENDING {
            return Err(Full);
        }
        let token = loop {
            let mut raw = [0u8; 16];
            rand::rng().fill_bytes(&mut raw);
            let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
            if !pending.contains_key(&token) {
                break token;
            }
        };
        pending.insert(token.clone(), (now + self.ttl, value));
        Ok(token)
    }

    /// Takes the request stored under `token`, once: a second call, or one after expiry, gets nothing.
    pub fn take(&self, token: &str) -> Option<T> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (expires, value) = pending.remove(token)?;
        (expires > Instant::now()).then_some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_works_once() {
        let tokens = Tokens::new(Duration::from_secs(60));
        let t = tokens.insert(7).unwrap();
        assert_eq!(tokens.take(&t), Some(7));
        assert_eq!(tokens.take(&t), None);
        assert_eq!(tokens.take("made-up"), None);
    }

    #[test]
    fn an_unused_token_expires() {
        let tokens = Tokens::new(Duration::from_millis(1));
        let t = tokens.insert(1).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(tokens.take(&t), None);
    }

    #[test]
    fn pending_tokens_are_bounded_and_expired_ones_make_room() {
        let tokens = Tokens::new(Duration::from_secs(60));
        for i in 0..MAX_PENDING {
            tokens.insert(i).unwrap();
        }
        assert_eq!(tokens.insert(0), Err(Full));
        // Time passes: every pending token is now past its expiry.
        let past = Instant::now() - Duration::from_secs(1);
        tokens.pending.lock().unwrap().values_mut().for_each(|(expires, _)| *expires = past);
        assert!(tokens.insert(0).is_ok());
    }

    #[test]
    fn tokens_are_url_safe_and_distinct() {
        let tokens = Tokens::new(Duration::from_secs(60));
        let (a, b) = (tokens.insert(()).unwrap(), tokens.insert(()).unwrap());
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
