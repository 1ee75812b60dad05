//! The memory backend as a whole: always reachable, and its state lives as
//! long as the process, so the resync signal never fires and the epoch is
//! the trait's constant.

use super::MemoryBackend;
use crate::backend::Health;
use async_trait::async_trait;

#[async_trait]
impl Health for MemoryBackend {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn is_available(&self) -> bool {
        true
    }
}
