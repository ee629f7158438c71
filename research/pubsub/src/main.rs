//! Probes of the official `google-cloud-pubsub` 1.x crate against the local emulator.
//!
//!   PUBSUB_EMULATOR_HOST=127.0.0.1:8085 target/release/pubsub-probe <step> [args]
//!
//! Steps: admin | pubsub | flow | lease | shutdown | bench [n] [streams] [max_outstanding] |
//!        nacklat | suite [check-name-part] (MIN_VISIBILITY=secs) | abench [n] [streams] [max] [pause_ms]
//! Every run makes fresh, randomly named topics and subscriptions.

mod adapter;
mod common;
mod steps;

use anyhow::{bail, Result};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let step = args.first().map(String::as_str).unwrap_or("");
    match step {
        "admin" => steps::admin().await,
        "pubsub" => steps::publish_and_subscribe().await,
        "flow" => steps::flow_control().await,
        "lease" => steps::lease().await,
        "shutdown" => steps::shutdown().await,
        "bench" => {
            let n = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(5000);
            let streams = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1);
            let outstanding = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1000);
            steps::bench(n, streams, outstanding).await
        }
        "nacklat" => steps::nack_latency().await,
        "abench" => {
            let n = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(5000);
            let streams = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1);
            let max = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(100);
            let pause_ms = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(0);
            adapter::bench(n, streams, max, pause_ms).await
        }
        "suite" => adapter::run_suite(args.get(1).map(String::as_str)).await,
        _ => bail!("usage: pubsub-probe admin|pubsub|flow|lease|shutdown|bench [n] [streams] [max_outstanding]|nacklat|suite [check]|abench [n] [streams] [max] [pause_ms]"),
    }
}
