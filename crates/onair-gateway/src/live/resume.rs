//! Resumes: where a viewer that reconnects asks to start (`?after=`,
//! `&epoch=`, or SSE's `Last-Event-ID`), and the query it is told to
//! reconnect with.

/// A viewer's resume: the last offset it saw, and its epoch if it said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Resume {
    pub(super) epoch: Option<u64>,
    pub(super) after: u64,
}

/// `?after=OFFSET&epoch=EPOCH` (or `?after=EPOCH:OFFSET`), or SSE's
/// `Last-Event-ID` header (`EPOCH:OFFSET`) on a browser's reconnect.
pub(super) fn resume_position(parts: &http::request::Parts) -> Result<Option<Resume>, String> {
    let query_value = |wanted: &str| {
        parts.uri.query().and_then(|query| {
            form_urlencoded::parse(query.as_bytes())
                .find(|(name, _)| name == wanted)
                .map(|(_, value)| value.into_owned())
        })
    };
    let from_query = query_value("after");
    let from_header = || {
        parts
            .headers
            .get("last-event-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let Some(value) = from_query.or_else(from_header) else {
        return Ok(None);
    };
    let unusable = || {
        format!(
            "after must be an event offset (a whole number such as 42, or EPOCH:OFFSET as in an event id), not {value:?}"
        )
    };
    let (named_epoch, offset) = match value.trim().split_once(':') {
        Some((epoch, offset)) => (Some(epoch.to_owned()), offset),
        None => (None, value.trim()),
    };
    let after = offset.parse::<u64>().map_err(|_| unusable())?;
    let epoch = match named_epoch.or_else(|| query_value("epoch")) {
        None => None,
        Some(epoch) => Some(epoch.trim().parse::<u64>().map_err(|_| {
            format!(
                "epoch must be the live stream's epoch as the ready event gives it (digits), not {epoch:?}"
            )
        })?),
    };
    Ok(Some(Resume { epoch, after }))
}

/// How a viewer resumes from a position: the query to reconnect with.
pub(super) fn resume_query((epoch, offset): (u64, u64)) -> String {
    format!("?after={offset}&epoch={epoch}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_offsets_come_from_the_query_or_last_event_id() {
        let parts = |uri: &str, header: Option<&str>| {
            let mut request = http::Request::builder().uri(uri);
            if let Some(header) = header {
                request = request.header("last-event-id", header);
            }
            request.body(()).unwrap().into_parts().0
        };
        let resume = |epoch, after| Ok(Some(Resume { epoch, after }));
        assert_eq!(
            resume_position(&parts("/live?after=42", None)),
            resume(None, 42)
        );
        assert_eq!(
            resume_position(&parts("/live?after=42&epoch=9", None)),
            resume(Some(9), 42)
        );
        assert_eq!(
            resume_position(&parts("/live?after=9:42", None)),
            resume(Some(9), 42)
        );
        assert_eq!(resume_position(&parts("/live", Some("7"))), resume(None, 7));
        assert_eq!(
            resume_position(&parts("/live", Some("3:7"))),
            resume(Some(3), 7)
        );
        assert_eq!(resume_position(&parts("/live", None)), Ok(None));
        assert!(resume_position(&parts("/live?after=yesterday", None)).is_err());
        assert!(resume_position(&parts("/live?after=1&epoch=today", None)).is_err());
        assert!(resume_position(&parts("/live?after=x:1", None)).is_err());
    }
}
