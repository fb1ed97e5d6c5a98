//! Channels, programs and slots read by id, one or a batch at a time: the
//! get and batch-get calls of all three, written once over [`Lookup`].

use std::collections::HashMap;

use onair_kit::store::StoreError;
use onair_proto::media::v1 as pb;
use tonic::{Request, Response, Status};

use super::desk::Desk;
use crate::error::MediaError;
use crate::model::{self, ChannelRecord, ProgramRecord, SlotRecord};
use crate::store::MediaStore;

/// A record that callers read by id, one or a batch at a time.
pub(super) trait Lookup: Sized {
    /// The message it is answered as.
    type Proto;
    /// The request field that names one, in errors about a bad id.
    const ID_FIELD: &'static str;
    /// What a batch of them is called, in errors about a batch's size.
    const PLURAL: &'static str;

    /// Its id.
    fn id(&self) -> &String;
    /// It as the message it is answered as.
    fn to_proto(&self) -> Self::Proto;
    /// The error for an id that nothing has.
    fn not_found(id: &str) -> MediaError;
    /// The stored one with this id, if any.
    fn one(
        store: &MediaStore,
        id: &str,
    ) -> impl Future<Output = Result<Option<Self>, StoreError>> + Send;
    /// The stored ones with these ids, in no particular order.
    fn many(
        store: &MediaStore,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<Self>, StoreError>> + Send;
}

impl Lookup for ChannelRecord {
    type Proto = pb::Channel;
    const ID_FIELD: &'static str = "channel_id";
    const PLURAL: &'static str = "channels";

    fn id(&self) -> &String {
        &self.id
    }

    fn to_proto(&self) -> pb::Channel {
        ChannelRecord::to_proto(self)
    }

    fn not_found(id: &str) -> MediaError {
        MediaError::channel_not_found(id)
    }

    fn one(
        store: &MediaStore,
        id: &str,
    ) -> impl Future<Output = Result<Option<Self>, StoreError>> + Send {
        store.channel(id)
    }

    fn many(
        store: &MediaStore,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<Self>, StoreError>> + Send {
        store.channels(ids)
    }
}

impl Lookup for ProgramRecord {
    type Proto = pb::Program;
    const ID_FIELD: &'static str = "program_id";
    const PLURAL: &'static str = "programs";

    fn id(&self) -> &String {
        &self.id
    }

    fn to_proto(&self) -> pb::Program {
        ProgramRecord::to_proto(self)
    }

    fn not_found(id: &str) -> MediaError {
        MediaError::program_not_found(id)
    }

    fn one(
        store: &MediaStore,
        id: &str,
    ) -> impl Future<Output = Result<Option<Self>, StoreError>> + Send {
        store.program(id)
    }

    fn many(
        store: &MediaStore,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<Self>, StoreError>> + Send {
        store.programs(ids)
    }
}

impl Lookup for SlotRecord {
    type Proto = pb::Slot;
    const ID_FIELD: &'static str = "slot_id";
    const PLURAL: &'static str = "slots";

    fn id(&self) -> &String {
        &self.id
    }

    fn to_proto(&self) -> pb::Slot {
        SlotRecord::to_proto(self)
    }

    fn not_found(id: &str) -> MediaError {
        MediaError::slot_not_found(id)
    }

    fn one(
        store: &MediaStore,
        id: &str,
    ) -> impl Future<Output = Result<Option<Self>, StoreError>> + Send {
        store.slot(id)
    }

    fn many(
        store: &MediaStore,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<Self>, StoreError>> + Send {
        store.slots(ids)
    }
}

/// `GetChannel`, `GetProgram` and `GetSlot`: one record, by the id the
/// request names.
pub(super) async fn get<R: Lookup, Q>(
    desk: &Desk,
    request: Request<Q>,
    id_of: fn(&Q) -> &String,
) -> Result<Response<R::Proto>, Status> {
    desk.reader(&request).await?;
    let record = existing::<R>(desk, id_of(request.get_ref())).await?;
    Ok(Response::new(record.to_proto()))
}

/// The stored record with this id, or why there is none: the id is
/// malformed, or nothing has it.
pub(super) async fn existing<R: Lookup>(desk: &Desk, id: &str) -> Result<R, MediaError> {
    model::require_id(R::ID_FIELD, id)?;
    R::one(&desk.store, id)
        .await?
        .ok_or_else(|| R::not_found(id))
}

/// `BatchGetChannels`, `BatchGetPrograms` and `BatchGetSlots`: the records
/// in the order asked and the ids not found, put into the answer by
/// `answer`.
pub(super) async fn batch_get<R: Lookup, Q, A>(
    desk: &Desk,
    request: Request<Q>,
    ids_of: fn(Q) -> Vec<String>,
    answer: fn(Vec<R::Proto>, Vec<String>) -> A,
) -> Result<Response<A>, Status> {
    desk.reader(&request).await?;
    let ids = ids_of(request.into_inner());
    desk.check_batch_size(ids.len(), R::PLURAL)?;
    let found = R::many(&desk.store, &well_formed_unique(&ids))
        .await
        .map_err(MediaError::from)?;
    let (records, missing_ids) = in_asked_order(&ids, &found, R::id, R::to_proto);
    Ok(Response::new(answer(records, missing_ids)))
}

/// The ids of a batch request that could exist (well-formed), once each.
pub(super) fn well_formed_unique(ids: &[String]) -> Vec<String> {
    let mut unique: Vec<String> = ids
        .iter()
        .filter(|id| model::validate_id("id", id).is_ok())
        .cloned()
        .collect();
    unique.sort();
    unique.dedup();
    unique
}

/// A multi-get's answer: the found records in the order asked (repeats
/// included), and the ids that were not found.
fn in_asked_order<R, P>(
    ids: &[String],
    found: &[R],
    id_of: impl Fn(&R) -> &String,
    to_proto: impl Fn(&R) -> P,
) -> (Vec<P>, Vec<String>) {
    let by_id: HashMap<&str, &R> = found
        .iter()
        .map(|record| (id_of(record).as_str(), record))
        .collect();
    let mut protos = Vec::with_capacity(ids.len());
    let mut missing = Vec::new();
    for id in ids {
        match by_id.get(id.as_str()) {
            Some(record) => protos.push(to_proto(record)),
            None => missing.push(id.clone()),
        }
    }
    (protos, missing)
}
