//! A tonic codec for messages known only by their descriptors, so the gateway
//! can call any RPC of the descriptor set. (Calls whose answers the gateway
//! wants as bytes use the contracts' `RawClientCodec`.)

use onair_proto::codec::OnairEncoder;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};

#[derive(Clone)]
pub struct DynamicCodec {
    response: MessageDescriptor,
}

impl DynamicCodec {
    pub fn new(response: MessageDescriptor) -> DynamicCodec {
        DynamicCodec { response }
    }
}

pub struct DynamicDecoder {
    response: MessageDescriptor,
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = OnairEncoder<DynamicMessage>;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        OnairEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder {
            response: self.response.clone(),
        }
    }
}

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, source: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        DynamicMessage::decode(self.response.clone(), source)
            .map(Some)
            .map_err(|error| Status::internal(format!("cannot decode the response: {error}")))
    }
}
