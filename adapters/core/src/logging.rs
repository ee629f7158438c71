//! Structured log events: one struct per kind of log line, each with a stable snake_case
//! `event` name, so log pipelines can filter and alert on names instead of message text.
//!
//! [`log_events!`](crate::log_events) declares the structs; `Event { .. }.emit()` writes one
//! `tracing` event carrying `event = NAME`, every field, and a fixed human-readable message.
//! With `--log-format json` each line is one JSON object with those keys. Events never carry
//! message bodies or secrets: their fields are ids, names, counts and error texts.

/// A kind of log line.
pub trait LogEvent {
    /// The stable name (the `event` field).
    const NAME: &'static str;
    /// Writes it through `tracing`.
    fn emit(&self);
}

/// A value a log event field can hold.
pub trait LogField {
    /// The value as `tracing` records it.
    fn log_value(&self) -> Box<dyn tracing::Value + '_>;
}

impl LogField for String {
    fn log_value(&self) -> Box<dyn tracing::Value + '_> {
        Box::new(self.as_str())
    }
}

impl LogField for &str {
    fn log_value(&self) -> Box<dyn tracing::Value + '_> {
        Box::new(*self)
    }
}

macro_rules! log_field_by_value {
    ($($t:ty),*) => {$(
        impl LogField for $t {
            fn log_value(&self) -> Box<dyn tracing::Value + '_> {
                Box::new(*self)
            }
        }
    )*};
}
log_field_by_value!(bool, u32, u64, i64, f64);

impl LogField for usize {
    fn log_value(&self) -> Box<dyn tracing::Value + '_> {
        Box::new(*self as u64)
    }
}

impl LogField for std::net::SocketAddr {
    fn log_value(&self) -> Box<dyn tracing::Value + '_> {
        Box::new(tracing::field::display(*self))
    }
}

impl<T: LogField> LogField for Option<T> {
    fn log_value(&self) -> Box<dyn tracing::Value + '_> {
        match self {
            Some(v) => v.log_value(),
            None => Box::new(tracing::field::Empty),
        }
    }
}

/// Declares log event structs:
///
/// ```
/// veltrix_queue::log_events! {
///     /// A doc comment for the struct.
///     WorkerStarting => INFO "worker_starting" "worker starting" {
///         /// Source kind.
///         source_kind: &'static str,
///         rules: usize,
///     }
/// }
/// use veltrix_queue::logging::LogEvent;
/// WorkerStarting { source_kind: "sqs", rules: 3 }.emit();
/// assert_eq!(WorkerStarting::NAME, "worker_starting");
/// ```
///
/// It also defines `ALL_EVENT_NAMES`, every name declared in that invocation.
#[macro_export]
macro_rules! log_events {
    ($(
        $(#[$meta:meta])*
        $name:ident => $level:ident $event:literal $message:literal {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    )*) => {
        $(
            $(#[$meta])*
            #[derive(Debug, Clone)]
            pub struct $name {
                $( $(#[$fmeta])* pub $field: $ty, )*
            }

            impl $crate::logging::LogEvent for $name {
                const NAME: &'static str = $event;
                fn emit(&self) {
                    ::tracing::event!(
                        ::tracing::Level::$level,
                        event = $event,
                        $( $field = $crate::logging::LogField::log_value(&self.$field), )*
                        $message
                    );
                }
            }
        )*

        /// Every event name declared here.
        pub const ALL_EVENT_NAMES: &[&str] = &[$($event),*];
    };
}
