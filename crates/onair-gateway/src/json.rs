//! The proto3 JSON mapping of a message known by its descriptor, written
//! straight into bytes.
//!
//! prost-reflect's serializer goes through serde's generic machinery, and
//! turns each `Timestamp` back into a prost message to format it with `fmt`;
//! for the small answers most REST calls get, that was about a fifth of the
//! server's CPU time per request. This writer produces the
//! same JSON, byte for byte, with grpc-gateway's choice of every field,
//! populated or not ([`serialize_options`]). The well-known types other
//! than `Timestamp` (`Any`, `Struct`, `Duration`, the wrappers…), a message
//! with extensions, and a timestamp that is out of range or not normalized
//! are rare here and are handed to prost-reflect, so they read the same too.

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use prost_reflect::{DynamicMessage, Kind, MapKey, ReflectMessage, SerializeOptions, Value};

/// The first and last second a JSON timestamp may hold: 0001-01-01T00:00:00Z
/// and 9999-12-31T23:59:59Z (the proto3 JSON mapping's range).
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

const NANOS_PER_SECOND: i32 = 1_000_000_000;

/// How the gateway writes messages as JSON.
pub(crate) fn serialize_options() -> SerializeOptions {
    // As grpc-gateway: every field, populated or not.
    SerializeOptions::new().skip_default_fields(false)
}

/// Appends the JSON of `message` to `out`.
pub(crate) fn write_message(
    out: &mut Vec<u8>,
    message: &DynamicMessage,
) -> Result<(), serde_json::Error> {
    let descriptor = message.descriptor();
    let name = descriptor.full_name();
    if name == "google.protobuf.Timestamp"
        && let Some(()) = write_timestamp(out, message)
    {
        return Ok(());
    }
    if name.starts_with("google.protobuf.") || message.extensions().next().is_some() {
        let mut serializer = serde_json::Serializer::new(&mut *out);
        return message.serialize_with_options(&mut serializer, &serialize_options());
    }
    out.push(b'{');
    let mut first = true;
    for field in descriptor.fields() {
        // Every field, as grpc-gateway writes them, except the unset ones
        // that have presence: messages, oneof members, proto3 `optional`.
        if field.supports_presence() && !message.has_field(&field) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_str(out, field.json_name());
        out.push(b':');
        write_value(out, &message.get_field(&field), &field.kind())?;
    }
    out.push(b'}');
    Ok(())
}

fn write_value(out: &mut Vec<u8>, value: &Value, kind: &Kind) -> Result<(), serde_json::Error> {
    match value {
        Value::Bool(value) => out.extend_from_slice(if *value { b"true" } else { b"false" }),
        Value::I32(value) => write_number(out, *value),
        Value::U32(value) => write_number(out, *value),
        // 64-bit integers are strings: JavaScript's numbers cannot hold them.
        Value::I64(value) => write_quoted_number(out, *value),
        Value::U64(value) => write_quoted_number(out, *value),
        Value::F32(value) => write_float(out, *value, f64::from(*value))?,
        Value::F64(value) => write_float(out, *value, *value)?,
        Value::String(value) => write_str(out, value),
        Value::Bytes(value) => {
            out.push(b'"');
            let start = out.len();
            out.resize(
                start + base64::encoded_len(value.len(), true).unwrap_or(0),
                0,
            );
            let written = BASE64_STANDARD
                .encode_slice(value, &mut out[start..])
                .unwrap_or(0);
            out.truncate(start + written);
            out.push(b'"');
        }
        Value::EnumNumber(number) => match kind {
            Kind::Enum(enum_type) if enum_type.full_name() == "google.protobuf.NullValue" => {
                out.extend_from_slice(b"null");
            }
            Kind::Enum(enum_type) => match enum_type.get_value(*number) {
                Some(known) => write_str(out, known.name()),
                // A value newer than this gateway's contracts: its number.
                None => write_number(out, *number),
            },
            _ => write_number(out, *number),
        },
        Value::Message(message) => write_message(out, message)?,
        Value::List(values) => {
            out.push(b'[');
            for (index, value) in values.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_value(out, value, kind)?;
            }
            out.push(b']');
        }
        Value::Map(entries) => {
            let value_kind = match kind {
                Kind::Message(entry) if entry.is_map_entry() => {
                    entry.map_entry_value_field().kind()
                }
                _ => kind.clone(),
            };
            out.push(b'{');
            for (index, (key, value)) in entries.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                match key {
                    MapKey::Bool(key) => write_str(out, if *key { "true" } else { "false" }),
                    MapKey::I32(key) => write_quoted_number(out, *key),
                    MapKey::I64(key) => write_quoted_number(out, *key),
                    MapKey::U32(key) => write_quoted_number(out, *key),
                    MapKey::U64(key) => write_quoted_number(out, *key),
                    MapKey::String(key) => write_str(out, key),
                }
                out.push(b':');
                write_value(out, value, &value_kind)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_str(out: &mut Vec<u8>, text: &str) {
    // Writing to a Vec cannot fail; serde_json escapes as it always does.
    let _ = serde_json::to_writer(&mut *out, text);
}

fn write_number(out: &mut Vec<u8>, number: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(number).as_bytes());
}

fn write_quoted_number(out: &mut Vec<u8>, number: impl itoa::Integer) {
    out.push(b'"');
    write_number(out, number);
    out.push(b'"');
}

/// A float as serde_json writes it, or the mapping's strings for the values
/// JSON has no number for.
fn write_float<F: serde::Serialize>(
    out: &mut Vec<u8>,
    value: F,
    wide: f64,
) -> Result<(), serde_json::Error> {
    if wide.is_finite() {
        return serde_json::to_writer(&mut *out, &value);
    }
    let name: &[u8] = if wide.is_nan() {
        b"\"NaN\""
    } else if wide > 0.0 {
        b"\"Infinity\""
    } else {
        b"\"-Infinity\""
    };
    out.extend_from_slice(name);
    Ok(())
}

/// A `Timestamp` as RFC 3339 in UTC, with 0, 3, 6 or 9 digits of fraction;
/// `None` for one out of range or not normalized, which prost-reflect
/// answers instead.
fn write_timestamp(out: &mut Vec<u8>, message: &DynamicMessage) -> Option<()> {
    let seconds = message.get_field_by_number(1)?.as_i64()?;
    let nanos = message.get_field_by_number(2)?.as_i32()?;
    if !(MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&seconds)
        || !(0..NANOS_PER_SECOND).contains(&nanos)
    {
        return None;
    }
    // In range, so jiff (years -9999 to 9999) takes it.
    let time = jiff::Timestamp::from_second(seconds).ok()?;
    let date = jiff::tz::TimeZone::UTC.to_datetime(time);
    out.push(b'"');
    push_digits(out, i64::from(date.year()), 4);
    out.push(b'-');
    push_digits(out, i64::from(date.month()), 2);
    out.push(b'-');
    push_digits(out, i64::from(date.day()), 2);
    out.push(b'T');
    push_digits(out, i64::from(date.hour()), 2);
    out.push(b':');
    push_digits(out, i64::from(date.minute()), 2);
    out.push(b':');
    push_digits(out, i64::from(date.second()), 2);
    let nanos = i64::from(nanos);
    if nanos != 0 {
        out.push(b'.');
        if nanos % 1_000_000 == 0 {
            push_digits(out, nanos / 1_000_000, 3);
        } else if nanos % 1_000 == 0 {
            push_digits(out, nanos / 1_000, 6);
        } else {
            push_digits(out, nanos, 9);
        }
    }
    out.push(b'Z');
    out.push(b'"');
    Some(())
}

/// Appends `value` (not negative) in exactly `width` digits.
fn push_digits(out: &mut Vec<u8>, value: i64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    let mut rest = value;
    for position in (start..start + width).rev() {
        out[position] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
}

#[cfg(test)]
mod tests {
    use prost_reflect::{DescriptorPool, FieldDescriptor, MessageDescriptor};

    use super::*;

    /// A small deterministic source of test values.
    struct Dice(u64);

    impl Dice {
        fn roll(&mut self, sides: u64) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % sides.max(1)
        }

        fn text(&mut self) -> String {
            const PIECES: [&str; 9] = [
                "news",
                "\"quoted\"",
                "back\\slash",
                "line\nbreak",
                "\u{1}",
                "é",
                "日本",
                "</script>",
                "",
            ];
            (0..self.roll(4))
                .map(|_| PIECES[self.roll(PIECES.len() as u64) as usize])
                .collect()
        }
    }

    fn random_value(dice: &mut Dice, kind: &Kind, depth: usize) -> Value {
        match kind {
            Kind::Double => Value::F64(
                [
                    0.0,
                    -0.0,
                    1.5,
                    -2.25e300,
                    1e-7,
                    f64::NAN,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    42.0,
                ][dice.roll(9) as usize],
            ),
            Kind::Float => Value::F32(
                [
                    0.0,
                    0.1,
                    -3.5,
                    1e30,
                    f32::NAN,
                    f32::INFINITY,
                    f32::NEG_INFINITY,
                ][dice.roll(7) as usize],
            ),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                Value::I32([0, -1, 7, i32::MIN, i32::MAX][dice.roll(5) as usize])
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                Value::I64([0, -1, 1_700_000_000_123, i64::MIN, i64::MAX][dice.roll(5) as usize])
            }
            Kind::Uint32 | Kind::Fixed32 => Value::U32([0, 1, u32::MAX][dice.roll(3) as usize]),
            Kind::Uint64 | Kind::Fixed64 => Value::U64([0, 1, u64::MAX][dice.roll(3) as usize]),
            Kind::Bool => Value::Bool(dice.roll(2) == 0),
            Kind::String => Value::String(dice.text()),
            Kind::Bytes => Value::Bytes((0..dice.roll(7)).map(|_| dice.roll(256) as u8).collect()),
            Kind::Enum(enum_type) => {
                let known: Vec<i32> = enum_type.values().map(|value| value.number()).collect();
                if dice.roll(5) == 0 || known.is_empty() {
                    // A number newer than the contracts.
                    Value::EnumNumber(9_999)
                } else {
                    Value::EnumNumber(known[dice.roll(known.len() as u64) as usize])
                }
            }
            Kind::Message(message) => Value::Message(random_message(dice, message, depth + 1)),
        }
    }

    fn random_field(dice: &mut Dice, field: &FieldDescriptor, depth: usize) -> Value {
        let kind = field.kind();
        if field.is_map() {
            let Kind::Message(entry) = &kind else {
                unreachable!("a map field's kind is its entry");
            };
            let key_kind = entry.map_entry_key_field().kind();
            let value_kind = entry.map_entry_value_field().kind();
            let entries = (0..dice.roll(3))
                .map(|_| {
                    let key = match random_value(dice, &key_kind, depth) {
                        Value::Bool(key) => MapKey::Bool(key),
                        Value::I32(key) => MapKey::I32(key),
                        Value::I64(key) => MapKey::I64(key),
                        Value::U32(key) => MapKey::U32(key),
                        Value::U64(key) => MapKey::U64(key),
                        Value::String(key) => MapKey::String(key),
                        other => unreachable!("not a map key: {other:?}"),
                    };
                    (key, random_value(dice, &value_kind, depth))
                })
                .collect();
            return Value::Map(entries);
        }
        if field.is_list() {
            return Value::List(
                (0..dice.roll(3))
                    .map(|_| random_value(dice, &kind, depth))
                    .collect(),
            );
        }
        random_value(dice, &kind, depth)
    }

    fn random_message(
        dice: &mut Dice,
        descriptor: &MessageDescriptor,
        depth: usize,
    ) -> DynamicMessage {
        let mut message = DynamicMessage::new(descriptor.clone());
        if descriptor.full_name() == "google.protobuf.Timestamp" {
            let seconds = [
                0,
                1_764_460_800,
                -1,
                MIN_TIMESTAMP_SECONDS,
                MAX_TIMESTAMP_SECONDS,
                MAX_TIMESTAMP_SECONDS + 1,
            ][dice.roll(6) as usize];
            let nanos = [0, 5_000_000, 120_000, 7, 999_999_999, -1, NANOS_PER_SECOND]
                [dice.roll(7) as usize];
            message.set_field_by_number(1, Value::I64(seconds));
            message.set_field_by_number(2, Value::I32(nanos));
            return message;
        }
        if depth > 3 {
            return message;
        }
        for field in descriptor.fields() {
            if dice.roll(3) == 0 {
                continue;
            }
            message.set_field(&field, random_field(dice, &field, depth));
        }
        message
    }

    fn reference(message: &DynamicMessage) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::new();
        let mut serializer = serde_json::Serializer::new(&mut out);
        message.serialize_with_options(&mut serializer, &serialize_options())?;
        Ok(out)
    }

    #[test]
    fn every_message_of_the_contracts_reads_as_prost_reflect_writes_it() {
        let pool = DescriptorPool::decode(onair_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
        let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
        let mut compared = 0;
        for descriptor in pool.all_messages() {
            if descriptor.is_map_entry() {
                continue;
            }
            for _ in 0..20 {
                let message = random_message(&mut dice, &descriptor, 0);
                let mut written = Vec::new();
                let ours = write_message(&mut written, &message).map(|()| written);
                match (ours, reference(&message)) {
                    (Ok(ours), Ok(theirs)) => assert_eq!(
                        String::from_utf8_lossy(&ours),
                        String::from_utf8_lossy(&theirs),
                        "{}",
                        descriptor.full_name()
                    ),
                    (Err(_), Err(_)) => {}
                    (ours, theirs) => panic!(
                        "{}: one refused what the other wrote: {ours:?} against {theirs:?}",
                        descriptor.full_name()
                    ),
                }
                compared += 1;
            }
        }
        assert!(compared > 1_000, "only {compared} messages compared");
    }

    #[test]
    fn timestamps_read_as_rfc_3339_across_the_whole_range() {
        let pool = DescriptorPool::decode(onair_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
        let descriptor = pool
            .get_message_by_name("google.protobuf.Timestamp")
            .expect("the contracts use timestamps");
        let mut dice = Dice(7);
        let span = MAX_TIMESTAMP_SECONDS - MIN_TIMESTAMP_SECONDS;
        for round in 0..20_000 {
            let seconds = MIN_TIMESTAMP_SECONDS + dice.roll(span as u64 + 1) as i64;
            let nanos = match round % 4 {
                0 => 0,
                1 => dice.roll(1_000) as i32 * 1_000_000,
                2 => dice.roll(1_000_000) as i32 * 1_000,
                _ => dice.roll(NANOS_PER_SECOND as u64) as i32,
            };
            let mut message = DynamicMessage::new(descriptor.clone());
            message.set_field_by_number(1, Value::I64(seconds));
            message.set_field_by_number(2, Value::I32(nanos));
            let mut written = Vec::new();
            write_message(&mut written, &message).unwrap();
            let expected = prost_types::Timestamp { seconds, nanos }.to_string();
            assert_eq!(written, format!("\"{expected}\"").into_bytes());
        }
        let mut written = Vec::new();
        let mut epoch = DynamicMessage::new(descriptor);
        epoch.set_field_by_number(1, Value::I64(951_782_400));
        write_message(&mut written, &epoch).unwrap();
        assert_eq!(written, b"\"2000-02-29T00:00:00Z\"");
    }
}
