//! SQS service limits (Amazon SQS Developer Guide, "Amazon SQS quotas").

use std::time::Duration;

/// Most messages per `ReceiveMessage`, `DeleteMessageBatch`, `ChangeMessageVisibilityBatch` and
/// `SendMessageBatch` call.
pub const MAX_BATCH: usize = 10;
/// Largest message body plus attributes (1 MiB since August 2025).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Largest total payload of one `SendMessageBatch` request.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Longest long-poll wait.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// Longest visibility timeout, for `ChangeMessageVisibility` too.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);
/// Longest `DelaySeconds` of a sent message.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Longest `MessageDeduplicationId` / `MessageGroupId`.
pub const MAX_ID_CHARS: usize = 128;
/// Most message attributes per message.
pub const MAX_ATTRIBUTES: usize = 10;

/// Rounds a delay up to whole seconds (SQS takes seconds) and clamps it to the 12 h maximum.
pub fn visibility_secs(d: Duration) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.min(MAX_VISIBILITY.as_secs()) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visibility_rounds_up_and_clamps() {
        assert_eq!(visibility_secs(Duration::ZERO), 0);
        assert_eq!(visibility_secs(Duration::from_millis(1)), 1);
        assert_eq!(visibility_secs(Duration::from_millis(1500)), 2);
        assert_eq!(visibility_secs(Duration::from_secs(999_999)), 43_200);
    }
}
