//! onair's contracts: the code generated from `proto/onair/<service>/v1`, the
//! descriptor set with the HTTP annotations intact, and the channel that lets one
//! client type reach a service in the same process or over the network.

#![warn(missing_docs)]

pub mod channel;
pub mod codec;
pub mod schedule;

pub use channel::ServiceChannel;

/// The compiled descriptor set of every contract, including the
/// `google.api.http` options that the gateway serves REST/JSON from.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/onair_descriptor.bin"));

/// Types from googleapis that the contracts use.
pub mod google {
    /// The `google.api.http` annotations that map each RPC to a REST route.
    // Generated from the contracts in `proto/`, which document them.
    #[allow(missing_docs)]
    pub mod api {
        include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
    }
    /// The `google.rpc.Status` error model that REST answers carry in their bodies.
    // Generated from the contracts in `proto/`, which document them.
    #[allow(missing_docs)]
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

macro_rules! service_package {
    ($name:ident, $file:literal, $doc:literal) => {
        #[doc = $doc]
        pub mod $name {
            /// Version 1 of the contract: messages, the client and the server trait.
            // Generated from the contracts in `proto/`, which document them;
            // a oneof holds its messages inline, whatever their sizes.
            #[allow(missing_docs, clippy::large_enum_variant)]
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/", $file));
            }
        }
    };
}

service_package!(
    user,
    "onair.user.v1.rs",
    "The user service: users, roles, bans, trust scores and the keys that sign access tokens."
);
service_package!(
    media,
    "onair.media.v1.rs",
    "The media service: channels, programs and slots, the schedule that playout follows."
);
service_package!(
    playout,
    "onair.playout.v1.rs",
    "The playout service: renditions, each channel's live stream, live ingest and replay."
);
service_package!(
    comment,
    "onair.comment.v1.rs",
    "The comment service: comments, chat settings, word filters, review and moderation."
);
service_package!(
    audience,
    "onair.audience.v1.rs",
    "The audience service: viewer presence and counts, and polls with their ballots."
);
service_package!(
    share,
    "onair.share.v1.rs",
    "The share service: share links, their counts and the preview pages crawlers read."
);
service_package!(
    events,
    "onair.events.v1.rs",
    "The station's announcements on the bus, between its services (see the kit's event catalogue)."
);

/// The client of each service, over a [`ServiceChannel`].
pub mod clients {
    use super::ServiceChannel;

    /// Reaches the user service, in this process or over the network.
    pub type UserClient = super::user::v1::user_service_client::UserServiceClient<ServiceChannel>;
    /// Reaches the media service, in this process or over the network.
    pub type MediaClient =
        super::media::v1::media_service_client::MediaServiceClient<ServiceChannel>;
    /// Reaches the playout service, in this process or over the network.
    pub type PlayoutClient =
        super::playout::v1::playout_service_client::PlayoutServiceClient<ServiceChannel>;
    /// Reaches the comment service, in this process or over the network.
    pub type CommentClient =
        super::comment::v1::comment_service_client::CommentServiceClient<ServiceChannel>;
    /// Reaches the audience service, in this process or over the network.
    pub type AudienceClient =
        super::audience::v1::audience_service_client::AudienceServiceClient<ServiceChannel>;
    /// Reaches the share service, in this process or over the network.
    pub type ShareClient =
        super::share::v1::share_service_client::ShareServiceClient<ServiceChannel>;
}
