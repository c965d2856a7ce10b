//! [`Admin`]: accounts and their keys, connectors and routes, the routes an account may use, SMPP credentials,
//! webhook settings, and seeding from the config file. Every check lives here, once, for every front end; every
//! change is stored first, then put in force on this node at once (other nodes read it within seconds).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};
use smsgate_core::access::{IpRanges, hash_password};
use smsgate_core::netguard::Destinations;
use smsgate_core::routing::{DEFAULT_ROUTE, Resolution, Route, RouteMatch, RouteTarget, RoutingTable};
use smsgate_core::{AccountId, Timestamp};
use smsgate_engine::Engine;
use smsgate_store::{Account, ConnectorRecord, SmppCredential, Store, Webhooks};

use crate::error::{Result, ServiceError};

/// The most characters of a connector's or route's name.
pub const MAX_NAME: usize = 64;

/// The most characters of an account's name.
pub const MAX_ACCOUNT_NAME: usize = 200;

/// The fewest characters of an SMPP password (SMPP 3.4 allows 8 at most, so every one counts).
pub const MIN_SMPP_PASSWORD: usize = 6;

/// How long a rotated webhook secret still signs callbacks, beside the new one.
pub const SECRET_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Accounts, keys, routing and the settings of accounts.
#[derive(Debug, Clone)]
pub struct Admin {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) engine: Engine,
    /// Whether a sender ID an account asks for waits for the operator's approval.
    pub(crate) sender_ids_need_approval: bool,
    /// Where webhook URLs may point.
    destinations: Destinations,
    /// The server's secret that API keys are hashed with.
    pub(crate) key_secret: Arc<[u8]>,
    /// Failed SMPP binds and their lockouts, on this node.
    pub(crate) binds: Arc<crate::binds::BindGuard>,
}

/// A route as requests give it: every field may be absent (a change names only what it changes).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matches: Option<MatchSpec>,
    pub connectors: Option<Vec<TargetSpec>>,
    /// Where it is tried: lower first (default: after every route there is); `default` is always last.
    pub position: Option<i64>,
}

/// What a route matches, as requests give it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    pub prefix: Option<String>,
    pub country: Option<String>,
    pub sender: Option<String>,
    pub account: Option<String>,
}

/// A route's connector as requests give it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub name: String,
    /// Lower is preferred (default 0).
    pub priority: Option<u32>,
    /// Share of traffic among equals (default 1).
    pub weight: Option<u32>,
    /// Price of one segment, in the currency's units (0.0075).
    pub price: Option<f64>,
}

/// New SMPP credentials, as requests give them.
#[derive(Debug, Clone)]
pub struct CredentialSpec {
    pub system_id: String,
    pub password: String,
    pub allowed_ips: Option<Vec<String>>,
    pub max_binds: Option<u32>,
    pub throughput: Option<f64>,
}

/// A new webhook signing secret: `whsec_` and 64 hex digits of randomness.
pub fn new_secret() -> String {
    format!("whsec_{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

fn not_found(what: &str, name: &str) -> ServiceError {
    ServiceError::not_found("not_found", format!("no {what} named {name:?}"))
}

/// Names are what operators type and logs show: letters, digits, `-`, `_`, `.`.
fn check_name(code: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            code,
            format!("name {name:?} must be 1 to {MAX_NAME} letters, digits, '-', '_' or '.'"),
        ))
    }
}

/// Printable ASCII without spaces, 1 to `max` characters.
fn printable(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic())
}

impl Admin {
    /// Accounts' sender IDs wait for the operator's approval ([`Admin::approve_sender_ids`] says otherwise).
    pub fn new(store: Arc<dyn Store>, engine: Engine) -> Admin {
        Admin {
            store,
            engine,
            sender_ids_need_approval: true,
            destinations: Destinations::default(),
            key_secret: crate::keys::random_secret(),
            binds: Arc::default(),
        }
    }

    /// The server's secret that API keys are hashed with: the same on every node sharing the database, and kept
    /// (a new one makes every key unknown). Without it, a random one, for this process only.
    pub fn key_secret(self, secret: &[u8]) -> Admin {
        Admin { key_secret: secret.into(), ..self }
    }

    /// Where webhook URLs may point: public addresses and these private ranges (none by default).
    pub fn webhook_destinations(self, destinations: Destinations) -> Admin {
        Admin { destinations, ..self }
    }

    /// Whether a sender ID an account asks for waits for the operator's approval (true by default: a brand's name
    /// is not the first asker's).
    pub fn approve_sender_ids(self, need_approval: bool) -> Admin {
        Admin { sender_ids_need_approval: need_approval, ..self }
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.engine.now()
    }

    /// Puts what the store holds in force on this node now.
    async fn reload(&self) -> Result<()> {
        Ok(self.engine.reload().await?)
    }

    /// The admin account, creating it the first time.
    pub async fn admin_account(&self) -> Result<Account> {
        match self.store.admin_account().await? {
            Some(a) => Ok(a),
            None => {
                let admin = self.store.create_account("admin", true, self.now()).await?;
                self.store.ensure_webhook_secret(admin.id, &new_secret(), self.now()).await?;
                Ok(admin)
            }
        }
    }

    /// Creates an account (a tenant) named 1 to [`MAX_ACCOUNT_NAME`] characters.
    /// Every account, oldest first (the operator's list).
    pub async fn accounts(&self) -> Result<Vec<Account>> {
        Ok(self.store.accounts().await?)
    }

    pub async fn create_account(&self, name: &str) -> Result<Account> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_ACCOUNT_NAME {
            return Err(ServiceError::invalid(
                "invalid_name",
                format!("name must be 1 to {MAX_ACCOUNT_NAME} characters"),
            ));
        }
        let account = self.store.create_account(name, false, self.now()).await?;
        // Callbacks are signed from the first one: the secret exists before any URL is set.
        self.store.ensure_webhook_secret(account.id, &new_secret(), self.now()).await?;
        Ok(account)
    }

    /// An account by id.
    pub async fn account(&self, id: AccountId) -> Result<Account> {
        self.store.account(id).await?.ok_or_else(|| ServiceError::not_found("not_found", "no such account"))
    }

    /// Limits an account to named routes (`None`: all); the account after.
    pub async fn set_account_routes(&self, account: AccountId, routes: Option<&[String]>) -> Result<Account> {
        if let Some(names) = routes {
            let known = self.store.routes().await?;
            if let Some(unknown) = names.iter().find(|n| !known.iter().any(|r| &r.name == *n)) {
                return Err(ServiceError::invalid("unknown_route", format!("no route named {unknown:?}")));
            }
        }
        let id = account.to_string();
        if !self.store.set_account_routes(account, routes).await? {
            return Err(not_found("account", &id));
        }
        self.reload().await?;
        self.store.account(account).await?.ok_or_else(|| not_found("account", &id))
    }

    /// Every connector, by name.
    pub async fn connectors(&self) -> Result<Vec<ConnectorRecord>> {
        Ok(self.store.connectors().await?)
    }

    /// One connector.
    pub async fn connector(&self, name: &str) -> Result<ConnectorRecord> {
        let all = self.store.connectors().await?;
        all.into_iter().find(|c| c.name == name).ok_or_else(|| not_found("connector", name))
    }

    /// A connector record from its name, kind and settings, checked by building the connector.
    fn connector_record(&self, name: &str, kind: &str, settings: Map<String, Value>) -> Result<ConnectorRecord> {
        let now = self.now();
        let record = ConnectorRecord {
            name: name.to_string(),
            kind: kind.to_string(),
            settings: Value::Object(settings).to_string(),
            created_at: now,
            updated_at: now,
        };
        self.engine.registry().check(&record).map_err(|e| ServiceError::invalid("invalid_connector", e.0))?;
        Ok(record)
    }

    /// A new connector from `{"name", "kind", ...settings}`, checked, not yet stored.
    fn new_connector(&self, mut settings: Map<String, Value>) -> Result<ConnectorRecord> {
        let mut text = |field: &str| match settings.remove(field) {
            Some(Value::String(s)) => Ok(s),
            _ => Err(ServiceError::invalid("invalid_connector", format!("{field} must be a string"))),
        };
        let name = text("name")?;
        let kind = text("kind")?;
        check_name("invalid_connector", &name)?;
        self.connector_record(&name, &kind, settings)
    }

    /// Creates a connector: `{"name", "kind", ...its kind's settings, "throughput"?, "window"?}`.
    pub async fn create_connector(&self, body: Map<String, Value>) -> Result<ConnectorRecord> {
        let record = self.new_connector(body)?;
        if !self.store.insert_connector(&record).await? {
            return Err(ServiceError::conflict("connector_exists", format!("a connector is named {:?}", record.name)));
        }
        self.reload().await?;
        Ok(record)
    }

    /// Changes a connector's settings: the fields given replace the stored ones, `null` removes one. `name` and
    /// `kind` stay.
    pub async fn update_connector(&self, name: &str, changes: Map<String, Value>) -> Result<ConnectorRecord> {
        let stored = self.connector(name).await?;
        let mut settings = match serde_json::from_str::<Value>(&stored.settings) {
            Ok(Value::Object(s)) => s,
            _ => Map::new(),
        };
        for (key, v) in changes {
            match key.as_str() {
                "name" | "kind" if v.as_str() == Some(if key == "name" { &stored.name } else { &stored.kind }) => {}
                "name" | "kind" => {
                    return Err(ServiceError::invalid(
                        "invalid_connector",
                        format!("{key} cannot change; delete and create"),
                    ));
                }
                _ if v.is_null() => {
                    settings.remove(&key);
                }
                _ => {
                    settings.insert(key, v);
                }
            }
        }
        let record =
            ConnectorRecord { created_at: stored.created_at, ..self.connector_record(name, &stored.kind, settings)? };
        if !self.store.update_connector(&record).await? {
            return Err(not_found("connector", name));
        }
        self.reload().await?;
        Ok(record)
    }

    /// Deletes a connector; refused while a route names it.
    pub async fn delete_connector(&self, name: &str) -> Result<()> {
        let routes = self.store.routes().await?;
        let users: Vec<&str> =
            routes.iter().filter(|r| r.connectors.iter().any(|t| t.name == name)).map(|r| r.name.as_str()).collect();
        if !users.is_empty() {
            return Err(ServiceError::conflict(
                "connector_in_use",
                format!("routes {users:?} use connector {name:?}; change them first"),
            ));
        }
        if !self.store.delete_connector(name).await? {
            return Err(not_found("connector", name));
        }
        self.reload().await
    }

    /// Every route, in the order they are tried.
    pub async fn routes(&self) -> Result<Vec<Route>> {
        Ok(RoutingTable::new(self.store.routes().await?).routes().to_vec())
    }

    /// One route.
    pub async fn route(&self, name: &str) -> Result<Route> {
        let routes = self.store.routes().await?;
        routes.into_iter().find(|r| r.name == name).ok_or_else(|| not_found("route", name))
    }

    /// Creates a route; placed after every route there is unless it gives a position.
    pub async fn create_route(&self, spec: RouteSpec) -> Result<Route> {
        let route = self.new_route(spec).await?;
        if !self.store.insert_route(&route, self.now()).await? {
            return Err(ServiceError::conflict("route_exists", format!("a route is named {:?}", route.name)));
        }
        self.reload().await?;
        Ok(route)
    }

    /// Changes a route: `match`, `connectors` and `position` each replace the stored one when given.
    pub async fn update_route(&self, name: &str, spec: RouteSpec) -> Result<Route> {
        let mut route = self.route(name).await?;
        if spec.name.as_ref().is_some_and(|n| n != name) {
            return Err(ServiceError::invalid("invalid_route", "name cannot change; delete and create"));
        }
        if let Some(m) = spec.matches {
            route.matches = route_match(m)?;
        }
        if let Some(c) = spec.connectors {
            route.connectors = self.route_targets(c).await?;
        }
        if let Some(p) = spec.position {
            route.position = p;
        }
        if !self.store.update_route(&route, self.now()).await? {
            return Err(not_found("route", name));
        }
        self.reload().await?;
        Ok(route)
    }

    /// Deletes a route (the `default` route too: what no route matches then fails with `no_route`).
    pub async fn delete_route(&self, name: &str) -> Result<()> {
        if !self.store.delete_route(name).await? {
            return Err(not_found("route", name));
        }
        self.reload().await
    }

    /// Which route and connector a message to `to` (already normalized) from `from` of `account` would take now,
    /// and why.
    pub fn resolve(&self, to: &str, from: &str, account: AccountId) -> Resolution {
        self.engine.registry().resolve(to, from, account)
    }

    /// A new route from its spec, checked (its connectors must exist).
    async fn new_route(&self, spec: RouteSpec) -> Result<Route> {
        let name = spec.name.ok_or_else(|| ServiceError::invalid("invalid_route", "name is required"))?;
        check_name("invalid_route", &name)?;
        let connectors = self.route_targets(spec.connectors.unwrap_or_default()).await?;
        let matches = route_match(spec.matches.unwrap_or_default())?;
        let routes = self.store.routes().await?;
        let last = routes.iter().filter(|r| r.name != DEFAULT_ROUTE).map(|r| r.position).max();
        let position = spec.position.unwrap_or_else(|| last.map_or(0, |p| p.saturating_add(10)));
        Ok(Route { name, position, matches, connectors })
    }

    async fn route_targets(&self, specs: Vec<TargetSpec>) -> Result<Vec<RouteTarget>> {
        let known = self.store.connectors().await?;
        let bad = |m: String| ServiceError::invalid("invalid_route", m);
        if specs.is_empty() {
            return Err(bad("connectors must name at least one connector".into()));
        }
        let mut out: Vec<RouteTarget> = Vec::with_capacity(specs.len());
        for t in specs {
            if !known.iter().any(|c| c.name == t.name) {
                return Err(ServiceError::invalid("unknown_connector", format!("no connector named {:?}", t.name)));
            }
            if out.iter().any(|o| o.name == t.name) {
                return Err(bad(format!("connector {:?} is listed twice", t.name)));
            }
            let price_micros = match t.price {
                None => None,
                Some(p) if p.is_finite() && (0.0..=1_000_000.0).contains(&p) => Some((p * 1_000_000.0).round() as i64),
                Some(p) => return Err(bad(format!("price {p} must be a number from 0"))),
            };
            out.push(RouteTarget {
                name: t.name,
                priority: t.priority.unwrap_or(0),
                weight: t.weight.unwrap_or(1),
                price_micros,
            });
        }
        Ok(out)
    }

    /// Creates the connectors and routes a config file gives (each as the API takes it) that the database does not
    /// have by name yet; those it has stay as they are (they are managed over the API). Returns what it created;
    /// an error names the entry and what is wrong with it.
    /// The zero-config connector and route come first, the first time a database is used.
    pub async fn seed(
        &self,
        connectors: Vec<Map<String, Value>>,
        routes: Vec<Map<String, Value>>,
    ) -> Result<Vec<String>> {
        smsgate_engine::registry::seed_defaults(self.store.as_ref(), self.now()).await?;
        let at = |what: &str, i: usize, e: ServiceError| match e {
            ServiceError::Invalid { code, message } => {
                ServiceError::Invalid { code, message: format!("{what}[{i}]: {message}") }
            }
            other => other,
        };
        let mut created = Vec::new();
        for (i, body) in connectors.into_iter().enumerate() {
            let record = self.new_connector(body).map_err(|e| at("connectors", i, e))?;
            if self.store.insert_connector(&record).await? {
                created.push(format!("connector {}", record.name));
            }
        }
        for (i, body) in routes.into_iter().enumerate() {
            let spec: RouteSpec = serde_json::from_value(Value::Object(body))
                .map_err(|e| ServiceError::invalid("invalid_route", format!("routes[{i}]: {e}")))?;
            if let Some(name) = &spec.name
                && self.store.routes().await?.iter().any(|r| &r.name == name)
            {
                continue;
            }
            let route = self.new_route(spec).await.map_err(|e| at("routes", i, e))?;
            if self.store.insert_route(&route, self.now()).await? {
                created.push(format!("route {}", route.name));
            }
        }
        Ok(created)
    }

    /// Adds SMPP credentials for an account, the password hashed (Argon2, off the async workers).
    pub async fn create_credential(&self, account: AccountId, spec: CredentialSpec) -> Result<SmppCredential> {
        if !printable(&spec.system_id, 15) {
            return Err(ServiceError::invalid(
                "invalid_system_id",
                "system_id must be 1 to 15 printable ASCII characters",
            ));
        }
        if !printable(&spec.password, 8) || spec.password.len() < MIN_SMPP_PASSWORD {
            return Err(ServiceError::invalid(
                "invalid_password",
                "password must be 6 to 8 printable ASCII characters (SMPP 3.4 allows no more than 8)",
            ));
        }
        if let Some(ips) = &spec.allowed_ips {
            IpRanges::parse(ips).map_err(|e| ServiceError::invalid("invalid_allowed_ips", e.to_string()))?;
        }
        if spec.max_binds == Some(0) {
            return Err(ServiceError::invalid("invalid_max_binds", "max_binds must be at least 1"));
        }
        if spec.throughput.is_some_and(|t| !(t > 0.0 && t.is_finite())) {
            return Err(ServiceError::invalid(
                "invalid_throughput",
                "throughput must be a positive number of submits a second",
            ));
        }
        // Argon2 takes tens of milliseconds on purpose: off the async workers.
        let password = spec.password;
        let password_hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| ServiceError::Store(smsgate_store::StoreError::Stopped(e.to_string())))?;
        let credential = SmppCredential {
            system_id: spec.system_id,
            account_id: account,
            password_hash,
            allowed_ips: spec.allowed_ips,
            max_binds: spec.max_binds,
            throughput: spec.throughput,
            created_at: self.now(),
        };
        if !self.store.create_smpp_credential(&credential).await? {
            return Err(ServiceError::conflict("system_id_taken", "that system_id is taken"));
        }
        Ok(credential)
    }

    /// An account's SMPP credentials.
    pub async fn credentials(&self, account: AccountId) -> Result<Vec<SmppCredential>> {
        Ok(self.store.smpp_credentials(account).await?)
    }

    /// One of an account's SMPP credentials (another account's is not found).
    pub async fn credential(&self, account: AccountId, system_id: &str) -> Result<SmppCredential> {
        let found = self.store.smpp_credential(system_id).await?;
        found
            .filter(|c| c.account_id == account)
            .ok_or_else(|| ServiceError::not_found("not_found", "no such SMPP credentials"))
    }

    /// The credentials a bind names, whoever's they are (the SMPP server's bind check).
    pub async fn credential_for_bind(&self, system_id: &str) -> Result<Option<SmppCredential>> {
        Ok(self.store.smpp_credential(system_id).await?)
    }

    /// Removes an account's SMPP credentials.
    pub async fn delete_credential(&self, account: AccountId, system_id: &str) -> Result<()> {
        if !self.store.delete_smpp_credential(account, system_id).await? {
            return Err(ServiceError::not_found("not_found", "no such SMPP credentials"));
        }
        Ok(())
    }

    /// Sets an account's webhook URLs (`None` removes one), each an http or https URL; keeps its secret, or gives
    /// it one.
    pub async fn put_webhooks(
        &self,
        account: AccountId,
        status_url: Option<String>,
        inbound_url: Option<String>,
    ) -> Result<Webhooks> {
        let status_url = check_url(&self.destinations, "status_url", status_url)?;
        let inbound_url = check_url(&self.destinations, "inbound_url", inbound_url)?;
        let now = self.now();
        Ok(self.store.put_webhooks(account, status_url.as_deref(), inbound_url.as_deref(), &new_secret(), now).await?)
    }

    /// An account's webhook settings: its URLs (none until set) and its signing secret.
    pub async fn webhooks(&self, account: AccountId) -> Result<Webhooks> {
        self.store.ensure_webhook_secret(account, &new_secret(), self.now()).await?;
        self.store.webhooks(account).await?.ok_or_else(|| ServiceError::not_found("not_found", "no such account"))
    }

    /// Gives an account a new signing secret; the old one signs callbacks too for [`SECRET_GRACE`], so receivers
    /// can take up the new one without losing a callback.
    pub async fn rotate_webhook_secret(&self, account: AccountId) -> Result<Webhooks> {
        let now = self.now();
        self.store.ensure_webhook_secret(account, &new_secret(), now).await?;
        let grace_until = now.plus_millis(i64::try_from(SECRET_GRACE.as_millis()).unwrap_or(i64::MAX));
        self.store.rotate_webhook_secret(account, &new_secret(), now, grace_until).await?;
        self.webhooks(account).await
    }

    /// Callbacks still to deliver, across all accounts (for metrics).
    pub async fn pending_callbacks(&self) -> Result<i64> {
        Ok(self.store.count_pending_callbacks().await?)
    }
}

/// A webhook URL as given: absent or empty is none; else an http or https URL with a host, at most 2,048
/// characters.
fn check_url(destinations: &Destinations, field: &str, url: Option<String>) -> Result<Option<String>> {
    let Some(url) = url.filter(|u| !u.is_empty()) else { return Ok(None) };
    let ok = url.len() <= 2048
        && (url.starts_with("http://") || url.starts_with("https://"))
        && url::Url::parse(&url).is_ok_and(|u| u.host().is_some());
    if !ok {
        return Err(ServiceError::invalid("invalid_url", format!("{field} must be an http or https URL")));
    }
    match destinations.check_url(&url) {
        Ok(()) => Ok(Some(url)),
        Err(e) => Err(ServiceError::invalid("invalid_url", format!("{field}: {e}"))),
    }
}

fn route_match(spec: MatchSpec) -> Result<RouteMatch> {
    let bad = |m: String| ServiceError::invalid("invalid_route", m);
    let prefix = spec.prefix.map(|p| {
        let digits = p.strip_prefix('+').unwrap_or(&p);
        if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            Err(bad(format!("match.prefix {p:?} must be digits, with or without a leading +")))
        } else {
            Ok(format!("+{digits}"))
        }
    });
    let country = spec.country.map(|c| {
        if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) {
            Ok(c.to_ascii_uppercase())
        } else {
            Err(bad(format!("match.country {c:?} must be an ISO 3166 alpha-2 code such as GB")))
        }
    });
    let account = spec
        .account
        .map(|a| AccountId::parse(&a).ok_or_else(|| bad(format!("match.account {a:?} is not an account id"))));
    Ok(RouteMatch {
        prefix: prefix.transpose()?,
        country: country.transpose()?,
        sender: spec.sender.filter(|s| !s.is_empty()),
        account: account.transpose()?,
    })
}
