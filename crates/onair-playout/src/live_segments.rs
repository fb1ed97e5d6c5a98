//! The received live segments of every live slot, kept in memory: the
//! timeline reads a live slot's list for every segment it places, and
//! ingest appends to it as an encoder's playlist names new segments.
//!
//! Read from the [`tables`](crate::tables) once per slot; each append is
//! written there first, so the list survives a restart.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::error::PlayoutError;
use crate::tables::PlayoutStore;
use crate::timeline::LiveSegment;

/// The received live segments of every live slot, read from the store once
/// per slot and kept.
#[derive(Clone)]
pub struct LiveSegments {
    store: PlayoutStore,
    slots: Arc<RwLock<HashMap<String, Arc<Vec<LiveSegment>>>>>,
}

impl LiveSegments {
    /// An empty cache over `store`.
    pub fn new(store: PlayoutStore) -> LiveSegments {
        LiveSegments {
            store,
            slots: Arc::default(),
        }
    }

    /// A slot's segments, in order.
    pub async fn segments(&self, slot_id: &str) -> Result<Arc<Vec<LiveSegment>>, PlayoutError> {
        if let Ok(slots) = self.slots.read()
            && let Some(segments) = slots.get(slot_id)
        {
            return Ok(segments.clone());
        }
        let segments = Arc::new(self.store.live_segments(slot_id).await?);
        if let Ok(mut slots) = self.slots.write() {
            slots
                .entry(slot_id.to_owned())
                .or_insert_with(|| segments.clone());
        }
        Ok(segments)
    }

    /// Records newly numbered segments of a slot.
    pub(crate) async fn append(
        &self,
        slot_id: &str,
        new: Vec<LiveSegment>,
    ) -> Result<(), PlayoutError> {
        self.store.append_live_segments(&new).await?;
        let current = self.segments(slot_id).await?;
        let mut all = Vec::with_capacity(current.len() + new.len());
        all.extend(current.iter().cloned());
        all.extend(new);
        if let Ok(mut slots) = self.slots.write() {
            slots.insert(slot_id.to_owned(), Arc::new(all));
        }
        Ok(())
    }
}
