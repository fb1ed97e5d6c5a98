//! The JSON of recent large responses, found again by their exact protobuf
//! encoding.
//!
//! Turning a message known only by its descriptor into JSON is the gateway's
//! most expensive step: for a broadcast day of a whole station (a 1.5 MB
//! answer) it takes tens of milliseconds, and the same day is asked for by
//! every viewer who opens the guide. The services already cache such answers,
//! so the gateway receives the same bytes again and again; the same bytes of
//! the same method always make the same JSON, so it is made once.
//!
//! Answers are matched on the method, the length and then every byte, so an
//! answer is never mistaken for another. Only answers of at least
//! [`MIN_MEMO_BYTES`] are kept (small ones are cheaper to transcode than to
//! compare), and at most [`MAX_MEMO_BYTES`] in all, the oldest going first.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

/// The smallest protobuf answer worth remembering, in bytes.
pub const MIN_MEMO_BYTES: usize = 64 * 1024;
/// The most bytes (protobuf and JSON together) kept for all answers.
pub const MAX_MEMO_BYTES: usize = 64 * 1024 * 1024;

/// Remembered answers, shared by every request of a gateway.
#[derive(Default)]
pub struct JsonMemo {
    memo: Mutex<Memo>,
}

#[derive(Default)]
struct Memo {
    /// Oldest first.
    answers: VecDeque<Arc<RememberedAnswer>>,
    /// Protobuf and JSON bytes of every answer kept.
    total_bytes: usize,
}

/// One answer kept: its protobuf bytes and the JSON made from them.
struct RememberedAnswer {
    /// What makes the JSON besides the bytes: the method and the route's
    /// response body field.
    rendering: String,
    protobuf: Bytes,
    json: Bytes,
}

impl RememberedAnswer {
    fn size(&self) -> usize {
        self.protobuf.len() + self.json.len()
    }
}

impl JsonMemo {
    pub fn new() -> JsonMemo {
        JsonMemo::default()
    }

    fn memo(&self) -> MutexGuard<'_, Memo> {
        self.memo
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether an answer of this size is remembered at all.
    pub fn worth_remembering(protobuf: &[u8]) -> bool {
        protobuf.len() >= MIN_MEMO_BYTES
    }

    /// The JSON made before from exactly these bytes, rendered the same way.
    pub fn get(&self, rendering: &str, protobuf: &[u8]) -> Option<Bytes> {
        let candidates: Vec<Arc<RememberedAnswer>> = self
            .memo()
            .answers
            .iter()
            .filter(|kept| kept.protobuf.len() == protobuf.len() && kept.rendering == rendering)
            .cloned()
            .collect();
        // Compared outside the lock: a few hundred kilobytes each.
        candidates
            .into_iter()
            .find(|kept| kept.protobuf.as_ref() == protobuf)
            .map(|kept| kept.json.clone())
    }

    /// Remembers the JSON of an answer, forgetting the oldest ones beyond the
    /// size bound.
    pub fn put(&self, rendering: &str, protobuf: Bytes, json: Bytes) {
        let answer = Arc::new(RememberedAnswer {
            rendering: rendering.to_owned(),
            protobuf,
            json,
        });
        if !JsonMemo::worth_remembering(&answer.protobuf) || answer.size() > MAX_MEMO_BYTES {
            return;
        }
        let mut memo = self.memo();
        let already = memo
            .answers
            .iter()
            .any(|kept| kept.rendering == answer.rendering && kept.protobuf == answer.protobuf);
        if already {
            return;
        }
        memo.total_bytes += answer.size();
        memo.answers.push_back(answer);
        while memo.total_bytes > MAX_MEMO_BYTES {
            let Some(oldest) = memo.answers.pop_front() else {
                break;
            };
            memo.total_bytes -= oldest.size();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(fill: u8, length: usize) -> Bytes {
        Bytes::from(vec![fill; length])
    }

    #[test]
    fn only_the_same_bytes_of_the_same_rendering_find_the_json() {
        let memo = JsonMemo::new();
        let day = answer(1, MIN_MEMO_BYTES);
        memo.put(
            "GetTimetable",
            day.clone(),
            Bytes::from_static(b"{\"day\":1}"),
        );
        assert_eq!(
            memo.get("GetTimetable", &day).as_deref(),
            Some(&b"{\"day\":1}"[..])
        );
        let mut other_day = day.to_vec();
        other_day[MIN_MEMO_BYTES / 2] = 2;
        assert!(memo.get("GetTimetable", &other_day).is_none());
        assert!(memo.get("ListChannels", &day).is_none());
    }

    #[test]
    fn small_answers_are_not_kept_and_the_oldest_go_first() {
        let memo = JsonMemo::new();
        let small = answer(1, 100);
        memo.put("GetTimetable", small.clone(), Bytes::from_static(b"{}"));
        assert!(memo.get("GetTimetable", &small).is_none());

        let big = MAX_MEMO_BYTES / 3;
        let first = answer(1, big);
        let second = answer(2, big);
        let third = answer(3, big);
        for protobuf in [&first, &second, &third] {
            memo.put("GetTimetable", protobuf.clone(), answer(9, 1000));
        }
        assert!(memo.get("GetTimetable", &first).is_none(), "evicted");
        assert!(memo.get("GetTimetable", &second).is_some());
        assert!(memo.get("GetTimetable", &third).is_some());
    }
}
