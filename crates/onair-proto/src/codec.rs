//! The protobuf codecs: the one of every generated service and client, and
//! the one codec that passes a message's bytes as they are.
//!
//! [`OnairCodec`] is prost's, except for one answer: a request that does not
//! decode (a string field that is not UTF-8, a truncated message) is the
//! caller's mistake, so it fails with `InvalidArgument` and says what was
//! wrong, where prost's codec answers `Internal`, which reads as a server
//! fault and shows as HTTP 500 behind a proxy.
//!
//! [`RawClientCodec`] and [`RawServerCodec`] pass bytes already encoded, for answers worth
//! keeping encoded: a timetable the media service keeps as bytes, a
//! response the gateway renders from a memo of the same bytes.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes};
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
        OnairEncoder::default()
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

impl<T> Default for OnairEncoder<T> {
    fn default() -> Self {
        OnairEncoder {
            _message: PhantomData,
        }
    }
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

/// The client side of a call whose answer is wanted as its bytes: encodes
/// the request as every client does and hands back the answer undecoded.
#[derive(Debug, Clone)]
pub struct RawClientCodec<Request> {
    _request: PhantomData<Request>,
}

impl<Request> Default for RawClientCodec<Request> {
    fn default() -> Self {
        RawClientCodec {
            _request: PhantomData,
        }
    }
}

impl<Request> Codec for RawClientCodec<Request>
where
    Request: prost::Message + Send + 'static,
{
    type Encode = Request;
    type Decode = Bytes;
    type Encoder = OnairEncoder<Request>;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        OnairEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesDecoder
    }
}

/// The server side of a method whose answers are already encoded: decodes
/// the request as every method does and sends the answer's bytes as they are.
#[derive(Debug, Clone)]
pub struct RawServerCodec<Request> {
    _request: PhantomData<Request>,
}

impl<Request> Default for RawServerCodec<Request> {
    fn default() -> Self {
        RawServerCodec {
            _request: PhantomData,
        }
    }
}

impl<Request> Codec for RawServerCodec<Request>
where
    Request: prost::Message + Default + Send + 'static,
{
    type Encode = Bytes;
    type Decode = Request;
    type Encoder = BytesEncoder;
    type Decoder = OnairDecoder<Request>;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        OnairCodec::<(), Request>::default().decoder()
    }
}

/// Writes bytes that are already an encoded message.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.len());
        buf.put(item);
        Ok(())
    }
}

/// Hands back a message's bytes undecoded.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesDecoder;

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}
