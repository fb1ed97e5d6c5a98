//! Operational events: who did what, when and why (bans, role changes,
//! moderation actions, schedule changes, playout faults). They go to one
//! durable stream on the bus so that an analysis system, an audit or the
//! console can replay them.

use bytes::Bytes;
use serde::Serialize;

use crate::bus::{DurableStream, SharedBus};
use crate::telemetry::TraceContext;

/// The durable stream every operational event is stored in.
pub const OPS_STREAM_NAME: &str = "ops";

/// The declaration of the operations stream: every subject under `ops.`.
pub fn ops_stream() -> DurableStream {
    DurableStream::new(OPS_STREAM_NAME, ["ops.>"])
}

/// One operational event, as stored (JSON).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpsEvent {
    /// What happened, e.g. `user.banned`; the bus subject is `ops.<kind>`.
    pub kind: String,
    /// Who did it: a user id, or the service's name for automatic actions.
    pub actor_id: String,
    /// What it was done to: a user, comment, channel or slot id.
    pub target_id: String,
    /// Why, in the actor's words.
    pub reason: String,
    /// When, in unix milliseconds.
    pub time_ms: i64,
    /// The trace of the request that caused it, to find its logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Event-specific fields.
    pub details: serde_json::Value,
}

impl OpsEvent {
    pub fn new(
        kind: &str,
        actor_id: &str,
        target_id: &str,
        reason: &str,
        time_ms: i64,
        details: serde_json::Value,
    ) -> OpsEvent {
        OpsEvent {
            kind: kind.to_owned(),
            actor_id: actor_id.to_owned(),
            target_id: target_id.to_owned(),
            reason: reason.to_owned(),
            time_ms,
            trace_id: TraceContext::current().map(|context| context.trace_id_hex()),
            details,
        }
    }
}

/// Stores an event in the operations stream. The action it describes has
/// already been stored by its service, so a bus failure is logged, not
/// returned: the caller's request succeeded.
pub async fn record(bus: &SharedBus, event: &OpsEvent) {
    let subject = format!("ops.{}", event.kind);
    let payload = match serde_json::to_vec(event) {
        Ok(payload) => Bytes::from(payload),
        Err(error) => {
            tracing::error!(error = %error, kind = %event.kind, "cannot encode an operational event");
            return;
        }
    };
    match bus.publish_durable(&subject, payload).await {
        Ok(sequence) => tracing::debug!(subject, sequence, "stored an operational event"),
        Err(error) => {
            tracing::warn!(error = %error, subject, target_id = %event.target_id, "cannot store an operational event")
        }
    }
}
