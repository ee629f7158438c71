//! The research steps, each a small self-contained program.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::handler::Handler;
use google_cloud_pubsub::subscriber::{MessageStream, ShutdownBehavior};

use crate::common::*;

/// `stream.next()` with a deadline; `None` on timeout.
async fn next_within(stream: &mut MessageStream, d: Duration) -> Result<Option<(Message, Handler)>> {
    match tokio::time::timeout(d, stream.next()).await {
        Err(_) => Ok(None),
        Ok(None) => anyhow::bail!("stream ended"),
        Ok(Some(r)) => Ok(Some(r?)),
    }
}

fn show(clock: &Clock, m: &Message, h: &Handler) -> String {
    let publish_time = m
        .publish_time
        .map(|t| format!("{}.{:09}", t.seconds(), t.nanos()))
        .unwrap_or_else(|| "-".into());
    let mut attrs: Vec<_> = m.attributes.iter().collect();
    attrs.sort();
    format!(
        "{} id={} data={:?} attrs={:?} ordering_key={:?} delivery_attempt={:?} publish_time={}",
        clock.t(),
        m.message_id,
        String::from_utf8_lossy(&m.data),
        attrs,
        m.ordering_key,
        h.delivery_attempt(),
        publish_time
    )
}

// ---------------------------------------------------------------------------------------------
// 1. admin: topics and subscriptions, with and without a dead-letter policy.
pub async fn admin() -> Result<()> {
    let clock = Clock::new();
    let admin = Admin::new().await?;
    let topic = unique("probe-topic");
    let dlq = unique("probe-dlq");
    println!("{} create topic    -> {}", clock.t(), admin.topic(&topic).await?);
    println!("{} create topic    -> {}", clock.t(), admin.topic(&dlq).await?);
    let plain = unique("probe-sub");
    println!("{} create sub      -> {}", clock.t(), admin.sub(&plain, &topic, 10).await?);
    let with_dlq = unique("probe-sub-dlq");
    let name = admin
        .sub_dlq(&with_dlq, &topic, 30, &dlq, 5, Some((Duration::from_secs(1), Duration::from_secs(60))))
        .await?;
    println!("{} create sub+dlq  -> {name}", clock.t());

    let got = admin.subs.get_subscription().set_subscription(sub_path(&with_dlq)).send().await?;
    println!(
        "{} get_subscription: ack_deadline={} dead_letter_policy={:?} retry_policy={:?}",
        clock.t(),
        got.ack_deadline_seconds,
        got.dead_letter_policy,
        got.retry_policy
    );

    // Existing topic: the error carries the gRPC/HTTP status.
    match admin.topics.create_topic().set_name(topic_path(&topic)).send().await {
        Ok(_) => println!("second create_topic succeeded?!"),
        Err(e) => println!(
            "{} second create_topic: status={:?} http={:?} ({e})",
            clock.t(),
            e.status().map(|s| s.code),
            e.http_status_code()
        ),
    }
    // Dead-letter attempts below 5 are rejected by the service (and the emulator).
    match admin.sub_dlq(&unique("probe-bad"), &topic, 10, &dlq, 2, None).await {
        Ok(n) => println!("max_delivery_attempts=2 accepted: {n}"),
        Err(e) => println!("{} max_delivery_attempts=2: {e}", clock.t()),
    }

    let mut listed = admin
        .topics
        .list_topics()
        .set_project(format!("projects/{PROJECT}"))
        .send()
        .await?;
    println!("{} list_topics (first page): {} topics", clock.t(), listed.topics.len());
    listed.topics.clear();

    admin.delete_sub(&plain).await?;
    admin.delete_sub(&with_dlq).await?;
    admin.delete_topic(&topic).await?;
    admin.delete_topic(&dlq).await?;
    println!("{} deleted", clock.t());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2 + 3. publish a batch with attributes and an ordering key; stream-pull it; ack, nack, drop,
// hold past the ack deadline, dead-letter.
pub async fn publish_and_subscribe() -> Result<()> {
    let clock = Clock::new();
    let admin = Admin::new().await?;
    let topic = unique("probe-topic");
    let dlq = unique("probe-dlq");
    admin.topic(&topic).await?;
    admin.topic(&dlq).await?;
    let plain = unique("probe-plain");
    admin.sub(&plain, &topic, 10).await?;
    let dlq_sub = unique("probe-dlq-sub");
    admin.sub(&dlq_sub, &dlq, 10).await?;
    let main = unique("probe-main");
    // No retry policy: a nack is redelivered at once. Ack deadline 10 s (the minimum).
    admin.sub_dlq(&main, &topic, 10, &dlq, 5, None).await?;

    // --- 2. publish ----------------------------------------------------------------------
    let publisher = publisher(&topic).await?;
    let bodies = ["ack", "nack", "drop", "hold", "dlq"];
    let futures: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            publisher.publish(
                Message::new()
                    .set_data(body.to_string())
                    .set_attributes([("tenant", "acme"), ("seq", &*i.to_string())])
                    .set_ordering_key("order-42"),
            )
        })
        .collect();
    let ids = futures::future::try_join_all(futures).await?;
    println!("{} published {} messages: ids={ids:?}", clock.t(), ids.len());

    let subscriber = subscriber().await?;

    // --- 3a. plain subscription: fields; delivery_attempt is None without a DLQ policy -----
    let mut stream = subscriber.subscribe(sub_path(&plain)).build();
    for _ in 0..bodies.len() {
        let (m, h) = next_within(&mut stream, Duration::from_secs(10)).await?.context("plain: timeout")?;
        println!("plain {}", show(&clock, &m, &h));
        h.ack();
    }
    drop(stream);

    // --- 3b. subscription with a dead-letter policy ---------------------------------------
    let mut stream = subscriber
        .subscribe(sub_path(&main))
        .set_max_outstanding_messages(100)
        .set_max_outstanding_bytes(10 * 1024 * 1024)
        .set_max_lease(Duration::from_secs(3600))
        .set_max_lease_extension(Duration::from_secs(10))
        .build();
    let mut seen: HashMap<String, Vec<(f64, Option<i32>)>> = HashMap::new();
    let mut dlq_done = false;
    let mut hold_task: Option<tokio::task::JoinHandle<()>> = None;
    let deadline = clock.secs() + 45.0;
    while clock.secs() < deadline {
        if dlq_done && hold_task.as_ref().is_some_and(|t| t.is_finished()) {
            // The held message was acked after 25 s; give it 5 more seconds to (not) come back.
            if let Some((m, h)) = next_within(&mut stream, Duration::from_secs(5)).await? {
                println!("main  UNEXPECTED {}", show(&clock, &m, &h));
            }
            break;
        }
        let Some((m, h)) = next_within(&mut stream, Duration::from_secs(1)).await? else { continue };
        let body = String::from_utf8_lossy(&m.data).into_owned();
        println!("main  {}", show(&clock, &m, &h));
        let n = {
            let e = seen.entry(body.clone()).or_default();
            e.push((clock.secs(), h.delivery_attempt()));
            e.len()
        };
        match (body.as_str(), n) {
            ("ack", _) => h.ack(),
            ("nack", 1) => h.nack(),
            ("drop", 1) => drop(h), // dropping an AtLeastOnce handler nacks it
            ("hold", 1) => {
                // Hold 25 s (> 2 x the 10 s ack deadline), then ack. The lease loop keeps
                // extending it, so no redelivery is expected meanwhile.
                let t = clock.secs();
                let c = Clock::new();
                hold_task = Some(tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(25)).await;
                    h.ack();
                    println!("main  hold: acked after holding {:.1} s (received at {t:.3} s), no redelivery meanwhile", c.secs());
                }));
            }
            ("dlq", _) => h.nack(), // until the dead-letter policy moves it
            _ => h.ack(),
        }
        if seen.get("dlq").map_or(0, Vec::len) >= 5 {
            dlq_done = true;
        }
    }
    println!("\nsummary (t, delivery_attempt) per body:");
    let mut keys: Vec<_> = seen.keys().cloned().collect();
    keys.sort();
    for k in keys {
        println!("  {k:5} {:?}", seen[&k]);
    }

    // The dead-lettered message on the DLQ subscription.
    let mut dstream = subscriber.subscribe(sub_path(&dlq_sub)).build();
    match next_within(&mut dstream, Duration::from_secs(10)).await? {
        Some((m, h)) => {
            println!("dlq   {}", show(&clock, &m, &h));
            h.ack();
        }
        None => println!("nothing on the dead-letter subscription after 10 s"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3c. flow control: max outstanding messages / bytes.
pub async fn flow_control() -> Result<()> {
    let clock = Clock::new();
    let admin = Admin::new().await?;
    let topic = unique("probe-topic");
    admin.topic(&topic).await?;
    let by_count = unique("probe-count");
    admin.sub(&by_count, &topic, 60).await?;
    let by_bytes = unique("probe-bytes");
    admin.sub(&by_bytes, &topic, 60).await?;
    let publisher = publisher(&topic).await?;
    let body = "x".repeat(1000);
    let futures: Vec<_> = (0..50).map(|_| publisher.publish(Message::new().set_data(body.clone()))).collect();
    futures::future::try_join_all(futures).await?;
    println!("{} published 50 x 1000 B", clock.t());

    let subscriber = subscriber().await?;
    for (label, sub, msgs, bytes) in [
        ("max_outstanding_messages=5", &by_count, 5i64, 0i64),
        ("max_outstanding_bytes=4500", &by_bytes, 0, 4500),
    ] {
        let mut stream = subscriber
            .subscribe(sub_path(sub))
            .set_max_outstanding_messages(msgs)
            .set_max_outstanding_bytes(bytes)
            .build();
        let mut held = Vec::new();
        while let Some((_, h)) = next_within(&mut stream, Duration::from_secs(3)).await? {
            held.push(h);
        }
        println!("{} {label}: {} messages outstanding after 3 s without acks", clock.t(), held.len());
        let n = held.len();
        for h in held.drain(..) {
            h.ack();
        }
        while let Some((_, h)) = next_within(&mut stream, Duration::from_secs(3)).await? {
            held.push(h);
        }
        println!("{} {label}: after acking those {n}: {} more arrived", clock.t(), held.len());
        let mut total = n + held.len();
        for h in held.drain(..) {
            h.ack();
        }
        while let Some((_, h)) = next_within(&mut stream, Duration::from_secs(2)).await? {
            total += 1;
            h.ack();
        }
        println!("{} {label}: acking as they come: {total} total", clock.t());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3d. lease extension: set_max_lease bounds how long the client keeps extending.
pub async fn lease() -> Result<()> {
    let clock = Clock::new();
    let admin = Admin::new().await?;
    let topic = unique("probe-topic");
    let dlq = unique("probe-dlq");
    admin.topic(&topic).await?;
    admin.topic(&dlq).await?;
    let sub = unique("probe-lease");
    admin.sub_dlq(&sub, &topic, 10, &dlq, 20, None).await?;
    let publisher = publisher(&topic).await?;
    publisher.publish(Message::new().set_data("leased")).await?;
    let subscriber = subscriber().await?;
    let mut stream = subscriber
        .subscribe(sub_path(&sub))
        .set_max_lease(Duration::from_secs(15))
        .set_max_lease_extension(Duration::from_secs(10))
        .build();
    let mut held = Vec::new();
    let mut first = None;
    while clock.secs() < 60.0 {
        let Some((m, h)) = next_within(&mut stream, Duration::from_secs(1)).await? else { continue };
        println!("{}", show(&clock, &m, &h));
        let now = clock.secs();
        match first {
            None => first = Some(now),
            Some(f) => {
                println!(
                    "redelivered {:.1} s after the first delivery (max_lease 15 s, lease extension 10 s)",
                    now - f
                );
                h.ack();
                break;
            }
        }
        held.push(h); // never acked: only the lease loop keeps it
    }
    // The first handler is still held. Acking it now (its ack id is stale) is harmless.
    for h in held {
        h.ack();
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3e. what dropping the MessageStream does to handlers still held by the application.
pub async fn shutdown() -> Result<()> {
    let clock = Clock::new();
    let admin = Admin::new().await?;
    let topic = unique("probe-topic");
    admin.topic(&topic).await?;
    let subscriber = subscriber().await?;
    for behaviour in [ShutdownBehavior::WaitForProcessing, ShutdownBehavior::NackImmediately] {
        let sub = unique("probe-shutdown");
        admin.sub(&sub, &topic, 10).await?;
        let publisher = publisher(&topic).await?;
        publisher.publish(Message::new().set_data("s")).await?;
        let mut stream = subscriber.subscribe(sub_path(&sub)).set_shutdown_behavior(behaviour).build();
        let (m, h) = next_within(&mut stream, Duration::from_secs(10)).await?.context("timeout")?;
        let first_id = m.message_id.clone();
        let token = stream.shutdown_token();
        drop(stream);
        println!("{} {behaviour:?}: stream dropped while the handler is held", clock.t());
        // Open a second stream: does the message come back before we settle the first handler?
        let mut stream2 = subscriber.subscribe(sub_path(&sub)).build();
        let early = next_within(&mut stream2, Duration::from_secs(4)).await?;
        println!(
            "{} {behaviour:?}: second stream within 4 s: {}",
            clock.t(),
            early.as_ref().map_or("nothing".into(), |(m, _)| format!("redelivered {}", m.message_id))
        );
        let early_handler = early.map(|(_, h)| h);
        h.ack(); // ack the original handler after the drop
        if let Some(h) = early_handler {
            h.ack();
        }
        tokio::time::timeout(Duration::from_secs(10), token.shutdown())
            .await
            .map_err(|_| anyhow::anyhow!("shutdown did not finish"))?;
        println!("{} {behaviour:?}: shutdown finished after the ack", clock.t());
        let late = next_within(&mut stream2, Duration::from_secs(15)).await?;
        println!(
            "{} {behaviour:?}: then within 15 s: {}",
            clock.t(),
            late.map_or("nothing (the late ack counted)".into(), |(m, h)| {
                h.ack();
                format!("redelivered {} (first {first_id})", m.message_id)
            })
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5a. throughput of a bare streaming-pull + ack loop.
pub async fn bench(n: usize, streams: usize, outstanding: i64) -> Result<()> {
    let admin = Admin::new().await?;
    let topic = unique("bench-topic");
    admin.topic(&topic).await?;
    let sub = unique("bench-sub");
    admin.sub(&sub, &topic, 60).await?;
    let publisher = publisher(&topic).await?;

    let clock = Clock::new();
    let body = "b".repeat(100);
    let futures: Vec<_> = (0..n)
        .map(|i| {
            publisher.publish(Message::new().set_data(body.clone()).set_attributes([("i", i.to_string())]))
        })
        .collect();
    futures::future::try_join_all(futures).await?;
    let pub_secs = clock.secs();
    println!("publish {n} x 100 B: {pub_secs:.2} s = {:.0} msg/s", n as f64 / pub_secs);

    let subscriber = subscriber().await?;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(HashSet::<String>::new()));
    let dups = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done_at = std::sync::Arc::new(std::sync::Mutex::new(None::<f64>));
    let clock = std::sync::Arc::new(Clock::new());
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut stream = subscriber
            .subscribe(sub_path(&sub))
            .set_max_outstanding_messages(outstanding)
            .build();
        let seen = seen.clone();
        let dups = dups.clone();
        let done_at = done_at.clone();
        let clock = clock.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                if seen.lock().unwrap().len() >= n {
                    break;
                }
                match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
                    Ok(Some(Ok((m, h)))) => {
                        h.ack();
                        let mut seen = seen.lock().unwrap();
                        if !seen.insert(m.message_id) {
                            dups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        if seen.len() == n {
                            *done_at.lock().unwrap() = Some(clock.secs());
                        }
                    }
                    Ok(Some(Err(e))) => panic!("stream error {e}"),
                    Ok(None) => break,
                    Err(_) => break, // idle 5 s: done or stuck
                }
            }
            // Shut down at once: acks are flushed, nothing else is held.
            stream.shutdown_token().shutdown().await;
        }));
    }
    for t in tasks {
        t.await?;
    }
    let secs = done_at.lock().unwrap().unwrap_or_else(|| clock.secs());
    let got = seen.lock().unwrap().len();
    println!(
        "streaming pull + ack, {streams} stream(s), max_outstanding_messages={outstanding}: {got}/{n} unique in {secs:.2} s = {:.0} msg/s, {} duplicates",
        got as f64 / secs,
        dups.load(std::sync::atomic::Ordering::Relaxed)
    );
    ensure!(got == n, "missing messages");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5b. time from nack (or a dropped handler, or a held-then-nacked handler) to redelivery.
pub async fn nack_latency() -> Result<()> {
    let admin = Admin::new().await?;
    let topic = unique("nack-topic");
    let dlq = unique("nack-dlq");
    admin.topic(&topic).await?;
    admin.topic(&dlq).await?;
    let subscriber = subscriber().await?;

    for (label, retry) in [
        ("no retry policy", None),
        ("retry policy 1s..60s", Some((Duration::from_secs(1), Duration::from_secs(60)))),
        ("retry policy 5s..60s", Some((Duration::from_secs(5), Duration::from_secs(60)))),
    ] {
        let sub = unique("nack-sub");
        admin.sub_dlq(&sub, &topic, 10, &dlq, 100, retry).await?;
        let publisher = publisher(&topic).await?;
        publisher.publish(Message::new().set_data("n")).await?;
        let mut stream = subscriber.subscribe(sub_path(&sub)).build();
        let mut lat = Vec::new();
        let (_, mut h) = next_within(&mut stream, Duration::from_secs(10)).await?.context("timeout")?;
        for round in 0..6 {
            let mode = match round % 3 {
                0 => "nack",
                1 => "drop",
                _ => "hold 3s+nack",
            };
            let clock;
            match mode {
                "nack" => {
                    clock = Clock::new();
                    h.nack();
                }
                "drop" => {
                    clock = Clock::new();
                    drop(h);
                }
                _ => {
                    // The delayed-nack emulation: keep the handler (the lease loop extends
                    // it) for the delay, then nack. Time is measured from the hold start.
                    clock = Clock::new();
                    let held = h;
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        held.nack();
                    });
                }
            }
            let (_, h2) = next_within(&mut stream, Duration::from_secs(90)).await?.context("no redelivery")?;
            lat.push(format!("{mode}: {:.3}s (attempt {:?})", clock.secs(), h2.delivery_attempt()));
            h = h2;
        }
        h.ack();
        println!("{label}:\n  {}", lat.join("\n  "));
    }
    Ok(())
}
