//! Bus subjects that one service publishes and others listen to. A service
//! crate never depends on another, so the names they share live here.

/// A user changed (role, ban, trust score, name); the payload is the user id.
/// Whoever caches users forgets that one.
pub const USER_CHANGED: &str = "user.changed";

/// The schedule or a channel changed; the payload names the channels whose
/// slots or details changed, one id per line, and is empty when anything may
/// have changed. Whoever caches what is on air forgets it.
pub const MEDIA_CHANGED: &str = "media.changed";

/// The channel ids a [`MEDIA_CHANGED`] payload names, or `None` when it
/// names none: anything may have changed.
pub fn changed_channels(payload: &[u8]) -> Option<Vec<&str>> {
    let text = std::str::from_utf8(payload).ok()?;
    let ids: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .collect();
    (!ids.is_empty()).then_some(ids)
}
