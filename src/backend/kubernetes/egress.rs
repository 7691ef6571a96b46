//! Runner egress in every served namespace (on the leader only). The operator's runner NetworkPolicies
//! (`app.kubernetes.io/component: runner`, k8s/base/networkpolicy.yaml) live in the service's own namespace; a
//! NetworkPolicy confines pods of its own namespace only, so the leader copies them into every other namespace
//! it serves, and puts into every served namespace, its own included, an isolation policy that selects the runner
//! pods and allows nothing. NetworkPolicies add up (a pod may do what any policy selecting it allows), so the
//! isolation policy takes nothing from the operator's allow-lists; it only makes sure that runner pods are never
//! unconfined, even while the operator's policies are missing. Copies follow their source (a change, a deletion)
//! and come back when changed or deleted in place: every change of a source or a copy makes the leader apply the
//! whole desired state again (server-side apply, field manager `lm-eval-aas`), which changes nothing when nothing
//! differs.
//!
//! `desired` and `stale` are the pure part; `run` watches and carries them out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use super::Shared;
use crate::k8s::{MANAGED_BY, MANAGED_BY_LABEL};

const NAME_LABEL: &str = "app.kubernetes.io/name";
const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
const RUNNER: &str = "runner";
/// On a copy: `<namespace>/<name>` of the policy it copies.
pub const COPIED_FROM_ANNOTATION: &str = "lm-eval-aas.io/copied-from";
/// Selects the runner pods, and nothing else, in every served namespace.
pub const ISOLATION_POLICY: &str = "lm-eval-aas-runner-isolation";
const FIELD_MANAGER: &str = "lm-eval-aas";
/// Changes arriving together (a `kubectl apply` of both runner policies) are carried out together.
const SETTLE: Duration = Duration::from_millis(200);
/// After a failed round (the API server away, a missing RBAC verb), the next try.
const RETRY: Duration = Duration::from_secs(10);

/// The operator's runner policies in the service's namespace: labelled as the runner's, not made by the service.
pub fn sources_selector() -> String {
    format!("{COMPONENT_LABEL}={RUNNER},{MANAGED_BY_LABEL}!={MANAGED_BY}")
}

/// What the service makes: the copies and the isolation policies.
pub fn managed_selector() -> String {
    format!("{COMPONENT_LABEL}={RUNNER},{MANAGED_BY_LABEL}={MANAGED_BY}")
}

fn runner_pods() -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string())])),
        ..LabelSelector::default()
    }
}

fn managed_meta(name: String, namespace: &str, copied_from: Option<String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_string()),
        labels: Some(BTreeMap::from([
            (NAME_LABEL.to_string(), MANAGED_BY.to_string()),
            (COMPONENT_LABEL.to_string(), RUNNER.to_string()),
            (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        ])),
        annotations: copied_from.map(|from| BTreeMap::from([(COPIED_FROM_ANNOTATION.to_string(), from)])),
        ..ObjectMeta::default()
    }
}

/// The NetworkPolicies the service keeps in served namespace `namespace`, given the operator's runner policies
/// `sources` of the service's namespace `home`: the isolation policy, and (outside `home`) a copy of each source
/// under its name, its rules as they are and its pod selector the runner pods' (a copy confines runner pods, not
/// the tenant's own). A source the service made itself is not copied.
pub fn desired(home: &str, sources: &[NetworkPolicy], namespace: &str) -> Vec<NetworkPolicy> {
    let isolation = NetworkPolicy {
        metadata: managed_meta(ISOLATION_POLICY.into(), namespace, None),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(runner_pods()),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            // Owned empty, so a rule added in place is taken away again.
            ingress: Some(Vec::new()),
            egress: Some(Vec::new()),
        }),
    };
    let copies = sources
        .iter()
        .filter(|_| namespace != home)
        .filter(|source| source.labels().get(MANAGED_BY_LABEL).is_none_or(|by| by != MANAGED_BY))
        .filter(|source| source.labels().get(COMPONENT_LABEL).is_some_and(|c| c == RUNNER))
        .filter_map(|source| {
            let name = source.metadata.name.clone().filter(|name| name != ISOLATION_POLICY)?;
            let mut spec = source.spec.clone().unwrap_or_default();
            spec.pod_selector = Some(runner_pods());
            spec.ingress.get_or_insert_default();
            spec.egress.get_or_insert_default();
            Some(NetworkPolicy {
                metadata: managed_meta(name.clone(), namespace, Some(format!("{home}/{name}"))),
                spec: Some(spec),
            })
        });
    std::iter::once(isolation).chain(copies).collect()
}

/// The names of the service's policies in a namespace (`existing`, as listed by `managed_selector`) that are no
/// longer `wanted`: copies of a source that is gone.
pub fn stale(existing: &[NetworkPolicy], wanted: &[NetworkPolicy]) -> Vec<String> {
    existing
        .iter()
        .filter(|policy| policy.labels().get(MANAGED_BY_LABEL).is_some_and(|by| by == MANAGED_BY))
        .filter_map(|policy| policy.metadata.name.clone())
        .filter(|name| !wanted.iter().any(|w| w.metadata.name.as_ref() == Some(name)))
        .collect()
}

/// Keeps the runner policies of every served namespace until `stop` flips.
pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let client = shared.controller_client.clone();
    let namespaces = shared.config.namespaces.clone();
    let home = namespaces[0].clone();
    let sources_api: Api<NetworkPolicy> = Api::namespaced(client.clone(), &home);
    let sources = watcher(sources_api.clone(), watcher::Config::default().labels(&sources_selector()))
        .default_backoff()
        .map(|_| ())
        .boxed();
    let copies = namespaces.iter().map(|namespace| {
        let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), namespace);
        watcher(api, watcher::Config::default().labels(&managed_selector())).default_backoff().map(|_| ()).boxed()
    });
    let mut changes = futures::stream::select_all(std::iter::once(sources).chain(copies));
    loop {
        let round = keep(&client, &home, &namespaces).await;
        if let Err(e) = &round {
            tracing::warn!(error = %e, "could not keep the runner NetworkPolicies of the served namespaces; retrying");
        }
        let next = async {
            match round {
                // The watches retry by themselves and never end; should they, nothing more comes to do.
                Ok(()) => {
                    if changes.next().await.is_none() {
                        std::future::pending::<()>().await;
                    }
                }
                Err(_) => tokio::time::sleep(RETRY).await,
            }
            // Let the rest of a burst arrive, then take it all in one round.
            tokio::time::sleep(SETTLE).await;
            while let Some(Some(())) = changes.next().now_or_never() {}
        };
        tokio::select! {
            () = next => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// One round: every served namespace made to hold what `desired` says.
async fn keep(client: &Client, home: &str, namespaces: &[String]) -> kube::Result<()> {
    let sources = Api::<NetworkPolicy>::namespaced(client.clone(), home)
        .list(&ListParams::default().labels(&sources_selector()))
        .await?
        .items;
    for namespace in namespaces {
        let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), namespace);
        let wanted = desired(home, &sources, namespace);
        for policy in &wanted {
            let name = policy.metadata.name.as_deref().unwrap_or_default();
            api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(policy)).await?;
        }
        let existing = api.list(&ListParams::default().labels(&managed_selector())).await?.items;
        for name in stale(&existing, &wanted) {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(namespace = %namespace, policy = %name, "removed a runner NetworkPolicy whose source is gone")
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "egress_tests.rs"]
mod tests;
