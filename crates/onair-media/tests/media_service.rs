//! The media service end to end: a real server on port 0 with the real user
//! service beside it, reached over gRPC, on SQLite and on PostgreSQL.

use std::time::Duration;

use futures::StreamExt;
use onair_media::MediaServiceSettings;
use onair_media::schedule_file::{self, FileFormat};
use onair_proto::media::v1 as pb;
use onair_testkit::media::{BusKind, MediaStation, at, instant, rfc3339};
use onair_testkit::{Backend, assert_eventually, authorized, on_both_backends};
use tonic::Code;

/// How long a test waits for an event that should arrive at once.
const EVENT_WAIT: Duration = Duration::from_secs(10);

on_both_backends!(
    multi_thread;
    channels_and_programs_are_created_listed_and_batch_read,
    overlapping_slots_are_refused_naming_the_conflict,
    a_slot_shorter_than_its_program_needs_cut,
    now_and_next_follow_the_clock_across_a_slot_boundary,
    gaps_are_reported_for_the_slate,
    a_tokyo_broadcast_day_runs_from_five_to_five,
    watch_schedule_hears_changes_from_the_bus,
    watch_schedule_works_over_nats,
    another_process_hears_changes_over_nats,
    a_cached_station_timetable_follows_each_write,
    an_import_applies_all_or_nothing_with_line_numbered_errors,
    concurrent_overlapping_creates_have_exactly_one_winner,
    unknown_ids_are_not_found_and_bad_times_are_invalid,
    viewers_read_but_cannot_write,
    slots_on_air_change_only_when_forced,
);

async fn channels_and_programs_are_created_listed_and_batch_read(backend: Backend) {
    let station = MediaStation::start(backend).await;
    let mut client = station.media_client().await;

    let news = station.create_channel("news-1", 1, "onair News").await;
    assert_eq!(news.id, "news-1");
    assert_eq!(
        news.comments_enabled,
        Some(true),
        "comments are on by default"
    );
    // No id and no number: both are made up.
    let anime = station.create_channel("", 0, "Anime").await;
    assert_eq!(anime.number, 2, "the next free number");
    assert!(!anime.id.is_empty());

    let taken = client
        .create_channel(station.as_operator(pb::CreateChannelRequest {
            channel: Some(pb::Channel {
                id: "sports".to_owned(),
                number: 1,
                name: "Sports".to_owned(),
                ..Default::default()
            }),
        }))
        .await
        .expect_err("channel number 1 is taken");
    assert_eq!(taken.code(), Code::AlreadyExists);
    assert!(taken.message().contains("news-1"), "{}", taken.message());

    let bad_id = client
        .create_channel(station.as_operator(pb::CreateChannelRequest {
            channel: Some(pb::Channel {
                id: "News 1".to_owned(),
                name: "News".to_owned(),
                ..Default::default()
            }),
        }))
        .await
        .expect_err("ids are lowercase slugs");
    assert_eq!(bad_id.code(), Code::InvalidArgument);

    for number in 3..=5 {
        station
            .create_channel(&format!("extra-{number}"), number, "Extra")
            .await;
    }
    let first = client
        .list_channels(pb::ListChannelsRequest {
            page_size: 3,
            page_token: String::new(),
        })
        .await
        .expect("list channels")
        .into_inner();
    let numbers: Vec<i32> = first
        .channels
        .iter()
        .map(|channel| channel.number)
        .collect();
    assert_eq!(numbers, vec![1, 2, 3]);
    let second = client
        .list_channels(pb::ListChannelsRequest {
            page_size: 3,
            page_token: first.next_page_token.clone(),
        })
        .await
        .expect("second page")
        .into_inner();
    let numbers: Vec<i32> = second
        .channels
        .iter()
        .map(|channel| channel.number)
        .collect();
    assert_eq!(numbers, vec![4, 5]);
    assert!(second.next_page_token.is_empty());
    let bad_token = client
        .list_channels(pb::ListChannelsRequest {
            page_size: 3,
            page_token: "garbage".to_owned(),
        })
        .await
        .expect_err("an invalid page token");
    assert_eq!(bad_token.code(), Code::InvalidArgument);

    let batch = client
        .batch_get_channels(pb::BatchGetChannelsRequest {
            channel_ids: vec!["extra-4".to_owned(), "nope".to_owned(), "news-1".to_owned()],
        })
        .await
        .expect("batch get channels")
        .into_inner();
    let ids: Vec<&str> = batch
        .channels
        .iter()
        .map(|channel| channel.id.as_str())
        .collect();
    assert_eq!(ids, vec!["extra-4", "news-1"]);
    assert_eq!(batch.missing_channel_ids, vec!["nope".to_owned()]);

    let program = station.create_program("morning", "Morning News", 30).await;
    assert_eq!(program.duration.expect("duration").seconds, 1800);
    station.create_program("", "Weather", 5).await;
    let programs = client
        .list_programs(pb::ListProgramsRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .expect("list programs")
        .into_inner();
    assert_eq!(programs.programs.len(), 1);
    assert!(!programs.next_page_token.is_empty());
    let batch = client
        .batch_get_programs(pb::BatchGetProgramsRequest {
            program_ids: vec!["morning".to_owned(), "missing".to_owned()],
        })
        .await
        .expect("batch get programs")
        .into_inner();
    assert_eq!(batch.programs.len(), 1);
    assert_eq!(batch.missing_program_ids, vec!["missing".to_owned()]);

    let renamed = client
        .update_channel(station.as_operator(pb::UpdateChannelRequest {
            channel: Some(pb::Channel {
                id: "news-1".to_owned(),
                name: "onair News 24".to_owned(),
                comments_enabled: Some(false),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".to_owned(), "commentsEnabled".to_owned()],
            }),
        }))
        .await
        .expect("rename a channel")
        .into_inner();
    assert_eq!(renamed.name, "onair News 24");
    assert_eq!(renamed.comments_enabled, Some(false));
    assert_eq!(renamed.number, 1, "fields outside the mask stay");
}

async fn overlapping_slots_are_refused_naming_the_conflict(backend: Backend) {
    let station = MediaStation::start(backend).await;
    station.create_channel("news-1", 1, "News").await;
    station.create_channel("news-2", 2, "News 2").await;
    station.create_program("show", "Show", 30).await;

    let first = station
        .create_slot(
            "news-1",
            "show",
            "2030-04-01T10:00:00Z",
            "2030-04-01T10:30:00Z",
        )
        .await
        .expect("the first slot");
    assert_eq!(first.channel_id, "news-1");
    assert_eq!(first.comments_enabled, Some(true), "the channel's default");

    let refused = station
        .create_slot(
            "news-1",
            "show",
            "2030-04-01T10:15:00Z",
            "2030-04-01T10:45:00Z",
        )
        .await
        .expect_err("it overlaps the first slot");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let message = refused.message();
    assert!(message.contains(&first.id), "{message}");
    assert!(message.contains("2030-04-01T10:00:00Z"), "{message}");
    assert!(message.contains("2030-04-01T10:30:00Z"), "{message}");

    // A slot that ends where the first starts, or starts where it ends, is fine,
    // and so is the same time on another channel.
    station
        .create_slot(
            "news-1",
            "show",
            "2030-04-01T09:30:00Z",
            "2030-04-01T10:00:00Z",
        )
        .await
        .expect("back to back before");
    station
        .create_slot(
            "news-1",
            "show",
            "2030-04-01T10:30:00Z",
            "2030-04-01T11:00:00Z",
        )
        .await
        .expect("back to back after");
    station
        .create_slot(
            "news-2",
            "show",
            "2030-04-01T10:15:00Z",
            "2030-04-01T10:45:00Z",
        )
        .await
        .expect("another channel");

    // A slot that covers several is refused too.
    let covering = station
        .create_slot(
            "news-1",
            "show",
            "2030-04-01T09:00:00Z",
            "2030-04-01T12:00:00Z",
        )
        .await
        .expect_err("it covers three slots");
    assert_eq!(covering.code(), Code::FailedPrecondition);

    // Moving a slot onto another is refused the same way.
    let mut client = station.media_client().await;
    let moved = client
        .update_slot(station.as_operator(pb::UpdateSlotRequest {
            slot: Some(pb::Slot {
                id: first.id.clone(),
                start_time: Some(at("2030-04-01T10:20:00Z")),
                end_time: Some(at("2030-04-01T10:50:00Z")),
                ..Default::default()
            }),
            update_mask: None,
            force: false,
        }))
        .await
        .expect_err("moving onto the 10:30 slot");
    assert_eq!(moved.code(), Code::FailedPrecondition);
}

async fn a_slot_shorter_than_its_program_needs_cut(backend: Backend) {
    let station = MediaStation::start(backend).await;
    station.create_channel("movies", 1, "Movies").await;
    station.create_program("epic", "Epic", 120).await;

    let refused = station
        .create_slot(
            "movies",
            "epic",
            "2030-04-01T20:00:00Z",
            "2030-04-01T21:30:00Z",
        )
        .await
        .expect_err("90 minutes for a 2-hour film");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("cut"), "{}", refused.message());
    assert!(refused.message().contains("2h"), "{}", refused.message());

    let cut = station
        .create_slot_with(
            "movies",
            "epic",
            "2030-04-01T20:00:00Z",
            "2030-04-01T21:30:00Z",
            true,
        )
        .await
        .expect("a cut slot");
    assert!(cut.cut);
    station
        .create_slot(
            "movies",
            "epic",
            "2030-04-01T22:00:00Z",
            "2030-04-02T00:30:00Z",
        )
        .await
        .expect("a longer slot is fine");
}

async fn now_and_next_follow_the_clock_across_a_slot_boundary(backend: Backend) {
    let station = MediaStation::start(backend).await;
    station.create_channel("news-1", 1, "News").await;
    station.create_channel("news-2", 2, "Quiet").await;
    station.create_program("morning", "Morning", 30).await;
    station.create_program("weather", "Weather", 10).await;
    let morning = station
        .create_slot(
            "news-1",
            "morning",
            "2030-04-01T00:00:00Z",
            "2030-04-01T00:30:00Z",
        )
        .await
        .expect("morning slot");
    let weather = station
        .create_slot(
            "news-1",
            "weather",
            "2030-04-01T00:30:00Z",
            "2030-04-01T00:40:00Z",
        )
        .await
        .expect("weather slot");
    let mut client = station.media_client().await;

    let now_next = client
        .get_now_next(pb::GetNowNextRequest {
            channel_id: "news-1".to_owned(),
        })
        .await
        .expect("now/next")
        .into_inner();
    let now = now_next.now.expect("something is on air");
    assert_eq!(now.slot.expect("slot").id, morning.id);
    assert_eq!(now.program.expect("program").title, "Morning");
    assert_eq!(
        now_next.next.expect("next").slot.expect("slot").id,
        weather.id
    );

    // One millisecond before the boundary, still the morning show; at the
    // boundary, the weather.
    station
        .clock
        .advance(Duration::from_millis(30 * 60 * 1000 - 1));
    let now_next = client
        .get_now_next(pb::GetNowNextRequest {
            channel_id: "news-1".to_owned(),
        })
        .await
        .expect("now/next")
        .into_inner();
    assert_eq!(
        now_next.now.expect("on air").slot.expect("slot").id,
        morning.id
    );
    station.clock.advance(Duration::from_millis(1));
    let now_next = client
        .get_now_next(pb::GetNowNextRequest {
            channel_id: "news-1".to_owned(),
        })
        .await
        .expect("now/next")
        .into_inner();
    assert_eq!(
        now_next.now.expect("on air").slot.expect("slot").id,
        weather.id
    );
    assert!(now_next.next.is_none(), "nothing after the weather");

    // After the last slot: a gap, nothing next.
    station.clock.advance(Duration::from_secs(15 * 60));
    let batch = client
        .batch_get_now_next(pb::BatchGetNowNextRequest {
            channel_ids: vec!["news-2".to_owned(), "news-1".to_owned(), "gone".to_owned()],
        })
        .await
        .expect("batch now/next")
        .into_inner();
    let ids: Vec<&str> = batch
        .now_next
        .iter()
        .map(|entry| entry.channel_id.as_str())
        .collect();
    assert_eq!(ids, vec!["news-2", "news-1"], "in the order asked");
    assert!(
        batch
            .now_next
            .iter()
            .all(|entry| entry.now.is_none() && entry.next.is_none())
    );
    assert_eq!(batch.missing_channel_ids, vec!["gone".to_owned()]);

    // Empty means every channel, by number.
    station
        .create_slot(
            "news-2",
            "morning",
            "2030-04-01T01:00:00Z",
            "2030-04-01T01:30:00Z",
        )
        .await
        .expect("a later slot");
    let all = client
        .batch_get_now_next(pb::BatchGetNowNextRequest::default())
        .await
        .expect("every channel")
        .into_inner();
    assert_eq!(all.now_next.len(), 2);
    assert_eq!(all.now_next[0].channel_id, "news-1");
    let quiet = &all.now_next[1];
    assert!(quiet.now.is_none());
    assert_eq!(
        rfc3339(
            quiet
                .next
                .as_ref()
                .and_then(|next| next.slot.as_ref())
                .and_then(|slot| slot.start_time.as_ref())
        ),
        "2030-04-01T01:00:00Z"
    );
}

async fn gaps_are_reported_for_the_slate(backend: Backend) {
    let station = MediaStation::start(backend).await;
    station.create_channel("news-1", 1, "News").await;
    station.create_channel("news-2", 2, "Empty").await;
    station.create_program("show", "Show", 30).await;
    for (start, end) in [
        ("2030-04-01T05:40:00Z", "2030-04-01T06:10:00Z"),
        ("2030-04-01T06:30:00Z", "2030-04-01T07:00:00Z"),
        ("2030-04-01T07:00:00Z", "2030-04-01T07:30:00Z"),
    ] {
        station
            .create_slot("news-1", "show", start, end)
            .await
            .expect("a slot");
    }
    let mut client = station.media_client().await;
    let gaps = client
        .get_schedule_gaps(pb::GetScheduleGapsRequest {
            channel_id: "news-1".to_owned(),
            start_time: Some(at("2030-04-01T06:00:00Z")),
            end_time: Some(at("2030-04-01T08:00:00Z")),
        })
        .await
        .expect("gaps")
        .into_inner()
        .gaps;
    let spans: Vec<(String, String)> = gaps
        .iter()
        .map(|gap| {
            (
                rfc3339(gap.start_time.as_ref()),
                rfc3339(gap.end_time.as_ref()),
            )
        })
        .collect();
    assert_eq!(
        spans,
        vec![
            (
                "2030-04-01T06:10:00Z".to_owned(),
                "2030-04-01T06:30:00Z".to_owned()
            ),
            (
                "2030-04-01T07:30:00Z".to_owned(),
                "2030-04-01T08:00:00Z".to_owned()
            ),
        ]
    );

    let every_channel = client
        .get_schedule_gaps(pb::GetScheduleGapsRequest {
            channel_id: String::new(),
            start_time: Some(at("2030-04-01T06:00:00Z")),
            end_time: Some(at("2030-04-01T08:00:00Z")),
        })
        .await
        .expect("gaps of every channel")
        .into_inner()
        .gaps;
    assert_eq!(every_channel.len(), 3);
    let empty = &every_channel[2];
    assert_eq!(empty.channel_id, "news-2");
    assert_eq!(rfc3339(empty.start_time.as_ref()), "2030-04-01T06:00:00Z");
    assert_eq!(rfc3339(empty.end_time.as_ref()), "2030-04-01T08:00:00Z");
}

async fn a_tokyo_broadcast_day_runs_from_five_to_five(backend: Backend) {
    let settings = MediaServiceSettings::for_station("Asia/Tokyo", "05:00").expect("settings");
    let station = MediaStation::start_with(backend, BusKind::InProcess, settings).await;
    station.create_channel("tokyo-1", 1, "Tokyo 1").await;
    station.create_channel("tokyo-2", 2, "Tokyo 2").await;
    station.create_program("show", "Show", 30).await;
    // In Tokyo time: 04:30 on April 1st belongs to March 31st's broadcast
    // day; 05:00 starts April 1st's; 04:30 on April 2nd ("28:30") ends it.
    let slots = [
        ("tokyo-1", "2030-04-01T04:30:00+09:00"),
        ("tokyo-1", "2030-04-01T05:00:00+09:00"),
        ("tokyo-1", "2030-04-01T23:30:00+09:00"),
        ("tokyo-1", "2030-04-02T04:30:00+09:00"),
        ("tokyo-1", "2030-04-02T05:00:00+09:00"),
        ("tokyo-2", "2030-04-01T12:00:00+09:00"),
    ];
    for (channel, start) in slots {
        let start_time = instant(start);
        let end_time = start_time + Duration::from_secs(30 * 60);
        let end = jiff::Timestamp::try_from(end_time)
            .expect("time")
            .to_string();
        let start = jiff::Timestamp::try_from(start_time)
            .expect("time")
            .to_string();
        station
            .create_slot(channel, "show", &start, &end)
            .await
            .expect("a slot");
    }
    let mut client = station.media_client().await;
    let timetable = client
        .get_timetable(pb::GetTimetableRequest {
            broadcast_day: "2030-04-01".to_owned(),
            ..Default::default()
        })
        .await
        .expect("the station's broadcast day")
        .into_inner();
    assert_eq!(
        rfc3339(timetable.start_time.as_ref()),
        "2030-03-31T20:00:00Z"
    );
    assert_eq!(rfc3339(timetable.end_time.as_ref()), "2030-04-01T20:00:00Z");
    let channels: Vec<&str> = timetable
        .channels
        .iter()
        .map(|channel| channel.channel.as_ref().expect("channel").id.as_str())
        .collect();
    assert_eq!(channels, vec!["tokyo-1", "tokyo-2"]);
    let starts: Vec<String> = timetable.channels[0]
        .entries
        .iter()
        .map(|entry| {
            rfc3339(
                entry
                    .slot
                    .as_ref()
                    .and_then(|slot| slot.start_time.as_ref()),
            )
        })
        .collect();
    assert_eq!(
        starts,
        vec![
            "2030-03-31T20:00:00Z".to_owned(),
            "2030-04-01T14:30:00Z".to_owned(),
            "2030-04-01T19:30:00Z".to_owned(),
        ]
    );
    assert_eq!(
        timetable.channels[0].entries[0]
            .program
            .as_ref()
            .expect("each entry carries its program")
            .title,
        "Show"
    );
    assert_eq!(timetable.channels[1].entries.len(), 1);

    // The same day counted in UTC is another set of slots; one channel alone
    // is its own path.
    let utc = client
        .get_timetable(pb::GetTimetableRequest {
            channel_id: "tokyo-1".to_owned(),
            broadcast_day: "2030-04-01".to_owned(),
            time_zone: "UTC".to_owned(),
            ..Default::default()
        })
        .await
        .expect("a day in UTC")
        .into_inner();
    assert_eq!(utc.channels.len(), 1);
    assert_eq!(rfc3339(utc.start_time.as_ref()), "2030-04-01T05:00:00Z");

    // A range overlapping a slot's middle includes it.
    let range = client
        .get_timetable(pb::GetTimetableRequest {
            channel_id: "tokyo-1".to_owned(),
            start_time: Some(at("2030-03-31T20:15:00Z")),
            end_time: Some(at("2030-03-31T20:20:00Z")),
            ..Default::default()
        })
        .await
        .expect("a range")
        .into_inner();
    assert_eq!(range.channels[0].entries.len(), 1);

    let bad_zone = client
        .get_timetable(pb::GetTimetableRequest {
            broadcast_day: "2030-04-01".to_owned(),
            time_zone: "Tokyo".to_owned(),
            ..Default::default()
        })
        .await
        .expect_err("not an IANA name");
    assert_eq!(bad_zone.code(), Code::InvalidArgument);
    assert!(
        bad_zone.message().contains("IANA"),
        "{}",
        bad_zone.message()
    );
    let bad_day = client
        .get_timetable(pb::GetTimetableRequest {
            broadcast_day: "April 1st".to_owned(),
            ..Default::default()
        })
        .await
        .expect_err("not a date");
    assert_eq!(bad_day.code(), Code::InvalidArgument);
    assert!(
        bad_day.message().contains("YYYY-MM-DD"),
        "{}",
        bad_day.message()
    );
}

async fn watch_schedule(backend: Backend, bus: BusKind) {
    let station = MediaStation::start_with(backend, bus, MediaServiceSettings::default()).await;
    station.create_channel("news-1", 1, "News").await;
    station.create_channel("news-2", 2, "News 2").await;
    station.create_program("show", "Show", 30).await;
    let mut client = station.media_client().await;
    let mut one_channel = client
        .watch_schedule(pb::WatchScheduleRequest {
            channel_id: "news-1".to_owned(),
        })
        .await
        .expect("watch one channel")
        .into_inner();
    let mut every_channel = client
        .watch_schedule(pb::WatchScheduleRequest::default())
        .await
        .expect("watch every channel")
        .into_inner();

    let other = station
        .create_slot(
            "news-2",
            "show",
            "2030-04-01T10:00:00Z",
            "2030-04-01T10:30:00Z",
        )
        .await
        .expect("a slot on another channel");
    let created = station
        .create_slot(
            "news-1",
            "show",
            "2030-04-01T10:00:00Z",
            "2030-04-01T10:30:00Z",
        )
        .await
        .expect("a slot");

    let event = tokio::time::timeout(EVENT_WAIT, one_channel.next())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
        .expect("an event");
    assert_eq!(event.kind, pb::schedule_event::Kind::SlotCreated as i32);
    assert_eq!(event.channel_id, "news-1");
    assert_eq!(
        event.slot.expect("the slot").id,
        created.id,
        "news-2's slot is not news-1's business"
    );

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(EVENT_WAIT, every_channel.next())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
            .expect("an event");
        seen.push(event.slot.expect("a slot").id);
    }
    assert_eq!(seen, vec![other.id.clone(), created.id.clone()]);

    client
        .delete_slot(station.as_operator(pb::DeleteSlotRequest {
            slot_id: created.id.clone(),
            force: false,
        }))
        .await
        .expect("delete a future slot");
    let event = tokio::time::timeout(EVENT_WAIT, one_channel.next())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
        .expect("an event");
    assert_eq!(event.kind, pb::schedule_event::Kind::SlotDeleted as i32);
    assert_eq!(event.slot.expect("the deleted slot").id, created.id);

    let unknown = client
        .watch_schedule(pb::WatchScheduleRequest {
            channel_id: "nope".to_owned(),
        })
        .await
        .expect_err("no such channel");
    assert_eq!(unknown.code(), Code::NotFound);
}

async fn watch_schedule_hears_changes_from_the_bus(backend: Backend) {
    watch_schedule(backend, BusKind::InProcess).await;
}

async fn watch_schedule_works_over_nats(backend: Backend) {
    watch_schedule(backend, BusKind::Nats).await;
}

/// Two media processes of one station on NATS: a change made through one
/// reaches the other's watchers, and the other's cached timetable follows.
async fn another_process_hears_changes_over_nats(backend: Backend) {
    let station =
        MediaStation::start_with(backend, BusKind::Nats, MediaServiceSettings::default()).await;
    station.create_channel("news-1", 1, "News").await;
    station.create_program("show", "Show", 30).await;
    // A cache time far beyond the test's: only the bus can make the other
    // process forget its cached timetable in time.
    let other = station
        .other_process(MediaServiceSettings {
            cache_ttl: Duration::from_secs(600),
            ..MediaServiceSettings::default()
        })
        .await;
    let mut other_client = other.media_client().await;
    let mut watcher = other_client
        .watch_schedule(pb::WatchScheduleRequest {
            channel_id: "news-1".to_owned(),
        })
        .await
        .expect("watch on the other process")
        .into_inner();
    let day = pb::GetTimetableRequest {
        channel_id: "news-1".to_owned(),
        start_time: Some(at("2030-04-01T00:00:00Z")),
        end_time: Some(at("2030-04-02T00:00:00Z")),
        ..Default::default()
    };
    let before = other_client
        .get_timetable(day.clone())
        .await
        .expect("an empty day, now cached")
        .into_inner();
    assert!(before.channels[0].entries.is_empty());

    let created = station
        .create_slot(
            "news-1",
            "show",
            "2030-04-01T10:00:00Z",
            "2030-04-01T10:30:00Z",
        )
        .await
        .expect("a slot through the first process");
    let event = tokio::time::timeout(EVENT_WAIT, watcher.next())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
        .expect("an event");
    assert_eq!(event.slot.expect("slot").id, created.id);

    assert_eventually!(
        async {
            let mut client = other_client.clone();
            let timetable = client.get_timetable(day.clone()).await.ok()?.into_inner();
            (timetable.channels[0].entries.len() == 1).then_some(())
        }
        .await,
        "the other process's timetable shows the new slot"
    );
}

/// The station's timetable is cached by channel: each kind of write shows in
/// the next read, on the channel it changed and nowhere else.
async fn a_cached_station_timetable_follows_each_write(backend: Backend) {
    let station = MediaStation::start(backend).await;
    let mut client = station.media_client().await;
    station.create_channel("news-1", 1, "News").await;
    station.create_channel("sports-2", 2, "Sports").await;
    station.create_program("show", "Show", 30).await;
    let news_slot = station
        .create_slot(
            "news-1",
            "show",
            "2030-04-01T10:00:00Z",
            "2030-04-01T10:30:00Z",
        )
        .await
        .expect("a news slot");
    station
        .create_slot(
            "sports-2",
            "show",
            "2030-04-01T11:00:00Z",
            "2030-04-01T11:30:00Z",
        )
        .await
        .expect("a sports slot");
    let day = pb::GetTimetableRequest {
        start_time: Some(at("2030-04-01T00:00:00Z")),
        end_time: Some(at("2030-04-02T00:00:00Z")),
        ..Default::default()
    };
    let read = |client: &mut onair_proto::media::v1::media_service_client::MediaServiceClient<
        tonic::transport::Channel,
    >| {
        let request = day.clone();
        let mut client = client.clone();
        async move {
            let timetable = client
                .get_timetable(request)
                .await
                .expect("the station's day")
                .into_inner();
            timetable
                .channels
                .iter()
                .map(|channel| {
                    let channel_name = channel.channel.as_ref().map(|c| c.name.clone());
                    let titles: Vec<String> = channel
                        .entries
                        .iter()
                        .map(|entry| {
                            entry
                                .program
                                .as_ref()
                                .map(|p| p.title.clone())
                                .unwrap_or_default()
                        })
                        .collect();
                    (channel_name.unwrap_or_default(), titles)
                })
                .collect::<Vec<_>>()
        }
    };
    let show = |count: usize| vec!["Show".to_owned(); count];
    assert_eq!(
        read(&mut client).await,
        vec![("News".to_owned(), show(1)), ("Sports".to_owned(), show(1))]
    );

    station
        .create_slot(
            "sports-2",
            "show",
            "2030-04-01T12:00:00Z",
            "2030-04-01T12:30:00Z",
        )
        .await
        .expect("a second sports slot");
    assert_eq!(
        read(&mut client).await,
        vec![("News".to_owned(), show(1)), ("Sports".to_owned(), show(2))],
        "a new slot shows on its channel"
    );

    client
        .update_channel(station.as_operator(pb::UpdateChannelRequest {
            channel: Some(pb::Channel {
                id: "news-1".to_owned(),
                name: "News 24".to_owned(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".to_owned()],
            }),
        }))
        .await
        .expect("rename a channel");
    assert_eq!(
        read(&mut client).await,
        vec![
            ("News 24".to_owned(), show(1)),
            ("Sports".to_owned(), show(2))
        ],
        "a renamed channel shows its new name"
    );

    client
        .update_program(station.as_operator(pb::UpdateProgramRequest {
            program: Some(pb::Program {
                id: "show".to_owned(),
                title: "The Show".to_owned(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["title".to_owned()],
            }),
        }))
        .await
        .expect("retitle the program");
    let retitled = |count: usize| vec!["The Show".to_owned(); count];
    assert_eq!(
        read(&mut client).await,
        vec![
            ("News 24".to_owned(), retitled(1)),
            ("Sports".to_owned(), retitled(2))
        ],
        "a retitled program shows on every channel that plays it"
    );

    client
        .delete_slot(station.as_operator(pb::DeleteSlotRequest {
            slot_id: news_slot.id.clone(),
            force: false,
        }))
        .await
        .expect("delete the news slot");
    assert_eq!(
        read(&mut client).await,
        vec![
            ("News 24".to_owned(), vec![]),
            ("Sports".to_owned(), retitled(2))
        ],
        "a deleted slot leaves its channel"
    );
    let sports_only = client
        .get_timetable(pb::GetTimetableRequest {
            channel_id: "sports-2".to_owned(),
            ..day.clone()
        })
        .await
        .expect("one channel's day")
        .into_inner();
    assert_eq!(sports_only.channels.len(), 1);
    assert_eq!(sports_only.channels[0].entries.len(), 2);
}

async fn import(station: &MediaStation, text: &str) -> pb::ImportScheduleResponse {
    let items = schedule_file::parse(text, FileFormat::Yaml).expect("the file parses");
    let mut client = station.media_client().await;
    client
        .import_schedule(station.as_operator(futures::stream::iter(items)))
        .await
        .expect("the import call succeeds")
        .into_inner()
}

const GOOD_FILE: &str = "\
channels:
  - id: news-1
    number: 1
    name: onair News
    group: News
  - id: anime
    name: Anime
programs:
  - id: morning
    title: Morning News
    genres: [News]
    duration: 30m
  - id: cartoon
    title: Cartoon
    duration: 1800s
slots:
  - channel: news-1
    program: morning
    start: 2030-04-01T05:00:00+09:00
    end: 2030-04-01T05:30:00+09:00
    id: morning-0401
  - channel: news-1
    program: morning
    start: 2030-04-01T06:00:00+09:00
    duration: 30m
    repeat_of: morning-0401
  - channel: anime
    program: cartoon
    start: 2030-04-01T05:00:00+09:00
    end: 2030-04-01T05:30:00+09:00
";

async fn an_import_applies_all_or_nothing_with_line_numbered_errors(backend: Backend) {
    let station = MediaStation::start(backend).await;
    station.create_channel("sports", 10, "Sports").await;
    station.create_program("match", "Match", 60).await;
    let stored = station
        .create_slot(
            "sports",
            "match",
            "2030-04-01T00:00:00Z",
            "2030-04-01T01:00:00Z",
        )
        .await
        .expect("a stored slot");

    // One bad slot (it overlaps the stored one) and one bad reference: nothing
    // is applied, and both lines are named.
    let bad_file = format!(
        "{GOOD_FILE}  - channel: sports
    program: match
    start: 2030-04-01T00:30:00Z
    end: 2030-04-01T01:30:00Z
  - channel: news-1
    program: nowhere
    start: 2030-04-02T05:00:00Z
    end: 2030-04-02T05:30:00Z
"
    );
    let response = import(&station, &bad_file).await;
    assert!(!response.applied);
    let lines: Vec<i32> = response.errors.iter().map(|error| error.line).collect();
    assert_eq!(lines, vec![31, 35], "{:?}", response.errors);
    assert!(
        response.errors[0].message.contains(&stored.id),
        "{:?}",
        response.errors
    );
    assert!(
        response.errors[1].message.contains("nowhere"),
        "{:?}",
        response.errors
    );
    let mut client = station.media_client().await;
    let missing = client
        .get_channel(pb::GetChannelRequest {
            channel_id: "news-1".to_owned(),
        })
        .await
        .expect_err("nothing of the bad file was applied");
    assert_eq!(missing.code(), Code::NotFound);

    let response = import(&station, GOOD_FILE).await;
    assert!(response.applied, "{:?}", response.errors);
    assert_eq!(
        (response.channels, response.programs, response.slots),
        (2, 2, 3)
    );
    let anime = client
        .get_channel(pb::GetChannelRequest {
            channel_id: "anime".to_owned(),
        })
        .await
        .expect("the imported channel")
        .into_inner();
    assert_eq!(anime.number, 11, "the number after the highest, sports' 10");
    let timetable = client
        .get_timetable(pb::GetTimetableRequest {
            channel_id: "news-1".to_owned(),
            start_time: Some(at("2030-03-31T00:00:00Z")),
            end_time: Some(at("2030-04-02T00:00:00Z")),
            ..Default::default()
        })
        .await
        .expect("the imported schedule")
        .into_inner();
    let entries = &timetable.channels[0].entries;
    assert_eq!(entries.len(), 2);
    let repeat = entries[1].slot.as_ref().expect("slot");
    assert_eq!(repeat.repeat_of_slot_id, "morning-0401");
    assert_eq!(rfc3339(repeat.end_time.as_ref()), "2030-03-31T21:30:00Z");

    // The same file again: its slots now overlap themselves in the store.
    let again = import(&station, GOOD_FILE).await;
    assert!(!again.applied);
    assert_eq!(again.errors.len(), 3, "{:?}", again.errors);

    // A viewer cannot import.
    let viewer = station.viewer_token().await;
    let items = schedule_file::parse(GOOD_FILE, FileFormat::Yaml).expect("parses");
    let denied = client
        .import_schedule(authorized(futures::stream::iter(items), &viewer))
        .await
        .expect_err("a viewer's import");
    assert_eq!(denied.code(), Code::PermissionDenied);
}

async fn concurrent_overlapping_creates_have_exactly_one_winner(backend: Backend) {
    let station = MediaStation::start(backend).await;
    station.create_channel("news-1", 1, "News").await;
    station.create_program("show", "Show", 30).await;
    let contenders = 16;
    let mut attempts = Vec::with_capacity(contenders);
    for index in 0..contenders {
        // Every slot overlaps every other: starts within the first 16 minutes,
        // each 30 minutes long.
        let start = format!("2030-04-01T12:{index:02}:00Z");
        let end = format!("2030-04-01T12:{:02}:00Z", index + 30);
        let mut client = station.media_client().await;
        let request = station.as_operator(pb::CreateSlotRequest {
            channel_id: "news-1".to_owned(),
            slot: Some(pb::Slot {
                program_id: "show".to_owned(),
                start_time: Some(at(&start)),
                end_time: Some(at(&end)),
                ..Default::default()
            }),
        });
        attempts.push(tokio::spawn(async move {
            client
                .create_slot(request)
                .await
                .map(tonic::Response::into_inner)
        }));
    }
    let mut winners = Vec::new();
    for attempt in attempts {
        match attempt.await.expect("the task finishes") {
            Ok(slot) => winners.push(slot),
            Err(status) => assert_eq!(
                status.code(),
                Code::FailedPrecondition,
                "a loser hears of the overlap: {}",
                status.message()
            ),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one winner: {winners:?}");
    let mut client = station.media_client().await;
    let timetable = client
        .get_timetable(pb::GetTimetableRequest {
            channel_id: "news-1".to_owned(),
            start_time: Some(at("2030-04-01T11:00:00Z")),
            end_time: Some(at("2030-04-01T14:00:00Z")),
            ..Default::default()
        })
        .await
        .expect("timetable")
        .into_inner();
    assert_eq!(timetable.channels[0].entries.len(), 1);
}

async fn unknown_ids_are_not_found_and_bad_times_are_invalid(backend: Backend) {
    let station = MediaStation::start(backend).await;
    station.create_channel("news-1", 1, "News").await;
    station.create_program("show", "Show", 30).await;
    let mut client = station.media_client().await;

    let channel = client
        .get_channel(pb::GetChannelRequest {
            channel_id: "ghost".to_owned(),
        })
        .await
        .expect_err("unknown channel");
    assert_eq!(channel.code(), Code::NotFound);
    assert!(channel.message().contains("ghost"), "{}", channel.message());
    let program = client
        .get_program(pb::GetProgramRequest {
            program_id: "ghost-show".to_owned(),
        })
        .await
        .expect_err("unknown program");
    assert_eq!(program.code(), Code::NotFound);
    assert!(program.message().contains("ghost-show"));
    let slot = client
        .get_slot(pb::GetSlotRequest {
            slot_id: "ghost-slot".to_owned(),
        })
        .await
        .expect_err("unknown slot");
    assert_eq!(slot.code(), Code::NotFound);
    let now_next = client
        .get_now_next(pb::GetNowNextRequest {
            channel_id: "ghost".to_owned(),
        })
        .await
        .expect_err("unknown channel");
    assert_eq!(now_next.code(), Code::NotFound);
    let on_unknown = station
        .create_slot(
            "ghost",
            "show",
            "2030-04-01T10:00:00Z",
            "2030-04-01T10:30:00Z",
        )
        .await
        .expect_err("a slot on an unknown channel");
    assert_eq!(on_unknown.code(), Code::NotFound);
    assert!(on_unknown.message().contains("ghost"));
    let of_unknown = station
        .create_slot(
            "news-1",
            "nothing",
            "2030-04-01T10:00:00Z",
            "2030-04-01T10:30:00Z",
        )
        .await
        .expect_err("a slot of an unknown program");
    assert_eq!(of_unknown.code(), Code::NotFound);
    assert!(of_unknown.message().contains("nothing"));
    let delete = client
        .delete_slot(station.as_operator(pb::DeleteSlotRequest {
            slot_id: "ghost-slot".to_owned(),
            force: false,
        }))
        .await
        .expect_err("deleting an unknown slot");
    assert_eq!(delete.code(), Code::NotFound);

    let no_start = client
        .create_slot(station.as_operator(pb::CreateSlotRequest {
            channel_id: "news-1".to_owned(),
            slot: Some(pb::Slot {
                program_id: "show".to_owned(),
                end_time: Some(at("2030-04-01T10:30:00Z")),
                ..Default::default()
            }),
        }))
        .await
        .expect_err("no start time");
    assert_eq!(no_start.code(), Code::InvalidArgument);
    assert!(
        no_start.message().contains("start_time"),
        "{}",
        no_start.message()
    );
    assert!(
        no_start.message().contains("RFC 3339"),
        "{}",
        no_start.message()
    );
    let backwards = station
        .create_slot(
            "news-1",
            "show",
            "2030-04-01T10:30:00Z",
            "2030-04-01T10:00:00Z",
        )
        .await
        .expect_err("end before start");
    assert_eq!(backwards.code(), Code::InvalidArgument);
    let out_of_range = client
        .create_slot(station.as_operator(pb::CreateSlotRequest {
            channel_id: "news-1".to_owned(),
            slot: Some(pb::Slot {
                program_id: "show".to_owned(),
                start_time: Some(prost_types::Timestamp {
                    seconds: i64::MAX,
                    nanos: 0,
                }),
                end_time: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: -5,
                }),
                ..Default::default()
            }),
        }))
        .await
        .expect_err("times out of range");
    assert_eq!(out_of_range.code(), Code::InvalidArgument);
    let no_range = client
        .get_timetable(pb::GetTimetableRequest::default())
        .await
        .expect_err("neither a day nor a range");
    assert_eq!(no_range.code(), Code::InvalidArgument);
    let too_long = client
        .get_schedule_gaps(pb::GetScheduleGapsRequest {
            channel_id: "news-1".to_owned(),
            start_time: Some(at("2030-01-01T00:00:00Z")),
            end_time: Some(at("2031-01-01T00:00:00Z")),
        })
        .await
        .expect_err("a year of gaps");
    assert_eq!(too_long.code(), Code::InvalidArgument);
}

async fn viewers_read_but_cannot_write(backend: Backend) {
    let station = MediaStation::start(backend).await;
    station.create_channel("news-1", 1, "News").await;
    station.create_program("show", "Show", 30).await;
    let viewer = station.viewer_token().await;
    let mut client = station.media_client().await;

    let denied = client
        .create_channel(authorized(
            pb::CreateChannelRequest {
                channel: Some(pb::Channel {
                    name: "Pirate TV".to_owned(),
                    ..Default::default()
                }),
            },
            &viewer,
        ))
        .await
        .expect_err("a viewer cannot create channels");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = client
        .create_slot(authorized(
            pb::CreateSlotRequest {
                channel_id: "news-1".to_owned(),
                slot: Some(pb::Slot {
                    program_id: "show".to_owned(),
                    start_time: Some(at("2030-04-01T10:00:00Z")),
                    end_time: Some(at("2030-04-01T10:30:00Z")),
                    ..Default::default()
                }),
            },
            &viewer,
        ))
        .await
        .expect_err("a viewer cannot schedule");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let anonymous = client
        .create_program(pb::CreateProgramRequest {
            program: Some(pb::Program {
                title: "Nope".to_owned(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("writes need credentials");
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    // Reading is public, with or without a viewer's token.
    client
        .get_channel(pb::GetChannelRequest {
            channel_id: "news-1".to_owned(),
        })
        .await
        .expect("anyone reads the guide");
    client
        .get_channel(authorized(
            pb::GetChannelRequest {
                channel_id: "news-1".to_owned(),
            },
            &viewer,
        ))
        .await
        .expect("a viewer reads the guide");
    let forged = client
        .get_channel(authorized(
            pb::GetChannelRequest {
                channel_id: "news-1".to_owned(),
            },
            "not-a-real-key",
        ))
        .await
        .expect_err("credentials that are sent must be valid");
    assert_eq!(forged.code(), Code::Unauthenticated);
}

async fn slots_on_air_change_only_when_forced(backend: Backend) {
    let station = MediaStation::start(backend).await;
    station.create_channel("news-1", 1, "News").await;
    station.create_program("show", "Show", 30).await;
    // The clock stands at 00:00; this slot is on air.
    let on_air = station
        .create_slot(
            "news-1",
            "show",
            "2030-03-31T23:50:00Z",
            "2030-04-01T00:20:00Z",
        )
        .await
        .expect("a slot on air");
    let later = station
        .create_slot(
            "news-1",
            "show",
            "2030-04-01T01:00:00Z",
            "2030-04-01T01:30:00Z",
        )
        .await
        .expect("a later slot");
    let mut client = station.media_client().await;

    let extend = |force: bool| {
        station.as_operator(pb::UpdateSlotRequest {
            slot: Some(pb::Slot {
                id: on_air.id.clone(),
                end_time: Some(at("2030-04-01T00:40:00Z")),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["end_time".to_owned()],
            }),
            force,
        })
    };
    let refused = client
        .update_slot(extend(false))
        .await
        .expect_err("the slot is on air");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("force"), "{}", refused.message());
    let extended = client
        .update_slot(extend(true))
        .await
        .expect("forced")
        .into_inner();
    assert_eq!(rfc3339(extended.end_time.as_ref()), "2030-04-01T00:40:00Z");

    let refused = client
        .delete_slot(station.as_operator(pb::DeleteSlotRequest {
            slot_id: on_air.id.clone(),
            force: false,
        }))
        .await
        .expect_err("the slot is on air");
    assert_eq!(refused.code(), Code::FailedPrecondition);

    // Future slots move freely, but not onto the air without force.
    let moved = client
        .update_slot(station.as_operator(pb::UpdateSlotRequest {
            slot: Some(pb::Slot {
                id: later.id.clone(),
                start_time: Some(at("2030-04-01T02:00:00Z")),
                end_time: Some(at("2030-04-01T02:30:00Z")),
                ..Default::default()
            }),
            update_mask: None,
            force: false,
        }))
        .await
        .expect("move a future slot")
        .into_inner();
    assert_eq!(rfc3339(moved.start_time.as_ref()), "2030-04-01T02:00:00Z");

    station.clock.advance(Duration::from_secs(3600));
    client
        .delete_slot(station.as_operator(pb::DeleteSlotRequest {
            slot_id: on_air.id.clone(),
            force: false,
        }))
        .await
        .expect("a slot that has aired is deleted without force");
}
