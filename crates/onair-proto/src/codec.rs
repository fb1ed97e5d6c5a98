//! The protobuf codec of every generated service and client.
//!
//! It is prost's, except for one answer: a request that does not decode (a
//! string field that is not UTF-8, a truncated message) is the caller's
//! mistake, so it fails with `InvalidArgument` and says what was wrong,
//! where prost's codec answers `Internal`, which reads as a server fault and
//! shows as HTTP 500 behind a proxy.

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_prost::{ProstCodec, ProstDecoder};

/// prost's codec with decode failures reported as `InvalidArgument`.
#[derive(Debug, Clone)]
pub struct OnairCodec<T, U> {
    _messages: PhantomData<(T, U)>,
}

impl<T, U> Default for OnairCodec<T, U> {
    fn default() -> Self {
        OnairCodec {
            _messages: PhantomData,
        }
    }
}

impl<T, U> Codec for OnairCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = OnairEncoder<T>;
    type Decoder = OnairDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        OnairEncoder {
            _message: PhantomData,
        }
    }

    fn decoder(&mut self) -> Self::Decoder {
        OnairDecoder {
            inner: ProstCodec::<T, U>::raw_decoder(BufferSettings::default()),
        }
    }
}

/// Encodes with prost into room made for the whole message first. Left to
/// grow as it is written, the buffer of a large message (a week's timetable
/// of a station is megabytes) is copied again each time it doubles.
#[derive(Debug, Clone)]
pub struct OnairEncoder<T> {
    _message: PhantomData<T>,
}

impl<T: prost::Message> Encoder for OnairEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode_raw(buf);
        Ok(())
    }
}

/// Decodes with prost and turns its errors into `InvalidArgument`.
#[derive(Debug, Clone)]
pub struct OnairDecoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: prost::Message + Default> Decoder for OnairDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner.decode(buf).map_err(|status| {
            Status::invalid_argument(format!(
                "the message is not valid protobuf for this method: {}",
                status.message()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}
