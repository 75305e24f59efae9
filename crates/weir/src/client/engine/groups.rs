//! The groups a client routes to, and the one health record of each deployment.
//!
//! Configured groups and aliases are built at start. A direct name (`provider/model`) gets a
//! one-deployment group: built at start for every configured deployment and listed model,
//! and on first use for a provider that takes any model name, up to [`MAX_DIRECT_GROUPS`].
//! Past that, such a group is built for the request and forgotten: names a caller makes up
//! never grow the process. A name that resolves to nothing creates nothing.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::super::route::{Route, Target, join_qualified};
use crate::config::{Config, GroupConfig, HedgeConfig};
use crate::error::{Error, Result};
use crate::router::{DeploymentHealth, DeploymentSpec, Group, LatencyConfig};

/// Direct `provider/model` groups remembered beyond the configured ones.
pub(crate) const MAX_DIRECT_GROUPS: usize = 1024;

/// A group and what the engine needs of its config.
#[derive(Debug)]
pub(crate) struct GroupState {
    pub(crate) name: String,
    pub(crate) group: Group,
    pub(crate) config: GroupConfig,
}

impl GroupState {
    fn new(name: &str, config: GroupConfig, full: &Config, health: &HealthTable) -> Self {
        let specs = config
            .deployments
            .iter()
            .map(|d| {
                let mut spec = DeploymentSpec::new(d.provider.clone(), d.upstream_model.clone());
                spec.weight = d.weight;
                spec.priority = d.priority;
                spec.cost_per_million = full
                    .pricing
                    .lookup(&d.provider, &d.upstream_model)
                    .map(|p| p.input + p.output);
                spec
            })
            .collect();
        let group = Group::with_health(name, config.strategy, specs, |spec| {
            health.get(&join_qualified(&spec.provider, &spec.upstream_model), full)
        });
        Self {
            name: name.to_owned(),
            group,
            config,
        }
    }

    /// Whether this group hedges at its p95, so its deployments keep first-byte samples.
    pub(crate) fn samples_ttfb(&self) -> bool {
        matches!(self.config.hedge, Some(HedgeConfig::P95 { .. }))
    }

    /// When to hedge a first attempt on `health`'s deployment.
    pub(crate) fn hedge_delay(&self, health: &DeploymentHealth) -> Option<std::time::Duration> {
        match self.config.hedge? {
            HedgeConfig::After(d) => Some(d),
            // Too few samples to know a p95: hedge late rather than double the load.
            HedgeConfig::P95 { min } => health.ttfb_p95().map(|p95| p95.max(min)),
        }
    }
}

/// Every configured deployment's health, by `provider/upstream_model`.
#[derive(Debug, Default)]
struct HealthTable(HashMap<String, Arc<DeploymentHealth>>);

impl HealthTable {
    /// The configured deployment's health, or a fresh one for a deployment not configured.
    fn get(&self, id: &str, config: &Config) -> Arc<DeploymentHealth> {
        match self.0.get(id) {
            Some(h) => Arc::clone(h),
            None => fresh_health(id, config),
        }
    }
}

fn fresh_health(id: &str, config: &Config) -> Arc<DeploymentHealth> {
    Arc::new(DeploymentHealth::new(
        id,
        config.breaker.clone(),
        LatencyConfig::default(),
    ))
}

/// The groups of one client. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Groups {
    configured: HashMap<String, Arc<GroupState>>,
    health: HealthTable,
    direct: RwLock<HashMap<String, Arc<GroupState>>>,
}

impl Groups {
    pub(crate) fn from_config(config: &Config) -> Self {
        let mut health = HealthTable::default();
        let mut direct_ids: Vec<(String, String)> = Vec::new();
        for g in config.groups.values() {
            for d in &g.deployments {
                direct_ids.push((d.provider.clone(), d.upstream_model.clone()));
            }
        }
        for p in &config.providers {
            for m in &p.models {
                direct_ids.push((p.name.clone(), m.clone()));
            }
        }
        for (provider, model) in &direct_ids {
            let id = join_qualified(provider, model);
            health
                .0
                .entry(id.clone())
                .or_insert_with(|| fresh_health(&id, config));
        }
        let configured = config
            .groups
            .iter()
            .map(|(name, g)| {
                let state = GroupState::new(name, g.clone(), config, &health);
                (name.clone(), Arc::new(state))
            })
            .collect();
        let direct = direct_ids
            .iter()
            .map(|(provider, model)| {
                let id = join_qualified(provider, model);
                let state =
                    GroupState::new(&id, GroupConfig::alias(provider, model), config, &health);
                (id, Arc::new(state))
            })
            .collect();
        Self {
            configured,
            health,
            direct: RwLock::new(direct),
        }
    }

    /// The group a model name starts with.
    pub(crate) fn resolve(&self, model: &str, config: &Config) -> Result<Arc<GroupState>> {
        match super::super::route::resolve_target(config, model)? {
            Target::Group(name) => {
                self.configured
                    .get(&name)
                    .cloned()
                    .ok_or_else(|| Error::ModelNotFound {
                        model: model.to_owned(),
                        hint: format!("group `{name}` is not configured"),
                    })
            }
            Target::Direct(route) => Ok(self.direct_group(&route, config)),
        }
    }

    fn direct_group(&self, route: &Route, config: &Config) -> Arc<GroupState> {
        let id = route.qualified();
        if let Ok(map) = self.direct.read()
            && let Some(g) = map.get(&id)
        {
            return Arc::clone(g);
        }
        let state = Arc::new(GroupState::new(
            &id,
            GroupConfig::alias(&route.provider, &route.upstream_model),
            config,
            &self.health,
        ));
        match self.direct.write() {
            Ok(mut map) if map.len() < MAX_DIRECT_GROUPS || map.contains_key(&id) => {
                Arc::clone(map.entry(id).or_insert(state))
            }
            // Full: serve this request with a group of its own, kept by nobody.
            _ => state,
        }
    }

    /// Every group, configured and direct.
    pub(crate) fn all(&self) -> Vec<Arc<GroupState>> {
        let mut out: Vec<Arc<GroupState>> = self.configured.values().cloned().collect();
        if let Ok(map) = self.direct.read() {
            out.extend(map.values().cloned());
        }
        out
    }

    /// How many groups the client keeps (configured and direct).
    pub(crate) fn len(&self) -> usize {
        self.configured.len() + self.direct.read().map_or(0, |m| m.len())
    }
}
