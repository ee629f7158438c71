//! The Pub/Sub adapter's log events (see [`veltrix_queue::logging`]).

pub use veltrix_queue::logging::LogEvent;

veltrix_queue::log_events! {
    /// The source read its subscription and started its streams.
    PubSubSourceOpen => INFO "pubsub_source_open" "pubsub source open" {
        /// Full subscription name.
        subscription: String,
        /// Streaming-pull streams.
        streams: usize,
        /// Ack deadline used for the streams (and the default lease).
        ack_deadline_secs: u64,
        /// Whether the subscription has a dead-letter policy (unknown when unreadable).
        dead_letter_policy: Option<bool>,
        /// Whether ordered delivery is on (unknown when unreadable).
        ordering: Option<bool>,
    }
    /// The credentials may not read the subscription's settings; defaults are assumed.
    SubscriptionUnreadable => WARN "pubsub_subscription_unreadable" "may not read the subscription's settings (grant roles/pubsub.viewer); assuming a 60 s ack deadline" {
        /// Full subscription name.
        subscription: String,
    }
    /// The credentials may not read the topic, so its existence is not checked.
    TopicUnreadable => WARN "pubsub_topic_unreadable" "may not read the topic to check it exists (grant roles/pubsub.viewer); a missing topic shows up as publish errors" {
        /// Full topic name.
        topic: String,
    }
    /// A streaming pull failed and is reopened after a backoff.
    StreamReopening => WARN "pubsub_stream_reopening" "pubsub stream failed; reopening" {
        /// Full subscription name.
        subscription: String,
        /// Why it failed.
        error: String,
        /// Wait before reopening.
        retry_in_ms: u64,
    }
    /// Acks arrived for messages already released (lease expired); they will be redelivered.
    LateAcks => WARN "pubsub_late_acks" "acks after the lease expired; those messages will be redelivered" {
        /// Full subscription name.
        subscription: String,
        /// How many.
        count: usize,
    }
}
