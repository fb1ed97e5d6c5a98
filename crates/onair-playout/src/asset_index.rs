//! The playable assets' segment lists, in memory: the timeline reads them
//! for every segment it places, so they must not cost a query.
//!
//! A cache, never the record: the assets themselves are rows in the
//! [`tables`](crate::tables) (read once at start, then kept current by the
//! transcoder), and their segment files are in the
//! [`segment_store`](crate::segment_store).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::error::PlayoutError;
use crate::tables::{AssetRecord, PlayoutStore};

/// How many assets one read of the table returns while loading.
const LOAD_PAGE: i64 = 1000;

/// Segment durations of every asset that can air with the station's ladder.
#[derive(Clone, Default)]
pub struct AssetIndex {
    ladder_names: Arc<Vec<String>>,
    playable: Arc<RwLock<HashMap<String, Vec<i64>>>>,
}

impl AssetIndex {
    /// An empty index for a station whose ladder has these rendition names.
    pub fn new(ladder_names: Vec<String>) -> AssetIndex {
        AssetIndex {
            ladder_names: Arc::new(ladder_names),
            playable: Arc::default(),
        }
    }

    /// Reads every ready asset from the store.
    pub async fn load(&self, store: &PlayoutStore) -> Result<(), PlayoutError> {
        let mut after = String::new();
        loop {
            let page = store.assets_page(&after, LOAD_PAGE).await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = last.id.clone();
            for asset in &page {
                self.insert(asset);
            }
        }
    }

    /// Adds an asset if it can air with the station's ladder.
    pub fn insert(&self, asset: &AssetRecord) {
        if !asset.playable(&self.ladder_names) {
            return;
        }
        if let Ok(mut playable) = self.playable.write() {
            playable.insert(asset.id.clone(), asset.segment_durations_ms.clone());
        }
    }

    /// The segment durations of the playable assets among `ids`.
    pub fn durations_of<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> HashMap<String, Vec<i64>> {
        let mut found = HashMap::new();
        let Ok(playable) = self.playable.read() else {
            return found;
        };
        for id in ids {
            if let Some(durations) = playable.get(id) {
                found.insert(id.to_owned(), durations.clone());
            }
        }
        found
    }

    /// Whether the asset can air, i.e. it is in the index.
    pub fn contains(&self, id: &str) -> bool {
        self.playable
            .read()
            .map(|playable| playable.contains_key(id))
            .unwrap_or(false)
    }
}
