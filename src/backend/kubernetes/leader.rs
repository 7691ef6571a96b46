//! Leader election on a `coordination.k8s.io/v1` Lease: exactly one replica reconciles; the others serve reads.
//! The holder renews the lease every third of its duration; another replica takes it once it has not been
//! renewed for a whole duration. Writes use the Lease's resourceVersion, so two replicas never both take it.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    /// This replica, as the Lease names its holder.
    pub identity: String,
    pub duration: Duration,
}

/// What a replica does about a Lease it has read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// It holds the lease: renew it.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it.
    Take,
    /// Someone else holds it, until `expires` unless renewed.
    Follow { expires: jiff::Timestamp },
}

/// Whether `me` renews, takes or leaves the lease `spec` at `now`.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: jiff::Timestamp) -> Decision {
    let Some(spec) = spec else { return Decision::Take };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == me => Decision::Renew,
        None | Some("") => Decision::Take,
        Some(_) => {
            let duration = jiff::SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
            let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|t| t.0);
            match renewed.and_then(|at| at.checked_add(duration).ok()) {
                Some(expires) if expires > now => Decision::Follow { expires },
                _ => Decision::Take,
            }
        }
    }
}

/// Where a round left this replica.
enum Standing {
    Leads,
    /// Another replica holds the lease, until `expires` if known.
    Follows {
        expires: Option<jiff::Timestamp>,
    },
}

/// One round: reads the Lease and renews or takes it when it may.
async fn round(api: &Api<Lease>, config: &LeaseConfig) -> kube::Result<Standing> {
    let now = jiff::Timestamp::now();
    let current = api.get_opt(&config.name).await?;
    let decision = decide(current.as_ref().and_then(|l| l.spec.as_ref()), &config.identity, now);
    if let Decision::Follow { expires } = decision {
        return Ok(Standing::Follows { expires: Some(expires) });
    }
    let previous = current.as_ref().and_then(|l| l.spec.clone()).unwrap_or_default();
    let spec = LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(i32::try_from(config.duration.as_secs()).unwrap_or(15)),
        acquire_time: Some(match decision {
            Decision::Renew => previous.acquire_time.clone().unwrap_or(MicroTime(now)),
            _ => MicroTime(now),
        }),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(
            previous.lease_transitions.unwrap_or(0) + i32::from(decision == Decision::Take && current.is_some()),
        ),
        ..LeaseSpec::default()
    };
    let result = match current {
        Some(mut lease) => {
            lease.spec = Some(spec);
            api.replace(&config.name, &PostParams::default(), &lease).await
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(config.name.clone()), ..ObjectMeta::default() },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &lease).await
        }
    };
    match result {
        Ok(_) => Ok(Standing::Leads),
        // Another replica wrote it first.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Standing::Follows { expires: None }),
        Err(e) => Err(e),
    }
}

/// Runs `lead` while this replica holds the Lease, stopping it (the `stop` receiver flips to true) as soon as
/// it does not; forever.
pub async fn lead_while_elected<F, Fut>(api: Api<Lease>, config: LeaseConfig, lead: F)
where
    F: Fn(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let every = config.duration / 3;
    let mut leading: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)> = None;
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        let mut pause = every;
        let holds = match round(&api, &config).await {
            Ok(Standing::Leads) => {
                last_renewed = tokio::time::Instant::now();
                true
            }
            Ok(Standing::Follows { expires }) => {
                // Ask again just after the holder's lease runs out: a dead leader is replaced within a duration.
                let left = expires
                    .map(|at| Duration::try_from(at.duration_since(jiff::Timestamp::now())).unwrap_or(Duration::ZERO));
                pause = left.map_or(every, |left| every.min(left + Duration::from_millis(100)));
                false
            }
            // Unsure: keep leading only while the last renewal still covers us.
            Err(e) => {
                tracing::debug!(error = %e, "leader election: could not read or write the lease");
                leading.is_some() && last_renewed.elapsed() < config.duration - every
            }
        };
        match (holds, leading.take()) {
            (true, None) => {
                tracing::info!(identity = %config.identity, "leader: this replica reconciles evaluations");
                let (stop, stopped) = watch::channel(false);
                leading = Some((stop, tokio::spawn(lead(stopped))));
            }
            (true, Some(running)) => leading = Some(running),
            (false, Some((stop, task))) => {
                tracing::info!(identity = %config.identity, "leader: lost the lease; another replica reconciles");
                let _ = stop.send(true);
                let _ = task.await;
            }
            (false, None) => {}
        }
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed_seconds_ago: i64) -> LeaseSpec {
        let now = jiff::Timestamp::from_second(1_800_000_000).expect("time");
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(now - jiff::SignedDuration::from_secs(renewed_seconds_ago))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_replica_renews_its_own_lease_takes_an_expired_one_and_follows_a_live_one() {
        let now = jiff::Timestamp::from_second(1_800_000_000).expect("time");
        assert_eq!(decide(None, "a", now), Decision::Take);
        assert_eq!(decide(Some(&spec("a", 100)), "a", now), Decision::Renew);
        let expires = now + jiff::SignedDuration::from_secs(10);
        assert_eq!(decide(Some(&spec("b", 5)), "a", now), Decision::Follow { expires });
        assert_eq!(decide(Some(&spec("b", 16)), "a", now), Decision::Take);
        assert_eq!(decide(Some(&LeaseSpec::default()), "a", now), Decision::Take);
    }
}
