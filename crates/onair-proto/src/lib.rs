//! onair's contracts: the code generated from `proto/onair/<service>/v1`, the
//! descriptor set with the HTTP annotations intact, and the channel that lets one
//! client type reach a service in the same process or over the network.

pub mod channel;
pub mod codec;

pub use channel::ServiceChannel;

/// The compiled descriptor set of every contract, including the
/// `google.api.http` options that the gateway serves REST/JSON from.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/onair_descriptor.bin"));

/// Types from googleapis that the contracts use.
pub mod google {
    pub mod api {
        include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
    }
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

macro_rules! service_package {
    ($name:ident, $file:literal) => {
        pub mod $name {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/", $file));
            }
        }
    };
}

service_package!(user, "onair.user.v1.rs");
service_package!(media, "onair.media.v1.rs");
service_package!(playout, "onair.playout.v1.rs");
service_package!(comment, "onair.comment.v1.rs");
service_package!(audience, "onair.audience.v1.rs");
service_package!(share, "onair.share.v1.rs");
service_package!(events, "onair.events.v1.rs");

/// The client of each service, over a [`ServiceChannel`].
pub mod clients {
    use super::ServiceChannel;

    pub type UserClient = super::user::v1::user_service_client::UserServiceClient<ServiceChannel>;
    pub type MediaClient =
        super::media::v1::media_service_client::MediaServiceClient<ServiceChannel>;
    pub type PlayoutClient =
        super::playout::v1::playout_service_client::PlayoutServiceClient<ServiceChannel>;
    pub type CommentClient =
        super::comment::v1::comment_service_client::CommentServiceClient<ServiceChannel>;
    pub type AudienceClient =
        super::audience::v1::audience_service_client::AudienceServiceClient<ServiceChannel>;
    pub type ShareClient =
        super::share::v1::share_service_client::ShareServiceClient<ServiceChannel>;
}
