//! The floor of a durable presence write on a Redis Cluster, for `bench/cluster-load.sh`: the least work
//! Redis must do for one, with no presenced and no script. Each write stores a user's record (a version
//! and a facts value of `FACTS` bytes) and moves the user's timer in its partition's sorted set; writes go
//! in batches of `BATCH` users of one partition, as one pipeline with a `WAIT 1` behind it, `TASKS`
//! batches in flight. Prints the writes made.
//!
//!   cargo run --release -p presence-store-redis --example write_floor -- SECONDS URL...
//!   (environment: BATCH=6, TASKS=6, FACTS=160, USERS=100000)

use std::time::{Duration, Instant};

use redis::cluster::ClusterClient;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().ok_or("SECONDS URL...")?.parse()?;
    let urls: Vec<String> = args.collect();
    let (batch, tasks, users) = (setting("BATCH", 6), setting("TASKS", 6), setting("USERS", 100_000));
    let facts = "f".repeat(usize::try_from(setting("FACTS", 160))?);
    let connection = ClusterClient::new(urls)?.get_async_connection().await?;
    let until = Instant::now() + Duration::from_secs(seconds);
    let workers = (0..tasks).map(|task| {
        let mut connection = connection.clone();
        let facts = facts.clone();
        tokio::spawn(async move {
            let mut written = 0_u64;
            let mut next = task * 7_919;
            while Instant::now() < until {
                let partition = next % 256;
                let mut pipe = redis::pipe();
                for _ in 0..batch {
                    next = (next + 104_729) % users;
                    let record = format!("floor:{{p{partition}}}u:{next}");
                    pipe.cmd("HSET").arg(&record).arg("v").arg(written).arg("f").arg(&facts).ignore();
                    pipe.cmd("ZADD").arg(format!("floor:{{p{partition}}}timers")).arg(written).arg(next).ignore();
                }
                pipe.cmd("WAIT").arg(1).arg(1_000);
                let (reached,): (i64,) = pipe.query_async(&mut connection).await.map_err(|error| error.to_string())?;
                if reached < 1 {
                    return Err(format!("WAIT reached {reached} replicas"));
                }
                written += batch;
                next += 1;
            }
            Ok(written)
        })
    });
    let mut written = 0;
    for worker in workers.collect::<Vec<_>>() {
        written += worker.await??;
    }
    println!("{written}");
    Ok(())
}
