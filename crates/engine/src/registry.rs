//! The connectors and routes in force on this node: built from what the store holds ([`Registry::reload`], after
//! every change made over the API and every few seconds, so changes made on another node arrive too), and asked
//! which connector carries a message ([`Registry::resolve`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use smsgate_connectors::{Connector, Kit, SettingsError};
use smsgate_core::admission::country_of;
use smsgate_core::routing::{DEFAULT_ROUTE, Destination, Resolution, Route, RouteMatch, RouteTarget, RoutingTable};
use smsgate_core::{Message, Timestamp};
use smsgate_store::{ConnectorRecord, Store, StoreError};
use tracing::warn;

use crate::runtime::{Readiness, Runtime};

/// The connector the zero-config route sends to: the built-in simulated network.
pub const DEFAULT_CONNECTOR: &str = "sim";

/// The dispatch limits of a connector, from its settings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Messages a second at most; `None`: no limit.
    pub throughput: Option<f64>,
    /// Submissions waiting for the carrier's answer at once at most; `None`: no limit beyond the node's.
    pub window: Option<u32>,
}

/// A connector in force.
#[derive(Debug)]
pub struct Live {
    pub record: ConnectorRecord,
    pub connector: Arc<dyn Connector>,
    pub limits: Limits,
    /// Its pace, window, health and counters on this node.
    pub runtime: Arc<Runtime>,
}

#[derive(Debug, Default)]
struct InForce {
    table: RoutingTable,
    connectors: HashMap<String, Arc<Live>>,
    /// The accounts limited to named routes.
    limited: HashMap<smsgate_core::AccountId, Vec<String>>,
    /// Goes up at each reload that changes the routes or the accounts' limits.
    routing: u64,
}

/// This node's connectors and routes.
#[derive(Debug)]
pub struct Registry {
    kit: Kit,
    in_force: RwLock<Arc<InForce>>,
    /// Each connector's state by name, kept when its settings change.
    runtimes: std::sync::Mutex<HashMap<String, Arc<Runtime>>>,
}

/// The keys of a connector's settings that are the dispatcher's, not its kind's.
const LIMIT_KEYS: [&str; 2] = ["throughput", "window"];

/// A connector's settings split into its dispatch limits and its kind's settings; errors say what is wrong.
pub fn split_settings(settings: &serde_json::Value) -> Result<(Limits, serde_json::Value), SettingsError> {
    let mut kind =
        settings.as_object().cloned().ok_or_else(|| SettingsError("settings must be a JSON object".into()))?;
    let number = |key: &str, v: Option<serde_json::Value>| -> Result<Option<f64>, SettingsError> {
        match v {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => match v.as_f64() {
                Some(n) if n > 0.0 && n.is_finite() => Ok(Some(n)),
                _ => Err(SettingsError(format!("{key} must be a number above 0, or absent for no limit"))),
            },
        }
    };
    let throughput = number(LIMIT_KEYS[0], kind.remove(LIMIT_KEYS[0]))?;
    let window = match number(LIMIT_KEYS[1], kind.remove(LIMIT_KEYS[1]))? {
        Some(w) if w.fract() == 0.0 && w <= f64::from(u32::MAX) => Some(w as u32),
        Some(_) => return Err(SettingsError("window must be a whole number".into())),
        None => None,
    };
    Ok((Limits { throughput, window }, serde_json::Value::Object(kind)))
}

/// Builds a connector from its record; errors say what is wrong with it.
fn build(kit: &Kit, record: &ConnectorRecord) -> Result<(Arc<dyn Connector>, Limits), SettingsError> {
    let settings: serde_json::Value =
        serde_json::from_str(&record.settings).map_err(|e| SettingsError(format!("settings are not JSON: {e}")))?;
    let (limits, kind_settings) = split_settings(&settings)?;
    let connector = kit.build(&record.name, &record.kind, kind_settings)?;
    Ok((connector, limits))
}

/// Creates the zero-config connector and route the first time a database is used, and never again: an operator
/// who deletes them keeps them deleted.
pub async fn seed_defaults(store: &dyn Store, now: Timestamp) -> Result<(), StoreError> {
    if store.do_once("seed the sim connector", now).await? {
        let record = ConnectorRecord {
            name: DEFAULT_CONNECTOR.into(),
            kind: "sim".into(),
            settings: "{}".into(),
            created_at: now,
            updated_at: now,
        };
        store.insert_connector(&record).await?;
    }
    if store.do_once("seed the default route", now).await? {
        let route = Route {
            name: DEFAULT_ROUTE.into(),
            position: i64::MAX,
            matches: RouteMatch::default(),
            connectors: vec![RouteTarget {
                name: DEFAULT_CONNECTOR.into(),
                priority: 0,
                weight: 1,
                price_micros: None,
            }],
        };
        store.insert_route(&route, now).await?;
    }
    Ok(())
}

impl Registry {
    /// An empty registry; [`Registry::reload`] fills it.
    pub fn new(kit: Kit) -> Registry {
        Registry {
            kit,
            in_force: RwLock::new(Arc::new(InForce::default())),
            runtimes: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn current(&self) -> Arc<InForce> {
        self.in_force.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts in force what the store holds now. A connector whose record did not change keeps its instance; one
    /// whose settings cannot be built is left out (its routes see it as down) and logged.
    pub async fn reload(&self, store: &dyn Store) -> Result<(), StoreError> {
        let (records, routes) = (store.connectors().await?, store.routes().await?);
        let limited = store.route_limits().await?.into_iter().collect();
        let before = self.current();
        let mut connectors = HashMap::with_capacity(records.len());
        let mut runtimes = self.runtimes.lock().unwrap_or_else(|e| e.into_inner());
        runtimes.retain(|name, _| records.iter().any(|r| &r.name == name));
        for record in records {
            if let Some(live) = before.connectors.get(&record.name)
                && live.record.kind == record.kind
                && live.record.settings == record.settings
            {
                connectors.insert(record.name.clone(), live.clone());
                continue;
            }
            match build(&self.kit, &record) {
                Ok((connector, limits)) => {
                    let runtime = runtimes
                        .entry(record.name.clone())
                        .or_insert_with(|| Arc::new(Runtime::new(&record.name, limits)));
                    runtime.set_limits(limits);
                    connector.start();
                    let live = Live { record: record.clone(), connector, limits, runtime: runtime.clone() };
                    connectors.insert(record.name.clone(), Arc::new(live));
                }
                Err(e) => warn!(connector = %record.name, error = %e, "connector left out: its settings are bad"),
            }
        }
        drop(runtimes);
        let table = RoutingTable::new(routes);
        let same = table.routes() == before.table.routes() && limited == before.limited;
        let routing = if same { before.routing } else { before.routing + 1 };
        let in_force = Arc::new(InForce { table, connectors, limited, routing });
        *self.in_force.write().unwrap_or_else(|e| e.into_inner()) = in_force;
        Ok(())
    }

    /// Whether a connector record would build (its kind is known and its settings are good); errors say why not.
    pub fn check(&self, record: &ConnectorRecord) -> Result<(), SettingsError> {
        build(&self.kit, record).map(|_| ())
    }

    /// The state of a connector on this node, if it is in force.
    pub fn runtime(&self, name: &str) -> Option<Arc<Runtime>> {
        self.current().connectors.get(name).map(|l| l.runtime.clone())
    }

    /// The connector of this name, if in force.
    pub fn connector(&self, name: &str) -> Option<Arc<Live>> {
        self.current().connectors.get(name).cloned()
    }

    /// How many messages the connectors in force have turns for now ([`Runtime::room`]), and when the
    /// first of them has one again if none has; `None` when any of them has no throughput limit (or there is
    /// none), so that what it could take now is not known. A message's route is known only once it is claimed,
    /// so this is the room of all of them: when every one is paced out, a message claimed now could only be put
    /// back.
    pub(crate) fn paced_room(&self, now: std::time::Instant) -> Option<(usize, std::time::Instant)> {
        let mut total: Option<(usize, std::time::Instant)> = None;
        // Read where they are kept: the dispatcher asks before each claim and the ingress before each group.
        for live in self.current().connectors.values() {
            let (room, opens) = live.runtime.room(now)?;
            total = Some(match total {
                None => (room, opens),
                Some((sum, first)) => (sum.saturating_add(room), first.min(opens)),
            });
        }
        total
    }

    /// Every connector in force, by name.
    pub fn connectors(&self) -> Vec<Arc<Live>> {
        let mut all: Vec<_> = self.current().connectors.values().cloned().collect();
        all.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        all
    }

    /// The routes in force, in the order they are tried.
    pub fn routes(&self) -> Vec<Route> {
        self.current().table.routes().to_vec()
    }

    /// A number that changes whenever the routes or the accounts' route limits in force change.
    pub fn routing_version(&self) -> u64 {
        self.current().routing
    }

    /// Each route in force, and whether the messages that wait for it may go now: the best readiness among its
    /// connectors in force ([`Runtime::readiness`]; one that is not in force is down). Takes no probe.
    pub fn route_readiness(&self, now: std::time::Instant) -> Vec<(String, Readiness)> {
        let in_force = self.current();
        let ready = |name: &str| in_force.connectors.get(name).map_or(Readiness::Down, |l| l.runtime.readiness(now));
        let routes = in_force.table.routes().iter();
        routes
            .map(|r| (r.name.clone(), r.connectors.iter().map(|c| ready(&c.name)).max().unwrap_or(Readiness::Down)))
            .collect()
    }

    /// Which connector would carry a message to `to` from `from` for `account`, and why; see
    /// [`RoutingTable::resolve`]. A connector is up when it is in force and healthy (or its cool-down is over); an
    /// account limited to named routes gets only those. Asking takes no probe: for explaining, not sending.
    pub fn resolve(&self, to: &str, from: &str, account: smsgate_core::AccountId) -> Resolution {
        let now = std::time::Instant::now();
        let up = |live: &Live| live.runtime.health(now).down_for.is_none_or(|d| d.is_zero());
        self.resolve_with(to, from, account, None, 0.5, up)
    }

    fn resolve_with(
        &self,
        to: &str,
        from: &str,
        account: smsgate_core::AccountId,
        avoid: Option<&str>,
        draw: f64,
        up: impl Fn(&Live) -> bool,
    ) -> Resolution {
        let in_force = self.current();
        let allowed = in_force.limited.get(&account).map(Vec::as_slice);
        let country = if in_force.table.uses_country() { country_of(to) } else { None };
        let dest = Destination { to, from, account, country: country.as_deref() };
        let is_up = |name: &str| in_force.connectors.get(name).is_some_and(|l| up(l));
        in_force.table.resolve(&dest, allowed, is_up, avoid, draw)
    }

    /// [`Registry::resolve`] for a message about to be sent: a retry after a temporary error passes over the
    /// connector that gave it, and the spread by weight draws from the message's id and attempt.
    /// A connector whose cool-down is over gets this message as its probe.
    pub fn resolve_message(&self, m: &Message) -> Resolution {
        let avoid = m.error_code.as_ref().and(m.connector.as_deref());
        let now = std::time::Instant::now();
        self.resolve_with(&m.to, &m.from, m.account_id, avoid, draw(m), |l| l.runtime.is_up(now))
    }
}

/// A number in `[0, 1)` from a message's id and attempt: spread evenly over messages (UUIDv7 ids end in random
/// bits), and different at each attempt.
fn draw(m: &Message) -> f64 {
    let bits = m.id.0.as_u128() ^ (u128::from(m.attempts) << 64);
    let mixed = (bits ^ (bits >> 64)).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    (mixed >> 75) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_taken_out_of_the_settings() {
        let s = serde_json::json!({"throughput": 50, "window": 10, "mode": "healthy"});
        let (limits, kind) = split_settings(&s).unwrap();
        assert_eq!(limits, Limits { throughput: Some(50.0), window: Some(10) });
        assert_eq!(kind, serde_json::json!({"mode": "healthy"}));
        assert_eq!(split_settings(&serde_json::json!({})).unwrap().0, Limits::default());
        for (bad, why) in [
            (serde_json::json!({"throughput": 0}), "throughput must be"),
            (serde_json::json!({"throughput": "fast"}), "throughput must be"),
            (serde_json::json!({"window": 2.5}), "whole number"),
            (serde_json::json!([1]), "JSON object"),
        ] {
            assert!(split_settings(&bad).unwrap_err().0.contains(why), "{bad}");
        }
    }
}
